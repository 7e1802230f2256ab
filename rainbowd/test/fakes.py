"""
Hand-written fakes for rainbowd's tests: a process reactor whose processes
the test ends, and the process table that rainbowd's signals act on.
"""

import signal
from typing import Dict, List, Mapping, Optional, Set

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from rainbowd.interfaces import IProcessSignals


class FakeProcess:
    """
    A spawned process, as its transport.  The test makes it print with
    L{emit} and end with L{exit}; signals end it as configured.

    @ivar pgid: its process group: the process is spawned with C{setsid}.
    @ivar members: the pids alive in its process group; its own pid first,
        plus any the test adds (an app's workers, say).
    @ivar appPid: the pid that plays the app (by default, the process
        itself); signalling it ends the process.
    @ivar termDelay: seconds between SIGTERM and exit, or L{None} for a
        process that ignores SIGTERM.
    @ivar stopped: whether the group is stopped (SIGSTOP): it then heeds
        no signal but SIGKILL until SIGCONT.
    @ivar holdsPipes: whether something (a process outside the group, say)
        keeps the output pipes open after the process exits, so that
        C{processEnded} waits for L{closePipes} or L{loseConnection}, as
        Twisted's does.
    """

    def __init__(self, reactor, protocol, pid, executable, args, env, path) -> None:
        self.reactor = reactor
        self.proto = protocol
        self.pid = pid
        self.pgid = pid
        self.appPid = pid
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.members: Set[int] = {pid}
        self.termDelay: Optional[float] = 0
        self.stopped = False
        self._pending: List[tuple] = []
        self.holdsPipes = False
        self.ended = False
        self.stdinClosed = False
        self._reason: Optional[Failure] = None

    def emit(self, data: bytes, childFD: int = 1) -> None:
        self.proto.childDataReceived(childFD, data)

    def exit(self, code: int = 0, signum: Optional[int] = None) -> None:
        """
        End the process, with an exit code or by a signal.
        """
        if self.ended:
            return
        self.ended = True
        self.members -= {self.pid, self.appPid}
        if code == 0 and signum is None:
            reason: Exception = ProcessDone(0)
        else:
            reason = ProcessTerminated(code if signum is None else None, signum)
        self.pid = None
        self._reason = Failure(reason)
        self.proto.processExited(self._reason)
        if not self.holdsPipes:
            self.proto.processEnded(self._reason)

    def closePipes(self) -> None:
        """
        The output pipes close: C{processEnded} follows if the process has
        exited and is not told yet.
        """
        if self.holdsPipes and self.ended:
            self.proto.processEnded(self._reason)
        self.holdsPipes = False

    def deliver(self, pid: int, signum: int) -> None:
        """
        What C{kill(pid, signum)} does to a pid of this process group.
        """
        if signum == 0:
            return
        if signum == signal.SIGSTOP:
            self.stopped = True
            return
        if signum == signal.SIGCONT:
            self.stopped = False
            pending, self._pending = self._pending, []
            for pendingPid, pendingSignal in pending:
                self.deliver(pendingPid, pendingSignal)
            return
        if self.stopped and signum != signal.SIGKILL:
            self._pending.append((pid, signum))
            return
        ends = signum == signal.SIGKILL or (
            signum == signal.SIGTERM and self.termDelay is not None
        )
        if not ends:
            return
        if pid in (self.pid, self.appPid):
            delay = 0 if signum == signal.SIGKILL else self.termDelay
            self.reactor.callLater(
                delay, self.exit, 0 if signum == signal.SIGTERM else None,
                signum if signum == signal.SIGKILL else None,
            )
        else:
            self.members.discard(pid)

    # IProcessTransport, as far as rainbowd uses it

    def signalProcess(self, signalID) -> None:
        self.deliver(self.pid, getattr(signal, f"SIG{signalID}", signalID))

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def loseConnection(self) -> None:
        # Twisted closes the pipes in a later reactor iteration.
        self.reactor.callLater(0, self.closePipes)


class FakeProcessReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also spawns L{FakeProcess}es.
    """

    #: What a real reactor exits with, which L{rainbowd.tap} clears once
    #: stopped; there only where a test sets it.
    _exitSignal: Optional[int]

    def __init__(self) -> None:
        super().__init__()
        self.processes: List[FakeProcess] = []
        self._nextPid = 1000

    def spawnProcess(
        self, processProtocol, executable, args=(), env=None, path=None,
        uid=None, gid=None, usePTY=0, childFDs=None,
    ):
        self._nextPid += 1
        process = FakeProcess(
            self, processProtocol, self._nextPid, executable, args, env, path
        )
        self.processes.append(process)
        processProtocol.makeConnection(process)
        return process


@implementer(IProcessSignals)
class FakeSignals:
    """
    The process table of a L{FakeProcessReactor}, as rainbowd's signals see
    it (see L{rainbowd.app.processgroups.ProcessGroupSignals}).

    @ivar sent: every signal sent, as C{("pid" | "group" | "marked", id,
        signum)}.
    @ivar strays: the processes outside every group (they called
        C{setsid}), by pid: their environment.
    @ivar stubborn: the strays that ignore SIGTERM.
    @ivar unkillable: the strays that outlive SIGKILL too (stuck in the
        kernel, say).
    """

    def __init__(self, reactor: FakeProcessReactor) -> None:
        self.reactor = reactor
        self.sent: List[tuple] = []
        self.strays: Dict[int, Mapping[str, str]] = {}
        self.stubborn: Set[int] = set()
        self.unkillable: Set[int] = set()

    def _owner(self, pid: int) -> Optional[FakeProcess]:
        for process in self.reactor.processes:
            if pid in process.members:
                return process
        return None

    def _group(self, pgid: int) -> Optional[FakeProcess]:
        for process in self.reactor.processes:
            if process.pgid == pgid:
                return process
        return None

    def signalProcess(self, pid: int, signum: int) -> None:
        self.sent.append(("pid", pid, signum))
        owner = self._owner(pid)
        if owner is not None:
            owner.deliver(pid, signum)

    def signalGroup(self, pgid: int, signum: int) -> None:
        self.sent.append(("group", pgid, signum))
        process = self._group(pgid)
        if process is not None:
            for pid in sorted(process.members):
                process.deliver(pid, signum)

    def groupAlive(self, pgid: int) -> bool:
        process = self._group(pgid)
        return process is not None and bool(process.members)

    def groupHas(self, pgid: int, variable: str, value: str) -> bool:
        process = self._group(pgid)
        return (
            process is not None
            and bool(process.members)
            and (process.env or {}).get(variable) == value
        )

    def marked(self, marker: Mapping[str, str]) -> List[int]:
        return sorted(pid for pid in self.strays if self.isMarked(pid, marker))

    def isMarked(self, pid: int, marker: Mapping[str, str]) -> bool:
        env = self.strays.get(pid)
        return env is not None and all(env.get(k) == v for k, v in marker.items())

    def signalMarked(self, pid: int, marker: Mapping[str, str], signum: int) -> bool:
        if not self.isMarked(pid, marker):
            return False
        self.sent.append(("marked", pid, signum))
        if pid in self.unkillable:
            return True
        if signum == signal.SIGKILL or (
            signum == signal.SIGTERM and pid not in self.stubborn
        ):
            del self.strays[pid]
        return True
    def isStopped(self, pid: int) -> bool:
        owner = self._owner(pid)
        return owner is not None and owner.stopped

    def groupOf(self, pid: int) -> Optional[int]:
        owner = self._owner(pid)
        return None if owner is None else owner.pgid

    def identity(self, pid: int) -> Optional[str]:
        """
        C{"started:PID"} for a running process: the fake's pids are never
        reused.
        """
        return None if self._owner(pid) is None else f"started:{pid}"


class FakeHealthCheck:
    """
    A health check whose answers the test gives: each probe is a pending
    Deferred in L{probes}.
    """

    def __init__(self) -> None:
        self.probes: List[tuple] = []

    def __call__(self, port: int, path: str, timeout: float) -> Deferred:
        d: Deferred = Deferred()
        self.probes.append((port, path, timeout, d))
        return d

    def answer(self, port: int) -> None:
        """
        The backend on C{port} answers its pending probes healthily.
        """
        for probePort, path, timeout, d in self.probes:
            if probePort == port and not d.called:
                d.callback(None)


def passTime(clock: MemoryReactorClock, seconds: float) -> None:
    """
    Advance C{clock} by C{seconds} as a real reactor would: each delayed
    call runs at its own time, so that a call it schedules counts from
    then, not from the end of the whole advance.
    """
    end = clock.seconds() + seconds
    while True:
        due = [call.getTime() for call in clock.getDelayedCalls()]
        due = [when for when in due if when <= end]
        if not due:
            break
        clock.advance(max(min(due) - clock.seconds(), 0))
    clock.advance(end - clock.seconds())
