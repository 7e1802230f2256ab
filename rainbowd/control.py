# -*- test-case-name: rainbowd.test.test_control -*-
"""
The control API, served on the control port::

    POST /redeploy   start the new version, wait for it, swap traffic
                     (its steps as NDJSON with Accept: application/x-ndjson)
    POST /rollback   move traffic back to the standby, or launch the
                     previous version again (NDJSON as for /redeploy)
    GET  /status     the generations and their backends
    GET  /logs       a generation's last output lines (?follow=1: and more)
    GET  /metrics    L{rainbowd.metrics.MetricsResource}, put here by
                     L{rainbowd.tap.makeService}

Every other answer, errors included, is pretty-printed JSON.
"""

import json
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rainbowd.config import ConfigError
from rainbowd.deployer import (
    DeployFailed,
    DeployRefused,
    NothingToRollBack,
    describeOutcome,
)
from rainbowd.progress import OutputFollower, RedeployProgress, wantsNDJSON

_log = Logger()

ENDPOINTS = (
    "POST /redeploy",
    "POST /rollback",
    "GET /status",
    "GET /logs",
    "GET /metrics",
)

HINT = "the current version keeps serving; fix the problem and redeploy"


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


def outcomeAsJSON(outcome: Any) -> Tuple[int, Dict[str, Any]]:
    """
    Map the outcome of C{deployer.redeploy()} -- a L{Deployed} or a
    L{Failure} -- to an HTTP status code and a JSON body.
    """
    body = describeOutcome(outcome)
    if body["ok"]:
        return 200, body
    for kind, code in _FAILURE_CODES:
        if outcome.check(kind):
            if not issubclass(kind, DeployRefused):
                body["hint"] = HINT
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
        self, name: str, handlers: Mapping[bytes, Callable[[IRequest], object]]
    ) -> None:
        super().__init__()
        self._name = name
        self._handlers = handlers

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        if path == b"":
            return self
        return _NotFound()

    def render(self, request: IRequest) -> object:
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
    output be followed.

    @ivar connections: the public port's L{rainbowd.connlimit.ConnectionCap},
        whose counts C{/status} shows, or L{None}.
    """

    connections: Any = None

    def __init__(self, deployer: Any, clock=None) -> None:
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self._deployer = deployer
        self._clock = clock
        self.putChild(b"redeploy", Endpoint("/redeploy", {b"POST": self._redeploy}))
        self.putChild(b"rollback", Endpoint("/rollback", {b"POST": self._rollback}))
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
        if self.connections is not None:
            status = {**status, "connections": self.connections.describe()}
        return writeJSON(request, 200, status)

    def _redeploy(self, request: IRequest) -> object:
        """
        Answer once the deploy has an outcome, or stream its steps to a
        client that accepts NDJSON.  A client that hangs up does not cancel
        the deploy; its answer is then just dropped.
        """
        watch = _argument(request, b"watch") in ("1", "true", "yes")
        return self._deploy(request, self._deployer.redeploy, "redeploy", watch)

    def _rollback(self, request: IRequest) -> object:
        """
        Roll back, answered as a redeploy is (409 if there is nothing to
        roll back to).
        """
        requester = _peer(request)
        return self._deploy(
            request, lambda: self._deployer.rollback(requester), "rollback"
        )

    def _deploy(
        self, request: IRequest, ask: Callable[[], Any], cause: str, watch=False
    ) -> object:
        if wantsNDJSON(request):
            RedeployProgress(
                self._deployer,
                self._clock,
                request,
                outcomeAsJSON,
                ask=ask,
                cause=cause,
                watch=watch,
            ).start()
            return NOT_DONE_YET
        gone = []
        request.notifyFinish().addErrback(gone.append)

        def answer(outcome: object) -> None:
            code, body = outcomeAsJSON(outcome)
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

    def _logs(self, request: IRequest) -> object:
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


def _peer(request: IRequest) -> str:
    """
    Who sent C{request}: its peer's address, or the unix socket's path.
    """
    address = request.getClientAddress()
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix socket {name or ''}".rstrip()


def _argument(request: IRequest, name: bytes) -> Optional[str]:
    values = request.args.get(name)
    return None if not values else values[-1].decode("utf-8", "replace")
