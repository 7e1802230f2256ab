# -*- test-case-name: rainbowd.test.unit.test_backendclient -*-
"""
Tests for L{rainbowd.web.backendclient}: its pools and connections, on their own
and through the proxy, in the world of L{rainbowd.test.inmemory}.
"""

import socket
from typing import List, Optional, Tuple

import attrs
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from rainbowd.interfaces import IResponseReceiver
from rainbowd.test.inmemory import (
    UPGRADE_REQUEST,
    BackendApp,
    EchoUpgrade,
    FakeBackend,
    FakeClient,
    RawResponse,
    Recorder,
    World,
    backendSite,
    cannedBackend,
    later,
    ok,
    rawRequest,
)
from rainbowd.web.backendclient import (
    CHUNK_SIZE,
    IDLE_TIMEOUT,
    BackendConnection,
    Pool,
)
from rainbowd.web.http1 import HEADER_NAMES_KEPT
from rainbowd.web.proxy import ProxyRequest


class PoolTests(SynchronousTestCase):
    """
    Each backend has its own pool of kept-alive connections, closed when the
    backend stops.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def test_idleConnectionsClosedWhenBackendStops(self) -> None:
        """
        When a backend's process is gone, the proxy closes its kept-alive
        connections to it, and would open a new one for a new request.
        """
        self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, BackendApp()))
        self.assertFalse(pump.serverIO.disconnected)
        self.backend.stop()
        self.world.flush()
        self.assertTrue(pump.serverIO.disconnected)
        self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [20001])

    def test_idleConnectionsClosedBeforeTheApp(self) -> None:
        """
        A connection idle for C{IDLE_TIMEOUT} is closed by the proxy, before
        the app's own keep-alive timeout would close it under a request.
        """
        self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, BackendApp()))
        self.world.reactor.advance(IDLE_TIMEOUT - 0.1)
        self.world.flush()
        self.assertFalse(pump.serverIO.disconnected)
        self.world.reactor.advance(0.1)
        self.world.flush()
        self.assertTrue(pump.serverIO.disconnected)


class ConnectionCapTests(SynchronousTestCase):
    """
    With C{backendConnections}, a backend carries at most that many requests
    at once; the others wait in rainbowd, first come first served, until
    their C{queueTimeout}.
    """

    def setUp(self) -> None:
        # Requests hold their slots past queueTimeout, however slow the app.
        self.world = World(
            queueTimeout=30.0, backendConnections=2, backendTimeout=3600.0
        )
        self.backend = FakeBackend(generation=3, port=20001)
        self.world.deployer.activate(self.backend)
        self.app = BackendApp(later)
        self.site = backendSite(self.world, self.app)

    def fill(self) -> List[FakeClient]:
        """
        Send two requests the app holds, one on each allowed connection.
        """
        clients = []
        for n in range(2):
            clients.append(self.world.request(rawRequest(target=b"/busy%d" % (n,))))
            self.world.accept(self.site)
        return clients

    def answer(self, index: int, body: bytes = b"done") -> None:
        """
        Finish the app's C{index}th request.
        """
        live = self.app.live[index]
        live.write(body)
        live.finish()
        self.world.flush()

    def pool(self) -> Pool:
        [pool] = self.world.proxy._pools.values()
        return pool

    def test_beyondCapWaits(self) -> None:
        """
        A request beyond the cap opens no connection, and waits counted in
        flight by its backend.
        """
        self.fill()
        waiting = self.world.request(rawRequest(target=b"/third"))
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual(waiting.data, b"")
        self.assertEqual((len(self.app.live), self.backend.inflight), (2, 3))

    def test_freedSlotGoesToFirstWaiter(self) -> None:
        """
        A finished response hands its connection to the first request
        waiting, and the waiters are served in the order they came.
        """
        self.fill()
        waiters = [
            self.world.request(rawRequest(target=b"/wait%d" % (n,))) for n in range(3)
        ]
        for index in range(3):
            self.answer(index, b"answer %d" % (index,))
            self.assertEqual(self.world.attempts(), [])
        self.answer(3)
        self.answer(4)
        self.assertEqual(
            [r.uri for r in self.app.received],
            [b"/busy0", b"/busy1", b"/wait0", b"/wait1", b"/wait2"],
        )
        self.assertEqual([c.response().code for c in waiters], [200, 200, 200])
        self.assertEqual(self.backend.inflight, 0)
        self.assertIsNone(self.pool()._waiting)
        self.assertEqual(self.pool().busy, 0)

    def test_closedConnectionSlotOpensAnother(self) -> None:
        """
        A slot freed by a response after which the connection is closed
        goes to the first waiter on a new connection.
        """
        self.fill()
        waiting = self.world.request(rawRequest(target=b"/wait"))
        live = self.app.live[0]
        live.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        live.finish()
        self.world.flush()
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(self.site)
        self.answer(2)
        self.assertEqual(waiting.response().body, b"done")

    def test_refusedConnectionPassesSlotOn(self) -> None:
        """
        A connection the app refuses frees its slot for the next waiter, and
        the refused request, tried again, waits behind it.
        """
        self.world.request(rawRequest(target=b"/busy0"))
        self.world.accept(self.site)
        refused = self.world.request(rawRequest(target=b"/refused"))
        waiting = self.world.request(rawRequest(target=b"/wait"))
        self.world.refuse()
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(self.site)
        self.world.reactor.advance(1)
        self.assertEqual(self.world.attempts(), [])
        self.answer(1)
        self.assertEqual(waiting.response().code, 200)
        self.answer(2)
        self.assertEqual(refused.response().code, 200)
        self.assertEqual(
            [r.uri for r in self.app.received], [b"/busy0", b"/wait", b"/refused"]
        )

    def test_waitersTimeOut(self) -> None:
        """
        A request still waiting at its C{queueTimeout}, counted from its
        arrival, is answered 503 naming the cap, and leaves nothing behind.
        """
        self.fill()
        self.world.deployer.activate(None)
        early = self.world.request(rawRequest(target=b"/early"))
        self.world.reactor.advance(10)
        self.world.deployer.activate(self.backend)
        late = self.world.request(rawRequest(target=b"/late"))
        self.world.reactor.advance(19.9)
        self.world.flush()
        self.assertEqual((early.data, late.data), (b"", b""))
        self.world.reactor.advance(0.1)
        self.world.flush()
        response = early.response()
        self.assertEqual(response.code, 503)
        self.assertEqual(
            response.body,
            b"rainbowd: backend generation 3 on port 20001 was carrying "
            b"backendConnections (2) requests until this one's queueTimeout "
            b"(30 s) ran out; see rainbowd's log\n",
        )
        self.assertEqual(late.data, b"")
        self.world.reactor.advance(10)
        self.world.flush()
        self.assertEqual(late.response().code, 503)
        self.assertEqual(self.backend.inflight, 2)
        self.assertIsNone(self.pool()._waiting)
        self.assertEqual(len(self.app.live), 2)

    def test_queuedClientHangsUp(self) -> None:
        """
        A client that hangs up while its request waits leaves the queue: the
        next slot goes to the one behind it, and its backend counts it over.
        """
        self.fill()
        gone = self.world.request(rawRequest(target=b"/gone"))
        waiting = self.world.request(rawRequest(target=b"/wait"))
        gone.hangUp()
        self.world.flush()
        self.assertEqual(self.backend.inflight, 3)
        self.answer(0)
        self.answer(2)
        self.assertEqual(waiting.response().code, 200)
        self.assertEqual([r.uri for r in self.app.received][2:], [b"/wait"])
        self.answer(1)
        self.assertEqual((self.backend.started, self.backend.finished), (4, 4))
        self.assertEqual(self.pool().busy, 0)
        self.world.reactor.advance(30)
        self.assertIsNone(self.pool()._waiting)

    def test_swapMovesWaiters(self) -> None:
        """
        When the backend they wait for starts draining, waiting requests go
        to the new active backend, in their order, and the old one counts
        only the requests it carries.
        """
        self.fill()
        waiters = [
            self.world.request(rawRequest(target=b"/wait%d" % (n,))) for n in range(2)
        ]
        new = FakeBackend(generation=4, port=20002)
        self.world.deployer.activate(new)
        self.backend.drain()
        self.world.flush()
        self.assertEqual(self.world.attempts(), [20002, 20002])
        self.assertEqual((self.backend.inflight, new.inflight), (2, 2))
        newApp = BackendApp()
        for waiter in waiters:
            self.world.accept(backendSite(self.world, newApp))
        self.assertEqual([r.uri for r in newApp.received], [b"/wait0", b"/wait1"])
        self.assertEqual([w.response().code for w in waiters], [200, 200])
        self.answer(0)
        self.answer(1)
        self.assertEqual((self.backend.started, self.backend.finished), (4, 4))
        self.assertEqual((new.started, new.finished), (2, 2))

    def test_drainingWithoutReplacement(self) -> None:
        """
        A backend that drains while still the active one (rainbowd is
        stopping) serves its waiters as its slots free, counting them in
        flight until then, so that it is not stopped under them.
        """
        clients = self.fill()
        waiting = self.world.request(rawRequest(target=b"/wait"))
        self.backend.drain()
        self.world.flush()
        self.assertEqual((self.world.attempts(), self.backend.inflight), ([], 3))
        self.answer(0)
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(self.site)
        self.answer(1)
        self.answer(2)
        self.assertEqual(
            [c.response().code for c in clients + [waiting]], [200, 200, 200]
        )
        self.assertEqual(self.backend.inflight, 0)

    def test_upgradeNotCapped(self) -> None:
        """
        An upgrade gets its own connection at once, whatever the cap, and
        takes no slot.
        """
        self.fill()
        client = self.world.connectClient()
        client.send(UPGRADE_REQUEST)
        self.world.flush()
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(Factory.forProtocol(EchoUpgrade))
        self.assertTrue(client.data.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(self.pool().busy, 2)

    def test_noCap(self) -> None:
        """
        With C{backendConnections} 0, every request gets a connection at
        once, and no queue is made.
        """
        world = World(backendConnections=0)
        world.deployer.activate(self.backend)
        for n in range(5):
            world.request(rawRequest())
        self.assertEqual(world.attempts(), [20001] * 5)
        [pool] = world.proxy._pools.values()
        self.assertIsNone(pool._waiting)


@attrs.define
class Waiter:
    """
    A handler waiting for a slot of a L{Pool}, recording what it hears.
    """

    deadline: float
    heard: List[str] = attrs.field(factory=list)

    def slotGranted(self) -> Optional[bool]:
        self.heard.append("granted")
        return None

    def slotTimedOut(self) -> None:
        self.heard.append("timed out")

    def slotMoved(self) -> None:
        self.heard.append("moved")


class PoolQueueTests(SynchronousTestCase):
    """
    A L{Pool}'s queue of requests waiting for a slot, on its own.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = Pool(self.reactor, 20001, maxConnections=1)
        self.assertTrue(self.pool.acquire(Waiter(deadline=100)))

    def test_earlierDeadlineBehind(self) -> None:
        """
        A waiter with an earlier deadline than those ahead of it (it waited
        for a backend before it queued) times out at its own deadline, and
        the queue's one timer then moves on to the next.
        """
        later, earlier = Waiter(deadline=40), Waiter(deadline=30)
        self.assertFalse(self.pool.acquire(later))
        self.assertFalse(self.pool.acquire(earlier))
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(30)
        self.assertEqual((later.heard, earlier.heard), ([], ["timed out"]))
        self.reactor.advance(9.9)
        self.assertEqual(later.heard, [])
        self.reactor.advance(0.1)
        self.assertEqual(later.heard, ["timed out"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.pool.busy, 1)

    def test_grantedBeforeDeadline(self) -> None:
        """
        A waiter given a slot before its deadline hears nothing more, and
        the queue's timer goes with the queue.
        """
        waiter = Waiter(deadline=30)
        self.assertFalse(self.pool.acquire(waiter))
        self.pool.free()
        self.reactor.advance(60)
        self.assertEqual(waiter.heard, ["granted"])
        self.assertEqual((self.pool.busy, self.reactor.getDelayedCalls()), (1, []))
        self.pool.free()
        self.assertEqual(self.pool.busy, 0)

    def test_drainMovesWaiters(self) -> None:
        """
        Draining the pool tells each waiter, in order, to find another
        backend.
        """
        first, second = Waiter(deadline=30), Waiter(deadline=30)
        self.pool.acquire(first)
        self.pool.acquire(second)
        self.pool.drain()
        self.assertEqual((first.heard, second.heard), (["moved"], ["moved"]))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_declinedSlotGoesOn(self) -> None:
        """
        A waiter whose C{slotGranted} declines the slot (returns C{False},
        as a request does while traffic is paused) passes it to the next,
        however many decline, without a call for each on the stack.
        """
        declined = []

        class Declining(Waiter):
            def slotGranted(self) -> bool:
                declined.append(self)
                return False

        decliners = [Declining(deadline=30) for _ in range(2000)]
        taker = Waiter(deadline=30)
        for waiter in decliners + [taker]:
            self.assertFalse(self.pool.acquire(waiter))
        self.pool.free()
        self.assertEqual((len(declined), taker.heard), (2000, ["granted"]))
        self.assertEqual((self.pool.busy, self.pool._waiting), (1, None))
        for waiter in decliners:
            self.assertFalse(self.pool.acquire(waiter))
        self.pool.free()
        self.assertEqual((self.pool.busy, self.reactor.getDelayedCalls()), (0, []))

    def test_declinedSlotDrainingPool(self) -> None:
        """
        A waiter that declines its slot and drains the pool meanwhile (its
        backend stopping) leaves the others moved, and granted nothing.
        """
        pool = self.pool

        class Draining(Waiter):
            def slotGranted(self) -> bool:
                pool.drain()
                return False

        behind = Waiter(deadline=30)
        self.assertFalse(pool.acquire(Draining(deadline=30)))
        self.assertFalse(pool.acquire(behind))
        pool.free()
        self.assertEqual(behind.heard, ["moved"])
        self.assertEqual((pool.busy, pool._waiting), (0, None))


class MaxRequestsTests(SynchronousTestCase):
    """
    With C{backendMaxRequests}, a connection to a backend is closed after
    that many responses.
    """

    def test_closedAfterExactlyN(self) -> None:
        """
        The connection carries exactly C{backendMaxRequests} responses, and
        is closed after the last of them; the next request opens another.
        """
        world = World(backendMaxRequests=3)
        world.deployer.activate(FakeBackend(generation=1, port=20001))
        app = BackendApp()
        world.request(rawRequest())
        pump = world.accept(backendSite(world, app))
        for n in range(2):
            self.assertFalse(pump.serverIO.disconnected)
            world.request(rawRequest())
            self.assertEqual(world.attempts(), [])
        self.assertEqual(len(app.received), 3)
        self.assertTrue(pump.serverIO.disconnected)
        world.request(rawRequest())
        self.assertEqual(world.attempts(), [20001])

    def test_noLimit(self) -> None:
        """
        With C{backendMaxRequests} 0, a connection is kept for any number of
        responses.
        """
        world = World(backendMaxRequests=0)
        world.deployer.activate(FakeBackend(generation=1, port=20001))
        world.request(rawRequest())
        pump = world.accept(backendSite(world, BackendApp()))
        for n in range(20):
            world.request(rawRequest())
        self.assertEqual(world.attempts(), [])
        self.assertFalse(pump.serverIO.disconnected)


class ReadPausingTransport(iosim.FakeTransport):
    """
    An iosim transport whose reading can be paused, as a TCP transport's
    can: what arrives meanwhile is held until it is resumed.
    """

    readPaused = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        # FakeTransport's own arguments, passed on as they came.
        iosim.FakeTransport.__init__(self, *args, **kwargs)  # type: ignore[arg-type]
        self._held: List[bytes] = []

    def pauseProducing(self) -> None:
        self.readPaused = True

    def resumeProducing(self) -> None:
        self.readPaused = False
        held, self._held = self._held, []
        for data in held:
            iosim.FakeTransport.bufferReceived(self, data)

    def bufferReceived(self, data: bytes) -> None:
        if self.readPaused:
            self._held.append(data)
        else:
            iosim.FakeTransport.bufferReceived(self, data)


class SmallBufferTransport(iosim.FakeTransport):
    """
    An iosim transport with a write buffer of C{bufferSize} bytes, as a TCP
    transport has: a streaming producer is paused when the buffer is full
    and resumed when the pump empties it.

    @ivar maxBuffered: The most bytes the buffer ever held.
    """

    bufferSize = 65536
    maxBuffered = 0
    producerPaused = False

    def write(self, data: bytes) -> None:
        iosim.FakeTransport.write(self, data)
        buffered = sum(map(len, self.stream))
        self.maxBuffered = max(self.maxBuffered, buffered)
        if (
            self.producer is not None
            and self.streamingProducer
            and buffered >= self.bufferSize
            and not self.producerPaused
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def getOutBuffer(self) -> Optional[bytes]:
        data = iosim.FakeTransport.getOutBuffer(self)
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()
        return data


class AnswersOnce(Protocol):
    """
    A backend that answers the first request on a connection and closes the
    connection, without answering, when the next one comes: the race of a
    kept-alive connection that the app closes as a request is sent on it.

    @ivar requests: The request heads received.
    """

    transport: ITransport  # connected before it is used

    def __init__(self, requests: List[bytes]) -> None:
        self._requests = requests
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer:
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            self._requests.append(head)
            if len(self._requests) == 1:
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                )
            else:
                self.transport.loseConnection()


class StaleConnectionTests(SynchronousTestCase):
    """
    A request sent on a kept-alive connection that the app closes without
    answering is sent again on a new connection if its method is idempotent,
    and answered 502 otherwise.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=3, port=20001)
        self.world.deployer.activate(self.backend)
        self.heads: List[bytes] = []
        self.world.request(rawRequest())
        self.world.accept(Factory.forProtocol(lambda: AnswersOnce(self.heads)))

    def test_idempotentRetried(self) -> None:
        """
        A GET, or a PUT with its body, goes again on a new connection.
        """
        for method, body in [(b"GET", b""), (b"PUT", b"the body")]:
            app = BackendApp()
            client = self.world.request(rawRequest(method, b"/again", body=body))
            self.assertEqual(self.world.attempts(), [20001])
            self.world.accept(backendSite(self.world, app))
            self.assertEqual(client.response().code, 200)
            [received] = app.received
            self.assertEqual((received.method, received.body), (method, body))
            self.world.reactor.advance(IDLE_TIMEOUT)
            self.world.flush()
            self.world.request(rawRequest())
            self.world.accept(Factory.forProtocol(lambda: AnswersOnce([])))
        self.assertEqual(self.backend.inflight, 0)

    def test_postNotResent(self) -> None:
        """
        A POST is not sent again: it is answered 502, saying why.
        """
        client = self.world.request(rawRequest(b"POST", b"/order", body=b"x=1"))
        response = client.response()
        self.assertEqual(response.code, 502)
        self.assertEqual(
            response.body,
            b"rainbowd: backend generation 3 on port 20001 closed a kept-alive "
            b"connection as POST /order was sent on it; rainbowd does not send "
            b"a POST again, as it may have been acted on\n",
        )
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual((self.backend.started, self.backend.finished), (2, 2))


class DrainPoolTests(SynchronousTestCase):
    """
    Connections to a backend that starts draining are closed as soon as they
    are idle, and aborted connections are never reused.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def test_idleClosedAtDrain(self) -> None:
        """
        The idle connections to a backend are closed when it starts draining.
        """
        self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, BackendApp()))
        self.backend.drain()
        self.world.flush()
        self.assertTrue(pump.serverIO.disconnected)

    def test_busyClosedAfterResponse(self) -> None:
        """
        A connection busy when its backend starts draining is closed once its
        response is relayed, not kept for reuse.
        """
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, app))
        self.backend.drain()
        [backendRequest] = app.live
        backendRequest.write(b"done")
        backendRequest.finish()
        self.world.flush()
        self.assertEqual(client.response().body, b"done")
        self.assertTrue(pump.serverIO.disconnected)

    def test_abortedNotReused(self) -> None:
        """
        After a client hangs up mid-response, the next request goes over a
        new connection, not the one with the half-read response.
        """
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, app))
        app.live[0].write(b"some")
        self.world.flush()
        client.hangUp()
        self.world.flush()
        self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [20001])

    def test_extraBytesNotReused(self) -> None:
        """
        A connection on which the backend sent more than its response said is
        closed, and the response relayed as its length says.
        """
        client = self.world.request(rawRequest())
        pump = self.world.accept(
            cannedBackend(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokAND MORE", False
            )
        )
        self.assertEqual(client.response().body, b"ok")
        self.assertTrue(pump.serverIO.disconnected)


    def test_unsolicitedBytesNotReused(self) -> None:
        """
        An idle connection on which the backend sends bytes no request asked
        for is taken out of the pool at once, not handed to the next request
        while it closes.
        """
        self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, BackendApp()))
        pump.clientIO.protocol.dataReceived(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        client = self.world.connectClient()
        client.send(rawRequest(b"POST", body=b"x=1"))
        client.pump.flush()
        self.assertEqual(self.world.attempts(), [20001])


class BackpressureTests(SynchronousTestCase):
    """
    A slow client slows the reading of its response from the backend, and a
    large upload goes to the backend only as fast as it takes it.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def test_slowClientPausesBackend(self) -> None:
        """
        While the client's transport is full, the backend connection is not
        read; once it drains, the rest of the response flows.
        """
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, app), ReadPausingTransport)
        [backendRequest] = app.live
        backendRequest.write(b"first ")
        self.world.flush()
        # The client's transport tells its producer, the channel, that its
        # buffer is full, as a TCP transport would.
        channel = client.pump.server
        channel.pauseProducing()
        self.assertTrue(pump.clientIO.readPaused)
        backendRequest.write(b"second")
        backendRequest.finish()
        self.world.flush()
        self.assertEqual(client.response().body, b"first ")
        channel.resumeProducing()
        self.assertFalse(pump.clientIO.readPaused)
        self.world.flush()
        self.assertEqual(client.response().body, b"first second")
        self.assertEqual(self.backend.inflight, 0)

    def test_uploadStreamed(self) -> None:
        """
        A large request body (spooled to a file by twisted.web) reaches the
        backend whole, written no faster than the connection takes it.
        """
        body = bytes(range(256)) * 2000
        app = BackendApp()
        client = self.world.request(rawRequest(b"PUT", b"/big", body=body))
        pump = self.world.accept(backendSite(self.world, app), SmallBufferTransport)
        self.assertEqual(client.response().code, 200)
        self.assertEqual(app.received[0].body, body)
        self.assertTrue(
            pump.clientIO.maxBuffered <= SmallBufferTransport.bufferSize + CHUNK_SIZE,
            pump.clientIO.maxBuffered,
        )

    def test_clientGoneMidUpload(self) -> None:
        """
        A client hanging up while its body is still being sent to a backend
        that reads slowly stops the upload and drops the backend connection.
        """

        class Stuck(SmallBufferTransport):
            def getOutBuffer(self) -> Optional[bytes]:
                return iosim.FakeTransport.getOutBuffer(self)

        client = self.world.request(rawRequest(b"PUT", b"/big", body=b"x" * 300000))
        pump = self.world.accept(backendSite(self.world, BackendApp()), Stuck)
        self.assertTrue(pump.clientIO.producerPaused)
        client.hangUp()
        self.world.flush()
        self.assertTrue(pump.clientIO.disconnecting)
        self.assertIsNone(pump.clientIO.producer)
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))

    def test_earlyAnswerStopsUpload(self) -> None:
        """
        A backend answering before it has read the whole body (a 413, say)
        has its answer relayed; the upload stops and the connection is not
        reused.
        """
        body = b"x" * 300000
        client = self.world.request(rawRequest(b"POST", b"/big", body=body))
        pump = self.world.accept(
            cannedBackend(
                b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nno\n", False
            ),
            SmallBufferTransport,
        )
        self.assertEqual(client.response().code, 413)
        self.assertTrue(pump.clientIO.disconnecting)
        self.assertEqual(self.backend.inflight, 0)


class StreamingTests(SynchronousTestCase):
    """
    Bodies are relayed as the backend produces them, whatever their framing.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def test_eventStream(self) -> None:
        """
        Each event of a C{text/event-stream} reaches the client as soon as
        the backend writes it.
        """

        def respond(request):
            request.setHeader(b"Content-Type", b"text/event-stream")
            return NOT_DONE_YET

        app = BackendApp(respond)
        client = self.world.request(rawRequest(target=b"/events"))
        self.world.accept(backendSite(self.world, app))
        [backendRequest] = app.live
        backendRequest.write(b"data: one\n\n")
        self.world.flush()
        response = client.response()
        self.assertEqual(response.header(b"Content-Type"), [b"text/event-stream"])
        self.assertEqual((response.body, response.complete), (b"data: one\n\n", False))
        backendRequest.write(b"data: two\n\n")
        self.world.flush()
        self.assertEqual(client.response().body, b"data: one\n\ndata: two\n\n")

    def test_chunkedInPieces(self) -> None:
        """
        A chunked response -- with chunk extensions and trailers, arriving a
        few bytes at a time -- is relayed whole, and its connection reused.
        """
        raw = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n"
            b"0\r\nX-Checksum: 1\r\n\r\n"
        )

        class Trickle(Protocol):
            transport: ITransport  # connected before it is used

            def dataReceived(self, data: bytes) -> None:
                for i in range(0, len(raw), 3):
                    self.transport.write(raw[i : i + 3])

        client = self.world.request(rawRequest())
        self.world.accept(Factory.forProtocol(Trickle))
        response = client.response()
        self.assertEqual((response.body, response.complete), (b"hello world", True))
        self.assertEqual(response.header(b"Content-Length"), [])
        self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [])

    def test_headOfChunked(self) -> None:
        """
        The answer to HEAD has no body even when its headers announce a
        chunked one, and the connection carries the next request.
        """
        client = self.world.request(rawRequest(b"HEAD"))
        self.world.accept(
            cannedBackend(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", False
            )
        )
        self.assertEqual(client.response().code, 200)
        self.assertTrue(client.data.endswith(b"\r\n\r\n"))
        self.assertEqual(self.backend.inflight, 0)

    def test_headSentBeforeBody(self) -> None:
        """
        The response head reaches the client as soon as it comes, even
        before any of the body.
        """
        client = self.world.request(rawRequest())
        self.world.accept(
            cannedBackend(
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-A: 1\r\n\r\n", False
            )
        )
        response = client.response()
        self.assertEqual((response.header(b"X-A"), response.body), ([b"1"], b""))

    def test_badHeaderNameIs502(self) -> None:
        """
        A response header whose name is not a token gets the client a 502,
        not a half-relayed response.
        """
        client = self.world.request(rawRequest())
        self.world.accept(
            cannedBackend(
                b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n"
            )
        )
        response = client.response()
        self.assertEqual(response.code, 502)
        self.assertIn(b"malformed header line", response.body)
        self.assertEqual(response.header(b"Bad Name"), [])

    def test_malformedResponseIs502(self) -> None:
        """
        A backend answering something that is not HTTP/1.1 gets the client a
        502 saying so.
        """
        client = self.world.request(rawRequest())
        self.world.accept(cannedBackend(b"SSH-2.0-OpenSSH\r\n\r\n"))
        response = client.response()
        self.assertEqual(response.code, 502)
        self.assertIn(b"not HTTP/1.1", response.body)
        self.assertEqual(self.backend.inflight, 0)


@implementer(IResponseReceiver)
class RecordingHandler:
    """
    The handler of a request on a L{BackendConnection}, recording what it
    hears.
    """

    upgrade = False

    def __init__(self) -> None:
        self.events: List[Tuple[object, ...]] = []

    def responseHead(self, code, phrase, headers) -> None:
        self.events.append(("head", code, phrase, headers))

    def responseData(self, data: bytes) -> None:
        self.events.append(("data", data))

    def responseStreaming(self, connection) -> None:
        self.events.append(("streaming",))

    def responseDone(self) -> None:
        self.events.append(("done",))

    def responseBroken(self, reason) -> None:
        self.events.append(("broken", reason.getErrorMessage()))


class FramingTests(SynchronousTestCase):
    """
    A response whose framing is doubtful is refused with a 502, or relayed
    as RFC 9112 says and its connection then closed, never misread.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def answer(self, raw: bytes, close: bool = False) -> Tuple[RawResponse, bool]:
        """
        The response the client gets when the backend answers C{raw}, and
        whether the backend connection was closed after it.
        """
        client = self.world.request(rawRequest())
        pump = self.world.accept(cannedBackend(raw, close))
        return client.response(), pump.serverIO.disconnected

    def test_lengthAndChunkedNotReused(self) -> None:
        """
        A response with both I{Content-Length} and chunked
        I{Transfer-Encoding} is read as chunked, relayed without the length,
        and its connection is not reused.
        """
        response, closed = self.answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        self.assertEqual((response.body, response.complete), (b"hello", True))
        self.assertEqual(response.header(b"Content-Length"), [])
        self.assertTrue(closed)

    def test_http10ChunkedNotReused(self) -> None:
        """
        An HTTP/1.0 response with a I{Transfer-Encoding} is read as chunked
        but its connection is closed, even if it asks to be kept alive.
        """
        response, closed = self.answer(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        self.assertEqual(response.body, b"hello")
        self.assertTrue(closed)

    def test_otherTransferCodingIs502(self) -> None:
        """
        A transfer coding other than chunked (which rainbowd would have to
        undo) gets the client a 502 naming it, not a body it cannot decode.
        """
        for coding in [b"gzip, chunked", b"gzip", b"chunked, chunked"]:
            response, closed = self.answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
            )
            self.assertEqual(response.code, 502)
            self.assertIn(b"Transfer-Encoding other than chunked", response.body)
            self.assertIn(coding, response.body)
            self.assertTrue(closed)
        self.assertEqual(self.backend.inflight, 0)

    def test_badContentLengthIs502(self) -> None:
        """
        A I{Content-Length} that is not digits, or two that differ, get the
        client a 502.
        """
        for value in [b"+5", b"1_0", b"-1", b"0x5", b"five", b"5, 6", b"", b"5 5"]:
            response, closed = self.answer(
                b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello"
            )
            self.assertEqual(response.code, 502, value)
            self.assertIn(b"bad Content-Length", response.body)
            self.assertTrue(closed)

    def test_repeatedContentLengthRelayedOnce(self) -> None:
        """
        A I{Content-Length} repeated with the same value, in one header or
        two, is relayed once.
        """
        response, closed = self.answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n"
            b"\r\nhello"
        )
        self.assertEqual(response.header(b"Content-Length"), [b"5"])
        self.assertEqual(response.body, b"hello")
        self.assertFalse(closed)

    def test_chunkSizes(self) -> None:
        """
        Chunk sizes in upper- or lower-case hex, with extensions, are read.
        """
        response, closed = self.answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"A ; a=b\r\n0123456789\r\n0a\r\nabcdefghij\r\n00\r\n\r\n"
        )
        self.assertEqual(response.body, b"0123456789abcdefghij")
        self.assertFalse(closed)

    def test_badChunkSizeIs502(self) -> None:
        """
        A chunk size that is not plain hex, or too big to be meant, gets the
        client a 502 when none of the response has been relayed.
        """
        for size in [b"0x5", b"+5", b"5_0", b"-0", b"", b"z", b"1" * 17]:
            response, closed = self.answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Set-Cookie: a=b\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n"
            )
            self.assertEqual(response.code, 502, size)
            self.assertIn(b"bad chunk size", response.body)
            self.assertEqual(response.header(b"Set-Cookie"), [])
            self.assertTrue(closed)

    def test_headEndsAtFirstBlankLine(self) -> None:
        """
        A head with bare LF line endings ends at its first blank line, even
        when the body holds a CRLF blank line.
        """
        for head in [
            b"HTTP/1.1 200 OK\nContent-Length: 6\n\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 6\r\n\n",
        ]:
            response, closed = self.answer(head + b"ab\r\n\r\n", close=True)
            self.assertEqual((response.code, response.body), (200, b"ab\r\n\r\n"))

    def test_headByteByByte(self) -> None:
        """
        Heads arriving a byte at a time, after an interim response, with
        CRLF or bare LF line endings, are read whole.
        """
        for raw in [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\n"
            b"Content-Length: 2\r\n\r\nok",
            b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nX-A: 1\n"
            b"Content-Length: 2\n\nok",
        ]:
            handler = RecordingHandler()
            connection = BackendConnection(Pool(self.world.reactor, 20001))
            connection.makeConnection(StringTransport())
            connection.send(handler, b"GET / HTTP/1.1\r\n\r\n", None, 0, False)
            for i in range(len(raw)):
                connection.dataReceived(raw[i : i + 1])
            self.assertEqual(
                handler.events,
                [("head", 200, b"OK", [(b"X-A", b"1"), (b"Content-Length", b"2")])]
                + [("streaming",), ("data", b"o"), ("data", b"k"), ("done",)],
            )

    def test_foldedHeaderIs502(self) -> None:
        """
        A header folded over two lines (obs-fold) gets the client a 502, so
        that a continuation is never read as part of another header.
        """
        response, closed = self.answer(
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n 0\r\n\r\nhello"
        )
        self.assertEqual(response.code, 502)
        self.assertIn(b"folded header", response.body)
        self.assertEqual(response.header(b"X-A"), [])

    def test_controlCharactersIs502(self) -> None:
        """
        A bare CR or a NUL in a response head gets the client a 502, so none
        reaches the client.
        """
        for value in [b"a\rb", b"a\x00b"]:
            response, closed = self.answer(
                b"HTTP/1.1 200 OK\r\nX-A: " + value + b"\r\nContent-Length: 0\r\n\r\n"
            )
            self.assertEqual(response.code, 502, value)
            self.assertIn(b"bare CR or a NUL", response.body)
            self.assertEqual(response.header(b"X-A"), [])
        response, closed = self.answer(b"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(response.code, 502)

    def test_interimResponsesSkipped(self) -> None:
        """
        I{100 Continue} and I{103 Early Hints} before the final response are
        not relayed; the final one is.
        """
        response, closed = self.answer(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual((response.code, response.body), (200, b"ok"))
        self.assertEqual(response.header(b"Link"), [])

    def test_bodilessWithLength(self) -> None:
        """
        A 304, or the answer to HEAD, carrying a I{Content-Length} has no
        body, and its length is relayed.
        """
        response, closed = self.answer(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
        )
        self.assertEqual(response.header(b"Content-Length"), [b"10"])
        client = self.world.request(rawRequest(b"HEAD"))
        self.world.accept(
            cannedBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", False)
        )
        response = client.response()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"Content-Length"), [b"10"])

    def test_connectionCloseNotReused(self) -> None:
        """
        A response saying I{Connection: close}, or an HTTP/1.0 one without
        I{Connection: keep-alive}, closes its connection.
        """
        for head in [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        ]:
            response, closed = self.answer(head + b"ok")
            self.assertEqual(response.body, b"ok")
            self.assertTrue(closed)

    def test_longHeadIs502(self) -> None:
        """
        A response head that does not end within 64 KiB gets the client a
        502, rather than rainbowd buffering it without bound.
        """
        response, closed = self.answer(
            b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 70000
        )
        self.assertEqual(response.code, 502)
        self.assertIn(b"over 64 KiB", response.body)
        self.assertTrue(closed)

    def test_longCompleteHeadIs502(self) -> None:
        """
        A response head over 64 KiB gets the client a 502 even when it
        arrives whole in one read.
        """
        handler = RecordingHandler()
        connection = BackendConnection(Pool(self.world.reactor, 20001))
        connection.makeConnection(StringTransport())
        connection.send(handler, b"GET / HTTP/1.1\r\n\r\n", None, 0, False)
        connection.dataReceived(
            b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n"
        )
        self.assertEqual(handler.events, [("broken", "a response head over 64 KiB")])


class KernelBuffer:
    """
    A real socket standing for the kernel's side of a fake backend
    connection: the bytes the app has sent that the reactor has not read
    yet are unread in it too.
    """

    def __init__(self, testCase: SynchronousTestCase, pump: iosim.IOPump) -> None:
        self._pump = pump
        self.socket, self._peer = socket.socketpair()
        testCase.addCleanup(self.socket.close)
        testCase.addCleanup(self._peer.close)
        # iosim's transport has no socket; rainbowd.web.reads looks for one.
        pump.clientIO.socket = self.socket  # type: ignore[attr-defined]

    def arrive(self, data: bytes) -> None:
        """
        The app sends C{data}: it reaches the socket, not yet the reactor.
        """
        self._pump.serverIO.write(data)
        self._peer.sendall(data)


class RecordingMonitor:
    """
    The proxy's C{monitor}, recording what it is told.
    """

    def __init__(self) -> None:
        self.events: List[Tuple[str, ...]] = []

    def backendTimedOut(self, phase: str) -> None:
        self.events.append(("timeout", phase))

    def backendMisframed(self) -> None:
        self.events.append(("misframed",))


FAKE = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=someone-else\r\n"
    b"Content-Length: 6\r\n\r\nstolen"
)
"""
Bytes a misbehaving app sends late, outside any response's framing: a whole
response, which must never reach a client.
"""


class MisframingTests(SynchronousTestCase):
    """
    Bytes an app sends outside the framing of its responses never reach a
    client that asked something else: connections whose framing is doubtful
    are not reused, and once an app has been seen to misframe, none of its
    generation's connections are.
    """

    def setUp(self) -> None:
        self.monitor = RecordingMonitor()
        self.world = World(monitor=self.monitor)
        self.backend = FakeBackend(generation=4, port=20001)
        self.world.deployer.activate(self.backend)

    def first(self, raw: bytes, answer: bytes) -> iosim.IOPump:
        """
        Send C{raw} over a new backend connection, answered C{answer}, and
        check the client got it.

        @return: The pump of the backend connection.
        """
        client = self.world.request(raw)
        pump = self.world.accept(Factory.forProtocol(Recorder))
        self.kernel = KernelBuffer(self, pump)
        pump.serverIO.write(answer)
        self.world.flush()
        self.assertTrue(client.responses())
        return pump

    def assertOwnAnswer(self, client: FakeClient) -> None:
        """
        C{client}, having asked for C{/second}, gets its own answer, over a
        new backend connection, and nothing the app sent before.
        """
        self.world.flush()
        if self.world.attempts():
            self.world.accept(cannedBackend(ok(b"second"), False))
        response = client.response()
        self.assertEqual((response.code, response.body), (200, b"second"))
        self.assertEqual(response.header(b"Set-Cookie"), [])
        self.assertNotIn(b"stolen", client.data)

    def late(self, pump: iosim.IOPump) -> FakeClient:
        """
        A client asks for C{/second}; then the app sends L{FAKE} on the
        connection of C{pump}.
        """
        client = self.world.request(rawRequest(b"GET", b"/second"))
        pump.serverIO.write(FAKE)
        self.world.flush()
        return client

    def test_headBodyLater(self) -> None:
        """
        A body the app sends after its answer to a HEAD, in a later write,
        does not reach the next client.
        """
        pump = self.first(
            rawRequest(b"HEAD", b"/first"),
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(FAKE),),
        )
        self.assertOwnAnswer(self.late(pump))

    def test_noContentBodyLater(self) -> None:
        """
        A body the app sends after a 204, in a later write, does not reach
        the next client.
        """
        pump = self.first(
            rawRequest(b"DELETE", b"/first"), b"HTTP/1.1 204 No Content\r\n\r\n"
        )
        self.assertOwnAnswer(self.late(pump))

    def test_notModifiedBodyLater(self) -> None:
        """
        A body the app sends after a 304, in a later write, does not reach
        the next client.
        """
        pump = self.first(
            rawRequest(b"GET", b"/first"), b"HTTP/1.1 304 Not Modified\r\n\r\n"
        )
        self.assertOwnAnswer(self.late(pump))

    def test_interimThenBodyLater(self) -> None:
        """
        Bytes the app sends after a response that came after interim (1xx)
        ones, in a later write, do not reach the next client.
        """
        pump = self.first(
            rawRequest(b"GET", b"/first"),
            b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"first"),
        )
        self.assertOwnAnswer(self.late(pump))

    def test_longerBodyLater(self) -> None:
        """
        More body than its I{Content-Length}, in a later write that has
        reached rainbowd's socket but not been read when the next request
        comes, does not reach that request's client: the idle connection is
        looked at before it is reused.
        """
        self.first(rawRequest(b"GET", b"/first"), ok(b"first"))
        self.kernel.arrive(FAKE)
        client = self.world.connectClient()
        client.send(rawRequest(b"GET", b"/second"))
        client.pump.flush()
        self.assertOwnAnswer(client)
        self.assertEqual(self.monitor.events, [("misframed",)])

    def test_unsolicitedResponseLater(self) -> None:
        """
        Once the app has sent a response no request asked for, 50 ms after a
        complete one, none of its generation's connections is reused: the
        same bug on another of them cannot reach a client either.
        """
        a = self.world.request(rawRequest(b"GET", b"/a"))
        b = self.world.request(rawRequest(b"GET", b"/b"))
        pumpA = self.world.accept(Factory.forProtocol(Recorder))
        pumpB = self.world.accept(Factory.forProtocol(Recorder))
        pumpA.serverIO.write(ok(b"a"))
        pumpB.serverIO.write(ok(b"b"))
        self.world.flush()
        self.assertEqual([a.response().body, b.response().body], [b"a", b"b"])
        self.world.reactor.advance(0.05)
        pumpA.serverIO.write(FAKE)
        self.world.flush()
        self.assertTrue(pumpB.serverIO.disconnected)
        self.assertOwnAnswer(self.late(pumpB))
        # And so on for every later request of this generation.
        self.assertTrue(self.world.pumps[-1].serverIO.disconnected)

    def test_overlongBodyAfterReuseIs502(self) -> None:
        """
        The rest of a body longer than its I{Content-Length}, arriving once
        the next request is sent, is not relayed: what does not parse as a
        response gets the client a 502, and the generation's connections are
        no longer reused.
        """
        pump = self.first(rawRequest(b"GET", b"/first"), ok(b"first"))
        client = self.world.request(rawRequest(b"GET", b"/second"))
        pump.serverIO.write(b"AND MORE OF THE FIRST BODY\r\n\r\n")
        self.world.flush()
        self.assertEqual(client.response().code, 502)
        self.assertEqual(self.monitor.events, [("misframed",)])
        third = self.world.request(rawRequest(b"GET", b"/third"))
        self.world.accept(cannedBackend(ok(b"third"), False))
        self.assertEqual(third.response().body, b"third")
        self.assertTrue(self.world.pumps[-1].serverIO.disconnected)

    def test_extraBytesStopReuse(self) -> None:
        """
        Bytes past the end of a response, in the same read, close its
        connection and stop the reuse of its generation's others.
        """
        a = self.world.request(rawRequest(b"GET", b"/a"))
        b = self.world.request(rawRequest(b"GET", b"/b"))
        pumpA = self.world.accept(Factory.forProtocol(Recorder))
        pumpB = self.world.accept(Factory.forProtocol(Recorder))
        pumpA.serverIO.write(ok(b"a"))
        self.world.flush()
        pumpB.serverIO.write(ok(b"b") + FAKE)
        self.world.flush()
        self.assertEqual([a.response().body, b.response().body], [b"a", b"b"])
        self.assertTrue(pumpA.serverIO.disconnected)
        self.assertTrue(pumpB.serverIO.disconnected)

    def test_strayBytesOnTheIdleConnectionTakenFirst(self) -> None:
        """
        When the idle connection taken first holds stray bytes, the request
        goes over a new connection, not over another idle one that the
        misframing has just closed.
        """
        a = self.world.request(rawRequest(b"GET", b"/a"))
        b = self.world.request(rawRequest(b"GET", b"/b"))
        pumpA = self.world.accept(Factory.forProtocol(Recorder))
        pumpB = self.world.accept(Factory.forProtocol(Recorder))
        kernel = KernelBuffer(self, pumpB)
        pumpA.serverIO.write(ok(b"a"))
        self.world.flush()
        pumpB.serverIO.write(ok(b"b"))
        self.world.flush()
        self.assertEqual([a.response().body, b.response().body], [b"a", b"b"])
        kernel.arrive(FAKE)
        client = self.world.connectClient()
        client.send(rawRequest(b"POST", b"/second", body=b"x"))
        client.pump.flush()
        self.assertEqual(len(self.world.attempts()), 1)
        self.assertOwnAnswer(client)
        self.assertNotIn(b"/second", pumpA.serverIO.protocol.received)

    def test_extraBytesStopReuseBeforeTheNextRequest(self) -> None:
        """
        Bytes past the end of a response stop the reuse of the generation's
        connections before its client hears the response is over: the
        request the client pipelined behind it goes over a new connection,
        not an idle one of the app.
        """
        b = self.world.request(rawRequest(b"GET", b"/b"))
        pumpB = self.world.accept(Factory.forProtocol(Recorder))
        a = self.world.request(
            rawRequest(b"GET", b"/a") + rawRequest(b"GET", b"/second")
        )
        a.methods.append(b"GET")
        pumpA = self.world.accept(Factory.forProtocol(Recorder))
        pumpB.serverIO.write(ok(b"b"))
        self.world.flush()
        self.assertEqual(b.response().body, b"b")
        pumpA.serverIO.write(ok(b"a") + FAKE)
        self.world.flush()
        self.assertNotIn(b"/second", pumpB.serverIO.protocol.received)
        self.assertTrue(pumpB.serverIO.disconnected)
        self.assertEqual(len(self.world.attempts()), 1)
        self.world.accept(cannedBackend(ok(b"second"), False))
        self.assertEqual([r.body for r in a.responses()], [b"a", b"second"])

    def test_warnedOnce(self) -> None:
        """
        The first misframing of a generation is logged once, naming the
        generation, its port and the request the stray bytes followed, and
        told to the monitor once.
        """
        with capturedLogs() as events:
            pump = self.first(
                rawRequest(b"HEAD", b"/first?x=1"),
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
            )
            pump.serverIO.write(b"stolen")
            self.world.flush()
            for target in [b"/2", b"/3"]:
                client = self.world.request(rawRequest(b"GET", target))
                pump = self.world.accept(cannedBackend(ok(b"ok") + FAKE, False))
                self.assertEqual(client.response().body, b"ok")
        warnings = [formatEvent(e) for e in events if "frames" in formatEvent(e)]
        self.assertEqual(len(warnings), 1)
        self.assertIn(
            "Backend generation 4 on port 20001 sent 6 bytes no request asked "
            "for after answering 200 to HEAD /first?x=1.",
            warnings[0],
        )
        self.assertIn("no longer reuses its connections", warnings[0])
        self.assertEqual(self.monitor.events, [("misframed",)])

    def test_wellFramedReused(self) -> None:
        """
        Well-framed responses keep their connection in use.
        """
        pump = self.first(rawRequest(b"GET", b"/first"), ok(b"first"))
        client = self.world.request(rawRequest(b"GET", b"/second"))
        pump.serverIO.write(ok(b"second"))
        self.world.flush()
        self.assertEqual(self.world.attempts(), [])
        self.assertOwnAnswer(client)


class BackendTimeoutTests(SynchronousTestCase):
    """
    An app has C{backendTimeout} to send the whole head of its response once
    the request is sent, or the client gets a 504; then a body may go
    C{backendBodyTimeout} without a byte before it is cut.
    """

    def setUp(self) -> None:
        self.monitor = RecordingMonitor()
        self.world = World(
            backendTimeout=5.0, backendBodyTimeout=20.0, monitor=self.monitor
        )
        self.backend = FakeBackend(generation=4, port=20001)
        self.world.deployer.activate(self.backend)
        self.client = self.world.request(rawRequest(b"GET", b"/slow"))
        self.pump = self.world.accept(Factory.forProtocol(Recorder))

    def advance(self, seconds: float, step: float = 1.0, write: bytes = b"") -> None:
        """
        Let C{seconds} pass, C{step} at a time, the app writing C{write}
        at each step.
        """
        reactor = self.world.reactor
        end = reactor.seconds() + seconds
        while reactor.seconds() < end:
            reactor.advance(min(step, end - reactor.seconds()))
            if end - 1e-9 < reactor.seconds() < end:
                reactor.advance(end - reactor.seconds())
            if write:
                self.pump.serverIO.write(write)
            self.world.flush()

    def assertTimedOut(self) -> None:
        """
        The client got a 504 saying why, the backend connection is closed,
        and the timeout is counted.
        """
        response = self.client.response()
        self.assertEqual(response.code, 504)
        self.assertEqual(
            response.body,
            b"rainbowd: backend generation 4 on port 20001 did not answer "
            b"GET /slow within 5 s (backendTimeout)\n",
        )
        self.assertTrue(self.pump.serverIO.disconnected)
        self.assertEqual(self.monitor.events, [("timeout", "head")])
        self.assertEqual(self.backend.inflight, 0)

    def test_justUnder(self) -> None:
        """
        A head that is all there just before C{backendTimeout} is relayed.
        """
        self.advance(4.999)
        self.assertEqual(self.client.data, b"")
        self.pump.serverIO.write(ok(b"late"))
        self.world.flush()
        self.assertEqual(self.client.response().body, b"late")
        self.assertEqual(self.monitor.events, [])

    def test_justOver(self) -> None:
        """
        At C{backendTimeout}, the client gets a 504 naming the generation,
        the port, the request and the timeout.
        """
        self.advance(4.999)
        self.assertEqual(self.client.data, b"")
        self.advance(0.001)
        self.assertTimedOut()

    def test_accessLogged(self) -> None:
        """
        The 504 is logged, as any finished request, with its generation.
        """
        logged: List[Tuple[bytes, int, Optional[int]]] = []

        def log(request: Request) -> None:
            assert isinstance(request, ProxyRequest)
            logged.append((request.uri, request.code, request.backendGeneration))

        self.world.site.log = log
        self.advance(5.0)
        self.assertEqual(logged, [(b"/slow", 504, 4)])

    def test_reusedConnection(self) -> None:
        """
        The timeout holds on a reused connection too, from when its new
        request is sent.
        """
        self.pump.serverIO.write(ok(b"first"))
        self.world.flush()
        self.world.reactor.advance(0.5)
        self.client = self.world.request(rawRequest(b"GET", b"/slow"))
        self.assertEqual(self.world.attempts(), [])
        self.advance(4.999)
        self.assertEqual(self.client.responses(), [])
        self.advance(0.001)
        self.assertTimedOut()

    def test_interimFlood(self) -> None:
        """
        Interim responses do not hold the request past C{backendTimeout}.
        """
        self.advance(5.0, step=0.01, write=b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertTimedOut()

    def test_trickledHead(self) -> None:
        """
        A head trickled a byte at a time does not hold the request past
        C{backendTimeout}: it is a deadline for the whole head.
        """
        self.advance(5.0, step=0.5, write=b"X")
        self.assertTimedOut()

    def test_clientGone(self) -> None:
        """
        A timeout after the client left closes the backend connection and
        answers no one.
        """
        self.client.hangUp()
        self.world.flush()
        self.advance(5.0)
        self.assertEqual(self.backend.inflight, 0)
        self.assertTrue(self.pump.serverIO.disconnected)

    def test_streamingBody(self) -> None:
        """
        A body that keeps coming, however long, is relayed whole.
        """
        self.pump.serverIO.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.world.flush()
        self.advance(100.0, step=10.0, write=b"5\r\ntick\n\r\n")
        self.pump.serverIO.write(b"0\r\n\r\n")
        self.world.flush()
        response = self.client.response()
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"tick\n" * 10)
        self.assertEqual(self.monitor.events, [])

    def test_stalledBody(self) -> None:
        """
        A body that stops for C{backendBodyTimeout} is cut: the client sees
        its connection close on a truncated response, and the backend
        connection is closed.
        """
        self.pump.serverIO.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.")
        self.world.flush()
        self.advance(19.0)
        self.assertFalse(self.client.closed)
        self.advance(2.0)
        self.assertTrue(self.client.closed)
        response = self.client.response()
        self.assertEqual((response.body, response.complete), (b"half.", False))
        self.assertTrue(self.pump.serverIO.disconnected)
        self.assertEqual(self.monitor.events, [("timeout", "body")])

    def test_slowClientNotCut(self) -> None:
        """
        A body held up by a client that does not read is not cut.
        """
        self.pump.serverIO.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.")
        self.world.flush()
        connection = self.pump.client
        connection.pauseProducing()
        self.advance(60.0)
        connection.resumeProducing()
        self.pump.serverIO.write(b"rest.")
        self.world.flush()
        self.assertEqual(self.client.response().body, b"half.rest.")
        self.assertEqual(self.monitor.events, [])


class GatedTransport(SmallBufferTransport):
    """
    A L{SmallBufferTransport} whose buffer is emptied only C{gate} times,
    so that the test decides when the app takes more.
    """

    gate = 0

    def getOutBuffer(self) -> Optional[bytes]:
        if self.gate <= 0:
            return None
        self.gate -= 1
        return SmallBufferTransport.getOutBuffer(self)


class SlowUploadTests(SynchronousTestCase):
    """
    C{backendTimeout} counts from the last piece of the request body the app
    took, so an app reading a large upload slowly is not cut short.
    """

    def test_slowUploadNotTimedOut(self) -> None:
        """
        An upload the app takes over several times C{backendTimeout}, a
        piece a second, gets the app's answer; an app that then stops
        answering gets a 504 C{backendTimeout} later.
        """
        monitor = RecordingMonitor()
        world = World(backendTimeout=5.0, monitor=monitor)
        world.deployer.activate(FakeBackend(generation=4, port=20001))
        body = bytes(range(256)) * 8000
        client = world.request(rawRequest(b"PUT", b"/big", body=body))
        pump = world.accept(Factory.forProtocol(Recorder), GatedTransport)
        seconds = 0
        while len(pump.server.received) < len(body) and not client.data:
            world.reactor.advance(1.0)
            pump.clientIO.gate = 1
            world.flush()
            seconds += 1
        self.assertEqual(client.data, b"")
        self.assertGreater(seconds, 15)
        world.reactor.advance(4.9)
        world.flush()
        self.assertEqual(client.data, b"")
        world.reactor.advance(1.1)
        world.flush()
        self.assertEqual(client.response().code, 504)
        self.assertEqual(monitor.events, [("timeout", "head")])


class HeaderNamesTests(SynchronousTestCase):
    """
    A pool remembers the response header names it found valid, and checks
    the others each time.
    """

    def respond(self, pool: Pool, head: bytes) -> List[Tuple[object, ...]]:
        handler = RecordingHandler()
        connection = BackendConnection(pool)
        connection.makeConnection(StringTransport())
        connection.send(handler, b"GET / HTTP/1.1\r\n\r\n", None, 0, False)
        connection.dataReceived(head + b"\r\n\r\n")
        return handler.events

    def test_remembered(self) -> None:
        """
        The names of a response's headers are remembered with their lower
        case, and a remembered name on a line without a colon is still
        refused.
        """
        pool = Pool(MemoryReactorClock(), 20001)
        head = b"HTTP/1.1 200 OK\r\nX-Trace: 1\r\nContent-Length: 0"
        self.assertEqual(
            self.respond(pool, head),
            [("head", 200, b"OK", [(b"X-Trace", b"1"), (b"Content-Length", b"0")]), ("done",)],
        )
        self.assertEqual(
            pool.headerNames, {b"X-Trace": b"x-trace", b"Content-Length": b"content-length"}
        )
        [event] = self.respond(pool, b"HTTP/1.1 200 OK\r\nX-Trace")
        self.assertEqual(event[0], "broken")

    def test_bounded(self) -> None:
        """
        Past L{HEADER_NAMES_KEPT} names, no more are remembered, and the
        others are still checked: a bad one is refused.
        """
        pool = Pool(MemoryReactorClock(), 20001)
        names = b"".join(b"\r\nX-%d: 1" % (i,) for i in range(HEADER_NAMES_KEPT + 10))
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 0" + names
        self.assertEqual(self.respond(pool, head)[-1], ("done",))
        self.assertEqual(len(pool.headerNames), HEADER_NAMES_KEPT)
        [event] = self.respond(pool, b"HTTP/1.1 200 OK\r\nX(1): 2")
        self.assertEqual(event[0], "broken")

    def test_boundedInBytes(self) -> None:
        """
        A long header name is checked each time rather than remembered, so
        an app that sends many distinct names of nearly a whole head each
        cannot make a pool hold megabytes of them.
        """
        pool = Pool(MemoryReactorClock(), 20001)
        for i in range(HEADER_NAMES_KEPT + 10):
            name = b"X-%d-" % (i,) + b"a" * 60000
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + name + b": 1"
            self.assertEqual(self.respond(pool, head)[-1], ("done",))
        # Sizes rather than the names, whose difference would be megabytes.
        self.assertEqual(sorted(map(len, pool.headerNames)), [len(b"Content-Length")])
        [event] = self.respond(pool, b"HTTP/1.1 200 OK\r\n" + b"a" * 60000 + b"(: 2")
        self.assertEqual(event[0], "broken")
