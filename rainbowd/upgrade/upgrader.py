# -*- test-case-name: rainbowd.test.unit.test_upgrade -*-
"""
Upgrading rainbowd in place: the running rainbowd starts a new one (the
same Python, command line, directory and environment, so it runs the
rainbowd and Twisted installed now and reads C{rainbow.conf.json} again),
hands it its listening sockets, its generations' output pipes and the
state of L{rainbowd.upgrade.handover} over a unix socket, waits until it says it
serves, then stops accepting, answers what it has in flight and exits 0
without signalling any app process.

Anything that fails before the new process is ready -- it cannot start,
exits, refuses the state, or takes longer than C{upgradeTimeout} -- leaves
the old one with everything, and the upgrade fails with the new process's
last lines of output (L{UpgradeFailed}).
"""

import os
import platform
import signal
import socket
import struct
from typing import Any, Callable, Dict, List, MutableMapping, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rainbowd.app.outputlines import OutputLines
from rainbowd.pypygc import commandLine
from rainbowd.upgrade import handover

_log = Logger()

#: The descriptor the new process gets its end of the handover socket on.
HANDOVER_FD = 3

#: The descriptors the new process gets this one's stdout and stderr on,
#: to put in place of its own once it is ready.
STDIO_FDS = (4, 5)

#: How many of the new process's last output lines a failure shows.
OUTPUT_LINES = 40

#: The length header before the state.
_HEADER = struct.Struct("!I")


class UpgradeFailed(Exception):
    """
    The new rainbowd did not take over; the old one serves on.

    @ivar error: a sentence saying what went wrong.
    @ivar output: the new process's last lines of output.
    """

    def __init__(self, error: str, output: Sequence[str] = ()) -> None:
        super().__init__(error)
        self.error = error
        self.output = list(output)

    def __str__(self) -> str:
        return self.error


class _NewProcess(ProcessProtocol):
    """
    The new rainbowd, as the old one sees it: its output, kept for a
    failure's answer, and its exit.
    """

    def __init__(self, ended: Callable[[Any], None]) -> None:
        self.lines: List[str] = []
        self._output = OutputLines()
        self._ended = ended

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in self._output.received(childFD, data):
            self.lines.append(line.decode("utf-8", "replace"))
        del self.lines[:-OUTPUT_LINES]

    def output(self) -> List[str]:
        rest = [p.decode("utf-8", "replace") for p in self._output.pending()]
        return (self.lines + rest)[-OUTPUT_LINES:]

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason.value)


class _Messages(Protocol):
    """
    The old process's end of the handover socket: a line from the new
    process says it is ready or refuses; the end of the connection, that it
    is gone (before ready: it failed; after: nothing to say).
    """

    def __init__(self, message: Callable[[Dict[str, Any]], None], lost: Callable[[], None]):
        self._buffer = b""
        self._message = message
        self._lost = lost

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._message(handover.parseLine(line))

    def connectionLost(self, reason=None) -> None:
        self._lost()


class Upgrader:
    """
    Starts the new rainbowd and hands over to it; one upgrade at a time (an
    upgrade asked for during one gets its outcome).

    @param describe: returns the L{handover.State} to hand over and the
        descriptors it names, in order.
    @param handOver: called once the new process serves: stops accepting,
        answers what is in flight and exits without stopping the app.
    @param timeout: returns C{upgradeTimeout}, in seconds.
    @param commandLine: returns this process's command line, interpreter
        first, or L{None} if it cannot be known.
    @param socketpair: makes the handover socket's two ends.
    @param failed: called when an upgrade fails (to write twistd's pidfile
        again, say).
    """

    def __init__(
        self,
        reactor: Any,
        describe: Callable[[], Tuple[handover.State, List[int]]],
        handOver: Callable[[], Any],
        timeout: Callable[[], float],
        commandLine: Callable[[], Optional[List[str]]] = commandLine,
        environ: Optional[Dict[str, str]] = None,
        cwd: Callable[[], str] = os.getcwd,
        failed: Callable[[], None] = lambda: None,
        socketpair: Callable[[], Tuple[socket.socket, socket.socket]] = lambda: socket.socketpair(
            socket.AF_UNIX, socket.SOCK_STREAM
        ),
        implementation: str = platform.python_implementation(),
    ) -> None:
        self._reactor = reactor
        self._describe = describe
        self._handOver = handOver
        self._timeout = timeout
        self._commandLine = commandLine
        self._environ = os.environ if environ is None else environ
        self._cwd = cwd
        self._failed = failed
        self._socketpair = socketpair
        self._implementation = implementation
        self._waiting: List[Deferred] = []
        self.startedAt = reactor.seconds()
        self.upgradedFrom: Optional[int] = None
        self.handedOver = False

    @property
    def pid(self) -> int:
        """
        This rainbowd's pid, now: twistd daemonizes after the upgrader is
        made.
        """
        return os.getpid()

    def describe(self) -> Dict[str, Any]:
        """
        This rainbowd, for C{/status}.
        """
        from rainbowd import __version__

        return {
            "pid": self.pid,
            "version": __version__,
            "startedAt": self.startedAt,
            "upgradedFrom": self.upgradedFrom,
            "upgrading": bool(self._waiting),
        }

    def upgrade(self, requester: Optional[str] = None) -> Deferred:
        """
        Start the new rainbowd and hand over to it.

        @return: a L{Deferred} firing with C{{"pid", "previousPid",
            "seconds"}} once the new process serves, or failing with
            L{UpgradeFailed}.
        """
        d: Deferred = Deferred()
        if self._implementation == "PyPy":
            d.errback(
                UpgradeFailed(
                    "rainbowd: upgrading in place is not supported on PyPy yet "
                    "(the new rainbowd does not serve after taking over); "
                    "nothing was changed: restart rainbowd to upgrade it, or "
                    "run it on CPython"
                )
            )
            return d
        if self.handedOver:
            d.errback(
                UpgradeFailed(
                    "rainbowd: this rainbowd has already handed over to "
                    "another; ask that one"
                )
            )
            return d
        self._waiting.append(d)
        if len(self._waiting) == 1:
            _log.info("Upgrading rainbowd, asked by {requester}", requester=requester)
            self._start()
        return d

    def _finish(self, outcome: Any) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(outcome, UpgradeFailed):
            self._failed()
        for d in waiting:
            if isinstance(outcome, UpgradeFailed):
                d.errback(UpgradeFailed(outcome.error, outcome.output))
            else:
                d.callback(dict(outcome))

    def _start(self) -> None:
        started = self._reactor.seconds()
        argv = self._commandLine()
        if not argv:
            self._finish(
                UpgradeFailed(
                    "rainbowd: cannot read this process's command line "
                    "(/proc/self/cmdline), so cannot start the new rainbowd; "
                    "stop and start rainbowd instead"
                )
            )
            return
        try:
            state, fds = self._describe()
            data = handover.encode(state)
        except Exception as e:
            self._finish(UpgradeFailed(f"rainbowd: cannot describe the state to hand over: {e}"))
            return
        try:
            ours, theirs = self._socketpair()
        except OSError as e:
            self._finish(UpgradeFailed(f"rainbowd: cannot make the handover socket: {e}"))
            return
        attempt = _Attempt(self, started, ours, data, fds)
        env = dict(self._environ)
        env[handover.HANDOVER_VARIABLE] = str(HANDOVER_FD)
        try:
            attempt.process = self._reactor.spawnProcess(
                attempt.newProcess,
                argv[0],
                argv,
                env=env,
                path=self._cwd(),
                # Its output comes here until it is ready (for a failure's
                # answer), then goes where this one's does (STDIO_FDS).
                childFDs={
                    0: 0,
                    1: "r",
                    2: "r",
                    HANDOVER_FD: theirs.fileno(),
                    STDIO_FDS[0]: 1,
                    STDIO_FDS[1]: 2,
                },
            )
        except Exception as e:
            ours.close()
            theirs.close()
            self._finish(UpgradeFailed(f"rainbowd: cannot start the new rainbowd: {e}"))
            return
        theirs.close()
        attempt.begin(self._timeout())


def _describeExit(reason: Any) -> str:
    """
    What the new rainbowd's exit C{reason} (the value of
    L{ProcessProtocol.processEnded}'s failure) says, for a person.
    """
    code = getattr(reason, "exitCode", None)
    sig = getattr(reason, "signal", None)
    how = f"exited with status {code}" if sig is None else f"was killed by signal {sig}"
    return f"rainbowd: the new rainbowd {how} before it was ready; the old one serves on"


class _Attempt:
    """
    One new process, from its start to ready or failure.
    """

    process: Any = None

    def __init__(self, upgrader: Upgrader, started: float, sock, data: bytes, fds: List[int]):
        self._upgrader = upgrader
        self._reactor = upgrader._reactor
        self._started = started
        self._sock = sock
        self._data = data
        self._fds = fds
        self._over = False
        self._timer = None
        self._exitReason: Any = None
        self.newProcess = _NewProcess(self._ended)
        self._transport = None

    def begin(self, timeout: float) -> None:
        self._timer = self._reactor.callLater(timeout, self._timedOut, timeout)
        try:
            # The header and the descriptors first, in one small message
            # that never blocks; then the state through the reactor.
            socket.send_fds(self._sock, [_HEADER.pack(len(self._data))], self._fds)
        except OSError as e:
            self._fail(f"rainbowd: cannot send the sockets to the new rainbowd: {e}")
            return
        self._sock.setblocking(False)
        self._transport = self._reactor.adoptStreamConnection(
            self._sock.fileno(), socket.AF_UNIX, _MessagesFactory(self._message, self._lost)
        )
        self._sock.close()
        if self._transport is not None:
            self._transport.write(self._data)

    def _message(self, message: Dict[str, Any]) -> None:
        if self._over:
            return
        if message["message"] == "ready":
            self._over = True
            self._cancelTimer()
            seconds = round(self._reactor.seconds() - self._started, 3)
            pid = message.get("pid")
            _log.info(
                "rainbowd {pid} serves, after {seconds} s: handing over to it",
                pid=pid,
                seconds=seconds,
            )
            self._upgrader.handedOver = True
            self._upgrader._finish(
                {"ok": True, "pid": pid, "previousPid": self._upgrader.pid, "seconds": seconds}
            )
            self._reactor.callLater(0, self._upgrader._handOver)
        else:
            self._fail(message.get("error") or "rainbowd: the new process refused the state")

    def _lost(self) -> None:
        if not self._over:
            self._fail(self._exitError() or "rainbowd: the new rainbowd closed the handover socket before it was ready")

    def _ended(self, reason: Any) -> None:
        self._exitReason = reason
        # One that exits 0 may have daemonized (twistd without -n): the
        # handover socket, which its daemon holds, then says how it goes.
        failed = getattr(reason, "signal", None) is not None or getattr(
            reason, "exitCode", 0
        ) not in (0, None)
        if not self._over and failed:
            self._fail(_describeExit(reason))

    def _exitError(self) -> Optional[str]:
        reason = self._exitReason
        if reason is None:
            return None
        return _describeExit(reason)


    def _timedOut(self, timeout: float) -> None:
        self._timer = None
        self._fail(
            f"rainbowd: the new rainbowd was not ready within upgradeTimeout "
            f"({timeout:g} s); it was killed, and the old one serves on.  "
            'Raise "upgradeTimeout" if it needs longer.'
        )

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail(self, error: str) -> None:
        if self._over:
            return
        self._over = True
        self._cancelTimer()
        if self._transport is not None:
            self._transport.loseConnection()
        else:
            try:
                self._sock.close()
            except OSError:
                pass
        if self.process is not None and self._exitReason is None:
            try:
                self.process.signalProcess("KILL")
            except Exception:
                pass
        _log.error("Upgrade failed: {error}; the old rainbowd serves on", error=error)
        self._upgrader._finish(UpgradeFailed(error, self.newProcess.output()))


class _MessagesFactory:
    def __init__(self, message, lost):
        self._message = message
        self._lost = lost

    def doStart(self):
        pass

    def doStop(self):
        pass

    def buildProtocol(self, addr):
        return _Messages(self._message, self._lost)


def receive(fd: int, timeout: float) -> Tuple[handover.State, List[int], socket.socket]:
    """
    In the new process: take the state and descriptors from the handover
    socket C{fd}.

    @return: the state, the descriptors, and the socket (to say ready on).
    @raise handover.HandoverRefused: if they cannot be read or understood.
    """
    sock = socket.socket(fileno=fd)
    sock.settimeout(timeout)
    try:
        header, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 64)
        if len(header) != _HEADER.size:
            raise handover.HandoverRefused(
                "rainbowd: the old rainbowd closed the handover socket before "
                "sending its state"
            )
        (length,) = _HEADER.unpack(header)
        if length > handover.MAX_STATE:
            raise handover.HandoverRefused(
                f"rainbowd: the state handed over is {length} bytes, more "
                f"than the {handover.MAX_STATE} taken"
            )
        chunks, got = [], 0
        while got < length:
            chunk = sock.recv(min(length - got, 65536))
            if not chunk:
                raise handover.HandoverRefused(
                    "rainbowd: the old rainbowd closed the handover socket "
                    "in the middle of its state"
                )
            chunks.append(chunk)
            got += len(chunk)
    except OSError as e:
        raise handover.HandoverRefused(f"rainbowd: cannot read the handed over state: {e}")
    return handover.decode(b"".join(chunks)), fds, sock


class UpgradeOnSignal(Service):
    """
    Upgrade on C{SIGUSR2} (nginx's and gunicorn's signal for a new
    binary), so that C{systemctl kill -s USR2 rainbowd} upgrades; log the
    outcome.
    """

    def __init__(self, reactor: Any, upgrade: Callable[..., Deferred], installSignal=signal.signal) -> None:
        self._reactor = reactor
        self._upgrade = upgrade
        self._installSignal = installSignal

    def startService(self) -> None:
        Service.startService(self)
        self._reactor.callWhenRunning(self._installSignal, signal.SIGUSR2, self._signalled)

    def _signalled(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.upgrade)

    def upgrade(self) -> None:
        if not self.running:
            _log.info("SIGUSR2 while stopping: no upgrade")
            return
        _log.info("SIGUSR2: upgrading rainbowd", event="sigusr2")
        self._upgrade(requester="SIGUSR2").addCallbacks(self._done, self._failed)

    def _done(self, answer: Dict[str, Any]) -> None:
        _log.info(
            "upgrade on SIGUSR2 done: rainbowd {pid} took over from {previous} ({seconds} s)",
            pid=answer["pid"],
            previous=answer["previousPid"],
            seconds=answer["seconds"],
            event="sigusr2",
            ok=True,
        )

    def _failed(self, failure: Failure) -> None:
        output = getattr(failure.value, "output", [])
        _log.error(
            "upgrade on SIGUSR2 failed: {reason}; this rainbowd serves on.  "
            "The new process's last lines:\n{output}",
            reason=str(failure.value),
            output="\n".join(output) or "(none)",
            event="sigusr2",
            ok=False,
        )


def takeOverPidfile(
    path: str, environ: Optional[MutableMapping[str, str]] = None, getppid=os.getppid
) -> None:
    """
    In a new rainbowd started by an upgrade: remove twistd's pidfile
    C{path} if it names the rainbowd handing over (this process's parent),
    so that twistd, which refuses to start while it names a live process,
    starts and writes this process's pid into it.  The old rainbowd writes
    its pid back if the upgrade fails (L{restorePidfile}).
    """
    environ = os.environ if environ is None else environ
    if handover.HANDOVER_VARIABLE not in environ:
        return
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    if pid == getppid():
        os.remove(path)


def restorePidfile(path: Optional[str], pid: int) -> None:
    """
    After a failed upgrade: make twistd's pidfile C{path} name this
    process, C{pid}, again.
    """
    if path is None:
        return
    try:
        with open(f"{path}.{pid}", "w") as f:
            f.write(f"{pid}\n")
        os.rename(f"{path}.{pid}", path)
    except OSError as e:
        _log.warn("cannot write the pidfile {path} again: {error}", path=path, error=e)


class Handover:
    """
    The new rainbowd's end of the handover: the state and descriptors it
    was given, and the socket to say it is ready on.
    """

    def __init__(self, state: handover.State, fds: List[int], sock: socket.socket) -> None:
        self.state = state
        self.fds = fds
        self._sock = sock
        self._over: Deferred = Deferred()
        self.finished = False

    @classmethod
    def incoming(cls, timeout: float, environ: Optional[MutableMapping[str, str]] = None) -> Optional["Handover"]:
        """
        The handover this process was started for, or L{None} if it was
        not started by an upgrade.  The variable is taken out of
        C{environ}, so that the app does not inherit it.

        @raise SystemExit: if the state cannot be read or understood; the
            old rainbowd is told why, and serves on.
        """
        environ = os.environ if environ is None else environ
        value = environ.pop(handover.HANDOVER_VARIABLE, None)
        if value is None:
            return None
        fd = int(value)
        try:
            state, fds, sock = receive(fd, timeout)
        except handover.HandoverRefused as e:
            _refuse(fd, str(e))
            raise SystemExit(str(e))
        return cls(state, fds, sock)

    def fd(self, index: int) -> int:
        return self.fds[index]

    def refuse(self, error: str) -> None:
        """
        Tell the old rainbowd this one will not take over, and stop.

        @raise SystemExit: always.
        """
        try:
            self._sock.settimeout(5)
            self._sock.sendall(handover.refusedLine(error))
        except OSError:
            pass
        raise SystemExit(error)

    def ready(self, reactor: Any) -> Deferred:
        """
        Say to the old rainbowd that this one serves.

        @return: a L{Deferred} that fires once the old one has exited (its
            end of the socket closed), when nothing is in flight on it.
        """
        self._sock.setblocking(False)
        transport = reactor.adoptStreamConnection(
            self._sock.fileno(), socket.AF_UNIX, _MessagesFactory(lambda m: None, self._ended)
        )
        self._sock.close()
        transport.write(handover.readyLine(os.getpid()))
        _takeStdio()
        return self._over

    def _ended(self) -> None:
        self.finished = True
        self._over.callback(None)


def _takeStdio() -> None:
    """
    Write from now on where the old rainbowd wrote (a terminal, the
    journal), rather than to the pipes by which it read this one's output
    while it started.
    """
    for fd, target in zip(STDIO_FDS, (1, 2)):
        try:
            os.dup2(fd, target)
            os.close(fd)
        except OSError:
            pass


def _refuse(fd: int, error: str) -> None:
    try:
        os.write(fd, handover.refusedLine(error))
    except OSError:
        pass


def appendToLog(path: Optional[str], fds: str = "/proc/self/fd") -> None:
    """
    Make this process's descriptors of twistd's log file C{path} append
    (C{O_APPEND}): twistd opens it to write at the end it found, and the
    rainbowds before and after an upgrade, both writing to it for a
    moment, would otherwise write over each other's lines.
    """
    import fcntl

    if not path:
        return
    target = os.path.realpath(path)
    try:
        names = os.listdir(fds)
    except OSError:
        return
    for name in names:
        try:
            if os.path.realpath(os.readlink(os.path.join(fds, name))) != target:
                continue
            fd = int(name)
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
        except (OSError, ValueError):
            continue


def familyOf(fd: int) -> int:
    """
    The address family of the socket C{fd}.
    """
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.family
    finally:
        sock.close()
