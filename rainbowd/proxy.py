# -*- test-case-name: rainbowd.test.test_proxy -*-
"""
The reverse proxy in front of the app.

Every request that reaches rainbowd's public port is forwarded to whichever
backend the deployer says is active I{at the moment the request arrives};
swapping the deployer's active backend is therefore all a redeploy has to do
to move traffic, and requests already forwarded finish where they started.

The client side is twisted.web: a L{ProxySite} of lean L{ProxyRequest}s
serving a L{ReverseProxy}, which gives each request a L{_Forwarding}.  The
backend side is a small HTTP/1.1 client of its own, L{BackendConnection},
kept in a L{_Pool} of persistent connections per backend; it streams a
response to the client as it comes, paused while the client is slow, and
an upgrade (a WebSocket, say) becomes a L{Tunnel} between the two
connections.  (L{twisted.web.client.Agent}, which it replaced, makes
Deferreds, a L{Headers} object and a body-delivery protocol for every
response, and relayed about a third as many small requests a second.)
"""

import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from zope.interface import implementer

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

_log = Logger()

IDLE_TIMEOUT = 1.0
"""
Seconds an idle connection to a backend is kept for reuse: less than the
keep-alive timeouts of app servers (gunicorn's is 2 s), so that rainbowd
closes an idle connection before the app does, rather than sending a request
down one the app is closing, which could only be retried if idempotent.
"""

RETRY_DELAY = 0.1
"""
Seconds to wait before trying the active backend again after it refused a
connection while still being the active one.
"""

CHUNK_SIZE = 65536
"""
Bytes of a request body read from twisted.web's buffer (a temporary file
for large bodies) and written to the backend at a time.
"""

_HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    ]
)
"""
Lower-cased names of the headers that describe one connection rather than the
message (RFC 9110 section 7.6.1, plus the non-standard I{Proxy-Connection}).
"""

_NOT_FORWARDED = _HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"host",
    b"x-forwarded-for",
}
"""
Request headers not copied as they are: the hop-by-hop ones; two more
because rainbowd frames the body itself and twisted.web has already answered
any I{Expect: 100-continue} before the body reached rainbowd; and two that
rainbowd writes itself.
"""

_NOT_RELAYED = _HOP_BY_HOP - {b"transfer-encoding"}
"""
Response headers not relayed to the client.  I{Transfer-Encoding} is
handled apart, as it decides the framing.
"""

_BODILESS_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS"])
"""
Methods forwarded without a I{Content-Length} when their body is empty, so
that none is invented.
"""

_IDEMPOTENT_METHODS = frozenset(
    [b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"]
)
"""
Methods sent again on a fresh connection when a kept-alive one turns out to
have been closed by the app (RFC 9110 section 9.2.2).
"""

_NO_BODY_CODES = frozenset([204, 304])

_ABSOLUTE_FORM = re.compile(rb"\A[A-Za-z][A-Za-z0-9+.-]*://")

_BAD_HEADER_VALUE = re.compile(rb"[\x00\r\n]")

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+\Z")
"""
A header name (RFC 9110 section 5.1).
"""


class ReverseProxy(Resource):
    """
    The resource served on rainbowd's public port: it forwards every request to
    the deployer's active backend.

    It plays the role of L{twisted.web.proxy.ReverseProxyResource} (a resource
    whose target can be swapped) without that class's faults: it is a leaf, so
    C{request.uri}, path and query string, is forwarded as is, and it keeps
    one pool of persistent HTTP/1.1 connections per backend.

    What is forwarded:

      - the method, the request target and the body;
      - all end-to-end headers, repeated ones included, and the client's
        I{Host} (the host of the request target, if that is an absolute
        URI);
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

    The deployer must provide:

      - C{active}: the backend currently receiving traffic, or L{None}; it is
        read once per request, which is what makes a swap atomic;
      - C{whenActive()}: a new cancellable L{Deferred} firing with the next
        backend to become active.

    and a backend must provide C{port}, C{generation}, C{requestStarted()},
    C{requestFinished()} (called exactly once each per request forwarded to
    it, so that it can be drained), C{tunnelOpened(tunnel)} and
    C{tunnelClosed(tunnel)} (once each per upgraded connection, which the
    backend may end with C{tunnel.close()}), C{whenDraining()} and
    C{whenStopped()}.

    @ivar _pools: The connection pool of each backend seen, keyed by
        C{(generation, port)} rather than by the backend itself so that
        backends need not be hashable; its idle connections are closed when
        the backend starts draining, and it is forgotten when the backend's
        C{whenStopped()} fires.
    """

    isLeaf = True

    def __init__(self, deployer: Any, reactor: Any, queueTimeout: float) -> None:
        """
        @param deployer: Where to find the active backend; see the class
            docstring.
        @param reactor: Provides C{IReactorTCP} and C{IReactorTime}.
        @param queueTimeout: How many seconds a request may wait, from its
            arrival, for a backend to become active (and, when the backend
            refuses connections, for a replacement) before it is answered
            with 503.
        """
        Resource.__init__(self)
        self._deployer = deployer
        self._reactor = reactor
        self._queueTimeout = queueTimeout
        self._pools: Dict[Tuple[int, int], "_Pool"] = {}

    def render(self, request: Request) -> object:
        """
        Forward C{request}, whatever its method, to the active backend.
        """
        request.defaultContentType = None
        target = _originForm(request.uri)
        if target is None:
            _respondInPlainText(
                request,
                400,
                "rainbowd: cannot forward a request for {!r}".format(
                    request.uri.decode("latin-1")
                ),
            )
            return NOT_DONE_YET
        bodyLength = _contentLength(request)
        upgrade = _isUpgrade(request)
        head = _requestHead(request, target, bodyLength, upgrade)
        if head is None:
            _respondInPlainText(
                request,
                400,
                "rainbowd: cannot forward a request whose target names the "
                "host {!r}".format(request.uri.decode("latin-1")),
            )
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

    def _poolFor(self, backend: Any) -> "_Pool":
        """
        Find or make the pool of connections to C{backend}.
        """
        key = (backend.generation, backend.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self._reactor, backend.port)
            backend.whenDraining().addCallback(lambda _: pool.drain())
            backend.whenStopped().addBoth(self._backendStopped, key, pool)
        return pool

    def _backendStopped(
        self, result: object, key: Tuple[int, int], pool: "_Pool"
    ) -> None:
        """
        A backend's process is gone: forget its pool and close its idle
        connections.
        """
        del self._pools[key]
        pool.drain()


class ProxyRequest(Request):
    """
    A request on rainbowd's public port: twisted.web's L{Request} without
    the work a proxy has no use for.

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

    def process(self) -> None:
        self.site = site = self.channel.site
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
            self.site.unfinished(self)
        forwarding, self.forwarding = self.forwarding, None
        if forwarding is not None:
            forwarding.hungUp()


class ProxySite(Site):
    """
    The L{Site} serving a L{ReverseProxy}: quiet, with lean requests, and
    telling C{requestLog} (metrics, the access log) about every request,
    however it ends.

    @ivar requestLog: has C{finished(request, seconds)}, called once a
        response is complete, and C{unfinished(request, seconds)}, called
        when the connection closes before that; C{seconds} is the time
        since the request was received.  L{None} for neither.
    """

    noisy = False
    requestFactory = ProxyRequest
    requestLog: Any = None

    def log(self, request: Request) -> None:
        receivedAt = request.receivedAt
        if receivedAt is not None:
            self.requestLog.finished(request, self.reactor.seconds() - receivedAt)

    def unfinished(self, request: ProxyRequest) -> None:
        """
        Tell C{requestLog} that the connection of C{request}, received while
        there was one, closed before its response was complete.
        """
        self.requestLog.unfinished(
            request, self.reactor.seconds() - request.receivedAt
        )


class _Forwarding:
    """
    One client request on its way to a backend and back.

    @ivar backend: The backend counting this request as in flight (it has
        had C{requestStarted()} and is owed one C{requestFinished()}), if
        any.
    @ivar pending: The C{whenActive()} Deferred this request waits on.
    @ivar retryCall: The delayed call that will try the active backend again.
    @ivar connector: The connection attempt made for this request.
    @ivar connection: The backend connection carrying this request.
    @ivar streaming: Whether C{connection} is registered as the producer of
        the client's response.
    @ivar relayed: The backend's response head has been relayed, so a
        failure can no longer be answered with 502.
    @ivar lastError: Why the last backend tried could not take the request.
    @ivar clientGone: The client hung up before the response was finished.
    """

    __slots__ = (
        "proxy",
        "request",
        "head",
        "bodyLength",
        "deadline",
        "upgrade",
        "backend",
        "pending",
        "retryCall",
        "connector",
        "connection",
        "streaming",
        "relayed",
        "lastError",
        "clientGone",
    )

    def __init__(
        self,
        proxy: ReverseProxy,
        request: Request,
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
        self.pending: Any = None
        self.retryCall: Optional[IDelayedCall] = None
        self.connector: Any = None
        self.connection: Optional[BackendConnection] = None
        self.streaming = False
        self.relayed = False
        self.lastError: Optional[str] = None
        self.clientGone = False

    # Routing

    def route(self, fresh: bool = False) -> None:
        """
        Send the request to the active backend or, if there is none, wait for
        one until the deadline.

        @param fresh: Open a new connection rather than reuse an idle one.
        """
        self.retryCall = None
        backend = self.proxy._deployer.active
        if backend is not None:
            self._send(backend, fresh)
            return
        remaining = self.deadline - self.proxy._reactor.seconds()
        if remaining <= 0:
            self._noBackend(Failure(TimeoutError()))
            return
        waiting = self.pending = self.proxy._deployer.whenActive()
        waiting.addTimeout(remaining, self.proxy._reactor)
        waiting.addCallbacks(self._activated, self._noBackend)
        waiting.addErrback(self._unexpected)

    def _activated(self, backend: Any) -> None:
        self.pending = None
        self._send(backend, False)

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
        _log.warn(
            "Answering 503 to {method} {uri}: {why}",
            method=self.request.method,
            uri=self.request.uri,
            why=why,
        )
        _respondInPlainText(
            self.request, 503, "rainbowd: {}; see rainbowd's log".format(why)
        )

    def _send(self, backend: Any, fresh: bool) -> None:
        """
        Forward the request to C{backend}, which counts it as in flight until
        its response is over.
        """
        self.backend = backend
        self.request.backendGeneration = backend.generation
        backend.requestStarted()
        pool = self.proxy._poolFor(backend)
        if not (fresh or self.upgrade):
            connection = pool.take()
            if connection is not None:
                self._sendOn(connection)
                return
        self.connector = pool.connect(self)

    def _sendOn(self, connection: "BackendConnection") -> None:
        self.connection = connection
        connection.send(
            self,
            self.head,
            self.request.content,
            self.bodyLength,
            self.request.method == b"HEAD",
        )

    # What the backend connection tells

    def connected(self, connection: "BackendConnection") -> None:
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
            if self.proxy._deployer.active is backend:
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
        self.relayed = True
        request = self.request
        request.setResponseCode(code, phrase)
        add = request.responseHeaders.addRawHeader
        for name, value in headers:
            add(name, value)

    def responseData(self, data: bytes) -> None:
        if not self.clientGone:
            self.request.write(data)

    def responseStreaming(self, connection: "BackendConnection") -> None:
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

    def responseBroken(self, reason: Failure) -> None:
        """
        The backend connection failed in the middle of the response.
        """
        self.connection = None
        backend = self.backend
        if self.streaming:
            self.streaming = False
            if not self.clientGone:
                self.request.unregisterProducer()
        self._release()
        if self.clientGone:
            return
        if not self.relayed:
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
        connection: "BackendConnection",
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
        head = [b"HTTP/1.1 101 ", phrase, b"\r\n"]
        for name, value in headers:
            head.extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        clientTransport.writeSequence(head)
        request.setResponseCode(101, phrase)
        # What the client sent after its request head, buffered by the
        # channel while it waited for this answer.
        pending = b"".join(getattr(channel, "_dataBuffer", ()))
        channel.transport = None
        tunnel = Tunnel(backend)
        tunnel.join(clientTransport, connection.transport, pending, rest)
        backend.tunnelOpened(tunnel)
        self._release()
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

    def _badGateway(self, backend: Any, what: str) -> None:
        message = "rainbowd: backend generation {} on port {} {}".format(
            backend.generation, backend.port, what
        )
        _log.warn(
            "Answering 502 to {method} {uri}: {message}",
            method=self.request.method,
            uri=self.request.uri,
            message=message,
        )
        _respondInPlainText(self.request, 502, message)

    def _release(self) -> None:
        """
        Tell the backend this request is over for it, if it has not been told.
        """
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.requestFinished()

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


class _Pool:
    """
    The connections to one backend: those idle, ready for a request, and the
    way to open more.

    @ivar idle: The idle connections, the most recently used last.
    @ivar draining: The backend takes no new requests: connections are closed
        as soon as they are idle.
    """

    def __init__(self, reactor: Any, port: int) -> None:
        self.reactor = reactor
        self.port = port
        self.idle: List[BackendConnection] = []
        self.draining = False

    def connect(self, forwarding: _Forwarding) -> Any:
        """
        Open a new connection for C{forwarding}, which hears of it through
        C{connected} or C{connectionFailed}.

        @return: The connector.
        """
        return self.reactor.connectTCP(
            "127.0.0.1", self.port, _Connecting(self, forwarding)
        )

    def take(self) -> Optional["BackendConnection"]:
        """
        An idle connection, if there is one, the most recently used first.
        """
        if self.idle:
            return self.idle.pop()
        return None

    def release(self, connection: "BackendConnection") -> None:
        """
        C{connection} has finished a response and can take another.
        """
        if self.draining:
            connection.transport.loseConnection()
            return
        connection.idleSince = self.reactor.seconds()
        self.idle.append(connection)
        if connection.idleCall is None:
            connection.idleCall = self.reactor.callLater(
                IDLE_TIMEOUT, self._checkIdle, connection
            )

    def _checkIdle(self, connection: "BackendConnection") -> None:
        """
        Close C{connection} if it has been idle for C{IDLE_TIMEOUT}; look
        again when it could have been, if it is still open.

        (One timer per connection, moved on only when it fires, costs less
        than one per request.)
        """
        connection.idleCall = None
        if connection.lost:
            return
        if connection.handler is None:
            idleFor = self.reactor.seconds() - connection.idleSince
            if idleFor >= IDLE_TIMEOUT:
                self.forget(connection)
                connection.transport.loseConnection()
                return
            wait = IDLE_TIMEOUT - idleFor
        else:
            wait = IDLE_TIMEOUT
        connection.idleCall = self.reactor.callLater(wait, self._checkIdle, connection)

    def forget(self, connection: "BackendConnection") -> None:
        """
        C{connection} is closed or closing: never hand it out again.
        """
        try:
            self.idle.remove(connection)
        except ValueError:
            pass

    def drain(self) -> None:
        """
        The backend takes no new requests: close the idle connections, and
        each busy one once its response is over.
        """
        self.draining = True
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.transport.loseConnection()


class _Connecting(ClientFactory):
    """
    Open one connection to a backend for one request.
    """

    noisy = False

    def __init__(self, pool: _Pool, forwarding: _Forwarding) -> None:
        self.pool = pool
        self.forwarding = forwarding

    def buildProtocol(self, addr: object) -> "BackendConnection":
        connection = BackendConnection(self.pool)
        connection.factory = self
        return connection

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.forwarding.connectionFailed(reason)


# The states of a backend connection.
_IDLE = 0
_HEAD = 1
_LENGTH = 2
_CHUNKED = 3
_UNTIL_CLOSE = 4
_DETACHED = 5

# The states of a chunked body's parser.
_CHUNK_SIZE = 0
_CHUNK_DATA = 1
_CHUNK_END = 2
_TRAILER = 3


class BadResponse(Exception):
    """
    A backend's response is not HTTP/1.1 rainbowd can relay.
    """


@implementer(IPushProducer)
class BackendConnection(Protocol):
    """
    One HTTP/1.1 connection to a backend, carrying one request at a time.

    It parses just what a proxy needs of a response -- status, headers,
    framing (I{Content-Length}, chunked, or until close) -- and hands the
    rest to its handler as it arrives.  It is the producer of the client's
    response, so that a slow client pauses reading from the backend.

    @ivar handler: The L{_Forwarding} whose request it carries, if any.
    @ivar used: It has carried a whole response before, so the app may have
        closed it since.
    @ivar received: Some of the current response has come.
    @ivar dedicated: Carrying an upgrade request: never reused.
    @ivar lost: The connection is closed.
    """

    factory: Optional[_Connecting] = None

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.handler: Optional[_Forwarding] = None
        self.used = False
        self.received = False
        self.dedicated = False
        self.lost = False
        self.idleSince = 0.0
        self.idleCall: Optional[IDelayedCall] = None
        self._state = _IDLE
        self._buffer = b""
        self._headOnly = False
        self._keepAlive = True
        self._remaining = 0
        self._chunkState = _CHUNK_SIZE
        self._streaming = False
        self._paused = False
        self._sender: Optional[_BodySender] = None

    def connectionMade(self) -> None:
        factory, self.factory = self.factory, None
        if factory is not None:
            factory.forwarding.connected(self)

    # Requests

    def send(
        self,
        handler: _Forwarding,
        head: bytes,
        content: Any,
        length: int,
        headOnly: bool,
    ) -> None:
        """
        Send a request: C{head}, then C{length} bytes of C{content}, a file
        of which C{handler} hears the response.
        """
        self.handler = handler
        self.received = False
        self._state = _HEAD
        self._headOnly = headOnly
        if length == 0:
            self.transport.write(head)
        elif length <= CHUNK_SIZE:
            content.seek(0)
            self.transport.write(head + content.read(length))
        else:
            self.transport.write(head)
            content.seek(0)
            self._sender = _BodySender(self, content, length)
            self._sender.start()

    def abort(self) -> None:
        """
        The client is gone: drop this connection, since the rest of the
        response would have to be read before it could carry another.
        """
        if self._sender is not None:
            # twisted.web may close the body's file once the client is gone.
            self._sender.stop()
        if self._state == _DETACHED:
            return
        self.handler = None
        self._state = _DETACHED
        self._keepAlive = False
        self.transport.abortConnection()

    # IPushProducer, for the client's response

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.abort()

    # Responses

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state == _HEAD:
            self.received = True
            buffer = self._buffer + data if self._buffer else data
            try:
                data = self._head(buffer)
            except BadResponse as e:
                self._fail(Failure(e))
                return
            if data is None:
                return
            state = self._state
            if state == _IDLE:
                self._finished(data)
                return
            if state == _DETACHED:
                return
        handler = self.handler
        if state == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                if data:
                    handler.responseData(data)
            else:
                if remaining:
                    handler.responseData(data[:remaining])
                self._finished(data[remaining:])
                return
        elif state == _CHUNKED:
            try:
                data = self._chunked(data)
            except BadResponse as e:
                self._fail(Failure(e))
                return
            if data is not None:
                self._finished(data)
                return
        elif state == _UNTIL_CLOSE:
            handler.responseData(data)
        elif state == _IDLE:
            # Bytes no request asked for: this connection cannot be trusted.
            self._keepAlive = False
            self.transport.loseConnection()
            return
        else:
            return
        if not self._streaming and self.handler is not None:
            self._streaming = True
            handler.responseStreaming(self)

    def _head(self, buffer: bytes) -> Optional[bytes]:
        """
        Parse a response head from the start of C{buffer}, skipping interim
        (1xx) responses, and tell the handler.

        @return: The bytes after the head, or L{None} if the head is not
            complete yet (or the response was an upgrade).
        """
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end == -1:
                end = buffer.find(b"\n\n")
                if end == -1:
                    if len(buffer) > 65536:
                        raise BadResponse("a response head over 64 KiB")
                    self._buffer = buffer
                    return None
                rest = buffer[end + 2 :]
            else:
                rest = buffer[end + 4 :]
            lines = buffer[:end].split(b"\n")
            version, _, status = lines[0].rstrip(b"\r").partition(b" ")
            code, _, phrase = status.partition(b" ")
            if (
                not version.startswith(b"HTTP/1.")
                or len(code) != 3
                or not code.isdigit()
            ):
                raise BadResponse(
                    "a response that is not HTTP/1.1 ({!r})".format(lines[0][:80])
                )
            status = int(code)
            if b"\r" in phrase:
                raise BadResponse(
                    "a malformed status line ({!r})".format(lines[0][:80])
                )
            if 100 <= status < 200 and status != 101:
                buffer = rest
                continue
            break
        self._buffer = b""
        headers = []
        length = None
        chunked = False
        framed = False
        keepAlive = version == b"HTTP/1.1"
        named = None
        for line in lines[1:]:
            line = line.rstrip(b"\r")
            if line[:1] in (b" ", b"\t") and headers:
                name, value = headers.pop()
                headers.append((name, value + b" " + line.strip()))
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):
                raise BadResponse("a malformed header line ({!r})".format(line[:80]))
            value = value.strip()
            lower = name.lower()
            if lower in _NOT_RELAYED:
                if lower == b"connection":
                    tokens = {token.strip() for token in value.lower().split(b",")}
                    if b"close" in tokens:
                        keepAlive = False
                    elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                        keepAlive = True
                    named = tokens if named is None else named | tokens
                if status != 101:
                    continue
            elif lower == b"transfer-encoding":
                framed = True
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                continue
            elif lower == b"content-length":
                try:
                    values = {int(each) for each in value.split(b",")}
                except ValueError:
                    values = set()
                if len(values) != 1 or min(values) < 0:
                    raise BadResponse("a bad Content-Length ({!r})".format(value[:80]))
                if length is not None and length not in values:
                    raise BadResponse("two different Content-Lengths")
                length = values.pop()
            headers.append((name, value))
        handler = self.handler
        if status == 101:
            if not handler.upgrade:
                raise BadResponse("101 Switching Protocols to a request not asking to")
            self._state = _DETACHED
            self.handler = None
            handler.upgraded(self, phrase, headers, rest)
            return None
        if named:
            headers = [(n, v) for (n, v) in headers if n.lower() not in named]
        if framed:
            # Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
            headers = [(n, v) for (n, v) in headers if n.lower() != b"content-length"]
            length = None
        self._keepAlive = keepAlive and not self.dedicated
        handler.responseHead(status, phrase, headers)
        if self._headOnly or status in _NO_BODY_CODES:
            self._state = _IDLE
        elif chunked:
            self._state = _CHUNKED
            self._chunkState = _CHUNK_SIZE
        elif length is not None and not framed:
            self._state = _LENGTH
            self._remaining = length
            if length == 0:
                self._state = _IDLE
        else:
            self._state = _UNTIL_CLOSE
            self._keepAlive = False
        return rest

    def _chunked(self, data: bytes) -> Optional[bytes]:
        """
        Decode a piece of a chunked body, handing the handler its data.

        @return: The bytes after the body once it is over, else L{None}.
        """
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        handler = self.handler
        position = 0
        size = len(data)
        while position < size:
            state = self._chunkState
            if state == _CHUNK_DATA:
                end = position + self._remaining
                if end > size:
                    handler.responseData(data[position:])
                    self._remaining = end - size
                    return None
                handler.responseData(data[position:end])
                position = end
                self._chunkState = _CHUNK_END
                continue
            newline = data.find(b"\n", position)
            if newline == -1:
                if size - position > 4096:
                    raise BadResponse("a chunked body line over 4 KiB")
                self._buffer = data[position:]
                return None
            line = data[position:newline].rstrip(b"\r")
            position = newline + 1
            if state == _CHUNK_SIZE:
                try:
                    self._remaining = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadResponse("a bad chunk size ({!r})".format(line[:80]))
                if self._remaining < 0:
                    raise BadResponse("a bad chunk size ({!r})".format(line[:80]))
                self._chunkState = _TRAILER if self._remaining == 0 else _CHUNK_DATA
            elif state == _CHUNK_END:
                if line:
                    raise BadResponse("a chunk longer than its size")
                self._chunkState = _CHUNK_SIZE
            elif not line:  # _TRAILER: an empty line ends the body
                return data[position:]
        return None

    def _finished(self, extra: bytes) -> None:
        """
        The response is over: make the connection ready for the next one,
        or close it, and tell the handler.
        """
        handler, self.handler = self.handler, None
        self._state = _IDLE
        self._streaming = False
        reusable = self._keepAlive and not extra and not self.dedicated
        if self._sender is not None:
            # The app answered before reading the whole body.
            self._sender.stop()
            reusable = False
        if self._paused:
            self.resumeProducing()
        if reusable:
            self.used = True
            self.pool.release(self)
        else:
            self.transport.loseConnection()
        handler.responseDone()

    def _fail(self, reason: Failure) -> None:
        """
        The response cannot be relayed: close the connection and tell the
        handler.
        """
        handler, self.handler = self.handler, None
        self._state = _IDLE
        self._keepAlive = False
        self.transport.loseConnection()
        if handler is not None:
            handler.responseBroken(reason)

    def bodySent(self) -> None:
        self._sender = None

    def connectionLost(self, reason: Failure) -> None:
        self.lost = True
        if self.idleCall is not None:
            self.idleCall.cancel()
            self.idleCall = None
        if self._sender is not None:
            self._sender.stop()
        self.pool.forget(self)
        handler, self.handler = self.handler, None
        if handler is None:
            return
        state = self._state
        self._state = _IDLE
        if state == _HEAD:
            if not self.received:
                handler.responseFailed(reason, stale=self.used)
            else:
                handler.responseBroken(
                    Failure(BadResponse("the connection closed in the response head"))
                )
        elif state == _UNTIL_CLOSE:
            handler.responseDone()
        else:
            handler.responseBroken(reason)


@implementer(IPushProducer)
class _BodySender:
    """
    Write a request body that twisted.web has buffered (in a temporary file
    when large) to a backend connection, a chunk at a time, as fast as the
    connection takes it.
    """

    def __init__(
        self, connection: BackendConnection, content: Any, length: int
    ) -> None:
        self._connection = connection
        self._content = content
        self._remaining = length
        self._paused = False
        self._stopped = False

    def start(self) -> None:
        self._connection.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        transport = self._connection.transport
        while self._remaining > 0 and not self._paused and not self._stopped:
            chunk = self._content.read(min(CHUNK_SIZE, self._remaining))
            if not chunk:
                # twisted.web wrote this many bytes: it cannot be shorter.
                self._remaining = 0
                break
            self._remaining -= len(chunk)
            transport.write(chunk)
        if self._remaining <= 0 and not self._stopped:
            self.stop()

    def stopProducing(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._connection.bodySent()
        transport = self._connection.transport
        if transport is not None and transport.producer is self:
            transport.unregisterProducer()


class Tunnel:
    """
    A client connection joined to a backend connection after an upgrade
    (WebSocket, for one): bytes go both ways untouched, each side's reading
    paused while the other's write buffer is full.

    @ivar backend: The backend at the other end, which counts this tunnel
        until it closes.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._ends: List[_TunnelEnd] = []
        self._open = 0

    def join(self, client: Any, server: Any, toServer: bytes, toClient: bytes) -> None:
        """
        Take the transports C{client} and C{server} over, and send each the
        bytes already received from the other.
        """
        clientEnd, serverEnd = _TunnelEnd(self), _TunnelEnd(self)
        clientEnd.peer, serverEnd.peer = serverEnd, clientEnd
        self._ends = [clientEnd, serverEnd]
        self._open = 2
        for transport, end in [(client, clientEnd), (server, serverEnd)]:
            if getattr(transport, "producer", None) is not None:
                transport.unregisterProducer()
            if isinstance(transport, ProtocolWrapper):
                transport.wrappedProtocol = end
            else:
                transport.protocol = end
            end.makeConnection(transport)
        client.registerProducer(server, True)
        server.registerProducer(client, True)
        client.resumeProducing()
        server.resumeProducing()
        if toServer:
            server.write(toServer)
        if toClient:
            client.write(toClient)

    def close(self) -> None:
        """
        End the tunnel now, on both sides.
        """
        for end in self._ends:
            if end.transport is not None and not end.closed:
                end.transport.abortConnection()

    def endClosed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self.backend.tunnelClosed(self)


class _TunnelEnd(Protocol):
    """
    One side of a L{Tunnel}.
    """

    peer: "_TunnelEnd"

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        if not self.peer.closed:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure) -> None:
        self.closed = True
        if not self.peer.closed:
            self.peer.transport.loseConnection()
        self.tunnel.endClosed()


def _isUpgrade(request: Request) -> bool:
    """
    Does C{request} ask to switch protocols (RFC 9110 section 7.8)?
    """
    if request.clientproto != b"HTTP/1.1":
        return False
    headers = request.requestHeaders
    if not headers.hasHeader(b"Upgrade"):
        return False
    connection = headers.getRawHeaders(b"Connection")
    if not connection:
        return False
    tokens = b",".join(connection).lower().split(b",")
    return any(token.strip() == b"upgrade" for token in tokens)


def _originForm(uri: bytes) -> Optional[bytes]:
    """
    The request target to send to the backend: the path and query string
    of C{uri}, or L{None} if C{uri} is neither a path nor an absolute URI.
    """
    if uri.startswith(b"/"):
        return uri
    if _ABSOLUTE_FORM.match(uri):
        try:
            target = URI.fromBytes(uri).originForm
        except ValueError:  # an authority that does not parse
            return None
        # URI.originForm leaves out the "/" of http://host?query.
        return target if target.startswith(b"/") else b"/" + target
    return None


def _authority(uri: bytes) -> Optional[bytes]:
    """
    The host and port of C{uri} if it is in absolute form (which, by RFC
    9112 section 3.2.2, take the place of the I{Host} header), without any
    user info; otherwise L{None}.
    """
    if not _ABSOLUTE_FORM.match(uri):
        return None
    return urlsplit(uri).netloc.rpartition(b"@")[2] or None


def _contentLength(request: Request) -> int:
    """
    The size of the body twisted.web received with C{request}.
    """
    content = request.content
    if content is None:
        return 0
    content.seek(0, 2)
    length = content.tell()
    content.seek(0)
    return length


def _requestHead(
    request: Request, target: bytes, bodyLength: int, upgrade: bool
) -> Optional[bytes]:
    """
    The request line and headers to send to the backend for C{request}, or
    L{None} if its target names a host that cannot go in a header.
    """
    requestHeaders = request.requestHeaders
    drop = _NOT_FORWARDED
    connection = requestHeaders.getRawHeaders(b"Connection")
    if connection:
        named = (name.strip().lower() for name in b",".join(connection).split(b","))
        drop = drop.union(name for name in named if name)
    lines = [request.method, b" ", target, b" HTTP/1.1\r\n"]
    add = lines.extend
    forwardedProto = forwardedHost = False
    for name, values in requestHeaders.getAllRawHeaders():
        lower = name.lower()
        if lower in drop:
            continue
        if lower == b"x-forwarded-proto":
            forwardedProto = True
        elif lower == b"x-forwarded-host":
            forwardedHost = True
        for value in values:
            add((name, b": ", value, b"\r\n"))

    host = _authority(request.uri)
    if host is not None:
        if _BAD_HEADER_VALUE.search(host):
            return None
    else:
        hosts = requestHeaders.getRawHeaders(b"Host")
        if hosts:
            host = hosts[0]
        else:
            # An HTTP/1.0 client may send none: name rainbowd's own address,
            # not the backend's port, which goes at the next deploy.
            own = request.getHost()
            if isinstance(own, (IPv4Address, IPv6Address)):
                name = f"[{own.host}]" if own.type == "TCP6" else own.host
                host = f"{name}:{own.port}".encode("ascii")
            else:
                host = b"localhost"
    add((b"Host: ", host, b"\r\n"))
    if not forwardedHost:
        add((b"X-Forwarded-Host: ", host, b"\r\n"))

    clientIP = getattr(request.getClientAddress(), "host", None)
    forwardedFor = requestHeaders.getRawHeaders(b"X-Forwarded-For")
    if clientIP is not None:
        forwardedFor = (forwardedFor or []) + [clientIP.encode("ascii")]
    if forwardedFor:
        add((b"X-Forwarded-For: ", b", ".join(forwardedFor), b"\r\n"))
    if not forwardedProto:
        add(
            (
                b"X-Forwarded-Proto: ",
                b"https" if request.isSecure() else b"http",
                b"\r\n",
            )
        )
    if bodyLength or request.method not in _BODILESS_METHODS:
        add((b"Content-Length: ", b"%d" % (bodyLength,), b"\r\n"))
    if upgrade:
        protocols = b", ".join(requestHeaders.getRawHeaders(b"Upgrade"))
        add((b"Connection: Upgrade\r\nUpgrade: ", protocols, b"\r\n"))
    lines.append(b"\r\n")
    return b"".join(lines)


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
    request.setResponseCode(code)
    request.responseHeaders.setRawHeaders(
        b"Content-Type", [b"text/plain; charset=utf-8"]
    )
    request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
    request.write(body)
    request.finish()


def _abortConnection(request: Request) -> None:
    """
    Drop the client's connection, so that it sees a truncated response rather
    than a complete one.
    """
    transport = request.transport
    getattr(transport, "abortConnection", transport.loseConnection)()
