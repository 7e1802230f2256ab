# -*- test-case-name: rainbowd.test.unit.test_reads -*-
"""
Tests for L{rainbowd.web.reads}.
"""

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.test.inmemory import FakeDeployer
from rainbowd.test.unit.test_backendclient import RecordingHandler
from rainbowd.web.backendclient import BackendConnection, Pool
from rainbowd.web.connlimit import ConnectionCap
from rainbowd.web.proxy import ProxySite, ReverseProxy
from rainbowd.web.reads import LARGE, SMALL, fit, readingEnd, readLarge, readSmall
from rainbowd.web.tunnel import Tunnel


class Descriptor(FileDescriptor):
    """
    A descriptor that is never added to a reactor.
    """

    def __init__(self) -> None:
        FileDescriptor.__init__(self, reactor=MemoryReactorClock())


class ReadSizeTests(SynchronousTestCase):
    def test_readingEnd(self) -> None:
        """
        The descriptor is found directly or under a protocol wrapper; any
        other transport has none.
        """
        descriptor = Descriptor()
        wrapper = ProtocolWrapper(WrappingFactory(None), Protocol())
        wrapper.transport = descriptor
        self.assertIs(readingEnd(descriptor), descriptor)
        self.assertIs(readingEnd(wrapper), descriptor)
        self.assertIsNone(readingEnd(StringTransport()))
        readSmall(None)
        readLarge(None)

    def test_growAndShrink(self) -> None:
        """
        Reads start small, grow to Twisted's size after one fills the
        buffer, stay there while reads are larger than the small size, and
        come back down after one that would have fit.
        """
        end = Descriptor()
        self.assertEqual(LARGE, 65536)
        readSmall(end)
        sizes = []
        for received in [300, SMALL, LARGE, 30000, SMALL, 200, 5]:
            fit(end, received)
            sizes.append(end.bufferSize)
        self.assertEqual(sizes, [SMALL, LARGE, LARGE, LARGE, LARGE, SMALL, SMALL])

    def test_large(self) -> None:
        """
        C{readLarge} puts a descriptor back to Twisted's size.
        """
        end = Descriptor()
        readSmall(end)
        readLarge(end)
        self.assertEqual(end.bufferSize, LARGE)


class ProxyReadsTests(SynchronousTestCase):
    """
    Both sides of the proxy size their reads.
    """

    def test_backendConnection(self) -> None:
        """
        A connection to the app reads small from the start, and large once
        a read of a response's body filled the buffer.
        """
        end = Descriptor()
        connection = BackendConnection(Pool(MemoryReactorClock(), 20001))
        connection.makeConnection(end)
        self.assertEqual(end.bufferSize, SMALL)
        connection.send(RecordingHandler(), b"GET / HTTP/1.1\r\n\r\n", None, 0, False)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
        connection.dataReceived(head + b"x" * (SMALL - len(head)))
        self.assertEqual(end.bufferSize, LARGE)

    def test_publicChannel(self) -> None:
        """
        A public connection, under the connection cap's wrapper, reads small
        from the start, and large once a read filled the buffer.
        """
        reactor = MemoryReactorClock()
        site = ProxySite(ReverseProxy(FakeDeployer(), reactor, 1.0), reactor=reactor)
        end = Descriptor()
        end.getPeer = lambda: IPv4Address("TCP", "127.0.0.1", 40000)
        end.getHost = lambda: IPv4Address("TCP", "127.0.0.1", 7000)
        channel = ConnectionCap(site, 10, reactor).buildProtocol(None)
        channel.makeConnection(end)
        self.assertEqual(end.bufferSize, SMALL)
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 90000\r\n\r\n")
        self.assertEqual(end.bufferSize, SMALL)
        channel.dataReceived(b"x" * SMALL)
        self.assertEqual(end.bufferSize, LARGE)

    def test_tunnel(self) -> None:
        """
        Both ends of a tunnel read Twisted's size: its bytes pass untouched,
        however many.
        """
        client, server = Descriptor(), Descriptor()
        readSmall(client)
        readSmall(server)
        Tunnel(object()).join(client, server, b"", b"")
        self.assertEqual((client.bufferSize, server.bufferSize), (LARGE, LARGE))
