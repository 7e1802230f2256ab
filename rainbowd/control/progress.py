# -*- test-case-name: rainbowd.test.unit.test_progress -*-
"""
Streamed answers of the control API: a redeploy's steps as they happen
(NDJSON), and an app's output as it is printed.
"""

import json
from typing import Any, Callable, Dict, Optional, Set, Tuple

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from rainbowd.app.deployer import Event
from rainbowd.control.api import NDJSON
from rainbowd.events import OUTCOMES, EventKind

_log = Logger()

#: How often a streamed redeploy reports the time waited, in seconds.
PROGRESS_INTERVAL = 1.0

#: How long a streamed redeploy follows the old generation's stop beyond
#: C{drainTimeout} + C{killTimeout}, in seconds.
STOP_MARGIN = 5.0

#: Deploy outcomes, which the result line replaces.
_OUTCOMES = frozenset(OUTCOMES)

#: Events streamed whichever deploy is under way: the serving generation's
#: health, which says why what serves may soon change, and rainbowd's
#: shutdown, which says why the deploy will not be done.
_ALWAYS = frozenset({EventKind.unresponsive, EventKind.recovered, EventKind.shutdown})


def wantsNDJSON(request: IRequest) -> bool:
    """
    Does C{request} accept C{application/x-ndjson}?
    """
    accept = request.getHeader(b"accept") or b""
    return any(
        item.split(b";")[0].strip().lower() == NDJSON for item in accept.split(b",")
    )


def _line(body: Dict[str, Any]) -> bytes:
    return (json.dumps(body, separators=(", ", ": ")) + "\n").encode("utf-8")


class RedeployProgress:
    """
    One C{POST /redeploy} answered as NDJSON: the events of the deploy that
    serves it (the next to start, since requests made during a deploy share
    the next one), C{waiting} lines while its generation starts, a
    C{result} line with the outcome, then the old generation's C{draining}
    lines until it is C{stopped} or kept as the C{standby} (or a bound
    passes), then the end.

    @param describe: maps the deploy's outcome to an HTTP code and a JSON
        body, as the plain answer has.
    @param ask: asks for the deploy (by default C{deployer.redeploy}), and
        returns a Deferred of its outcome.
    @param cause: the C{cause} of the deploy that C{ask} begins.
    @param watch: after a deploy that keeps a standby, go on until its
        rollback window ends (a C{watching} line each second), or until
        traffic moves away from the new generation; then a C{watched} line
        says which.
    """

    def __init__(
        self,
        deployer: Any,
        clock,
        request: Request,
        describe: Callable[[object], Tuple[int, Dict[str, Any]]],
        interval: float = PROGRESS_INTERVAL,
        ask: Optional[Callable[[], Any]] = None,
        cause: str = "redeploy",
        watch: bool = False,
    ) -> None:
        self._deployer = deployer
        self._ask = deployer.redeploy if ask is None else ask
        self._cause = cause
        self._watch = watch
        self._switchedTo: Optional[int] = None
        self._kept: Optional[int] = None
        self._watching = False
        self._rollback: Optional[int] = None
        self._windowEnds = 0.0
        self._clock = clock
        self._request = request
        self._describe = describe
        self._interval = interval
        self._deploy: Optional[int] = None
        self._starting: Dict[Optional[int], float] = {}
        self._verifying: Dict[Optional[int], float] = {}
        self._queued: Optional[float] = None
        self._toStop: Set[Optional[int]] = set()
        self._draining: Dict[Optional[int], float] = {}
        self._result = False
        self._finished = False
        self._gone = False
        self._stopObserving: Optional[Callable[[], None]] = None
        self._ticks = LoopingCall(self._tick)
        self._ticks.clock = clock
        self._deadline = None

    def start(self) -> None:
        """
        Ask for the redeploy and stream it to the request.
        """
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", NDJSON)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.notifyFinish().addErrback(self._clientGone)
        self._stopObserving = self._deployer.observe(self._observe)
        outcome = maybeDeferred(self._ask)
        if self._deploy is None and not outcome.called:
            self._queued = self._clock.seconds()
            self._write({"event": EventKind.queued, "time": self._queued})
        self._ticks.start(self._interval, now=False)
        outcome.addBoth(self._outcome).addErrback(
            lambda f: _log.failure("Could not stream a redeploy's outcome", f)
        )

    # Events

    def _observe(self, event: Event) -> None:
        if self._finished:
            return
        if self._watching:
            self._watched(event)
            return
        if event.kind in _ALWAYS:
            self._write(event.asJSON())
            return
        details = event.details
        mine = self._deploy is not None and details.get("deploy") == self._deploy
        if self._deploy is None:
            if event.kind == EventKind.deploying and details.get("cause") == self._cause:
                self._deploy = details["deploy"]
                self._write(event.asJSON())
            return
        if event.kind in _OUTCOMES:
            return
        if event.kind == EventKind.launching and mine:
            self._starting[event.generation] = event.time
            self._toStop.add(event.generation)
        elif event.kind in (EventKind.healthy, EventKind.retrying) and mine:
            self._starting.pop(event.generation, None)
        elif event.kind == EventKind.verifying and mine:
            self._verifying[event.generation] = event.time
        elif event.kind == EventKind.verified and mine:
            self._verifying.pop(event.generation, None)
        elif event.kind == EventKind.switched and mine:
            self._toStop.discard(event.generation)
            self._switchedTo = event.generation
        elif event.kind == EventKind.draining and not self._result:
            # Emitted right after this deploy's "switched".
            self._toStop.add(event.generation)
            self._draining[event.generation] = event.time
            mine = True
        elif event.kind == EventKind.standby and event.generation in self._toStop:
            # Drained and kept: as far as this deploy goes, it is done.
            self._toStop.discard(event.generation)
            self._kept = event.generation
            self._windowEnds = event.time + details.get("seconds", 0.0)
            self._draining.pop(event.generation, None)
            mine = True
        elif event.kind == EventKind.stopped and event.generation in self._toStop:
            self._toStop.discard(event.generation)
            self._starting.pop(event.generation, None)
            self._draining.pop(event.generation, None)
            mine = True
        if mine:
            self._write(event.asJSON())
        if self._result and not self._toStop:
            self._done()

    def _done(self) -> None:
        """
        The deploy and its old generations are done: end, or watch the
        rollback window.
        """
        standby = getattr(self._deployer, "standby", None)
        if (
            not self._watch
            or self._kept is None
            or standby is None
            or standby.generation != self._kept
        ):
            self._finish()
            return
        self._watching = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        left = max(self._windowEnds - self._clock.seconds(), 0.0)
        self._deadline = self._clock.callLater(
            left + STOP_MARGIN, self._endWatch, False
        )

    def _watched(self, event: Event) -> None:
        """
        An event while the rollback window is watched.
        """
        details = event.details
        if event.kind == EventKind.switched and details.get("previous") == self._switchedTo:
            self._rollback = details.get("deploy")
            self._write(event.asJSON())
        elif event.kind == EventKind.rolledBack and details.get("from") == self._switchedTo:
            self._write(event.asJSON())
        elif event.kind in _OUTCOMES and self._rollback is not None:
            if details.get("deploy") == self._rollback:
                self._endWatch(True)
        elif event.kind == EventKind.stopped and event.generation == self._kept:
            self._write(event.asJSON())
            self._endWatch(False)
        elif event.kind in _ALWAYS:
            self._write(event.asJSON())

    def _endWatch(self, rolledBack: bool) -> None:
        active = self._deployer.active
        self._write(
            {
                "event": EventKind.watched,
                "time": self._clock.seconds(),
                "generation": self._switchedTo,
                "rolledBack": rolledBack,
                "serving": None if active is None else active.generation,
            }
        )
        self._finish()

    def _outcome(self, outcome: object) -> None:
        code, body = self._describe(outcome)
        active = self._deployer.active
        self._result = True
        self._starting.clear()
        self._verifying.clear()
        if self._gone:
            self._stop()
            self._finished = True
            _log.info(
                "Redeploy finished ({code}) after its client hung up: {body}",
                code=code,
                body=body,
            )
            return
        self._write(
            {
                **body,
                "event": EventKind.result,
                "time": self._clock.seconds(),
                "serving": None if active is None else active.generation,
            }
        )
        if not self._toStop:
            self._done()
            return
        config = self._deployer.config
        bound = config.drainTimeout + config.killTimeout + STOP_MARGIN
        self._deadline = self._clock.callLater(bound, self._finish)

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self._watching:
            standby = self._deployer.standby
            self._write(
                {
                    "event": EventKind.watching,
                    "time": now,
                    "generation": self._switchedTo,
                    "standby": None if standby is None else standby.generation,
                    "secondsLeft": round(max(self._windowEnds - now, 0.0), 1),
                }
            )
            return
        if self._queued is not None and self._deploy is None and not self._result:
            self._write(
                {
                    "event": EventKind.waiting,
                    "time": now,
                    "step": "queued",
                    "elapsed": round(now - self._queued, 1),
                }
            )
        for generation, since in self._starting.items():
            self._write(
                {
                    "event": EventKind.waiting,
                    "time": now,
                    "generation": generation,
                    "deploy": self._deploy,
                    "elapsed": round(now - since, 1),
                }
            )
        for generation, since in self._verifying.items():
            self._write(
                {
                    "event": EventKind.waiting,
                    "time": now,
                    "generation": generation,
                    "deploy": self._deploy,
                    "elapsed": round(now - since, 1),
                    "step": "verify",
                }
            )
        if not self._result:
            return
        for generation, since in self._draining.items():
            backend = self._backend(generation)
            self._write(
                {
                    "event": EventKind.draining,
                    "time": now,
                    "generation": generation,
                    "inflight": None if backend is None else backend.inflight,
                    "elapsed": round(now - since, 1),
                }
            )

    def _backend(self, generation: Optional[int]):
        for backend in self._deployer.backends:
            if backend.generation == generation:
                return backend
        return None

    # The response

    def _write(self, body: Dict[str, Any]) -> None:
        if not self._gone and not self._finished:
            self._request.write(_line(body))

    def _finish(self) -> None:
        if self._finished:
            return
        self._stop()
        self._finished = True
        if not self._gone:
            self._request.finish()

    def _clientGone(self, reason) -> None:
        self._gone = True
        if self._result:
            self._stop()
            self._finished = True
            return
        # Keep observing until the outcome, to log it.

    def _stop(self) -> None:
        if self._stopObserving is not None:
            self._stopObserving()
            self._stopObserving = None
        if self._ticks.running:
            self._ticks.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()


class OutputFollower:
    """
    Stream a backend's output lines to a request as they come, until the
    backend stops or the client hangs up.
    """

    def __init__(self, backend: Any, request: Request) -> None:
        self._backend = backend
        self._request = request
        self._stopObserving: Optional[Callable[[], None]] = None
        self._done = False

    def start(self) -> None:
        self._request.notifyFinish().addErrback(lambda reason: self._end(False))
        self._stopObserving = self._backend.observeOutput(self._line)
        self._backend.whenStopped().addCallback(lambda backend: self._end(True))

    def _line(self, line: str) -> None:
        if not self._done:
            self._request.write((line + "\n").encode("utf-8"))

    def _end(self, finish: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._stopObserving is not None:
            self._stopObserving()
        if finish:
            self._request.finish()
