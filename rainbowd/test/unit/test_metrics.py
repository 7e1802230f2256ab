# -*- test-case-name: rainbowd.test.unit.test_metrics -*-
"""
Tests for L{rainbowd.control.metrics}.
"""

from typing import Callable, Dict, List, Optional, Tuple, cast

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from rainbowd.control.metrics import STOPPED_GENERATIONS_KEPT, Metrics, MetricsResource
from rainbowd.control.resource import ControlResource
from rainbowd.test.inmemory import (
    BackendApp,
    FakeBackend,
    FakeDeployer,
    Recorder,
    World,
    backendSite,
    cannedBackend,
    later,
    ok,
    rawRequest,
)
from rainbowd.test.stubtreq import stubTreq
from rainbowd.test.unit.test_control import FakeDeployer as FakeControlDeployer
from rainbowd.test.unit.test_deployer import Harness
from rainbowd.web.backendclient import BODY_TIMEOUT, TIMEOUT
from rainbowd.web.connlimit import AcceptErrors, ConnectionCap

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Samples:
    """
    The samples of C{metrics}' registry, parsed back from the text format:
    C{(name, sorted labels) -> value}.
    """
    text = generate_latest(metrics.registry).decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests(samples: Samples) -> Dict[Tuple[str, str], float]:
    """
    The proxied request counters: C{(status, generation) -> count}.
    """
    return {
        (dict(labels)["status"], dict(labels)["generation"]): value
        for (name, labels), value in samples.items()
        if name == "rainbowd_http_requests_total"
    }


class ObservableDeployer(FakeDeployer):
    """
    The proxy's fake deployer, with what L{Metrics} reads besides: its
    C{backends} and C{observe}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backends: List[FakeBackend] = []
        self.observers: list = []

    def observe(self, observer):
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)


class RequestMetricsTests(SynchronousTestCase):
    """
    Requests through the proxy move the request metrics.
    """

    def setUp(self) -> None:
        self.world = World(queueTimeout=5.0)
        self.deployer = self.world.deployer = ObservableDeployer()
        self.world.proxy._deployer = self.deployer
        self.metrics = Metrics(self.deployer, processMetrics=False)
        self.world.site.requestLog = self.metrics
        self.world.proxy._monitor = self.metrics
        self.backend = FakeBackend(generation=3, port=20001)

    def test_parses(self) -> None:
        """
        The exposition parses with Prometheus' own parser and has every
        rainbowd metric, all named rainbowd_ (besides the client library's
        C{_created} series).
        """
        names = {
            family.name
            for family in text_string_to_metric_families(
                generate_latest(self.metrics.registry).decode("utf-8")
            )
            if not family.name.endswith("_created")
        }
        self.assertEqual(
            names,
            {
                "rainbowd_http_requests",
                "rainbowd_http_request_duration_seconds",
                "rainbowd_deploys",
                "rainbowd_deploy_duration_seconds",
                "rainbowd_rollbacks",
                "rainbowd_crashes",
                "rainbowd_unresponsive",
                "rainbowd_backend_timeouts",
                "rainbowd_backend_misframed",
                "rainbowd_backends",
                "rainbowd_inflight_requests",
                "rainbowd_active_generation",
            },
        )

    def test_proxiedRequestCounted(self) -> None:
        """
        A proxied request is counted by status class and by the generation
        that served it, and its duration lands in the histogram.
        """
        self.deployer.activate(self.backend)
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, app))
        self.world.reactor.advance(0.2)
        app.live[0].write(b"done")
        app.live[0].finish()
        self.world.flush()
        self.assertEqual(client.response().code, 200)
        samples = scrape(self.metrics)
        self.assertEqual(requests(samples), {("2xx", "3"): 1})
        duration = "rainbowd_http_request_duration_seconds"
        self.assertEqual(samples[(duration + "_count", ())], 1)
        self.assertAlmostEqual(samples[(duration + "_sum", ())], 0.2)
        self.assertEqual(samples[(duration + "_bucket", (("le", "0.1"),))], 0)
        self.assertEqual(samples[(duration + "_bucket", (("le", "0.25"),))], 1)

    def test_noBackendCounted(self) -> None:
        """
        A 503 because no backend became ready counts under generation
        "none".
        """
        client = self.world.request(rawRequest())
        self.world.reactor.advance(5)
        self.world.flush()
        self.assertEqual(client.response().code, 503)
        self.assertEqual(requests(scrape(self.metrics)), {("5xx", "none"): 1})

    def test_hangUpCounted(self) -> None:
        """
        A request whose client hangs up before its response is complete
        counts as unfinished, under the generation it was sent to.
        """
        self.deployer.activate(self.backend)
        client = self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, BackendApp(later)))
        client.hangUp()
        self.world.flush()
        self.assertEqual(requests(scrape(self.metrics)), {("unfinished", "3"): 1})

    def test_inflightAndBackends(self) -> None:
        """
        In-flight requests and backends by state are read from the deployer
        when scraped.
        """
        harness = Harness(self)
        metrics = Metrics(harness.deployer, processMetrics=False)
        backend = harness.start()
        backend.requestStarted()
        harness.deployer.redeploy()
        samples = scrape(metrics)
        self.assertEqual(
            samples[("rainbowd_inflight_requests", (("generation", "1"),))], 1
        )
        self.assertEqual(
            samples[("rainbowd_inflight_requests", (("generation", "2"),))], 0
        )
        states = {
            dict(labels)["state"]: value
            for (name, labels), value in samples.items()
            if name == "rainbowd_backends"
        }
        self.assertEqual(
            states,
            {
                "starting": 1,
                "ready": 0,
                "active": 1,
                "draining": 0,
                "standby": 0,
                "stopping": 0,
            },
        )
        self.assertEqual(samples[("rainbowd_active_generation", ())], 1)

    def test_backendTimeoutCounted(self) -> None:
        """
        A 504 for an app too slow to answer is counted as a 5xx of its
        generation and as a head timeout; a body that stalls, as a body
        timeout.
        """
        self.deployer.activate(self.backend)
        self.world.request(rawRequest())
        self.world.accept(Factory.forProtocol(Recorder))
        self.world.reactor.advance(TIMEOUT)
        self.world.flush()
        samples = scrape(self.metrics)
        self.assertEqual(requests(samples), {("5xx", "3"): 1})
        timeouts = "rainbowd_backend_timeouts_total"
        self.assertEqual(samples[(timeouts, (("phase", "head"),))], 1)
        self.assertEqual(samples[(timeouts, (("phase", "body"),))], 0)
        self.world.request(rawRequest())
        self.world.accept(
            cannedBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf", False)
        )
        for _ in range(int(BODY_TIMEOUT) + 2):
            self.world.reactor.advance(1.0)
        self.world.flush()
        samples = scrape(self.metrics)
        self.assertEqual(samples[(timeouts, (("phase", "body"),))], 1)
        self.assertEqual(requests(samples), {("5xx", "3"): 1, ("unfinished", "3"): 1})

    def test_misframingCounted(self) -> None:
        """
        A generation found sending bytes outside its responses is counted
        once.
        """
        self.deployer.activate(self.backend)
        for _ in range(2):
            self.world.request(rawRequest())
            self.world.accept(cannedBackend(ok(b"ok") + b"stray", False))
        samples = scrape(self.metrics)
        self.assertEqual(samples[("rainbowd_backend_misframed_total", ())], 1)

    def test_seriesReused(self) -> None:
        """
        A second request of the same status class and generation counts in
        the series the first one made, without a new label lookup.
        """
        self.deployer.activate(self.backend)
        self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, BackendApp()))
        children = dict(self.metrics._children)
        self.world.request(rawRequest())
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual(self.metrics._children, children)
        self.assertEqual(requests(scrape(self.metrics)), {("2xx", "3"): 2})


class DeployMetricsTests(SynchronousTestCase):
    """
    Deploys, their outcomes and crashes move the deploy metrics.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.metrics = Metrics(self.h.deployer, processMetrics=False)

    def deploys(self) -> Dict[Tuple[str, str], float]:
        return {
            (dict(labels)["outcome"], dict(labels)["cause"]): value
            for (name, labels), value in scrape(self.metrics).items()
            if name == "rainbowd_deploys_total"
        }

    def test_outcomes(self) -> None:
        """
        Startup, a redeploy that deploys, one that fails and one refused are
        each counted by outcome and cause.
        """
        self.h.newConfig(maxBackends=2)
        self.h.start()
        self.h.deployer.redeploy()
        self.h.healthy(2)
        self.h.reactor.advance(0)
        failed = self.h.deployer.redeploy()
        self.h.process(3).exit(3)
        self.failureResultOf(failed)
        self.h.reactor.advance(0)
        self.h.backend(2).requestStarted()
        self.h.deployer.redeploy()
        self.h.healthy(4)
        self.failureResultOf(self.h.deployer.redeploy())
        self.assertEqual(
            self.deploys(),
            {
                ("deployed", "startup"): 1,
                ("deployed", "redeploy"): 2,
                ("failed", "redeploy"): 1,
                ("refused", "redeploy"): 1,
            },
        )

    def test_duration(self) -> None:
        """
        A deploy's duration runs from its start to its outcome.
        """
        self.h.start()
        self.h.deployer.redeploy()
        self.h.reactor.advance(1.5)
        self.h.healthy(2)
        samples = scrape(self.metrics)
        name = "rainbowd_deploy_duration_seconds"
        self.assertEqual(samples[(name + "_count", (("outcome", "deployed"),))], 2)
        self.assertEqual(samples[(name + "_sum", (("outcome", "deployed"),))], 1.5)
        self.assertEqual(
            samples[(name + "_bucket", (("le", "1.0"), ("outcome", "deployed")))], 1
        )

    def test_crashes(self) -> None:
        """
        The active generation exiting by itself counts as a crash, and its
        replacement as a deploy caused by a restart.
        """
        self.h.start()
        self.h.process(1).exit(1)
        self.h.reactor.advance(1.0)
        self.h.healthy(2)
        samples = scrape(self.metrics)
        self.assertEqual(samples[("rainbowd_crashes_total", ())], 1)
        self.assertEqual(self.deploys()[("deployed", "restart")], 1)


    def test_unresponsive(self) -> None:
        """
        The active generation failing its liveness checks counts as
        unresponsive, once per run of failures, and its replacement as a
        deploy caused by a restart.
        """
        self.h.start()
        self.assertEqual(scrape(self.metrics)[("rainbowd_unresponsive_total", ())], 0)
        self.h.failLiveness(1, 4)
        self.h.healthy(2)
        samples = scrape(self.metrics)
        self.assertEqual(samples[("rainbowd_unresponsive_total", ())], 1)
        self.assertEqual(samples[("rainbowd_crashes_total", ())], 0)
        self.assertEqual(self.deploys()[("deployed", "restart")], 1)


class RollbackMetricsTests(SynchronousTestCase):
    """
    Rollbacks, by hand and by rainbowd itself, by cause.
    """

    def setUp(self) -> None:
        self.h = Harness(self, rollbackWindow=60.0)
        self.metrics = Metrics(self.h.deployer, processMetrics=False)
        self.h.start()
        self.h.deployer.redeploy()
        self.h.healthy(2)

    def rollbacks(self) -> Dict[str, float]:
        return {
            dict(labels)["cause"]: value
            for (name, labels), value in scrape(self.metrics).items()
            if name == "rainbowd_rollbacks_total"
        }

    def test_none(self) -> None:
        """
        Every cause is there, at 0, before any rollback.
        """
        self.assertEqual(
            self.rollbacks(),
            {"manual": 0, "exited": 0, "unhealthy": 0, "errorRate": 0},
        )

    def test_automatic(self) -> None:
        """
        An automatic rollback counts with its cause, and as a deploy caused
        by an automatic rollback.
        """
        self.h.process(2).exit(1)
        self.assertEqual(self.rollbacks()["exited"], 1)
        self.assertEqual(
            scrape(self.metrics)[
                (
                    "rainbowd_deploys_total",
                    (("cause", "automaticRollback"), ("outcome", "deployed")),
                )
            ],
            1,
        )

    def test_manual(self) -> None:
        """
        A rollback asked for counts as manual once it succeeded.
        """
        self.successResultOf(self.h.deployer.rollback())
        self.failureResultOf(self.h.deployer.rollback())
        self.assertEqual(self.rollbacks()["manual"], 1)


class CardinalityTests(SynchronousTestCase):
    """
    The request series of old generations are dropped.
    """

    def test_oldGenerationsDropped(self) -> None:
        """
        Once a generation's processes are gone and it is not among the
        L{STOPPED_GENERATIONS_KEPT} newest, its request series are gone.
        """
        h = Harness(self)
        metrics = Metrics(h.deployer, processMetrics=False)

        class Served:
            """
            What L{Metrics} reads of a finished request.
            """

            code = 200
            backendGeneration: Optional[int] = None

        h.start()
        for generation in range(1, 10):
            served = Served()
            served.backendGeneration = generation
            metrics.finished(cast(Request, served), 0.01)
            h.deployer.redeploy()
            h.healthy(generation + 1)
            h.reactor.advance(0)
        metrics.unfinished(cast(Request, Served()), 0.01)
        self.assertEqual(
            sorted(requests(scrape(metrics))),
            # Generation 10, the active one and the newest, served nothing.
            [("2xx", str(g)) for g in range(11 - STOPPED_GENERATIONS_KEPT, 10)]
            + [("unfinished", "none")],
        )


class Listening:
    """
    A listening port, as L{Metrics.watchConnections} reads it.
    """

    def __init__(self, acceptErrors) -> None:
        self.acceptErrors = acceptErrors


class ConnectionMetricsTests(SynchronousTestCase):
    """
    The public port's connections and the ports' failed accepts.
    """

    def test_connections(self) -> None:
        """
        Open, maximum and refused connections of the cap, and each port's
        failed accepts by error, are exposed; a port not listening yet has
        no series.
        """
        clock = MemoryReactorClock()
        cap = ConnectionCap(Factory.forProtocol(Protocol), 1, clock)
        for _ in range(3):
            cap.buildProtocol(None).makeConnection(StringTransport())
        # Any callable of an event observes; mypy-zope knows only those
        # declared to provide ILogObserver.
        errors = AcceptErrors("tcp:7000", clock, cast(ILogObserver, lambda event: None))
        errors.errors.update(EMFILE=4, ENFILE=1)
        errors.closed = 9
        metrics = Metrics(ObservableDeployer(), processMetrics=False)
        metrics.watchConnections(
            cap, {"port": Listening(errors), "controlPort": Listening(None)}
        )
        samples = scrape(metrics)
        self.assertEqual(samples[("rainbowd_connections", ())], 1)
        self.assertEqual(samples[("rainbowd_max_connections", ())], 1)
        self.assertEqual(samples[("rainbowd_refused_connections_total", ())], 2)
        self.assertEqual(
            {
                labels: value
                for (name, labels), value in samples.items()
                if name.startswith(("rainbowd_accept", "rainbowd_unanswered"))
            },
            {
                (("error", "EMFILE"), ("port", "port")): 4,
                (("error", "ENFILE"), ("port", "port")): 1,
                (("port", "port"),): 9,
            },
        )


class FakeHooks:
    """
    PyPy's C{gc.hooks}: the three hooks, which the collector would call.
    """

    # None until set, as PyPy's are.
    on_gc_minor: Optional[Callable[["FakeStats"], None]] = None
    on_gc_collect_step: Optional[Callable[["FakeStats"], None]] = None
    on_gc_collect: Optional[Callable[["FakeStats"], None]] = None


class FakeStats:
    """
    What PyPy passes a hook: C{count} events of C{duration} seconds in all.
    """

    def __init__(self, count: int, duration: float, shortest: float, longest: float):
        self.count = count
        self.duration = duration
        self.duration_min = shortest
        self.duration_max = longest


class CollectorMetricsTests(SynchronousTestCase):
    """
    The pauses of PyPy's collector, from fake hooks, so that this runs on
    CPython too.
    """

    def setUp(self) -> None:
        self.hooks = FakeHooks()
        self.metrics = Metrics(ObservableDeployer(), processMetrics=False)
        self.metrics.watchCollector(self.hooks, 16 * 1024 * 1024)

    def pauses(self, kind: str) -> Dict[str, float]:
        return {
            dict(labels).get("le", name.rsplit("_", 1)[-1]): value
            for (name, labels), value in scrape(self.metrics).items()
            if name.startswith("rainbowd_pypy_gc_pause_seconds")
            and dict(labels)["kind"] == kind
        }

    def test_minorAndStep(self) -> None:
        """
        Each minor collection and each step of a major one is observed in
        the pause histogram under its kind.
        """
        assert self.hooks.on_gc_minor is not None
        assert self.hooks.on_gc_collect_step is not None
        self.hooks.on_gc_minor(FakeStats(1, 0.0003, 0.0003, 0.0003))
        self.hooks.on_gc_collect_step(FakeStats(1, 0.0035, 0.0035, 0.0035))
        minor, step = self.pauses("minor"), self.pauses("step")
        self.assertEqual((minor["count"], minor["0.0005"], minor["0.00025"]), (1, 1, 0))
        self.assertAlmostEqual(minor["sum"], 0.0003)
        self.assertEqual((step["count"], step["0.005"], step["0.0025"]), (1, 1, 0))

    def test_several(self) -> None:
        """
        Several events handed over as one keep their count and total, with
        the longest in its own bucket.
        """
        assert self.hooks.on_gc_collect_step is not None
        self.hooks.on_gc_collect_step(FakeStats(5, 0.0140, 0.0005, 0.0080))
        step = self.pauses("step")
        self.assertEqual(step["count"], 5)
        self.assertAlmostEqual(step["sum"], 0.0140)
        self.assertEqual((step["0.0005"], step["0.005"], step["0.01"]), (1, 4, 5))

    def test_majorsAndNursery(self) -> None:
        """
        Finished major collections are counted, and the nursery's size is
        exposed.
        """
        assert self.hooks.on_gc_collect is not None
        self.hooks.on_gc_collect(FakeStats(1, 0, 0, 0))
        self.hooks.on_gc_collect(FakeStats(2, 0, 0, 0))
        samples = scrape(self.metrics)
        self.assertEqual(samples[("rainbowd_pypy_gc_major_collections_total", ())], 3)
        self.assertEqual(samples[("rainbowd_pypy_gc_nursery_bytes", ())], 16 * 1024 * 1024)

    def test_notWatched(self) -> None:
        """
        Without C{watchCollector} (on CPython), there are no such series.
        """
        metrics = Metrics(ObservableDeployer(), processMetrics=False)
        self.assertEqual(
            [key for key in scrape(metrics) if key[0].startswith("rainbowd_pypy")], []
        )


class MetricsResourceTests(SynchronousTestCase):
    """
    C{GET /metrics} on the control API.
    """

    def setUp(self) -> None:
        self.metrics = Metrics(ObservableDeployer())
        control = ControlResource(FakeControlDeployer())
        control.putChild(b"metrics", MetricsResource(self.metrics.registry))
        self.treq = stubTreq(control)

    def get(self, method: str, path: str = "/metrics"):
        d = self.treq.request(method, "http://127.0.0.1:7001" + path)
        self.treq.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(self.treq.content(response))

    def test_get(self) -> None:
        """
        GET answers the text format, with its content type, including
        rainbowd's process metrics.
        """
        response, body = self.get("GET")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"),
            ["text/plain; version=0.0.4; charset=utf-8"],
        )
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        self.assertIn("rainbowd_http_requests", names)
        self.assertIn("process_cpu_seconds", names)

    def test_head(self) -> None:
        """
        HEAD answers the length and no body.
        """
        response, body = self.get("HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertNotEqual(response.headers.getRawHeaders("content-length"), ["0"])

    def test_otherMethod(self) -> None:
        """
        Another method gets 405 with Allow, in JSON like the rest of the
        control API.
        """
        response, body = self.get("POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        self.assertIn(b"not allowed on /metrics", body)

    def test_below(self) -> None:
        """
        /metrics/ is /metrics; a path below it is not found.
        """
        self.assertEqual(self.get("GET", "/metrics/")[0].code, 200)
        self.assertEqual(self.get("GET", "/metrics/x")[0].code, 404)
