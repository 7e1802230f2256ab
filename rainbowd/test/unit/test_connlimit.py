# -*- test-case-name: rainbowd.test.unit.test_connlimit -*-
"""
Tests for L{rainbowd.web.connlimit}.
"""

import errno
from typing import List, Union, cast

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.base import DelayedCall
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.web.connlimit import (
    LINGER_BYTES,
    LINGER_TIME,
    LINGERING,
    ConnectionCap,
    quietAccepts,
)

ADDRESS = IPv4Address("TCP", "127.0.0.1", 50000)
DONE = Failure(ConnectionDone())


class HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that can stop writing and keep reading, as TCP can.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class Echo(Protocol):
    transport: ITransport  # connected before it is used

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class ConnectionCapTests(SynchronousTestCase):
    """
    Tests for L{ConnectionCap}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.cap = ConnectionCap(Factory.forProtocol(Echo), 2, self.clock)

    def connect(self):
        protocol = self.cap.buildProtocol(ADDRESS)
        transport = HalfClosingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_servedUpToTheCap(self) -> None:
        """
        Up to C{maximum} connections are served by the wrapped factory's
        protocols, unchanged.
        """
        first, firstTransport = self.connect()
        second, secondTransport = self.connect()
        self.assertIsInstance(first, ProtocolWrapper)
        first.dataReceived(b"hello")
        self.assertEqual(firstTransport.value(), b"hello")
        self.assertEqual((self.cap.open, self.cap.refused), (2, 0))
        self.assertFalse(secondTransport.disconnecting)

    def test_transportRelayed(self) -> None:
        """
        The served protocol's transport is the connection's: what it
        provides, its address, and its producer methods.
        """
        protocol, transport = self.connect()
        inner = protocol.wrappedProtocol
        self.assertTrue(IPushProducer.providedBy(inner.transport))
        self.assertEqual(inner.transport.getPeer(), transport.getPeer())
        inner.transport.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        inner.transport.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_takenOverStillCounted(self) -> None:
        """
        A connection whose protocol is replaced, as an upgrade's tunnel
        does, is still counted until it closes.
        """
        protocol, _ = self.connect()
        other = Echo()
        lost: List[Failure] = []

        def connectionLost(reason: Failure = connectionDone) -> None:
            lost.append(reason)

        other.connectionLost = connectionLost
        protocol.wrappedProtocol = other
        other.makeConnection(protocol)
        self.assertEqual(self.cap.open, 1)
        protocol.connectionLost(DONE)
        self.assertEqual((self.cap.open, lost), (0, [DONE]))

    def test_takenOverGetsTheBytes(self) -> None:
        """
        Once a connection's protocol is replaced, as an upgrade's tunnel
        does, what arrives goes to the new protocol, not the old one.
        """
        protocol, transport = self.connect()
        other = Protocol()
        received: List[bytes] = []
        other.dataReceived = lambda data: received.append(data)
        protocol.wrappedProtocol = other
        other.makeConnection(protocol)
        transport.clear()
        protocol.dataReceived(b"after")
        self.assertEqual((received, transport.value()), ([b"after"], b""))

    def test_pastTheCapRefused(self) -> None:
        """
        The connection past the cap gets a 503 saying why, with
        I{Connection: close}, and no more is written to it; the wrapped
        factory never sees it.
        """
        self.connect()
        self.connect()
        refused, transport = self.connect()
        self.assertNotIsInstance(refused, ProtocolWrapper)
        response = transport.value()
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), head)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertIn(b"\r\nContent-Length: %d" % (len(body),), head)
        self.assertIn(b'2 are open, as many as "maxConnections" allows', body)
        self.assertTrue(transport.writeClosed)
        self.assertEqual((self.cap.open, self.cap.refused), (2, 1))

    def test_closedFreesASlot(self) -> None:
        """
        Once a served connection closes, the next one is served again.
        """
        first, _ = self.connect()
        self.connect()
        first.connectionLost(DONE)
        self.assertEqual(self.cap.open, 1)
        third, transport = self.connect()
        self.assertIsInstance(third, ProtocolWrapper)
        self.assertEqual((transport.value(), self.cap.refused), (b"", 0))

    def test_refusedReadsUntilClientCloses(self) -> None:
        """
        A refused connection reads what its client sends (so that closing it
        sends no reset), and is done when the client closes.
        """
        self.connect()
        self.connect()
        refused, transport = self.connect()
        refused.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.cap.lingering, 1)
        lingerCall = refused.lingerCall
        refused.connectionLost(DONE)
        self.assertEqual(self.cap.lingering, 0)
        self.assertFalse(lingerCall.active())

    def test_refusedClosedAfterLingerTime(self) -> None:
        """
        A client that does not close its refused connection has it closed
        after L{LINGER_TIME}.
        """
        self.connect()
        self.connect()
        refused, transport = self.connect()
        self.clock.advance(LINGER_TIME - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        refused.connectionLost(DONE)
        self.assertEqual(self.cap.lingering, 0)

    def test_refusedClosedAfterLingerBytes(self) -> None:
        """
        A refused connection is closed once its client sent more than
        L{LINGER_BYTES}, however fast.
        """
        self.connect()
        self.connect()
        refused, transport = self.connect()
        refused.dataReceived(b"x" * LINGER_BYTES)
        self.assertFalse(transport.disconnecting)
        refused.dataReceived(b"x")
        self.assertTrue(transport.disconnecting)

    def test_noHalfCloseClosed(self) -> None:
        """
        A refused connection whose transport cannot stop writing alone is
        closed once its 503 is written.
        """
        self.connect()
        self.connect()
        transport = StringTransport()
        self.cap.buildProtocol(ADDRESS).makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.cap.lingering, 0)

    def test_tlsClosed(self) -> None:
        """
        Under TLS, a wrapper whose half-close would reach the TCP connection
        beneath it, a refused connection is closed rather than half-closed.
        """
        self.connect()
        self.connect()
        tcp = HalfClosingTransport()
        tls = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        tls.makeConnection(tcp)
        self.cap.buildProtocol(ADDRESS).makeConnection(tls)
        self.assertTrue(tcp.value().startswith(b"HTTP/1.1 503 "))
        self.assertEqual((tcp.disconnecting, tcp.writeClosed), (True, False))

    def test_lingeringBounded(self) -> None:
        """
        Past L{LINGERING} refused connections waiting for their clients, a
        refused connection is closed once its 503 is written.
        """
        self.connect()
        self.connect()
        for _ in range(LINGERING):
            self.connect()
        refused, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.writeClosed)
        self.assertEqual(self.cap.lingering, LINGERING)
        refused.connectionLost(DONE)
        self.assertEqual(self.cap.lingering, LINGERING)

    def test_refusalsLoggedOnceASecond(self) -> None:
        """
        Refusals are one line a second later, with their count and the cap.
        """
        self.connect()
        self.connect()
        with capturedLogs() as events:
            for _ in range(1000):
                self.connect()
            self.clock.advance(0.999)
            self.assertEqual(events, [])
            self.clock.advance(0.001)
            self.connect()
            self.clock.advance(1)
        lines = [formatEvent(event) for event in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("refused 1000 connections with a 503", lines[0])
        self.assertIn("2 were open, as many as maxConnections allows", lines[0])
        self.assertIn("refused 1 connection with a 503", lines[1])

    def test_refusalsLoggedAtStop(self) -> None:
        """
        Refusals not logged yet when the port closes are logged then.
        """
        self.cap.doStart()
        for _ in range(3):
            self.connect()
        with capturedLogs() as events:
            self.cap.doStop()
        [line] = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
        self.assertIn("refused 1 connection with a 503", line)
        # A Clock's delayed calls are DelayedCalls.
        pending = [cast(DelayedCall, call).func for call in self.clock.getDelayedCalls()]
        self.assertNotIn(self.cap._logRefusals, pending)

    def test_describe(self) -> None:
        """
        C{describe} gives the open connections, the cap and the refusals.
        """
        for _ in range(3):
            self.connect()
        self.assertEqual(self.cap.describe(), {"open": 2, "max": 2, "refused": 1})


class Stopping(Protocol):
    """
    A connection's protocol as L{ConnectionCap.closeGracefully} sees the
    public port's channel: receiving a request or not, and told to close
    when that is answered.
    """

    receiving = False
    #: Whether told to close, or the idle grace it was told to close with.
    told: Union[bool, float] = False

    def receivingRequest(self) -> bool:
        return self.receiving

    def closeWhenAnswered(self, idleGrace: float = 0.0) -> None:
        self.told = idleGrace or True


class StoppingTestCase(SynchronousTestCase):
    """
    Tests on a L{ConnectionCap} of L{Stopping} connections.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.cap = ConnectionCap(Factory.forProtocol(Stopping), 10, self.clock)

    def connect(self) -> Stopping:
        protocol = self.cap.buildProtocol(ADDRESS)
        assert isinstance(protocol, ProtocolWrapper)
        protocol.makeConnection(StringTransport())
        connection = protocol.wrappedProtocol
        assert isinstance(connection, Stopping)
        return connection


class CloseGracefullyTests(StoppingTestCase):
    """
    Tests for L{ConnectionCap.closeGracefully}.
    """

    def test_tellsEveryConnection(self) -> None:
        """
        Every connection is told to close once answered, and with none
        receiving a request the close is done at once.
        """
        connections = [self.connect() for _ in range(3)]
        upgraded = self.cap.buildProtocol(ADDRESS)
        assert isinstance(upgraded, ProtocolWrapper)
        upgraded.makeConnection(StringTransport())
        upgraded.wrappedProtocol = Echo()  # a tunnel has no such methods
        self.successResultOf(self.cap.closeGracefully(30.0))
        self.assertEqual([c.told for c in connections], [True, True, True])

    def test_idleGracePassedOn(self) -> None:
        """
        The grace an idle connection gets is passed on to each.
        """
        connection = self.connect()
        self.successResultOf(self.cap.closeGracefully(30.0, 5.0))
        self.assertEqual(connection.told, 5.0)

    def test_waitsForRequestsOnTheirWay(self) -> None:
        """
        It is done once no connection is receiving a request, looked at
        again every few tens of milliseconds.
        """
        first, second = self.connect(), self.connect()
        first.receiving = second.receiving = True
        done = self.cap.closeGracefully(30.0)
        self.clock.advance(1.0)
        self.assertNoResult(done)
        first.receiving = False
        self.clock.advance(1.0)
        self.assertNoResult(done)
        second.receiving = False
        self.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """
        After C{timeout}, it is done anyway, saying how many requests were
        still on their way.
        """
        self.connect().receiving = True
        with capturedLogs() as events:
            done = self.cap.closeGracefully(5.0)
            self.clock.pump([0.05] * 99)
            self.assertNoResult(done)
            self.clock.pump([0.05] * 2)
        self.successResultOf(done)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "the public port: 1 request still arriving after 5 s; "
                "draining the app without waiting longer"
            ],
        )


class WhenClosedTests(StoppingTestCase):
    """
    Tests for L{ConnectionCap.whenClosed}.
    """

    def test_waitsForTheLastResponses(self) -> None:
        """
        It is done once every connection has closed (each still sending its
        last response closes once that is sent), so that rainbowd does not
        exit with a response half sent.
        """
        self.successResultOf(self.cap.whenClosed(30.0))
        first, second = self.connect(), self.connect()
        # Connected by the cap's wrapper.
        assert isinstance(first.transport, ProtocolWrapper)
        assert isinstance(second.transport, ProtocolWrapper)
        done = self.cap.whenClosed(30.0)
        self.clock.advance(1.0)
        self.assertNoResult(done)
        first.transport.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(1.0)
        self.assertNoResult(done)
        second.transport.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """
        After C{timeout}, it is done anyway, saying how many connections
        were still open.
        """
        self.connect()
        with capturedLogs() as events:
            done = self.cap.whenClosed(1.0)
            self.clock.pump([0.05] * 19)
            self.assertNoResult(done)
            self.clock.pump([0.05] * 2)
        self.successResultOf(done)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "the public port: 1 connection still sending a response "
                "after 1 s; stopping without waiting longer"
            ],
        )


class FailingListener:
    """
    A listening socket whose C{accept()} fails with C{errors} in turn, then
    with EAGAIN; an error of L{None} accepts a connection instead.
    """

    def __init__(self, errors: List) -> None:
        self.errors = list(errors)
        self.accepted: List["AcceptedSocket"] = []

    def accept(self):
        error = self.errors.pop(0) if self.errors else errno.EAGAIN
        if error is None:
            client = AcceptedSocket()
            self.accepted.append(client)
            return client, ("127.0.0.1", 50000)
        raise OSError(error, "fake")


class AcceptedSocket:
    closed = False

    def close(self) -> None:
        self.closed = True


class Reservation:
    """
    Twisted's reserved descriptor for EMFILE, without a descriptor.
    """

    def available(self) -> bool:
        return True

    def reserve(self) -> None:
        pass

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


class AcceptErrorsTests(SynchronousTestCase):
    """
    Tests for L{quietAccepts}, on Twisted's own C{tcp.Port}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.port = tcp.Port(0, Factory.forProtocol(Protocol), reactor=self.clock)
        self.port.numberAccepts = 100  # as startListening leaves it
        self.errors = quietAccepts(self.port, 'tcp:7000 ("port")', self.clock)

    def failAccepts(self, errors: List) -> None:
        self.port.socket = FailingListener(errors)
        self.port.doRead()

    def test_oneLineASecond(self) -> None:
        """
        A thousand failed accepts in one second are one line a second later,
        with the count, the port and what to do.
        """
        with capturedLogs() as events:
            for _ in range(1000):
                self.failAccepts([errno.ENFILE])
            self.clock.advance(0.999)
            self.assertEqual(events, [])
            self.clock.advance(0.001)
        [line] = [formatEvent(event) for event in events]
        self.assertIn('accept() on tcp:7000 ("port") failed', line)
        self.assertIn("ENFILE 1000 times", line)
        self.assertIn("fs.file-max", line)
        self.assertEqual(self.errors.errors, {"ENFILE": 1000})

    def test_nextSecondNextLine(self) -> None:
        """
        Failures in the next second are a line of their own, counted anew.
        """
        with capturedLogs() as events:
            self.failAccepts([errno.ENOBUFS])
            self.clock.advance(1)
            self.failAccepts([errno.ENOBUFS])
            self.failAccepts([errno.ENOBUFS])
            self.clock.advance(1)
        lines = [formatEvent(event) for event in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("ENOBUFS 1 time.", lines[0])
        self.assertIn("ENOBUFS 2 times", lines[1])

    def test_emfileRecoveryCounted(self) -> None:
        """
        Twisted's EMFILE recovery, three lines per connection closed, is
        one line with the connections it closed unanswered and the fix.
        """
        self.patch(tcp, "_reservedFD", Reservation())
        closed = 0
        with capturedLogs() as events:
            for _ in range(500):
                listener = FailingListener([errno.EMFILE, None, None])
                self.port.socket = listener
                self.port.doRead()
                self.assertTrue(all(s.closed for s in listener.accepted))
                closed += len(listener.accepted)
            self.clock.advance(1)
        [line] = [formatEvent(event) for event in events]
        self.assertIn("EMFILE 500 times", line)
        self.assertIn(f"{closed} connections were closed unanswered", line)
        self.assertIn("LimitNOFILE=", line)
        self.assertEqual(self.errors.errors, {"EMFILE": 500})
        self.assertEqual(self.errors.closed, closed)

    def test_otherEventsPassed(self) -> None:
        """
        The port's other log events reach the log as they are.
        """
        with capturedLogs() as events:
            self.port._logger.info("something else {x}", x=1)
        self.assertEqual([formatEvent(event) for event in events], ["something else 1"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
