# -*- test-case-name: rainbowd.test.unit.test_requesthead -*-
"""
Tests for L{rainbowd.web.requesthead}: its functions on their own, and what
reaches the backend of a client's request through the proxy, in the world
of L{rainbowd.test.inmemory}.
"""

from typing import List, Tuple

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from rainbowd.test.inmemory import (
    BackendApp,
    FakeBackend,
    FakeClient,
    Received,
    World,
    backendSite,
    rawRequest,
)
from rainbowd.web.requesthead import (
    Unforwardable,
    authority,
    isUpgrade,
    originForm,
    requestHead,
)


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


def request(
    uri: bytes = b"/",
    headers: List[Tuple[bytes, bytes]] = [(b"Host", b"example.com")],
    method: bytes = b"GET",
    clientproto: bytes = b"HTTP/1.1",
) -> Request:
    """
    A request as twisted.web hands it to the proxy, from 192.0.2.7.
    """
    channel = DummyChannel()
    channel.transport = DummyChannel.TCP(IPv4Address("TCP", "192.0.2.7", 54321))
    result = Request(channel)
    result.method = method
    result.uri = uri
    result.clientproto = clientproto
    for name, value in headers:
        result.requestHeaders.addRawHeader(name, value)
    return result


class FunctionTests(SynchronousTestCase):
    """
    The functions of L{rainbowd.web.requesthead}, on their own.
    """

    def test_originForm(self) -> None:
        """
        A path is sent as it is, an absolute URI as its path and query, and
        anything else not at all.
        """
        for uri, target in [
            (b"/a?b=c", b"/a?b=c"),
            (b"http://example.com/a?b", b"/a?b"),
            (b"http://example.com", b"/"),
            (b"http://example.com?q=1", b"/?q=1"),
            (b"HTTPS://user@example.com:8443/x", b"/x"),
            (b"*", None),
            (b"example.com:443", None),
            (b"a", None),
        ]:
            self.assertEqual(originForm(uri), target, uri)

    def test_authority(self) -> None:
        """
        The authority of an absolute URI, without user info, takes the place
        of the Host header; a path has none.
        """
        for uri, host in [
            (b"http://example.com:8080/a", b"example.com:8080"),
            (b"http://user:secret@example.com/", b"example.com"),
            (b"http:///a", None),
            (b"/a", None),
        ]:
            self.assertEqual(authority(uri), host, uri)

    def test_isUpgrade(self) -> None:
        """
        Only an HTTP/1.1 request with an I{Upgrade} header that its
        I{Connection} header names asks to switch protocols.
        """
        upgrade = [(b"Upgrade", b"websocket"), (b"Connection", b"keep-alive, Upgrade")]
        self.assertTrue(isUpgrade(request(headers=upgrade)))
        self.assertFalse(isUpgrade(request(headers=upgrade, clientproto=b"HTTP/1.0")))
        self.assertFalse(isUpgrade(request(headers=upgrade[:1])))
        self.assertFalse(isUpgrade(request(headers=upgrade[1:])))

    def test_requestHead(self) -> None:
        """
        The head sent to the backend has the target given, the client's end
        to end headers, its Host, the forwarding headers and the body's
        length, and none of the hop-by-hop headers or those with an
        underscore in their name.
        """
        head = requestHead(
            request(
                b"/ignored",
                [
                    (b"Host", b"example.com"),
                    (b"Connection", b"X-Hop"),
                    (b"X-Hop", b"1"),
                    (b"Keep-Alive", b"300"),
                    (b"X_Forwarded_For", b"10.0.0.1"),
                    (b"Accept", b"*/*"),
                ],
                method=b"POST",
            ),
            b"/target",
            5,
            False,
        )
        self.assertEqual(
            head,
            b"POST /target HTTP/1.1\r\nAccept: */*\r\nHost: example.com\r\n"
            b"X-Forwarded-Host: example.com\r\nX-Forwarded-For: 192.0.2.7\r\n"
            b"X-Forwarded-Proto: http\r\nContent-Length: 5\r\n\r\n",
        )

    def test_noHost(self) -> None:
        """
        Without a Host header, the head names rainbowd's own address.
        """
        r = request(headers=[], clientproto=b"HTTP/1.0")
        r.host = IPv4Address("TCP", "127.0.0.1", 7000)
        self.assertIn(b"\r\nHost: 127.0.0.1:7000\r\n", requestHead(r, b"/", 0, False))

    def test_unforwardable(self) -> None:
        """
        Two Host headers, or a target naming a host that cannot go in a
        header, cannot be forwarded.
        """
        twoHosts = request(headers=[(b"Host", b"a"), (b"Host", b"b")])
        self.assertRaises(Unforwardable, requestHead, twoHosts, b"/", 0, False)
        badHost = request(b"http://a\x00b/", headers=[])
        self.assertRaises(Unforwardable, requestHead, badHost, b"/", 0, False)
