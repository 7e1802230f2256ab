# -*- test-case-name: rainbowd.test.unit.test_controlsite -*-
"""
Tests for L{rainbowd.control.site}: the control API's token, limits and
timeout.
"""

import json
import os
from typing import List, Tuple

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rainbowd.config import Config, ConfigError, endpointArguments, endpointParts
from rainbowd.control import site as controlsite
from rainbowd.control.browsers import BrowserGuard
from rainbowd.control.site import (
    MAX_BODY,
    MAX_CONNECTIONS,
    TIMEOUT,
    ControlSite,
    capped,
    exposureWarning,
    readControlToken,
)
from rainbowd.test.fakes import passTime
from rainbowd.web import requestlimits

TOKEN = b"Zm9vYmFyYmF6cXV4LXRoZS10b2tlbg=="

#: The default requestHeaderTimeout, in seconds.
HEADER_TIMEOUT = 10.0


def tokenFile(testCase: SynchronousTestCase, content: bytes, mode: int = 0o600) -> str:
    """
    A control token file of the test's, holding C{content}, with C{mode}.
    """
    path = os.path.abspath(testCase.mktemp())
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, mode)
    return path


class ReadTokenTests(SynchronousTestCase):
    """
    Tests for L{readControlToken}.
    """

    tokenFile = tokenFile

    def test_token(self) -> None:
        """
        The token is the file's text without surrounding whitespace, and a
        file only its owner can read gets no warning.
        """
        path = self.tokenFile(b"  " + TOKEN + b"\n")
        self.assertEqual(readControlToken(path), (TOKEN, None))

    def test_readableByOthers(self) -> None:
        """
        A file others may read is used, with a warning naming its mode and
        the chmod that fixes it, and not the token.
        """
        path = self.tokenFile(TOKEN + b"\n", 0o644)
        token, warning = readControlToken(path)
        self.assertEqual(token, TOKEN)
        self.assertIn("mode 0644", warning)
        self.assertIn(f"chmod 600 {path}", warning)
        self.assertNotIn(TOKEN.decode(), warning)

    def test_missing(self) -> None:
        """
        A missing file is a config error naming it and how to create one.
        """
        path = os.path.abspath(self.mktemp())
        error = self.assertRaises(ConfigError, readControlToken, path)
        self.assertIn(f'{path} ("controlTokenFile") does not exist', str(error))
        self.assertIn("head -c 32 /dev/urandom", str(error))

    def test_unreadable(self) -> None:
        """
        A file that cannot be read is a config error naming it and why.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        error = self.assertRaises(ConfigError, readControlToken, path)
        self.assertIn(f"Cannot read the control token file {path}", str(error))
        self.assertIn("directory", str(error))

    def test_empty(self) -> None:
        """
        A file with nothing but whitespace is a config error saying it is
        empty.
        """
        path = self.tokenFile(b" \n\n")
        error = self.assertRaises(ConfigError, readControlToken, path)
        self.assertIn(f'{path} ("controlTokenFile") is empty', str(error))

    def test_notOneWord(self) -> None:
        """
        A token with spaces or control characters, which no header can
        carry, is a config error that does not show it.
        """
        for content in [b"s3cret words\n", b"s3cret\tword", b"s3cr\xc3\xa9t"]:
            path = self.tokenFile(content)
            error = self.assertRaises(ConfigError, readControlToken, path)
            self.assertIn("one word of printable ASCII", str(error))
            self.assertNotIn("s3cr", str(error))


class EndpointTests(SynchronousTestCase):
    """
    Tests for L{endpointParts}, L{endpointArguments} and L{exposureWarning}.
    """

    def test_parts(self) -> None:
        """
        A description splits into its kind, positional and keyword
        arguments, with escaped colons kept in their argument.
        """
        self.assertEqual(
            endpointParts("tcp:7001:interface=127.0.0.1"),
            ("tcp", ["7001"], {"interface": "127.0.0.1"}),
        )
        self.assertEqual(
            endpointParts("unix:/run/a\\:b.sock:mode=600:lockfile=1"),
            ("unix", ["/run/a:b.sock"], {"mode": "600", "lockfile": "1"}),
        )
        self.assertEqual(
            endpointParts("tcp6:port=7001:interface=\\:\\:1"),
            ("tcp6", [], {"port": "7001", "interface": "::1"}),
        )

    def test_arguments(self) -> None:
        """
        Positional arguments are named in the order Twisted takes them,
        which differs between tcp and tcp6; keyword ones win.
        """
        self.assertEqual(
            endpointArguments("tcp:7001:10.0.0.5"),
            ("tcp", {"port": "7001", "interface": "10.0.0.5"}),
        )
        self.assertEqual(
            endpointArguments("tcp6:7001:50:\\:\\:1"),
            ("tcp6", {"port": "7001", "backlog": "50", "interface": "::1"}),
        )
        self.assertEqual(
            endpointArguments("unix:/run/c.sock:mode=600"),
            ("unix", {"address": "/run/c.sock", "mode": "600"}),
        )
        self.assertEqual(
            endpointArguments("systemd:INET:index=0"), ("systemd", {"index": "0"})
        )

    def config(self, controlPort: str, **changes) -> Config:
        return Config(
            run="app", cwd="/", stateDir="/s", controlPort=controlPort, **changes
        )

    def test_loopbackAndUnix(self) -> None:
        """
        A control API on loopback or a unix socket gets no warning.
        """
        for description in [
            "tcp:7001:interface=127.0.0.1",
            "tcp:7001:127.0.0.1",
            "tcp6:7001:interface=\\:\\:1",
            "unix:/run/rainbowd/control.sock:mode=600",
        ]:
            self.assertIsNone(exposureWarning(self.config(description)), description)

    def test_everyInterface(self) -> None:
        """
        A control API on every interface without a token is warned about:
        anyone can redeploy; with a token, that it travels in clear text.
        """
        warning = exposureWarning(self.config("tcp:7001"))
        self.assertIn("listens on every interface", warning)
        self.assertIn("anyone who can reach it can redeploy", warning)
        warning = exposureWarning(
            self.config("tcp:7001:interface=10.0.0.5", controlTokenFile="/t")
        )
        self.assertIn("listens on 10.0.0.5", warning)
        self.assertIn("clear text", warning)

    def test_ssl(self) -> None:
        """
        A TLS control API beyond loopback is warned about only without a
        token.
        """
        description = "ssl:7001:privateKey=k.pem:certKey=c.pem"
        self.assertIn(
            "anyone who can reach it", exposureWarning(self.config(description))
        )
        self.assertIsNone(
            exposureWarning(self.config(description, controlTokenFile="/t"))
        )


class Recorder(Resource):
    """
    A resource tree that records the requests reaching it, and answers
    C{/slow} only when the test says.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.reached: List[Tuple[bytes, bytes]] = []
        self.pending: list = []

    def render(self, request) -> object:
        self.reached.append((request.path, request.content.read()))
        if request.path == b"/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        return b"reached\n"


class ControlSiteTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.resource = Recorder()
        self.reactor = MemoryReactorClock()

    #: The host names the tests' requests use, beyond loopback.
    guard = BrowserGuard(allowedHosts=("x", "rainbowd"))

    def connect(self, token=None):
        """
        A connection to a L{ControlSite} over a string transport.
        """
        site = ControlSite(
            self.resource, token=token, reactor=self.reactor, guard=self.guard
        )
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def request(self, lines: List[bytes], body: bytes = b"", token=None) -> bytes:
        protocol, transport = self.connect(token)
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return transport.value()


class AuthorizationTests(ControlSiteTestCase):
    """
    Tests for L{ControlSite}'s token check.
    """

    def get(self, path: bytes, *headers: bytes) -> bytes:
        return self.request(
            [b"GET " + path + b" HTTP/1.1", b"Host: rainbowd", *headers], token=TOKEN
        )

    def test_noTokenConfigured(self) -> None:
        """
        Without a token, every request reaches the resources.
        """
        answer = self.request([b"GET /status HTTP/1.1", b"Host: x"])
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(self.resource.reached, [(b"/status", b"")])

    def test_missingToken(self) -> None:
        """
        A request without a token, to any path, is answered 401 with
        C{WWW-Authenticate} and a JSON error saying what to send, and
        reaches no resource.
        """
        for path in [b"/status", b"/metrics", b"/", b"/redeploy"]:
            answer = self.get(path)
            head, body = answer.split(b"\r\n\r\n", 1)
            self.assertTrue(head.startswith(b"HTTP/1.1 401 "), answer)
            self.assertIn(b'WWW-Authenticate: Bearer realm="rainbowd"', head)
            self.assertIn(
                'send "Authorization: Bearer TOKEN"', json.loads(body)["error"]
            )
        self.assertEqual(self.resource.reached, [])

    def test_wrongToken(self) -> None:
        """
        A wrong token, another scheme, or an empty one is answered 401.
        """
        for header in [
            b"Authorization: Bearer " + TOKEN[:-1],
            b"Authorization: Bearer " + TOKEN + b"x",
            b"Authorization: Basic " + TOKEN,
            b"Authorization: Bearer",
        ]:
            answer = self.get(b"/status", header)
            self.assertTrue(answer.startswith(b"HTTP/1.1 401 "), (header, answer))
        self.assertIn(
            b"does not match", self.get(b"/status", b"Authorization: Bearer x")
        )
        self.assertEqual(self.resource.reached, [])

    def test_rightToken(self) -> None:
        """
        The right token, with the scheme in any case, reaches the resource.
        """
        for scheme in [b"Bearer", b"bearer"]:
            answer = self.get(b"/status", b"Authorization: " + scheme + b" " + TOKEN)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(len(self.resource.reached), 2)

    def test_constantTime(self) -> None:
        """
        The token is compared with L{hmac.compare_digest}.
        """
        compared = []

        def compare(a, b):
            compared.append((a, b))
            return False

        self.patch(controlsite.hmac, "compare_digest", compare)
        answer = self.get(b"/status", b"Authorization: Bearer " + TOKEN)
        self.assertTrue(answer.startswith(b"HTTP/1.1 401 "))
        self.assertEqual(compared, [(TOKEN, TOKEN)])

    def test_tokenNeverLogged(self) -> None:
        """
        Refused and authorized requests are logged without the token.
        """
        with capturedLogs() as events:
            self.get(b"/status", b"Authorization: Bearer " + TOKEN)
            self.get(b"/status", b"Authorization: Bearer " + TOKEN[:-2])
            self.get(b"/status")
        text = repr(events) + "".join(formatEvent(e) for e in events)
        self.assertIn("wrong token", text)
        self.assertIn("no token", text)
        self.assertNotIn(TOKEN.decode()[:-2], text)


class ConnectionCapTests(ControlSiteTestCase):
    """
    Tests for L{capped}: the control port's own connection cap.
    """

    def cap(self):
        """
        The capped control site, whose every request is answered only when
        the test says so.
        """

        class Pending(Resource):
            isLeaf = True

            def render(self, request):
                return NOT_DONE_YET

        return capped(
            ControlSite(Pending(), reactor=self.reactor, guard=self.guard),
            self.reactor,
        )

    def connectTo(self, cap, request: bytes = b""):
        """
        A connection to C{cap} over a string transport, with C{request}
        received on it.
        """
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = cap.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        if request:
            protocol.dataReceived(request)
        return protocol, transport

    def test_pastTheCapRefused(self) -> None:
        """
        Past MAX_CONNECTIONS control connections, each with a request being
        answered, a new one gets a 503 whose JSON says why, and is closed;
        one closing frees a slot.
        """
        cap = self.cap()
        get = b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n"
        opened = [self.connectTo(cap, get) for _ in range(MAX_CONNECTIONS)]
        _, transport = self.connectTo(cap)
        for _, served in opened:
            self.assertFalse(served.disconnecting)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertIn(b"Content-Type: application/json", head)
        self.assertIn(
            f"{MAX_CONNECTIONS} are open, the most it serves at once",
            json.loads(body)["error"],
        )
        self.assertTrue(transport.disconnecting)
        opened[0][0].connectionLost(Failure(ConnectionDone()))
        _, transport = self.connectTo(cap, get)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(cap.open, MAX_CONNECTIONS)

    def test_waitingEvicted(self) -> None:
        """
        At the cap, a new control connection is served, and the oldest one
        still waiting for a request (idle, or trickling its head) is closed
        instead; those with a request being answered are kept.
        """
        cap = self.cap()
        get = b"GET /logs?follow=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        answering = self.connectTo(cap, get)
        trickling = self.connectTo(cap, b"GET /sta")
        idle = [self.connectTo(cap) for _ in range(MAX_CONNECTIONS - 2)]
        _, new = self.connectTo(cap)
        self.assertEqual(new.value(), b"")
        self.assertFalse(new.disconnecting)
        self.assertFalse(answering[1].disconnecting)
        self.assertTrue(trickling[1].disconnected)
        self.assertFalse(idle[0][1].disconnecting)
        _, newer = self.connectTo(cap)
        self.assertTrue(idle[0][1].disconnected)
        self.assertFalse(newer.disconnecting)
        self.assertEqual(cap.evicted, 2)

    def test_refusalsLogged(self) -> None:
        """
        Evictions and refusals are logged a line a second each, naming the
        control API.
        """
        cap = self.cap()
        get = b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n"
        with capturedLogs() as events:
            for _ in range(MAX_CONNECTIONS + 5):
                self.connectTo(cap)
            passTime(self.reactor, 1)
        [line] = [formatEvent(e) for e in events]
        self.assertIn(
            "the control API closed 5 connections still waiting for a request",
            line,
        )
        cap = self.cap()
        with capturedLogs() as events:
            for _ in range(MAX_CONNECTIONS + 5):
                self.connectTo(cap, get)
            passTime(self.reactor, 1)
        [line] = [formatEvent(e) for e in events]
        self.assertIn("the control API refused 5 connections with a 503", line)


class LimitTests(ControlSiteTestCase):
    """
    Tests for L{ControlSite}'s body limit and timeout.
    """

    def post(self, *headers: bytes):
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"\r\n".join([b"POST /redeploy HTTP/1.1", b"Host: x", *headers])
            + b"\r\n\r\n"
        )
        return protocol, transport

    def test_smallBody(self) -> None:
        """
        A body of C{MAX_BODY} bytes reaches the resource whole.
        """
        protocol, transport = self.post(b"Content-Length: %d" % (MAX_BODY,))
        protocol.dataReceived(b"x" * MAX_BODY)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.resource.reached, [(b"/redeploy", b"x" * MAX_BODY)])

    def test_contentLengthTooLarge(self) -> None:
        """
        A C{Content-Length} over C{MAX_BODY} is answered 413 as soon as the
        headers end (with no C{100 Continue}), the body is read and dropped,
        and the connection then closes; no resource sees it.
        """
        size = 5 * 1024 * 1024
        protocol, transport = self.post(
            b"Content-Length: %d" % (size,), b"Expect: 100-continue"
        )
        answer = transport.value()
        head, body = answer.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), answer)
        self.assertNotIn(b"100 Continue", answer)
        self.assertIn(b"Connection: close", head)
        self.assertIn("larger than 65536 bytes", json.loads(body)["error"])
        for _ in range(size // 65536 - 1):
            protocol.dataReceived(b"x" * 65536)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x" * 65536)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answer)
        self.assertEqual(self.resource.reached, [])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_chunkedTooLarge(self) -> None:
        """
        A chunked body is answered 413 once its chunks pass C{MAX_BODY};
        the connection closes after its last chunk; no resource sees it.
        """
        protocol, transport = self.post(b"Transfer-Encoding: chunked")
        chunk = b"%x\r\n%s\r\n" % (40000, b"x" * 40000)
        protocol.dataReceived(chunk)
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(chunk)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(chunk + b"0\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])

    def test_discardLimit(self) -> None:
        """
        Beyond C{DISCARD_LIMIT} bytes of a refused body the connection is
        closed without reading the rest.
        """
        self.patch(requestlimits, "DISCARD_LIMIT", 100000)
        protocol, transport = self.post(b"Content-Length: 10000000")
        protocol.dataReceived(b"x" * 60000)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x" * 60000)
        self.assertTrue(transport.disconnecting)

    def test_silentConnectionClosed(self) -> None:
        """
        A connection that sends nothing is closed, with no answer, once the
        request head is due.
        """
        protocol, transport = self.connect()
        passTime(self.reactor, HEADER_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_idleTimeout(self) -> None:
        """
        A kept-alive connection idle after a response is closed after
        C{TIMEOUT} seconds, with no answer.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = transport.value()
        passTime(self.reactor, TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answered)

    def test_trickledHeadTimedOut(self) -> None:
        """
        A request head trickled a byte every 5 s, which would keep an idle
        timeout from ever firing, is answered 408 and closed once
        requestHeaderTimeout has passed since the connection opened.
        """
        protocol, transport = self.connect()
        head = b"POST /redeploy HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        for byte in head[: int(HEADER_TIMEOUT / 5)]:
            protocol.dataReceived(bytes([byte]))
            passTime(self.reactor, 5)
        self.assertTrue(transport.disconnecting)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        self.assertIn("request head was not complete within 10 s", error)
        self.assertEqual(self.resource.reached, [])

    def test_trickledKeptAliveHeadTimedOut(self) -> None:
        """
        On a kept-alive connection, the next request's head is due
        requestHeaderTimeout after its first byte, however it trickles.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        passTime(self.reactor, TIMEOUT - 1)
        protocol.dataReceived(b"G")
        for _ in range(int(HEADER_TIMEOUT) - 1):
            passTime(self.reactor, 1)
            protocol.dataReceived(b"E")
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_slowBodyTimedOut(self) -> None:
        """
        A body slower than requestBodyMinRate over a requestBodyTimeout
        window is answered 408 and closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /redeploy HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
        )
        for _ in range(4):
            protocol.dataReceived(b"x" * 10)
            passTime(self.reactor, 5)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertEqual(self.resource.reached, [])

    def test_noTimeoutWhileAnswering(self) -> None:
        """
        A request being answered, such as a redeploy waiting for the new
        version, is not timed out.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        passTime(self.reactor, TIMEOUT * 10)
        self.assertFalse(transport.disconnecting)
        self.resource.pending[0].write(b"done")
        self.resource.pending[0].finish()
        self.assertIn(b"done", transport.value())


class BrowserTests(ControlSiteTestCase):
    """
    Tests for L{ControlSite}'s refusal of web pages and unknown host names.
    """

    guard = BrowserGuard()

    def connect(self, token=None, guard=None, unix=False, site=None):
        if site is None:
            site = ControlSite(
                self.resource, token=token, reactor=self.reactor, guard=guard or self.guard
            )
        if unix:
            peer, host = UNIXAddress(None), UNIXAddress(b"/run/control.sock")
        else:
            peer = IPv4Address("TCP", "127.0.0.1", 40000)
            host = IPv4Address("TCP", "127.0.0.1", 7001)
        protocol = site.buildProtocol(peer)
        transport = StringTransport(hostAddress=host, peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def send(
        self, *headers: bytes, method=b"POST", token=None, guard=None, unix=False, site=None
    ):
        """
        A request with C{headers}, and the answer's status code and JSON
        body (or raw body).
        """
        protocol, transport = self.connect(token, guard, unix, site)
        protocol.dataReceived(
            b"\r\n".join([method + b" /redeploy HTTP/1.1", *headers]) + b"\r\n\r\n"
        )
        head, body = transport.value().split(b"\r\n\r\n", 1)
        code = int(head.split(b" ", 2)[1])
        if head.lower().find(b"content-type: application/json") >= 0:
            return code, json.loads(body), head
        return code, body, head

    def test_curl(self) -> None:
        """
        C{curl -d '' localhost:7001/redeploy} goes through, as do
        rainbowctl's request to 127.0.0.1 and a Prometheus scrape.
        """
        code, body, head = self.send(
            b"Host: localhost:7001",
            b"User-Agent: curl/8.5.0",
            b"Accept: */*",
            b"Content-Length: 0",
            b"Content-Type: application/x-www-form-urlencoded",
        )
        self.assertEqual(code, 200)
        code, body, head = self.send(
            b"Host: 127.0.0.1:7001", b"Accept-Encoding: identity", b"Content-Length: 0"
        )
        self.assertEqual(code, 200)
        code, body, head = self.send(
            b"Host: localhost:7001",
            b"User-Agent: Prometheus/2.53.0",
            b"Accept: application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1",
            b"X-Prometheus-Scrape-Timeout-Seconds: 10",
            method=b"GET",
        )
        self.assertEqual(code, 200)
        self.assertEqual(len(self.resource.reached), 3)

    def test_crossOriginPost(self) -> None:
        """
        The simple cross-origin POSTs a page can send are refused with a
        JSON 403 naming the header, its value and the key, and reach no
        resource.
        """
        for origin, contentType in [
            (b"http://evil.example", b"application/x-www-form-urlencoded"),
            (b"http://evil.example", b"text/plain"),
            (b"null", b"multipart/form-data; boundary=x"),
        ]:
            code, body, head = self.send(
                b"Host: localhost:7001",
                b"Origin: " + origin,
                b"Sec-Fetch-Site: cross-site",
                b"Content-Type: " + contentType,
                b"Content-Length: 0",
            )
            self.assertEqual(code, 403)
            self.assertEqual(body["header"], "Origin")
            self.assertEqual(body["value"], origin.decode())
            self.assertEqual(body["key"], "controlAllowedOrigins")
            self.assertIn(origin.decode(), body["error"])
            self.assertIn(b"X-Content-Type-Options: nosniff", head)
            self.assertNotIn(b"Access-Control-Allow-Origin", head)
        self.assertEqual(self.resource.reached, [])

    def test_sameOriginRead(self) -> None:
        """
        A rebinding page's same-origin read (no Origin on a GET) is
        refused for its C{Sec-Fetch-Site}, or for its C{Host} when the
        browser sends no fetch metadata.
        """
        code, body, head = self.send(
            b"Host: attacker.example:7001", b"Sec-Fetch-Site: same-origin", method=b"GET"
        )
        self.assertEqual((code, body["header"]), (403, "Sec-Fetch-Site"))
        code, body, head = self.send(b"Host: attacker.example:7001", method=b"GET")
        self.assertEqual((code, body["header"], body["key"]), (403, "Host", "controlAllowedHosts"))
        self.assertEqual(self.resource.reached, [])

    def test_listed(self) -> None:
        """
        A listed origin's request goes through with CORS headers that let
        its page read the answer, and its preflight is answered before the
        token is asked for.
        """
        guard = BrowserGuard(
            allowedOrigins=("https://ops.example.com",), allowedHosts=("ops.example",)
        )
        headers = (b"Host: localhost:7001", b"Origin: https://ops.example.com")
        code, body, head = self.send(*headers, b"Content-Length: 0", guard=guard)
        self.assertEqual(code, 200)
        self.assertIn(b"Access-Control-Allow-Origin: https://ops.example.com", head)
        self.assertIn(b"Vary: Origin", head)
        code, body, head = self.send(
            *headers,
            b"Access-Control-Request-Method: POST",
            b"Access-Control-Request-Headers: authorization",
            method=b"OPTIONS",
            token=TOKEN,
            guard=guard,
        )
        self.assertEqual(code, 204)
        self.assertIn(b"Access-Control-Allow-Headers: authorization, accept", head)
        code, body, head = self.send(*headers, b"Content-Length: 0", token=TOKEN, guard=guard)
        self.assertEqual(code, 401)
        code, body, head = self.send(b"Host: ops.example", method=b"GET", guard=guard)
        self.assertEqual(code, 200)
        self.assertEqual(len(self.resource.reached), 2)

    def test_beforeToken(self) -> None:
        """
        A page's request gets the same 403 with the right token, a wrong
        one or none, so its answer says nothing of the token.
        """
        answers = set()
        for authorization in [
            [b"Authorization: Bearer " + TOKEN],
            [b"Authorization: Bearer wrong"],
            [],
        ]:
            for bad in [b"Origin: http://evil.example", b"Host: attacker.example"]:
                host = [] if bad.startswith(b"Host") else [b"Host: localhost"]
                code, body, head = self.send(
                    bad, *host, *authorization, b"Content-Length: 0", token=TOKEN
                )
                self.assertEqual(code, 403)
                self.assertNotIn(b"WWW-Authenticate", head)
                answers.add((bad, json.dumps(body)))
        self.assertEqual(len(answers), 2)
        self.assertEqual(self.resource.reached, [])

    def test_unixSocket(self) -> None:
        """
        Over a unix socket any C{Host} goes (rainbowctl sends
        C{localhost}), but an C{Origin} is still refused.
        """
        for host in [b"Host: localhost", b"Host: attacker.example"]:
            code, body, head = self.send(host, b"Content-Length: 0", unix=True)
            self.assertEqual(code, 200, host)
        code, body, head = self.send(
            b"Host: localhost", b"Origin: http://evil.example", unix=True
        )
        self.assertEqual(code, 403)

    def test_http10WithoutHost(self) -> None:
        """
        An HTTP/1.0 request without C{Host}, which no browser sends, goes
        through.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /status HTTP/1.0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 200 "), transport.value())

    def test_refusalsLogged(self) -> None:
        """
        The first refusal is logged at once with the peer, the request and
        the reason; those that follow within C{REFUSAL_LOG_INTERVAL} are
        counted in one line at its end, and the next after a quiet
        interval is logged at once again.
        """
        site = ControlSite(self.resource, reactor=self.reactor)
        with capturedLogs() as events:
            for _ in range(50):
                self.send(b"Host: localhost", b"Origin: http://evil.example", site=site)
        self.assertEqual(len(events), 1)
        text = formatEvent(events[0])
        self.assertIn("refused a control request from", text)
        self.assertIn("POST /redeploy", text)
        self.assertIn("Origin: http://evil.example", text)
        with capturedLogs() as events:
            self.reactor.advance(controlsite.REFUSAL_LOG_INTERVAL)
        self.assertEqual(len(events), 1)
        self.assertIn("refused 49 more control requests", formatEvent(events[0]))
        with capturedLogs() as events:
            self.reactor.advance(controlsite.REFUSAL_LOG_INTERVAL)
            self.send(b"Host: attacker.example", site=site)
        self.assertEqual(len(events), 1)
        self.assertIn("Host: attacker.example", formatEvent(events[0]))
