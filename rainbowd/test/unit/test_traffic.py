# -*- test-case-name: rainbowd.test.unit.test_traffic -*-
"""
Tests for L{rainbowd.web.traffic}, and for the proxy while traffic is paused or
in maintenance, in memory (L{rainbowd.test.inmemory}).
"""

import os
from typing import List

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.config import ConfigError
from rainbowd.test.inmemory import (
    UPGRADE_REQUEST,
    BackendApp,
    EchoUpgrade,
    FakeBackend,
    World,
    backendSite,
    later,
    rawRequest,
)
from rainbowd.web.traffic import (
    DEFAULT_MESSAGE,
    RETRY_AFTER,
    Mode,
    Traffic,
    TrafficStopped,
    maintenancePage,
)

OPERATOR = "127.0.0.1:40404"


def pausedWorld(queueTimeout: float = 30.0):
    """
    A proxy in memory with a started L{Traffic} and an active backend.
    """
    reactor = MemoryReactorClock()
    traffic = Traffic(reactor, queueTimeout)
    traffic.startService()
    world = World(queueTimeout=queueTimeout, reactor=reactor, traffic=traffic)
    backend = FakeBackend(generation=1, port=20001)
    world.deployer.activate(backend)
    return world, traffic, backend


def holdTimers(world):
    """
    The pending timeouts of held requests (L{Deferred.addTimeout}'s).
    """
    return [
        call
        for call in world.reactor.getDelayedCalls()
        if getattr(call.func, "__name__", "") == "timeItOut"
    ]


class TransitionTests(SynchronousTestCase):
    """
    Every input is allowed in every mode; asking for the mode traffic is in
    changes nothing, and says so.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.traffic = Traffic(self.clock, 30.0)
        self.traffic.startService()

    def test_serving(self) -> None:
        """
        Traffic starts serving, with no one having asked for it.
        """
        self.assertEqual(
            self.traffic.describe(),
            {"mode": "serving", "since": None, "by": None, "held": 0, "message": None},
        )

    def test_pause(self) -> None:
        """
        Pausing says who asked and since when.
        """
        self.clock.advance(100)
        self.assertEqual(
            self.traffic.pause(OPERATOR),
            {
                "mode": "paused",
                "since": 100.0,
                "by": OPERATOR,
                "held": 0,
                "message": None,
                "changed": True,
            },
        )
        self.assertIs(self.traffic.mode, Mode.PAUSED)

    def test_pauseTwice(self) -> None:
        """
        Pausing while paused changes nothing: it keeps the first pause's
        time and asker, and the requests held.
        """
        self.traffic.pause(OPERATOR)
        held = self.traffic.hold()
        self.clock.advance(5)
        answer = self.traffic.pause("127.0.0.1:1")
        self.assertEqual(
            (answer["changed"], answer["since"], answer["by"], answer["held"]),
            (False, 0.0, OPERATOR, 1),
        )
        self.assertNoResult(held)

    def test_resumeWhenServing(self) -> None:
        """
        Resuming while serving changes nothing, and says so.
        """
        answer = self.traffic.resume(OPERATOR)
        self.assertEqual((answer["mode"], answer["changed"]), ("serving", False))

    def test_resumeReleases(self) -> None:
        """
        Resuming fires every hold, oldest first.
        """
        self.traffic.pause(OPERATOR)
        order: List[int] = []
        for n in range(3):
            self.traffic.hold().addCallback(lambda _, n: order.append(n), n)
        self.traffic.resume(OPERATOR)
        self.assertEqual((order, self.traffic.held), ([0, 1, 2], 0))

    def test_maintenanceReleases(self) -> None:
        """
        Maintenance releases the held requests too (to get its page).
        """
        self.traffic.pause(OPERATOR)
        held = self.traffic.hold()
        self.traffic.maintenance(OPERATOR, "back soon")
        self.assertIsNone(self.successResultOf(held))
        self.assertEqual(self.traffic.describe()["message"], "back soon")

    def test_maintenanceMessageChanged(self) -> None:
        """
        Maintenance asked for again with another message changes the
        message, not the time it began; with the same message, nothing.
        """
        self.traffic.maintenance(OPERATOR, "one")
        self.clock.advance(3)
        again = self.traffic.maintenance(OPERATOR, "one")
        other = self.traffic.maintenance(OPERATOR, "two")
        self.assertEqual(
            (again["changed"], other["changed"], other["since"], other["message"]),
            (False, True, 0.0, "two"),
        )
        self.assertIn(b"two", self.traffic.page)

    def test_messageChangedSamePage(self) -> None:
        """
        A new message is a change even when the page stays the same (a
        C{maintenancePage} without C{{{message}}}), and C{/status} shows it.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"<h1>down</h1>")
        traffic = Traffic(self.clock, 30.0, lambda: path)
        traffic.maintenance(OPERATOR, "one")
        answer = traffic.maintenance(OPERATOR, "two")
        self.assertEqual((answer["changed"], answer["message"]), (True, "two"))

    def test_logged(self) -> None:
        """
        Each change is logged with who asked for it and for how long the
        previous mode lasted.
        """
        with capturedLogs() as events:
            self.traffic.pause(OPERATOR)
            self.clock.advance(12)
            self.traffic.resume("the unix socket /run/rainbowd.sock")
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "127.0.0.1:40404 asked to pause: traffic is now paused; new "
                "requests wait (up to queueTimeout, 30 s) until POST /resume",
                "the unix socket /run/rainbowd.sock asked to resume: traffic is "
                "now serving after 12.0 s paused; new requests go to the app",
            ],
        )

    def test_holdAfterStop(self) -> None:
        """
        Once rainbowd is stopping, a hold fails at once, and those held
        fail too.
        """
        self.traffic.pause(OPERATOR)
        held = self.traffic.hold()
        self.traffic.stopService()
        self.failureResultOf(held, TrafficStopped)
        self.failureResultOf(self.traffic.hold(), TrafficStopped)

    def test_unreadablePageKeepsMode(self) -> None:
        """
        If the maintenancePage file cannot be read at maintenance start,
        the error says so and the mode does not change.
        """
        traffic = Traffic(self.clock, 30.0, lambda: self.mktemp())
        self.assertRaises(ConfigError, traffic.maintenance, OPERATOR, None)
        self.assertIs(traffic.mode, Mode.SERVING)


class PageTests(SynchronousTestCase):
    """
    The maintenance page: the default one, or the C{maintenancePage} file,
    with the message escaped.
    """

    def test_default(self) -> None:
        """
        The default page is HTML with the default message.
        """
        page = maintenancePage(None, None)
        self.assertTrue(page.startswith(b"<!DOCTYPE html>"))
        self.assertIn(DEFAULT_MESSAGE.encode(), page)

    def test_escaped(self) -> None:
        """
        HTML in the message is shown, not run.
        """
        page = maintenancePage('<script>alert("x")</script> & co', None)
        self.assertNotIn(b"<script>", page)
        self.assertIn(
            b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co", page
        )

    def test_template(self) -> None:
        """
        A C{maintenancePage} file is served as it is, with each
        C{{{message}}} replaced by the escaped message.
        """
        self.assertEqual(
            maintenancePage("<b>", b"<p>{{message}}</p><i>{{message}}</i>"),
            b"<p>&lt;b&gt;</p><i>&lt;b&gt;</i>",
        )

    def test_pageReadAtEachStart(self) -> None:
        """
        The file is read at each maintenance start, so that an edit shows
        at the next POST /maintenance without a redeploy.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"<h1>first</h1>")
        traffic = Traffic(MemoryReactorClock(), 30.0, lambda: path)
        traffic.maintenance(OPERATOR)
        self.assertEqual(traffic.page, b"<h1>first</h1>")
        with open(path, "wb") as f:
            f.write(b"<h1>second</h1>")
        self.assertTrue(traffic.maintenance(OPERATOR)["changed"])
        self.assertEqual(traffic.page, b"<h1>second</h1>")
        os.remove(path)


class PausedProxyTests(SynchronousTestCase):
    """
    While traffic is paused, requests not yet sent wait in rainbowd; those
    in flight finish.
    """

    def setUp(self) -> None:
        self.world, self.traffic, self.backend = pausedWorld()

    def test_waitsUntilResume(self) -> None:
        """
        A request arriving while paused goes nowhere until resume, then to
        the routable backend.
        """
        self.traffic.pause(OPERATOR)
        client = self.world.request(rawRequest())
        self.world.reactor.advance(29)
        self.assertEqual((client.data, self.world.attempts()), (b"", []))
        self.assertEqual((self.traffic.held, self.backend.started), (1, 0))
        self.traffic.resume(OPERATOR)
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)
        self.assertEqual((self.traffic.held, holdTimers(self.world)), (0, []))

    def test_inFlightFinishes(self) -> None:
        """
        A request sent before the pause gets its answer.
        """
        app = BackendApp(later)
        client = self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, app))
        self.traffic.pause(OPERATOR)
        app.live[0].write(b"done")
        app.live[0].finish()
        self.world.flush()
        self.assertEqual(client.response().body, b"done")

    def test_503AfterQueueTimeout(self) -> None:
        """
        A request held for C{queueTimeout} gets 503 saying traffic is
        paused and how to resume, and is no longer held.
        """
        self.traffic.pause(OPERATOR)
        client = self.world.request(rawRequest())
        self.world.reactor.advance(30)
        self.world.flush()
        response = client.response()
        self.assertEqual(response.code, 503)
        self.assertEqual(
            response.body,
            b"rainbowd: traffic is paused (POST /pause), so requests wait in "
            b"rainbowd, and this one waited queueTimeout (30 s); POST /resume "
            b"to the control port (rainbowctl resume) lets requests through; "
            b"see rainbowd's log\n",
        )
        self.assertEqual(self.traffic.held, 0)

    def test_deployWhilePaused(self) -> None:
        """
        A swap while paused sends nothing to either backend; the old one
        holds none of the waiting requests, and the new one gets them on
        resume.
        """
        self.traffic.pause(OPERATOR)
        clients = [self.world.request(rawRequest()) for _ in range(2)]
        new = FakeBackend(generation=2, port=20002)
        self.world.deployer.activate(new)
        self.backend.stop()
        self.assertEqual(self.world.attempts(), [])
        self.assertEqual((self.backend.started, new.started), (0, 0))
        self.traffic.resume(OPERATOR)
        self.assertEqual(self.world.attempts(), [20002, 20002])
        for client in clients:
            self.world.accept(backendSite(self.world, BackendApp()))
            self.assertEqual(client.response().code, 200)

    def test_waitingForBackendStaysHeld(self) -> None:
        """
        A request already waiting for a backend when traffic pauses is not
        sent when one becomes routable, but on resume.
        """
        self.world.deployer.activate(None)
        self.world.deployer.routable = None
        client = self.world.request(rawRequest())
        self.traffic.pause(OPERATOR)
        self.world.deployer.activate(self.backend)
        self.assertEqual((self.world.attempts(), self.traffic.held), ([], 1))
        self.traffic.resume(OPERATOR)
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)

    def test_waitingForSlotHeld(self) -> None:
        """
        Requests waiting for one of C{backendConnections} when traffic
        pauses are not sent as slots free, but held until resume, then
        sent in the order they came.
        """
        reactor = self.world.reactor
        world = World(
            reactor=reactor,
            traffic=self.traffic,
            backendConnections=1,
            backendTimeout=3600.0,
        )
        world.deployer.activate(self.backend)
        app = BackendApp(later)
        busy = world.request(rawRequest(target=b"/busy"))
        world.accept(backendSite(world, app))
        waiting = [world.request(rawRequest(target=b"/wait%d" % (n,))) for n in range(2)]
        self.traffic.pause(OPERATOR)
        app.live[0].finish()
        world.flush()
        self.assertEqual(busy.response().code, 200)
        self.assertEqual([r.uri for r in app.received], [b"/busy"])
        [pool] = world.proxy._pools.values()
        self.assertEqual((self.traffic.held, pool.busy, self.backend.inflight), (2, 0, 0))
        self.traffic.resume(OPERATOR)
        world.flush()
        app.live[1].finish()
        world.flush()
        app.live[2].finish()
        world.flush()
        self.assertEqual(
            [r.uri for r in app.received], [b"/busy", b"/wait0", b"/wait1"]
        )
        self.assertEqual([c.response().code for c in waiting], [200, 200])
        self.assertEqual((pool.busy, self.backend.inflight), (0, 0))

    def test_resumeWithoutBackendWaits(self) -> None:
        """
        A held request released while no backend is routable waits for one,
        up to the rest of its C{queueTimeout}.
        """
        self.traffic.pause(OPERATOR)
        client = self.world.request(rawRequest())
        self.world.deployer.routable = None
        self.world.reactor.advance(10)
        self.traffic.resume(OPERATOR)
        self.assertEqual(len(self.world.deployer.waiters), 1)
        self.world.reactor.advance(20)
        self.world.flush()
        self.assertEqual(client.response().code, 503)

    def test_clientGoneWhileHeld(self) -> None:
        """
        A client hanging up while held is no longer held, is sent nowhere
        on resume, and leaves no error.
        """
        self.traffic.pause(OPERATOR)
        client = self.world.request(rawRequest())
        self.assertEqual(len(holdTimers(self.world)), 1)
        client.hangUp()
        self.world.flush()
        self.assertEqual((self.traffic.held, holdTimers(self.world)), (0, []))
        self.traffic.resume(OPERATOR)
        self.world.reactor.advance(60)
        self.assertEqual((self.world.attempts(), self.backend.started), ([], 0))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_shutdownWhilePaused(self) -> None:
        """
        Held requests get a 503 naming the shutdown when rainbowd stops, and
        so do requests arriving after that.
        """
        self.traffic.pause(OPERATOR)
        client = self.world.request(rawRequest())
        self.traffic.stopService()
        self.world.flush()
        late = self.world.request(rawRequest())
        for each in [client, late]:
            response = each.response()
            self.assertEqual(response.code, 503)
            self.assertIn(b"rainbowd is shutting down", response.body)
        self.assertEqual(self.world.attempts(), [])

    def test_upgradeHeld(self) -> None:
        """
        An upgrade request is held like any other, and tunnels once resumed.
        """
        self.traffic.pause(OPERATOR)
        client = self.world.request(UPGRADE_REQUEST)
        self.assertEqual(self.world.attempts(), [])
        self.traffic.resume(OPERATOR)
        self.world.accept(Factory.forProtocol(EchoUpgrade))
        self.assertTrue(client.data.startswith(b"HTTP/1.1 101 "), client.data)
        self.assertEqual(len(self.backend.tunnels), 1)

    def test_refusedRetryHeld(self) -> None:
        """
        A request whose connection was refused before the pause, and is
        tried again after it, is held rather than sent.
        """
        client = self.world.request(rawRequest())
        self.world.refuse()
        self.traffic.pause(OPERATOR)
        self.world.reactor.advance(1)
        self.assertEqual((self.world.attempts(), self.traffic.held), ([], 1))
        self.traffic.resume(OPERATOR)
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)


class MaintenanceProxyTests(SynchronousTestCase):
    """
    In maintenance every request not yet sent gets 503 and the page.
    """

    def setUp(self) -> None:
        self.world, self.traffic, self.backend = pausedWorld()

    def assertMaintenance(self, response, message: bytes) -> None:
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header(b"Retry-After"), [b"%d" % (RETRY_AFTER,)])
        self.assertEqual(response.header(b"Cache-Control"), [b"no-store"])
        self.assertEqual(
            response.header(b"Content-Type"), [b"text/html; charset=utf-8"]
        )
        self.assertIn(message, response.body)

    def test_answered(self) -> None:
        """
        A request in maintenance gets the page with the message, and goes
        to no backend.
        """
        self.traffic.maintenance(OPERATOR, "Back at <14:00> UTC")
        client = self.world.request(rawRequest())
        self.assertMaintenance(client.response(), b"Back at &lt;14:00&gt; UTC")
        self.assertEqual((self.world.attempts(), self.backend.started), ([], 0))

    def test_heldGetPage(self) -> None:
        """
        Requests held by a pause get the maintenance page as soon as
        maintenance starts.
        """
        self.traffic.pause(OPERATOR)
        clients = [self.world.request(rawRequest()) for _ in range(2)]
        self.traffic.maintenance(OPERATOR, None)
        self.world.flush()
        for client in clients:
            self.assertMaintenance(client.response(), DEFAULT_MESSAGE.encode())
        self.assertEqual(self.traffic.held, 0)

    def test_head(self) -> None:
        """
        A HEAD request gets the headers of the page, with its length, and
        no body.
        """
        self.traffic.maintenance(OPERATOR, None)
        client = self.world.request(rawRequest(b"HEAD"))
        self.world.flush()
        head, _, body = client.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertIn(b"\r\nContent-Length: %d" % (len(self.traffic.page),), head)
        self.assertEqual(body, b"")

    def test_upgrade(self) -> None:
        """
        An upgrade request in maintenance gets the page, not a tunnel.
        """
        self.traffic.maintenance(OPERATOR, None)
        client = self.world.request(UPGRADE_REQUEST)
        self.assertMaintenance(client.response(), DEFAULT_MESSAGE.encode())
        self.assertEqual(self.world.attempts(), [])

    def test_notCountedAgainstGeneration(self) -> None:
        """
        A request tried on a backend before maintenance began (refused,
        then tried again) gets the page counted as rainbowd's answer, under
        no generation, in metrics and the access log.
        """
        logged = []

        class RequestLog:
            def finished(self, request, seconds):
                logged.append((request.code, request.backendGeneration))

        self.world.site.requestLog = RequestLog()
        client = self.world.request(rawRequest())
        self.world.refuse()
        self.traffic.maintenance(OPERATOR, None)
        self.world.reactor.advance(1)
        self.world.flush()
        self.assertMaintenance(client.response(), DEFAULT_MESSAGE.encode())
        self.assertEqual(logged, [(503, None)])

    def test_resume(self) -> None:
        """
        After resume, requests go to the app again.
        """
        self.traffic.maintenance(OPERATOR, None)
        self.traffic.resume(OPERATOR)
        client = self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().code, 200)

    def test_keptAliveConnection(self) -> None:
        """
        A kept-alive connection carries on after a maintenance answer.
        """
        self.traffic.maintenance(OPERATOR, None)
        client = self.world.request(rawRequest())
        self.traffic.resume(OPERATOR)
        client.send(rawRequest())
        self.world.flush()
        self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual([r.code for r in client.responses()], [503, 200])
