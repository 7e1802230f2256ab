# -*- test-case-name: rainbowd.test.unit.test_proxy -*-
"""
The in-memory world the tests of the proxy, of the backend client and of the
tunnel run in.

Everything happens in memory: a fake client speaks raw HTTP to a
L{ProxySite} through L{twisted.test.iosim}, the proxy's outgoing connections
land in a L{MemoryReactorClock}'s C{tcpClients}, and the tests connect them,
again with iosim, to backend L{Site}s (or raw protocols) of their own.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import ISSLTransport, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import directlyProvides, implementer

from rainbowd.app.backend import ResponseTally
from rainbowd.interfaces import IRoutableBackend, IRoutingDeployer
from rainbowd.web.proxy import ProxySite, ReverseProxy

CLIENT_ADDRESS = IPv4Address("TCP", "192.0.2.7", 54321)


PROXY_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8080)


@implementer(IRoutableBackend)
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
    tally: ResponseTally = attrs.field(factory=ResponseTally)
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


@implementer(IRoutingDeployer)
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

    def header(self, name: bytes) -> Sequence[bytes]:
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

    transport: ITransport  # connected before it is used

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

    transport: ITransport  # connected before it is used

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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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
            # ReverseProxy's keyword arguments, whatever the test gives.
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
        # connectClient's keyword arguments, passed on as they came.
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
        backendFactory: "Factory[Any]",
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

    transport: ITransport  # connected before it is used

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


class Recorder(Protocol):
    """
    A backend that records what it receives and answers only what the test
    writes to its transport.
    """

    transport: ITransport  # connected before it is used

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def ok(body: bytes) -> bytes:
    """
    A kept-alive response with C{body}.
    """
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
