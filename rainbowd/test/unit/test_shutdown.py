# -*- test-case-name: rainbowd.test.unit.test_shutdown -*-
"""
Tests for L{rainbowd.app.shutdown}.
"""

from types import SimpleNamespace

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.backend import State
from rainbowd.app.shutdown import REPORT_INTERVAL, describeWait, reportShutdown


def backend(generation, state=State.DRAINING, inflight=0, tunnels=0):
    return SimpleNamespace(
        generation=generation,
        state=state,
        inflight=inflight,
        tunnels={object() for n in range(tunnels)},
    )


class DescribeWaitTests(SynchronousTestCase):
    """
    Tests for L{describeWait}.
    """

    def test_held(self) -> None:
        """
        A generation is said with its state, its requests in flight and its
        upgraded connections, or, holding none, that its processes are
        still there.
        """
        self.assertEqual(
            [
                describeWait(backend(2, inflight=3, tunnels=1)),
                describeWait(backend(2, inflight=1)),
                describeWait(backend(3, tunnels=2)),
                describeWait(backend(4, State.STOPPING)),
            ],
            [
                "generation 2 (draining: 3 requests in flight, 1 upgraded "
                "connection open)",
                "generation 2 (draining: 1 request in flight)",
                "generation 3 (draining: 2 upgraded connections open)",
                "generation 4 (stopping: its processes have not exited yet)",
            ],
        )


class ReportShutdownTests(SynchronousTestCase):
    """
    Tests for L{reportShutdown}.
    """

    def test_nowAndEverySecond(self) -> None:
        """
        The generations waited for are logged at once, then every second
        with their counts as they are then, until the shutdown is done.
        """
        clock = MemoryReactorClock()
        old, new = backend(2, inflight=2), backend(3, State.STOPPING)
        waiting = [old, new]
        with capturedLogs() as events:
            done = reportShutdown(clock, lambda: waiting)
            old.inflight = 1
            waiting.remove(new)
            clock.advance(REPORT_INTERVAL)
            self.assertEqual(done("result"), "result")
            clock.advance(10 * REPORT_INTERVAL)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "shutting down: waiting for generation 2 (draining: 2 requests "
                "in flight); generation 3 (stopping: its processes have not "
                "exited yet)",
                "shutting down: waiting for generation 2 (draining: 1 request "
                "in flight)",
            ],
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_nothingToWaitFor(self) -> None:
        """
        Nothing is logged while no generation is left to wait for.
        """
        clock = MemoryReactorClock()
        with capturedLogs() as events:
            done = reportShutdown(clock, lambda: [])
            done(None)
        self.assertEqual(events, [])
