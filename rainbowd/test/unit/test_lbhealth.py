# -*- test-case-name: rainbowd.test.unit.test_lbhealth -*-
"""
Tests for L{rainbowd.web.lbhealth}: the load balancer's health check, answered
on the public port.
"""

from typing import List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rainbowd.web.lbhealth import LBHealthFront, publicResource, whyDown
from rainbowd.web.proxy import ProxySite
from rainbowd.web.stopdelay import StopDelay
from rainbowd.web.traffic import Mode, Traffic

PATH = "/_rainbowd/up"


class FakeDeployer:
    """
    A deployer with only the C{routable} backend the check looks at.
    """

    def __init__(self, routable: object = None) -> None:
        self.routable = routable


class RecordingProxy(Resource):
    """
    Stands for the reverse proxy: records the requests handed to it, and
    answers each with 200 "app".
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.seen: List[bytes] = []

    def render(self, request) -> object:
        self.seen.append(request.uri)
        request.setHeader(b"Content-Length", b"3")
        request.write(b"app")
        request.finish()
        return NOT_DONE_YET


class WhyDownTests(SynchronousTestCase):
    """
    Tests for L{whyDown}, the state behind the answer.
    """

    def test_up(self) -> None:
        """
        A routable backend and no stop under way: up.
        """
        self.assertIsNone(whyDown(FakeDeployer(object()), stopping=False))

    def test_noBackend(self) -> None:
        """
        No routable backend (none ready yet, or the active one stopped):
        down, saying so.
        """
        self.assertEqual(
            whyDown(FakeDeployer(None), stopping=False),
            "no version of the app is ready",
        )

    def test_stopping(self) -> None:
        """
        Stopping wins over a routable backend.
        """
        self.assertEqual(
            whyDown(FakeDeployer(object()), stopping=True), "rainbowd is stopping"
        )

    def test_notServing(self) -> None:
        """
        Paused or in maintenance, a host with a routable backend is down,
        saying which mode and how to leave it; stopping still wins.
        """
        for mode in (Mode.PAUSED, Mode.MAINTENANCE):
            self.assertEqual(
                whyDown(FakeDeployer(object()), stopping=False, mode=mode),
                f"traffic is {mode.value} (rainbowctl resume serves again)",
            )
        self.assertEqual(
            whyDown(FakeDeployer(object()), stopping=True, mode=Mode.PAUSED),
            "rainbowd is stopping",
        )


class LBHealthFrontTests(SynchronousTestCase):
    """
    Tests for L{LBHealthFront} behind the real L{ProxySite}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.deployer = FakeDeployer(object())
        self.stop = StopDelay(0, self.reactor)
        self.traffic = Traffic(self.reactor, 30.0)
        self.proxy = RecordingProxy()
        self.site = ProxySite(
            publicResource(PATH, self.proxy, self.deployer, self.stop, self.traffic),
            reactor=self.reactor,
        )

    def request(self, head: bytes) -> bytes:
        """
        Send C{head} (a request line and headers) on a new connection, and
        return what came back.
        """
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 40000))
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(head + b"\r\n")
        return transport.value()

    def get(self, target: bytes, method: bytes = b"GET", extra: bytes = b"") -> bytes:
        return self.request(
            method + b" " + target + b" HTTP/1.1\r\nHost: www.example.com\r\n" + extra
        )

    def assertAnswer(self, response: bytes, status: bytes, body: Optional[bytes]) -> None:
        head, _, rest = response.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 " + status), head)
        self.assertIn(b"\r\nCache-Control: no-store", head)
        self.assertIn(b"\r\nContent-Type: text/plain; charset=utf-8", head)
        if body is not None:
            self.assertEqual(rest, body)
        self.assertEqual(self.proxy.seen, [])

    def test_up(self) -> None:
        """
        While a version serves, the path is answered 200 by rainbowd, not
        forwarded, never to be cached.
        """
        self.assertAnswer(self.get(b"/_rainbowd/up"), b"200", b"rainbowd: up\n")

    def test_noBackend(self) -> None:
        """
        With no version ready, the path is answered 503 with the reason.
        """
        self.deployer.routable = None
        self.assertAnswer(
            self.get(b"/_rainbowd/up"),
            b"503",
            b"rainbowd: down: no version of the app is ready\n",
        )

    def test_stopping(self) -> None:
        """
        Once the stop has begun, the path is answered 503, and every other
        request still goes to the app.
        """
        self.stop.begin()
        self.assertAnswer(
            self.get(b"/_rainbowd/up"), b"503", b"rainbowd: down: rainbowd is stopping\n"
        )
        self.assertTrue(self.get(b"/other").endswith(b"\r\n\r\napp"))
        self.assertEqual(self.proxy.seen, [b"/other"])

    def test_paused(self) -> None:
        """
        While traffic is paused, the path is answered 503 at once (it is
        not held like the app's requests), so that the load balancer sends
        new requests elsewhere; resumed, it is up again.
        """
        self.traffic.pause("127.0.0.1:5000")
        self.assertAnswer(
            self.get(b"/_rainbowd/up"),
            b"503",
            b"rainbowd: down: traffic is paused (rainbowctl resume serves again)\n",
        )
        self.traffic.resume("127.0.0.1:5000")
        self.assertAnswer(self.get(b"/_rainbowd/up"), b"200", b"rainbowd: up\n")

    def test_queryString(self) -> None:
        """
        A query string does not stop the path from matching.
        """
        self.assertAnswer(self.get(b"/_rainbowd/up?check=1"), b"200", b"rainbowd: up\n")

    def test_absoluteForm(self) -> None:
        """
        The path in an absolute-form request target is answered too, since
        the proxy would forward it to the app as that path.
        """
        self.assertAnswer(
            self.get(b"http://www.example.com/_rainbowd/up"), b"200", b"rainbowd: up\n"
        )

    def test_head(self) -> None:
        """
        HEAD gets the same status and length, without the body.
        """
        response = self.get(b"/_rainbowd/up", b"HEAD")
        self.assertAnswer(response, b"200", b"")
        self.assertIn(b"\r\nContent-Length: 13\r\n", response)

    def test_otherMethods(self) -> None:
        """
        Other methods get 405 with I{Allow: GET, HEAD}, and are not
        forwarded either.
        """
        response = self.get(b"/_rainbowd/up", b"POST", b"Content-Length: 0\r\n")
        self.assertAnswer(response, b"405", None)
        self.assertIn(b"\r\nAllow: GET, HEAD\r\n", response)
        self.assertIn(b"ask it with GET or HEAD", response)

    def test_noBrowserChecks(self) -> None:
        """
        The control API's browser checks do not apply: a foreign Host and
        Origin get the same answer.
        """
        response = self.get(
            b"/_rainbowd/up", extra=b"Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n"
        )
        self.assertAnswer(response, b"200", b"rainbowd: up\n")

    def test_otherPaths(self) -> None:
        """
        Paths that only look like it go to the app: a longer path, a
        prefix, a trailing slash.
        """
        for target in [b"/_rainbowd/up/x", b"/_rainbowd", b"/_rainbowd/up/", b"/"]:
            self.assertTrue(self.get(target).endswith(b"\r\n\r\napp"))
        self.assertEqual(
            self.proxy.seen, [b"/_rainbowd/up/x", b"/_rainbowd", b"/_rainbowd/up/", b"/"]
        )

    def test_keepAlive(self) -> None:
        """
        A load balancer may send its checks on one kept-alive connection.
        """
        response = self.request(
            b"GET /_rainbowd/up HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /_rainbowd/up HTTP/1.1\r\nHost: a\r\n"
        )
        self.assertEqual(response.count(b"HTTP/1.1 200 "), 2)


class PublicResourceTests(SynchronousTestCase):
    """
    Tests for L{publicResource}.
    """

    def test_off(self) -> None:
        """
        Without C{lbHealthPath}, the proxy itself is the resource: nothing
        is added to the request path.
        """
        proxy = RecordingProxy()
        self.assertIs(publicResource(None, proxy, FakeDeployer(), object(), Traffic(None, 30.0)), proxy)

    def test_on(self) -> None:
        """
        With it, an L{LBHealthFront} for that path stands in front.
        """
        proxy = RecordingProxy()
        front = publicResource(PATH, proxy, FakeDeployer(), object(), Traffic(None, 30.0))
        self.assertIsInstance(front, LBHealthFront)
        assert isinstance(front, LBHealthFront)
        self.assertEqual((front.path, front.proxy), (PATH.encode(), proxy))
