# -*- test-case-name: rainbowd.test.unit.test_metrics -*-
"""
rainbowd's metrics, served in Prometheus' text format on the control
port's C{GET /metrics}.

Requests are counted as they end, through L{ProxySite}'s C{requestLog};
deploys, crashes, hangs and stops through L{Deployer.observe}; what is true now --
requests in flight, backends by state -- is read from the deployer when
scraped.
"""

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from zope.interface import implementer

from rainbowd.app.backend import ALIVE, State
from rainbowd.app.deployer import Event
from rainbowd.control.resource import Endpoint
from rainbowd.events import OUTCOMES, EventKind
from rainbowd.interfaces import IRequestLog

#: Upper bounds of the request duration histogram, in seconds: from a
#: request an app answers from memory to one that takes half a minute.
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
)

#: Upper bounds of the deploy duration histogram, in seconds.
DEPLOY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

#: Upper bounds of the histogram of PyPy's collector pauses, in seconds:
#: from a minor collection of a small nursery to a stop of the world.
GC_PAUSE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
)

#: How many of the newest generations keep their request series once their
#: processes are gone, so that their last counts are still scraped; older
#: generations' series are dropped, which bounds the label sets.
STOPPED_GENERATIONS_KEPT = 5

#: The version of the text format that every Prometheus reads.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The C{status} of a request whose connection closed before its response
#: was complete.
UNFINISHED = "unfinished"

#: The C{generation} of a request no backend took (a 503 while none was
#: ready, a 400 for a target that cannot be forwarded).
NO_GENERATION = "none"


class _Now:
    """
    A collector of what is true when scraped: the backends by state, the
    requests each is serving, and the active generation.
    """

    def __init__(self, deployer: Any) -> None:
        self._deployer = deployer

    def collect(self) -> Iterable[Metric]:
        backends = list(self._deployer.backends)
        states = GaugeMetricFamily(
            "rainbowd_backends",
            "Backends whose processes are alive, by state.",
            labels=["state"],
        )
        for state in State:
            if state in ALIVE:
                count = sum(1 for backend in backends if backend.state is state)
                states.add_metric([state.value], count)
        yield states
        inflight = GaugeMetricFamily(
            "rainbowd_inflight_requests",
            "Requests a backend is serving now, by generation.",
            labels=["generation"],
        )
        for backend in backends:
            if backend.state in ALIVE:
                inflight.add_metric([str(backend.generation)], backend.inflight)
        yield inflight
        active = self._deployer.active
        yield GaugeMetricFamily(
            "rainbowd_active_generation",
            "The active generation (while its process is stopped it gets no "
            "new requests); 0 while none is.",
            value=0 if active is None else active.generation,
        )


class _Connections:
    """
    A collector of the listening ports' counts: the public port's open and
    refused connections (see L{rainbowd.web.connlimit.ConnectionCap}), and each
    port's failed accepts (see L{rainbowd.web.connlimit.AcceptErrors}).
    """

    def __init__(self, cap: Any, listening: Mapping[str, Any]) -> None:
        self._cap = cap
        self._listening = listening

    def collect(self) -> Iterable[Metric]:
        cap = self._cap
        yield GaugeMetricFamily(
            "rainbowd_connections",
            "Connections open on the public port.",
            value=cap.open,
        )
        yield GaugeMetricFamily(
            "rainbowd_max_connections",
            "The most connections open at once on the public port "
            "(maxConnections).",
            value=cap.maximum,
        )
        yield CounterMetricFamily(
            "rainbowd_refused_connections",
            "Connections to the public port answered 503 and closed because "
            "maxConnections were open.",
            value=cap.refused,
        )
        failed = CounterMetricFamily(
            "rainbowd_accept_errors",
            "Connections a port could not accept, by config key of the port "
            "and error (EMFILE: rainbowd is out of file descriptors).",
            labels=["port", "error"],
        )
        unanswered = CounterMetricFamily(
            "rainbowd_unanswered_connections",
            "Connections a port closed unanswered to get a file descriptor "
            "back, by config key of the port.",
            labels=["port"],
        )
        for key, listening in sorted(self._listening.items()):
            errors = listening.acceptErrors
            if errors is None:
                continue
            for error, count in sorted(errors.errors.items()):
                failed.add_metric([key, error], count)
            unanswered.add_metric([key], errors.closed)
        yield failed
        yield unanswered


class _CollectorPauses:
    """
    PyPy's garbage collector, through its C{gc.hooks}: the time each minor
    collection and each step of a major collection stopped rainbowd, the
    major collections done, and the nursery's size.

    PyPy hands over the events that happened while a hook ran as one, with
    their count, total, shortest and longest duration; those are observed
    as the shortest, the longest and the rest at their mean, so that the
    histogram's count and sum stay exact.
    """

    def __init__(self, registry: CollectorRegistry, hooks: Any, nursery: int) -> None:
        pauses = Histogram(
            "rainbowd_pypy_gc_pause_seconds",
            "Time PyPy's garbage collector stopped rainbowd, by kind: minor "
            "(a minor collection) or step (a step of a major collection, "
            "which runs after a minor one).",
            ["kind"],
            buckets=GC_PAUSE_BUCKETS,
            registry=registry,
        )
        self._minor = pauses.labels("minor")
        self._step = pauses.labels("step")
        self._majors = Counter(
            "rainbowd_pypy_gc_major_collections",
            "Major collections PyPy's garbage collector finished.",
            registry=registry,
        )
        nurseryGauge = Gauge(
            "rainbowd_pypy_gc_nursery_bytes",
            "The size of PyPy's nursery (PYPY_GC_NURSERY).",
            registry=registry,
        )
        nurseryGauge.set(nursery)
        hooks.on_gc_minor = self._onMinor
        hooks.on_gc_collect_step = self._onStep
        hooks.on_gc_collect = self._onCollect

    def _onMinor(self, stats: Any) -> None:
        _observeAll(self._minor, stats)

    def _onStep(self, stats: Any) -> None:
        _observeAll(self._step, stats)

    def _onCollect(self, stats: Any) -> None:
        self._majors.inc(stats.count)


def _observeAll(histogram: Any, stats: Any) -> None:
    count = stats.count
    if count == 1:
        histogram.observe(stats.duration)
        return
    if count < 1:
        return
    longest, shortest = stats.duration_max, stats.duration_min
    histogram.observe(longest)
    histogram.observe(shortest)
    if count > 2:
        mean = max(0.0, stats.duration - longest - shortest) / (count - 2)
        for _ in range(count - 2):
            histogram.observe(mean)


@implementer(IRequestLog)
class Metrics:
    """
    The metrics of one rainbowd, in a registry of its own.

    It is the proxy site's C{requestLog} (see L{rainbowd.web.proxy.ProxySite}),
    the proxy's C{monitor} (see L{rainbowd.web.proxy.ReverseProxy}) and an
    observer of C{deployer}.

    @ivar registry: the L{CollectorRegistry} to expose.
    """

    def __init__(self, deployer: Any, processMetrics: bool = True) -> None:
        """
        @param deployer: has C{observe}, C{backends} and C{active}, like
            L{rainbowd.app.deployer.Deployer}.
        @param processMetrics: also expose rainbowd's own CPU, memory and
            file descriptors (C{process_*}).
        """
        self.registry = registry = CollectorRegistry()
        self._deployer = deployer
        self._requests = Counter(
            "rainbowd_http_requests",
            "Proxied requests, by status class (2xx..5xx, or unfinished when "
            "the connection closed before the response was complete) and "
            "by the generation that served them.",
            ["status", "generation"],
            registry=registry,
        )
        self._duration = Histogram(
            "rainbowd_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, for "
            "complete responses.",
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._deploys = Counter(
            "rainbowd_deploys",
            "Deploys, by outcome (deployed, failed, refused) and cause "
            "(startup, redeploy, restart, rollback, automaticRollback).",
            ["outcome", "cause"],
            registry=registry,
        )
        self._deployDuration = Histogram(
            "rainbowd_deploy_duration_seconds",
            "Time from the start of a deploy to its outcome, by outcome.",
            ["outcome"],
            buckets=DEPLOY_BUCKETS,
            registry=registry,
        )
        self._rollbacks = Counter(
            "rainbowd_rollbacks",
            "Rollbacks to the standby rainbowd made by itself, by cause "
            "(exited, unhealthy, errorRate), and those asked for that "
            "succeeded (manual).",
            ["cause"],
            registry=registry,
        )
        for cause in ("manual", "exited", "unhealthy", "errorRate"):
            self._rollbacks.labels(cause)
        self._crashes = Counter(
            "rainbowd_crashes",
            "Times the active generation exited by itself (a replacement "
            "is then started).",
            registry=registry,
        )
        self._unresponsive = Counter(
            "rainbowd_unresponsive",
            "Times the active generation failed livenessFailures liveness "
            "checks in a row (a replacement is then started).",
            registry=registry,
        )
        self._backendTimeouts = Counter(
            "rainbowd_backend_timeouts",
            "Responses the app was too slow to send, by phase: head (no "
            "whole head within backendTimeout: the client got a 504) or "
            "body (no byte of the body for backendBodyTimeout: the client "
            "connection was cut).",
            ["phase"],
            registry=registry,
        )
        for phase in ("head", "body"):
            self._backendTimeouts.labels(phase)
        self._misframed = Counter(
            "rainbowd_backend_misframed",
            "Generations found sending bytes outside the framing of their "
            "responses, whose connections rainbowd then stopped reusing; "
            "see rainbowd's log.",
            registry=registry,
        )
        registry.register(_Now(deployer))
        if processMetrics:
            ProcessCollector(registry=registry)
        self._children: Dict[Tuple[Any, Optional[int]], Any] = {}
        self._deploying: Dict[int, Tuple[float, str]] = {}
        self._newest = 0
        self.stopObserving = deployer.observe(self._observe)

    def watchConnections(self, cap: Any, listening: Mapping[str, Any]) -> None:
        """
        Expose the connection counts of the public port's C{cap} and the
        failed accepts of the ports in C{listening}, by config key; each has
        C{acceptErrors}, an L{rainbowd.web.connlimit.AcceptErrors} or L{None}.
        """
        self.registry.register(_Connections(cap, listening))

    def watchCollector(self, hooks: Any, nursery: int) -> None:
        """
        Expose the pauses of PyPy's garbage collector, by setting the hooks
        of C{hooks} (PyPy's C{gc.hooks}), and the size of its C{nursery}.
        """
        _CollectorPauses(self.registry, hooks, nursery)

    # The proxy site's requestLog

    def finished(self, request: Request, seconds: float) -> None:
        """
        Count a request whose response is complete.
        """
        key = (request.code, getattr(request, "backendGeneration", None))
        child = self._children.get(key)
        if child is None:
            child = self._child(key, f"{request.code // 100}xx")
        child.inc()
        self._duration.observe(seconds)

    def unfinished(self, request: Request, seconds: float) -> None:
        """
        Count a request whose connection closed before its response was
        complete.
        """
        key = (UNFINISHED, getattr(request, "backendGeneration", None))
        child = self._children.get(key)
        if child is None:
            child = self._child(key, UNFINISHED)
        child.inc()

    def _child(self, key: Tuple[object, Optional[int]], status: str) -> Any:
        generation = key[1]
        label = NO_GENERATION if generation is None else str(generation)
        child = self._children[key] = self._requests.labels(status, label)
        return child

    # The proxy's monitor

    def backendTimedOut(self, phase: str) -> None:
        """
        Count a response the app was too slow to send, in C{phase}
        (C{"head"} or C{"body"}).
        """
        self._backendTimeouts.labels(phase).inc()

    def backendMisframed(self) -> None:
        """
        Count a generation found sending bytes outside its responses.
        """
        self._misframed.inc()

    # The deployer's events

    def _observe(self, event: Event) -> None:
        kind = event.kind
        if kind == EventKind.deploying:
            self._deploying[event.details["deploy"]] = (
                event.time,
                event.details["cause"],
            )
        elif kind in OUTCOMES:
            started, cause = self._deploying.pop(
                event.details["deploy"], (event.time, "unknown")
            )
            self._deploys.labels(kind, cause).inc()
            self._deployDuration.labels(kind).observe(event.time - started)
            if cause == "rollback" and kind == EventKind.deployed:
                self._rollbacks.labels("manual").inc()
        elif kind == EventKind.rolledBack:
            self._rollbacks.labels(event.details["cause"]).inc()
        elif kind == EventKind.crashed:
            self._crashes.inc()
        elif kind == EventKind.unresponsive:
            self._unresponsive.inc()
        elif kind == EventKind.launching and event.generation is not None:
            self._newest = max(self._newest, event.generation)
        elif kind == EventKind.stopped:
            self._forgetOldGenerations()

    def _forgetOldGenerations(self) -> None:
        """
        Drop the request series of the generations whose processes are gone
        and that are not among the newest L{STOPPED_GENERATIONS_KEPT}.
        """
        alive = {backend.generation for backend in self._deployer.backends}
        oldest = self._newest - STOPPED_GENERATIONS_KEPT
        for key in list(self._children):
            generation = key[1]
            if generation is None or generation in alive or generation > oldest:
                continue
            del self._children[key]
            status = UNFINISHED if key[0] == UNFINISHED else f"{key[0] // 100}xx"
            try:
                self._requests.remove(status, str(generation))
            except KeyError:
                pass  # another code of the same class removed it already


class MetricsResource(Endpoint):
    """
    C{GET /metrics}: the metrics of C{registry} in Prometheus' text format.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("/metrics", {b"GET": self._get, b"HEAD": self._get})
        self._registry = registry

    def _get(self, request: IRequest) -> bytes:
        body = generate_latest(self._registry)
        request.setHeader(b"content-type", CONTENT_TYPE)
        if request.method == b"HEAD":
            request.setHeader(b"content-length", b"%d" % (len(body),))
            return b""
        return body
