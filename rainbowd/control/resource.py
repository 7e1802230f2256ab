# -*- test-case-name: rainbowd.test.unit.test_control -*-
"""
The control API, served on the control port::

    POST /redeploy   start the new version, wait for it, swap traffic
                     (its steps as NDJSON with Accept: application/x-ndjson);
                     an optional JSON body {"message": "..."} says what
                     it deploys, for the history
    POST /rollback   move traffic back to the standby, or launch the
                     previous version again (NDJSON as for /redeploy)
    POST /pause      hold new requests in rainbowd until POST /resume
    POST /maintenance  answer every new request 503 with a maintenance page
                     (an optional body {"message": "..."}) until POST /resume
    POST /resume     send requests to the app again
    POST /upgrade    start a new rainbowd, hand it the sockets and the
                     running app, and exit (see L{rainbowd.upgrade.upgrader})
    GET  /status     the generations, their backends and the traffic mode
    GET  /deploys    L{rainbowd.control.history.DeploysResource}, the last deploys,
                     put here by L{rainbowd.tap.makeService}
    GET  /logs       a generation's last output lines (?follow=1: and more)
    GET  /metrics    L{rainbowd.control.metrics.MetricsResource}, put here by
                     L{rainbowd.tap.makeService}

Every other answer, errors included, is pretty-printed JSON.
"""

import json
import os
import socket
import struct
import sys
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Tuple, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rainbowd.app.deployer import (
    DeployFailed,
    DeployRefused,
    NothingToRollBack,
    describeOutcome,
)
from rainbowd.app.processgroups import ProcessGroupSignals
from rainbowd.app.verify import verifyAsking
from rainbowd.config import ConfigError
from rainbowd.control.api import failureHint
from rainbowd.control.progress import OutputFollower, RedeployProgress, wantsNDJSON
from rainbowd.web.traffic import Traffic

_log = Logger()

ENDPOINTS = (
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
)

#: The largest body of C{POST /redeploy} or C{/maintenance} taken, in
#: bytes: a message is a sentence or two.
MAX_MESSAGE_BODY = 4096
#: The longest C{message} a redeploy may be asked with, in characters: a
#: commit's sha and subject, say.
LONGEST_MESSAGE = 1000


def jsonBody(body: Mapping[str, Any]) -> bytes:
    """
    C{body} as the control API writes JSON: pretty-printed, UTF-8, with a
    line end.
    """
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def writeJSON(request: IRequest, code: int, body: Mapping[str, Any]) -> bytes:
    """
    Set C{request}'s response code and content type, and return C{body} as
    pretty-printed JSON bytes for the caller to write or return from
    C{render}.  A HEAD request gets the length of that body and no body
    (rather than one twisted.web would log about and drop).
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    data = jsonBody(body)
    if request.method == b"HEAD":
        request.setHeader(b"content-length", b"%d" % (len(data),))
        return b""
    return data


#: The status code of each way a redeploy can fail; anything else is a 500.
_FAILURE_CODES = (
    (DeployFailed, 502),
    (NothingToRollBack, 409),
    (DeployRefused, 503),
    (ConfigError, 500),
)


def outcomeAsJSON(outcome: Any, serving: Optional[int]) -> Tuple[int, Dict[str, Any]]:
    """
    Map the outcome of C{deployer.redeploy()} -- a L{Deployed} or a
    L{Failure} -- to an HTTP status code and a JSON body.

    @param serving: the generation serving after it, for the hint.
    """
    body = describeOutcome(outcome)
    if body["ok"]:
        return 200, body
    for kind, code in _FAILURE_CODES:
        if outcome.check(kind):
            if not issubclass(kind, DeployRefused):
                body["hint"] = failureHint(serving)
            return code, body
    return 500, body


class _NotFound(Resource):
    """
    Anything that is not an endpoint: 404, listing the endpoints.
    """

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return writeJSON(
            request,
            404,
            {"error": f"no such endpoint: {path}", "endpoints": list(ENDPOINTS)},
        )


class Endpoint(Resource):
    """
    One endpoint: dispatch on the method to C{handlers}, and answer 405 with
    an C{Allow} header for any other.  A trailing slash is the same
    endpoint; anything deeper is not found.
    """

    def __init__(
        self, name: str, handlers: Mapping[bytes, Callable[[Request], object]]
    ) -> None:
        super().__init__()
        self._name = name
        self._handlers = handlers

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        if path == b"":
            return self
        return _NotFound()

    def render(self, request: Request) -> object:
        handler = self._handlers.get(request.method)
        if handler is not None:
            return handler(request)
        allowed = b", ".join(self._handlers)
        request.setHeader(b"allow", allowed)
        method = request.method.decode("ascii", "replace")
        return writeJSON(
            request,
            405,
            {
                "error": f"method {method} not allowed on {self._name}; "
                f"allowed: {allowed.decode('ascii')}"
            },
        )


class ControlResource(Resource):
    """
    The root of the control port: C{/redeploy}, C{/status} and C{/logs} over
    C{deployer}, whose C{redeploy()} returns a L{Deferred} firing with
    L{Deployed} (or failing with L{DeployFailed}, L{DeployRefused} or
    L{ConfigError}), whose C{status()} returns a JSON-able dict, and whose
    C{observe()}, C{active} and C{backends} let a redeploy be streamed and
    output be followed; and C{/pause}, C{/maintenance} and C{/resume} over
    C{traffic}, a L{Traffic}, which C{/status} shows too.

    @ivar connections: the public port's L{rainbowd.web.connlimit.ConnectionCap},
        whose counts C{/status} shows, or L{None}.
    """

    connections: Any = None
    #: The L{rainbowd.upgrade.upgrader.Upgrader} behind C{/upgrade} and C{/status}'s
    #: C{"rainbowd"}, or L{None}.
    upgrader: Any = None

    def __init__(
        self,
        deployer: Any,
        clock=None,
        traffic: Optional[Traffic] = None,
        askedByVerify: Optional[
            Callable[[Optional[int], Optional[Tuple[int, int]]], Optional[int]]
        ] = None,
    ) -> None:
        """
        @param askedByVerify: the pid of the verify process under way that
            is a control client, given its pid (a unix socket's client) or
            its TCP connection's ports (its own, the control port), or
            L{None}; L{verifyAsking} by default.
        """
        super().__init__()
        self._askedByVerify = (
            self._verifyAsking if askedByVerify is None else askedByVerify
        )
        if clock is None:
            from twisted.internet import reactor as clock
        self._deployer = deployer
        self._clock = clock
        self.traffic = Traffic(clock, 0.0) if traffic is None else traffic
        self.putChild(b"redeploy", Endpoint("/redeploy", {b"POST": self._redeploy}))
        self.putChild(b"pause", Endpoint("/pause", {b"POST": self._pause}))
        self.putChild(
            b"maintenance", Endpoint("/maintenance", {b"POST": self._maintenance})
        )
        self.putChild(b"resume", Endpoint("/resume", {b"POST": self._resume}))
        self.putChild(b"rollback", Endpoint("/rollback", {b"POST": self._rollback}))
        self.putChild(b"upgrade", Endpoint("/upgrade", {b"POST": self._upgrade}))
        self.putChild(
            b"status",
            Endpoint("/status", {b"GET": self._status, b"HEAD": self._status}),
        )
        self.putChild(b"logs", Endpoint("/logs", {b"GET": self._logs}))

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        return _NotFound()

    def render(self, request: IRequest) -> bytes:
        return _NotFound().render(request)

    def _status(self, request: IRequest) -> bytes:
        status = self._deployer.status()
        status = {**status, "traffic": self.traffic.describe()}
        if self.connections is not None:
            status = {**status, "connections": self.connections.describe()}
        if self.upgrader is not None:
            status = {**status, "rainbowd": self.upgrader.describe()}
        return writeJSON(request, 200, status)

    def _upgrade(self, request: Request) -> object:
        """
        Upgrade rainbowd: answer 200 with the new process's pid once it
        serves, or 502 with its last lines of output if it failed before.
        """
        if self.upgrader is None:
            return writeJSON(
                request, 503, {"ok": False, "error": "rainbowd: upgrades are not set up here"}
            )
        gone: List[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(outcome: object) -> None:
            body: Mapping[str, Any]
            if isinstance(outcome, Failure):
                code = 502
                body = {
                    "ok": False,
                    "error": str(outcome.value),
                    "output": list(getattr(outcome.value, "output", [])),
                }
            else:
                # What Upgrader.upgrade succeeds with: the JSON answer.
                code, body = 200, cast(Mapping[str, Any], outcome)
            if gone:
                _log.info("Upgrade finished ({code}) after its client hung up", code=code)
                return
            request.write(writeJSON(request, code, body))
            request.finish()

        self.upgrader.upgrade(describePeer(request)).addBoth(answer).addErrback(
            lambda f: _log.failure("Could not answer an upgrade request", f)
        )
        return NOT_DONE_YET

    def _pause(self, request: Request) -> bytes:
        return writeJSON(request, 200, self.traffic.pause(describePeer(request)))

    def _resume(self, request: Request) -> bytes:
        return writeJSON(request, 200, self.traffic.resume(describePeer(request)))

    def _maintenance(self, request: Request) -> bytes:
        """
        Go into maintenance, with the message of the body if it has one.
        """
        try:
            # Read in full before a resource renders.
            assert request.content is not None
            message = messageBody(
                request.content.read(),
                "/maintenance",
                "Back at 14:00 UTC",
                MAX_MESSAGE_BODY,
            )
        except _Refusal as refusal:
            return writeJSON(request, refusal.code, refusal.body)
        try:
            answer = self.traffic.maintenance(describePeer(request), message)
        except ConfigError as e:
            return writeJSON(
                request, 500, {"error": str(e), **self.traffic.describe()}
            )
        return writeJSON(request, 200, answer)

    def _redeploy(self, request: Request) -> object:
        """
        Answer once the deploy has an outcome, or stream its steps to a
        client that accepts NDJSON.  A client that hangs up does not cancel
        the deploy; its answer is then just dropped.
        """
        try:
            # Read in full before a resource renders.
            assert request.content is not None
            message = messageBody(
                request.content.read(),
                "/redeploy",
                "abc1234: fix the login page",
                LONGEST_MESSAGE,
            )
        except _Refusal as refusal:
            return writeJSON(request, refusal.code, refusal.body)
        peer = request.getClientAddress()
        pid, ports = None, None
        if isinstance(peer, (IPv4Address, IPv6Address)):
            ports = (peer.port, request.getHost().port)
        else:
            pid = (_peerCredentials(request) or (None, None))[0]
        asking = self._askedByVerify(pid, ports)
        if asking is not None:
            return writeJSON(
                request,
                409,
                {
                    "error": f"rainbowd: this redeploy comes from process "
                    f"{asking}, of the verify command under way, and would "
                    "wait for the deploy that verify holds up: take "
                    "redeploys out of verify"
                },
            )
        watch = _argument(request, b"watch") in ("1", "true", "yes")
        redeploy = partial(
            self._deployer.redeploy, requester=describePeer(request), message=message
        )
        return self._deploy(request, redeploy, "redeploy", watch)

    def _rollback(self, request: Request) -> object:
        """
        Roll back, answered as a redeploy is (409 if there is nothing to
        roll back to).
        """
        rollback = partial(self._deployer.rollback, describePeer(request))
        return self._deploy(request, rollback, "rollback")

    def _deploy(
        self, request: Request, ask: Callable[[], Any], cause: str, watch=False
    ) -> object:
        """
        Answer once the deploy C{ask} asks for has an outcome, or stream its
        steps to a client that accepts NDJSON.  A client that hangs up does
        not cancel the deploy; its answer is then just dropped.
        """
        if wantsNDJSON(request):
            RedeployProgress(
                self._deployer,
                self._clock,
                request,
                self._outcomeAsJSON,
                ask=ask,
                cause=cause,
                watch=watch,
            ).start()
            return NOT_DONE_YET
        gone: List[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(outcome: object) -> None:
            code, body = self._outcomeAsJSON(outcome)
            if gone:
                _log.info(
                    "{what} finished ({code}) after its client hung up: {body}",
                    what=cause.capitalize(),
                    code=code,
                    body=body,
                )
                return
            request.write(writeJSON(request, code, body))
            request.finish()

        maybeDeferred(ask).addBoth(answer).addErrback(
            lambda f: _log.failure("Could not answer a {cause} request", f, cause=cause)
        )
        return NOT_DONE_YET

    def _outcomeAsJSON(self, outcome: object) -> Tuple[int, Dict[str, Any]]:
        active = self._deployer.active
        return outcomeAsJSON(outcome, None if active is None else active.generation)

    def _verifyAsking(
        self, pid: Optional[int], ports: Optional[Tuple[int, int]]
    ) -> Optional[int]:
        """
        L{verifyAsking}, while a verify runs.
        """
        if not self._deployer.status().get("verify"):
            return None
        return verifyAsking(
            ProcessGroupSignals(), self._deployer.config.stateDir, pid, ports
        )

    def _logs(self, request: Request) -> object:
        """
        The last output lines of a generation (the active one unless
        C{?generation=N}), as text; with C{?follow=1}, then each new line
        until the generation stops.
        """
        try:
            backend = self._chosenBackend(_argument(request, b"generation"))
        except _Refusal as refusal:
            return writeJSON(request, refusal.code, refusal.body)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-rainbowd-generation", b"%d" % (backend.generation,))
        text = "".join(line + "\n" for line in backend.output).encode("utf-8")
        if _argument(request, b"follow") not in ("1", "true", "yes"):
            return text
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(text)
        OutputFollower(backend, request).start()
        return NOT_DONE_YET

    def _chosenBackend(self, generation: Optional[str]) -> Any:
        """
        The running backend of C{generation}, or the active one.

        @raise _Refusal: if there is none, or C{generation} is not a number.
        """
        backends = self._deployer.backends
        if generation is None:
            if self._deployer.active is not None:
                return self._deployer.active
            error = "no generation is serving; ask for one with ?generation=N"
        elif not (generation.isascii() and generation.isdigit()):
            raise _Refusal(
                400, {"error": f"generation must be a whole number, not {generation!r}"}
            )
        else:
            for backend in backends:
                if backend.generation == int(generation):
                    return backend
            error = (
                f"generation {generation} is not running; the running ones "
                "are listed in generations (and GET /status)"
            )
        running = [backend.generation for backend in backends]
        raise _Refusal(404, {"error": error, "generations": running})


class _Refusal(Exception):
    """
    A request that gets an error answer: C{code} and a JSON C{body}.
    """

    def __init__(self, code: int, body: Dict[str, Any]) -> None:
        super().__init__(code, body)
        self.code = code
        self.body = body


def messageBody(
    body: bytes, endpoint: str, example: str, longest: int
) -> Optional[str]:
    """
    The C{message} of a control request's body: none (an empty body, as
    C{curl -d ''} sends), or a JSON object whose only key is an optional
    C{message}, one line of text of at most C{longest} characters.

    @param endpoint: the request's path, for the error.
    @param example: a message to show in the error.
    @raise _Refusal: a 400 saying what is wrong with C{body}, and the fix.
    """

    def refuse(problem: str) -> _Refusal:
        return _Refusal(
            400,
            {
                "error": f"the body of POST {endpoint} {problem}; send none, "
                f"or a JSON object like {json.dumps({'message': example})}"
            },
        )

    if not body.strip():
        return None
    if len(body) > MAX_MESSAGE_BODY:
        raise refuse(f"is {len(body)} bytes, more than the {MAX_MESSAGE_BODY} taken")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise refuse("is not JSON")
    if not isinstance(parsed, dict):
        raise refuse("is JSON, but not an object")
    unknown = sorted(set(parsed) - {"message"})
    if unknown:
        raise refuse(
            'has keys other than "message": ' + ", ".join(map(json.dumps, unknown))
        )
    message = parsed.get("message")
    if message is None:
        return None
    if not isinstance(message, str):
        raise refuse('has a "message" that is not a string')
    if len(message) > longest:
        raise refuse(
            f'has a "message" of {len(message)} characters, more than the '
            f"{longest} taken"
        )
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse(
            'has a "message" that is not Unicode text (a lone surrogate escape)'
        )
    if not message.isprintable():
        raise refuse(
            'has a "message" with line ends or other control characters: it '
            "must be one line of text, as it is shown in tables and logs"
        )
    return message or None


def _argument(request: IRequest, name: bytes) -> Optional[str]:
    values = request.args.get(name)
    return None if not values else values[-1].decode("utf-8", "replace")


class _Peered(Protocol):
    """
    What L{describePeer} reads of a request: a L{Request}, or a test's fake.
    """

    channel: Any

    def getClientAddress(self) -> IAddress: ...

    def getHost(self) -> IAddress: ...


def describePeer(request: _Peered) -> str:
    """
    Who sent C{request}: C{host:port}, or C{unix:PATH} for a unix socket
    (with the user and pid of the process on the other end, where the
    kernel says).
    """
    peer = request.getClientAddress()
    if isinstance(peer, (IPv4Address, IPv6Address)):
        host = f"[{peer.host}]" if ":" in peer.host else peer.host
        return f"{host}:{peer.port}"
    if isinstance(peer, UNIXAddress):
        # The control socket's path: the client's own, if it bound its
        # socket to one, is whatever it chose to write.
        path = getattr(request.getHost(), "name", None)
        described = "unix:" + (os.fsdecode(path) if path else "?")
        credentials = _peerCredentials(request)
        if credentials is not None:
            pid, uid = credentials
            described += f" (uid {uid}, pid {pid})"
        return described
    return str(peer)


#: Linux's option for the credentials of a unix socket's peer, which the
#: socket module of PyPy 3.9 does not name.
_SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17 if sys.platform == "linux" else None)


def _peerCredentials(request: _Peered) -> Optional[Tuple[int, int]]:
    """
    The pid and uid of the process at the other end of C{request}'s unix
    socket, or L{None} if they cannot be known.
    """
    if _SO_PEERCRED is None:
        return None
    try:
        handle = request.channel.transport.getHandle()
        packed = handle.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    pid, uid, gid = struct.unpack("3i", packed)
    return pid, uid
