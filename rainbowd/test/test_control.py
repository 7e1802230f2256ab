# -*- test-case-name: rainbowd.test.test_control -*-
"""
Tests for L{rainbowd.control}.
"""

import json
import os
import socket
from types import SimpleNamespace
from typing import Any, List, Tuple

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.config import ConfigError
from rainbowd.connlimit import ConnectionCap
from rainbowd.control import ControlResource, describePeer
from rainbowd.deployer import Deployed, DeployFailed, DeployRefused

CONTROL = "http://127.0.0.1:7001"

STATUS = {
    "active": 3,
    "backends": [
        {"generation": 3, "port": 20002, "pid": 1234, "state": "active", "inflight": 0},
        {"generation": 2, "port": 20001, "pid": 1200, "state": "draining", "inflight": 1},
    ],
}


class FakeDeployer:
    """
    A deployer whose redeploys are Deferreds the test fires.
    """

    def __init__(self) -> None:
        self.redeploys: List[Deferred] = []
        self.asked: List[Tuple[Any, Any]] = []

    def redeploy(self, requester=None, message=None) -> Deferred:
        d: Deferred = Deferred()
        self.redeploys.append(d)
        self.asked.append((requester, message))
        return d

    def status(self) -> dict:
        return STATUS


class ControlResourceTests(SynchronousTestCase):
    """
    Tests for L{ControlResource} driven in memory with L{StubTreq}.
    """

    def setUp(self) -> None:
        self.deployer = FakeDeployer()
        self.treq = StubTreq(ControlResource(self.deployer))

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
        C{message} of at most 1000 characters gets a 400 that says what is
        wrong, and no deploy.
        """
        example = (
            "the body of POST /redeploy must be empty, or a JSON object such "
            'as {"message": "abc1234: fix the login page"}'
        )
        cases = [
            (b"message=abc", example + "; it is not JSON"),
            (b"\xff\xfe", example + "; it is not JSON"),
            (b'["abc"]', example + "; it is a JSON list"),
            (b'{"msg": "x", "b": 1}', example + '; it has "b", "msg", and '
             '"message" is the only key there is'),
            (b'{"message": 3}', '"message" must be a string'),
            (b'{"message": "a\\nb"}', '"message" must be one line of text, '
             "without line ends or other control characters (it is shown in "
             "the history's table and in logs)"),
            (json.dumps({"message": "x" * 1001}).encode(), '"message" is 1001 '
             "characters long, and may be 1000 at most: give the commit's sha "
             "and subject, say"),
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
        self.assertEqual(body, (json.dumps(STATUS, indent=2) + "\n").encode())

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
            "hint": "the current version keeps serving; fix the problem and redeploy",
        })

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
            "hint": "the current version keeps serving; fix the problem and redeploy",
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
        GET /status answers 200 with the deployer's status.
        """
        self.assertJSON(self.treq.get(CONTROL + "/status"), 200, STATUS)

    def test_statusConnections(self) -> None:
        """
        GET /status also shows the public port's connection counts, when it
        has them.
        """
        resource = ControlResource(self.deployer)
        resource.connections = ConnectionCap(Factory(), 408, None)
        resource.connections.refused = 7
        self.assertJSON(
            StubTreq(resource).get(CONTROL + "/status"),
            200,
            {**STATUS, "connections": {"open": 0, "max": 408, "refused": 7}},
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
        self.assertJSON(self.treq.get(CONTROL + "/status/"), 200, STATUS)
        self.treq.post(CONTROL + "/redeploy/", data=b"")
        self.treq.flush()
        self.assertEqual(len(self.deployer.redeploys), 1)


class LogsTests(SynchronousTestCase):
    """
    Tests for C{GET /logs}.
    """

    def setUp(self) -> None:
        from rainbowd.test.test_progress import FakeBackend, StreamingDeployer

        self.clock = MemoryReactorClock()
        self.deployer = StreamingDeployer(self.clock)
        self.old = FakeBackend(2, ["old: one"])
        self.new = FakeBackend(3, ["new: one", "new: two"])
        self.deployer.backends = [self.old, self.new]
        self.deployer.active = self.new
        self.treq = StubTreq(ControlResource(self.deployer, self.clock))

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
