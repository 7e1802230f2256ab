# -*- test-case-name: rainbowd.test.unit.test_systemd -*-
"""
Tests for L{rainbowd.control.systemd}.
"""

import signal
from typing import Any, Dict, List

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.control.systemd import (
    Notifier,
    Readiness,
    RedeployOnHangup,
)
from rainbowd.test.unit.test_deployer import Harness
from rainbowd.test.unit.test_tap import SignalReactor


class RecordingNotifier(Notifier):
    """
    A L{Notifier} that records its messages instead of sending them.
    """

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: List[List[str]] = []

    def notify(self, *lines: str) -> None:
        self.sent.append(list(lines))


class ReadinessTests(SynchronousTestCase):
    """
    L{Readiness} tells systemd when rainbowd is ready, what it serves, and
    when it stops.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.notifier = RecordingNotifier()
        self.readiness = Readiness(self.h.deployer, self.notifier, "tcp:7000")
        self.readiness.startService()

    def test_readyOnceServing(self) -> None:
        """
        READY=1 is sent once the first generation serves, not before.
        """
        self.h.deployer.startService()
        self.assertEqual(self.notifier.sent, [])
        self.h.healthy(1)
        self.assertEqual(
            self.notifier.sent,
            [["READY=1", "STATUS=serving generation 1 on tcp:7000"]],
        )

    def test_statusAfterRedeploy(self) -> None:
        """
        A later generation updates STATUS without another READY=1.
        """
        self.h.start()
        self.h.deployer.redeploy()
        self.h.healthy(2)
        self.assertEqual(
            self.notifier.sent[-1], ["STATUS=serving generation 2 on tcp:7000"]
        )

    def test_statusAfterAutomaticRollback(self) -> None:
        """
        An automatic rollback is in STATUS: what serves, and why.
        """
        h = Harness(self, rollbackWindow=60.0)
        notifier = RecordingNotifier()
        Readiness(h.deployer, notifier, "tcp:7000").startService()
        h.start()
        h.deployer.redeploy()
        h.healthy(2)
        h.process(2).exit(1)
        self.assertEqual(
            notifier.sent[-1],
            [
                "STATUS=serving generation 1 on tcp:7000, rolled back by itself "
                "from generation 2, which exited with code 1"
            ],
        )

    def test_statusWhileUnresponsive(self) -> None:
        """
        An active generation that stops answering its liveness checks is in
        STATUS, until it answers again.
        """
        self.h.deployer._backoff = lambda attempt: 5.0
        self.h.start()
        self.h.failLiveness(1, 3)
        self.assertEqual(
            self.notifier.sent[-1],
            [
                "STATUS=generation 1 does not answer (GET / did not answer "
                "within 2 s); starting a replacement"
            ],
        )
        self.h.passLiveness(1)
        self.assertEqual(
            self.notifier.sent[-1], ["STATUS=serving generation 1 on tcp:7000"]
        )

    def test_noReloadBeforeReady(self) -> None:
        """
        A SIGHUP redeploy before the first generation serves sends neither
        RELOADING=1 nor a READY=1 that would end the start too early.
        """
        self.h.deployer.startService()
        self.readiness.reloading()
        self.readiness.reloaded()
        self.assertEqual(self.notifier.sent, [])

    def test_hangupBeforeReadyEndsNoReload(self) -> None:
        """
        A SIGHUP redeploy asked for before the first generation serves
        sends no READY=1 of its own once it is over: no RELOADING=1 came
        before it.
        """
        self.h.deployer.startService()
        self.readiness.reloading()
        self.h.healthy(1)
        self.readiness.reloaded()
        self.assertEqual(
            self.notifier.sent, [["READY=1", "STATUS=serving generation 1 on tcp:7000"]]
        )

    def test_reloadsOverlapping(self) -> None:
        """
        Two SIGHUPs in a row are one reload to systemd: RELOADING=1 at the
        first, READY=1 once both have their outcome.
        """
        self.h.start()
        del self.notifier.sent[:]
        self.readiness.reloading()
        self.readiness.reloading()
        self.readiness.reloaded()
        self.assertEqual([lines[0] for lines in self.notifier.sent], ["RELOADING=1"])
        self.readiness.reloaded()
        self.assertEqual(
            [lines[0] for lines in self.notifier.sent], ["RELOADING=1", "READY=1"]
        )

    def test_stopping(self) -> None:
        """
        Stopping sends STOPPING=1.
        """
        self.h.start()
        self.readiness.stopService()
        self.assertEqual(self.notifier.sent[-1][0], "STOPPING=1")

    def test_reload(self) -> None:
        """
        A reload is RELOADING=1 with the monotonic time, then READY=1 with
        what serves.
        """
        self.h.start()
        self.readiness.reloading()
        reloading = self.notifier.sent[-1]
        self.assertEqual(reloading[0], "RELOADING=1")
        self.assertTrue(reloading[1].startswith("MONOTONIC_USEC="))
        self.readiness.reloaded()
        self.assertEqual(
            self.notifier.sent[-1],
            ["READY=1", "STATUS=serving generation 1 on tcp:7000"],
        )


class RedeployOnHangupTests(SynchronousTestCase):
    """
    SIGHUP redeploys, and the outcome is logged.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.reactor = SignalReactor()
        self.handlers: Dict[int, Any] = {}
        self.notifier = RecordingNotifier()
        readiness = Readiness(self.h.deployer, self.notifier, "tcp:7000")
        readiness.startService()
        self.service = RedeployOnHangup(
            self.reactor, self.h.deployer.redeploy, readiness,
            self.handlers.__setitem__,
        )
        self.service.startService()
        self.h.start()

    def hangup(self) -> None:
        """
        Deliver SIGHUP, and run what its handler left for the reactor.
        """
        for hook, args, kwargs in self.reactor.whenRunningHooks:
            hook(*args, **kwargs)
        self.handlers[signal.SIGHUP](signal.SIGHUP, None)
        calls, self.reactor.fromThread[:] = list(self.reactor.fromThread), []
        for f, args, kwargs in calls:
            f(*args, **kwargs)

    def test_installedWhenRunning(self) -> None:
        """
        The SIGHUP handler is installed once the reactor runs, not before.
        """
        self.assertEqual(self.handlers, {})
        for hook, args, kwargs in self.reactor.whenRunningHooks:
            hook(*args, **kwargs)
        self.assertEqual(list(self.handlers), [signal.SIGHUP])

    def test_redeploys(self) -> None:
        """
        SIGHUP deploys the next generation and logs that it serves.
        """
        with capturedLogs() as events:
            self.hangup()
            self.assertEqual(len(self.h.reactor.processes), 2)
            self.h.healthy(2)
        self.assertIs(self.h.deployer.active, self.h.backend(2))
        messages = [formatEvent(event) for event in events]
        self.assertIn("SIGHUP: redeploying", messages)
        self.assertIn(
            "redeploy on SIGHUP done: generation 2 serves on port 20001 (0.0 s)",
            messages,
        )
        self.assertEqual(
            [sent[0] for sent in self.notifier.sent],
            [
                "READY=1",
                "RELOADING=1",
                "STATUS=serving generation 2 on tcp:7000",
                "READY=1",
            ],
        )

    def test_requester(self) -> None:
        """
        A redeploy on SIGHUP is asked for in the name of C{SIGHUP}.
        """
        events: list = []
        self.h.deployer.observe(events.append)
        self.hangup()
        [deploying] = [e for e in events if e.kind == "deploying"]
        self.assertEqual(deploying.details["requester"], "SIGHUP")

    def test_failureLogged(self) -> None:
        """
        A redeploy on SIGHUP that fails is logged with its reason, and
        systemd is told the reload is over all the same.
        """
        with capturedLogs() as events:
            self.hangup()
            self.h.process(2).exit(3)
        messages = [formatEvent(event) for event in events]
        self.assertIn(
            "redeploy on SIGHUP failed: generation 2 on port 20001 exited with "
            "code 3 before it became healthy; the current version serves on",
            messages,
        )
        self.assertEqual(
            [sent[0] for sent in self.notifier.sent[-2:]], ["RELOADING=1", "READY=1"]
        )

    def test_notWhileStopping(self) -> None:
        """
        SIGHUP while stopping starts no deploy.
        """
        self.service.stopService()
        self.hangup()
        self.assertEqual(len(self.h.reactor.processes), 1)
