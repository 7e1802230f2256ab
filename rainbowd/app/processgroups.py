# -*- test-case-name: rainbowd.test.unit.test_processgroups,rainbowd.test.endtoend.test_processgroups -*-
"""
The app's processes as the operating system sees them: what C{/proc} says of
a process or a process group, and the signals sent to them with C{kill(2)}.
"""

import os
import signal
from typing import Callable, Iterator, List, Mapping, Optional, Union

from zope.interface import implementer

from rainbowd.interfaces import IProcessSignals


def _wanted(marker: Mapping[str, str]) -> List[bytes]:
    return [
        f"{name}={value}".encode("utf-8", "surrogateescape")
        for name, value in marker.items()
    ]


def statFields(pid: Union[int, str], proc: str = "/proc") -> Optional[List[str]]:
    """
    The fields of C{/proc/PID/stat} after the command name -- state, ppid,
    pgrp, ... -- or L{None} if the process cannot be looked at.  Field
    M{n} of C{proc(5)} is item M{n - 3}.
    """
    try:
        with open(os.path.join(proc, str(pid), "stat")) as f:
            stat = f.read()
    except OSError:
        return None
    # pid (comm) state ppid pgrp ...; comm may hold spaces or ")".
    return stat[stat.rindex(")") + 2 :].split()


def environment(pid: Union[int, str], proc: str = "/proc") -> Optional[List[bytes]]:
    """
    The C{VARIABLE=value} entries of the environment process C{pid} was
    started with (C{/proc/PID/environ}), or L{None} if it cannot be read.
    """
    try:
        with open(os.path.join(proc, str(pid), "environ"), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return [entry for entry in data.split(b"\0") if entry]


def running(pid: Union[int, str], proc: str = "/proc") -> bool:
    """
    Is process C{pid} there, and not a zombie?
    """
    fields = statFields(pid, proc)
    return fields is not None and fields[0] not in "ZX"


def processIds(proc: str = "/proc") -> List[str]:
    """
    The pids, as text, of the processes C{proc} lists.

    @raise OSError: if C{proc} cannot be listed.
    """
    return [entry for entry in os.listdir(proc) if entry.isdigit()]


def groupMembers(pgid: int, proc: str = "/proc") -> Iterator[str]:
    """
    The pids, as text, of the running processes (zombies aside) of group
    C{pgid}.

    @raise OSError: if C{proc} cannot be listed.
    """
    for pid in processIds(proc):
        fields = statFields(pid, proc)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in "ZX":
            yield pid


@implementer(IProcessSignals)
class ProcessGroupSignals:
    """
    Signals sent with the operating system.  Every backend runs in a process
    group of its own (see L{rainbowd.app.backend.Backend.launch}), so the whole app -- the shell,
    the app, its workers -- can be stopped, and seen to be gone, at once;
    processes that left the group are found by their environment (see
    L{marked}).

    @param kill: L{os.kill}, or a test's fake.
    @param pidfdOpen: L{os.pidfd_open} where there is one, or a test's fake;
        L{None} to check a process again just before C{kill} instead.
    @param pidfdSendSignal: L{signal.pidfd_send_signal}, or a test's fake.
    """

    def __init__(
        self,
        kill: Callable[[int, int], None] = os.kill,
        pidfdOpen: Optional[Callable[[int], int]] = getattr(os, "pidfd_open", None),
        pidfdSendSignal: Optional[Callable[[int, int], None]] = getattr(
            signal, "pidfd_send_signal", None
        ),
    ) -> None:
        self._kill = kill
        if pidfdSendSignal is None:
            pidfdOpen = None
        self._pidfdOpen = pidfdOpen
        self._pidfdSendSignal = pidfdSendSignal

    def signalProcess(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def signalGroup(self, pgid: int, signum: int) -> None:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass

    def groupAlive(self, pgid: int, proc: str = "/proc") -> bool:
        """
        Is any process of group C{pgid} still running?  Zombies do not
        count: where nothing reaps orphans (PID 1 in a container without an
        init), they would never go.

        A group that looks empty is looked at once more: a process that
        forks and then exits while C{proc} is being read leaves a child the
        first look cannot have listed.
        """
        try:
            return any(True for pid in self._members(pgid, proc)) or any(
                True for pid in self._members(pgid, proc)
            )
        except OSError:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return False
            return True

    def groupHas(
        self, pgid: int, variable: str, value: str, proc: str = "/proc"
    ) -> bool:
        """
        Does a running process of group C{pgid} have C{variable=value} in
        the environment it was started with?  That tells rainbowd's app
        processes (see L{rainbowd.app.backend.APP_VARIABLE}) from a stranger
        that got the same process group id later.  A process whose
        environment cannot be read is taken for a stranger.
        """
        wanted = f"{variable}={value}".encode("utf-8", "surrogateescape")
        try:
            members = list(self._members(pgid, proc))
        except OSError:
            return False
        for pid in members:
            environ = environment(pid, proc)
            if environ is not None and wanted in environ:
                return True
        return False

    def _members(self, pgid: int, proc: str) -> Iterator[str]:
        """
        The pids, as text, of the running processes of group C{pgid} (see
        L{groupMembers}).

        @raise OSError: if C{proc} cannot be listed.
        """
        return groupMembers(pgid, proc)

    def marked(self, marker: Mapping[str, str], proc: str = "/proc") -> List[int]:
        """
        The pids of the running processes, whatever their group, whose
        environment has every C{VARIABLE=value} of C{marker}; never
        rainbowd's own.  This reads the environment of every process the
        system has, so it is done only when a generation stops and at
        startup.  A process that cleared its environment is not found.
        """
        wanted = _wanted(marker)
        try:
            entries = processIds(proc)
        except OSError:
            return []
        own = str(os.getpid())
        return [
            int(pid)
            for pid in entries
            if pid != own
            and running(pid, proc)
            and self._carries(pid, wanted, proc)
        ]

    def signalMarked(
        self, pid: int, marker: Mapping[str, str], signum: int, proc: str = "/proc"
    ) -> bool:
        """
        Send C{signum} to C{pid} only if it is running and carries
        C{marker}.  Where Linux has pidfds, the process is pinned first, so
        the one signalled is the one checked even if C{pid} is reused in
        between; elsewhere it is checked just before C{kill}.

        @return: whether the signal was sent.
        """
        pidfd = None
        if self._pidfdOpen is not None:
            try:
                pidfd = self._pidfdOpen(pid)
            except ProcessLookupError:
                return False
            except OSError:
                pidfd = None
        try:
            if not self.isMarked(pid, marker, proc):
                return False
            if pidfd is not None:
                # A pidfd is only opened when there is a way to signal it.
                assert self._pidfdSendSignal is not None
                self._pidfdSendSignal(pidfd, signum)
            else:
                self._kill(pid, signum)
            return True
        except ProcessLookupError:
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def isMarked(
        self, pid: int, marker: Mapping[str, str], proc: str = "/proc"
    ) -> bool:
        """
        Is C{pid} running (a zombie is not), with C{marker} in its
        environment?
        """
        return running(pid, proc) and self._carries(str(pid), _wanted(marker), proc)

    def _carries(self, pid: str, wanted: List[bytes], proc: str) -> bool:
        entries = environment(pid, proc)
        if entries is None:
            return False
        environ = set(entries)
        return all(entry in environ for entry in wanted)

    def identity(
        self,
        pid: int,
        proc: str = "/proc",
        bootId: str = "/proc/sys/kernel/random/boot_id",
    ) -> Optional[str]:
        """
        What tells process C{pid} from any other that gets its pid later:
        the boot it runs in and its start time (C{/proc/PID/stat}); or
        L{None} if it is not running (a zombie is not) or cannot be looked
        at.  Unlike the environment, which a process may overwrite (Perl's
        C{$0 = ...}, C{setproctitle}), it cannot change.
        """
        fields = statFields(pid, proc)
        if fields is None or fields[0] in "ZX" or len(fields) < 20:
            return None
        try:
            with open(bootId) as f:
                boot = f.read().strip()
        except OSError:
            boot = "unknown"
        # Field 22, starttime, is the 20th after the command name.
        return f"{boot}:{fields[19]}"

    def isStopped(self, pid: int, proc: str = "/proc") -> bool:
        """
        Is process C{pid} stopped -- by SIGSTOP (C{kill -STOP}), SIGTSTP or
        a debugger -- so that it runs no code until it gets SIGCONT?  A
        process that cannot be looked at is not.
        """
        fields = statFields(pid, proc)
        return fields is not None and fields[0] in ("T", "t")

    def groupOf(self, pid: int) -> Optional[int]:
        try:
            return os.getpgid(pid)
        except (ProcessLookupError, OverflowError):
            return None
