# -*- test-case-name: rainbowd.test.unit.test_progress -*-
"""
Tests for L{rainbowd.control.progress}: a redeploy streamed as NDJSON, driven
through L{ControlResource} in memory.
"""

import json
from types import SimpleNamespace
from typing import Any, Callable, List, Optional, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from rainbowd.app.deployer import Deployed, DeployFailed, DeployRefused, Event
from rainbowd.control.progress import PROGRESS_INTERVAL, STOP_MARGIN, wantsNDJSON
from rainbowd.control.resource import ControlResource, failureHint
from rainbowd.test.stubtreq import stubTreq

CONTROL = "http://127.0.0.1:7001"
NDJSON_HEADERS = {"Accept": ["application/x-ndjson"]}


class FakeBackend:
    """
    A backend with output the test prints and a stop the test causes.
    """

    def __init__(self, generation: int, output=(), inflight: int = 0) -> None:
        self.generation = generation
        self.output = list(output)
        self.inflight = inflight
        self.observers: List[Callable[[str], None]] = []
        self._stops: List[Deferred] = []

    def observeOutput(self, observer):
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def whenStopped(self) -> Deferred:
        d: Deferred = Deferred()
        self._stops.append(d)
        return d

    def print(self, line: str) -> None:
        self.output.append(line)
        for observer in list(self.observers):
            observer(line)

    def stopped(self) -> None:
        stops, self._stops = self._stops, []
        for d in stops:
            d.callback(self)


class StreamingDeployer:
    """
    A deployer whose events and redeploy outcomes the test makes.

    @ivar onRedeploy: called by C{redeploy()}, as the real deployer emits
        C{deploying} at once when idle.
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.observers: List[Callable[[Event], None]] = []
        self.redeploys: List[Deferred] = []
        self.active: Optional[FakeBackend] = None
        self.backends: List[FakeBackend] = []
        self.config = SimpleNamespace(drainTimeout=30.0, killTimeout=10.0)
        self.standby: Optional[FakeBackend] = None
        self.onRedeploy: Callable[[], Any] = lambda: None
        self.outcome: Optional[Deferred] = None
        self.asked: List[Any] = []

    def observe(self, observer):
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def emit(self, kind: str, generation: Optional[int] = None, **details) -> None:
        event = Event(kind, self.clock.seconds(), generation, details)
        for observer in list(self.observers):
            observer(event)

    def redeploy(self, requester=None, message=None) -> Deferred:
        self.asked.append((requester, message))
        if self.outcome is not None:
            return self.outcome
        d: Deferred = Deferred()
        self.redeploys.append(d)
        self.onRedeploy()
        return d

    def status(self) -> dict:
        return {"active": None if self.active is None else self.active.generation}


class RedeployStreamTests(SynchronousTestCase):
    """
    Tests for C{POST /redeploy} with C{Accept: application/x-ndjson}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.deployer = StreamingDeployer(self.clock)
        self.old = FakeBackend(2, inflight=1)
        self.new = FakeBackend(3)
        self.deployer.active = self.old
        self.deployer.backends = [self.old]
        self.treq = stubTreq(ControlResource(self.deployer, self.clock))
        self.chunks: List[bytes] = []

    def stream(self) -> Deferred:
        """
        POST /redeploy asking for NDJSON; return a Deferred that fires when
        the stream ends, its chunks going to C{self.chunks}.
        """
        d = self.treq.post(CONTROL + "/redeploy", data=b"", headers=NDJSON_HEADERS)
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/x-ndjson"]
        )
        return self.treq.collect(response, self.chunks.append)

    def ended(self, done: Deferred) -> None:
        """
        Assert the stream has ended.
        """
        self.treq.flush()
        self.successResultOf(done)

    def lines(self) -> List[dict]:
        self.treq.flush()
        data = b"".join(self.chunks)
        self.assertTrue(data == b"" or data.endswith(b"\n"))
        return [json.loads(line) for line in data.splitlines()]

    def kinds(self) -> List[str]:
        return [line["event"] for line in self.lines()]

    def test_requesterAndMessage(self) -> None:
        """
        A streamed redeploy is asked for in the client's name, with the
        message of its body.
        """
        self.treq.post(
            CONTROL + "/redeploy", data=b'{"message": "v2"}', headers=NDJSON_HEADERS
        )
        self.treq.flush()
        [(requester, message)] = self.deployer.asked
        self.assertEqual(message, "v2")
        self.assertRegex(requester, r"^127\.0\.0\.1:\d+$")

    def startsAt(self, deploy: int) -> None:
        self.deployer.onRedeploy = lambda: self.deployer.emit(
            "deploying", deploy=deploy, cause="redeploy"
        )

    def deploySucceeds(self) -> None:
        """
        Deploy 3's events up to its outcome: generation 3 starts, takes 1.5
        s to be healthy, and takes over from generation 2.
        """
        emit = self.deployer.emit
        emit("launching", 3, deploy=3, port=20003)
        self.clock.advance(1.0)
        self.clock.advance(0.5)
        emit("healthy", 3, deploy=3, port=20003, seconds=1.5)
        self.deployer.active = self.new
        self.deployer.backends.append(self.new)
        emit("switched", 3, deploy=3, previous=2)
        emit("draining", 2, inflight=1)
        emit(
            "deployed", deploy=3, ok=True, generation=3, port=20003, pid=9, seconds=1.5
        )
        self.deployer.redeploys[0].callback(
            Deployed(generation=3, port=20003, pid=9, seconds=1.5)
        )

    def test_success(self) -> None:
        """
        A successful redeploy streams its steps in order, a waiting line
        each second before its health, the result, then the old
        generation's drain until it is stopped, and then ends.
        """
        self.startsAt(3)
        done = self.stream()
        self.deploySucceeds()
        self.assertEqual(
            self.kinds(),
            [
                "deploying",
                "launching",
                "waiting",
                "healthy",
                "switched",
                "draining",
                "result",
            ],
        )
        lines = self.lines()
        self.assertEqual(lines[2]["elapsed"], 1.0)
        self.assertEqual(lines[2]["generation"], 3)
        self.assertEqual(
            lines[6],
            {
                "ok": True,
                "generation": 3,
                "port": 20003,
                "pid": 9,
                "seconds": 1.5,
                "event": "result",
                "time": 1.5,
                "serving": 3,
            },
        )
        self.clock.advance(PROGRESS_INTERVAL)
        self.old.inflight = 0
        self.clock.advance(PROGRESS_INTERVAL)
        self.assertEqual(
            [(line["event"], line.get("inflight")) for line in self.lines()[7:]],
            [("draining", 1), ("draining", 0)],
        )
        self.assertNoResult(done)
        self.deployer.emit("stopped", 2, state="stopped", exit="exited with code 0")
        self.assertEqual(self.kinds()[-1], "stopped")
        self.ended(done)
        self.assertEqual(self.deployer.observers, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_standby(self) -> None:
        """
        A redeploy whose old generation is kept as the standby ends once it
        is: with the C{standby} line, not waiting for a stop.
        """
        self.startsAt(3)
        done = self.stream()
        self.deploySucceeds()
        self.assertNoResult(done)
        self.deployer.emit("standby", 2, seconds=300.0)
        self.assertEqual(self.lines()[-1], {
            "event": "standby", "time": 1.5, "generation": 2, "seconds": 300.0
        })
        self.ended(done)
        self.assertEqual(self.deployer.observers, [])

    def watched(self) -> Deferred:
        """
        A watched redeploy (deploy 3) whose old generation 2 became the
        standby, with 60 s left in its window.
        """
        self.startsAt(3)
        self.deployer.config.rollbackWindow = 60.0
        d = self.treq.post(
            CONTROL + "/redeploy?watch=1", data=b"", headers=NDJSON_HEADERS
        )
        self.treq.flush()
        response = self.successResultOf(d)
        done = self.treq.collect(response, self.chunks.append)
        self.deploySucceeds()
        self.deployer.standby = self.old
        self.deployer.emit("standby", 2, seconds=60.0)
        return done

    def test_watchUntilWindowEnds(self) -> None:
        """
        With C{?watch=1}, a redeploy that kept a standby streams a
        C{watching} line each second until the standby stops at the end of
        its window, then C{watched} without a rollback.
        """
        done = self.watched()
        self.clock.advance(PROGRESS_INTERVAL)
        self.clock.advance(PROGRESS_INTERVAL)
        self.assertNoResult(done)
        watching = [line for line in self.lines() if line["event"] == "watching"]
        self.assertEqual(
            [(w["generation"], w["standby"], w["secondsLeft"]) for w in watching],
            [(3, 2, 59.0), (3, 2, 58.0)],
        )
        self.deployer.emit("stopped", 2, state="stopped", exit="exited with code 0")
        self.ended(done)
        self.assertEqual(
            self.lines()[-1],
            {"event": "watched", "time": 3.5, "generation": 3, "rolledBack": False,
             "serving": 3},
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_watchRolledBack(self) -> None:
        """
        A watched redeploy rolled back within the window streams the switch
        back and the reason, then C{watched} with C{rolledBack}.
        """
        done = self.watched()
        emit = self.deployer.emit
        emit("deploying", deploy=4, cause="automaticRollback")
        emit("switched", 2, deploy=4, previous=3)
        self.deployer.active = self.old
        emit("rolledBack", 2, cause="errorRate", reason="answered 5xx", deploy=4,
             **{"from": 3, "to": 2})
        emit("deployed", deploy=4, ok=True, generation=2, port=20002, pid=8, seconds=0)
        self.ended(done)
        self.assertEqual(
            [line["event"] for line in self.lines()[-3:]],
            ["switched", "rolledBack", "watched"],
        )
        self.assertEqual(self.lines()[-1]["rolledBack"], True)
        self.assertEqual(self.lines()[-1]["serving"], 2)

    def test_watchBounded(self) -> None:
        """
        A watch ends at the latest a few seconds after the window.
        """
        done = self.watched()
        self.clock.pump([PROGRESS_INTERVAL] * 70)
        self.ended(done)
        self.assertEqual(self.lines()[-1]["rolledBack"], False)

    def test_failure(self) -> None:
        """
        A failed redeploy streams a result with the error, the app's output
        and the generation still serving, then its generation's stop, and
        ends.
        """
        self.startsAt(3)
        done = self.stream()
        self.deployer.emit("launching", 3, deploy=3, port=20003)
        self.deployer.emit("failed", deploy=3, ok=False, error="boom")
        self.deployer.redeploys[0].errback(
            DeployFailed("exited with code 3", 3, 20003, ["app: broken"])
        )
        self.assertEqual(self.kinds(), ["deploying", "launching", "result"])
        self.assertEqual(
            self.lines()[-1],
            {
                "ok": False,
                "error": "exited with code 3",
                "generation": 3,
                "port": 20003,
                "output": ["app: broken"],
                "hint": failureHint(2),
                "event": "result",
                "time": 0.0,
                "serving": 2,
            },
        )
        self.assertNoResult(done)
        self.deployer.emit("stopped", 3, state="failed", exit="exited with code 3")
        self.assertEqual(self.kinds()[-1], "stopped")
        self.ended(done)

    def test_verifyFails(self) -> None:
        """
        A redeploy whose verify fails streams the verify's start, a waiting
        line each second it runs, and its output after the health check,
        then a result carrying the verify's exit status and last output.
        """
        self.startsAt(3)
        done = self.stream()
        emit = self.deployer.emit
        emit("launching", 3, deploy=3, port=20003)
        emit("healthy", 3, deploy=3, port=20003, seconds=1.0)
        emit("verifying", 3, deploy=3, port=20003, command="./smoke $1", timeout=30.0)
        self.clock.advance(PROGRESS_INTERVAL)
        emit("verifyOutput", 3, deploy=3, line="GET / 500", stream="stdout")
        verify = {"command": "./smoke $1", "exitCode": 1, "output": ["GET / 500"]}
        self.deployer.redeploys[0].errback(
            DeployFailed("failed its verify", 3, 20003, [], verify)
        )
        self.assertEqual(
            self.kinds(),
            [
                "deploying",
                "launching",
                "healthy",
                "verifying",
                "waiting",
                "verifyOutput",
                "result",
            ],
        )
        waiting = self.lines()[4]
        self.assertEqual((waiting["step"], waiting["elapsed"]), ("verify", 1.0))
        self.assertEqual(self.lines()[5]["line"], "GET / 500")
        self.assertEqual(self.lines()[-1]["verify"], verify)
        self.clock.advance(PROGRESS_INTERVAL)
        self.assertEqual(self.kinds()[-1], "result")
        self.deployer.emit("stopped", 3, state="stopped", exit="exited with code 0")
        self.ended(done)
    def test_unhealthy(self) -> None:
        """
        The starting generation's repeated health check failures are
        streamed with the deploy's other events.
        """
        self.startsAt(3)
        self.stream()
        self.deployer.emit("launching", 3, deploy=3, port=20003)
        self.deployer.emit(
            "unhealthy", 3, deploy=3, port=20003, error="GET / answered 404", checks=10
        )
        self.deployer.emit(
            "unhealthy", 4, deploy=2, port=20004, error="GET / answered 404", checks=10
        )
        self.assertEqual(self.kinds(), ["deploying", "launching", "unhealthy"])
        self.assertEqual(
            (self.lines()[-1]["error"], self.lines()[-1]["checks"]),
            ("GET / answered 404", 10),
        )

    def test_shutdown(self) -> None:
        """
        rainbowd's shutdown is streamed whichever deploy is under way, even
        to a redeploy still queued.
        """
        self.stream()
        self.deployer.emit("shutdown", generations=[2])
        self.assertEqual(self.kinds(), ["queued", "shutdown"])
        self.assertEqual(self.lines()[-1]["generations"], [2])

    def test_failureWithNothingServing(self) -> None:
        """
        A streamed failure while no generation serves says so in its hint,
        as the plain answer does.
        """
        self.deployer.active = None
        self.startsAt(1)
        self.stream()
        self.deployer.redeploys[0].errback(DeployFailed("exited with code 3", 1, 20001))
        result = self.lines()[-1]
        self.assertEqual(
            (result["serving"], result["hint"]),
            (None, "no generation is serving; fix the problem and redeploy"),
        )

    def test_queued(self) -> None:
        """
        A redeploy asked for during another says it is queued, and streams
        only the next deploy's events, not the current one's or a restart's.
        """
        done = self.stream()
        emit = self.deployer.emit
        emit("launching", 2, deploy=2, port=20002)
        emit("deployed", deploy=2, ok=True)
        emit("stopped", 1, state="stopped", exit="exited with code 0")
        emit("deploying", deploy=3, cause="restart")
        emit("deploying", deploy=4, cause="redeploy")
        emit("launching", 5, deploy=4, port=20005)
        self.assertEqual(self.kinds(), ["queued", "deploying", "launching"])
        self.assertEqual(self.lines()[1]["deploy"], 4)
        self.deployer.redeploys[0].errback(DeployRefused("rainbowd is shutting down"))
        emit("stopped", 5, state="failed", exit="was killed by signal 15")
        self.ended(done)

    def test_queuedWaits(self) -> None:
        """
        A queued redeploy gets a C{waiting} line every second until its
        deploy starts, so that a client does not take a long deploy under
        way (a verify of minutes) for a dead connection.
        """
        done = self.stream()
        emit = self.deployer.emit
        emit("verifying", 2, deploy=2, port=20002, command="true", timeout=300.0)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(
            self.lines()[1:],
            [
                {"event": "waiting", "time": 1.0, "step": "queued", "elapsed": 1.0},
                {"event": "waiting", "time": 2.0, "step": "queued", "elapsed": 2.0},
            ],
        )
        emit("deploying", deploy=3, cause="redeploy")
        self.clock.advance(1.0)
        self.assertEqual(self.kinds(), ["queued", "waiting", "waiting", "deploying"])
        self.deployer.redeploys[0].errback(DeployRefused("rainbowd is shutting down"))
        self.ended(done)

    def test_liveness(self) -> None:
        """
        The serving generation becoming unresponsive, and recovering, is
        streamed whatever deploy is under way, even while this one is
        queued.
        """
        done = self.stream()
        emit = self.deployer.emit
        emit("unresponsive", 2, port=20002, pid=9, failures=3, error="too slow")
        emit("restarting", delay=0.1)
        emit("deploying", deploy=3, cause="restart")
        emit("recovered", 2, port=20002, pid=9)
        self.assertEqual(self.kinds(), ["queued", "unresponsive", "recovered"])
        self.assertEqual(
            self.lines()[1],
            {
                "event": "unresponsive",
                "time": 0.0,
                "generation": 2,
                "port": 20002,
                "pid": 9,
                "failures": 3,
                "error": "too slow",
            },
        )
        self.deployer.redeploys[0].errback(DeployRefused("rainbowd is shutting down"))
        self.ended(done)

    def test_refusedAtOnce(self) -> None:
        """
        A redeploy refused before any deploy starts streams its result
        alone and ends.
        """
        self.deployer.outcome = fail(DeployRefused("rainbowd is shutting down"))
        done = self.stream()
        self.ended(done)
        self.assertEqual(
            self.lines(),
            [
                {
                    "ok": False,
                    "error": "rainbowd is shutting down",
                    "event": "result",
                    "time": 0.0,
                    "serving": 2,
                }
            ],
        )
        self.assertEqual(self.deployer.observers, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_boundedDrain(self) -> None:
        """
        An old generation that is not stopped within drainTimeout +
        killTimeout + a margin after the result no longer holds the stream.
        """
        self.startsAt(3)
        done = self.stream()
        self.deploySucceeds()
        self.clock.advance(30.0 + 10.0 + STOP_MARGIN - 0.5)
        self.treq.flush()
        self.assertNoResult(done)
        self.clock.advance(0.5)
        self.ended(done)
        self.assertEqual(self.deployer.observers, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientGone(self) -> None:
        """
        A client that hangs up does not cancel the deploy; its outcome is
        logged, and nothing is left observing or ticking.
        """
        self.startsAt(3)
        d = self.treq.post(CONTROL + "/redeploy", data=b"", headers=NDJSON_HEADERS)
        self.treq.flush()
        self.successResultOf(d)
        for pump in self.treq._agent._pumps:
            pump.clientIO.loseConnection()
        self.treq.flush()
        with capturedLogs() as events:
            self.deploySucceeds()
        self.assertIn(
            "after its client hung up", " ".join(e["log_format"] for e in events)
        )
        self.assertEqual(self.deployer.observers, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_plainUnchanged(self) -> None:
        """
        Without NDJSON in C{Accept}, the answer is the plain JSON outcome.
        """
        d = self.treq.post(
            CONTROL + "/redeploy", data=b"", headers={"Accept": ["application/json"]}
        )
        self.treq.flush()
        self.deployer.redeploys[0].callback(
            Deployed(generation=3, port=20003, pid=9, seconds=1.5)
        )
        self.treq.flush()
        response = self.successResultOf(d)
        body = json.loads(self.successResultOf(self.treq.content(response)))
        self.assertEqual(
            body, {"ok": True, "generation": 3, "port": 20003, "pid": 9, "seconds": 1.5}
        )


class WantsNDJSONTests(SynchronousTestCase):
    """
    Tests for L{wantsNDJSON}.
    """

    def test_accept(self) -> None:
        """
        Only an C{Accept} naming C{application/x-ndjson} (with parameters
        or among others) asks for the stream.
        """
        from twisted.web.test.requesthelper import DummyRequest

        for accept, expected in [
            (None, False),
            (b"*/*", False),
            (b"application/json", False),
            (b"application/x-ndjson", True),
            (b"application/json, Application/X-NDJSON;q=0.9", True),
        ]:
            request = DummyRequest([b"redeploy"])
            if accept is not None:
                request.requestHeaders.setRawHeaders(b"accept", [accept])
            # Twisted's DummyRequest has getHeader, without saying it
            # provides IRequest.
            self.assertEqual(
                wantsNDJSON(cast(IRequest, request)), expected, accept
            )
