# -*- test-case-name: rainbowd.test.endtoend.test_systemd -*-
"""
Tests for L{rainbowd.control.systemd} on real datagram sockets; the others
are in L{rainbowd.test.unit.test_systemd}.
"""

import os
import shutil
import socket
import tempfile

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.control.systemd import Notifier, Readiness, notifyAddress
from rainbowd.test.unit.test_deployer import Harness


def socketPath(testCase: SynchronousTestCase) -> str:
    """
    A path for a unix socket, short enough for one wherever the tests run.
    """
    directory = tempfile.mkdtemp(prefix="rainbowd-")
    testCase.addCleanup(shutil.rmtree, directory)
    return os.path.join(directory, "notify")


class NotifierTests(SynchronousTestCase):
    """
    L{Notifier} sends datagrams to C{$NOTIFY_SOCKET}.
    """

    def listen(self, address: str) -> socket.socket:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(address)
        server.setblocking(False)
        return server

    def test_path(self) -> None:
        """
        A message reaches a socket bound at the path in NOTIFY_SOCKET, as one
        datagram of newline-separated assignments.
        """
        path = socketPath(self)
        server = self.listen(path)
        Notifier(notifyAddress({"NOTIFY_SOCKET": path})).notify(
            "READY=1", "STATUS=serving"
        )
        self.assertEqual(server.recv(4096), b"READY=1\nSTATUS=serving")

    def test_abstract(self) -> None:
        """
        A NOTIFY_SOCKET starting with @ names an abstract socket.
        """
        name = f"rainbowd-test-{os.getpid()}-{id(self)}"
        server = self.listen("\0" + name)
        Notifier(notifyAddress({"NOTIFY_SOCKET": "@" + name})).notify("READY=1")
        self.assertEqual(server.recv(4096), b"READY=1")

    def test_unset(self) -> None:
        """
        Without NOTIFY_SOCKET there is no address and nothing is sent.
        """
        self.assertIsNone(notifyAddress({}))
        Notifier(None).notify("READY=1")

    def test_nobodyListening(self) -> None:
        """
        A socket nobody listens on is logged as a warning, not raised.
        """
        with capturedLogs() as events:
            Notifier(socketPath(self)).notify("READY=1")
        [event] = events
        self.assertIn("cannot notify systemd", formatEvent(event))


class ReadinessTests(SynchronousTestCase):
    """
    L{Readiness} tells systemd, on a real socket, when rainbowd is ready.
    """

    def test_readyToARealSocket(self) -> None:
        """
        READY=1 reaches a datagram socket at NOTIFY_SOCKET when the first
        generation serves.
        """
        path = socketPath(self)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(path)
        server.setblocking(False)
        h = Harness(self)
        Readiness(h.deployer, Notifier(path), "tcp:7000").startService()
        h.start()
        self.assertEqual(
            server.recv(4096).split(b"\n"),
            [b"READY=1", b"STATUS=serving generation 1 on tcp:7000"],
        )
