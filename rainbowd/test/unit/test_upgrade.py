"""
Tests for L{rainbowd.upgrade.upgrader}: the old rainbowd's side of an upgrade, on a
fake process reactor, each way the new process can fail before it is
ready, and the new side's reading of the state.
"""

import os
import signal
import socket
from typing import Any, Dict, List, Tuple

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.test.fakes import FakeProcessReactor
from rainbowd.upgrade import handover
from rainbowd.upgrade.upgrader import (
    HANDOVER_FD,
    UpgradeFailed,
    Upgrader,
    receive,
    restorePidfile,
    takeOverPidfile,
)

ARGV = ["/usr/bin/python3", "/usr/bin/twistd", "-n", "rainbowd"]


class _Reactor(FakeProcessReactor):
    """
    A fake process reactor whose adopted connections get a
    L{StringTransport}, and their protocol kept.
    """

    def callFromThread(self, f, *args, **kwargs):
        # As a signal handler's call: run in the reactor's next turn.
        self.callLater(0, f, *args, **kwargs)

    def adoptStreamConnection(self, fileDescriptor, addressFamily, factory):
        super().adoptStreamConnection(fileDescriptor, addressFamily, factory)
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self.transport


class UpgraderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.handedOver: List[bool] = []
        self.failures: List[bool] = []
        self.peers: List[socket.socket] = []
        self.state = handover.State(
            pid=os.getpid(), listening={"port": 0, "controlPort": 1}, settings={}
        )
        self.fds: List[int] = []
        self.upgrader = self.makeUpgrader()

    def makeUpgrader(self, **kwargs) -> Upgrader:
        def socketpair():
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            # The new process's end, as it would keep it open.
            peer = theirs.dup()
            self.peers.append(peer)
            self.addCleanup(peer.close)
            return ours, theirs

        options: Dict[str, Any] = dict(
            reactor=self.reactor,
            describe=lambda: (self.state, self.fds),
            handOver=lambda: self.handedOver.append(True),
            timeout=lambda: 30.0,
            commandLine=lambda: list(ARGV),
            environ={"PATH": "/bin"},
            cwd=lambda: "/srv/app",
            failed=lambda: self.failures.append(True),
            socketpair=socketpair,
            implementation="CPython",
        )
        options.update(kwargs)
        return Upgrader(**options)

    def test_notOnPyPy(self) -> None:
        """
        On PyPy, an upgrade is refused at once, saying so and what to do,
        and nothing is started or handed over.
        """
        upgrader = self.makeUpgrader(implementation="PyPy")
        failure = self.failureResultOf(upgrader.upgrade(), UpgradeFailed)
        self.assertIn("not supported on PyPy yet", str(failure.value))
        self.assertIn("restart rainbowd", str(failure.value))
        self.assertEqual((self.reactor.processes, self.handedOver), ([], []))

    def newProcess(self):
        [process] = self.reactor.processes
        return process

    def assertFailed(self, d, *words):
        failure = self.failureResultOf(d, UpgradeFailed)
        for word in words:
            self.assertIn(word, failure.value.error)
        self.assertEqual(self.handedOver, [])
        self.assertEqual(self.failures, [True])
        return failure.value

    def test_startsSameCommandLine(self) -> None:
        """
        The new rainbowd is the same command line, in the same directory,
        with the same environment plus the handover socket's descriptor.
        """
        self.upgrader.upgrade("test")
        process = self.newProcess()
        self.assertEqual((process.executable, process.args), (ARGV[0], ARGV))
        self.assertEqual(process.path, "/srv/app")
        self.assertEqual(
            process.env,
            {"PATH": "/bin", handover.HANDOVER_VARIABLE: str(HANDOVER_FD)},
        )

    def test_sendsState(self) -> None:
        """
        The state goes to the new process: its length and the descriptors
        on the socket, then the encoded state.
        """
        self.upgrader.upgrade("test")
        header, fds, _, _ = socket.recv_fds(self.peers[0], 4, 8)
        self.assertEqual(int.from_bytes(header, "big"), len(handover.encode(self.state)))
        self.assertEqual(handover.decode(self.reactor.transport.value()), self.state)

    def test_ready(self) -> None:
        """
        Once the new process says it is ready, the upgrade has its pid, the
        old one's and how long it took, and the old one hands over.
        """
        d = self.upgrader.upgrade("test")
        self.reactor.advance(1.5)
        self.reactor.protocol.dataReceived(handover.readyLine(4242))
        self.assertEqual(
            self.successResultOf(d),
            {"ok": True, "pid": 4242, "previousPid": os.getpid(), "seconds": 1.5},
        )
        self.assertEqual(self.handedOver, [])
        self.reactor.advance(0)
        self.assertEqual(self.handedOver, [True])
        self.assertEqual(self.failures, [])

    def test_sharedWhileUnderWay(self) -> None:
        """
        An upgrade asked for during one starts no second process and gets
        the same outcome.
        """
        first = self.upgrader.upgrade("a")
        second = self.upgrader.upgrade("b")
        self.assertEqual(len(self.reactor.processes), 1)
        self.reactor.protocol.dataReceived(handover.readyLine(7))
        self.assertEqual(self.successResultOf(first)["pid"], 7)
        self.assertEqual(self.successResultOf(second)["pid"], 7)

    def test_afterHandedOver(self) -> None:
        """
        Once handed over, an upgrade is refused: the new rainbowd is the
        one to ask.
        """
        self.upgrader.upgrade("a")
        self.reactor.protocol.dataReceived(handover.readyLine(7))
        failure = self.failureResultOf(self.upgrader.upgrade("b"), UpgradeFailed)
        self.assertIn("already handed over", failure.value.error)
        self.assertEqual(len(self.reactor.processes), 1)

    def test_exitsBeforeReady(self) -> None:
        """
        A new process that exits before it is ready fails the upgrade,
        with its exit status and last lines of output; nothing is handed
        over.
        """
        d = self.upgrader.upgrade("test")
        process = self.newProcess()
        process.emit(b"Traceback (most recent call last):\n", 2)
        process.emit(b"ImportError: no module named rainbowd\n", 2)
        process.exit(1)
        error = self.assertFailed(d, "exited with status 1", "serves on")
        self.assertEqual(
            error.output,
            ["Traceback (most recent call last):", "ImportError: no module named rainbowd"],
        )

    def test_killedBeforeReady(self) -> None:
        """
        A new process killed by a signal before ready fails the upgrade,
        naming the signal.
        """
        d = self.upgrader.upgrade("test")
        self.newProcess().exit(signum=signal.SIGSEGV)
        self.assertFailed(d, f"killed by signal {signal.SIGSEGV}")

    def test_refuses(self) -> None:
        """
        A new process that refuses the state fails the upgrade with its
        reason, and is killed in case it lingers.
        """
        d = self.upgrader.upgrade("test")
        process = self.newProcess()
        self.reactor.protocol.dataReceived(
            handover.refusedLine("rainbowd: the state handed over is of format 2")
        )
        self.assertFailed(d, "format 2")
        self.reactor.advance(0)
        self.assertTrue(process.ended)
        self.assertTrue(self.reactor.transport.disconnecting)

    def test_closesSocket(self) -> None:
        """
        A new process whose handover socket closes before it says ready
        (it exited 0, or closed it) fails the upgrade.
        """
        d = self.upgrader.upgrade("test")
        self.reactor.protocol.connectionLost(None)
        self.assertFailed(d, "closed the handover socket")

    def test_timesOut(self) -> None:
        """
        A new process not ready within upgradeTimeout is killed, and the
        upgrade fails saying so and how to give it longer.
        """
        d = self.upgrader.upgrade("test")
        process = self.newProcess()
        process.emit(b"still importing\n")
        self.reactor.advance(29.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        error = self.assertFailed(d, "upgradeTimeout (30 s)", '"upgradeTimeout"')
        self.assertEqual(error.output, ["still importing"])
        self.reactor.advance(0)
        self.assertTrue(process.ended)

    def test_readyAfterFailureIgnored(self) -> None:
        """
        A ready message after the upgrade failed (timed out) hands nothing
        over.
        """
        d = self.upgrader.upgrade("test")
        self.reactor.advance(30)
        self.failureResultOf(d, UpgradeFailed)
        self.reactor.protocol.dataReceived(handover.readyLine(7))
        self.reactor.advance(0)
        self.assertEqual(self.handedOver, [])

    def test_cannotStart(self) -> None:
        """
        A new process that cannot be spawned fails the upgrade.
        """

        def spawnProcess(*args, **kwargs):
            raise OSError(2, "No such file or directory")

        self.reactor.spawnProcess = spawnProcess
        self.assertFailed(self.upgrader.upgrade("test"), "cannot start the new rainbowd")

    def test_noSocketpair(self) -> None:
        """
        A handover socket that cannot be made (no descriptor left) fails
        the upgrade, with the reason, and this rainbowd keeps everything.
        """

        def socketpair():
            raise OSError(24, "Too many open files")

        upgrader = self.makeUpgrader(socketpair=socketpair)
        self.assertFailed(upgrader.upgrade("test"), "handover socket", "Too many open files")
        self.assertEqual(self.reactor.processes, [])

    def test_noCommandLine(self) -> None:
        """
        Without this process's command line there is no upgrade, and the
        error says what to do instead.
        """
        upgrader = self.makeUpgrader(commandLine=lambda: None)
        self.assertFailed(upgrader.upgrade("test"), "/proc/self/cmdline", "stop and start")
        self.assertEqual(self.reactor.processes, [])

    def test_cannotDescribe(self) -> None:
        """
        A state that cannot be described (a deploy under way) fails the
        upgrade before any process starts, with the reason.
        """

        def describe():
            raise ValueError("rainbowd is deploying; upgrade once that is done")

        upgrader = self.makeUpgrader(describe=describe)
        self.assertFailed(upgrader.upgrade("test"), "deploying")
        self.assertEqual(self.reactor.processes, [])

    def test_againAfterFailure(self) -> None:
        """
        After a failed upgrade, another may be asked for, with a new
        process.
        """
        self.newProcessExit = self.upgrader.upgrade("a")
        self.newProcess().exit(1)
        self.failureResultOf(self.newProcessExit, UpgradeFailed)
        self.upgrader.upgrade("b")
        self.assertEqual(len(self.reactor.processes), 2)

    def test_status(self) -> None:
        """
        C{describe} gives this rainbowd's pid, version, start and the
        rainbowd it was upgraded from.
        """
        from rainbowd import __version__

        self.upgrader.upgradedFrom = 12
        described = self.upgrader.describe()
        self.assertEqual(
            {key: described[key] for key in ("pid", "version", "upgradedFrom")},
            {"pid": os.getpid(), "version": __version__, "upgradedFrom": 12},
        )
        self.assertEqual(described["startedAt"], self.reactor.seconds())


class ReceiveTests(SynchronousTestCase):
    def test_roundTripOverSocket(self) -> None:
        """
        The state and descriptors sent as the old rainbowd sends them are
        what the new one reads.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(ours.close)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        state = handover.State(pid=5, listening={"port": 0}, settings={"port": 7000})
        data = handover.encode(state)
        socket.send_fds(ours, [len(data).to_bytes(4, "big")], [r])
        ours.sendall(data)
        got, fds, sock = receive(theirs.detach(), 5)
        self.addCleanup(sock.close)
        for fd in fds:
            self.addCleanup(os.close, fd)
        self.assertEqual(got, state)
        os.write(w, b"x")
        self.assertEqual(os.read(fds[0], 1), b"x")

    def test_closedEarly(self) -> None:
        """
        A socket closed in the middle of the state is a refusal, not a
        partial state.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        socket.send_fds(ours, [(1000).to_bytes(4, "big")], [])
        ours.sendall(b'{"format"')
        ours.close()
        with self.assertRaises(handover.HandoverRefused) as caught:
            receive(theirs.detach(), 5)
        self.assertIn("in the middle of its state", str(caught.exception))

    def test_tooBig(self) -> None:
        """
        A state announced bigger than L{handover.MAX_STATE} is refused.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(ours.close)
        socket.send_fds(ours, [(handover.MAX_STATE + 1).to_bytes(4, "big")], [])
        with self.assertRaises(handover.HandoverRefused):
            receive(theirs.detach(), 5)


class PidfileTests(SynchronousTestCase):
    def test_takesOverParents(self) -> None:
        """
        In a rainbowd started by an upgrade, a pidfile naming its parent
        (the old rainbowd) is removed, so that twistd starts and writes
        the new pid.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("77\n")
        takeOverPidfile(path, {handover.HANDOVER_VARIABLE: "3"}, getppid=lambda: 77)
        self.assertFalse(os.path.exists(path))

    def test_leavesOthers(self) -> None:
        """
        A pidfile naming another process, or any pidfile outside an
        upgrade, is left for twistd to judge.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("78\n")
        takeOverPidfile(path, {handover.HANDOVER_VARIABLE: "3"}, getppid=lambda: 77)
        takeOverPidfile(path, {}, getppid=lambda: 78)
        self.assertTrue(os.path.exists(path))

    def test_restore(self) -> None:
        """
        After a failed upgrade the pidfile names the old rainbowd again.
        """
        path = self.mktemp()
        restorePidfile(path, 77)
        with open(path) as f:
            self.assertEqual(f.read(), "77\n")


class UpgradeOnSignalTests(SynchronousTestCase):
    def setUp(self) -> None:
        from twisted.internet.defer import Deferred

        from rainbowd.upgrade.upgrader import UpgradeOnSignal

        self.reactor = _Reactor()
        self.installed: Dict[int, Any] = {}
        self.asked: List[Tuple[Any, Deferred]] = []

        def upgrade(requester):
            d = Deferred()
            self.asked.append((requester, d))
            return d

        self.service = UpgradeOnSignal(
            self.reactor, upgrade, lambda signum, handler: self.installed.update({signum: handler})
        )
        self.service.startService()
        for call in self.reactor.whenRunningHooks:
            call[0](*call[1], **call[2])

    def test_sigusr2(self) -> None:
        """
        SIGUSR2 upgrades, in the name of SIGUSR2, and the outcome is
        logged.
        """
        from twisted.logger import capturedLogs

        self.installed[signal.SIGUSR2](signal.SIGUSR2, None)
        self.reactor.advance(0)
        [(requester, d)] = self.asked
        self.assertEqual(requester, "SIGUSR2")
        with capturedLogs() as events:
            d.callback({"pid": 2, "previousPid": 1, "seconds": 0.5})
        self.assertIn("took over from 1", _text(events))

    def test_failureLogged(self) -> None:
        """
        A failed upgrade on SIGUSR2 is logged with the new process's lines.
        """
        from twisted.logger import capturedLogs

        self.installed[signal.SIGUSR2](signal.SIGUSR2, None)
        self.reactor.advance(0)
        with capturedLogs() as events:
            self.asked[0][1].errback(UpgradeFailed("rainbowd: boom", ["last line"]))
        text = _text(events)
        self.assertIn("rainbowd: boom", text)
        self.assertIn("last line", text)

    def test_notWhileStopping(self) -> None:
        """
        SIGUSR2 while rainbowd stops upgrades nothing.
        """
        self.service.stopService()
        self.installed[signal.SIGUSR2](signal.SIGUSR2, None)
        self.reactor.advance(0)
        self.assertEqual(self.asked, [])


def _text(events) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(event) for event in events)


class AppendToLogTests(SynchronousTestCase):
    def test_append(self) -> None:
        """
        A descriptor of the log file opened to write at a position is made
        to append, so that another process's lines are not written over.
        """
        import fcntl

        from rainbowd.upgrade.upgrader import appendToLog

        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"first\n")
        log = open(path, "r+b", 0)
        self.addCleanup(log.close)
        log.seek(0, 2)
        with open(path, "ab") as other:
            other.write(b"other\n")
        appendToLog(path)
        self.assertTrue(fcntl.fcntl(log.fileno(), fcntl.F_GETFL) & os.O_APPEND)
        log.write(b"mine\n")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"first\nother\nmine\n")


class _Protocol:
    def __init__(self) -> None:
        self.calls: List[Tuple[object, ...]] = []

    def childDataReceived(self, childFD, data):
        self.calls.append(("data", childFD, data))

    def processExited(self, reason):
        self.calls.append(("exited", reason.value.__class__.__name__))

    def processEnded(self, reason):
        self.calls.append(("ended", reason.value.__class__.__name__))


class AdoptedProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from rainbowd.app.adopted import AdoptedProcess

        self.reactor = MemoryReactorClock()
        self.proto = _Protocol()
        self.r, self.w = os.pipe()
        # A live pid to watch: this test's own.
        self.process = AdoptedProcess(self.reactor, self.proto, os.getpid(), {1: self.r})
        def closePidfd() -> None:
            if self.process._pidfd:
                self.process._pidfd.close()

        self.addCleanup(closePidfd)
        self.addCleanup(self._close)

    def _close(self):
        for fd in (self.w,) + tuple(reader.fd for reader in self.process.pipes.values()):
            try:
                os.close(fd)
            except OSError:
                pass

    def test_output(self) -> None:
        """
        The output handed over is read as a child's is, from the reactor.
        """
        [reader] = self.process.pipes.values()
        self.assertIn(reader, self.reactor.readers)
        self.assertIn(self.process._pidfd, self.reactor.readers)
        os.write(self.w, b"hello\n")
        reader.doRead()
        self.assertEqual(self.proto.calls, [("data", 1, b"hello\n")])

    def test_endUnknown(self) -> None:
        """
        The pidfd says the process ended: it exited, with a status that
        cannot be known, and ended once its output closed too.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        assert self.process._pidfd is not None
        self.process._pidfd.doRead()
        self.assertEqual(self.proto.calls, [("exited", "UnknownExit")])
        [reader] = self.process.pipes.values()
        reader.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.proto.calls[-1], ("ended", "UnknownExit"))
        self.assertEqual(self.process.pipes, {})


