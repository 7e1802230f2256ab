# -*- test-case-name: rainbowd.test.unit.test_upgrade,rainbowd.test.endtoend.test_upgrade -*-
"""
An app process that this rainbowd took over in an upgrade, rather than
started: not its child, so its end is seen through a pidfd
(C{os.pidfd_open}) that the reactor watches, and its exit status cannot be
known; its output comes on the pipes the old rainbowd handed over.
"""

import ctypes
import os
from typing import Any, Callable, Dict, Optional

from twisted.internet.error import ProcessTerminated
from twisted.internet.process import ProcessReader
from twisted.python.failure import Failure

#: What is said of an adopted process's end, whose status only its parent
#: (init, or a subreaper) learns.
UNKNOWN_EXIT = (
    "ended (its exit status cannot be known: it was taken over from an "
    "earlier rainbowd in an upgrade, so is not this one's child)"
)



#: Linux's pidfd_open system call, the same number on every architecture.
_SYS_PIDFD_OPEN = 434


def _pidfdOpenBySyscall(pid: int) -> int:
    """
    C{os.pidfd_open}, for a Python without it (PyPy 3.9): the system call
    through libc.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return fd


#: A pidfd for a process: readable once it has ended.
pidfdOpen: Callable[[int], int] = getattr(os, "pidfd_open", _pidfdOpenBySyscall)

class UnknownExit(ProcessTerminated):
    """
    An adopted process ended, with a status that cannot be known.
    """

    unknown = True

    def __init__(self) -> None:
        super().__init__(exitCode=None, signal=None)


class _PidfdReader:
    """
    The reactor's view of a pidfd: readable once the process has ended.
    """

    def __init__(self, reactor: Any, fd: int, ended) -> None:
        self._reactor = reactor
        self._fd = fd
        self._ended = ended

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "pidfd"

    def doRead(self) -> None:
        self.close()
        self._ended()

    def connectionLost(self, reason) -> None:
        pass

    def close(self) -> None:
        if self._fd >= 0:
            self._reactor.removeReader(self)
            os.close(self._fd)
            self._fd = -1


class AdoptedProcess:
    """
    The process transport of an adopted app process: C{proto} (a
    L{rainbowd.app.backend.Backend}) gets its output from the handed-over
    pipes, and C{processExited} then, once they close, C{processEnded},
    as for a child.

    @param pipes: child fd (1, 2) -> the read end handed over, for those
        still open.
    """

    def __init__(self, reactor: Any, proto: Any, pid: int, pipes: Dict[int, int]) -> None:
        self.pid = pid
        self.proto = proto
        self.pipes: Dict[int, Any] = {}
        self._exited = False
        self._reactor = reactor
        for childFD, fd in pipes.items():
            os.set_blocking(fd, False)
            reader = ProcessReader(reactor, self, childFD, fd)
            self.pipes[childFD] = reader
        try:
            pidfd = pidfdOpen(pid)
        except ProcessLookupError:
            pidfd = None
        self._pidfd: Optional[_PidfdReader] = None
        if pidfd is None:
            reactor.callLater(0, self._ended)
        else:
            self._pidfd = _PidfdReader(reactor, pidfd, self._ended)
            reactor.addReader(self._pidfd)

    def startReading(self) -> None:
        for reader in self.pipes.values():
            reader.startReading()

    # What ProcessReader calls on its process.

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.proto.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int, reason) -> None:
        reader = self.pipes.pop(childFD, None)
        if reader is not None:
            os.close(reader.fd)
        self._maybeEnded()

    # What Backend calls on its transport.

    def loseConnection(self) -> None:
        for reader in list(self.pipes.values()):
            reader.loseConnection()

    def signalProcess(self, signal: Any) -> None:
        import signal as signals

        number = getattr(signals, f"SIG{signal}") if isinstance(signal, str) else signal
        os.kill(self.pid, number)

    def _ended(self) -> None:
        self._exited = True
        self.proto.processExited(Failure(UnknownExit()))
        self._maybeEnded()

    _reported = False

    def _maybeEnded(self) -> None:
        if self._exited and not self.pipes and not self._reported:
            self._reported = True
            self.proto.processEnded(Failure(UnknownExit()))
