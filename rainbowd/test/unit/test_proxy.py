# -*- test-case-name: rainbowd.test.unit.test_proxy -*-
"""
Tests for L{rainbowd.web.proxy}, in the world of L{rainbowd.test.inmemory}.
"""

from typing import Callable, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from zope.interface import implementer

from rainbowd.interfaces import IRequestLog
from rainbowd.test.inmemory import (
    BackendApp,
    FakeBackend,
    FakeClient,
    Recorder,
    World,
    backendSite,
    cannedBackend,
    later,
    rawRequest,
)
from rainbowd.web.proxy import ProxyRequest, ProxySite


class ResponseTests(SynchronousTestCase):
    """
    The backend's response reaches the client as the backend sent it, minus
    hop-by-hop headers.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def serve(
        self, respond: Callable[..., object], raw: bytes = rawRequest()
    ) -> Tuple[FakeClient, BackendApp, iosim.IOPump]:
        app = BackendApp(respond)
        client = self.world.request(raw)
        pump = self.world.accept(backendSite(self.world, app))
        return client, app, pump

    def test_statusAndReasonRelayed(self) -> None:
        """
        The backend's status code and reason phrase are relayed.
        """

        def respond(request):
            request.setResponseCode(418, b"Short And Stout")
            return b"tea"

        client, app, pump = self.serve(respond)
        response = client.response()
        self.assertEqual((response.code, response.phrase), (418, b"Short And Stout"))

    def test_repeatedResponseHeadersRelayed(self) -> None:
        """
        A response header the backend sends twice reaches the client twice.
        """

        def respond(request):
            request.responseHeaders.setRawHeaders(b"Set-Cookie", [b"a=1", b"b=2"])
            return b"cookies"

        client, app, pump = self.serve(respond)
        self.assertEqual(client.response().header(b"Set-Cookie"), [b"a=1", b"b=2"])

    def test_backendServerAndDateWin(self) -> None:
        """
        The backend's I{Server} and I{Date} replace twisted.web's own.
        """

        def respond(request):
            request.setHeader(b"Server", b"gunicorn")
            request.setHeader(b"Date", b"Tue, 01 Jan 2030 00:00:00 GMT")
            return b""

        client, app, pump = self.serve(respond)
        response = client.response()
        self.assertEqual(response.header(b"Server"), [b"gunicorn"])
        self.assertEqual(response.header(b"Date"), [b"Tue, 01 Jan 2030 00:00:00 GMT"])

    def test_hopByHopResponseHeadersStripped(self) -> None:
        """
        Hop-by-hop response headers are not relayed; the others are.
        """

        def respond(request):
            for name, value in [
                (b"Keep-Alive", b"timeout=5"),
                (b"Proxy-Authenticate", b"Basic"),
                (b"Trailer", b"X-Checksum"),
                (b"Upgrade", b"h2c"),
                (b"X-End-To-End", b"kept"),
            ]:
                request.setHeader(name, value)
            return b"body"

        client, app, pump = self.serve(respond)
        response = client.response()
        for name in [b"keep-alive", b"proxy-authenticate", b"trailer", b"upgrade"]:
            self.assertNotIn(name, response.names())
        self.assertEqual(response.header(b"X-End-To-End"), [b"kept"])

    def test_contentLengthRelayedAndNoTypeInvented(self) -> None:
        """
        A response of known length is relayed with that I{Content-Length},
        unchunked, and without a I{Content-Type} the backend did not send.
        """

        def respond(request):
            request.defaultContentType = None
            return b"12345"

        client, app, pump = self.serve(respond)
        response = client.response()
        self.assertEqual(response.header(b"Content-Length"), [b"5"])
        self.assertEqual(response.header(b"Transfer-Encoding"), [])
        self.assertEqual(response.header(b"Content-Type"), [])
        self.assertEqual(response.body, b"12345")

    def test_bodyStreamedAsItArrives(self) -> None:
        """
        A response body of unknown length is relayed chunked, each piece as
        soon as the backend sends it.
        """
        client, app, pump = self.serve(later)
        [backendRequest] = app.live
        backendRequest.write(b"first ")
        self.world.flush()
        response = client.response()
        self.assertEqual((response.body, response.complete), (b"first ", False))
        backendRequest.write(b"second")
        backendRequest.finish()
        self.world.flush()
        response = client.response()
        self.assertEqual((response.body, response.complete), (b"first second", True))
        self.assertEqual(response.header(b"Transfer-Encoding"), [b"chunked"])

    def test_bodyUntilCloseRelayed(self) -> None:
        """
        A response delimited by the backend closing its connection is relayed
        complete.
        """
        client = self.world.request(rawRequest())
        self.world.accept(cannedBackend(b"HTTP/1.1 200 OK\r\n\r\nall of it"))
        response = client.response()
        self.assertEqual((response.body, response.complete), (b"all of it", True))
        self.assertEqual(self.backend.inflight, 0)

    def test_bodyUntilResetTruncated(self) -> None:
        """
        A response delimited by the backend's connection closing is not
        relayed as complete if the connection was reset rather than closed:
        the client connection is dropped, leaving it visibly truncated.
        """

        class Reset(iosim.FakeTransport):
            # iosim gives it the type of its default, ConnectionDone; it
            # is read as any reason a connection is lost for.
            disconnectReason = ConnectionLost(  # type: ignore[assignment]
                "Connection reset by peer"
            )

        client = self.world.request(rawRequest())
        self.world.accept(
            cannedBackend(b"HTTP/1.1 200 OK\r\n\r\npart of it"), transportType=Reset
        )
        response = client.response()
        self.assertEqual((response.body, response.complete), (b"part of it", False))
        self.assertTrue(client.closed)
        self.assertEqual(self.backend.inflight, 0)

    def test_headRelayed(self) -> None:
        """
        A HEAD response is relayed with the backend's I{Content-Length} and
        no body, leaving the client connection usable.
        """
        client, app, pump = self.serve(
            lambda request: b"a body of 20 bytes..", rawRequest(b"HEAD")
        )
        self.world.flush()
        response = client.response()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"Content-Length"), [b"20"])
        self.assertEqual(client.data.endswith(b"\r\n\r\n"), True)
        self.assertEqual(self.backend.inflight, 0)

    def test_bodilessStatusesRelayed(self) -> None:
        """
        204 and 304 responses are relayed without a body, one after the other
        on the same client connection (each over a backend connection of its
        own).
        """
        codes = [204, 304]

        def respond(request):
            request.setResponseCode(codes.pop(0))
            return b""

        app = BackendApp(respond)
        client = self.world.request(rawRequest(b"GET", b"/first"))
        self.world.accept(backendSite(self.world, app))
        client.send(rawRequest(b"GET", b"/second"))
        self.world.flush()
        self.world.accept(backendSite(self.world, app))
        self.assertEqual([r.code for r in client.responses()], [204, 304])
        self.assertEqual(client.data.count(b"HTTP/1.1"), 2)
        self.assertEqual(client.data.endswith(b"\r\n\r\n"), True)
        self.assertEqual((self.backend.started, self.backend.finished), (2, 2))

    def test_backendConnectionReused(self) -> None:
        """
        Consecutive requests to one backend share one kept-alive connection.
        """
        app = BackendApp()
        site = backendSite(self.world, app)
        self.world.request(rawRequest())
        self.world.accept(site)
        second = self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual([len(app.received), second.response().code], [2, 200])


class SwapTests(SynchronousTestCase):
    """
    Each request goes to the backend active when it arrives, and stays there.
    """

    def setUp(self) -> None:
        self.world = World()
        self.old = FakeBackend(generation=1, port=20001)
        self.new = FakeBackend(generation=2, port=20002)

    def test_newRequestsGoToNewBackend(self) -> None:
        """
        Once another backend is active, new requests go to its port.
        """
        self.world.deployer.activate(self.old)
        self.world.request(rawRequest())
        self.world.deployer.activate(self.new)
        self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [20001, 20002])

    def test_inFlightStaysOnOldBackend(self) -> None:
        """
        A request forwarded before a swap is answered by the old backend,
        which counts it in flight until its response is relayed.
        """
        self.world.deployer.activate(self.old)
        oldApp = BackendApp(later)
        slow = self.world.request(rawRequest(target=b"/slow"))
        self.world.accept(backendSite(self.world, oldApp))

        self.world.deployer.activate(self.new)
        newApp = BackendApp()
        fast = self.world.request(rawRequest(target=b"/fast"))
        self.world.accept(backendSite(self.world, newApp))
        self.assertEqual(fast.response().body, b"hello from the backend")
        self.assertEqual((self.old.inflight, self.new.inflight), (1, 0))

        [oldRequest] = oldApp.live
        oldRequest.write(b"from the old one")
        oldRequest.finish()
        self.world.flush()
        self.assertEqual(slow.response().body, b"from the old one")
        self.assertEqual([r.uri for r in newApp.received], [b"/fast"])
        self.assertEqual((self.old.started, self.old.finished), (1, 1))
        self.assertEqual((self.new.started, self.new.finished), (1, 1))

    def test_inflightUntilBodyRelayed(self) -> None:
        """
        The backend counts a request in flight from the moment it is sent
        until the last byte of its response is relayed.
        """
        self.world.deployer.activate(self.old)
        app = BackendApp(later)
        self.world.request(rawRequest())
        self.assertEqual(self.old.inflight, 1)
        self.world.accept(backendSite(self.world, app))
        [backendRequest] = app.live
        backendRequest.write(b"part")
        self.world.flush()
        self.assertEqual(self.old.inflight, 1)
        backendRequest.finish()
        self.world.flush()
        self.assertEqual((self.old.started, self.old.finished), (1, 1))


class QueueTests(SynchronousTestCase):
    """
    Requests arriving while no backend is active wait for one, for a while.
    """

    def setUp(self) -> None:
        self.world = World(queueTimeout=30.0)
        self.backend = FakeBackend(generation=1, port=20001)

    def test_waitsForBackend(self) -> None:
        """
        With no active backend the request waits, and is forwarded to the
        next backend to become active.
        """
        client = self.world.request(rawRequest())
        self.world.reactor.advance(29)
        self.assertEqual((client.data, self.world.attempts()), (b"", []))
        self.world.deployer.activate(self.backend)
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)

    def test_503AfterQueueTimeout(self) -> None:
        """
        A request still waiting for a backend after C{queueTimeout} seconds is
        answered 503 in plain text saying why, and stops waiting.
        """
        client = self.world.request(rawRequest())
        self.world.reactor.advance(29.9)
        self.world.flush()
        self.assertEqual(client.data, b"")
        self.world.reactor.advance(0.1)
        self.world.flush()
        response = client.response()
        self.assertEqual(response.code, 503)
        self.assertEqual(
            response.header(b"Content-Type"), [b"text/plain; charset=utf-8"]
        )
        self.assertEqual(
            response.body,
            b"rainbowd: no backend became ready within 30 s; see rainbowd's log\n",
        )
        self.assertEqual(self.world.deployer.waiters, [])


    def test_503SaysWhyNotRoutable(self) -> None:
        """
        The 503 of a request that waited in vain carries the deployer's
        reason why no backend is routable, such as a stopped generation and
        its failed replacement.
        """
        self.world.deployer.unroutable = (
            "generation 3, the active one, is stopped; the replacement, "
            "generation 4, failed: it exited with code 1"
        )
        client = self.world.request(rawRequest())
        self.world.reactor.advance(30)
        self.world.flush()
        response = client.response()
        self.assertEqual(response.code, 503)
        self.assertEqual(
            response.body,
            b"rainbowd: no backend became ready within 30 s: generation 3, the "
            b"active one, is stopped; the replacement, generation 4, failed: it "
            b"exited with code 1; see rainbowd's log\n",
        )

    def test_returnsToSameBackend(self) -> None:
        """
        Requests that arrive while the active backend is out of rotation
        wait, and go to it once it is routable again.
        """
        self.world.deployer.activate(self.backend)
        self.world.deployer.routable = None
        client = self.world.request(rawRequest())
        self.world.reactor.advance(5)
        self.assertEqual(self.world.attempts(), [])
        self.world.deployer.activate(self.backend)
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)


class BackendFailureTests(SynchronousTestCase):
    """
    A backend that cannot take a request gets it retried elsewhere if it
    never reached the app, and a 502 otherwise.
    """

    def setUp(self) -> None:
        self.world = World(queueTimeout=30.0)
        self.dead = FakeBackend(generation=3, port=20001)
        self.replacement = FakeBackend(generation=4, port=20002)
        self.world.deployer.activate(self.dead)

    def test_refusedAfterDeadlineIs502(self) -> None:
        """
        A refused connection after the deadline is answered 502, naming the
        backend's generation and port and the error.
        """
        client = self.world.request(rawRequest())
        self.world.reactor.advance(30)
        self.world.refuse()
        response = client.response()
        self.assertEqual(response.code, 502)
        self.assertEqual(
            response.body,
            b"rainbowd: backend generation 3 on port 20001 failed: "
            b"Connection was refused by other side.\n",
        )
        self.assertEqual((self.dead.started, self.dead.finished), (1, 1))

    def test_refusedRetriedOnNewActiveBackend(self) -> None:
        """
        A request refused by a backend that is no longer the active one goes
        to the active one, moving its in-flight count there.
        """
        client = self.world.request(rawRequest())
        self.world.deployer.activate(self.replacement)
        self.world.refuse()
        self.assertEqual(self.world.attempts(), [20002])
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)
        self.assertEqual((self.dead.started, self.dead.finished), (1, 1))
        self.assertEqual((self.replacement.started, self.replacement.finished), (1, 1))

    def test_refusedWaitsForReplacement(self) -> None:
        """
        A request refused while no backend is active waits for the next one.
        """
        client = self.world.request(rawRequest())
        self.world.deployer.activate(None)
        self.world.refuse()
        self.assertEqual(self.world.attempts(), [])
        self.world.deployer.activate(self.replacement)
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)
        self.assertEqual(self.dead.inflight, 0)

    def test_refusedThenNoneReadyIs503(self) -> None:
        """
        A request refused by the last backend, and for which no other became
        ready before the deadline, is answered 503 mentioning the refusal.
        """
        client = self.world.request(rawRequest())
        self.world.deployer.activate(None)
        self.world.refuse()
        self.world.reactor.advance(30)
        self.world.flush()
        response = client.response()
        self.assertEqual(response.code, 503)
        self.assertEqual(
            response.body,
            b"rainbowd: no backend became ready within 30 s (generation 3 on "
            b"port 20001 refused the connection); see rainbowd's log\n",
        )
        self.assertEqual(self.world.deployer.waiters, [])

    def test_refusedRetriedOnSameBackendAfterDelay(self) -> None:
        """
        A request refused by the backend that is still active is sent to it
        again a tenth of a second later.
        """
        client = self.world.request(rawRequest())
        self.world.refuse()
        self.assertEqual(self.world.attempts(), [])
        self.world.reactor.advance(0.1)
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)
        self.assertEqual((self.dead.started, self.dead.finished), (2, 2))

    def test_refusedUntilDeadlineIs502(self) -> None:
        """
        A backend that keeps refusing is retried until the deadline, then the
        request is answered 502.
        """
        client = self.world.request(rawRequest())
        attempts = 0
        while not client.data:
            self.world.refuse()
            attempts += 1
            self.world.reactor.advance(0.1)
        self.assertEqual(client.response().code, 502)
        self.assertTrue(250 < attempts <= 301, attempts)
        self.assertEqual(self.dead.inflight, 0)

    def test_backendDiesBeforeResponding(self) -> None:
        """
        A backend that closes the connection without answering gets the
        request a 502 saying so, and no retry.
        """
        client = self.world.request(rawRequest())
        self.world.accept(cannedBackend(b""))
        response = client.response()
        self.assertEqual(response.code, 502)
        self.assertIn(
            b"rainbowd: backend generation 3 on port 20001 closed the "
            b"connection without answering\n",
            response.body,
        )
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual((self.dead.started, self.dead.finished), (1, 1))

    def test_backendDiesMidBody(self) -> None:
        """
        A backend dying halfway through a body makes the proxy drop the client
        connection, leaving the response visibly truncated.
        """
        client = self.world.request(rawRequest())
        self.world.accept(
            cannedBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.")
        )
        response = client.response()
        self.assertEqual((response.body, response.complete), (b"half.", False))
        self.assertTrue(client.closed)
        self.assertEqual((self.dead.started, self.dead.finished), (1, 1))


class ClientGoneTests(SynchronousTestCase):
    """
    A client hanging up stops the work done on its behalf, without errors.
    """

    def setUp(self) -> None:
        self.world = World(queueTimeout=30.0)
        self.backend = FakeBackend(generation=1, port=20001)

    def test_goneWhileQueued(self) -> None:
        """
        A client leaving while waiting for a backend stops the wait.
        """
        client = self.world.request(rawRequest())
        client.hangUp()
        self.world.flush()
        self.assertEqual(self.world.deployer.waiters, [])
        self.world.deployer.activate(self.backend)
        self.world.reactor.advance(30)
        self.assertEqual((self.world.attempts(), self.backend.started), ([], 0))

    def test_goneWhileConnecting(self) -> None:
        """
        A client leaving while the backend connection is being made stops it,
        and the backend counts the request over.
        """
        self.world.deployer.activate(self.backend)
        client = self.world.request(rawRequest())
        client.hangUp()
        self.world.flush()
        self.assertTrue(self.world.reactor.connectors[0].stoppedConnecting)
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))

    def test_goneWhileWaitingForResponse(self) -> None:
        """
        A client leaving before the response arrives closes the backend
        connection, and the backend counts the request over.
        """
        self.world.deployer.activate(self.backend)
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, app))
        backendGone = app.live[0].notifyFinish()
        client.hangUp()
        self.world.flush()
        self.failureResultOf(backendGone)
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))

    def test_goneWhileStreaming(self) -> None:
        """
        A client leaving halfway through the response body closes the backend
        connection, and the backend counts the request over.
        """
        self.world.deployer.activate(self.backend)
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        pump = self.world.accept(backendSite(self.world, app))
        [backendRequest] = app.live
        backendGone = backendRequest.notifyFinish()
        backendRequest.write(b"some of it")
        self.world.flush()
        client.hangUp()
        self.world.flush()
        self.failureResultOf(backendGone)
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))

    def test_goneDuringRetryDelay(self) -> None:
        """
        A client leaving while a refused request waits to be retried cancels
        the retry.
        """
        self.world.deployer.activate(self.backend)
        client = self.world.request(rawRequest())
        self.world.refuse()
        client.hangUp()
        self.world.flush()
        self.world.reactor.advance(1)
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))


class ProxySiteTests(SynchronousTestCase):
    """
    L{ProxySite} serves quietly.
    """

    def test_noAccessLog(self) -> None:
        """
        L{ProxySite} writes nothing to its access log, even with a log path.
        """
        world = World()
        path = self.mktemp()
        world.site = ProxySite(world.proxy, logPath=path, reactor=world.reactor)
        world.site.doStart()
        client = world.request(rawRequest())
        world.reactor.advance(30)
        world.flush()
        self.assertEqual(client.response().code, 503)
        world.site.doStop()
        with open(path) as log:
            self.assertEqual(log.read(), "")

    def test_completedRequestLeavesNothing(self) -> None:
        """
        A request whose response completes asks for no L{notifyFinish}
        Deferred and lets go of its forwarding.
        """
        world = World()
        world.site.requestLog = RecordingLog()
        requests = []
        notified = []

        class Recorded(ProxyRequest):
            def __init__(self, *args: object, **kwargs: object) -> None:
                ProxyRequest.__init__(self, *args, **kwargs)
                requests.append(self)

            def notifyFinish(self) -> Deferred[None]:
                notified.append(self)
                return ProxyRequest.notifyFinish(self)

        world.site.requestFactory = Recorded
        world.deployer.activate(FakeBackend(generation=1, port=20001))
        client = world.request(rawRequest())
        world.accept(backendSite(world, BackendApp()))
        self.assertEqual(client.response().code, 200)
        [request] = requests
        self.assertEqual((notified, request.forwarding), ([], None))
        self.assertEqual(world.site.requestLog.ended, [("finished", 200)])


@implementer(IRequestLog)
@attrs.define
class RecordingLog:
    """
    A C{requestLog} that records how each request ended, and its status.
    """

    ended: List[Tuple[str, int]] = attrs.Factory(list)

    def finished(self, request: ProxyRequest, seconds: float) -> None:
        self.ended.append(("finished", request.code))

    def unfinished(self, request: ProxyRequest, seconds: float) -> None:
        self.ended.append(("unfinished", request.code))


class AccessLogTests(SynchronousTestCase):
    """
    L{ProxySite.log} is called once per finished request, which knows the
    generation that served it.
    """

    def test_oncePerRequest(self) -> None:
        """
        Each request is logged once, when finished, with its backend's
        generation; one that never reached a backend has none.
        """
        world = World(queueTimeout=1.0)
        logged: List[Tuple[bytes, int, Optional[int]]] = []

        def log(request: Request) -> None:
            assert isinstance(request, ProxyRequest)
            logged.append((request.uri, request.code, request.backendGeneration))

        world.site.log = log
        waiting = world.request(rawRequest(target=b"/early"))
        world.reactor.advance(1.0)
        world.flush()
        self.assertEqual(waiting.response().code, 503)
        world.deployer.activate(FakeBackend(generation=7, port=20001))
        world.request(rawRequest(target=b"/a"))
        world.accept(backendSite(world, BackendApp()))
        world.request(rawRequest(target=b"/b"))
        self.assertEqual(
            logged, [(b"/early", 503, None), (b"/a", 200, 7), (b"/b", 200, 7)]
        )


class TallyTests(SynchronousTestCase):
    """
    The proxy counts each generation's responses and 5xx in its
    C{tally}, those rainbowd itself answered for it included.
    """

    def setUp(self) -> None:
        self.world = World(backendTimeout=5.0)
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def answered(self, raw: bytes) -> int:
        client = self.world.request(rawRequest())
        self.world.accept(cannedBackend(raw))
        return client.response().code

    def test_counted(self) -> None:
        """
        A 2xx or 4xx counts as a response, a 5xx as a response and an
        error.
        """
        self.assertEqual(self.answered(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 200)
        self.assertEqual(self.answered(b"HTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n"), 404)
        self.assertEqual(self.answered(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"), 500)
        tally = self.backend.tally
        self.assertEqual((tally.responses, tally.errors), (3, 1))

    def test_badGatewayCounted(self) -> None:
        """
        A 502 rainbowd gives because the app answered no HTTP counts as an
        error of that generation.
        """
        self.assertEqual(self.answered(b"SSH-2.0-OpenSSH\r\n\r\n"), 502)
        tally = self.backend.tally
        self.assertEqual((tally.responses, tally.errors), (1, 1))

    def test_brokenAfterHeadCountedOnce(self) -> None:
        """
        A response cut after its head was relayed counts once, as the
        status the client got.
        """
        code = self.answered(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        self.assertEqual(code, 200)
        tally = self.backend.tally
        self.assertEqual((tally.responses, tally.errors), (1, 0))

    def test_timeoutCounted(self) -> None:
        """
        A 504 for an app too slow to answer counts as an error.
        """
        client = self.world.request(rawRequest())
        self.world.accept(Factory.forProtocol(Recorder))
        self.world.reactor.advance(5.0)
        self.world.flush()
        self.assertEqual(client.response().code, 504)
        tally = self.backend.tally
        self.assertEqual((tally.responses, tally.errors), (1, 1))
