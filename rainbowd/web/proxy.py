# -*- test-case-name: rainbowd.test.unit.test_proxy -*-
"""
The reverse proxy in front of the app.

Every request that reaches rainbowd's public port is forwarded to whichever
backend the deployer says is routable I{at the moment the request arrives};
swapping the deployer's routable backend is therefore all a redeploy has to
do to move traffic, and requests already forwarded finish where they started.

The client side is twisted.web: a L{ProxySite} of lean L{ProxyRequest}s,
under the limits of L{rainbowd.web.requestlimits}, serving a L{ReverseProxy},
which gives each request a L{_Forwarding}.  The backend side is
L{rainbowd.web.backendclient}: a L{Pool} of persistent connections per backend,
which stream a response to the client as it comes, paused while the client
is slow; an upgrade (a WebSocket, say) becomes a L{rainbowd.web.tunnel.Tunnel}
between the two connections.
"""

from typing import Any, Dict, List, Optional, Tuple, cast

from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from rainbowd.interfaces import IRequestHandler, ISlotWaiter
from rainbowd.web.backendclient import (
    BODY_TIMEOUT,
    TIMEOUT,
    BackendConnection,
    BackendTimeout,
    Pool,
)
from rainbowd.web.requesthead import (
    Unforwardable,
    contentLength,
    isUpgrade,
    originForm,
    requestHead,
)
from rainbowd.web.requestlimits import LimitedRequest, LimitedSite
from rainbowd.web.traffic import RETRY_AFTER, Mode, Traffic, TrafficStopped
from rainbowd.web.tunnel import Tunnel

_log = Logger()

RETRY_DELAY = 0.1
"""
Seconds to wait before trying the routable backend again after it refused a
connection while still being the routable one.
"""

_IDEMPOTENT_METHODS = frozenset(
    [b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"]
)
"""
Methods sent again on a fresh connection when a kept-alive one turns out to
have been closed by the app (RFC 9110 section 9.2.2).
"""

_SERVING = Mode.SERVING


class ReverseProxy(Resource):
    """
    The resource served on rainbowd's public port: it forwards every request to
    the deployer's routable backend.

    It plays the role of L{twisted.web.proxy.ReverseProxyResource} (a resource
    whose target can be swapped) without that class's faults: it is a leaf, so
    C{request.uri}, path and query string, is forwarded as is, and it keeps
    one pool of persistent HTTP/1.1 connections per backend.

    What is forwarded:

      - the method, the request target and the body;
      - all end-to-end headers, repeated ones included, but those with an
        underscore in their name (WSGI and CGI read C{X_Forwarded_For} as
        C{X-Forwarded-For}, so a client could pass one off as the other);
        and the client's I{Host} (the host of the request target, if that
        is an absolute URI);
      - I{X-Forwarded-For} with the client's IP appended to whatever the
        client (normally nginx) sent;
      - I{X-Forwarded-Proto} and I{X-Forwarded-Host} computed from this
        connection, I{only} when the client did not send them: rainbowd
        usually sits behind nginx, which sets them from the connection the
        browser made, and knows better than rainbowd does.

    Hop-by-hop headers (and any header the I{Connection} header names) are
    dropped in both directions, except for an upgrade (I{Connection:
    Upgrade} with I{Upgrade}), which goes over a connection of its own and,
    if the backend answers 101, becomes a tunnel between client and backend.

    It is served by a L{ProxySite}, whose L{ProxyRequest}s tell their
    forwarding when the client hangs up.

    The deployer provides L{rainbowd.interfaces.IRoutingDeployer}: a
    C{routable} backend, read once per request (which is what makes a swap
    atomic), C{whenRoutable()} and C{whyNotRoutable()}.

    While its L{rainbowd.web.traffic.Traffic} is not serving, requests not yet
    sent to a backend are held (paused) or answered with the maintenance
    page, whatever the deployer says.

    A backend provides L{rainbowd.interfaces.IRoutableBackend}.

    @ivar _pools: The connection pool of each backend seen, keyed by
        C{(generation, port)} rather than by the backend itself so that
        backends need not be hashable; its idle connections are closed when
        the backend starts draining, and it is forgotten when the backend's
        C{whenStopped()} fires.
    """

    isLeaf = True

    def __init__(
        self,
        deployer: Any,
        reactor: Any,
        queueTimeout: float,
        backendConnections: int = 0,
        backendMaxRequests: int = 0,
        backendTimeout: float = TIMEOUT,
        backendBodyTimeout: float = BODY_TIMEOUT,
        monitor: Any = None,
        traffic: Optional[Traffic] = None,
    ) -> None:
        """
        @param deployer: Where to find the routable backend; see the class
            docstring.
        @param reactor: Provides C{IReactorTCP} and C{IReactorTime}.
        @param queueTimeout: How many seconds a request may wait, from its
            arrival, for a backend to become routable (and, when the backend
            refuses connections, for a replacement, or when it carries
            C{backendConnections} requests already, for one of them to
            finish) before it is answered with 503.
        @param backendConnections: The most requests carried at once to one
            backend, each on a connection of its own; 0 for no cap.
        @param backendMaxRequests: A connection to a backend is closed
            after this many responses; 0 for no limit.
        @param backendTimeout: How many seconds a backend has to send the
            whole head of its response once the request is sent, before the
            request is answered with 504.
        @param backendBodyTimeout: How many seconds a response body may go
            without a byte before it is cut.
        @param monitor: If not L{None}, told C{backendTimedOut(phase)}
            (C{"head"} or C{"body"}) when a backend is too slow, and
            C{backendMisframed()} when a backend is first found to send
            bytes outside its responses.
        @param traffic: Whether new requests go to the app; by default,
            a L{Traffic} of its own, which always does.
        """
        Resource.__init__(self)
        self._deployer = deployer
        self._reactor = reactor
        self._queueTimeout = queueTimeout
        self._backendConnections = backendConnections
        self._backendMaxRequests = backendMaxRequests
        self._backendTimeout = backendTimeout
        self._backendBodyTimeout = backendBodyTimeout
        self._monitor = monitor
        self._traffic = Traffic(reactor, queueTimeout) if traffic is None else traffic
        self._pools: Dict[Tuple[int, int], Pool] = {}

    def render(self, request: "ProxyRequest") -> object:
        """
        Forward C{request}, whatever its method, to the routable backend.
        """
        request.defaultContentType = None
        target = originForm(request.uri)
        if target is None:
            _respondInPlainText(
                request,
                400,
                "rainbowd: cannot forward a request for {!r}".format(
                    request.uri.decode("latin-1")
                ),
            )
            return NOT_DONE_YET
        bodyLength = contentLength(request)
        upgrade = isUpgrade(request)
        try:
            head = requestHead(request, target, bodyLength, upgrade)
        except Unforwardable as e:
            _respondInPlainText(request, 400, "rainbowd: cannot forward " + str(e))
            return NOT_DONE_YET
        forwarding = _Forwarding(
            self,
            request,
            head,
            bodyLength,
            self._reactor.seconds() + self._queueTimeout,
            upgrade,
        )
        request.forwarding = forwarding
        forwarding.route()
        return NOT_DONE_YET

    def _poolFor(self, backend: Any) -> Pool:
        """
        Find or make the pool of connections to C{backend}.
        """
        key = (backend.generation, backend.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(
                self._reactor,
                backend.port,
                maxConnections=self._backendConnections,
                maxRequests=self._backendMaxRequests,
                generation=backend.generation,
                timeout=self._backendTimeout,
                bodyTimeout=self._backendBodyTimeout,
                monitor=self._monitor,
            )
            backend.whenDraining().addCallback(lambda _: pool.drain())
            backend.whenStopped().addBoth(self._backendStopped, key, pool)
        return pool

    def _backendStopped(
        self, result: object, key: Tuple[int, int], pool: Pool
    ) -> None:
        """
        A backend's process is gone: forget its pool and close its idle
        connections.
        """
        del self._pools[key]
        pool.drain()


class ProxyRequest(LimitedRequest):
    """
    A request on rainbowd's public port: twisted.web's L{Request}, with a
    body of limited size, without the work a proxy has no use for.

    L{Request.process} sets I{Server} and I{Date} headers (which the
    backend's own replace), splits the path to traverse resources (the
    proxy is the only one, a leaf) and asks for an encoder; this one goes
    straight to the site's resource.

    A client that hangs up before its response is finished is told to the
    forwarding and to the site's C{requestLog} from L{connectionLost}, which
    twisted.web calls only for requests not yet finished: cheaper than two
    L{notifyFinish} Deferreds made for every request.

    @ivar receivedAt: When the request was received, in the reactor's
        seconds, once it is processed with a C{requestLog}.
    @ivar forwarding: The L{_Forwarding} carrying the request, once the
        proxy has made it.
    @ivar backendGeneration: The generation of the backend that served the
        request, once one has; for an access log.
    """

    receivedAt: Optional[float] = None
    forwarding: Optional["_Forwarding"] = None
    backendGeneration: Optional[int] = None
    site: Optional["ProxySite"]

    def process(self) -> None:
        # A ProxySite's channel, which makes these requests.
        self.site = site = cast("ProxySite", self.channel.site)
        if site.requestLog is not None:
            self.receivedAt = site.reactor.seconds()
        if self.path == b"*":
            Request.process(self)
            return
        self.prepath = []
        self.postpath = []
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def finish(self) -> None:
        # The forwarding is done with the request: no cycle to collect.
        self.forwarding = None
        Request.finish(self)

    def connectionLost(self, reason: Failure) -> None:
        Request.connectionLost(self, reason)
        if self.receivedAt is not None:
            # Set with receivedAt, by process.
            assert self.site is not None
            self.site.unfinished(self)
        forwarding, self.forwarding = self.forwarding, None
        if forwarding is not None:
            forwarding.hungUp()


class ProxySite(LimitedSite):
    """
    The L{Site} serving a L{ReverseProxy}: quiet, with lean requests under
    the limits of L{rainbowd.web.requestlimits}, and telling C{requestLog}
    (metrics, the access log) about every request, however it ends.

    @ivar requestLog: a L{rainbowd.interfaces.IRequestLog}, told of every
        request once its response is complete (C{finished}) or its
        connection closed before that (C{unfinished}); L{None} for neither.
    """

    noisy = False
    requestFactory = ProxyRequest
    requestLog: Any = None
    what = "public port"
    bodyLimitNote = "rainbowd takes (maxRequestBody)"

    def errorBody(self, message: str) -> Tuple[bytes, bytes]:
        return b"text/plain; charset=utf-8", f"rainbowd: {message}\n".encode("utf-8")

    # This site's requests are ProxyRequests.
    def log(self, request: ProxyRequest) -> None:  # type: ignore[override]
        receivedAt = request.receivedAt
        if receivedAt is not None:
            self.requestLog.finished(request, self.reactor.seconds() - receivedAt)

    def unfinished(self, request: ProxyRequest) -> None:
        """
        Tell C{requestLog} that the connection of C{request}, received while
        there was one, closed before its response was complete.
        """
        receivedAt = request.receivedAt
        assert receivedAt is not None, "a request received with no requestLog"
        self.requestLog.unfinished(request, self.reactor.seconds() - receivedAt)


@implementer(IRequestHandler, ISlotWaiter)
class _Forwarding:
    """
    One client request on its way to a backend and back.

    @ivar backend: The backend counting this request as in flight (it has
        had C{requestStarted()} and is owed one C{requestFinished()}), if
        any.
    @ivar pool: The pool of C{backend} whose slot this request holds, or
        waits for if C{queued}; an upgrade takes none.
    @ivar queued: Waiting for a slot of C{pool}.
    @ivar pending: The C{whenRoutable()} Deferred this request waits on.
    @ivar retryCall: The delayed call that will try the routable backend
        again.
    @ivar connector: The connection attempt made for this request.
    @ivar connection: The backend connection carrying this request.
    @ivar streaming: Whether C{connection} is registered as the producer of
        the client's response.
    @ivar lastError: Why the last backend tried could not take the request.
    @ivar clientGone: The client hung up before the response was finished.
    @ivar counted: The backend's response head is counted in its C{tally}.
    """

    __slots__ = (
        "proxy",
        "request",
        "head",
        "bodyLength",
        "deadline",
        "upgrade",
        "backend",
        "pool",
        "queued",
        "pending",
        "retryCall",
        "connector",
        "connection",
        "streaming",
        "lastError",
        "clientGone",
        "counted",
    )

    def __init__(
        self,
        proxy: ReverseProxy,
        request: ProxyRequest,
        head: bytes,
        bodyLength: int,
        deadline: float,
        upgrade: bool,
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.head = head
        self.bodyLength = bodyLength
        self.deadline = deadline
        self.upgrade = upgrade
        self.backend: Any = None
        self.pool: Optional[Pool] = None
        self.queued = False
        self.pending: Any = None
        self.retryCall: Optional[IDelayedCall] = None
        self.connector: Any = None
        self.connection: Optional[BackendConnection] = None
        self.streaming = False
        self.lastError: Optional[str] = None
        self.clientGone = False
        self.counted = False

    # Routing

    def route(self, fresh: bool = False) -> None:
        """
        Send the request to the routable backend (where it may wait for a
        slot, see L{Pool.acquire}) or, if there is none, wait for one until
        the deadline; unless traffic is not serving.

        @param fresh: Open a new connection rather than reuse an idle one.
        """
        self.retryCall = None
        proxy = self.proxy
        if proxy._traffic.mode is not _SERVING:
            self._notServing()
            return
        backend = proxy._deployer.routable
        if backend is not None:
            self._send(backend, fresh)
            return
        remaining = self.deadline - self.proxy._reactor.seconds()
        if remaining <= 0:
            self._noBackend(Failure(TimeoutError()))
            return
        waiting = self.pending = self.proxy._deployer.whenRoutable()
        waiting.addTimeout(remaining, self.proxy._reactor)
        waiting.addCallbacks(self._activated, self._noBackend)
        waiting.addErrback(self._unexpected)

    def _activated(self, backend: Any) -> None:
        self.pending = None
        if self.proxy._traffic.mode is not _SERVING:
            self._notServing()
            return
        self._send(backend, False)

    def _notServing(self) -> None:
        """
        Traffic is paused or in maintenance: wait until it resumes (or the
        deadline), or answer with the maintenance page.
        """
        # Whatever generation it was tried on before, this answer is
        # rainbowd's (L{_send} names the one it goes to on resume).
        self.request.backendGeneration = None
        traffic = self.proxy._traffic
        if traffic.mode is Mode.MAINTENANCE:
            page = traffic.page
            assert page is not None  # set with the mode
            _respond(
                self.request,
                503,
                b"text/html; charset=utf-8",
                page,
                _MAINTENANCE_HEADERS,
            )
            return
        reactor = self.proxy._reactor
        remaining = self.deadline - reactor.seconds()
        if remaining <= 0:
            self._unavailable(traffic.whyHeld())
            return
        waiting = self.pending = traffic.hold()
        waiting.addTimeout(remaining, reactor)
        waiting.addCallbacks(self._released, self._heldInVain)
        waiting.addErrback(self._unexpected)

    def _released(self, result: None) -> None:
        """
        Traffic is no longer paused: go where it now says.
        """
        self.pending = None
        self.route()

    def _heldInVain(self, reason: Failure) -> None:
        self.pending = None
        if self.clientGone:
            return
        if reason.check(TimeoutError):
            self._unavailable(self.proxy._traffic.whyHeld())
        elif reason.check(TrafficStopped):
            self._unavailable(
                "rainbowd is shutting down, and this request, held while "
                "traffic was paused, was not sent to the app; send it again "
                "once rainbowd is back"
            )
        else:
            self._unexpected(reason)

    def _noBackend(self, reason: Failure) -> None:
        self.pending = None
        if self.clientGone:
            return
        if reason.check(TimeoutError):
            why = "no backend became ready within {:g} s".format(
                self.proxy._queueTimeout
            )
        else:
            why = "no backend became ready ({})".format(_describe(reason))
        if self.lastError is not None:
            why += " ({})".format(self.lastError)
        unroutable = self.proxy._deployer.whyNotRoutable()
        if unroutable is not None:
            why += ": " + unroutable
        self._unavailable(why)

    def _send(self, backend: Any, fresh: bool) -> None:
        """
        Forward the request to C{backend}, which counts it as in flight until
        its response is over.
        """
        self.backend = backend
        self.request.backendGeneration = backend.generation
        backend.requestStarted()
        pool = self.proxy._poolFor(backend)
        if self.upgrade:
            # An upgrade holds its connection for as long as the tunnel is
            # open, which the cap on requests in flight is not about.
            self.connector = pool.connect(self)
            return
        if pool.maxConnections:
            # Without a cap there are no slots to count.
            self.pool = pool
            if not pool.acquire(self):
                self.queued = True
                return
        if not fresh:
            connection = pool.take()
            if connection is not None:
                self._sendOn(connection)
                return
        self.connector = pool.connect(self)

    # What the pool tells a request waiting for a slot

    def slotGranted(self) -> bool:
        """
        A slot of the pool this request waited in is now its own; unless
        traffic stopped serving while it waited, when it is not sent but
        held, or answered, like a new request, and the slot goes on.

        @return: Whether it took the slot.
        """
        self.queued = False
        pool = self.pool
        assert pool is not None
        if self.proxy._traffic.mode is not _SERVING:
            self.pool = None
            backend, self.backend = self.backend, None
            backend.requestFinished()
            self._notServing()
            return False
        connection = pool.take()
        if connection is not None:
            self._sendOn(connection)
        else:
            self.connector = pool.connect(self)
        return True

    def slotTimedOut(self) -> None:
        """
        The request waited for a slot until its deadline: answer 503.
        """
        self.queued = False
        self.pool = None
        backend = self.backend
        self._release()
        why = (
            "backend generation {} on port {} was carrying backendConnections "
            "({}) requests until this one's queueTimeout ({:g} s) ran out"
        ).format(
            backend.generation,
            backend.port,
            self.proxy._backendConnections,
            self.proxy._queueTimeout,
        )
        self._unavailable(why)

    def slotMoved(self) -> None:
        """
        The backend this request waited for began draining: send it to the
        routable one instead.
        """
        self.queued = False
        self.pool = None
        self._release()
        self.route()

    def _sendOn(self, connection: BackendConnection) -> None:
        self.connection = connection
        connection.send(
            self,
            self.head,
            self.request.content,
            self.bodyLength,
            self.request.method == b"HEAD",
        )

    # What the backend connection tells

    def connected(self, connection: BackendConnection) -> None:
        """
        The new connection for this request is open.
        """
        self.connector = None
        if self.clientGone:
            connection.pool.release(connection)
            return
        if self.upgrade:
            connection.dedicated = True
        self._sendOn(connection)

    def connectionFailed(self, reason: Failure) -> None:
        """
        The new connection for this request could not be opened: try again
        if there is time left, or answer 502.
        """
        self.connector = None
        backend = self.backend
        self._release()
        if self.clientGone:
            return
        reactor = self.proxy._reactor
        if reason.check(ConnectionRefusedError) and reactor.seconds() < self.deadline:
            self.lastError = "generation {} on port {} refused the connection".format(
                backend.generation, backend.port
            )
            _log.info("Backend {why}; trying again", why=self.lastError)
            if self.proxy._deployer.routable is backend:
                delay = min(RETRY_DELAY, self.deadline - reactor.seconds())
                self.retryCall = reactor.callLater(delay, self.route)
            else:
                self.route()
            return
        self._badGateway(backend, "failed: " + _describe(reason))

    def responseFailed(self, reason: Failure, stale: bool) -> None:
        """
        The backend connection closed before a response came.

        @param stale: The connection had served requests before and nothing
            of a response came on it: the app closed a kept-alive connection
            as the request was being sent, and may not have seen it.
        """
        self.connection = None
        backend = self.backend
        self._release()
        if self.clientGone:
            return
        method = self.request.method
        if stale:
            if method in _IDEMPOTENT_METHODS:
                _log.info(
                    "Generation {generation} on port {port} closed a kept-alive "
                    "connection; sending {method} {uri} again on a new one",
                    generation=backend.generation,
                    port=backend.port,
                    method=method,
                    uri=self.request.uri,
                )
                self.route(fresh=True)
                return
            self._badGateway(
                backend,
                "closed a kept-alive connection as {} {} was sent on it; "
                "rainbowd does not send a {} again, as it may have been "
                "acted on".format(
                    method.decode("latin-1"),
                    self.request.uri.decode("latin-1"),
                    method.decode("latin-1"),
                ),
            )
            return
        if reason.check(ConnectionDone):
            self._badGateway(backend, "closed the connection without answering")
        else:
            self._badGateway(backend, "failed before answering: " + _describe(reason))

    def responseHead(
        self, code: int, phrase: bytes, headers: List[Tuple[bytes, bytes]]
    ) -> None:
        """
        Relay the status and headers of the backend's response.
        """
        request = self.request
        request.setResponseCode(code, phrase)
        tally = self.backend.tally
        tally.responses += 1
        if code >= 500:
            tally.errors += 1
        self.counted = True
        add = request.responseHeaders.addRawHeader
        for name, value in headers:
            add(name, value)

    def responseData(self, data: bytes) -> None:
        if not self.clientGone:
            self.request.write(data)

    def responseStreaming(self, connection: BackendConnection) -> None:
        """
        More of the body is to come: let the client's pace throttle the
        backend connection.
        """
        self.streaming = True
        request = self.request
        if not request.startedWriting:
            # Send the head now: the client may act on it before the body.
            request.write(b"")
        request.registerProducer(connection, True)

    def responseDone(self) -> None:
        """
        The backend's response is over and relayed.
        """
        self.connection = None
        if self.streaming:
            self.streaming = False
            self.request.unregisterProducer()
        self._release()
        if not self.clientGone:
            self.request.finish()

    def responseTimedOut(self, timeout: float) -> None:
        """
        The backend did not send the head of its response in time: answer
        504.
        """
        self.connection = None
        backend = self.backend
        self._release()
        monitor = self.proxy._monitor
        if monitor is not None:
            monitor.backendTimedOut("head")
        tally = backend.tally
        tally.responses += 1
        tally.errors += 1
        if self.clientGone:
            return
        message = (
            "rainbowd: backend generation {} on port {} did not answer {} {} "
            "within {:g} s (backendTimeout)".format(
                backend.generation,
                backend.port,
                self.request.method.decode("latin-1"),
                self.request.uri.decode("latin-1"),
                timeout,
            )
        )
        self._answerError(504, message, message)

    def responseBroken(self, reason: Failure) -> None:
        """
        The backend connection failed in the middle of the response.
        """
        self.connection = None
        backend = self.backend
        if reason.check(BackendTimeout):
            monitor = self.proxy._monitor
            if monitor is not None:
                monitor.backendTimedOut("body")
        if self.streaming:
            self.streaming = False
            if not self.clientGone:
                self.request.unregisterProducer()
        self._release()
        if self.clientGone:
            return
        request = self.request
        if not request.startedWriting:
            # Nothing of the response has reached the client: the headers
            # relayed so far are the backend's, not the 502's, and the
            # 502 is counted instead of the head.
            request.responseHeaders = Headers()
            if self.counted:
                backend.tally.responses -= 1
                if request.code >= 500:
                    backend.tally.errors -= 1
            self._badGateway(backend, "failed: " + _describe(reason))
            return
        _log.warn(
            "Backend generation {generation} on port {port} failed while "
            "sending the response to {method} {uri}: {error}; "
            "closing the client connection",
            generation=backend.generation,
            port=backend.port,
            method=self.request.method,
            uri=self.request.uri,
            error=_describe(reason),
        )
        _abortConnection(self.request)

    def upgraded(
        self,
        connection: BackendConnection,
        phrase: bytes,
        headers: List[Tuple[bytes, bytes]],
        rest: bytes,
    ) -> None:
        """
        The backend switched protocols: relay its 101 and join the client's
        connection to the backend's, both taken from their protocols.
        """
        self.connection = None
        backend = self.backend
        request = self.request
        channel = request.channel
        clientTransport = channel.transport
        # Still connected: the client's hang-up would have ended this.
        assert clientTransport is not None
        head = [b"HTTP/1.1 101 ", phrase, b"\r\n"]
        for name, value in headers:
            head.extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        clientTransport.writeSequence(head)
        request.setResponseCode(101, phrase)
        # What the client sent after its request head, buffered by the
        # channel while it waited for this answer.
        # (A private name: see rainbowd.twistedinternals.)
        pending = b"".join(channel._dataBuffer)
        channel.transport = None
        tunnel = Tunnel(backend)
        tunnel.join(clientTransport, connection.transport, pending, rest)
        backend.tunnelOpened(tunnel)
        self._release()
        # Rendered by process, which set it.
        assert request.site is not None
        request.site.log(request)

    # The client

    def hungUp(self) -> None:
        """
        The client hung up before its response was finished: stop whatever
        this request was waiting for.
        """
        self.clientGone = True
        if self.retryCall is not None:
            self.retryCall.cancel()
            self.retryCall = None
        if self.pending is not None:
            self.pending.cancel()
        if self.queued:
            self._release()
        if self.connector is not None:
            connector, self.connector = self.connector, None
            connector.stopConnecting()
            self._release()
        if self.connection is not None:
            connection, self.connection = self.connection, None
            self.streaming = False
            connection.abort()
            self._release()

    # Endings

    def _unavailable(self, why: str) -> None:
        self._answerError(503, why, "rainbowd: {}; see rainbowd's log".format(why))

    def _answerError(self, code: int, logged: str, message: str) -> None:
        """
        Answer C{code} with C{message}, and log C{logged}.
        """
        _log.warn(
            "Answering {code} to {method} {uri}: {why}",
            code=code,
            method=self.request.method,
            uri=self.request.uri,
            why=logged,
        )
        _respondInPlainText(self.request, code, message)

    def _badGateway(self, backend: Any, what: str) -> None:
        tally = backend.tally
        tally.responses += 1
        tally.errors += 1
        message = "rainbowd: backend generation {} on port {} {}".format(
            backend.generation, backend.port, what
        )
        self._answerError(502, message, message)

    def _release(self) -> None:
        """
        Tell the backend this request is over for it, if it has not been
        told, and give back its slot of the pool, or leave the pool's queue.
        """
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.requestFinished()
        pool, self.pool = self.pool, None
        if pool is not None:
            if self.queued:
                self.queued = False
                pool.leave(self)
            else:
                pool.free()

    def _unexpected(self, reason: Failure) -> None:
        """
        A bug: log it, and do not leave the client or the backend hanging.
        """
        _log.failure(
            "Unexpected error while proxying {method} {uri}",
            reason,
            method=self.request.method,
            uri=self.request.uri,
        )
        self._release()
        if not self.clientGone:
            _abortConnection(self.request)


def _describe(reason: Failure) -> str:
    """
    Say what went wrong in a sentence.
    """
    return reason.getErrorMessage() or reason.type.__name__


def _respondInPlainText(request: Request, code: int, message: str) -> None:
    """
    Answer C{request} with C{code} and C{message} as a plain-text body.
    """
    body = (message + "\n").encode("utf-8")
    _respond(request, code, b"text/plain; charset=utf-8", body)


_MAINTENANCE_HEADERS = (
    (b"Retry-After", b"%d" % (RETRY_AFTER,)),
    (b"Cache-Control", b"no-store"),
)


def _respond(
    request: Request,
    code: int,
    contentType: bytes,
    body: bytes,
    headers: Tuple[Tuple[bytes, bytes], ...] = (),
) -> None:
    """
    Answer C{request} with C{code}, C{headers} and C{body}; a HEAD request
    gets the headers alone.
    """
    request.setResponseCode(code)
    setHeader = request.responseHeaders.setRawHeaders
    setHeader(b"Content-Type", [contentType])
    setHeader(b"Content-Length", [b"%d" % (len(body),)])
    for name, value in headers:
        setHeader(name, [value])
    request.write(body)
    request.finish()


def _abortConnection(request: Request) -> None:
    """
    Drop the client's connection, so that it sees a truncated response rather
    than a complete one.
    """
    transport = request.transport
    # Twisted's Request keeps its channel's transport for good.
    assert transport is not None
    getattr(transport, "abortConnection", transport.loseConnection)()
