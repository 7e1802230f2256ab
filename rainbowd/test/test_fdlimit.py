# -*- test-case-name: rainbowd.test.test_fdlimit -*-
"""
Tests for L{rainbowd.fdlimit}.
"""

import resource
from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.fdlimit import (
    FileLimit,
    budgetWarning,
    defaultMaxConnections,
    describeLimit,
    raiseFileLimit,
)


class FakeLimits:
    """
    C{getrlimit} and C{setrlimit} over one limit, recording each change;
    C{refuse} makes C{setrlimit} fail as the kernel would.
    """

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limit = (soft, hard)
        self.refuse = refuse
        self.set: List[Tuple[int, int]] = []

    def getrlimit(self, which: int) -> Tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limit

    def setrlimit(self, which: int, limit: Tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.set.append(limit)
        self.limit = limit

    def raiseIt(self, nrOpen=None) -> FileLimit:
        return raiseFileLimit(self.getrlimit, self.setrlimit, lambda: nrOpen)


class RaiseFileLimitTests(SynchronousTestCase):
    """
    Tests for L{raiseFileLimit}.
    """

    def test_raisedToHard(self) -> None:
        """
        The soft limit is raised to the hard one, and both are told.
        """
        limits = FakeLimits(1024, 524288)
        self.assertEqual(limits.raiseIt(), FileLimit(524288, 524288, 1024))
        self.assertEqual(limits.set, [(524288, 524288)])

    def test_alreadyAtHard(self) -> None:
        """
        A soft limit already at the hard one is left alone.
        """
        limits = FakeLimits(1024, 1024)
        self.assertEqual(limits.raiseIt(), FileLimit(1024, 1024, 1024))
        self.assertEqual(limits.set, [])

    def test_infiniteHard(self) -> None:
        """
        An infinite hard limit raises the soft one to the kernel's
        C{nr_open}, which is as far as Linux lets it go.
        """
        limits = FakeLimits(1024, resource.RLIM_INFINITY)
        limit = limits.raiseIt(nrOpen=1048576)
        self.assertEqual(limit.soft, 1048576)
        self.assertEqual(limits.set, [(1048576, resource.RLIM_INFINITY)])

    def test_refused(self) -> None:
        """
        A limit that cannot be raised is kept, with the reason.
        """
        limits = FakeLimits(1024, 4096, refuse=True)
        limit = limits.raiseIt()
        self.assertEqual((limit.soft, limit.hard, limit.before), (1024, 4096, 1024))
        self.assertIn("not allowed to raise maximum limit", limit.error)


class DescribeLimitTests(SynchronousTestCase):
    """
    Tests for L{describeLimit}: the one startup line.
    """

    def test_raised(self) -> None:
        """
        A raised limit is told with what it was and the cap it gives; a high
        one needs no advice.
        """
        line = describeLimit(FileLimit(524288, 524288, 1024), 262099, True)
        self.assertEqual(
            line,
            "file descriptor limit: soft 1024 raised to 524288, the hard "
            "limit; maxConnections 262099 (derived from the limit).",
        )

    def test_lowSaysHowToRaise(self) -> None:
        """
        A low limit that cannot go higher says how to raise it, for systemd
        and for a shell.
        """
        line = describeLimit(FileLimit(1024, 1024, 1024), 408, True)
        self.assertIn("soft 1024, hard 1024", line)
        self.assertIn("LimitNOFILE=", line)
        self.assertIn("ulimit -n", line)

    def test_failedSaysWhy(self) -> None:
        """
        A limit that could not be raised says so, why, and how to fix it.
        """
        line = describeLimit(
            FileLimit(1024, 524288, 1024, "setrlimit failed: nope"), 100, False
        )
        self.assertIn("raising the soft limit to the hard one failed", line)
        self.assertIn("setrlimit failed: nope", line)
        self.assertIn("maxConnections 100 (as configured)", line)
        self.assertIn("LimitNOFILE=", line)


class BudgetTests(SynchronousTestCase):
    """
    Tests for L{defaultMaxConnections} and L{budgetWarning}.
    """

    def test_formula(self) -> None:
        """
        Two descriptors per connection, after 128 plus 8 per app version.
        """
        self.assertEqual(defaultMaxConnections(1024, 10), (1024 - 128 - 80) // 2)
        self.assertEqual(defaultMaxConnections(524288, 10), (524288 - 208) // 2)

    def test_atLeastOne(self) -> None:
        """
        A limit below the reserve still leaves one connection.
        """
        self.assertEqual(defaultMaxConnections(100, 10), 1)

    def test_tooManyWarned(self) -> None:
        """
        A maxConnections the limit cannot hold is warned about, with the
        number that fits and both fixes.
        """
        self.assertIsNone(budgetWarning(1024, 408, 10))
        warning = budgetWarning(1024, 5000, 10)
        self.assertIn('"maxConnections" is 5000', warning)
        self.assertIn("only 408 public connections fit", warning)
        self.assertIn("LimitNOFILE=", warning)
