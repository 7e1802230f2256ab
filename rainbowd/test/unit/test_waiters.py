"""
Tests for L{rainbowd.waiters}.
"""

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rainbowd import waiters
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

    def test_cancelDoesNotSearch(self):
        """
        Cancelling one of many waiting Deferreds does not compare it with
        the others, so that thousands of held requests whose clients hang
        up cost linear time, not quadratic.
        """
        compared = []

        class CountingDeferred(Deferred):
            def __eq__(self, other):
                compared.append(other)
                return self is other

            __hash__ = Deferred.__hash__

        self.patch(waiters, "Deferred", CountingDeferred)
        many = Waiters()
        ds = [many.wait() for _ in range(100)]
        ds[-1].cancel()
        self.failureResultOf(ds[-1], CancelledError)
        self.assertEqual((compared, len(many)), ([], 99))

    def test_cancelledWhileFiring(self):
        """
        A Deferred cancelled by the callback of another as they fire is not
        fired again, and every one after it still fires.
        """
        many = Waiters()
        first, second, third = many.wait(), many.wait(), many.wait()
        first.addCallback(lambda _: second.cancel())
        many.fire("done")
        self.failureResultOf(second, CancelledError)
        self.assertEqual(self.successResultOf(third), "done")
