# -*- test-case-name: rainbowd.test.unit.test_tap -*-
"""
C{twistd rainbowd}: the command-line options and the service.
"""

import difflib
import fcntl
import os
import re
import signal
import sys
import textwrap
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, overload

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import tcp
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from rainbowd import pypygc, versionLine
from rainbowd.app.backend import Backend
from rainbowd.app.backendlogs import BackendLogs
from rainbowd.app.deployer import Deployer
from rainbowd.app.health import HTTPHealthCheck
from rainbowd.app.leftovers import AppGroups
from rainbowd.app.ports import PortPicker, isPortFree
from rainbowd.app.processgroups import ProcessGroupSignals
from rainbowd.app.releases import stateDirWarning, workingDirectory
from rainbowd.config import (
    DEFAULT_FILENAME,
    EPHEMERAL_RANGE_PATH,
    Config,
    ConfigError,
    ephemeralPortRange,
    flagName,
    loadConfig,
    portRangeWarning,
    readMaintenancePage,
    settingHelp,
    settings,
    settingUnit,
)
from rainbowd.control.api import readControlToken
from rainbowd.control.browsers import BrowserGuard
from rainbowd.control.history import FILENAME as HISTORY_FILENAME
from rainbowd.control.history import DeployHistory, DeploysResource, HistoryFile
from rainbowd.control.metrics import Metrics, MetricsResource
from rainbowd.control.resource import ControlResource
from rainbowd.control.site import ControlSite, capped, exposureWarning
from rainbowd.control.systemd import (
    Notifier,
    Readiness,
    RedeployOnHangup,
    notifyAddress,
)
from rainbowd.fdlimit import (
    budgetWarning,
    defaultMaxConnections,
    describeLimit,
    isLow,
    raiseFileLimit,
)
from rainbowd.statedir import UnsafeStateDir, openFile, prepare
from rainbowd.upgrade import handover
from rainbowd.upgrade.upgrader import (
    Handover,
    UpgradeOnSignal,
    Upgrader,
    appendToLog,
    familyOf,
    restorePidfile,
    takeOverPidfile,
)
from rainbowd.web.accesslog import AccessLog, Both, openLog
from rainbowd.web.connlimit import AcceptErrors, ConnectionCap, quietAccepts
from rainbowd.web.lbhealth import publicResource
from rainbowd.web.proxy import ProxySite, ReverseProxy
from rainbowd.web.requestlimits import RequestLimits
from rainbowd.web.stopdelay import StopDelay, stopDelayWarning
from rainbowd.web.traffic import Traffic

_log = Logger()

#: How usage.Options says that a flag is not one of its own.
_UNRECOGNIZED = re.compile(r"option (-{1,2}[^\s=]+) not recognized")

#: The environment variable every app process gets, set to the Python
#: interpreter running rainbowd.
PYTHON_VARIABLE = "RAINBOWD_PYTHON"


def _wholeNumber(flag: str, unit: Optional[str]) -> Callable[[str], int]:
    """
    A coerce function for a flag taking a whole number (of C{unit}s).
    """
    what = "a whole number of milliseconds" if unit == "ms" else "a whole number"

    def coerce(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--{flag} is {text!r}, but it must be {what}.")

    return coerce


def _ratio(flag: str) -> Callable[[str], float]:
    """
    A coerce function for a flag taking a number such as 0.25.
    """

    def coerce(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--{flag} is {text!r}, but it must be a number from 0 to 1.")

    return coerce


def _portOrDescription(text: str) -> object:
    """
    A port number as an int, anything else as an endpoint description for
    L{loadConfig} to check.
    """
    return int(text) if text.isascii() and text.isdigit() else text


def _coerce(key: str, kind: str) -> Callable[[str], Any]:
    """
    The coerce function of the flag of C{key}, whose argument is of
    C{kind} (L{rainbowd.config.Setting.flag}): a C{"number"} flag is a
    whole number, in ms when the key's unit is.
    """
    if kind == "number":
        return _wholeNumber(flagName(key), settingUnit(key))
    if kind == "port":
        return _portOrDescription
    if kind == "ratio":
        return _ratio(flagName(key))
    return str


#: The keys whose flags --help lists first, as the ones most often given.
_FIRST = ("run", "port", "controlPort", "stateDir")

#: Config key -> (short flag, kind of argument), for every key with a flag,
#: in --help's order; the flags are the keys, dashed.
_FLAGS: Dict[str, Tuple[Optional[str], str]] = {
    declared.key: (declared.short, declared.flag)
    for declared in sorted(settings(), key=lambda one: one.key not in _FIRST)
    if declared.flag is not None
}


def _optParameters() -> List[List[Any]]:
    parameters: List[List[Any]] = [
        [
            "config",
            "c",
            None,
            f"The config file (default: {DEFAULT_FILENAME} in the current "
            "directory).",
        ]
    ]
    for key, (short, kind) in _FLAGS.items():
        parameters.append(
            [flagName(key), short, None, settingHelp(key), _coerce(key, kind)]
        )
    return parameters


class Options(usage.Options):
    """
    The options of C{twistd rainbowd}: a config file, and flags that
    override its keys.

    After parsing, C{config} is the loaded L{Config}, C{overrides} the flag
    values by config key (to read the file again the same way, see
    L{Options.readConfig}), and C{warnings} the sentences to log at startup.

    @ivar cwd: the directory to find C{rainbow.conf.json} in and resolve
        relative paths against; L{None} means the current directory at
        parse time.
    @ivar ephemeralRangePath: where the kernel's ephemeral port range is
        read from.
    @ivar controlToken: the token control requests must bear, read from
        C{controlTokenFile} once, here; or L{None}.
    @ivar raiseFileLimit: raises the descriptor limit, in L{makeService};
        see L{rainbowd.fdlimit.raiseFileLimit}.
    @ivar portIsFree: whether a port can be given to a new generation; see
        L{rainbowd.app.ports.isPortFree}, which listens on it to find out.
    """

    # twistd puts "Usage: twistd [options] rainbowd" before it.
    synopsis = "[--config PATH] [--port N] [--run COMMAND] [options]"
    #: Printed by --help before the flags it tells about (see getUsage).
    description = (
        "Run a web app and redeploy it with zero downtime: POST /redeploy "
        "to the control port starts the new version, waits for it to be "
        "healthy, swaps traffic to it and drains the old one.  The settings "
        f"come from {DEFAULT_FILENAME} in the current directory (or "
        '--config PATH), a JSON object with at least a "run" key; each '
        "flag below overrides the key of the same name (--drain-timeout "
        'overrides "drainTimeout").  Every key has a flag but "env" and '
        '"cwd", which only the file sets.  Times are in milliseconds.'
    )
    # Not None, or usage.Options would print __main__'s docstring.
    longdesc = ""

    optParameters = _optParameters()

    cwd: Optional[str] = None
    ephemeralRangePath: str = EPHEMERAL_RANGE_PATH

    config: Config
    overrides: Dict[str, Any]
    warnings: List[str]
    controlToken: Optional[bytes] = None
    raiseFileLimit = staticmethod(raiseFileLimit)
    portIsFree = staticmethod(isPortFree)

    def getUsage(self, width: Optional[int] = None) -> str:
        width = width or int(os.environ.get("COLUMNS", "80"))
        description = textwrap.fill(self.description, width)
        return f"\n{description}\n\n{usage.Options.getUsage(self, width)}"

    def opt_version(self) -> None:
        """
        Display rainbowd's version, and Twisted's and Python's, and exit.
        """
        print(versionLine())
        sys.exit(0)

    def parseOptions(self, options: Optional[List[str]] = None) -> None:
        """
        Parse the flags; a bad one stops twistd with its one-line error and
        a pointer to --help, not the whole of --help above the error.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            problem = str(e).replace("Parameter type enforcement failed: ", "")
            unknown = _UNRECOGNIZED.fullmatch(problem)
            if unknown is not None:
                problem += self._unrecognized(unknown.group(1))
            if not problem.endswith((".", "?")):
                problem += "."
            raise SystemExit(
                f"rainbowd: {problem}\n"
                "rainbowd: twistd rainbowd --help lists the flags."
            )

    def _unrecognized(self, flag: str) -> str:
        """
        What to add to the error for C{flag}, which rainbowd does not have:
        where it goes if it is twistd's, or the flag of rainbowd's it looks
        like.
        """
        from twisted.scripts.twistd import ServerOptions

        name = flag.lstrip("-")
        twistd = ServerOptions()
        if name in twistd.synonyms:
            valued = f"{name}=" in twistd.longOpt or f"{name}:" in twistd.shortOpt
            return (
                ": it is one of twistd's own, which go before rainbowd, as in "
                f"twistd {flag}{' ...' if valued else ''} rainbowd"
            )
        longFlags = [each for each in self.synonyms if len(each) > 1]
        guesses = difflib.get_close_matches(name, longFlags, n=1)
        return f".  Did you mean --{guesses[0]}?" if guesses else ""

    def readConfig(self) -> Config:
        """
        Load the config file again with the same flags, e.g. to redeploy,
        and check that its C{maintenancePage} can be read.

        @raise ConfigError: if it is no longer right.
        """
        config = loadConfig(self["config"], self.overrides, self.cwd)
        if config.maintenancePage is not None:
            readMaintenancePage(config.maintenancePage)
        return config

    #: twistd's pidfile, an absolute path, or L{None} without one.
    pidfile: Optional[str] = None
    #: twistd's log file, or L{None} without one.
    logfile: Optional[str] = None

    def postOptions(self) -> None:
        if self.cwd is None:
            self.cwd = workingDirectory()
        if handover.HANDOVER_VARIABLE in os.environ and "LISTEN_FDS" in os.environ:
            # Started by an upgrade under socket activation: the variables
            # name the rainbowd upgraded from, and this one must read them
            # to parse a "systemd:" port the same way.
            os.environ["LISTEN_PID"] = str(os.getpid())
            _rereadSystemdSockets()
        parent = getattr(self, "parent", None)
        if parent is not None and parent.get("pidfile"):
            self.pidfile = os.path.abspath(parent["pidfile"])
            # twistd refuses to start while its pidfile names a live
            # process, which the rainbowd handing over to this one is.
            takeOverPidfile(self.pidfile)
        if parent is not None and parent.get("logfile") not in (None, "-"):
            self.logfile = os.path.abspath(parent["logfile"])
        self.overrides = {
            key: self[flagName(key)]
            for key in _FLAGS
            if self[flagName(key)] is not None
        }
        tokenWarning = None
        try:
            self.config = self.readConfig()
            if self.config.controlTokenFile is not None:
                self.controlToken, tokenWarning = readControlToken(
                    self.config.controlTokenFile
                )
        except ConfigError as e:
            # Not a usage error, so twistd need not print the whole --help
            # above it: the message alone says what is wrong and the fix.
            raise SystemExit(f"rainbowd: {e}")
        warnings = [
            portRangeWarning(self.config, ephemeralPortRange(self.ephemeralRangePath)),
            tokenWarning,
            exposureWarning(self.config),
            stateDirWarning(self.config.stateDir, self.config.source),
            stopDelayWarning(self.config.stopDelay, self.config.lbHealthPath),
        ]
        self.warnings = [warning for warning in warnings if warning is not None]


def _rereadSystemdSockets() -> None:
    """
    Make Twisted's C{systemd:} endpoints read systemd's variables again:
    it reads them once, when C{twisted.internet.endpoints} is imported,
    which in a rainbowd started by an upgrade is before L{Options} set
    C{LISTEN_PID} to this process.
    """
    from twisted.internet import endpoints
    from twisted.python.systemd import ListenFDs

    endpoints._SystemdParser._sddaemon = ListenFDs.fromEnvironment()


def _withLockfile(description: str) -> str:
    """
    A C{unix:} description with C{lockfile=1} unless it says otherwise: the
    socket is then locked while rainbowd runs, and a socket file left by a
    rainbowd that was killed is removed on the next start instead of
    making it fail with "Address already in use".
    """
    if description.startswith("unix:") and ":lockfile=" not in description:
        return description + ":lockfile=1"
    return description


class _StateDirLock(Service):
    """
    Hold a lock on the state directory while rainbowd runs, so that a second
    rainbowd on the same directory stops at startup -- before it takes the
    first one's app processes for leftovers of a killed rainbowd and stops
    them.  The lock is the kernel's (C{flock}): it goes when the process
    does, however it ends, and is never released before that.
    """

    name = "stateDirLock"  # type: ignore[assignment]  # Service.name is typed None

    def __init__(self, stateDir: str) -> None:
        self._path = os.path.join(stateDir, "rainbowd.lock")
        self._fd: Optional[int] = None

    #: The lock's descriptor handed over by the rainbowd upgraded from,
    #: which holds the lock already (it is the open file's), or L{None}.
    adopted: Optional[int] = None

    def fileno(self) -> Optional[int]:
        return self._fd

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        if self.adopted is not None:
            self._fd = self.adopted
            self._writePid(self.adopted)
            return
        try:
            fd = openFile(self._path, os.O_RDWR | os.O_CREAT)
        except UnsafeStateDir as e:
            raise SystemExit(f"rainbowd: {e}")
        except OSError as e:
            raise SystemExit(
                f"rainbowd: cannot open the lock {self._path} in the state "
                f'directory: {e.strerror or e}.  Fix its permissions, or set '
                'another "stateDir" (--state-dir).'
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SystemExit(
                f"rainbowd: another rainbowd (pid {holder}) uses the state "
                f"directory {os.path.dirname(self._path)}.  Stop it, or give "
                f'this one another "stateDir" (--state-dir).'
            )
        self._fd = fd
        self._writePid(fd)

    def startService(self) -> None:
        # twistd daemonizes between privilegedStartService and this: the
        # daemon, which inherited the lock, has another pid.
        Service.startService(self)
        # privilegedStartService, which comes first, took the lock.
        assert self._fd is not None
        self._writePid(self._fd)

    def _writePid(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        """
        Let go of the lock (for tests: rainbowd itself holds it until it
        exits).
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@implementer(IStreamServerEndpoint)
class _ListenNow:
    """
    An endpoint that raises a failure to listen from C{listen} itself, when
    the endpoint it wraps fails at once (as Twisted's TCP, unix and SSL
    endpoints do), instead of returning it in a failed L{Deferred}; and
    calls C{listened} with the port once it listens.

    So a L{StreamServerEndpointService} on it raises that failure from its
    C{privilegedStartService}, which is what C{strports.service} gets with
    the private C{_raiseSynchronously}.  A later failure is left in the
    L{Deferred}, which that service logs.
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, listened: Callable[[Any], None]
    ) -> None:
        self._endpoint = endpoint
        self._listened = listened

    def listen(self, factory) -> Deferred:
        failedNow: List[Failure] = []
        now = True

        def failed(failure: Failure) -> Optional[Failure]:
            if now:
                failedNow.append(failure)
                return None
            return failure

        listening = self._endpoint.listen(factory).addErrback(failed)
        now = False
        if failedNow:
            failedNow[0].raiseException()

        def listened(port):
            self._listened(port)
            return port

        return listening.addCallback(listened)


class _Listening(StreamServerEndpointService):
    """
    Listen on the endpoint of config key C{key}; if that fails, stop twistd
    with a message saying which key and why, before any app is launched.

    @ivar acceptErrors: the port's failed accepts, once it listens (if it is
        one of Twisted's stream ports), logged a line a second.
    """

    acceptErrors: Optional[AcceptErrors] = None
    _port = None
    _lockPath: Optional[str] = None

    def __init__(self, key: str, description: str, reactor, factory) -> None:
        endpoint = serverFromString(reactor, _withLockfile(description))
        StreamServerEndpointService.__init__(
            self, _ListenNow(endpoint, self._listening), factory
        )
        self._key = key
        self._description = description
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        try:
            StreamServerEndpointService.privilegedStartService(self)
        except CannotListenError as e:
            if isinstance(e.socketError, str):  # a unix socket's lock file
                raise SystemExit(
                    f"rainbowd: cannot listen on {self._description} "
                    f'("{self._key}"): {os.fsdecode(e.port)}.lock is held by '
                    "a running process, so another rainbowd is using that "
                    f'socket.  Stop it, or set another "{self._key}" '
                    f"(--{flagName(self._key)})."
                )
            if e.socketError.strerror is None:  # such as a path too long
                raise SystemExit(
                    f"rainbowd: cannot listen on {self._description} "
                    f'("{self._key}"): {e.socketError}.  Set another '
                    f'"{self._key}" (--{flagName(self._key)}).'
                )
            raise SystemExit(
                f"rainbowd: cannot listen on {self._description} "
                f'("{self._key}"): {e.socketError.strerror}.  Is another '
                f"rainbowd, or the app itself, using it?  Stop that, or set "
                f'another "{self._key}" (--{flagName(self._key)}).'
            )

    def _listening(self, port) -> None:
        self._port = port
        lock = getattr(port, "lockFile", None)
        if lock is not None and lock.locked:
            # Before twistd changes directory (--rundir).
            self._lockPath = os.path.abspath(os.fsdecode(lock.name))
        if isinstance(port, tcp.Port):
            what = f'{self._description} ("{self._key}")'
            self.acceptErrors = quietAccepts(port, what, self._reactor)

    def startService(self) -> None:
        StreamServerEndpointService.startService(self)
        self._ownLockFile()

    def _ownLockFile(self) -> None:
        """
        Make a unix socket's lock file name this process: it was taken
        before twistd daemonized, by a process that has exited since, and
        another rainbowd would take a lock naming a dead process for a
        killed rainbowd's, and the socket over with it.
        """
        name = self._lockPath
        if name is None:
            return
        pid = str(os.getpid())
        if os.readlink(name) != pid:
            # A new link renamed over the old one, so that the lock is
            # never free.
            os.symlink(pid, f"{name}.{pid}")
            os.rename(f"{name}.{pid}", name)

    def fileno(self) -> Optional[int]:
        return None if self._port is None else self._port.fileno()

    def stopAccepting(self) -> None:
        """
        Accept no more, leaving the socket open for the rainbowd upgraded
        to, and a unix socket's file in place.
        """
        if self._port is not None:
            self._port.stopReading()

    def close(self) -> None:
        """
        Stop listening, if it does, when rainbowd fails to start.
        """
        if self._port is not None:
            self._port.stopListening()
            self._port = None


class _Adopted(Service):
    """
    Accept on the listening socket C{fd} of config key C{key}, handed over
    by the rainbowd upgraded from, instead of listening anew.
    """

    acceptErrors: Optional[AcceptErrors] = None
    _port = None

    def __init__(
        self, key: str, description: str, fd: int, reactor, factory, lockPath=None
    ) -> None:
        self._key = key
        self._description = description
        self._lockPath = lockPath
        self._fd = fd
        self._reactor = reactor
        self._factory = factory

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._port = self._reactor.adoptStreamPort(self._fd, familyOf(self._fd), self._factory)
        os.close(self._fd)
        if isinstance(self._port, tcp.Port):
            what = f'{self._description} ("{self._key}")'
            self.acceptErrors = quietAccepts(self._port, what, self._reactor)

    def fileno(self) -> Optional[int]:
        return None if self._port is None else self._port.fileno()

    def startService(self) -> None:
        Service.startService(self)
        # The same lock file as a port listened on here, told the same way.
        _Listening._ownLockFile(self)  # type: ignore[arg-type]

    def stopAccepting(self) -> None:
        if self._port is not None:
            self._port.stopReading()

    def stopService(self):
        Service.stopService(self)
        if self._port is not None:
            return maybeDeferred(self._port.stopListening)

    def close(self) -> None:
        if self._port is not None:
            self._port.stopListening()
            self._port = None


class _OrderlyStop(MultiService):
    """
    Stop as supervisors expect: exit 0 once a SIGTERM or SIGINT has stopped
    every app process (Twisted's reactor would otherwise kill the process
    again with the signal it got), and meet a second signal during that
    stop with a line in the log, not a traceback from C{reactor.stop}.

    Its C{privilegedStartService} runs once: L{makeService} calls it, and
    twistd's own call later does nothing.

    Its children stop in three steps: after C{stopDelay}, the C{ports}
    stop listening; then the connections of C{clients} close as they
    become idle, and the stop waits (up to C{clientTimeout()}) until none
    is receiving a request; then every other child stops, the deployer
    draining the backends.  Last, it waits for the connections still
    sending a response to close, for what is left of C{clientTimeout()}
    since the ports closed.  So a kept-alive client's next request is never
    sent to an app that was already told to stop: the connection it would
    come on is closed first (and a client retries a request on a kept-alive
    connection that closed, as HTTP lets it).

    @param installSignal: L{signal.signal}, or a test's fake.
    @ivar stopDelay: the L{StopDelay} waited for before any child is
        stopped, and cut short by a second signal; or L{None}.
    @ivar ports: the children that listen, stopped first.
    @ivar clients: has C{closeGracefully(timeout)}, see
        L{ConnectionCap.closeGracefully}; or L{None}.
    @ivar clientTimeout: the most seconds to wait for C{clients}.
    """

    _privilegedStarted = False
    stopDelay: Optional[StopDelay] = None
    ports: Sequence[IService] = ()
    clients: Optional[ConnectionCap] = None
    clientTimeout: Callable[[], float] = staticmethod(lambda: 0.0)

    def __init__(self, reactor, installSignal=signal.signal) -> None:
        MultiService.__init__(self)
        self._reactor = reactor
        self._installSignal = installSignal

    def privilegedStartService(self) -> None:
        if not self._privilegedStarted:
            self._privilegedStarted = True
            MultiService.privilegedStartService(self)

    def startService(self) -> None:
        MultiService.startService(self)
        self._reactor.callWhenRunning(self._installHandlers)

    def stopService(self):
        def stopped(result):
            self._reactor._exitSignal = None
            return result

        Service.stopService(self)
        waited = (
            succeed(None)
            if self.stopDelay is None or self.handedOver
            else self.stopDelay.begin()
        )
        return waited.addCallback(lambda _: self._stopChildren()).addCallback(stopped)

    #: Set once this rainbowd has handed over to a new one (an upgrade):
    #: then stopping neither waits for C{stopDelay} nor tells the
    #: C{quiet} children (systemd's, which would say it stops).
    handedOver = False
    quiet: Sequence[IService] = ()

    @inlineCallbacks
    def _stopChildren(self):
        if self.handedOver:
            # Not the ports either: closing a listening socket shuts it
            # down, for the new rainbowd too, which accepts on it; this
            # process's descriptors of them go when it exits.
            rest = [
                child
                for child in reversed(list(self))
                if child not in self.quiet and child not in self.ports
            ]
            yield DeferredList([maybeDeferred(child.stopService) for child in rest])
            return
        yield DeferredList([maybeDeferred(port.stopService) for port in self.ports])
        deadline = self._reactor.seconds() + self.clientTimeout()
        if self.clients is not None:
            yield self.clients.closeGracefully(self.clientTimeout())
        rest = [child for child in reversed(list(self)) if child not in self.ports]
        yield DeferredList([maybeDeferred(child.stopService) for child in rest])
        if self.clients is not None:
            left = max(0.0, deadline - self._reactor.seconds())
            yield self.clients.whenClosed(left)

    def _installHandlers(self) -> None:
        for signum, handler in [
            (signal.SIGTERM, self._reactor.sigTerm),
            (signal.SIGINT, self._reactor.sigInt),
        ]:
            self._installSignal(signum, partial(self._signalled, handler))

    def _signalled(self, handler, signum, frame) -> None:
        if self.running:
            handler(signum, frame)
        else:
            self._reactor.callFromThread(self._signalledAgain, signum)

    def _signalledAgain(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stopDelay is not None and self.stopDelay.cutShort(name):
            return
        _log.warn(
            "{signal} while stopping: still waiting for the app's "
            "processes to stop; SIGKILL rainbowd to abandon them",
            signal=name,
        )


def _withAccessLog(requestLog, config: Config, reactor):
    """
    C{requestLog}, and the access log if C{config} asks for one; it is
    closed once everything else has stopped, draining requests included.
    """
    if config.accessLog is None:
        return requestLog
    try:
        file = openLog(config.accessLog)
    except OSError as e:
        raise SystemExit(
            f"rainbowd: cannot open the access log {config.accessLog} "
            f'("accessLog"): {e.strerror}.  Create its directory or fix its '
            'permissions, or set another "accessLog" (--access-log).'
        )
    accessLog = AccessLog(file, config.accessLogFormat, reactor)
    accessLog.start()
    reactor.addSystemEventTrigger("after", "shutdown", accessLog.stop)
    return Both(requestLog, accessLog)


def makeService(options: Options, reactor=None) -> MultiService:
    """
    The deployer, the proxy and the control API, as one service: the state
    directory is locked and the ports are listened on first (in
    C{privilegedStartService}), so a second rainbowd or a port clash stops
    twistd before any app is launched or any leftover stopped; and the ports
    are closed first on the way down, then the kept-alive connections (see
    L{_OrderlyStop}), so the backends then drain.

    That privileged start is done here, before twistd daemonizes (it does
    so between C{makeService} and C{privilegedStartService}), and before it
    writes its pidfile: a failure then stops the process the user started,
    with its one line on the terminal.  After daemonizing, twistd reports
    only an L{Exception} through its status pipe, not the L{SystemExit}
    these failures raise, and its first process, which holds that pipe's
    write end itself, would wait for an answer forever.
    """
    # PyPy's collector is the process's: set up, and watched, by the
    # rainbowd that runs on the real reactor only.
    gcHooks = None
    # First, as the README says; a process that re-executes loses it with
    # the rest of the log it had not written yet.
    _log.info("{version}", version=versionLine())
    if reactor is None:
        # Before anything is opened or started: it may re-execute twistd.
        pypygc.setUp(
            startupFiles=[
                options.config.source,
                options.config.controlTokenFile,
                options.config.maintenancePage,
            ]
        )
        gcHooks = pypygc.hooks()
        from twisted.internet import reactor
    config = options.config
    incoming = Handover.incoming(config.upgradeTimeout)
    if incoming is not None:
        _log.info(
            "Taking over from rainbowd {pid}: {count} generation(s), no app restarted",
            pid=incoming.state.pid,
            count=len(incoming.state.generations),
        )
        changed = handover.fixedKeysChanged(
            incoming.state.settings, _fixedSettings(config)
        )
        if changed:
            incoming.refuse("rainbowd: cannot upgrade: " + "; ".join(changed) + ".")
    try:
        prepare(config.stateDir)
    except UnsafeStateDir as e:
        raise SystemExit(f"rainbowd: {e}")
    for warning in options.warnings:
        _log.warn("{warning}", warning=warning)
    healthCheck = HTTPHealthCheck(reactor)
    signals = ProcessGroupSignals()

    def newBackend(config, generation, port, onExit):
        return Backend(
            config, generation, port, reactor, healthCheck, signals, onExit
        )

    service = _OrderlyStop(reactor)
    service.stopDelay = StopDelay(config.stopDelay, reactor)
    lock = _StateDirLock(config.stateDir)
    if incoming is not None and incoming.state.lock is not None:
        lock.adopted = incoming.fd(incoming.state.lock)
    lock.setServiceParent(service)
    # Only read here: the history is written once the state directory is
    # locked, by the rainbowd that holds it.
    history = DeployHistory(
        HistoryFile(os.path.join(config.stateDir, HISTORY_FILENAME)),
        lambda f, *args: deferToThreadPool(reactor, reactor.getThreadPool(), f, *args),
    )
    history.load()
    deployer = Deployer(
        config,
        options.readConfig,
        newBackend,
        reactor,
        PortPicker(isFree=options.portIsFree),
        groups=AppGroups(config.stateDir, signals, reactor),
        deploys=max(
            history.lastDeploy, 0 if incoming is None else incoming.state.deploys
        ),
    )
    handedOver: Deferred = Deferred()
    if incoming is not None:
        state = incoming.state
        deployer.adopt(
            [attrs.asdict(each) for each in state.generations],
            {
                each.generation: {
                    fd: incoming.fd(index)
                    for fd, index in ((1, each.stdout), (2, each.stderr))
                    if index is not None
                }
                for each in state.generations
            },
            state.active,
            state.standby,
            state.generation,
            handedOver,
        )
    # Those observing the deployer start first, to see generation 1 launched.
    history.follow(deployer)
    history.setServiceParent(service)
    BackendLogs(deployer, config.stateDir).setServiceParent(service)
    notifier = Notifier(notifyAddress())
    if notifier.address is None and incoming is not None:
        notifier.address = os.environ.pop(_NOTIFY_VARIABLE, None)
    os.environ.pop("NOTIFY_SOCKET", None)  # for rainbowd, not for the app
    if sys.executable:
        # So that "$RAINBOWD_PYTHON" -m ... in "run" is the Python, with
        # its packages, that runs rainbowd, whatever is on PATH.
        os.environ[PYTHON_VARIABLE] = sys.executable
    readiness = Readiness(deployer, notifier, config.port)
    readiness.setServiceParent(service)
    deployer.setServiceParent(service)
    RedeployOnHangup(reactor, deployer.redeploy, readiness).setServiceParent(service)
    # The traffic mode outlives deploys: it is rainbowd's, not a generation's.
    traffic = Traffic(
        reactor,
        config.queueTimeout,
        pagePath=lambda: deployer.config.maintenancePage,
    )
    traffic.setServiceParent(service)
    if incoming is not None:
        _carryTraffic(traffic, incoming.state.traffic, incoming.state.pid)
    metrics = Metrics(deployer)
    limits = RequestLimits.fromConfig(config)
    proxy = ProxySite(
        ReverseProxy(
            deployer,
            reactor,
            config.queueTimeout,
            backendConnections=config.backendConnections,
            backendMaxRequests=config.backendMaxRequests,
            backendTimeout=config.backendTimeout,
            backendBodyTimeout=config.backendBodyTimeout,
            monitor=metrics,
            traffic=traffic,
        ),
        reactor=reactor,
        limits=limits,
    )
    proxy.requestLog = _withAccessLog(metrics, config, reactor)
    proxy.resource = publicResource(
        config.lbHealthPath, proxy.resource, deployer, service.stopDelay, traffic
    )
    cap = ConnectionCap(proxy, _maxConnections(options), reactor)
    control = ControlResource(deployer, reactor, traffic)
    control.connections = cap
    control.putChild(b"metrics", MetricsResource(metrics.registry))
    control.putChild(b"deploys", DeploysResource(history))
    guard = BrowserGuard(config.controlAllowedOrigins, config.controlAllowedHosts)
    controlSite = ControlSite(
        control,
        token=options.controlToken,
        reactor=reactor,
        guard=guard,
        limits=limits,
    )
    controlCap = capped(controlSite, reactor)
    sites = [("port", cap), ("controlPort", controlCap)]
    listening: Dict[str, Union[_Adopted, _Listening]] = {}
    for key, site in sites:
        if incoming is not None:
            listening[key] = _Adopted(
                key,
                getattr(config, key),
                incoming.fd(incoming.state.listening[key]),
                reactor,
                site,
                incoming.state.socketLocks.get(key),
            )
        else:
            listening[key] = _Listening(key, getattr(config, key), reactor, site)
        listening[key].setServiceParent(service)
    metrics.watchConnections(cap, listening)
    if gcHooks is not None:
        metrics.watchCollector(gcHooks, pypygc.nurserySize())
    service.ports = list(listening.values())
    upgrader = Upgrader(
        reactor,
        partial(
            _describeForHandover, deployer, traffic, listening, lock, history, options
        ),
        partial(_handOver, reactor, service, deployer, listening, [cap, controlCap]),
        lambda: deployer.config.upgradeTimeout,
        environ=_upgradeEnvironment(notifier),
        failed=partial(_upgradeFailed, deployer, options.pidfile),
    )
    if incoming is not None:
        upgrader.upgradedFrom = incoming.state.pid
        if incoming.state.startedAt is not None:
            upgrader.startedAt = incoming.state.startedAt

        def ready() -> None:
            notifier.notify(f"MAINPID={os.getpid()}", "READY=1")
            incoming.ready(reactor).chainDeferred(handedOver)
            _log.info(
                "rainbowd {pid} serves, taken over from {previous}",
                pid=os.getpid(),
                previous=incoming.state.pid,
            )

        reactor.callWhenRunning(ready)
    control.upgrader = upgrader
    # twistd opens its log file once the service is made.
    reactor.callWhenRunning(appendToLog, options.logfile)
    service.quiet = [readiness]
    UpgradeOnSignal(reactor, upgrader.upgrade).setServiceParent(service)
    service.clients = cap
    service.clientTimeout = lambda: deployer.config.drainTimeout
    try:
        service.privilegedStartService()
    except BaseException:
        # twistd exits, but a process that goes on (a test's) gets the
        # ports and the state directory back.
        for each in listening.values():
            each.close()
        lock.release()
        raise
    return service


#: systemd's notification socket variable, which rainbowd takes out of its
#: environment (it is not the app's) and gives back to the rainbowd it
#: upgrades to.
_NOTIFY_VARIABLE = "NOTIFY_SOCKET"


#: systemd's socket activation variables.
_LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID")


def _upgradeEnvironment(notifier: Notifier) -> Dict[str, str]:
    """
    The environment of the rainbowd upgraded to: this one's, with systemd's
    notification socket, which it tells its pid and readiness.
    """
    env = dict(os.environ)
    # Twisted took systemd's socket variables out of the environment when
    # it read them; the new rainbowd reads the same config, whose
    # "systemd:" port only parses with them (it adopts the socket handed
    # over, not systemd's descriptor).
    started = pypygc.startingEnvironment() or {}
    for name in _LISTEN_VARIABLES:
        if name in started and name not in env:
            env[name] = started[name]
    if notifier.address is not None:
        # An abstract socket's name is written with "@" for its NUL.
        env[_NOTIFY_VARIABLE] = "@" + notifier.address[1:] if notifier.address.startswith(
            "\0"
        ) else notifier.address
    return env


def _carryTraffic(traffic: Traffic, described: Dict[str, Any], pid: int) -> None:
    """
    Put C{traffic} in the mode the rainbowd upgraded from had.
    """
    mode = described.get("mode")
    by = described.get("by") or f"rainbowd {pid}"
    if mode == "paused":
        traffic.pause(by)
    elif mode == "maintenance":
        try:
            traffic.maintenance(by, described.get("message"))
        except ConfigError as e:
            _log.warn("cannot keep the maintenance page: {error}", error=e)


def _describeForHandover(
    deployer, traffic, listening, lock, history, options
) -> Tuple[handover.State, List[int]]:
    """
    The state to hand over, and the descriptors it names.
    """
    described = deployer.handOverState()
    fds: List[int] = []

    @overload
    def index(fd: int) -> int: ...

    @overload
    def index(fd: Optional[int]) -> Optional[int]: ...

    def index(fd: Optional[int]) -> Optional[int]:
        if fd is None:
            return None
        fds.append(fd)
        return len(fds) - 1

    ports = {}
    for key, each in listening.items():
        fd = each.fileno()
        if fd is None:
            raise ConfigError(f'rainbowd does not listen on "{key}" yet')
        ports[key] = index(fd)
    generations = []
    for each in described["generations"]:
        pipes = described["pipes"].get(each["generation"], {})
        generations.append(
            handover.Generation(
                stdout=index(pipes.get(1)), stderr=index(pipes.get(2)), **each
            )
        )
    state = handover.State(
        pid=os.getpid(),
        listening=ports,
        settings=_fixedSettings(deployer.config),
        lock=index(lock.fileno()),
        socketLocks={
            key: each._lockPath
            for key, each in listening.items()
            if getattr(each, "_lockPath", None) is not None
        },
        generation=described["generation"],
        pidfile=options.pidfile,
        generations=generations,
        active=described["active"],
        standby=described["standby"],
        traffic=traffic.describe(),
        deploys=described["deploys"],
        historyFile=history.path if hasattr(history, "path") else None,
    )
    return state, fds


#: How long, in seconds, the old rainbowd of an upgrade keeps a kept-alive
#: connection with no request on it open (up to drainTimeout): a request
#: that comes meanwhile is answered, with Connection: close, rather than
#: meet a closed connection, which a client that does not retry (a POST, or
#: http.client) takes for a failure.  Only a connection idle all that time
#: is closed idle.
HANDOVER_IDLE_GRACE = 5.0


def _handOver(reactor, service, deployer, listening, caps) -> Deferred:
    """
    The new rainbowd serves: accept no more, let the generations go
    without a signal, answer what is in flight on the public and control
    ports, and what comes on a kept-alive connection within
    L{HANDOVER_IDLE_GRACE}, each as its connection's last (the answer to the
    upgrade itself included); close those idle all that time; wait for the
    upgraded ones up to C{drainTimeout}, then exit 0.
    """
    for each in listening.values():
        each.stopAccepting()
    deployer.abandon()
    timeout = deployer.config.drainTimeout
    deadline = reactor.seconds() + timeout

    def closed(_=None) -> Deferred:
        left = max(deadline - reactor.seconds(), 0.0)
        return DeferredList([cap.whenClosed(left) for cap in caps])

    def exit(_=None) -> None:
        _log.info("Handed over; exiting without stopping the app")
        service.handedOver = True
        reactor.addSystemEventTrigger("after", "shutdown", _exitNow)
        reactor.stop()

    # At most half the drain, so that a request that comes at its end is
    # still answered before the drain is over.
    grace = min(HANDOVER_IDLE_GRACE, timeout / 2)
    d = DeferredList([cap.closeGracefully(timeout, grace) for cap in caps])
    d.addCallback(closed).addCallback(exit)
    d.addErrback(lambda f: _log.failure("Handing over failed", f))
    return d


def _upgradeFailed(deployer, pidfile: Optional[str]) -> None:
    """
    An upgrade failed: this rainbowd keeps everything, and names itself in
    twistd's pidfile again.
    """
    deployer.keep()
    restorePidfile(pidfile, os.getpid())


def _exitNow() -> None:
    """
    Exit 0 at once: twistd would otherwise remove its pidfile, which now
    names the new rainbowd.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)


def _fixedSettings(config: Config) -> Dict[str, Any]:
    """
    The values of the keys an upgrade may not change.
    """
    return {key: getattr(config, key) for key in handover.FIXED_KEYS}


def _maxConnections(options: Options) -> int:
    """
    Raise the descriptor limit, and say so with the connection cap it gives:
    C{maxConnections}, or the most the limit leaves room for.
    """
    config = options.config
    limit = options.raiseFileLimit()
    maxConnections = config.maxConnections
    derived = maxConnections is None
    if maxConnections is None:
        maxConnections = defaultMaxConnections(limit.soft, config.maxBackends)
    line = describeLimit(limit, maxConnections, derived)
    (_log.warn if isLow(limit) else _log.info)("{line}", line=line)
    warning = budgetWarning(limit.soft, maxConnections, config.maxBackends)
    if warning is not None:
        _log.warn("{text}", text=warning)
    return maxConnections
