"""
Tests for L{rainbowd.health}.
"""

from typing import List

from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from rainbowd.health import HTTPHealthCheck, Unhealthy

PORT = 20001


class StatusResource(Resource):
    """
    A backend that answers every request with C{code} and records what it
    was asked.

    @ivar requests: C{(method, uri)} of each request received.
    """

    isLeaf = True

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code
        self.requests: List[tuple] = []

    def render(self, request) -> bytes:
        self.requests.append((request.method, request.uri))
        request.setResponseCode(self.code)
        return b"whatever"


class HTTPHealthCheckTests(SynchronousTestCase):
    """
    Tests for L{HTTPHealthCheck}, its connection answered by an in-memory
    L{Site}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.check = HTTPHealthCheck(self.reactor)

    def answerWith(self, resource: Resource) -> None:
        """
        Connect the probe's outgoing connection to C{resource} and move all
        the bytes between them.
        """
        self.assertEqual(len(self.reactor.tcpClients), 1)
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", PORT))
        site = Site(resource, reactor=self.reactor)
        serverProtocol = site.buildProtocol(None)
        clientProtocol = factory.buildProtocol(None)
        pump = iosim.connect(
            serverProtocol,
            iosim.makeFakeServer(serverProtocol),
            clientProtocol,
            iosim.makeFakeClient(clientProtocol),
        )
        pump.flush()

    def test_okIsHealthy(self) -> None:
        """
        A 200 answer from 127.0.0.1 on the port makes the check succeed.
        """
        d = self.check(PORT, "/health", 2.0)
        self.assertNoResult(d)
        self.answerWith(StatusResource(200))
        self.assertIsNone(self.successResultOf(d))

    def test_any2xxIsHealthy(self) -> None:
        """
        Any 2xx answer, such as 204, counts as healthy.
        """
        d = self.check(PORT, "/health", 2.0)
        self.answerWith(StatusResource(204))
        self.assertIsNone(self.successResultOf(d))

    def test_requestLine(self) -> None:
        """
        The probe asks C{GET} for exactly the configured path.
        """
        resource = StatusResource(200)
        self.check(PORT, "/health/ready?full=1", 2.0)
        self.answerWith(resource)
        self.assertEqual(resource.requests, [(b"GET", b"/health/ready?full=1")])

    def test_nonASCIIPath(self) -> None:
        """
        A path with characters a request line cannot hold, such as non-ASCII
        ones, is asked for percent-encoded (as UTF-8) instead of raising.
        """
        resource = StatusResource(200)
        d = self.check(PORT, "/h\u00e9alth\x01?q=%20", 2.0)
        self.answerWith(resource)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(resource.requests, [(b"GET", b"/h%C3%A9alth%01?q=%20")])

    def test_serverErrorIsUnhealthy(self) -> None:
        """
        A 500 answer fails the check with L{Unhealthy} naming the path and the
        status code.
        """
        d = self.check(PORT, "/health", 2.0)
        self.answerWith(StatusResource(500))
        failure = self.failureResultOf(d, Unhealthy)
        self.assertEqual(str(failure.value), "GET /health answered 500")

    def test_redirectIsUnhealthy(self) -> None:
        """
        A 3xx answer is not healthy: the check does not follow redirects.
        """
        d = self.check(PORT, "/", 2.0)
        self.answerWith(StatusResource(302))
        self.assertIn("302", str(self.failureResultOf(d, Unhealthy).value))

    def test_noAnswerTimesOut(self) -> None:
        """
        A backend that accepts nothing within C{timeout} seconds fails the
        check with a L{TimeoutError} naming the path and the timeout once
        that time has passed, and not before.
        """
        d = self.check(PORT, "/health", 2.0)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        failure = self.failureResultOf(d, TimeoutError)
        self.assertEqual(
            str(failure.value), "GET /health did not answer within 2 s"
        )

    def test_connectedButSilentTimesOut(self) -> None:
        """
        A backend that accepts the connection but never answers fails the
        check with L{TimeoutError} after C{timeout} seconds, and the probe's
        connection is dropped.
        """
        d = self.check(PORT, "/health", 2.0)
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        clientProtocol = factory.buildProtocol(None)
        clientTransport = iosim.makeFakeClient(clientProtocol)
        clientProtocol.makeConnection(clientTransport)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(clientTransport.disconnecting)

    def test_connectionRefused(self) -> None:
        """
        A port nobody listens on fails the check with the connection error.
        """
        d = self.check(PORT, "/health", 2.0)
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_eachProbeConnectsAnew(self) -> None:
        """
        Two probes open two connections: no connection is kept between them.
        """
        first = self.check(PORT, "/health", 2.0)
        self.answerWith(StatusResource(200))
        self.successResultOf(first)
        self.check(PORT, "/health", 2.0)
        self.assertEqual(len(self.reactor.tcpClients), 2)
