# -*- test-case-name: rainbowd.test.endtoend.test_ports -*-
"""
Tests for L{rainbowd.app.ports} on real sockets; the port picker's, on a
made-up port table, are in L{rainbowd.test.unit.test_ports}.
"""

import socket

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.ports import isPortFree


class IsPortFreeTests(SynchronousTestCase):
    """
    Tests for L{isPortFree}, with real sockets on 127.0.0.1.
    """

    def listeningSocket(self) -> socket.socket:
        """
        A socket listening on a port the kernel chose, closed at cleanup.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        return listener

    def test_listenedOnIsNotFree(self) -> None:
        """
        A port something listens on is not free.
        """
        listener = self.listeningSocket()
        self.assertFalse(isPortFree(listener.getsockname()[1]))

    def test_closedIsFree(self) -> None:
        """
        Once the listener is closed the port is free again.
        """
        listener = self.listeningSocket()
        port = listener.getsockname()[1]
        listener.close()
        self.assertTrue(isPortFree(port))

    def test_checkDoesNotHoldThePort(self) -> None:
        """
        Asking does not keep the port: it can be listened on right after.
        """
        listener = self.listeningSocket()
        port = listener.getsockname()[1]
        listener.close()
        self.assertTrue(isPortFree(port))
        again = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(again.close)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen(1)
        self.assertFalse(isPortFree(port))
