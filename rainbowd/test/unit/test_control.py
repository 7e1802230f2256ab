# -*- test-case-name: rainbowd.test.unit.test_control -*-
"""
Tests for L{rainbowd.control.resource}.
"""

import json
import os
import socket
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from rainbowd.app.deployer import (
    Deployed,
    DeployFailed,
    DeployRefused,
    Event,
    NothingToRollBack,
)
from rainbowd.config import ConfigError
from rainbowd.control.resource import ControlResource, describePeer
from rainbowd.interfaces import IControlledDeployer
from rainbowd.test.stubtreq import stubTreq
from rainbowd.web.connlimit import ConnectionCap
from rainbowd.web.traffic import Mode, Traffic

CONTROL = "http://127.0.0.1:7001"

STATUS = {
    "active": 3,
    "backends": [
        {"generation": 3, "port": 20002, "pid": 1234, "state": "active", "inflight": 0},
        {"generation": 2, "port": 20001, "pid": 1200, "state": "draining", "inflight": 1},
    ],
}

#: What GET /status adds to the deployer's status while traffic is serving.
SERVING = {"mode": "serving", "since": None, "by": None, "held": 0, "message": None}

#: GET /status of L{STATUS}.
SHOWN = {**STATUS, "traffic": SERVING}


@implementer(IControlledDeployer)
class FakeDeployer:
    """
    A deployer whose redeploys are Deferreds the test fires.
    """

    def __init__(self) -> None:
        self.redeploys: List[Deferred] = []
        self.asked: List[Tuple[Any, Any]] = []
        self.active: Optional[SimpleNamespace] = SimpleNamespace(generation=3)
        self.rollbacks: List[Tuple[Any, Deferred]] = []
        self.observers: List[Any] = []

    def redeploy(self, requester=None, message=None) -> Deferred:
        d: Deferred = Deferred()
        self.redeploys.append(d)
        self.asked.append((requester, message))
        return d

    def rollback(self, requester=None) -> Deferred:
        d: Deferred = Deferred()
        self.rollbacks.append((requester, d))
        return d

    def observe(self, observer):
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def status(self) -> dict:
        return STATUS


class ControlResourceTestCase(SynchronousTestCase):
    """
    A L{ControlResource} on a L{FakeDeployer}, driven in memory with
    L{StubTreq}.
    """

    def setUp(self) -> None:
        self.deployer = FakeDeployer()
        self.treq = stubTreq(ControlResource(self.deployer))

    def answer(self, responseDeferred: Deferred) -> Tuple[Any, bytes]:
        """
        Flush the in-memory connection and return the response and its body.
        """
        self.treq.flush()
        response = self.successResultOf(responseDeferred)
        return response, self.successResultOf(self.treq.content(response))

    def assertJSON(
        self, responseDeferred: Deferred, code: int, expected: Any
    ) -> Any:
        """
        Assert the response has C{code} and a JSON body equal to C{expected},
        and return the response.
        """
        response, body = self.answer(responseDeferred)
        self.assertEqual(
            (response.code, json.loads(body)), (code, expected)
        )
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )
        return response


class ControlResourceTests(ControlResourceTestCase):
    """
    Tests for L{ControlResource} driven in memory with L{StubTreq}.
    """

    def redeploy(self) -> Tuple[Deferred, Deferred]:
        """
        POST /redeploy with an empty body, as C{curl -d ''} does, and return
        the response Deferred and the deploy Deferred it started.
        """
        responseDeferred = self.treq.post(CONTROL + "/redeploy", data=b"")
        self.treq.flush()
        return responseDeferred, self.deployer.redeploys[-1]

    def test_redeployNamesItsRequester(self) -> None:
        """
        A redeploy is asked for in the name of the control client's address,
        with no message for an empty body.
        """
        self.redeploy()
        [(requester, message)] = self.deployer.asked
        self.assertRegex(requester, r"^127\.0\.0\.1:\d+$")
        self.assertIsNone(message)

    def test_redeployFromVerifyRefused(self) -> None:
        """
        A redeploy asked for by a process of the verify under way is refused
        with 409 and the fix, not queued behind the deploy it holds up; the
        client's address and port (or a unix client's pid) are what is
        looked up.
        """
        asked = []

        def askedByVerify(pid, ports):
            asked.append((pid, ports))
            return 4242

        self.treq = stubTreq(ControlResource(self.deployer, askedByVerify=askedByVerify))
        response, body = self.answer(self.treq.post(CONTROL + "/redeploy", data=b""))
        self.assertEqual(response.code, 409)
        self.assertEqual(
            json.loads(body)["error"],
            "rainbowd: this redeploy comes from process 4242, of the verify "
            "command under way, and would wait for the deploy that verify "
            "holds up: take redeploys out of verify",
        )
        self.assertEqual(self.deployer.redeploys, [])
        [(pid, (clientPort, controlPort))] = asked
        self.assertIsNone(pid)
        self.assertIsInstance(clientPort, int)

    def test_redeployMessage(self) -> None:
        """
        A JSON body's C{message} is passed on with the redeploy, whatever
        the content type (C{curl -d} sends a form's).
        """
        for body in [b'{"message": "abc1234: fix login"}', b' {"message":"abc1234: fix login"}\n']:
            self.treq.post(CONTROL + "/redeploy", data=body)
            self.treq.flush()
        self.treq.post(
            CONTROL + "/redeploy",
            data='{"message": "d\u00e9ploy\u00e9"}'.encode("utf-8"),
            headers={"content-type": "application/json"},
        )
        self.treq.flush()
        self.treq.post(CONTROL + "/redeploy", data=b'{"message": null}')
        self.treq.flush()
        self.assertEqual(
            [message for requester, message in self.deployer.asked],
            ["abc1234: fix login", "abc1234: fix login", "d\u00e9ploy\u00e9", None],
        )

    def test_redeployBadBody(self) -> None:
        """
        A body that is not empty nor a JSON object with a one-line string
        C{message} of at most 1000 characters (in at most 4096 bytes) gets a
        400 that says what is wrong, and no deploy.
        """
        example = (
            '; send none, or a JSON object like {"message": "abc1234: fix the '
            'login page"}'
        )
        cases = [
            (b"message=abc", "is not JSON"),
            (b"\xff\xfe", "is not JSON"),
            (b'["abc"]', "is JSON, but not an object"),
            (b'{"msg": "x", "b": 1}', 'has keys other than "message": "b", "msg"'),
            (b'{"message": 3}', 'has a "message" that is not a string'),
            (b'{"message": "a\\nb"}', 'has a "message" with line ends or other '
             "control characters: it must be one line of text, as it is shown "
             "in tables and logs"),
            (json.dumps({"message": "x" * 1001}).encode(), 'has a "message" of '
             "1001 characters, more than the 1000 taken"),
            (b"{" + b" " * 4096 + b"}", "is 4098 bytes, more than the 4096 taken"),
        ]
        cases = [
            (body, f"the body of POST /redeploy {problem}{example}")
            for body, problem in cases
        ]
        for body, error in cases:
            d = self.treq.post(CONTROL + "/redeploy", data=body)
            self.assertJSON(d, 400, {"error": error})
        self.assertEqual(self.deployer.redeploys, [])

    def test_redeployLongestMessage(self) -> None:
        """
        A message of exactly 1000 characters is taken.
        """
        self.treq.post(CONTROL + "/redeploy", data=json.dumps({"message": "x" * 1000}).encode())
        self.treq.flush()
        self.assertEqual(self.deployer.asked[0][1], "x" * 1000)

    def test_redeployWaits(self) -> None:
        """
        POST /redeploy starts one deploy and does not answer until it ends.
        """
        responseDeferred, deploy = self.redeploy()
        self.assertEqual(len(self.deployer.redeploys), 1)
        self.assertNoResult(responseDeferred)

    def test_redeploySucceeds(self) -> None:
        """
        A successful deploy answers 200 with C{ok} and the new generation.
        """
        responseDeferred, deploy = self.redeploy()
        deploy.callback(Deployed(generation=4, port=20003, pid=99, seconds=1.5))
        self.assertJSON(
            responseDeferred,
            200,
            {"ok": True, "generation": 4, "port": 20003, "pid": 99, "seconds": 1.5},
        )

    def test_prettyJSON(self) -> None:
        """
        Answers are JSON indented by two spaces and end with a newline.
        """
        response, body = self.answer(self.treq.get(CONTROL + "/status"))
        self.assertEqual(body, (json.dumps(SHOWN, indent=2) + "\n").encode())

    def test_redeployFailed(self) -> None:
        """
        A deploy whose new version never got healthy answers 502 with the
        reason, the generation, its port, its last output and a hint.
        """
        responseDeferred, deploy = self.redeploy()
        deploy.errback(
            DeployFailed("exited with status 3", 4, 20003, ["app: boom"])
        )
        self.assertJSON(responseDeferred, 502, {
            "ok": False,
            "error": "exited with status 3",
            "generation": 4,
            "port": 20003,
            "output": ["app: boom"],
            "hint": "generation 3 is still serving; fix the problem and redeploy",
        })

    def test_firstGenerationFailed(self) -> None:
        """
        A deploy that failed while no generation serves (the first one, or
        after a crash) answers a hint that says so, not that the current
        version keeps serving.
        """
        self.deployer.active = None
        responseDeferred, deploy = self.redeploy()
        deploy.errback(DeployFailed("exited with status 3", 1, 20003, []))
        response, body = self.answer(responseDeferred)
        self.assertEqual(
            (response.code, json.loads(body)["hint"]),
            (502, "no generation is serving; fix the problem and redeploy"),
        )

    def test_redeployRefused(self) -> None:
        """
        A deploy the deployer refused answers 503 with its reason.
        """
        responseDeferred, deploy = self.redeploy()
        deploy.errback(DeployRefused("3 backends are still alive"))
        self.assertJSON(
            responseDeferred,
            503,
            {"ok": False, "error": "3 backends are still alive"},
        )

    def test_configError(self) -> None:
        """
        An invalid edited configuration answers 500 with the full message
        and a hint.
        """
        responseDeferred, deploy = self.redeploy()
        deploy.errback(ConfigError("rainbow.conf.json: run: must be a string"))
        self.assertJSON(responseDeferred, 500, {
            "ok": False,
            "error": "rainbow.conf.json: run: must be a string",
            "hint": "generation 3 is still serving; fix the problem and redeploy",
        })

    def test_unexpectedError(self) -> None:
        """
        Any other exception (a bug, which the deployer logs) answers a
        generic 500.
        """
        responseDeferred, deploy = self.redeploy()
        deploy.errback(ZeroDivisionError("oops"))
        self.assertJSON(responseDeferred, 500, {
            "ok": False,
            "error": "internal error in rainbowd; see its log",
        })

    def test_concurrentRedeploys(self) -> None:
        """
        Two POSTs waiting at once are both answered when their deploys end.
        """
        first, firstDeploy = self.redeploy()
        second, secondDeploy = self.redeploy()
        self.assertNoResult(first)
        self.assertNoResult(second)
        deployed = Deployed(generation=4, port=20003, pid=99, seconds=1.0)
        firstDeploy.callback(deployed)
        secondDeploy.callback(deployed)
        expected = {"ok": True, **deployed.asJSON()}
        self.assertJSON(first, 200, expected)
        self.assertJSON(second, 200, expected)

    def test_clientGone(self) -> None:
        """
        A client that hangs up while waiting does not cancel the deploy, and
        its outcome is then dropped without an error.
        """
        responseDeferred, deploy = self.redeploy()
        responseDeferred.cancel()
        self.treq.flush()
        self.failureResultOf(responseDeferred)
        self.assertNoResult(deploy)
        with capturedLogs() as events:
            deploy.callback(Deployed(generation=4, port=20003, pid=99, seconds=1.0))
            self.treq.flush()
        self.assertIn(
            "after its client hung up", " ".join(e["log_format"] for e in events)
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_status(self) -> None:
        """
        GET /status answers 200 with the deployer's status and the traffic
        mode.
        """
        self.assertJSON(self.treq.get(CONTROL + "/status"), 200, SHOWN)

    def test_statusConnections(self) -> None:
        """
        GET /status also shows the public port's connection counts, when it
        has them.
        """
        resource = ControlResource(self.deployer)
        resource.connections = ConnectionCap(Factory(), 408, None)
        resource.connections.refused = 7
        self.assertJSON(
            stubTreq(resource).get(CONTROL + "/status"),
            200,
            {**SHOWN, "connections": {"open": 0, "max": 408, "refused": 7}},
        )

    def test_statusHead(self) -> None:
        """
        HEAD /status answers 200, no body, and the GET body's length.
        """
        getResponse, getBody = self.answer(self.treq.get(CONTROL + "/status"))
        response, body = self.answer(self.treq.head(CONTROL + "/status"))
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(
            response.headers.getRawHeaders("content-length"), [str(len(getBody))]
        )
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )

    def test_getRedeploy(self) -> None:
        """
        GET /redeploy answers 405 with C{Allow: POST} and starts no deploy.
        """
        response = self.assertJSON(
            self.treq.get(CONTROL + "/redeploy"),
            405,
            {"error": "method GET not allowed on /redeploy; allowed: POST"},
        )
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        self.assertEqual(self.deployer.redeploys, [])

    def test_postStatus(self) -> None:
        """
        POST /status answers 405 with C{Allow: GET, HEAD}.
        """
        response = self.assertJSON(
            self.treq.post(CONTROL + "/status", data=b""),
            405,
            {"error": "method POST not allowed on /status; allowed: GET, HEAD"},
        )
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])

    def test_unknownPath(self) -> None:
        """
        An unknown path, the root, or a path below an endpoint, answers 404
        listing the endpoints.
        """
        for path in ["/nope", "/", "/status/more"]:
            self.assertJSON(self.treq.get(CONTROL + path), 404, {
                "error": f"no such endpoint: {path}",
                "endpoints": [
                    "POST /redeploy",
                    "POST /rollback",
                    "POST /pause",
                    "POST /maintenance",
                    "POST /resume",
                    "POST /upgrade",
                    "GET /status",
                    "GET /deploys",
                    "GET /logs",
                    "GET /metrics",
                ],
            })

    def test_headErrors(self) -> None:
        """
        HEAD to a path with no HEAD answers its error code with no body, and
        without twisted.web logging that it dropped one.
        """
        for path, code in [("/nope", 404), ("/redeploy", 405)]:
            with capturedLogs() as events:
                response, body = self.answer(self.treq.head(CONTROL + path))
            self.assertEqual((response.code, body), (code, b""))
            self.assertEqual(
                [formatEvent(e) for e in events if "eat it" in formatEvent(e)], []
            )

    def test_trailingSlash(self) -> None:
        """
        C{/redeploy/} and C{/status/} are the same as C{/redeploy} and
        C{/status}.
        """
        self.assertJSON(self.treq.get(CONTROL + "/status/"), 200, SHOWN)
        self.treq.post(CONTROL + "/redeploy/", data=b"")
        self.treq.flush()
        self.assertEqual(len(self.deployer.redeploys), 1)


class RollbackTests(SynchronousTestCase):
    """
    Tests for C{POST /rollback}.
    """

    def setUp(self) -> None:
        self.deployer = FakeDeployer()
        self.treq = stubTreq(ControlResource(self.deployer, MemoryReactorClock()))

    def rollback(self, headers=None):
        d = self.treq.post(CONTROL + "/rollback", data=b"", headers=headers)
        self.treq.flush()
        return d, self.deployer.rollbacks[-1]

    def answer(self, d):
        self.treq.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(self.treq.content(response)))

    def test_succeeds(self) -> None:
        """
        A rollback answers 200 with the JSON of a deploy: generation, port,
        pid, seconds; the deployer is told who asked.
        """
        d, (requester, rollback) = self.rollback()
        self.assertNoResult(d)
        self.assertTrue(requester)
        rollback.callback(Deployed(generation=1, port=20000, pid=42, seconds=0.001))
        self.assertEqual(
            self.answer(d),
            (200, {"ok": True, "generation": 1, "port": 20000, "pid": 42, "seconds": 0.001}),
        )

    def test_nothingToRollBack(self) -> None:
        """
        With nothing to roll back to, the answer is 409 with the reason, and
        no hint to redeploy.
        """
        d, (requester, rollback) = self.rollback()
        rollback.errback(NothingToRollBack("nothing to roll back to: ..."))
        self.assertEqual(
            self.answer(d), (409, {"ok": False, "error": "nothing to roll back to: ..."})
        )

    def test_coldFails(self) -> None:
        """
        A cold rollback whose generation never got healthy answers 502, as a
        redeploy does.
        """
        d, (requester, rollback) = self.rollback()
        rollback.errback(DeployFailed("generation 4 exited", 4, 20004))
        code, body = self.answer(d)
        self.assertEqual((code, body["error"]), (502, "generation 4 exited"))

    def test_streamed(self) -> None:
        """
        With C{Accept: application/x-ndjson} the rollback's events are
        streamed: those of the deploy whose cause is C{rollback}, not of a
        redeploy, then the result.
        """
        d, (requester, rollback) = self.rollback(
            headers={"accept": ["application/x-ndjson"]}
        )
        [observer] = self.deployer.observers
        observer(Event("deploying", 0, None, {"deploy": 3, "cause": "redeploy"}))
        observer(
            Event("deploying", 0, None, {"deploy": 4, "cause": "rollback", "requester": "x"})
        )
        observer(Event("switched", 0, 1, {"deploy": 4, "previous": 2}))
        self.deployer.active = None
        rollback.callback(Deployed(generation=1, port=20000, pid=42, seconds=0.0))
        self.treq.flush()
        response = self.successResultOf(d)
        lines = [
            json.loads(line)
            for line in self.successResultOf(self.treq.content(response)).splitlines()
        ]
        self.assertEqual(
            [(line["event"], line.get("deploy")) for line in lines],
            [("queued", None), ("deploying", 4), ("switched", 4), ("result", None)],
        )

    def test_onlyPost(self) -> None:
        """
        Only POST rolls back.
        """
        d = self.treq.get(CONTROL + "/rollback")
        self.assertEqual(self.answer(d)[0], 405)
        self.assertEqual(self.deployer.rollbacks, [])


class LogsTests(SynchronousTestCase):
    """
    Tests for C{GET /logs}.
    """

    def setUp(self) -> None:
        from rainbowd.test.unit.test_progress import FakeBackend, StreamingDeployer

        self.clock = MemoryReactorClock()
        self.deployer = StreamingDeployer(self.clock)
        self.old = FakeBackend(2, ["old: one"])
        self.new = FakeBackend(3, ["new: one", "new: two"])
        self.deployer.backends = [self.old, self.new]
        self.deployer.active = self.new
        self.treq = stubTreq(ControlResource(self.deployer, self.clock))

    def get(self, path: str) -> Tuple[Any, bytes]:
        d = self.treq.get(CONTROL + path)
        self.treq.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(self.treq.content(response))

    def test_active(self) -> None:
        """
        Without a generation, the active one's last lines are answered as
        text, one per line, naming the generation in a header.
        """
        response, body = self.get("/logs")
        self.assertEqual((response.code, body), (200, b"new: one\nnew: two\n"))
        self.assertEqual(
            response.headers.getRawHeaders("content-type"),
            ["text/plain; charset=utf-8"],
        )
        self.assertEqual(response.headers.getRawHeaders("x-rainbowd-generation"), ["3"])

    def test_generation(self) -> None:
        """
        C{?generation=N} answers that generation's lines.
        """
        response, body = self.get("/logs?generation=2")
        self.assertEqual((response.code, body), (200, b"old: one\n"))

    def test_unknownGeneration(self) -> None:
        """
        A generation that is not running is a 404 listing those that are;
        one that is not a number is a 400.
        """
        response, body = self.get("/logs?generation=7")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body), {
            "error": "generation 7 is not running; the running ones are "
            "listed in generations (and GET /status)",
            "generations": [2, 3],
        })
        response, body = self.get("/logs?generation=x")
        self.assertEqual(response.code, 400)
        self.assertIn("whole number", json.loads(body)["error"])

    def test_noneActive(self) -> None:
        """
        Without a generation and with none serving, a 404 says to name one.
        """
        self.deployer.active = None
        response, body = self.get("/logs")
        self.assertEqual(response.code, 404)
        self.assertIn("?generation=N", json.loads(body)["error"])

    def test_follow(self) -> None:
        """
        C{?follow=1} answers the last lines, then each new one as it is
        printed, and ends when the generation stops.
        """
        d = self.treq.get(CONTROL + "/logs?follow=1&generation=2")
        self.treq.flush()
        response = self.successResultOf(d)
        chunks: List[bytes] = []
        done = self.treq.collect(response, chunks.append)
        self.old.print("old: two")
        self.treq.flush()
        self.assertEqual(b"".join(chunks), b"old: one\nold: two\n")
        self.assertNoResult(done)
        self.old.stopped()
        self.treq.flush()
        self.successResultOf(done)
        self.assertEqual(self.old.observers, [])

    def test_followClientGone(self) -> None:
        """
        A follower that hangs up stops observing the output.
        """
        d = self.treq.get(CONTROL + "/logs?follow=1")
        self.treq.flush()
        self.successResultOf(d)
        self.assertEqual(len(self.new.observers), 1)
        for pump in self.treq._agent._pumps:
            pump.clientIO.loseConnection()
        self.treq.flush()
        self.assertEqual(self.new.observers, [])
        self.new.print("after")
        self.new.stopped()

    def test_postLogs(self) -> None:
        """
        POST /logs answers 405 with C{Allow: GET}.
        """
        d = self.treq.post(CONTROL + "/logs", data=b"")
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET"])


class TrafficEndpointTests(SynchronousTestCase):
    """
    Tests for C{POST /pause}, C{/maintenance} and C{/resume}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.traffic = Traffic(self.clock, 30.0)
        self.traffic.startService()
        self.treq = stubTreq(ControlResource(FakeDeployer(), self.clock, self.traffic))

    def post(self, path: str, body: bytes = b"") -> Tuple[int, Any]:
        d = self.treq.post(CONTROL + path, data=body)
        self.treq.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(self.treq.content(response))
        return response.code, json.loads(content)

    def test_pause(self) -> None:
        """
        POST /pause answers 200 with the new mode, who asked and that it
        changed; GET /status shows it.
        """
        code, body = self.post("/pause")
        self.assertEqual((code, body["mode"], body["changed"]), (200, "paused", True))
        self.assertRegex(body["by"], r"^127\.0\.0\.1:\d+$")
        response = self.successResultOf(self.treq.get(CONTROL + "/status"))
        status = json.loads(self.successResultOf(self.treq.content(response)))
        self.assertEqual(status["traffic"]["mode"], "paused")

    def test_pauseTwice(self) -> None:
        """
        A second POST /pause answers 200 too, saying nothing changed.
        """
        self.post("/pause")
        code, body = self.post("/pause")
        self.assertEqual((code, body["mode"], body["changed"]), (200, "paused", False))

    def test_resumeWhenServing(self) -> None:
        """
        POST /resume while serving answers 200, saying nothing changed.
        """
        code, body = self.post("/resume")
        self.assertEqual(
            (code, body["mode"], body["changed"]), (200, "serving", False)
        )

    def test_resume(self) -> None:
        """
        POST /resume after a pause serves again.
        """
        self.post("/pause")
        code, body = self.post("/resume")
        self.assertEqual((code, body["mode"], body["changed"]), (200, "serving", True))

    def test_maintenance(self) -> None:
        """
        POST /maintenance, with or without a message, goes into maintenance.
        """
        code, body = self.post("/maintenance")
        self.assertEqual((code, body["mode"], body["message"]), (200, "maintenance", None))
        code, body = self.post("/maintenance", b'{"message": "<b>back</b> at 2"}')
        self.assertEqual((code, body["message"]), (200, "<b>back</b> at 2"))
        self.assertIn(b"&lt;b&gt;back&lt;/b&gt; at 2", self.traffic.page)

    def test_maintenanceBadBodies(self) -> None:
        """
        A body that is not JSON, not an object, has other keys, a message
        that is not a string, or is too big, gets 400 saying which, and the
        mode does not change.
        """
        for body, problem in [
            (b"back at 2", "is not JSON"),
            (b"\xff\xfe", "is not JSON"),
            (b'["back"]', "is JSON, but not an object"),
            (b'{"msg": "back"}', 'has keys other than "message": "msg"'),
            (b'{"message": 2}', 'has a "message" that is not a string'),
            (
                json.dumps({"message": "x" * 5000}).encode(),
                "is 5015 bytes, more than the 4096 taken",
            ),
        ]:
            code, answer = self.post("/maintenance", body)
            self.assertEqual(code, 400, body)
            self.assertIn(f"the body of POST /maintenance {problem}", answer["error"])
            self.assertIn('{"message": "Back at 14:00 UTC"}', answer["error"])
        self.assertIs(self.traffic.mode, Mode.SERVING)

    def test_maintenanceMessageNotUnicode(self) -> None:
        """
        A message with a lone surrogate (valid JSON, but no text) gets 400
        saying so, not an unhandled error, and the mode does not change.
        """
        code, answer = self.post("/maintenance", b'{"message": "back \\ud800"}')
        self.assertEqual(code, 400)
        self.assertIn(
            'the body of POST /maintenance has a "message" that is not '
            "Unicode text (a lone surrogate escape)",
            answer["error"],
        )
        self.assertIs(self.traffic.mode, Mode.SERVING)

    def test_maintenanceUnreadablePage(self) -> None:
        """
        If the maintenancePage file cannot be read, POST /maintenance
        answers 500 naming it, and the mode does not change.
        """
        path = self.mktemp()
        traffic = Traffic(self.clock, 30.0, lambda: path)
        treq = stubTreq(ControlResource(FakeDeployer(), self.clock, traffic))
        d = treq.post(CONTROL + "/maintenance", data=b"")
        treq.flush()
        response = self.successResultOf(d)
        body = json.loads(self.successResultOf(treq.content(response)))
        self.assertEqual((response.code, body["mode"]), (500, "serving"))
        self.assertIn(f"The maintenance page {path}", body["error"])

    def test_getPause(self) -> None:
        """
        GET /pause answers 405 and changes nothing.
        """
        response = self.successResultOf(self.treq.get(CONTROL + "/pause"))
        self.assertEqual(response.code, 405)
        self.assertIs(self.traffic.mode, Mode.SERVING)
class _PeerRequest:
    """
    Just what L{describePeer} reads of a request.
    """

    def __init__(self, peer, host=None, handle=None) -> None:
        self._peer = peer
        self._host = host
        self.channel = SimpleNamespace(
            transport=SimpleNamespace(getHandle=lambda: handle)
        )

    def getClientAddress(self):
        return self._peer

    def getHost(self):
        return self._host


class DescribePeerTests(SynchronousTestCase):
    """
    Tests for L{describePeer}, who asked for a redeploy.
    """

    def test_tcp(self) -> None:
        """
        A TCP client is its address and port, an IPv6 one bracketed.
        """
        self.assertEqual(
            describePeer(_PeerRequest(IPv4Address("TCP", "10.0.0.5", 4242))),
            "10.0.0.5:4242",
        )
        self.assertEqual(
            describePeer(_PeerRequest(IPv6Address("TCP", "::1", 4242))), "[::1]:4242"
        )

    def test_unixSocket(self) -> None:
        """
        A client of the control socket is the socket's path, with the uid
        and pid of the process at the other end.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        request = _PeerRequest(
            UNIXAddress(None), UNIXAddress(b"/run/rainbowd/control.sock"), ours
        )
        self.assertEqual(
            describePeer(request),
            f"unix:/run/rainbowd/control.sock (uid {os.getuid()}, pid {os.getpid()})",
        )

    def test_unixClientBoundPath(self) -> None:
        """
        A client that bound its socket to a path of its choosing is still
        named by the control socket's path and the kernel's uid and pid,
        not by that path, which may say anything (another uid, or
        terminal escapes for the log).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        request = _PeerRequest(
            UNIXAddress(b"/tmp/x\x1b[2J (uid 0, pid 1)"),
            UNIXAddress(b"/run/rainbowd/control.sock"),
            ours,
        )
        self.assertEqual(
            describePeer(request),
            f"unix:/run/rainbowd/control.sock (uid {os.getuid()}, pid {os.getpid()})",
        )

    def test_unixSocketWithoutCredentials(self) -> None:
        """
        Where the kernel tells nothing of the other end, the path alone.
        """
        request = _PeerRequest(UNIXAddress(None), UNIXAddress(b"/run/c.sock"), None)
        self.assertEqual(describePeer(request), "unix:/run/c.sock")


class FakeUpgrader:
    """
    An upgrader whose upgrades the test ends.
    """

    def __init__(self) -> None:
        self.upgrades: List[Tuple[Any, Deferred]] = []

    def upgrade(self, requester=None) -> Deferred:
        d: Deferred = Deferred()
        self.upgrades.append((requester, d))
        return d

    def describe(self) -> dict:
        return {"pid": 41, "version": "9.9", "startedAt": 1.0, "upgradedFrom": None}


class UpgradeEndpointTests(ControlResourceTestCase):
    """
    Tests for C{POST /upgrade} and C{/status}'s C{"rainbowd"}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.upgrader = FakeUpgrader()
        resource = ControlResource(self.deployer)
        resource.upgrader = self.upgrader
        self.treq = stubTreq(resource)

    def test_upgraded(self) -> None:
        """
        An upgrade answers 200 with the new and old pids once the new
        rainbowd serves, asked in the name of the control client.
        """
        response = self.treq.post(CONTROL + "/upgrade", data=b"")
        self.treq.flush()
        [(requester, d)] = self.upgrader.upgrades
        self.assertRegex(requester, r"^127\.0\.0\.1:\d+$")
        self.assertNoResult(response)
        d.callback({"ok": True, "pid": 42, "previousPid": 41, "seconds": 0.5})
        self.assertJSON(
            response, 200, {"ok": True, "pid": 42, "previousPid": 41, "seconds": 0.5}
        )

    def test_failed(self) -> None:
        """
        A failed upgrade answers 502 with the error and the new process's
        last lines of output.
        """
        from rainbowd.upgrade.upgrader import UpgradeFailed

        response = self.treq.post(CONTROL + "/upgrade", data=b"")
        self.treq.flush()
        self.upgrader.upgrades[0][1].errback(UpgradeFailed("rainbowd: no", ["a", "b"]))
        self.assertJSON(
            response, 502, {"ok": False, "error": "rainbowd: no", "output": ["a", "b"]}
        )

    def test_get(self) -> None:
        """
        Only POST upgrades.
        """
        response, _ = self.answer(self.treq.get(CONTROL + "/upgrade"))
        self.assertEqual(response.code, 405)
        self.assertEqual(self.upgrader.upgrades, [])

    def test_status(self) -> None:
        """
        C{/status} tells which rainbowd answers: its pid, version, start
        and the rainbowd it was upgraded from.
        """
        response, body = self.answer(self.treq.get(CONTROL + "/status"))
        self.assertEqual(json.loads(body)["rainbowd"], self.upgrader.describe())

    def test_notSetUp(self) -> None:
        """
        Without an upgrader, an upgrade is refused with 503.
        """
        treq = stubTreq(ControlResource(self.deployer))
        response = treq.post(CONTROL + "/upgrade", data=b"")
        treq.flush()
        self.assertEqual(self.successResultOf(response).code, 503)
