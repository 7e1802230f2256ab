"""
Tests for L{rainbowd.app.processgroups}.
"""

import os
import signal
from typing import List, Tuple

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from rainbowd.app.processgroups import (
    ProcessGroupSignals,
    environment,
    groupMembers,
    processIds,
    running,
    statFields,
)


class IdentityTests(SynchronousTestCase):
    """
    Tests for L{ProcessGroupSignals.identity}, on the real C{/proc}.
    """

    def test_zombie(self) -> None:
        """
        A zombie has no identity: it is not running.
        """
        proc = self.mktemp()
        os.makedirs(os.path.join(proc, "10"))
        with open(os.path.join(proc, "10", "stat"), "w") as f:
            f.write("10 (app) Z 1 10 10 0 -1 4194560" + " 0" * 13 + " 4242 0\n")
        self.assertIsNone(ProcessGroupSignals().identity(10, proc))


class GroupAliveTests(SynchronousTestCase):
    """
    Tests for L{ProcessGroupSignals.groupAlive}, on a made-up C{/proc}.
    """

    def proc(self, *processes):
        """
        A C{/proc} with C{(pid, comm, state, pgrp)} processes.
        """
        proc = self.mktemp()
        os.makedirs(proc)
        os.makedirs(os.path.join(proc, "self"))
        for pid, comm, state, pgrp in processes:
            os.makedirs(os.path.join(proc, str(pid)))
            with open(os.path.join(proc, str(pid), "stat"), "w") as f:
                f.write(f"{pid} ({comm}) {state} 1 {pgrp} {pgrp} 0 -1 4194560\n")
        return proc

    def test_running(self) -> None:
        """
        A group with a running or sleeping member is alive.
        """
        proc = self.proc((10, "sh", "S", 10), (11, "gunicorn: worker", "R", 10))
        self.assertTrue(ProcessGroupSignals().groupAlive(10, proc))

    def test_otherGroups(self) -> None:
        """
        Members of other groups do not count.
        """
        proc = self.proc((10, "sh", "S", 9), (11, "app) S 1 10", "S", 12))
        self.assertFalse(ProcessGroupSignals().groupAlive(10, proc))

    def test_zombies(self) -> None:
        """
        Zombies do not count, since nothing may ever reap them.
        """
        proc = self.proc((11, "app", "Z", 10), (12, "app", "X", 10))
        self.assertFalse(ProcessGroupSignals().groupAlive(10, proc))

    def test_lookedAtTwice(self) -> None:
        """
        A group that looks empty is looked at again, so a child forked by a
        process that exited during the first look is seen.
        """
        looks = [[], ["12"]]
        signals = ProcessGroupSignals()
        signals._members = lambda pgid, proc: iter(looks.pop(0))
        self.assertTrue(signals.groupAlive(10, self.mktemp()))
        self.assertEqual(looks, [])

    def test_realProcessGroup(self) -> None:
        """
        On the real C{/proc}, this test's own process group is alive.
        """
        if not os.path.isdir("/proc/self"):
            raise SkipTest("no /proc here")
        self.assertTrue(ProcessGroupSignals().groupAlive(os.getpgrp()))


class IsStoppedTests(SynchronousTestCase):
    """
    Tests for L{ProcessGroupSignals.isStopped}, on a made-up C{/proc}.
    """

    def proc(self, *processes) -> str:
        """
        A C{/proc} with C{(pid, comm, state)} processes.
        """
        proc = self.mktemp()
        for pid, comm, state in processes:
            os.makedirs(os.path.join(proc, str(pid)))
            with open(os.path.join(proc, str(pid), "stat"), "w") as f:
                f.write(f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560\n")
        return proc

    def test_states(self) -> None:
        """
        A process stopped by a signal (T) or a debugger (t) is stopped;
        running, sleeping, disk-waiting and zombie ones are not.
        """
        proc = self.proc(
            (10, "app", "T"),
            (11, "app", "t"),
            (12, "app", "R"),
            (13, "app", "S"),
            (14, "app", "D"),
            (15, "app", "Z"),
        )
        signals = ProcessGroupSignals()
        self.assertEqual(
            [signals.isStopped(pid, proc) for pid in range(10, 16)],
            [True, True, False, False, False, False],
        )

    def test_trickyName(self) -> None:
        """
        A command name with spaces and parentheses does not fool it.
        """
        proc = self.proc((10, "app) T (x", "S"), (11, "a) S (b", "T"))
        signals = ProcessGroupSignals()
        self.assertFalse(signals.isStopped(10, proc))
        self.assertTrue(signals.isStopped(11, proc))

    def test_gone(self) -> None:
        """
        A process that is gone is not stopped.
        """
        self.assertFalse(ProcessGroupSignals().isStopped(10, self.proc()))


class FakeProcTestCase(SynchronousTestCase):
    """
    Tests on a fake C{/proc} of processes with an environment.
    """

    def proc(self, *processes) -> str:
        """
        A fake C{/proc} holding C{(pid, state, pgrp, environ)} processes.
        """
        proc = self.mktemp()
        for pid, state, pgrp, environ in processes:
            os.makedirs(os.path.join(proc, str(pid)))
            with open(os.path.join(proc, str(pid), "stat"), "w") as f:
                f.write(f"{pid} (app) {state} 1 {pgrp} {pgrp} 0 -1 4194560\n")
            if environ is not None:
                with open(os.path.join(proc, str(pid), "environ"), "wb") as f:
                    f.write(b"\0".join(environ) + b"\0")
        return proc


class GroupHasTests(FakeProcTestCase):
    """
    Tests for L{ProcessGroupSignals.groupHas}.
    """

    def test_memberHasIt(self) -> None:
        """
        A group one of whose running members has the variable is found.
        """
        proc = self.proc(
            (10, "S", 10, [b"HOME=/root"]),
            (11, "S", 10, [b"HOME=/root", b"RAINBOWD_STATE_DIR=/srv/app/.rainbowd"]),
        )
        self.assertTrue(
            ProcessGroupSignals().groupHas(
                10, "RAINBOWD_STATE_DIR", "/srv/app/.rainbowd", proc
            )
        )

    def test_otherValue(self) -> None:
        """
        The variable with another value, or a longer one, does not count.
        """
        proc = self.proc(
            (10, "S", 10, [b"RAINBOWD_STATE_DIR=/srv/other/.rainbowd"]),
            (11, "S", 10, [b"RAINBOWD_STATE_DIR=/srv/app/.rainbowd/x"]),
        )
        self.assertFalse(
            ProcessGroupSignals().groupHas(
                10, "RAINBOWD_STATE_DIR", "/srv/app/.rainbowd", proc
            )
        )

    def test_otherGroupOrZombie(self) -> None:
        """
        A process of another group, or a zombie, does not count.
        """
        wanted = [b"RAINBOWD_STATE_DIR=/s"]
        proc = self.proc((10, "S", 9, wanted), (11, "Z", 10, wanted))
        self.assertFalse(
            ProcessGroupSignals().groupHas(10, "RAINBOWD_STATE_DIR", "/s", proc)
        )

    def test_unreadableEnvironment(self) -> None:
        """
        A process whose environment cannot be read is taken for a stranger.
        """
        proc = self.proc((10, "S", 10, None))
        self.assertFalse(
            ProcessGroupSignals().groupHas(10, "RAINBOWD_STATE_DIR", "/s", proc)
        )

    def test_noProc(self) -> None:
        """
        Without C{/proc}, no group can be told to be an app's.
        """
        self.assertFalse(
            ProcessGroupSignals().groupHas(
                10, "RAINBOWD_STATE_DIR", "/s", self.mktemp()
            )
        )

    def test_realProcess(self) -> None:
        """
        On the real C{/proc}, this test's own group has this process's
        environment.
        """
        if not os.path.isdir("/proc/self"):
            raise SkipTest("no /proc here")
        self.assertTrue(
            ProcessGroupSignals().groupHas(os.getpgrp(), "PATH", os.environ["PATH"])
        )


class MarkedTests(FakeProcTestCase):
    """
    Tests for L{ProcessGroupSignals.marked}, C{isMarked} and
    C{signalMarked}.
    """

    MARKER = {"RAINBOWD_STATE_DIR": "/s", "RAINBOWD_GENERATION": "3"}
    ENV = [b"HOME=/root", b"RAINBOWD_STATE_DIR=/s", b"RAINBOWD_GENERATION=3"]

    def test_marked(self) -> None:
        """
        Every running process carrying the whole marker is found, whatever
        its group; zombies, other generations, other state directories,
        unreadable environments and rainbowd itself are not.
        """
        proc = self.proc(
            (10, "S", 10, self.ENV),
            (11, "S", 11, self.ENV),
            (12, "Z", 12, self.ENV),
            (13, "S", 10, [b"RAINBOWD_STATE_DIR=/s", b"RAINBOWD_GENERATION=30"]),
            (14, "S", 10, [b"RAINBOWD_STATE_DIR=/t", b"RAINBOWD_GENERATION=3"]),
            (15, "S", 10, [b"RAINBOWD_STATE_DIR=/s"]),
            (16, "S", 10, None),
            (os.getpid(), "R", 1, self.ENV),
        )
        signals = ProcessGroupSignals()
        self.assertEqual(sorted(signals.marked(self.MARKER, proc)), [10, 11])
        self.assertEqual(
            sorted(signals.marked({"RAINBOWD_STATE_DIR": "/s"}, proc)), [10, 11, 13, 15]
        )
        self.assertTrue(signals.isMarked(11, self.MARKER, proc))
        for pid in [12, 13, 16, 99]:
            self.assertFalse(signals.isMarked(pid, self.MARKER, proc), pid)
        self.assertEqual(signals.marked(self.MARKER, self.mktemp()), [])

    def test_signalMarkedChecks(self) -> None:
        """
        Without pidfds, a process is signalled only if it carries the
        marker when looked at just before C{kill}.
        """
        proc = self.proc((10, "S", 10, self.ENV), (11, "S", 11, [b"HOME=/"]))
        killed = []
        signals = ProcessGroupSignals(
            kill=lambda pid, signum: killed.append((pid, signum)), pidfdOpen=None
        )
        self.assertTrue(signals.signalMarked(10, self.MARKER, signal.SIGTERM, proc))
        self.assertFalse(signals.signalMarked(11, self.MARKER, signal.SIGTERM, proc))
        self.assertFalse(signals.signalMarked(12, self.MARKER, signal.SIGTERM, proc))
        self.assertEqual(killed, [(10, signal.SIGTERM)])

    def test_signalMarkedPinsWithPidfd(self) -> None:
        """
        With pidfds, the process is pinned before it is checked and
        signalled through its pidfd, never by pid; a pid already gone when
        pinned is not signalled; the pidfd is closed.
        """
        proc = self.proc((10, "S", 10, self.ENV), (11, "S", 11, self.ENV))
        events: List[Tuple[object, ...]] = []
        opened: List[int] = []

        def pidfdOpen(pid: int) -> int:
            if pid == 11:
                raise ProcessLookupError()
            fd = os.open(os.devnull, os.O_RDONLY)
            opened.append(fd)
            events.append(("open", pid))
            return fd

        def pidfdSendSignal(fd: int, signum: int) -> None:
            events.append(("send", fd, signum))

        signals = ProcessGroupSignals(
            kill=lambda pid, signum: events.append(("kill", pid)),
            pidfdOpen=pidfdOpen,
            pidfdSendSignal=pidfdSendSignal,
        )
        self.assertTrue(signals.signalMarked(10, self.MARKER, signal.SIGKILL, proc))
        self.assertFalse(signals.signalMarked(11, self.MARKER, signal.SIGKILL, proc))
        self.assertEqual(events, [("open", 10), ("send", opened[0], signal.SIGKILL)])
        self.assertRaises(OSError, os.fstat, opened[0])

    def test_pidReusedAfterPinning(self) -> None:
        """
        A pid that was reused by a process without the marker between the
        scan and the signal is not signalled.
        """
        proc = self.proc((10, "S", 10, self.ENV))
        sent = []

        def pidfdOpen(pid: int) -> int:
            # The marked process exits; a stranger gets its pid.
            with open(os.path.join(proc, "10", "environ"), "wb") as f:
                f.write(b"HOME=/home/stranger\0")
            return os.open(os.devnull, os.O_RDONLY)

        signals = ProcessGroupSignals(
            pidfdOpen=pidfdOpen, pidfdSendSignal=lambda fd, signum: sent.append(fd)
        )
        self.assertEqual(signals.marked(self.MARKER, proc), [10])
        self.assertFalse(signals.signalMarked(10, self.MARKER, signal.SIGTERM, proc))
        self.assertEqual(sent, [])

class GroupOfTests(SynchronousTestCase):
    """
    Tests for L{ProcessGroupSignals.groupOf}.
    """

    def test_tooBigForAPid(self) -> None:
        """
        A number too big to be a pid, as a garbled pidfile may hold, is in no
        process group.
        """
        self.assertIsNone(ProcessGroupSignals().groupOf(99999999999999))

    def test_ownGroup(self) -> None:
        """
        A live process's group is found.
        """
        self.assertEqual(ProcessGroupSignals().groupOf(os.getpid()), os.getpgrp())


class ReadingTests(FakeProcTestCase):
    """
    Tests for the functions that read C{/proc}: L{statFields},
    L{environment}, L{running}, L{processIds} and L{groupMembers}.
    """

    def test_statFields(self) -> None:
        """
        The fields after the command name are found, whatever the name
        holds; a process that cannot be looked at has none.
        """
        proc = self.proc((10, "S", 7, None))
        os.makedirs(os.path.join(proc, "11"))
        with open(os.path.join(proc, "11", "stat"), "w") as f:
            f.write("11 (a) S (b) T 10 12 12 0\n")
        fields = statFields(10, proc)
        assert fields is not None
        self.assertEqual(fields[:4], ["S", "1", "7", "7"])
        self.assertEqual(statFields("11", proc), ["T", "10", "12", "12", "0"])
        self.assertIsNone(statFields(12, proc))

    def test_environment(self) -> None:
        """
        A process's environment is its C{VARIABLE=value} entries; one that
        cannot be read is L{None}.
        """
        proc = self.proc((10, "S", 10, [b"HOME=/root", b"A=b=c"]), (11, "S", 10, None))
        self.assertEqual(environment(10, proc), [b"HOME=/root", b"A=b=c"])
        self.assertIsNone(environment(11, proc))
        self.assertIsNone(environment(12, proc))

    def test_running(self) -> None:
        """
        A process is running unless it is a zombie or gone.
        """
        proc = self.proc(
            (10, "S", 10, None), (11, "T", 10, None), (12, "Z", 10, None), (13, "X", 10, None)
        )
        self.assertEqual(
            [running(pid, proc) for pid in range(10, 15)], [True, True, False, False, False]
        )

    def test_processIds(self) -> None:
        """
        The processes of C{/proc} are its numbered entries, as text.
        """
        proc = self.proc((10, "S", 10, None), (11, "S", 10, None))
        os.makedirs(os.path.join(proc, "self"))
        self.assertEqual(sorted(processIds(proc)), ["10", "11"])
        self.assertRaises(OSError, processIds, self.mktemp())

    def test_groupMembers(self) -> None:
        """
        A group's members are its running processes, as text; a C{/proc}
        that cannot be listed raises L{OSError}.
        """
        proc = self.proc(
            (10, "S", 10, None), (11, "R", 10, None), (12, "Z", 10, None), (13, "S", 9, None)
        )
        self.assertEqual(sorted(groupMembers(10, proc)), ["10", "11"])
        self.assertRaises(OSError, list, groupMembers(10, self.mktemp()))

    def test_real(self) -> None:
        """
        On the real C{/proc}, this process is running, in its own group,
        with its own parent and environment.
        """
        if not os.path.isdir("/proc/self"):
            raise SkipTest("no /proc here")
        self.assertTrue(running(os.getpid()))
        fields = statFields(os.getpid())
        assert fields is not None
        self.assertEqual(int(fields[1]), os.getppid())
        self.assertIn(str(os.getpid()), list(groupMembers(os.getpgrp())))
        self.assertIn(f"PATH={os.environ['PATH']}".encode(), environment(os.getpid()))
