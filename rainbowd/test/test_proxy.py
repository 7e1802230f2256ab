# -*- test-case-name: rainbowd.test.test_proxy -*-
"""
Tests for L{rainbowd.proxy}, and through it for the client it forwards with,
L{rainbowd.backendclient}, and for L{rainbowd.tunnel}.

Everything happens in memory: a fake client speaks raw HTTP to a
L{ProxySite} through L{twisted.test.iosim}, the proxy's outgoing connections
land in a L{MemoryReactorClock}'s C{tcpClients}, and the tests connect them,
again with iosim, to backend L{Site}s (or raw protocols) of their own.
"""

import socket
from typing import Callable, List, Optional, Tuple

import attrs
from zope.interface import directlyProvides

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from rainbowd.backendclient import (
    CHUNK_SIZE,
    HEADER_NAMES_KEPT,
    IDLE_TIMEOUT,
    BackendConnection,
    Pool,
)
from rainbowd.proxy import ProxyRequest, ProxySite, ReverseProxy

CLIENT_ADDRESS = IPv4Address("TCP", "192.0.2.7", 54321)
PROXY_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8080)


@attrs.define
class FakeBackend:
    """
    A backend as the proxy sees it: a port, a generation, in-flight counting
    and a one-shot stop notification.

    Being an C{attrs.define} class it is unhashable, like the real one may be.
    """

    generation: int
    port: int
    started: int = 0
    finished: int = 0
    tunnels: list = attrs.field(factory=list)
    _stopWaiters: List[Deferred[None]] = attrs.field(factory=list)
    _drainWaiters: List[Deferred[None]] = attrs.field(factory=list)

    @property
    def inflight(self) -> int:
        return self.started - self.finished

    def requestStarted(self) -> None:
        self.started += 1

    def requestFinished(self) -> None:
        if self.finished >= self.started:
            raise AssertionError("requestFinished() without requestStarted()")
        self.finished += 1

    def tunnelOpened(self, tunnel: object) -> None:
        self.tunnels.append(tunnel)

    def tunnelClosed(self, tunnel: object) -> None:
        self.tunnels.remove(tunnel)

    def whenDraining(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._drainWaiters.append(waiter)
        return waiter

    def whenStopped(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._stopWaiters.append(waiter)
        return waiter

    def drain(self) -> None:
        waiters, self._drainWaiters = self._drainWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stop(self) -> None:
        self.drain()
        waiters, self._stopWaiters = self._stopWaiters, []
        for waiter in waiters:
            waiter.callback(None)


class FakeDeployer:
    """
    The deployer as the proxy sees it: a C{routable} backend, cancellable
    C{whenRoutable()} Deferreds, fired by L{activate}, and the reason
    C{whyNotRoutable()} gives, L{unroutable}.  L{activate} sets C{active}
    too, as a swap does, for those that read it (the metrics).
    """

    def __init__(self) -> None:
        self.active: Optional[FakeBackend] = None
        self.routable: Optional[FakeBackend] = None
        self.waiters: List[Deferred[FakeBackend]] = []
        self.unroutable: Optional[str] = None

    def whenRoutable(self) -> Deferred[FakeBackend]:
        waiter: Deferred[FakeBackend] = Deferred(self.waiters.remove)
        self.waiters.append(waiter)
        return waiter

    def whyNotRoutable(self) -> Optional[str]:
        return self.unroutable

    def activate(self, backend: Optional[FakeBackend]) -> None:
        self.active = self.routable = backend
        if backend is None:
            return
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(backend)


@attrs.frozen
class Received:
    """
    A request as a backend application received it.
    """

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> List[bytes]:
        return self.headers.getRawHeaders(name, [])


class BackendApp(Resource):
    """
    A backend web application recording the requests it gets and answering
    with C{respond(request)} (by default, a short greeting).

    @ivar received: The L{Received} requests.
    @ivar live: The twisted.web requests themselves, for answers given later.
    """

    isLeaf = True

    def __init__(self, respond: Optional[Callable[..., object]] = None) -> None:
        Resource.__init__(self)
        self.received: List[Received] = []
        self.live: list = []
        self._respond = respond or (lambda request: b"hello from the backend")

    def render(self, request):
        self.received.append(
            Received(
                request.method,
                request.uri,
                request.requestHeaders.copy(),
                request.content.read(),
            )
        )
        self.live.append(request)
        return self._respond(request)


def later(request) -> object:
    """
    A backend answer to be written by the test.
    """
    return NOT_DONE_YET


class CannedBackend(Protocol):
    """
    A backend speaking raw bytes: once it has a request head, it writes
    C{answer} and, if C{close}, closes the connection.
    """

    def __init__(self, answer: bytes, close: bool) -> None:
        self._answer = answer
        self._close = close
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer:
            self._buffer = b""
            if self._answer:
                self.transport.write(self._answer)
            if self._close:
                self.transport.loseConnection()


def cannedBackend(answer: bytes, close: bool = True) -> Factory:
    return Factory.forProtocol(lambda: CannedBackend(answer, close))


@attrs.frozen
class RawResponse:
    """
    A response as the client received it, byte for byte.

    @ivar headers: C{(name, value)} pairs, in order and as sent.
    @ivar complete: Whether the whole body arrived.
    """

    code: int
    phrase: bytes
    headers: Tuple[Tuple[bytes, bytes], ...]
    body: bytes
    complete: bool

    def header(self, name: bytes) -> List[bytes]:
        return [value for (each, value) in self.headers if each.lower() == name.lower()]

    def names(self) -> List[bytes]:
        return [name.lower() for (name, value) in self.headers]


def parseResponse(
    data: bytes, method: bytes, closed: bool
) -> Tuple[RawResponse, bytes]:
    """
    Parse one response from the start of C{data}, returning it and the bytes
    after it.
    """
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("no complete response head in {!r}".format(data))
    lines = head.split(b"\r\n")
    version, code, phrase = (lines[0].split(b" ", 2) + [b""])[:3]
    headers = tuple(
        (name.strip(), value.strip())
        for (name, value) in (line.split(b":", 1) for line in lines[1:])
    )
    response = RawResponse(int(code), phrase, headers, b"", True)
    if method == b"HEAD" or response.code in (204, 304):
        return response, rest
    if response.header(b"Transfer-Encoding") == [b"chunked"]:
        body = b""
        while True:
            sizeLine, separator, after = rest.partition(b"\r\n")
            if not separator:
                break
            size = int(sizeLine.split(b";")[0], 16)
            if len(after) < size + 2:
                break
            body += after[:size]
            rest = after[size + 2 :]
            if size == 0:
                return attrs.evolve(response, body=body), rest
        return attrs.evolve(response, body=body, complete=False), b""
    lengths = response.header(b"Content-Length")
    if lengths:
        length = int(lengths[0])
        return (
            attrs.evolve(response, body=rest[:length], complete=len(rest) >= length),
            rest[length:],
        )
    return attrs.evolve(response, body=rest, complete=closed), b""


class FakeClient(Protocol):
    """
    An HTTP client that writes raw requests and collects raw responses.
    """

    pump: iosim.IOPump

    def __init__(self) -> None:
        self.data = b""
        self.methods: List[bytes] = []
        self.lostReason: Optional[Failure] = None

    def send(self, raw: bytes) -> None:
        self.methods.append(raw.split(b" ", 1)[0])
        self.transport.write(raw)

    def hangUp(self) -> None:
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:
        self.lostReason = reason

    @property
    def closed(self) -> bool:
        return self.lostReason is not None

    def responses(self) -> List[RawResponse]:
        data = self.data
        result = []
        for method in self.methods:
            if not data:
                break
            response, data = parseResponse(data, method, self.closed)
            result.append(response)
        return result

    def response(self) -> RawResponse:
        [response] = self.responses()
        return response


def rawRequest(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Tuple[Tuple[bytes, bytes], ...] = ((b"Host", b"app.example"),),
    body: bytes = b"",
) -> bytes:
    """
    An HTTP/1.1 request, with a I{Content-Length} if it has a body.
    """
    lines = [method + b" " + target + b" HTTP/1.1"]
    lines.extend(name + b": " + value for (name, value) in headers)
    if body:
        lines.append(b"Content-Length: %d" % (len(body),))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class World:
    """
    A proxy, its fake deployer, its clients and the backend connections it
    opened, all in memory.
    """

    def __init__(
        self,
        queueTimeout: float = 30.0,
        reactor: Optional[MemoryReactorClock] = None,
        **proxyOptions: object,
    ) -> None:
        self.reactor = MemoryReactorClock() if reactor is None else reactor
        self.deployer = FakeDeployer()
        self.proxy = ReverseProxy(
            self.deployer, self.reactor, queueTimeout, **proxyOptions  # type: ignore[arg-type]
        )
        self.site = ProxySite(self.proxy, reactor=self.reactor)
        self.pumps: List[iosim.IOPump] = []
        self._handled = 0

    def connectClient(
        self, peer: IPv4Address = CLIENT_ADDRESS, secure: bool = False
    ) -> FakeClient:
        """
        Open a client connection to the proxy.
        """
        serverProtocol = self.site.buildProtocol(peer)
        serverTransport = iosim.FakeTransport(
            serverProtocol, isServer=True, hostAddress=PROXY_ADDRESS, peerAddress=peer
        )
        if secure:
            directlyProvides(serverTransport, ISSLTransport)
        client = FakeClient()
        clientTransport = iosim.FakeTransport(
            client, isServer=False, hostAddress=peer, peerAddress=PROXY_ADDRESS
        )
        client.pump = iosim.connect(
            serverProtocol,
            serverTransport,
            client,
            clientTransport,
            clock=self.reactor,
        )
        self.pumps.append(client.pump)
        return client

    def request(self, raw: bytes, **kwargs: object) -> FakeClient:
        """
        Open a client connection to the proxy and send C{raw} over it.
        """
        client = self.connectClient(**kwargs)  # type: ignore[arg-type]
        client.send(raw)
        self.flush()
        return client

    def attempts(self) -> List[int]:
        """
        The ports of the connection attempts not handled yet.
        """
        return [
            port for (host, port, _, _, _) in self.reactor.tcpClients[self._handled :]
        ]

    def _nextAttempt(self):
        if len(self.reactor.tcpClients) <= self._handled:
            raise AssertionError("the proxy opened no new connection")
        index = self._handled
        self._handled += 1
        return self.reactor.tcpClients[index], self.reactor.connectors[index]

    def accept(
        self,
        backendFactory: Factory,
        transportType: Callable[..., iosim.FakeTransport] = iosim.FakeTransport,
    ) -> iosim.IOPump:
        """
        Connect the proxy's next connection attempt to a protocol from
        C{backendFactory}, and let the bytes flow.

        @param transportType: Makes the proxy's end of the connection.
        """
        (host, port, factory, timeout, bindAddress), connector = self._nextAttempt()
        if host != "127.0.0.1":
            raise AssertionError("the proxy connected to {}".format(host))
        backendAddress = IPv4Address("TCP", host, port)
        proxyAddress = IPv4Address("TCP", "127.0.0.1", 40000 + self._handled)
        serverProtocol = backendFactory.buildProtocol(proxyAddress)
        serverTransport = iosim.FakeTransport(
            serverProtocol,
            isServer=True,
            hostAddress=backendAddress,
            peerAddress=proxyAddress,
        )
        clientProtocol = factory.buildProtocol(None)
        clientTransport = transportType(
            clientProtocol,
            isServer=False,
            hostAddress=proxyAddress,
            peerAddress=backendAddress,
        )
        pump = iosim.connect(
            serverProtocol,
            serverTransport,
            clientProtocol,
            clientTransport,
            clock=self.reactor,
        )
        self.pumps.append(pump)
        self.flush()
        return pump

    def refuse(self) -> None:
        """
        Refuse the proxy's next connection attempt, as a port nobody listens
        on would.
        """
        (host, port, factory, timeout, bindAddress), connector = self._nextAttempt()
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.flush()

    def flush(self) -> None:
        """
        Move bytes on every connection until none move.
        """
        for _ in range(100):
            moved = False
            for pump in list(self.pumps):
                if pump.flush():
                    moved = True
            if not moved:
                return
        raise AssertionError("the connections never went quiet")


def backendSite(world: World, app: Resource) -> Site:
    site = Site(app, reactor=world.reactor)
    site.noisy = False
    return site


class ForwardingTests(SynchronousTestCase):
    """
    Requests reach the active backend as the client sent them, plus
    forwarding headers.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=3, port=20001)
        self.world.deployer.activate(self.backend)
        self.app = BackendApp()
        self.site = backendSite(self.world, self.app)

    def forward(self, raw: bytes, **kwargs: object) -> Tuple[Received, FakeClient]:
        """
        Send C{raw} through the proxy to the backend app.
        """
        client = self.world.request(raw, **kwargs)
        self.world.accept(self.site)
        [received] = self.app.received
        return received, client

    def test_relaysActiveBackendResponse(self) -> None:
        """
        A request is sent to 127.0.0.1 on the active backend's port and the
        backend's response comes back to the client.
        """
        client = self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [20001])
        self.world.accept(self.site)
        response = client.response()
        self.assertEqual(
            (response.code, response.body, response.complete),
            (200, b"hello from the backend", True),
        )

    def test_pathQueryAndMethodForwarded(self) -> None:
        """
        The full path and query string and the method are forwarded as is.
        """
        received, client = self.forward(rawRequest(b"DELETE", b"/a/b?x=1&y=2"))
        self.assertEqual((received.method, received.uri), (b"DELETE", b"/a/b?x=1&y=2"))

    def test_absoluteFormTargetForwardedAsPath(self) -> None:
        """
        A request target in absolute form reaches the backend as its path
        and query string.
        """
        received, client = self.forward(rawRequest(target=b"http://app.example/p?q=1"))
        self.assertEqual(received.uri, b"/p?q=1")

    def test_absoluteFormWithoutPathForwardedFromSlash(self) -> None:
        """
        An absolute-form target with a query string but no path reaches the
        backend as C{/} and the query string, a valid origin-form target.
        """
        received, client = self.forward(rawRequest(target=b"http://app.example?q=1"))
        self.assertEqual(received.uri, b"/?q=1")

    def test_absoluteFormHostWins(self) -> None:
        """
        For an absolute-form target the backend gets the target's host and
        port as I{Host} and I{X-Forwarded-Host}, not the I{Host} header the
        client sent alongside it (RFC 9112 section 3.2.2).
        """
        received, client = self.forward(
            rawRequest(
                target=b"http://user@shop.example:8443/p",
                headers=((b"Host", b"other.example"),),
            )
        )
        self.assertEqual(received.header(b"Host"), [b"shop.example:8443"])
        self.assertEqual(received.header(b"X-Forwarded-Host"), [b"shop.example:8443"])

    def test_requestBodyForwarded(self) -> None:
        """
        A request body, larger than one chunk of the body producer, reaches
        the backend whole, with its length.
        """
        body = bytes(range(256)) * 1000
        received, client = self.forward(rawRequest(b"PUT", b"/upload", body=body))
        self.assertEqual(received.method, b"PUT")
        self.assertEqual(received.body, body)
        self.assertEqual(received.header(b"Content-Length"), [b"%d" % (len(body),)])

    def test_chunkedRequestBodyForwardedWithLength(self) -> None:
        """
        A chunked request body is forwarded de-chunked, with a
        I{Content-Length} and no I{Transfer-Encoding}.
        """
        raw = (
            b"POST /form HTTP/1.1\r\nHost: app.example\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        received, client = self.forward(raw)
        self.assertEqual(received.body, b"hello world")
        self.assertEqual(received.header(b"Content-Length"), [b"11"])
        self.assertEqual(received.header(b"Transfer-Encoding"), [])

    def test_getWithoutBodyHasNoLength(self) -> None:
        """
        A GET without a body is forwarded without I{Content-Length} or
        I{Transfer-Encoding}.
        """
        received, client = self.forward(rawRequest())
        self.assertEqual(received.header(b"Content-Length"), [])
        self.assertEqual(received.header(b"Transfer-Encoding"), [])

    def test_hostPreserved(self) -> None:
        """
        The client's I{Host} header reaches the backend unchanged.
        """
        received, client = self.forward(
            rawRequest(headers=((b"Host", b"shop.example:8443"),))
        )
        self.assertEqual(received.header(b"Host"), [b"shop.example:8443"])

    def test_hostDefaultsToRainbowd(self) -> None:
        """
        A request without I{Host} (from an HTTP/1.0 client) reaches the
        backend with rainbowd's own address as I{Host}, not the backend's.
        """
        received, client = self.forward(rawRequest(headers=()))
        self.assertEqual(received.header(b"Host"), [b"127.0.0.1:8080"])
        self.assertEqual(received.header(b"X-Forwarded-Host"), [b"127.0.0.1:8080"])

    def test_forwardedForSet(self) -> None:
        """
        I{X-Forwarded-For} is set to the client's IP when the client sent
        none.
        """
        received, client = self.forward(rawRequest())
        self.assertEqual(received.header(b"X-Forwarded-For"), [b"192.0.2.7"])

    def test_forwardedForAppended(self) -> None:
        """
        The client's IP is appended to the I{X-Forwarded-For} values the
        client sent, in one comma-separated header.
        """
        received, client = self.forward(
            rawRequest(
                headers=(
                    (b"Host", b"app.example"),
                    (b"X-Forwarded-For", b"203.0.113.1"),
                    (b"X-Forwarded-For", b"198.51.100.2"),
                )
            )
        )
        self.assertEqual(
            received.header(b"X-Forwarded-For"),
            [b"203.0.113.1, 198.51.100.2, 192.0.2.7"],
        )

    def test_underscoredHeadersDropped(self) -> None:
        """
        Headers with an underscore in their name, which WSGI and CGI apps
        read as the same header with a dash, are not forwarded, so that
        I{X_Forwarded_For} cannot pass for I{X-Forwarded-For}.
        """
        received, client = self.forward(
            rawRequest(
                headers=(
                    (b"Host", b"app.example"),
                    (b"X_Forwarded_For", b"203.0.113.66"),
                    (b"X-Real_IP", b"203.0.113.66"),
                    (b"Custom_Header", b"x"),
                    (b"Custom-Header", b"kept"),
                )
            )
        )
        names = [name for name, _ in received.headers.getAllRawHeaders()]
        self.assertEqual([name for name in names if b"_" in name], [])
        self.assertEqual(received.header(b"X-Forwarded-For"), [b"192.0.2.7"])
        self.assertEqual(received.header(b"Custom-Header"), [b"kept"])
        self.assertNotIn(b"203.0.113.66", repr(received.headers).encode())

    def test_forwardedProtoAndHostSet(self) -> None:
        """
        I{X-Forwarded-Proto} and I{X-Forwarded-Host} are set from the
        connection and I{Host} when the client sent none.
        """
        received, client = self.forward(rawRequest())
        self.assertEqual(received.header(b"X-Forwarded-Proto"), [b"http"])
        self.assertEqual(received.header(b"X-Forwarded-Host"), [b"app.example"])

    def test_forwardedProtoHttpsOnSecureConnection(self) -> None:
        """
        I{X-Forwarded-Proto} is C{https} for a request that came over TLS.
        """
        received, client = self.forward(rawRequest(), secure=True)
        self.assertEqual(received.header(b"X-Forwarded-Proto"), [b"https"])

    def test_forwardedProtoAndHostKept(self) -> None:
        """
        I{X-Forwarded-Proto} and I{X-Forwarded-Host} sent by the client (an
        nginx in front) are forwarded unchanged.
        """
        received, client = self.forward(
            rawRequest(
                headers=(
                    (b"Host", b"127.0.0.1:8080"),
                    (b"X-Forwarded-Proto", b"https"),
                    (b"X-Forwarded-Host", b"www.example"),
                )
            )
        )
        self.assertEqual(received.header(b"X-Forwarded-Proto"), [b"https"])
        self.assertEqual(received.header(b"X-Forwarded-Host"), [b"www.example"])

    def test_repeatedRequestHeadersKept(self) -> None:
        """
        A request header sent twice reaches the backend twice.
        """
        received, client = self.forward(
            rawRequest(
                headers=(
                    (b"Host", b"app.example"),
                    (b"Cookie", b"a=1"),
                    (b"Cookie", b"b=2"),
                )
            )
        )
        self.assertEqual(received.header(b"Cookie"), [b"a=1", b"b=2"])

    def test_hopByHopRequestHeadersStripped(self) -> None:
        """
        Hop-by-hop request headers, and those named by I{Connection}, are not
        forwarded; the others are.
        """
        received, client = self.forward(
            rawRequest(
                headers=(
                    (b"Host", b"app.example"),
                    (b"Connection", b"keep-alive, X-Hop"),
                    (b"Keep-Alive", b"timeout=5"),
                    (b"X-Hop", b"secret"),
                    (b"Proxy-Authorization", b"Basic Zm9vOmJhcg=="),
                    (b"Proxy-Connection", b"keep-alive"),
                    (b"TE", b"trailers"),
                    (b"Trailer", b"X-Checksum"),
                    (b"Upgrade", b"h2c"),
                    (b"X-End-To-End", b"kept"),
                )
            )
        )
        for name in [
            b"connection",
            b"keep-alive",
            b"x-hop",
            b"proxy-authorization",
            b"proxy-connection",
            b"te",
            b"trailer",
            b"upgrade",
        ]:
            self.assertEqual(received.header(name), [], name)
        self.assertEqual(received.header(b"X-End-To-End"), [b"kept"])

    def test_ambiguousFramingRefused(self) -> None:
        """
        A request framed two ways (I{Content-Length} and I{Transfer-Encoding})
        or with a coding it does not know, is refused with 400 by
        twisted.web, and one with C{identity}, which it would take, with 501
        by rainbowd; none reaches a backend, so that it
        cannot be read one way by rainbowd and another by the app.
        """
        for framing, code in [
            (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400),
            (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", 400),
            (b"Transfer-Encoding: gzip, chunked\r\n", 400),
            (b"Transfer-Encoding: identity\r\n", 501),
            (b"Content-Length: 3\r\nContent-Length: 4\r\n", 400),
        ]:
            client = self.world.request(
                b"POST / HTTP/1.1\r\nHost: app.example\r\n" + framing + b"\r\n"
                b"3\r\nabc\r\n0\r\n\r\n"
            )
            self.assertEqual(client.response().code, code, framing)
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual(self.backend.started, 0)

    def test_expectContinueAnsweredHere(self) -> None:
        """
        I{Expect: 100-continue} is answered by rainbowd (twisted.web) before
        the body comes, and not forwarded, since the backend gets the whole
        body at once.
        """
        received, client = self.forward(
            rawRequest(
                b"PUT",
                headers=((b"Host", b"app.example"), (b"Expect", b"100-continue")),
                body=b"data",
            )
        )
        self.assertTrue(client.data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        self.assertEqual(received.header(b"Expect"), [])
        self.assertEqual(received.body, b"data")

    def test_severalHostsRefused(self) -> None:
        """
        A request with more than one I{Host} header is answered with 400
        saying so, without reaching a backend (RFC 9112 section 3.2).
        """
        client = self.world.request(
            rawRequest(headers=((b"Host", b"app.example"), (b"Host", b"evil.example")))
        )
        response = client.response()
        self.assertEqual(response.code, 400)
        self.assertEqual(
            response.body,
            b"rainbowd: cannot forward a request with 2 Host headers; "
            b"send exactly one\n",
        )
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual(self.backend.started, 0)

    def test_unforwardableTargetRefused(self) -> None:
        """
        A request target that is neither a path nor an absolute URI is
        answered with 400 without reaching a backend.
        """
        client = self.world.request(rawRequest(target=b"nonsense"))
        self.assertEqual(client.response().code, 400)
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual(self.backend.started, 0)

    def test_malformedAbsoluteFormRefused(self) -> None:
        """
        An absolute-form target whose authority does not parse is answered
        with 400 without reaching a backend, and logs no error.
        """
        client = self.world.request(rawRequest(target=b"http://[::1/p"))
        self.assertEqual(client.response().code, 400)
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual(self.flushLoggedErrors(), [])


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
            disconnectReason = ConnectionLost("Connection reset by peer")

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

    def slotGranted(self) -> None:
        self.heard.append("granted")

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


class ReadPausingTransport(iosim.FakeTransport):
    """
    An iosim transport whose reading can be paused, as a TCP transport's
    can: what arrives meanwhile is held until it is resumed.
    """

    readPaused = False

    def __init__(self, *args: object, **kwargs: object) -> None:
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


UPGRADE_REQUEST = rawRequest(
    headers=(
        (b"Host", b"app.example"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"echo"),
    )
)


class EchoUpgrade(Protocol):
    """
    A backend that switches to an echo protocol: it answers 101, says hello,
    and then sends back every byte it gets.

    @ivar head: The request head it got.
    """

    head = b""

    def __init__(self) -> None:
        self._buffer: Optional[bytes] = b""

    def dataReceived(self, data: bytes) -> None:
        if self._buffer is None:
            self.transport.write(data)
            return
        self._buffer += data
        if b"\r\n\r\n" in self._buffer:
            EchoUpgrade.head, _, rest = self._buffer.partition(b"\r\n\r\n")
            self._buffer = None
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: echo\r\n\r\nhello "
            )
            if rest:
                self.transport.write(rest)


class UpgradeTests(SynchronousTestCase):
    """
    A request asking to upgrade gets a connection of its own to the backend
    and, if the backend agrees (101), the two connections are joined.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def upgrade(self) -> Tuple[FakeClient, iosim.IOPump]:
        client = self.world.connectClient()
        client.send(UPGRADE_REQUEST + b"early ")
        self.world.flush()
        pump = self.world.accept(Factory.forProtocol(EchoUpgrade))
        return client, pump

    def test_tunnel(self) -> None:
        """
        The backend gets the upgrade headers, the client gets the 101 with
        them, and bytes then go both ways, those the client sent before the
        101 included.
        """
        client, pump = self.upgrade()
        self.assertIn(b"\r\nConnection: Upgrade\r\nUpgrade: echo", EchoUpgrade.head)
        head, _, rest = client.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head)
        self.assertIn(b"\r\nUpgrade: echo", head)
        self.assertEqual(rest, b"hello early ")
        client.transport.write(b"and more")
        self.world.flush()
        self.assertTrue(client.data.endswith(b"hello early and more"))
        self.assertEqual(len(self.backend.tunnels), 1)
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))

    def test_ownConnection(self) -> None:
        """
        An upgrade does not take an idle pooled connection.
        """
        self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, BackendApp()))
        client = self.world.connectClient()
        client.send(UPGRADE_REQUEST)
        self.world.flush()
        self.assertEqual(self.world.attempts(), [20001])

    def test_declined(self) -> None:
        """
        A backend answering an upgrade request without switching has its
        answer relayed, and the connection is then closed.
        """
        client = self.world.request(UPGRADE_REQUEST)
        pump = self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().body, b"hello from the backend")
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual(self.backend.tunnels, [])

    def test_clientCloses(self) -> None:
        """
        The client closing its side closes the backend's, and the backend
        stops counting the tunnel.
        """
        client, pump = self.upgrade()
        client.hangUp()
        self.world.flush()
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual(self.backend.tunnels, [])

    def test_backendCloses(self) -> None:
        """
        The backend closing its side closes the client's.
        """
        client, pump = self.upgrade()
        pump.server.transport.loseConnection()
        self.world.flush()
        self.assertTrue(client.closed)
        self.assertEqual(self.backend.tunnels, [])

    def test_close(self) -> None:
        """
        C{close()}, which a backend at the end of its drain calls, closes
        both sides.
        """
        client, pump = self.upgrade()
        [tunnel] = self.backend.tunnels
        tunnel.close()
        self.world.flush()
        self.assertTrue(client.closed)
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual(self.backend.tunnels, [])

    def test_backpressure(self) -> None:
        """
        Each side's transport is the producer of the other's, so a full one
        pauses reading from the other.
        """
        client, pump = self.upgrade()
        clientSide = client.pump.serverIO
        backendSide = pump.clientIO
        self.assertIs(clientSide.producer, backendSide)
        self.assertIs(backendSide.producer, clientSide)

    def test_logged(self) -> None:
        """
        An upgraded request is logged once, as a 101 from its backend's
        generation.
        """
        logged = []
        self.world.site.log = lambda request: logged.append(
            (request.code, request.backendGeneration)
        )
        self.upgrade()
        self.assertEqual(logged, [(101, 1)])


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
        logged = []
        world.site.log = lambda request: logged.append(
            (request.uri, request.code, request.backendGeneration)
        )
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


class Recorder(Protocol):
    """
    A backend that records what it receives and answers only what the test
    writes to its transport.
    """

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


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


def ok(body: bytes) -> bytes:
    """
    A kept-alive response with C{body}.
    """
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


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
        logged = []
        self.world.site.log = lambda request: logged.append(
            (request.uri, request.code, request.backendGeneration)
        )
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
