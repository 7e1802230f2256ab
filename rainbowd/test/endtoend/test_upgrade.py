# -*- test-case-name: rainbowd.test.endtoend.test_upgrade -*-
"""
Tests for L{rainbowd.app.adopted} on real processes; the rest of the
upgrade's are in L{rainbowd.test.unit.test_upgrade}.
"""

import os
import subprocess
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rainbowd.app.adopted import AdoptedProcess, _pidfdOpenBySyscall
from rainbowd.test.unit.test_upgrade import _Protocol


class AdoptedProcessTests(SynchronousTestCase):
    def test_goneAlready(self) -> None:
        """
        A process gone before it is adopted is reported ended at once.
        """
        child = subprocess.Popen(["true"])
        child.wait()
        proto = _Protocol()
        reactor = MemoryReactorClock()
        AdoptedProcess(reactor, proto, child.pid, {})
        reactor.advance(0)
        self.assertEqual(proto.calls, [("exited", "UnknownExit"), ("ended", "UnknownExit")])


class PidfdOpenTests(SynchronousTestCase):
    """
    Tests for L{rainbowd.app.adopted}'s pidfd_open by system call, for a Python
    whose C{os} has none (PyPy 3.9).
    """

    def test_bySyscall(self) -> None:
        """
        It gives a descriptor for a live process, and L{ProcessLookupError}
        for one that is gone.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("pidfds are Linux's")
        fd = _pidfdOpenBySyscall(os.getpid())
        self.addCleanup(os.close, fd)
        self.assertGreaterEqual(fd, 0)
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        self.assertRaises(ProcessLookupError, _pidfdOpenBySyscall, child)
