# -*- test-case-name: rainbowd.test.unit.test_nodelay -*-
"""
Tests for L{rainbowd.web.nodelay}.
"""

import socket
from typing import List

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rainbowd.test.inmemory import FakeDeployer
from rainbowd.web.backendclient import BackendConnection, Pool
from rainbowd.web.connlimit import ConnectionCap
from rainbowd.web.nodelay import sendAtOnce
from rainbowd.web.proxy import ProxySite, ReverseProxy


@implementer(ITCPTransport)
class TCPDescriptor(FileDescriptor):
    """
    A TCP connection's descriptor that is never added to a reactor, and
    records what its Nagle setting was set to.

    @ivar noDelay: each value given to L{setTcpNoDelay}.
    """

    def __init__(self) -> None:
        FileDescriptor.__init__(self, reactor=MemoryReactorClock())
        self.noDelay: List[bool] = []

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay.append(enabled)

    def getTcpNoDelay(self) -> bool:
        return self.noDelay[-1:] == [True]

    def getTcpKeepAlive(self) -> bool:
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        raise NotImplementedError()

    def abortConnection(self) -> None:
        raise NotImplementedError()

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 7000)


class SendAtOnceTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        """
        A TCP connection's descriptor gets Nagle's algorithm turned off.
        """
        end = TCPDescriptor()
        sendAtOnce(end)
        self.assertEqual(end.noDelay, [True])

    def test_realSocket(self) -> None:
        """
        On Twisted's own TCP connection, the socket's C{TCP_NODELAY} is set.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        connection = Connection(sock, Protocol(), reactor=MemoryReactorClock())
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)
        sendAtOnce(connection)
        self.assertNotEqual(
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0
        )

    def test_notTCP(self) -> None:
        """
        A descriptor that is not a TCP connection's, or none, is left
        alone.
        """
        sendAtOnce(FileDescriptor(reactor=MemoryReactorClock()))
        sendAtOnce(None)


class ProxyNoDelayTests(SynchronousTestCase):
    """
    Both sides of the proxy send at once: rainbowd's connections to the
    app, and the public side's, which twisted.web's C{HTTPChannel} sets.
    """

    def test_backendConnection(self) -> None:
        """
        A connection to the app has Nagle's algorithm off from the start.
        """
        end = TCPDescriptor()
        connection = BackendConnection(Pool(MemoryReactorClock(), 20001))
        connection.makeConnection(end)
        self.assertEqual(end.noDelay, [True])

    def test_publicChannel(self) -> None:
        """
        A public connection, under the connection cap's wrapper, has Nagle's
        algorithm off from the start: twisted.web's C{HTTPChannel} turns it
        off, through the wrapper, which provides what its transport does.
        """
        reactor = MemoryReactorClock()
        site = ProxySite(ReverseProxy(FakeDeployer(), reactor, 1.0), reactor=reactor)
        end = TCPDescriptor()
        channel = ConnectionCap(site, 10, reactor).buildProtocol(None)
        assert channel is not None
        channel.makeConnection(end)
        self.assertEqual(end.noDelay, [True])
