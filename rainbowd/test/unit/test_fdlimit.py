# -*- test-case-name: rainbowd.test.unit.test_fdlimit -*-
"""
Tests for L{rainbowd.fdlimit}.
"""

import os
import resource
from typing import List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rainbowd.fdlimit import (
    PER_CONNECTION,
    FileLimit,
    budgetWarning,
    defaultMaxConnections,
    describeLimit,
    raiseFileLimit,
)
from rainbowd.web.proxy import ProxySite


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
        Three descriptors per connection, after 128 plus 8 per app version.
        """
        self.assertEqual(defaultMaxConnections(1024, 10), (1024 - 128 - 80) // 3)
        self.assertEqual(defaultMaxConnections(524288, 10), (524288 - 208) // 3)

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
        self.assertIsNone(budgetWarning(1024, 272, 10))
        warning = budgetWarning(1024, 5000, 10)
        self.assertIn('"maxConnections" is 5000', warning)
        self.assertIn("only 272 public connections fit", warning)
        self.assertIn("LimitNOFILE=", warning)


class _Unanswered(Resource):
    """
    Takes each request and never answers it, as a slow app would.
    """

    isLeaf = True

    def render(self, request) -> int:
        return NOT_DONE_YET


def _openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class ShareTests(SynchronousTestCase):
    """
    Tests for L{PER_CONNECTION}: what one public connection really holds.
    """

    if not os.path.isdir("/proc/self/fd"):
        skip = "needs /proc/self/fd to count descriptors"

    def test_uploadFits(self) -> None:
        """
        A public connection whose chunked upload is being answered holds its
        own descriptor, its body's temporary file and a connection to the
        app, and L{PER_CONNECTION} has room for all three.
        """
        site = ProxySite(_Unanswered(), reactor=MemoryReactorClock())
        channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
        before = _openDescriptors()
        channel.makeConnection(StringTransport())
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        channel.dataReceived(
            b"POST /upload HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        )
        # The StringTransports stand for the client's socket and the app's.
        held = _openDescriptors() - before + 2
        self.assertEqual(held, 3)
        self.assertLessEqual(held, PER_CONNECTION)
