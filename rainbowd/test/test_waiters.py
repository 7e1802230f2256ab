"""
Tests for L{rainbowd.waiters}.
"""

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.waiters import Waiters


class WaitersTests(SynchronousTestCase):
    def test_fireAll(self):
        """
        Every Deferred handed out so far fires with the result.
        """
        waiters = Waiters()
        first, second = waiters.wait(), waiters.wait()
        self.assertNoResult(first)
        waiters.fire("done")
        self.assertEqual(
            [self.successResultOf(first), self.successResultOf(second)],
            ["done", "done"],
        )

    def test_failure(self):
        """
        A L{Failure} fails every Deferred.
        """
        waiters = Waiters()
        d = waiters.wait()
        waiters.fire(Failure(ValueError("no")))
        self.failureResultOf(d, ValueError)

    def test_onlyNext(self):
        """
        A Deferred handed out after a fire waits for the next one.
        """
        waiters = Waiters()
        waiters.fire("first")
        d = waiters.wait()
        self.assertNoResult(d)
        self.assertEqual(len(waiters), 1)

    def test_cancel(self):
        """
        A cancelled Deferred stops waiting, and the fire skips it.
        """
        waiters = Waiters()
        d = waiters.wait()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(waiters), 0)
        waiters.fire("done")
