# -*- test-case-name: rainbowd.test.unit.test_stopdelay -*-
"""
Tests for L{rainbowd.web.stopdelay}.
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.web.stopdelay import StopDelay, stopDelayWarning


class StopDelayTests(SynchronousTestCase):
    """
    Tests for L{StopDelay}'s timeline.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def test_none(self) -> None:
        """
        With no delay, L{StopDelay.begin} raises C{stopping} and has already
        fired: the stop goes on at once, as without it.
        """
        delay = StopDelay(0, self.clock)
        self.assertFalse(delay.stopping)
        self.assertIsNone(self.successResultOf(delay.begin()))
        self.assertTrue(delay.stopping)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waits(self) -> None:
        """
        With a delay, C{stopping} is up at once and the Deferred fires when
        the delay is over, not before; both moments are logged.
        """
        delay = StopDelay(5.0, self.clock)
        with capturedLogs() as events:
            waited = delay.begin()
            self.assertTrue(delay.stopping)
            self.clock.advance(4.9)
            self.assertNoResult(waited)
            self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(waited))
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "stopping in 5.0 s (stopDelay): lbHealthPath answers 503 "
                "meanwhile and every other request is served as usual; then "
                "the ports close and the app drains",
                "stopDelay is over: closing the ports and draining",
            ],
        )

    def test_cutShort(self) -> None:
        """
        L{StopDelay.cutShort} during the delay fires the Deferred at once,
        cancels the timer and logs how much was left.
        """
        delay = StopDelay(5.0, self.clock)
        waited = delay.begin()
        self.clock.advance(2.0)
        with capturedLogs() as events:
            self.assertTrue(delay.cutShort("SIGTERM"))
        self.assertIsNone(self.successResultOf(waited))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "SIGTERM during stopDelay: cutting it short by 3.0 s; closing "
                "the ports and draining now"
            ],
        )

    def test_cutShortOutsideTheDelay(self) -> None:
        """
        Before the delay and after it, L{StopDelay.cutShort} has nothing to
        end, and says so.
        """
        delay = StopDelay(5.0, self.clock)
        self.assertFalse(delay.cutShort("SIGTERM"))
        delay.begin()
        self.clock.advance(5.0)
        self.assertFalse(delay.cutShort("SIGTERM"))


class StopDelayWarningTests(SynchronousTestCase):
    """
    Tests for L{stopDelayWarning}.
    """

    def test_withoutHealthPath(self) -> None:
        """
        A delay with no health path for the load balancer to see is warned
        about, with the fix.
        """
        warning = stopDelayWarning(5.0, None)
        self.assertIn('Set "lbHealthPath"', warning)

    def test_fine(self) -> None:
        """
        No delay, or a delay with a health path: no warning.
        """
        self.assertIsNone(stopDelayWarning(0, None))
        self.assertIsNone(stopDelayWarning(5.0, "/_rainbowd/up"))
