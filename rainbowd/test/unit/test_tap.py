"""
Tests for L{rainbowd.tap}: the options and the service.
"""

import io
import json
import os
import platform
import sys
from errno import EADDRINUSE
from os import strerror
from signal import SIGINT, SIGTERM
from typing import Any, Dict, List, Tuple, cast

import attrs
from prometheus_client.exposition import generate_latest
from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.filepath import FilePath
from twisted.python.lockfile import FilesystemLock
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

import rainbowd
import twisted
from rainbowd.app.backendlogs import BackendLogs
from rainbowd.app.deployer import Deployer, Event
from rainbowd.config import ConfigError, settingNames
from rainbowd.control.history import FILENAME as HISTORY_FILENAME
from rainbowd.control.history import DeploysResource
from rainbowd.control.metrics import Metrics, MetricsResource
from rainbowd.control.site import MAX_CONNECTIONS, ControlSite
from rainbowd.fdlimit import FileLimit
from rainbowd.tap import (
    Options,
    _handOver,
    _ListenNow,
    _OrderlyStop,
    _withLockfile,
    makeService,
)
from rainbowd.test.fakes import FakeProcessReactor
from rainbowd.test.unit.test_controlsite import tokenFile
from rainbowd.test.unit.test_history import record as historyRecord
from rainbowd.web.accesslog import Both
from rainbowd.web.connlimit import AcceptErrors, ConnectionCap
from rainbowd.web.proxy import ProxySite
from rainbowd.web.requestlimits import RequestLimits
from rainbowd.web.stopdelay import StopDelay

RUN = "gunicorn app:app --bind 127.0.0.1:$1 --pid $2"


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{Options}.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()
        self.ephemeral = self.directory.child("ip_local_port_range")
        self.ephemeral.setContent(b"32768\t60999\n")

    def write(self, values: Dict[str, Any], name: str = "rainbow.conf.json") -> None:
        self.directory.child(name).setContent(json.dumps(values).encode("utf-8"))

    def options(self) -> Options:
        """
        Options that look for their file in the test's directory.
        """
        options = Options()
        options.cwd = self.directory.path
        options.ephemeralRangePath = self.ephemeral.path
        return options

    def parse(self, argv: List[str]) -> Options:
        options = self.options()
        options.parseOptions(argv)
        return options

    def test_defaultFile(self) -> None:
        """
        Without flags, rainbow.conf.json in the current directory is loaded.
        """
        self.write({"run": RUN, "drainTimeout": 1000})
        options = self.parse([])
        self.assertEqual(options.config.run, RUN)
        self.assertEqual(options.config.drainTimeout, 1.0)
        self.assertEqual(options.overrides, {})
        self.assertEqual(options.warnings, [])

    def test_flagsOverrideFile(self) -> None:
        """
        Flags beat the file's keys, times in ms, and are kept as overrides.
        """
        self.write({"run": RUN, "port": 8000, "drainTimeout": 1000})
        options = self.parse(
            ["-p", "9000", "--drain-timeout", "5000", "--max-backends", "2"]
        )
        self.assertEqual(options.config.port, "tcp:9000:interface=127.0.0.1")
        self.assertEqual(options.config.drainTimeout, 5.0)
        self.assertEqual(options.config.maxBackends, 2)
        self.assertEqual(
            options.overrides, {"port": 9000, "drainTimeout": 5000, "maxBackends": 2}
        )

    def test_configFlag(self) -> None:
        """
        --config / -c names the file, relative to the current directory.
        """
        self.write({"run": "elsewhere $1"}, "prod.json")
        for flag in ("--config", "-c"):
            options = self.parse([flag, "prod.json"])
            self.assertEqual(options.config.run, "elsewhere $1")
            self.assertEqual(
                options.config.source, self.directory.child("prod.json").path
            )

    def test_runWithoutFile(self) -> None:
        """
        --run is enough without any file.
        """
        options = self.parse(["--run", RUN, "--warmup-time", "500"])
        self.assertEqual(options.config.run, RUN)
        self.assertEqual(options.config.source, None)
        self.assertEqual(options.config.warmupTime, 0.5)
        self.assertEqual(options.config.healthCheckPath, None)

    def test_portDescriptions(self) -> None:
        """
        The port flags take endpoint descriptions as well as numbers.
        """
        options = self.parse(
            [
                "--run",
                RUN,
                "--port",
                "unix:/run/app.sock:mode=660",
                "--control-port",
                "tcp:7001:interface=127.0.0.1",
            ]
        )
        self.assertEqual(options.config.port, "unix:/run/app.sock:mode=660")
        self.assertEqual(options.config.controlPort, "tcp:7001:interface=127.0.0.1")

    def test_configErrorExits(self) -> None:
        """
        A bad value from a flag makes twistd exit with a message naming the
        flag and the key.
        """
        error = self.assertRaises(
            SystemExit, self.parse, ["--run", RUN, "--max-backends", "0"]
        )
        self.assertIn("--max-backends", str(error))
        self.assertIn('"maxBackends"', str(error))

    def test_fileErrorExits(self) -> None:
        """
        A bad key in the file makes twistd exit with a message naming the
        file and the key, and no usage text.
        """
        self.write({"run": RUN, "killTimeout": "soon"})
        error = self.assertRaises(SystemExit, self.parse, [])
        self.assertTrue(str(error).startswith("rainbowd: "))
        self.assertIn(self.directory.child("rainbow.conf.json").path, str(error))
        self.assertIn('"killTimeout"', str(error))

    def test_missingFileExits(self) -> None:
        """
        No file and no --run makes twistd exit saying what to do.
        """
        error = self.assertRaises(SystemExit, self.parse, [])
        self.assertIn("pass --config PATH or --run COMMAND", str(error))

    def test_notANumber(self) -> None:
        """
        A time flag that is not a whole number stops twistd with one line
        naming it, then one pointing at --help, not the whole of --help.
        """
        error = self.assertRaises(
            SystemExit, self.parse, ["--run", RUN, "--drain-timeout", "5s"]
        )
        self.assertEqual(
            str(error).splitlines(),
            [
                "rainbowd: --drain-timeout is '5s', but it must be a whole "
                "number of milliseconds.",
                "rainbowd: twistd rainbowd --help lists the flags.",
            ],
        )

    def test_unknownFlag(self) -> None:
        """
        A flag rainbowd does not have stops twistd with one line naming it,
        then one pointing at --help.
        """
        error = self.assertRaises(SystemExit, self.parse, ["--colour", "5"])
        self.assertEqual(
            str(error).splitlines(),
            [
                "rainbowd: option --colour not recognized.",
                "rainbowd: twistd rainbowd --help lists the flags.",
            ],
        )

    def test_twistdFlagAfterRainbowd(self) -> None:
        """
        One of twistd's own flags given after "rainbowd" stops twistd with a
        line saying it goes before; a misspelt flag of rainbowd's gets a
        guess.
        """
        for argv, example in [
            (["-n"], "-n"),
            (["--pidfile=x.pid"], "--pidfile ..."),
            (["-l", "x.log"], "-l ..."),
        ]:
            error = self.assertRaises(SystemExit, self.parse, ["--run", RUN, *argv])
            flag = example.split()[0]
            self.assertEqual(
                str(error).splitlines()[0],
                f"rainbowd: option {flag} not recognized: it is one of twistd's "
                f"own, which go before rainbowd, as in twistd {example} rainbowd.",
            )
        error = self.assertRaises(SystemExit, self.parse, ["--prot", "8000"])
        self.assertEqual(
            str(error).splitlines()[0],
            "rainbowd: option --prot not recognized.  Did you mean --port?",
        )

    def twistd(self, *argv: str) -> str:
        """
        What C{twistd rainbowd ARGV} prints before it exits 0.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, ServerOptions().parseOptions, list(argv))
        self.assertIn(error.code, (0, None))
        return out.getvalue()

    def test_help(self) -> None:
        """
        C{twistd rainbowd --help} says "Usage:" once, on its first line, then
        the description, then the flags it tells about.
        """
        text = self.twistd("rainbowd", "--help")
        lines = text.splitlines()
        self.assertTrue(
            lines[0].startswith("Usage: twistd [options] rainbowd [--config PATH]"),
            lines[0],
        )
        self.assertEqual(text.count("Usage:"), 1)
        words = " ".join(text.split())
        self.assertLess(
            words.index("each flag below overrides"), words.index("--drain-timeout=")
        )
        self.assertIn('Every key has a flag but "env" and "cwd"', words)

    def test_version(self) -> None:
        """
        C{twistd rainbowd --version} prints rainbowd's version, with
        Twisted's and Python's.
        """
        self.assertEqual(
            self.twistd("rainbowd", "--version"),
            f"rainbowd {rainbowd.__version__} (Twisted {twisted.__version__}, "
            f"{platform.python_implementation()} {platform.python_version()})\n",
        )

    def test_everyKeyButPathsHasAFlag(self) -> None:
        """
        Each config key has a dashed flag whose help gives its default,
        except env and cwd, which only the file sets.
        """
        flags = {parameter[0]: parameter[3] for parameter in Options.optParameters}
        self.assertIn("drain-timeout", flags)
        self.assertIn("in ms (default: 30000)", flags["drain-timeout"])
        self.assertEqual(
            len(flags), len(settingNames()) - len(["env", "cwd"]) + len(["config"])
        )

    def test_livenessFlags(self) -> None:
        """
        --liveness-interval (ms, 0 to turn the checks off) and
        --liveness-failures override the file's keys.
        """
        options = self.parse(
            ["--run", RUN, "--liveness-interval", "0", "--liveness-failures", "5"]
        )
        self.assertEqual(options.config.livenessInterval, 0)
        self.assertEqual(options.config.livenessFailures, 5)

    def test_rollbackFlags(self) -> None:
        """
        The rollback keys have flags; --rollback-error-rate takes a
        fraction, and says so when it gets something else.
        """
        options = self.parse(
            [
                "--run", RUN,
                "--rollback-window", "0",
                "--rollback-error-rate", "0.5",
                "--rollback-check-failures", "4",
                "--rollback-min-requests", "50",
            ]
        )
        config = options.config
        self.assertEqual(
            (
                config.rollbackWindow,
                config.rollbackErrorRate,
                config.rollbackCheckFailures,
                config.rollbackMinRequests,
            ),
            (0, 0.5, 4, 50),
        )
        e = self.assertRaises(
            SystemExit, self.parse, ["--run", RUN, "--rollback-error-rate", "half"]
        )
        self.assertIn("a number from 0 to 1", str(e))

    def test_portRangeWarning(self) -> None:
        """
        Backend ports inside the kernel's ephemeral range give a warning.
        """
        options = self.parse(["--run", RUN, "--backend-ports", "40000-40999"])
        self.assertEqual(len(options.warnings), 1)
        self.assertIn("ephemeral port range 32768-60999", options.warnings[0])

    def test_stateDirInReleaseWarning(self) -> None:
        """
        A state directory inside a symlinked release directory gives a
        warning.
        """
        release = self.directory.child("releases").child("1")
        release.makedirs()
        release.child("rainbow.conf.json").setContent(json.dumps({"run": RUN}).encode())
        release.linkTo(self.directory.child("current"))
        options = self.parse(["--config", "current/rainbow.conf.json"])
        self.assertEqual(options.config.cwd, os.path.realpath(release.path))
        [warning] = options.warnings
        self.assertIn('"stateDir" is ', warning)
        self.assertIn("/current/.rainbowd, inside ", warning)

    def test_controlToken(self) -> None:
        """
        --control-token-file (or "controlTokenFile") is read once, at
        startup; a file other users can read gives a warning.
        """
        token = self.directory.child("token")
        token.setContent(b"s3cret-token\n")
        token.chmod(0o600)
        options = self.parse(["--run", RUN, "--control-token-file", token.path])
        self.assertEqual(options.controlToken, b"s3cret-token")
        self.assertEqual(options.warnings, [])
        token.chmod(0o644)
        self.write({"run": RUN, "controlTokenFile": "token"})
        options = self.parse([])
        self.assertEqual(options.controlToken, b"s3cret-token")
        self.assertEqual(len(options.warnings), 1)
        self.assertIn(f"chmod 600 {token.path}", options.warnings[0])

    def test_controlTokenMissing(self) -> None:
        """
        A token file that is missing or empty stops twistd with a message
        naming it, and no token.
        """
        error = self.assertRaises(
            SystemExit, self.parse, ["--run", RUN, "--control-token-file", "nope"]
        )
        self.assertIn(self.directory.child("nope").path, str(error))
        self.assertIn("does not exist", str(error))
        token = self.directory.child("token")
        token.setContent(b"\n")
        error = self.assertRaises(
            SystemExit, self.parse, ["--run", RUN, "--control-token-file", "token"]
        )
        self.assertIn("is empty", str(error))

    def test_controlTokenNotShown(self) -> None:
        """
        A token file that cannot be used stops twistd without showing its
        content, in the message or the log.
        """
        token = self.directory.child("token")
        token.setContent(b"s3cret-token and more\n")
        with capturedLogs() as events:
            error = self.assertRaises(
                SystemExit, self.parse, ["--run", RUN, "--control-token-file", "token"]
            )
        self.assertIn("one word of printable ASCII", str(error))
        self.assertNotIn("s3cret", str(error) + repr(events))

    def test_exposedControlPort(self) -> None:
        """
        A control API listening beyond loopback gives a warning.
        """
        options = self.parse(["--run", RUN, "--control-port", "tcp:7001"])
        self.assertEqual(len(options.warnings), 1)
        self.assertIn("listens on every interface", options.warnings[0])

    def test_maintenancePageRead(self) -> None:
        """
        A maintenancePage that cannot be read stops rainbowd at startup, and
        fails a later readConfig (a redeploy), naming the file.
        """
        self.write({"run": RUN, "maintenancePage": "down.html"})
        error = self.assertRaises(SystemExit, self.parse, [])
        self.assertIn('("maintenancePage") does not exist', str(error))
        self.directory.child("down.html").setContent(b"<h1>down</h1>")
        options = self.parse([])
        self.directory.child("down.html").remove()
        self.assertRaises(ConfigError, options.readConfig)

    def test_readConfigAgain(self) -> None:
        """
        readConfig reads the file again with the same flags.
        """
        self.write({"run": "v1 $1", "drainTimeout": 1000})
        options = self.parse(["--drain-timeout", "2000"])
        self.write({"run": "v2 $1", "drainTimeout": 1000})
        config = options.readConfig()
        self.assertEqual((config.run, config.drainTimeout), ("v2 $1", 2.0))


class ListenFails(FakeProcessReactor):
    """
    A reactor on which every port is taken.
    """

    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError(EADDRINUSE, strerror(EADDRINUSE)))


def wrapped(factory: IProtocolFactory) -> Any:
    """
    The factory that C{factory}, a listening port's L{ConnectionCap},
    counts the connections of.
    """
    assert isinstance(factory, ConnectionCap)
    return factory.wrappedFactory


class ServiceTestCase(SynchronousTestCase):
    """
    Tests of what L{makeService} makes of options.
    """

    def options(self, *argv: str, limit: FileLimit = FileLimit(1024, 524288, 1024)) -> Options:
        stateDir = os.path.abspath(self.mktemp())
        options = Options()
        options.cwd = os.path.dirname(stateDir)
        # Any arguments, as the real one takes (all of them defaulted).
        options.raiseFileLimit = lambda *_: limit
        # Every port is free: the real check listens on it.
        options.portIsFree = lambda *_: True
        options.parseOptions(["--run", RUN, "--state-dir", stateDir, *argv])
        return options

    def sites(self, service) -> Dict[str, Any]:
        """
        The sites served, by config key of their port, without the public
        port's L{ConnectionCap}.
        """
        return {
            child._key: getattr(child.factory, "wrappedFactory", child.factory)
            for child in service
            if hasattr(child, "_key")
        }


class MakeServiceTests(ServiceTestCase):
    """
    Tests for L{makeService}.
    """

    def test_listens(self) -> None:
        """
        The proxy and the control API listen on loopback once, from
        L{makeService} (before twistd daemonizes; its own
        C{privilegedStartService} then does nothing), and before the first
        generation is launched.
        """
        reactor = FakeProcessReactor()
        service = makeService(self.options("--port", "8000"), reactor)
        self.assertEqual(len(reactor.tcpServers), 2)
        service.privilegedStartService()
        self.assertEqual(
            [(port, interface) for port, factory, backlog, interface in reactor.tcpServers],
            [(8000, "127.0.0.1"), (8001, "127.0.0.1")],
        )
        self.assertEqual(reactor.processes, [])
        service.startService()
        self.assertEqual(len(reactor.processes), 1)
        self.assertEqual(reactor.processes[0].args[3], RUN)

    def test_requestLimits(self) -> None:
        """
        Both sites get the request limits of the config, but the control
        API keeps its own 64 KiB body limit.
        """
        reactor = FakeProcessReactor()
        options = self.options(
            "--request-header-timeout", "2500",
            "--request-body-timeout", "4000",
            "--request-body-min-rate", "100",
            "--max-request-body", "1000",
        )
        service = makeService(options, reactor)
        service.privilegedStartService()
        cap, controlCap = [factory for _, factory, _, _ in reactor.tcpServers]
        control = wrapped(controlCap)
        proxy = wrapped(cap)
        self.assertEqual(
            proxy.limits,
            RequestLimits(headerTimeout=2.5, bodyTimeout=4.0, bodyMinRate=100, maxBody=1000),
        )
        self.assertEqual(control.limits, attrs.evolve(proxy.limits, maxBody=64 * 1024))

    def test_stateDirMade(self) -> None:
        """
        The state directory is made if it is not there.
        """
        options = self.options()
        makeService(options, FakeProcessReactor())
        self.assertTrue(os.path.isdir(options.config.stateDir))

    def test_stateDirUnsafe(self) -> None:
        """
        A state directory others may write to stops rainbowd with one line
        naming it, its mode and the fix; so does one that cannot be made.
        """
        options = self.options()
        os.makedirs(options.config.stateDir)
        os.chmod(options.config.stateDir, 0o777)
        error = str(self.assertRaises(SystemExit, makeService, options, FakeProcessReactor()))
        self.assertTrue(error.startswith('rainbowd: The state directory ("stateDir")'))
        self.assertIn("has mode 0777", error)
        self.assertNotIn("\n", error)
        blocker = os.path.abspath(self.mktemp())
        open(blocker, "w").close()
        options = self.options("--state-dir", os.path.join(blocker, "state"))
        error = str(self.assertRaises(SystemExit, makeService, options, FakeProcessReactor()))
        self.assertIn("rainbowd: Cannot create the state directory", error)

    def test_versionLogged(self) -> None:
        """
        rainbowd logs its version, and Twisted's and Python's, first.
        """
        with capturedLogs() as events:
            makeService(self.options(), FakeProcessReactor())
        self.assertEqual(formatEvent(events[0]), rainbowd.versionLine())
        self.assertIn(f"rainbowd {rainbowd.__version__} (Twisted ", formatEvent(events[0]))

    def test_stateDirForbidden(self) -> None:
        """
        A state directory rainbowd may not create stops it with one line
        naming the key, the directory and the fix, not a traceback.
        """
        if os.geteuid() == 0:
            # A read-only parent does not stop root; sysfs refuses even it.
            stateDir = "/sys/rainbowd-test/state"
        else:
            parent = os.path.abspath(self.mktemp())
            os.mkdir(parent, 0o500)
            self.addCleanup(os.chmod, parent, 0o700)
            stateDir = os.path.join(parent, "state")
        try:
            os.makedirs(stateDir)
        except PermissionError:
            pass
        else:
            raise SkipTest(f"{stateDir} can be created here")
        options = self.options("--state-dir", stateDir)
        error = str(self.assertRaises(SystemExit, makeService, options, FakeProcessReactor()))
        self.assertEqual(error.count("\n"), 0)
        self.assertIn(
            f'rainbowd: Cannot create the state directory ("stateDir") {stateDir}', error
        )
        self.assertIn("--state-dir", error)

    def test_lockLinkRefused(self) -> None:
        """
        A link planted as the lock file stops rainbowd, naming it, and its
        target is not truncated.
        """
        options = self.options()
        os.makedirs(options.config.stateDir, 0o700)
        victim = os.path.abspath(self.mktemp())
        with open(victim, "w") as f:
            f.write("precious\n")
        lock = os.path.join(options.config.stateDir, "rainbowd.lock")
        os.symlink(victim, lock)
        error = str(self.assertRaises(SystemExit, makeService, options, FakeProcessReactor()))
        self.assertIn(f"rainbowd: {lock} is a symbolic link", error)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_portTaken(self) -> None:
        """
        A port that cannot be listened on stops twistd with a message naming
        the key, the endpoint and the reason, in L{makeService}: before
        twistd daemonizes, so the message reaches the terminal.
        """
        error = self.assertRaises(
            SystemExit, makeService, self.options("--port", "8000"), ListenFails()
        )
        self.assertIn(
            'cannot listen on tcp:8000:interface=127.0.0.1 ("port"): '
            "Address already in use",
            str(error),
        )
        self.assertIn("--port", str(error))

    def test_failedStartLetsGo(self) -> None:
        """
        A start that fails half-way (the control port is taken) closes the
        port it already listens on and lets go of the state directory, so
        that the same process may start rainbowd again.
        """
        closed = []

        class Port:
            def stopListening(self):
                closed.append(True)

        class ControlPortTaken(FakeProcessReactor):
            def listenTCP(self, port, factory, backlog=50, interface=""):
                if port == 8001:
                    error = OSError(EADDRINUSE, strerror(EADDRINUSE))
                    raise CannotListenError(interface, port, error)
                FakeProcessReactor.listenTCP(self, port, factory, backlog, interface)
                return Port()

        options = self.options("--port", "8000")
        error = self.assertRaises(SystemExit, makeService, options, ControlPortTaken())
        self.assertIn('("controlPort")', str(error))
        self.assertEqual(closed, [True])
        second = makeService(options, FakeProcessReactor())
        self.addCleanup(second.getServiceNamed("stateDirLock").release)

    def test_controlSite(self) -> None:
        """
        The control API is a L{ControlSite} holding the token read at
        startup.
        """
        token = tokenFile(self, b"s3cret-token\n")
        reactor = FakeProcessReactor()
        service = makeService(self.options("--control-token-file", token), reactor)
        service.privilegedStartService()
        site = wrapped(reactor.tcpServers[1][1])
        self.assertIsInstance(site, ControlSite)
        self.assertEqual(site._token, b"s3cret-token")

    def test_backendTimeouts(self) -> None:
        """
        The proxy holds the app to C{backendTimeout} and
        C{backendBodyTimeout}, and counts what it sees in the metrics.
        """
        reactor = FakeProcessReactor()
        service = makeService(
            self.options("--backend-timeout", "1500", "--backend-body-timeout", "9000"),
            reactor,
        )
        service.privilegedStartService()
        proxy = wrapped(reactor.tcpServers[0][1]).resource
        self.assertEqual((proxy._backendTimeout, proxy._backendBodyTimeout), (1.5, 9.0))
        self.assertIsInstance(proxy._monitor, Metrics)

    def test_unixSocketLocked(self) -> None:
        """
        A unix socket is listened on with a lock file, so that one left by
        a killed rainbowd is replaced; a lock held by another process stops
        twistd with a message saying so.
        """
        self.assertEqual(
            _withLockfile("unix:/run/r.sock:mode=600"),
            "unix:/run/r.sock:mode=600:lockfile=1",
        )
        self.assertEqual(_withLockfile("unix:/r.sock:lockfile=0"), "unix:/r.sock:lockfile=0")
        self.assertEqual(_withLockfile("tcp:7001"), "tcp:7001")

        class Locked(FakeProcessReactor):
            def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
                raise CannotListenError(None, address, "Cannot acquire lock")

        path = os.path.abspath(self.mktemp())
        options = self.options("--control-port", f"unix:{path}:mode=600")
        error = self.assertRaises(SystemExit, makeService, options, Locked())
        self.assertIn("another rainbowd is using that socket", str(error))

    def test_unixSocketPathTooLong(self) -> None:
        """
        A unix socket that cannot be made for a reason without an errno (a
        path too long) stops twistd with that reason, not "None".
        """

        class TooLong(FakeProcessReactor):
            def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
                raise CannotListenError(None, address, OSError("AF_UNIX path too long"))

        path = os.path.abspath(self.mktemp())
        options = self.options("--control-port", f"unix:{path}")
        error = str(self.assertRaises(SystemExit, makeService, options, TooLong()))
        self.assertIn('("controlPort"): AF_UNIX path too long.', error)

    def test_unixSocketLockMoves(self) -> None:
        """
        The lock file of a unix socket, taken before twistd daemonizes,
        names the daemon once it starts, not the process that started it
        (which exits): another rainbowd would otherwise take it for a dead
        one's and take the socket over.  A relative path is the one from
        before twistd changed directory.
        """
        path = self.mktemp()
        lock = FilesystemLock(path + ".lock")

        class Port:
            lockFile = lock

            def stopListening(self):
                pass

        class Listens(FakeProcessReactor):
            def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
                self.assertLock = lock.lock()
                return Port()

        reactor = Listens()
        options = self.options("--control-port", f"unix:{path}")
        service = makeService(options, reactor)
        self.addCleanup(service.getServiceNamed("stateDirLock").release)
        self.assertTrue(reactor.assertLock)
        # As twistd's daemonizing leaves it: the pid of a process now gone,
        # and maybe another directory (--rundir).
        os.remove(lock.name)
        os.symlink("999999999", lock.name)
        absolute = os.path.abspath(lock.name)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir("/")
        service.startService()
        self.assertEqual(os.readlink(absolute), str(os.getpid()))
        lock.name = absolute
        lock.unlock()

    def test_stateDirLocked(self) -> None:
        """
        A second rainbowd on the same state directory stops in
        L{makeService}, before it listens or launches anything, with a
        message naming the directory, the first one's pid and the fix.
        """
        options = self.options()
        first = makeService(options, FakeProcessReactor())
        self.addCleanup(first.getServiceNamed("stateDirLock").release)
        reactor = FakeProcessReactor()
        error = self.assertRaises(SystemExit, makeService, options, reactor)
        self.assertIn(
            f"another rainbowd (pid {os.getpid()}) uses the state directory "
            f"{options.config.stateDir}",
            str(error),
        )
        self.assertIn("--state-dir", str(error))
        self.assertEqual(reactor.tcpServers, [])

    def test_stateDirLockReleased(self) -> None:
        """
        Once the first rainbowd is gone, another starts on its state
        directory.
        """
        options = self.options()
        first = makeService(options, FakeProcessReactor())
        first.privilegedStartService()
        first.getServiceNamed("stateDirLock").release()
        second = makeService(options, FakeProcessReactor())
        second.privilegedStartService()
        self.addCleanup(second.getServiceNamed("stateDirLock").release)

    def test_cleanExit(self) -> None:
        """
        Once stopped, the service clears the signal the reactor would
        otherwise exit with, so that twistd exits 0.
        """
        reactor = FakeProcessReactor()
        reactor._exitSignal = SIGTERM
        service = makeService(self.options(), reactor)
        service.privilegedStartService()
        d = service.stopService()
        self.successResultOf(d)
        self.assertIsNone(reactor._exitSignal)


class SignalReactor(FakeProcessReactor):
    """
    A reactor that records the signals its own handlers are given, and the
    calls made from a signal handler.
    """

    def __init__(self) -> None:
        super().__init__()
        self.handled: List[int] = []
        self.fromThread: List[Any] = []

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.fromThread.append((f, args, kwargs))

    def sigTerm(self, signum, frame=None) -> None:
        self.handled.append(signum)

    sigInt = sigTerm


class OrderlyStopTests(SynchronousTestCase):
    """
    Tests for how C{twistd rainbowd} meets SIGTERM and SIGINT.
    """

    def setUp(self) -> None:
        self.reactor = SignalReactor()
        self.handlers: Dict[int, Any] = {}
        self.service = _OrderlyStop(self.reactor, self.handlers.__setitem__)
        self.service.startService()
        for hook, args, kwargs in self.reactor.whenRunningHooks:
            hook(*args, **kwargs)

    def test_firstSignalStops(self) -> None:
        """
        The first SIGTERM or SIGINT goes to the reactor's own handler, which
        stops it.
        """
        self.assertEqual(sorted(self.handlers), [SIGINT, SIGTERM])
        self.handlers[SIGTERM](SIGTERM, None)
        self.assertEqual(self.reactor.handled, [SIGTERM])

    def test_secondSignalLogged(self) -> None:
        """
        A signal while stopping is logged, not handed to the reactor (whose
        C{stop} would raise).
        """
        self.service.stopService()
        with capturedLogs() as events:
            self.handlers[SIGINT](SIGINT, None)
            for f, args, kwargs in self.reactor.fromThread:
                f(*args, **kwargs)
        self.assertEqual(self.reactor.handled, [])
        self.assertIn(
            "SIGINT while stopping: still waiting for the app's processes to "
            "stop; SIGKILL rainbowd to abandon them",
            [formatEvent(event) for event in events],
        )


class Stopping(Service):
    """
    A child service whose stop is recorded and ends when the test says.
    """

    def __init__(self) -> None:
        self.stopped: List[Deferred] = []

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self.stopped.append(Deferred())
        return self.stopped[-1]


class Clients:
    """
    The public port's connections as L{_OrderlyStop} sees them: the two
    methods of the L{ConnectionCap} it is declared to have, which the tests
    cast this to.
    """

    def __init__(self) -> None:
        self.closing: List[Tuple[float, Deferred]] = []
        self.closed: List[Tuple[float, Deferred]] = []

    def closeGracefully(self, timeout: float) -> Deferred:
        self.closing.append((timeout, Deferred()))
        return self.closing[-1][1]

    def whenClosed(self, timeout: float) -> Deferred:
        self.closed.append((timeout, Deferred()))
        return self.closed[-1][1]


class StopOrderTests(SynchronousTestCase):
    """
    Tests for the order in which L{_OrderlyStop} stops its children.
    """

    def test_portsThenClientsThenTheRest(self) -> None:
        """
        The ports stop first; once they have, the clients' connections are
        closed gracefully, with the timeout given; only once that is done do
        the other children (the deployer, which drains the app) stop.
        """
        service = _OrderlyStop(SignalReactor(), {}.__setitem__)
        port, deployer = Stopping(), Stopping()
        deployer.setServiceParent(service)
        port.setServiceParent(service)
        service.ports = [port]
        clients = Clients()
        service.clients = cast(ConnectionCap, clients)
        service.clientTimeout = lambda: 7.0
        service.startService()
        stopped = service.stopService()
        self.assertEqual((len(port.stopped), clients.closing, deployer.stopped), (1, [], []))
        port.stopped[0].callback(None)
        self.assertEqual([timeout for timeout, _ in clients.closing], [7.0])
        self.assertEqual(deployer.stopped, [])
        clients.closing[0][1].callback(None)
        self.assertEqual(len(deployer.stopped), 1)
        self.assertEqual(len(port.stopped), 1)
        self.assertNoResult(stopped)
        deployer.stopped[0].callback(None)
        clients.closed[0][1].callback(None)
        self.successResultOf(stopped)

    def test_lastResponsesSentBeforeTheEnd(self) -> None:
        """
        Once the other children have stopped, the stop waits for the
        clients' connections to close, each once its last response is sent
        (the reactor, once stopped, would drop what is still buffered), for
        what is left of the timeout since the ports closed.
        """
        reactor = SignalReactor()
        service = _OrderlyStop(reactor, {}.__setitem__)
        port, deployer = Stopping(), Stopping()
        deployer.setServiceParent(service)
        port.setServiceParent(service)
        service.ports = [port]
        clients = Clients()
        service.clients = cast(ConnectionCap, clients)
        service.clientTimeout = lambda: 7.0
        service.startService()
        stopped = service.stopService()
        port.stopped[0].callback(None)
        reactor.advance(2.0)
        clients.closing[0][1].callback(None)
        reactor.advance(3.0)
        self.assertEqual(clients.closed, [])
        deployer.stopped[0].callback(None)
        self.assertEqual([timeout for timeout, _ in clients.closed], [2.0])
        self.assertNoResult(stopped)
        clients.closed[0][1].callback(None)
        self.successResultOf(stopped)


class StopDelayOrderTests(SynchronousTestCase):
    """
    Tests for how L{_OrderlyStop} holds its children back for C{stopDelay}.
    """

    def setUp(self) -> None:
        self.reactor = SignalReactor()
        self.handlers: Dict[int, Any] = {}
        self.service = _OrderlyStop(self.reactor, self.handlers.__setitem__)
        self.service.stopDelay = StopDelay(5.0, self.reactor)
        self.children = [Stopping(), Stopping()]
        for child in self.children:
            child.setServiceParent(self.service)
        self.service.startService()
        for hook, args, kwargs in self.reactor.whenRunningHooks:
            hook(*args, **kwargs)

    def signal(self, signum: int) -> None:
        self.handlers[signum](signum, None)
        for f, args, kwargs in self.reactor.fromThread:
            f(*args, **kwargs)
        del self.reactor.fromThread[:]

    def test_childrenStopAfterTheDelay(self) -> None:
        """
        No child is stopped (the ports keep listening, the deployer keeps
        serving) until C{stopDelay} has passed; then all are, and the stop
        ends when they have.
        """
        stopped = self.service.stopService()
        assert self.service.stopDelay is not None
        self.assertTrue(self.service.stopDelay.stopping)
        self.reactor.advance(4.9)
        self.assertEqual([child.stopped for child in self.children], [[], []])
        self.assertTrue(all(child.running for child in self.children))
        self.reactor.advance(0.1)
        self.assertEqual([len(child.stopped) for child in self.children], [1, 1])
        self.assertNoResult(stopped)
        for child in self.children:
            child.stopped[0].callback(None)
        self.successResultOf(stopped)

    def test_secondSignalCutsTheDelayShort(self) -> None:
        """
        A SIGTERM or SIGINT during the delay ends it: the children are
        stopped at once, and the reactor's handler is not called again.
        """
        self.service.stopService()
        self.reactor.advance(1.0)
        with capturedLogs() as events:
            self.signal(SIGINT)
        self.assertEqual(self.reactor.handled, [])
        self.assertEqual([len(child.stopped) for child in self.children], [1, 1])
        self.assertIn(
            "SIGINT during stopDelay: cutting it short by 4.0 s; closing the "
            "ports and draining now",
            [formatEvent(event) for event in events],
        )

    def test_thirdSignalLogged(self) -> None:
        """
        Once the delay is over (or cut short), a signal is met as before:
        with a line saying what rainbowd waits for.
        """
        self.service.stopService()
        self.signal(SIGTERM)
        with capturedLogs() as events:
            self.signal(SIGTERM)
        self.assertEqual(self.reactor.handled, [])
        self.assertIn(
            "SIGTERM while stopping: still waiting for the app's processes to "
            "stop; SIGKILL rainbowd to abandon them",
            [formatEvent(event) for event in events],
        )


class ObservabilityTests(ServiceTestCase):
    """
    What L{makeService} wires for metrics, the access log and systemd.
    """

    def test_noAccessLogByDefault(self) -> None:
        """
        Without --access-log, the proxy only counts requests for /metrics,
        which the control API serves.
        """
        reactor = FakeProcessReactor()
        sites = self.sites(makeService(self.options(), reactor))
        self.assertIsInstance(sites["port"].requestLog, Metrics)
        self.assertIsInstance(
            sites["controlPort"].resource.children[b"metrics"], MetricsResource
        )
        self.assertEqual(reactor.triggers, {})

    def test_deployHistory(self) -> None:
        """
        The control API serves the deploy history, read from the state
        directory at startup, and the first deploy is numbered after the
        last one there.
        """
        options = self.options()
        stateDir = options.config.stateDir
        os.makedirs(stateDir, mode=0o700)
        with open(os.path.join(stateDir, HISTORY_FILENAME), "w") as f:
            f.write(json.dumps(historyRecord(7).asJSON()) + "\n")
        reactor = FakeProcessReactor()
        service = makeService(options, reactor)
        deploys = self.sites(service)["controlPort"].resource.children[b"deploys"]
        self.assertIsInstance(deploys, DeploysResource)
        [deployer] = [child for child in service if isinstance(child, Deployer)]
        events: List[Event] = []
        deployer.observe(events.append)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(e.details["deploy"], e.details["cause"]) for e in events if e.kind == "deploying"],
            [(8, "startup")],
        )

    def test_metricsNeedTheToken(self) -> None:
        """
        /metrics, as makeService wires it, is behind the control token like
        every other control path.
        """
        token = tokenFile(self, b"s3cret-token\n")
        sites = self.sites(
            makeService(self.options("--control-token-file", token), FakeProcessReactor())
        )

        def get(*headers: bytes) -> bytes:
            transport = StringTransport()
            channel = sites["controlPort"].buildProtocol(None)
            channel.makeConnection(transport)
            channel.dataReceived(
                b"GET /metrics HTTP/1.1\r\nHost: localhost:7001\r\n%s\r\n"
                % b"".join(headers)
            )
            return transport.value()

        self.assertTrue(get().startswith(b"HTTP/1.1 401 "))
        self.assertTrue(
            get(b"Authorization: Bearer wrong\r\n").startswith(b"HTTP/1.1 401 ")
        )
        answer = get(b"Authorization: Bearer s3cret-token\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])
        self.assertIn(b"rainbowd_deploys_total", answer)

    def test_controlAllowedKeys(self) -> None:
        """
        The control site refuses web pages and unknown host names, and lets
        in the origins and names given by --control-allowed-origins and
        --control-allowed-hosts (comma-separated).
        """

        def get(options, *headers: bytes) -> bytes:
            service = makeService(options, FakeProcessReactor())
            service.getServiceNamed("stateDirLock").release()
            sites = self.sites(service)
            transport = StringTransport()
            channel = sites["controlPort"].buildProtocol(None)
            channel.makeConnection(transport)
            channel.dataReceived(
                b"GET /status HTTP/1.1\r\n%s\r\n" % b"".join(h + b"\r\n" for h in headers)
            )
            return transport.value()

        default = self.options()
        self.assertTrue(get(default, b"Host: localhost").startswith(b"HTTP/1.1 200 "))
        for header in [b"Host: ops.example", b"Origin: https://ops.example.com"]:
            self.assertTrue(get(default, header).startswith(b"HTTP/1.1 403 "), header)
        allowing = self.options(
            "--control-allowed-hosts",
            "ops.example,other.example",
            "--control-allowed-origins",
            "https://ops.example.com",
        )
        self.assertTrue(
            get(allowing, b"Host: other.example:7001").startswith(b"HTTP/1.1 200 ")
        )
        answer = get(allowing, b"Host: ops.example", b"Origin: https://ops.example.com")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertIn(b"Access-Control-Allow-Origin: https://ops.example.com", answer)

    def test_accessLog(self) -> None:
        """
        --access-log PATH writes the access log there, in the format given,
        closed after everything else has stopped.
        """
        path = os.path.abspath(self.mktemp())
        reactor = FakeProcessReactor()
        options = self.options("--access-log", path, "--access-log-format", "json")
        self.assertEqual(
            (options.config.accessLog, options.config.accessLogFormat), (path, "json")
        )
        sites = self.sites(makeService(options, reactor))
        self.assertIsInstance(sites["port"].requestLog, Both)
        [stop] = reactor.triggers["after"]["shutdown"]
        self.assertTrue(os.path.exists(path))
        stop[0](*stop[1], **stop[2])

    def test_accessLogCannotOpen(self) -> None:
        """
        An access log that cannot be opened stops twistd with a message
        naming the path and the key.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "missing", "access.log")
        error = self.assertRaises(
            SystemExit, makeService, self.options("--access-log", path),
            FakeProcessReactor(),
        )
        self.assertIn(f"cannot open the access log {path}", str(error))
        self.assertIn("--access-log", str(error))

    def test_badAccessLogFormat(self) -> None:
        """
        An unknown access log format is a config error naming the formats.
        """
        error = self.assertRaises(
            SystemExit, self.options, "--access-log-format", "common"
        )
        self.assertIn('must be "combined" or "json"', str(error))

    def test_lbHealthPath(self) -> None:
        """
        --lb-health-path puts the load balancer's check in front of the
        proxy, down once the stop begins; --stop-delay sets the delay.
        """
        options = self.options("--lb-health-path", "/_up", "--stop-delay", "2500")
        service = makeService(options, FakeProcessReactor())
        site = self.sites(service)["port"]

        def get() -> bytes:
            transport = StringTransport()
            channel = site.buildProtocol(None)
            channel.makeConnection(transport)
            channel.dataReceived(b"GET /_up HTTP/1.1\r\nHost: www.example\r\n\r\n")
            return transport.value()

        self.assertIn(b"no version of the app is ready", get())
        assert isinstance(service, _OrderlyStop) and service.stopDelay is not None
        self.assertEqual(service.stopDelay._delay, 2.5)
        service.stopDelay.stopping = True
        self.assertIn(b"rainbowd is stopping", get())

    def test_stopDelayWithoutHealthPath(self) -> None:
        """
        A stop delay without a health path is warned about at startup.
        """
        self.assertIn(
            '"stopDelay" is set but "lbHealthPath" is not',
            " ".join(self.options("--stop-delay", "1000").warnings),
        )

    def test_notifySocketNotPassedOn(self) -> None:
        """
        NOTIFY_SOCKET is for rainbowd: it is taken out of the environment the
        app inherits.
        """
        self.patch(os, "environ", dict(os.environ, NOTIFY_SOCKET="/run/x"))
        makeService(self.options(), FakeProcessReactor())
        self.assertNotIn("NOTIFY_SOCKET", os.environ)

    def test_pythonPassedOn(self) -> None:
        """
        The app inherits RAINBOWD_PYTHON, the Python running rainbowd, even
        if rainbowd was itself started with another value.
        """
        self.patch(os, "environ", dict(os.environ, RAINBOWD_PYTHON="/old/python"))
        makeService(self.options(), FakeProcessReactor())
        self.assertEqual(os.environ["RAINBOWD_PYTHON"], sys.executable)

    def test_firstGenerationOutputFile(self) -> None:
        """
        With --backend-logs, generation 1's output has a file too.
        """
        reactor = FakeProcessReactor()
        options = self.options("--backend-logs", "1")
        service = makeService(options, reactor)
        service.privilegedStartService()
        service.startService()
        # Not stopService: its signals would be real ones, to fake pids.
        [logs] = [child for child in service if isinstance(child, BackendLogs)]
        self.addCleanup(lambda: [f.close() for f in logs._files.values()])
        [name] = os.listdir(os.path.join(options.config.stateDir, "logs"))
        self.assertTrue(name.endswith("-generation-1.log"), name)


class RealPorts(FakeProcessReactor):
    """
    A reactor whose TCP ports are Twisted's own, never listening.
    """

    def listenTCP(self, port, factory, backlog=50, interface=""):
        FakeProcessReactor.listenTCP(self, port, factory, backlog, interface)
        return tcp.Port(port, factory, backlog, interface, self)


class ConnectionLimitTests(ServiceTestCase):
    """
    What L{makeService} does about file descriptors and connections.
    """

    def listening(self, service) -> Dict[str, Any]:
        return {child._key: child for child in service if hasattr(child, "_key")}

    def test_limitRaisedAndLogged(self) -> None:
        """
        The descriptor limit is raised at startup, and one line says what
        it was, what it is, and the cap derived from it.
        """
        options = self.options(limit=FileLimit(524288, 524288, 1024))
        with capturedLogs() as events:
            service = makeService(options, FakeProcessReactor())
        lines = [formatEvent(e) for e in events if "descriptor" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                "file descriptor limit: soft 1024 raised to 524288, the hard "
                "limit; maxConnections 174693 (derived from the limit)."
            ],
        )
        cap = self.listening(service)["port"].factory
        self.assertIsInstance(cap, ConnectionCap)
        self.assertEqual(cap.maximum, (524288 - 128 - 8 * 10) // 3)

    def test_lowLimitWarned(self) -> None:
        """
        A limit that stays low is a warning saying how to raise it, and the
        cap derived from it leaves the reserve.
        """
        with capturedLogs() as events:
            service = makeService(
                self.options(limit=FileLimit(1024, 1024, 1024)), FakeProcessReactor()
            )
        [event] = [e for e in events if "descriptor limit" in formatEvent(e)]
        self.assertEqual(event["log_level"].name, "warn")
        self.assertIn("LimitNOFILE=", formatEvent(event))
        self.assertEqual(self.listening(service)["port"].factory.maximum, 272)

    def test_maxConnectionsGiven(self) -> None:
        """
        --max-connections sets the cap; one the limit cannot hold is warned
        about.
        """
        with capturedLogs() as events:
            service = makeService(
                self.options("--max-connections", "5000", limit=FileLimit(1024, 1024, 1024)),
                FakeProcessReactor(),
            )
        self.assertEqual(self.listening(service)["port"].factory.maximum, 5000)
        self.assertTrue(
            any('"maxConnections" is 5000' in formatEvent(e) for e in events)
        )

    def test_controlPortCappedApart(self) -> None:
        """
        The control port has a cap of its own, MAX_CONNECTIONS, apart from
        the public port's, so that it works while the public port is full
        and a flood of it cannot take the public port's descriptors.
        """
        service = makeService(self.options(), FakeProcessReactor())
        listening = self.listening(service)
        cap = listening["controlPort"].factory
        self.assertIsInstance(cap, ConnectionCap)
        self.assertIsInstance(cap.wrappedFactory, ControlSite)
        self.assertEqual(cap.maximum, MAX_CONNECTIONS)
        self.assertIsNot(cap, listening["port"].factory)

    def test_acceptErrorsQuieted(self) -> None:
        """
        Both ports log their failed accepts through an L{AcceptErrors}
        named after the port, whose counts /metrics shows.
        """
        reactor = RealPorts()
        options = self.options("--port", "8000")
        service = makeService(options, reactor)
        service.privilegedStartService()
        self.addCleanup(service.getServiceNamed("stateDirLock").release)
        listening = self.listening(service)
        for key in ("port", "controlPort"):
            errors = listening[key].acceptErrors
            self.assertIsInstance(errors, AcceptErrors)
            self.assertIn(f'("{key}")', errors._what)
        listening["port"].acceptErrors.errors["EMFILE"] = 3
        metrics = self.sites(service)["port"].requestLog
        text = generate_latest(metrics.registry).decode()
        self.assertIn('rainbowd_accept_errors_total{error="EMFILE",port="port"} 3.0', text)
        self.assertIn("rainbowd_max_connections 272.0", text)


@implementer(IStreamServerEndpoint)
class FakeEndpoint:
    """
    A server endpoint whose C{listen} returns the L{Deferred} it is given.
    """

    def __init__(self, listening: Deferred) -> None:
        self.listening = listening
        self.factories: List[Any] = []

    def listen(self, factory) -> Deferred:
        self.factories.append(factory)
        return self.listening


class ListenNowTests(SynchronousTestCase):
    """
    Tests for L{_ListenNow}, through which a port clash stops rainbowd at
    startup, without Twisted's private C{_raiseSynchronously}.
    """

    def setUp(self) -> None:
        self.ports: List[Any] = []

    def endpoint(self, listening: Deferred) -> _ListenNow:
        return _ListenNow(FakeEndpoint(listening), self.ports.append)

    def test_failsNow(self) -> None:
        """
        A failure to listen that the wrapped endpoint reports at once is
        raised from C{listen}, with nothing left unhandled.
        """
        clash = CannotListenError(
            "127.0.0.1", 7000, OSError(EADDRINUSE, strerror(EADDRINUSE))
        )
        listening: Deferred = Deferred()
        listening.errback(clash)
        with self.assertRaises(CannotListenError) as caught:
            self.endpoint(listening).listen(object())
        self.assertIs(caught.exception, clash)
        self.assertEqual(self.ports, [])

    def test_failsLater(self) -> None:
        """
        A failure reported later is left in the L{Deferred} returned (for
        the service to log), and no port is reported.
        """
        listening: Deferred = Deferred()
        d = self.endpoint(listening).listen(object())
        self.assertNoResult(d)
        listening.errback(CannotListenError("127.0.0.1", 7000, OSError()))
        self.failureResultOf(d, CannotListenError)
        self.assertEqual(self.ports, [])

    def test_listens(self) -> None:
        """
        Once listening, the port is given to C{listened} and is the result
        of the L{Deferred}, whether that happens at once or later; the
        factory is the one given.
        """
        port = object()
        factory = object()
        fake = FakeEndpoint(Deferred())
        later = _ListenNow(fake, self.ports.append).listen(factory)
        self.assertEqual(self.ports, [])
        fake.listening.callback(port)
        self.assertIs(self.successResultOf(later), port)
        self.assertEqual(fake.factories, [factory])
        listening: Deferred = Deferred()
        listening.callback(port)
        self.assertIs(self.successResultOf(self.endpoint(listening).listen(factory)), port)
        self.assertEqual(self.ports, [port, port])

    def test_serviceRaises(self) -> None:
        """
        A L{StreamServerEndpointService} on a L{_ListenNow} raises a
        failure to listen from C{privilegedStartService} (so that makeService
        stops rainbowd with its one line).
        """
        from twisted.application.internet import StreamServerEndpointService

        listening: Deferred = Deferred()
        listening.errback(CannotListenError("127.0.0.1", 7000, OSError()))
        service = StreamServerEndpointService(self.endpoint(listening), object())
        self.assertRaises(CannotListenError, service.privilegedStartService)


class _StoppableReactor(MemoryReactorClock):
    stopped = False

    def stop(self) -> None:
        self.stopped = True


class _Config:
    def __init__(self, drainTimeout: float) -> None:
        self.drainTimeout = drainTimeout


class _Deployer:
    def __init__(self, drainTimeout: float) -> None:
        self.config = _Config(drainTimeout)

    def abandon(self) -> None:
        pass


class _Service:
    handedOver = False


class HandOverTests(SynchronousTestCase):
    """
    Tests for how the old rainbowd of an upgrade ends its public
    connections (L{rainbowd.tap._handOver}).
    """

    def handOver(self, drainTimeout: float, begun: bool):
        """
        A public connection with a first request on it, when the upgrade's
        new rainbowd serves: its response begun and not over if C{begun},
        else answered (the connection idle).

        @return: the reactor, the connection, its transport and the
            requests the app got.
        """
        reactor = _StoppableReactor()
        held: List[Any] = []

        class App(Resource):
            isLeaf = True

            def render(self, request):
                held.append(request)
                if len(held) == 1 and not begun:
                    return b"first"
                if len(held) == 1:
                    request.setHeader(b"Content-Length", b"2")
                    request.write(b"o")
                return NOT_DONE_YET

        cap = ConnectionCap(ProxySite(App(), reactor=reactor, timeout=60), 10, reactor)
        address = IPv4Address("TCP", "192.0.2.7", 40000)
        wrapper = cap.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        wrapper.makeConnection(transport)
        wrapper.dataReceived(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        _handOver(reactor, _Service(), _Deployer(drainTimeout), {}, [cap])
        return reactor, wrapper, transport, held

    def test_responseBegunEndsLate(self) -> None:
        """
        A response begun before the upgrade that ends after the grace is
        its connection's last: a request sent after it meets a closed
        connection (which a client may send again) rather than be taken
        and left unanswered when the old rainbowd exits at the end of the
        drain.
        """
        reactor, wrapper, transport, held = self.handOver(30.0, begun=True)
        reactor.pump([1.0] * 28)
        held[0].write(b"k")
        held[0].finish()
        self.assertTrue(transport.disconnecting)
        wrapper.dataReceived(b"POST /charge HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(len(held), 1)

    def test_responseBegunEndsSoon(self) -> None:
        """
        One that ends within the grace leaves its connection open for a
        last request, answered with C{Connection: close}.
        """
        reactor, wrapper, transport, held = self.handOver(30.0, begun=True)
        reactor.pump([1.0])
        held[0].write(b"k")
        held[0].finish()
        self.assertFalse(transport.disconnecting)
        transport.clear()
        wrapper.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(held), 2)
        held[1].write(b"last")
        held[1].finish()
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_graceAtMostHalfTheDrain(self) -> None:
        """
        With a short C{drainTimeout}, an idle kept-alive connection's grace
        is half of it, so that a request that comes at its end still has
        the other half to be answered in.
        """
        reactor, wrapper, transport, held = self.handOver(4.0, begun=False)
        reactor.pump([0.5] * 3)
        self.assertFalse(transport.disconnecting)
        reactor.pump([0.5])
        self.assertTrue(transport.disconnecting)
        self.assertFalse(reactor.stopped)
