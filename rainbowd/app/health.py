# -*- test-case-name: rainbowd.test.unit.test_health -*-
"""
Asking a backend whether it is healthy: C{GET healthCheckPath} must answer
2xx, once before it gets traffic (L{HTTPHealthCheck}), and again and again
while it serves (L{LivenessProbe}).
"""

from typing import Any, Callable, Dict, Optional
from urllib.parse import quote

import attrs
from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from rainbowd.events import REPORT_EVERY  # the unhealthy event says it

#: The characters that go into a request line as they are.
_URI_CHARACTERS = "".join(map(chr, range(0x21, 0x7F)))


class Unhealthy(Exception):
    """
    The backend answered the health check, but not with a 2xx status.
    """


@implementer(IAgentEndpointFactory)
@attrs.frozen
class _Loopback:
    """
    Connect to the URI's port on 127.0.0.1, where backends listen, without
    any name resolution.
    """

    reactor: object

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", uri.port)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


class _QuietPool(HTTPConnectionPool):
    """
    A pool that logs no line for each connection it opens and closes.
    """

    _factory = _QuietFactory


@attrs.frozen
class HTTPHealthCheck:
    """
    Probes a backend over HTTP, one connection per probe.
    """

    reactor: object

    def __call__(self, port: int, path: str, timeout: float) -> Deferred:
        """
        Fire with L{None} if C{GET path} on C{127.0.0.1:port} answers 2xx
        within C{timeout} seconds; fail otherwise.
        """
        agent = Agent.usingEndpointFactory(
            self.reactor,
            _Loopback(self.reactor),
            pool=_QuietPool(self.reactor, persistent=False),
        )
        # Percent-encode what a request line cannot hold (non-ASCII, control
        # characters); the Agent would raise on it rather than fail the probe.
        url = f"http://127.0.0.1:{port}{quote(path, safe=_URI_CHARACTERS)}"
        d = agent.request(b"GET", url.encode("ascii"))
        d.addCallback(self._checkStatus, path)
        d.addTimeout(
            timeout,
            self.reactor,
            onTimeoutCancel=lambda result, seconds: self._timedOut(path, seconds),
        )
        return d

    @staticmethod
    def _timedOut(path, seconds):
        # Cancelling the Agent's request fails with ConnectingCancelledError
        # or ResponseNeverReceived, which say nothing of a timeout.
        raise TimeoutError(f"GET {path} did not answer within {seconds:g} s")

    @staticmethod
    def _checkStatus(response, path):
        response.deliverBody(Protocol())  # discard it; the connection closes
        if not 200 <= response.code < 300:
            raise Unhealthy(f"GET {path} answered {response.code}")


def describeProbeFailure(reason: Failure, path: Optional[str]) -> str:
    """
    Say why a health check of C{GET path} failed, as one clause that a
    longer message can go on after (no full stop of its own).
    """
    if reason.check(ConnectionRefusedError):
        return f"GET {path}: connection refused"
    if reason.check(ResponseFailed):
        return f"GET {path}: the connection closed before an answer"
    return (reason.getErrorMessage() or reason.type.__name__).rstrip(".")


#: How long, at least, between two reports of the same failure, in seconds:
#: no more often than the deploy's C{waiting} lines, however short
#: C{healthCheckInterval} is.
REPORT_SPACING = 1.0


class FailureStreak:
    """
    The health checks of a starting generation that failed in a row the
    same way, and when to say so: at the C{every}th of them, then at most
    once every C{spacing} seconds while they go on.

    @ivar error: how the latest failed, or L{None} before any has.
    @ivar count: how many in a row, up to now, failed that way.
    """

    def __init__(
        self, every: int = REPORT_EVERY, spacing: float = REPORT_SPACING
    ) -> None:
        self.error: Optional[str] = None
        self.count = 0
        self._every = every
        self._spacing = spacing
        self._reported: Optional[float] = None

    def failed(self, error: str, now: float) -> bool:
        """
        Another check failed, with C{error}, at time C{now}: is this
        failure one to report?
        """
        if error != self.error:
            self.error, self.count, self._reported = error, 0, None
        self.count += 1
        if self.count < self._every:
            return False
        if self._reported is not None and now - self._reported < self._spacing:
            return False
        self._reported = now
        return True


class LivenessProbe:
    """
    Run a check every C{interval} seconds, and say when it has failed
    C{threshold} times in a row, and when it passes again after that.

    The check takes no argument and returns a Deferred (or a value, or
    raises): a failure is a failed check, anything else a passed one.  It
    must end by itself within a bounded time, as L{HTTPHealthCheck} does
    within its timeout.  The next check begins C{interval} after the last
    one ended, so two checks never overlap, and a backend that is slow to
    answer is not asked faster than it answers.

    @ivar failures: how many checks have failed in a row, up to now.
    @ivar lastError: why the latest failed check failed, or L{None} if none
        has.
    @ivar lastReason: the exception that latest failed check failed with,
        or L{None} if none has, for an observer to tell causes apart.
    @ivar failing: whether C{threshold} checks have failed in a row with
        none passed since.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        check: Callable[[], Any],
        interval: float,
        threshold: int,
        onFailing: Callable[["LivenessProbe"], None],
        onRecovered: Callable[["LivenessProbe"], None] = lambda probe: None,
        onStillFailing: Callable[["LivenessProbe"], None] = lambda probe: None,
    ) -> None:
        """
        @param onFailing: called once the C{threshold}th check in a row has
            failed; then not again until a check has passed.
        @param onRecovered: called when a check passes after C{onFailing}
            was called.
        @param onStillFailing: called for each failed check after the
            C{threshold}th one in a row, until one passes.
        """
        if interval <= 0 or threshold < 1:
            raise ValueError(
                f"a liveness probe needs an interval > 0 and a threshold >= 1, "
                f"not {interval!r} and {threshold!r}"
            )
        self.failures = 0
        self.lastError: Optional[str] = None
        self.lastReason: Optional[BaseException] = None
        self.failing = False
        self._clock = clock
        self._check = check
        self._interval = interval
        self._threshold = threshold
        self._onFailing = onFailing
        self._onRecovered = onRecovered
        self._onStillFailing = onStillFailing
        self._running = False
        self._call: Optional[IDelayedCall] = None
        self._checking: Optional[Deferred] = None

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """
        Check C{interval} from now, and every C{interval} after each check.

        @raise RuntimeError: if the probe is running already.
        """
        if self._running:
            raise RuntimeError("this liveness probe is running already")
        self._running = True
        self._next()

    def stop(self) -> None:
        """
        Check no more; a check under way is cancelled, and its result
        ignored.  Stopping a stopped probe does nothing.
        """
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        checking, self._checking = self._checking, None
        if checking is not None:
            checking.cancel()

    def describe(self) -> Dict[str, Any]:
        """
        The probe's state as a JSON-able dict, for C{/status}.
        """
        return {
            "unresponsive": self.failing,
            "failures": self.failures,
            "lastError": self.lastError,
        }

    def _next(self) -> None:
        self._call = self._clock.callLater(self._interval, self._run)

    def _run(self) -> None:
        self._call = None
        d = self._checking = maybeDeferred(self._check)
        d.addCallbacks(self._passed, self._failed, callbackArgs=(d,), errbackArgs=(d,))

    def _ended(self, d: Deferred) -> bool:
        """
        The check C{d} has ended: is the probe still running it?
        """
        if not self._running or d is not self._checking:
            return False
        self._checking = None
        self._next()
        return True

    def _passed(self, result: object, d: Deferred) -> None:
        if not self._ended(d):
            return
        self.failures = 0
        if self.failing:
            self.failing = False
            self._tell(self._onRecovered)

    def _failed(self, reason, d: Deferred) -> None:
        if not self._ended(d):
            return
        self.failures += 1
        self.lastError = reason.getErrorMessage() or reason.type.__name__
        self.lastReason = reason.value
        if self.failures == self._threshold:
            self.failing = True
            self._tell(self._onFailing)
        elif self.failing:
            self._tell(self._onStillFailing)

    def _tell(self, observer: Callable[["LivenessProbe"], None]) -> None:
        try:
            observer(self)
        except Exception:
            self.log.failure("an observer of a liveness probe failed")
