# -*- test-case-name: rainbowd.test.test_proxy -*-
"""
The reverse proxy in front of the app.

Every request that reaches rainbowd's public port is forwarded to whichever
backend the deployer says is active I{at the moment the request arrives};
swapping the deployer's active backend is therefore all a redeploy has to do
to move traffic, and requests already forwarded finish where they started.
"""

import re
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import attrs
from zope.interface import implementer

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from rainbowd.loopback import QuietConnectionPool, loopbackAgent

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

_NOT_FORWARDED = _HOP_BY_HOP | {b"content-length", b"expect"}
"""
Request headers that are not forwarded: the hop-by-hop ones, and two more
because the Agent frames the body itself and twisted.web has already answered
any I{Expect: 100-continue} before the body reached rainbowd.
"""

_BODILESS_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS"])
"""
Methods forwarded without a body producer when their body is empty, so that
no I{Content-Length: 0} is invented and the Agent may retry them on a fresh
connection when a kept-alive one turns out to be stale.
"""

_NO_BODY_CODES = frozenset([204, 304])

_ABSOLUTE_FORM = re.compile(rb"\A[A-Za-z][A-Za-z0-9+.-]*://")


class ReverseProxy(Resource):
    """
    The resource served on rainbowd's public port: it forwards every request to
    the deployer's active backend.

    It plays the role of L{twisted.web.proxy.ReverseProxyResource} (a resource
    whose target can be swapped) without that class's faults: it is a leaf, so
    C{request.uri}, path and query string, is forwarded as is, and it uses an
    L{Agent} with one persistent connection pool per backend, so backends get
    HTTP/1.1 with keep-alive.

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
    dropped in both directions.

    The deployer must provide:

      - C{active}: the backend currently receiving traffic, or L{None}; it is
        read once per request, which is what makes a swap atomic;
      - C{whenActive()}: a new cancellable L{Deferred} firing with the next
        backend to become active.

    and a backend must provide C{port}, C{generation}, C{requestStarted()},
    C{requestFinished()} (called exactly once each per request forwarded to
    it, so that it can be drained) and C{whenStopped()}.

    @ivar _agents: The agent of each backend seen, keyed by C{(generation,
        port)} rather than by the backend itself so that backends need not be
        hashable; forgotten (and its pool's idle connections closed) when the
        backend's C{whenStopped()} fires.
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
        self._agents: Dict[Tuple[int, int], Agent] = {}

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
        forwarding = _Forwarding(
            proxy=self,
            request=request,
            target=target,
            headers=_forwardedHeaders(request),
            bodyLength=_contentLength(request),
            deadline=self._reactor.seconds() + self._queueTimeout,
        )
        request.notifyFinish().addErrback(forwarding.hungUp)
        forwarding.route()
        return NOT_DONE_YET

    def _agentFor(self, backend: Any) -> Agent:
        """
        Find or make the agent whose connections go to C{backend}.
        """
        key = (backend.generation, backend.port)
        agent = self._agents.get(key)
        if agent is None:
            pool = QuietConnectionPool(self._reactor, persistent=True)
            pool.cachedConnectionTimeout = IDLE_TIMEOUT
            agent = self._agents[key] = loopbackAgent(self._reactor, pool)
            backend.whenStopped().addBoth(self._backendStopped, key, pool)
        return agent

    def _backendStopped(
        self, result: object, key: Tuple[int, int], pool: QuietConnectionPool
    ) -> None:
        """
        A backend's process is gone: forget its agent and close its idle
        connections.
        """
        del self._agents[key]
        pool.closeCachedConnections()


class ProxySite(Site):
    """
    The L{Site} serving a L{ReverseProxy}: quiet, and telling C{requestLog}
    (metrics, the access log) about every request, however it ends.

    @ivar requestLog: has C{finished(request, seconds)}, called once a
        response is complete, and C{unfinished(request, seconds)}, called
        when the connection closes before that; C{seconds} is the time
        since the request was received.  L{None} for neither.
    """

    noisy = False
    requestLog: Any = None

    def getResourceFor(self, request: Request) -> Resource:
        if self.requestLog is not None:
            request.receivedAt = self.reactor.seconds()
            request.notifyFinish().addErrback(self._unfinished, request)
        return Site.getResourceFor(self, request)

    def log(self, request: Request) -> None:
        if self.requestLog is not None:
            self.requestLog.finished(request, self._age(request))

    def _unfinished(self, reason: Failure, request: Request) -> None:
        self.requestLog.unfinished(request, self._age(request))

    def _age(self, request: Request) -> float:
        now = self.reactor.seconds()
        return now - getattr(request, "receivedAt", now)


@attrs.define(eq=False)
class _Forwarding:
    """
    One client request on its way to a backend and back.

    @ivar backend: The backend counting this request as in flight (it has
        had C{requestStarted()} and is owed one C{requestFinished()}), if
        any.
    @ivar pending: What this request is waiting for: C{whenActive()} or the
        Agent's response.
    @ivar retryCall: The delayed call that will try the active backend again.
    @ivar body: The protocol relaying the response body, while it does.
    @ivar lastError: Why the last backend tried could not take the request.
    @ivar clientGone: The client hung up before the response was finished.
    """

    proxy: ReverseProxy
    request: Request
    target: bytes
    headers: Headers
    bodyLength: int
    deadline: float
    backend: Any = None
    pending: Optional[Deferred] = None
    retryCall: Optional[IDelayedCall] = None
    body: Optional["_RelayBody"] = None
    lastError: Optional[str] = None
    clientGone: bool = False

    def route(self) -> None:
        """
        Send the request to the active backend or, if there is none, wait for
        one until the deadline.
        """
        self.retryCall = None
        backend = self.proxy._deployer.active
        if backend is not None:
            self._send(backend)
            return
        remaining = self.deadline - self.proxy._reactor.seconds()
        if remaining <= 0:
            self._noBackend(Failure(TimeoutError()))
            return
        waiting = self.pending = self.proxy._deployer.whenActive()
        waiting.addTimeout(remaining, self.proxy._reactor)
        waiting.addCallbacks(self._send, self._noBackend)
        waiting.addErrback(self._unexpected)

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

    def _send(self, backend: Any) -> None:
        """
        Forward the request to C{backend}, which counts it as in flight until
        its response is over.
        """
        self.backend = backend
        self.request.backendGeneration = backend.generation
        backend.requestStarted()
        producer = None
        if self.bodyLength or self.request.method not in _BODILESS_METHODS:
            producer = _ContentProducer(self.request.content, self.bodyLength)
        url = b"http://127.0.0.1:%d%s" % (backend.port, self.target)
        try:
            waiting = self.proxy._agentFor(backend).request(
                self.request.method, url, self.headers, producer
            )
        except Exception:
            waiting = fail()
        self.pending = waiting
        waiting.addCallbacks(self._responded, self._failed)
        waiting.addErrback(self._unexpected)

    def _failed(self, reason: Failure) -> None:
        """
        The backend did not answer: try again if the request never reached
        it and there is time left, or answer 502.
        """
        self.pending = None
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
        message = "rainbowd: backend generation {} on port {} failed: {}".format(
            backend.generation, backend.port, _describe(reason)
        )
        _log.warn(
            "Answering 502 to {method} {uri}: {message}",
            method=self.request.method,
            uri=self.request.uri,
            message=message,
        )
        _respondInPlainText(self.request, 502, message)

    def _responded(self, response: Any) -> None:
        """
        Relay the status and headers of the backend's response, then stream
        its body.
        """
        self.pending = None
        request = self.request
        request.setResponseCode(response.code, response.phrase)
        for name, values in _endToEnd(response.headers):
            request.responseHeaders.setRawHeaders(name, values)
        if (
            response.length is not UNKNOWN_LENGTH
            and request.method != b"HEAD"
            and response.code not in _NO_BODY_CODES
        ):
            request.responseHeaders.setRawHeaders(
                b"Content-Length", [b"%d" % (response.length,)]
            )
        self.body = _RelayBody(self)
        response.deliverBody(self.body)

    def bodyDone(self, reason: Failure) -> None:
        """
        The backend's response body is over, completely or not.
        """
        self.body = None
        backend = self.backend
        self._release()
        if self.clientGone:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.request.finish()
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

    def hungUp(self, reason: Failure) -> None:
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
        if self.body is not None:
            self.body.transport.stopProducing()

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


class _RelayBody(Protocol):
    """
    Write the backend's response body to the client as it arrives, letting
    the client's pace throttle the backend connection.
    """

    def __init__(self, forwarding: _Forwarding) -> None:
        self._forwarding = forwarding

    def connectionMade(self) -> None:
        if self._forwarding.clientGone:
            self.transport.stopProducing()
        else:
            self._forwarding.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self._forwarding.clientGone:
            self._forwarding.request.write(data)

    def connectionLost(self, reason: Failure) -> None:
        # The client cannot come back, so if it is still here it was here in
        # connectionMade, which registered the producer.
        if not self._forwarding.clientGone:
            self._forwarding.request.unregisterProducer()
        self._forwarding.bodyDone(reason)


@implementer(IBodyProducer)
class _ContentProducer:
    """
    Write a request body that twisted.web has already received in full, in
    chunks, synchronously.

    (L{twisted.web.client.FileBodyProducer} would do, but it runs on the
    global cooperator.)
    """

    chunkSize = 65536

    def __init__(self, content: Any, length: int) -> None:
        self._content = content
        self.length = length
        self._stopped = False

    def startProducing(self, consumer: Any) -> Deferred:
        self._content.seek(0)
        remaining = self.length
        while remaining > 0 and not self._stopped:
            chunk = self._content.read(min(self.chunkSize, remaining))
            if not chunk:
                break
            consumer.write(chunk)
            remaining -= len(chunk)
        if self._stopped:
            # IBodyProducer: once stopped, never fire.
            return Deferred()
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self._stopped = True


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


def _endToEnd(
    headers: Headers, drop: frozenset = _HOP_BY_HOP
) -> Iterator[Tuple[bytes, List[bytes]]]:
    """
    The headers of a message but those in C{drop} (lower-cased names) and
    those its I{Connection} headers name.
    """
    connection = headers.getRawHeaders(b"Connection")
    if connection:
        named = (name.strip().lower() for name in b",".join(connection).split(b","))
        drop = drop.union(name for name in named if name)
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in drop:
            yield name, values


def _forwardedHeaders(request: Request) -> Headers:
    """
    The headers to send to the backend with C{request}.
    """
    headers = Headers()
    for name, values in _endToEnd(request.requestHeaders, _NOT_FORWARDED):
        headers.setRawHeaders(name, values)

    hosts = request.requestHeaders.getRawHeaders(b"Host", [])
    authority = _authority(request.uri)
    if authority is not None:
        hosts = [authority]
        headers.setRawHeaders(b"Host", hosts)
    elif len(hosts) > 1:
        # The Agent insists on exactly one.
        headers.setRawHeaders(b"Host", hosts[:1])
    elif not hosts and isinstance(request.getHost(), (IPv4Address, IPv6Address)):
        # An HTTP/1.0 client may send none: name rainbowd's own address, not
        # the backend's port (the Agent's choice), which goes at the next
        # deploy.
        own = request.getHost()
        host = f"[{own.host}]" if own.type == "TCP6" else own.host
        hosts = [f"{host}:{own.port}".encode("ascii")]
        headers.setRawHeaders(b"Host", hosts)

    clientIP = getattr(request.getClientAddress(), "host", None)
    if clientIP is not None:
        forwardedFor = headers.getRawHeaders(b"X-Forwarded-For", [])
        forwardedFor = forwardedFor + [clientIP.encode("ascii")]
        headers.setRawHeaders(b"X-Forwarded-For", [b", ".join(forwardedFor)])
    if not headers.hasHeader(b"X-Forwarded-Proto"):
        proto = b"https" if request.isSecure() else b"http"
        headers.setRawHeaders(b"X-Forwarded-Proto", [proto])
    if hosts and not headers.hasHeader(b"X-Forwarded-Host"):
        headers.setRawHeaders(b"X-Forwarded-Host", hosts[:1])
    return headers


def _describe(reason: Failure) -> str:
    """
    Say what went wrong in a sentence, looking inside the Agent's wrapper
    exceptions (such as L{twisted.web.client.ResponseNeverReceived}).
    """
    inner = getattr(reason.value, "reasons", None)
    if inner:
        return "{}: {}".format(
            type(reason.value).__name__,
            "; ".join(_describe(each) for each in inner),
        )
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
