# -*- test-case-name: rainbowd.test.endtoend.test_processgroups -*-
"""
Tests for L{rainbowd.app.processgroups} on real processes; those on a
made-up C{/proc} are in L{rainbowd.test.unit.test_processgroups}.
"""

import os
import signal
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rainbowd.app.processgroups import ProcessGroupSignals


class IdentityTests(SynchronousTestCase):
    """
    Tests for L{ProcessGroupSignals.identity}, on the real C{/proc}.
    """

    def test_running(self) -> None:
        """
        A process's identity stays the same while it runs, is no other
        process's, and is gone once it has exited.
        """
        signals = ProcessGroupSignals()
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
        )
        assert child.stdin is not None
        self.addCleanup(child.wait)
        self.addCleanup(child.stdin.close)
        first = signals.identity(child.pid)
        self.assertIsNotNone(first)
        self.assertEqual(signals.identity(child.pid), first)
        self.assertNotEqual(signals.identity(os.getpid()), first)
        child.stdin.close()
        child.wait()
        self.assertIsNone(signals.identity(child.pid))


class MarkedTests(SynchronousTestCase):
    """
    Tests for L{ProcessGroupSignals.marked} and C{signalMarked}, on a real
    process.
    """

    def test_realPidfd(self) -> None:
        """
        On this system, a real process carrying the marker is found in
        /proc and stopped through its pidfd.
        """
        if getattr(os, "pidfd_open", None) is None:
            raise SkipTest("no pidfd_open here")
        import subprocess

        marker = {"RAINBOWD_TEST_MARKER": self.mktemp()}
        # Once the shell has said so, it runs with the marker (before its
        # exec, a child's /proc/PID/environ is still its parent's).
        child = subprocess.Popen(
            ["sh", "-c", "echo started && exec sleep 30"],
            env={**os.environ, **marker},
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        self.addCleanup(child.stdout.close)
        self.addCleanup(child.wait)

        def killRunning() -> None:
            if child.poll() is None:
                child.kill()

        self.addCleanup(killRunning)
        self.assertEqual(child.stdout.readline(), b"started\n")
        signals = ProcessGroupSignals()
        self.assertEqual(signals.marked(marker), [child.pid])
        self.assertTrue(signals.signalMarked(child.pid, marker, signal.SIGTERM))
        self.assertEqual(child.wait(10), -signal.SIGTERM)
        self.assertFalse(signals.signalMarked(child.pid, marker, signal.SIGTERM))
