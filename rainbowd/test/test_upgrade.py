"""
Tests for L{rainbowd.upgrade}: the old rainbowd's side of an upgrade, on a
fake process reactor, each way the new process can fail before it is
ready, and the new side's reading of the state.
"""

import os
import signal
import socket

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from rainbowd import handover
from rainbowd.test.fakes import FakeProcessReactor
from rainbowd.upgrade import (
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

    def adoptStreamConnection(self, fileDescriptor, addressFamily, factory):
        super().adoptStreamConnection(fileDescriptor, addressFamily, factory)
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self.transport


class UpgraderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.handedOver = []
        self.failures = []
        self.peers = []
        self.state = handover.State(
            pid=os.getpid(), listening={"port": 0, "controlPort": 1}, settings={}
        )
        self.fds = []
        self.upgrader = self.makeUpgrader()

    def makeUpgrader(self, **kwargs) -> Upgrader:
        def socketpair():
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            # The new process's end, as it would keep it open.
            peer = theirs.dup()
            self.peers.append(peer)
            self.addCleanup(peer.close)
            return ours, theirs

        options = dict(
            reactor=self.reactor,
            describe=lambda: (self.state, self.fds),
            handOver=lambda: self.handedOver.append(True),
            timeout=lambda: 30.0,
            commandLine=lambda: list(ARGV),
            environ={"PATH": "/bin"},
            cwd=lambda: "/srv/app",
            failed=lambda: self.failures.append(True),
            socketpair=socketpair,
        )
        options.update(kwargs)
        return Upgrader(**options)

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
