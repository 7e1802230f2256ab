"""
Tests for L{rainbowd.app.health}.
"""

from typing import List, Optional

from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from rainbowd.app.health import (
    FailureStreak,
    HTTPHealthCheck,
    LivenessProbe,
    Unhealthy,
    describeProbeFailure,
)

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
        assert clientProtocol is not None
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


class ScriptedCheck:
    """
    A check whose outcomes the test gives: each call is a pending Deferred
    in L{calls}.
    """

    def __init__(self) -> None:
        self.calls: List[Deferred] = []
        self.cancelled: List[Deferred] = []

    def __call__(self) -> Deferred:
        d: Deferred = Deferred(canceller=self.cancelled.append)
        self.calls.append(d)
        return d

    def passes(self) -> None:
        self.calls[-1].callback(None)

    def fails(self, message: str = "GET /health answered 503") -> None:
        self.calls[-1].errback(Unhealthy(message))


class LivenessProbeTests(SynchronousTestCase):
    """
    Tests for L{LivenessProbe}, on a L{MemoryReactorClock}, every 2 s and
    failing at the third failure in a row.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.check = ScriptedCheck()
        self.failing: List[LivenessProbe] = []
        self.recovered: List[LivenessProbe] = []
        self.stillFailing: List[Optional[str]] = []
        self.probe = LivenessProbe(
            self.clock,
            self.check,
            2.0,
            3,
            onFailing=self.failing.append,
            onRecovered=self.recovered.append,
            onStillFailing=lambda probe: self.stillFailing.append(probe.lastError),
        )

    def failTimes(self, count: int, message: str = "GET /health answered 503") -> None:
        """
        The next C{count} checks fail, each once its interval has passed.
        """
        for _ in range(count):
            self.clock.advance(2.0)
            self.check.fails(message)

    def test_firstCheckAfterInterval(self) -> None:
        """
        The first check is made one interval after the start, not at once.
        """
        self.probe.start()
        self.clock.advance(1.9)
        self.assertEqual(self.check.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.check.calls), 1)

    def test_belowThreshold(self) -> None:
        """
        Fewer failures in a row than the threshold count and keep the last
        error, but are not a failing probe.
        """
        self.probe.start()
        self.failTimes(2, "GET /health did not answer within 2 s")
        self.assertEqual(self.failing, [])
        self.assertEqual(
            self.probe.describe(),
            {
                "unresponsive": False,
                "failures": 2,
                "lastError": "GET /health did not answer within 2 s",
            },
        )

    def test_atThreshold(self) -> None:
        """
        The threshold-th failure in a row calls C{onFailing} once; further
        failures count on, and call it no more; checks go on.
        """
        self.probe.start()
        self.failTimes(3)
        self.assertEqual(self.failing, [self.probe])
        self.assertTrue(self.probe.failing)
        self.failTimes(2)
        self.assertEqual(self.failing, [self.probe])
        self.assertEqual(self.probe.failures, 5)
        self.assertEqual(len(self.check.calls), 5)

    def test_stillFailing(self) -> None:
        """
        Each failed check after the threshold-th one calls C{onStillFailing}
        with the probe, until a check passes; C{lastReason} is the latest
        failure's exception.
        """
        self.probe.start()
        self.failTimes(3)
        self.assertEqual(self.stillFailing, [])
        self.failTimes(1, "one")
        self.failTimes(1, "two")
        self.assertEqual(self.stillFailing, ["one", "two"])
        self.assertIsInstance(self.probe.lastReason, Unhealthy)
        self.clock.advance(2.0)
        self.check.passes()
        self.failTimes(2)
        self.assertEqual(self.stillFailing, ["one", "two"])

    def test_successResets(self) -> None:
        """
        A passed check resets the count: failures either side of it do not
        add up.
        """
        self.probe.start()
        self.failTimes(2)
        self.clock.advance(2.0)
        self.check.passes()
        self.assertEqual(self.probe.failures, 0)
        self.failTimes(2)
        self.assertEqual(self.failing, [])
        self.failTimes(1)
        self.assertEqual(self.failing, [self.probe])

    def test_recovered(self) -> None:
        """
        A check that passes after the probe was failing calls
        C{onRecovered} once, and a new run of failures fails it again.
        """
        self.probe.start()
        self.failTimes(3)
        self.clock.advance(2.0)
        self.check.passes()
        self.assertEqual(self.recovered, [self.probe])
        self.assertFalse(self.probe.failing)
        self.clock.advance(2.0)
        self.check.passes()
        self.assertEqual(self.recovered, [self.probe])
        self.failTimes(3)
        self.assertEqual(self.failing, [self.probe, self.probe])

    def test_noOverlap(self) -> None:
        """
        A check that takes long is not doubled: the next one begins one
        interval after it ended.
        """
        self.probe.start()
        self.clock.advance(2.0)
        self.clock.advance(10.0)
        self.assertEqual(len(self.check.calls), 1)
        self.check.fails()
        self.clock.advance(1.9)
        self.assertEqual(len(self.check.calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.check.calls), 2)

    def test_checkRaises(self) -> None:
        """
        A check that raises, or returns a failed or fired Deferred, counts as
        it would asynchronously.
        """
        outcomes = [fail(TimeoutError("too slow")), succeed(None)]

        def check():
            if not outcomes:
                raise ValueError("cannot ask")
            return outcomes.pop(0)

        probe = LivenessProbe(self.clock, check, 2.0, 2, onFailing=self.failing.append)
        probe.start()
        self.clock.advance(2.0)
        self.assertEqual((probe.failures, probe.lastError), (1, "too slow"))
        self.clock.advance(2.0)
        self.assertEqual(probe.failures, 0)
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.assertEqual((probe.failures, probe.lastError), (2, "cannot ask"))
        self.assertEqual(self.failing, [probe])

    def test_stop(self) -> None:
        """
        Stopping cancels the check under way, whose outcome is then ignored,
        and the next one; nothing is left scheduled.
        """
        self.probe.start()
        self.failTimes(2)
        self.clock.advance(2.0)
        self.probe.stop()
        self.assertEqual(self.check.cancelled, [self.check.calls[-1]])
        self.assertFalse(self.probe.running)
        self.assertEqual(self.probe.failures, 2)
        self.assertEqual(self.failing, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.probe.stop()

    def test_stopBetweenChecks(self) -> None:
        """
        Stopping between two checks makes no more.
        """
        self.probe.start()
        self.clock.advance(2.0)
        self.check.passes()
        self.probe.stop()
        self.clock.advance(10.0)
        self.assertEqual(len(self.check.calls), 1)

    def test_stopFromOnFailing(self) -> None:
        """
        C{onFailing} may stop the probe; no check follows.
        """
        probe = LivenessProbe(
            self.clock, self.check, 2.0, 1, onFailing=lambda probe: probe.stop()
        )
        probe.start()
        self.clock.advance(2.0)
        self.check.fails()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_observerFails(self) -> None:
        """
        An C{onFailing} that raises is logged, and the checks go on.
        """
        def onFailing(probe: LivenessProbe) -> None:
            1 / 0

        probe = LivenessProbe(self.clock, self.check, 2.0, 1, onFailing=onFailing)
        probe.start()
        self.clock.advance(2.0)
        self.check.fails()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(2.0)
        self.assertEqual(len(self.check.calls), 2)

    def test_restart(self) -> None:
        """
        A stopped probe may be started again; starting a running one is an
        error.
        """
        self.probe.start()
        self.assertRaises(RuntimeError, self.probe.start)
        self.probe.stop()
        self.probe.start()
        self.clock.advance(2.0)
        self.assertEqual(len(self.check.calls), 1)

    def test_badSettings(self) -> None:
        """
        An interval of 0 or less, or a threshold below 1, is refused.
        """
        for interval, threshold in [(0, 3), (-1, 3), (2.0, 0)]:
            self.assertRaises(
                ValueError,
                LivenessProbe,
                self.clock,
                self.check,
                interval,
                threshold,
                self.failing.append,
            )


class DescribeProbeFailureTests(SynchronousTestCase):
    """
    Tests for L{describeProbeFailure}.
    """

    def test_clauses(self) -> None:
        """
        Each failure is one clause naming the request, with no full stop: a
        refusal and a connection lost before an answer in plain words, any
        other by its message.
        """
        from twisted.web.client import ResponseNeverReceived

        self.assertEqual(
            [
                describeProbeFailure(Failure(ConnectionRefusedError("refused")), "/h"),
                describeProbeFailure(Failure(ResponseNeverReceived([])), "/h"),
                describeProbeFailure(Failure(Unhealthy("GET /h answered 404")), "/h"),
                describeProbeFailure(Failure(ValueError("Bad thing.")), "/h"),
                describeProbeFailure(Failure(ValueError()), "/h"),
            ],
            [
                "GET /h: connection refused",
                "GET /h: the connection closed before an answer",
                "GET /h answered 404",
                "Bad thing",
                "ValueError",
            ],
        )


class FailureStreakTests(SynchronousTestCase):
    """
    Tests for L{FailureStreak}.
    """

    def test_nthThenSpaced(self) -> None:
        """
        The C{every}th failure in a row of the same kind is one to report,
        then one each C{spacing} seconds or more after the last reported;
        another kind starts anew.
        """
        streak = FailureStreak(every=3, spacing=1.0)
        said = [streak.failed("404", n * 0.4) for n in range(8)]
        self.assertEqual(said, [False, False, True, False, False, True, False, False])
        self.assertEqual((streak.error, streak.count), ("404", 8))
        said = [streak.failed("refused", 3.0 + n * 0.4) for n in range(3)]
        self.assertEqual(said, [False, False, True])
        self.assertEqual((streak.error, streak.count), ("refused", 3))
