# -*- test-case-name: rainbowd.test.unit.test_verify -*-
"""
The C{verify} command: a smoke test a new generation must pass, once
healthy, before it gets traffic.

It is run like C{run}, with C{/bin/sh -c}, in a process group of its own,
with C{$1} the generation's port and C{$2} its number, in the app's
directory and with the app's environment plus C{RAINBOWD_PORT}.  Exit
status 0 passes.  Anything else fails, and so does running past
C{verifyTimeout}, when its whole process group is killed.  Whatever it
leaves running once its shell has exited is killed too: a smoke test has
nothing to leave behind.

Its processes carry the generation's marker (L{Backend.marker}) and
L{VERIFY_VARIABLE}: those that left its process group (C{setsid}) are
killed once its shell has exited, or at the latest with the generation, and
a later rainbowd finds those a killed one left.
"""

import errno
import os
import signal
from collections import deque
from types import MappingProxyType
from typing import Callable, Deque, Dict, Mapping, Optional, Set, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rainbowd.app.backend import APP_VARIABLE, OUTPUT_GRACE, describeExit
from rainbowd.app.outputlines import OutputLines
from rainbowd.environment import VERIFY_VARIABLE

#: How many of its last output lines a verify's outcome carries.
VERIFY_LINES = 20

#: How many of its output lines a verify streams to whoever follows the
#: deploy; every line is logged.
STREAMED_LINES = 100

#: The environment variable that holds the port of the generation verified.
PORT_VARIABLE = "RAINBOWD_PORT"


#: What the shell's exit codes 126 and 127 mean.
_SHELL_CODES = {
    126: "the shell found the command but could not run it (is it "
    "executable?)",
    127: "the shell did not find the command (is it installed, on the PATH "
    "rainbowd runs with, or relative to cwd?)",
}

#: What the errors of a spawn that fails mean, and what to do about them.
_SPAWN_ERRORS = {
    errno.EAGAIN: "rainbowd's user is out of processes: raise its limit "
    "(TasksMax= or LimitNPROC= in the systemd unit, ulimit -u), or find "
    "what holds them",
    errno.EMFILE: "rainbowd is out of file descriptors: raise its limit "
    "(LimitNOFILE= in the systemd unit, ulimit -n)",
    errno.ENFILE: "the system is out of file descriptors: raise "
    "fs.file-max, or find what holds them",
    errno.ENOMEM: "the system is out of memory",
}


@attrs.frozen
class Verified:
    """
    A verify that exited 0, after C{seconds}, having printed C{lines} lines,
    the last of them C{output}.
    """

    seconds: float
    lines: int
    output: Tuple[str, ...]


@attrs.frozen(auto_exc=True)
class VerifyFailed(Exception):
    """
    A verify that did not exit 0.

    @ivar reason: what became of it, as a phrase following "verify":
        C{"exited with code 1"}.
    @ivar exitCode: its shell's exit code, or L{None} if it was killed.
    @ivar signal: the signal that killed its shell, or L{None}.
    @ivar timedOut: whether it ran past C{verifyTimeout}.
    @ivar lines: how many lines it printed.
    @ivar output: its last L{VERIFY_LINES} lines.
    """

    reason: str
    exitCode: Optional[int]
    signal: Optional[int]
    timedOut: bool
    seconds: float
    lines: int
    output: Tuple[str, ...]

    def __str__(self) -> str:
        return f"verify {self.reason}"

    def asJSON(self) -> dict:
        return {**attrs.asdict(self), "output": list(self.output)}

    def describe(self, backend) -> str:
        """
        The failed deploy of C{backend}, as a sentence.
        """
        where = f"generation {backend.generation} on port {backend.port}"
        if backend.exitReason is not None:
            return (
                f"{where} {backend.exitReason} while its verify command ran, "
                "which was killed"
            )
        return (
            f"{where} failed its verify command, which {self.reason}; it is "
            "stopped before it got traffic"
        )


class VerifyRun(ProcessProtocol):
    """
    One run of a verify command; L{start} it, and wait on L{result}.

    @ivar result: fires with L{Verified}, or fails with L{VerifyFailed}.
    @ivar output: its last lines of output.
    @ivar pgid: its process group, which is the pid of its shell.
    """

    log = Logger()

    def __init__(
        self,
        reactor,
        signals,
        command: str,
        generation: int,
        port: int,
        cwd: str,
        env: Dict[str, str],
        timeout: float,
        onLine: Callable[[str, str], None] = lambda line, stream: None,
        marker: Mapping[str, str] = MappingProxyType({}),
    ) -> None:
        """
        @param signals: an L{rainbowd.interfaces.IProcessSignals}.
        @param env: its whole environment, but C{RAINBOWD_PORT} and
            C{marker}.
        @param marker: the environment variables that mark its processes,
            whatever their group; none to look for no such process.
        @param onLine: called with each of its first L{STREAMED_LINES}
            lines and its stream (C{"stdout"} or C{"stderr"}).
        """
        self.result: Deferred = Deferred()
        self.output: Deque[str] = deque(maxlen=VERIFY_LINES)
        self.pgid: Optional[int] = None
        self._reactor = reactor
        self._signals = signals
        self._command = command
        self._generation = generation
        self._port = port
        self._cwd = cwd
        self._env = {**env, **marker, PORT_VARIABLE: str(port)}
        self._marker = dict(marker)
        self._timeout = timeout
        self._onLine = onLine
        self._lines = 0
        self._output = OutputLines()
        self._started = 0.0
        self._exit: Optional[Failure] = None
        self._killed: Optional[str] = None
        self._timedOut = False
        self._calls: Dict[str, IDelayedCall] = {}
        self._done = False

    def start(self) -> Deferred:
        """
        Spawn the command; C{verifyTimeout} runs from now.

        @return: L{result}.
        """
        args = [
            "setsid",  # from util-linux: a process group of its own
            "/bin/sh",
            "-c",
            self._command,
            "rainbowd-verify",
            str(self._port),
            str(self._generation),
        ]
        self.log.info(
            "generation {generation}: verifying on port {port}: {command}",
            generation=self._generation,
            port=self._port,
            command=self._command,
        )
        self._started = self._reactor.seconds()
        if not os.path.isdir(self._cwd):
            return self._notStarted(
                f"its directory {self._cwd} (\"cwd\") is gone; a release "
                "directory in use must be kept until a redeploy replaces it"
            )
        try:
            process = self._reactor.spawnProcess(
                self, args[0], args, env=self._env, path=self._cwd
            )
        except OSError as e:
            why = str(e)
            if e.errno in _SPAWN_ERRORS:
                why += ": " + _SPAWN_ERRORS[e.errno]
            return self._notStarted(why)
        self.pgid = process.pid
        process.closeStdin()  # a verify that reads its input gets EOF, not a hang
        self._calls["timeout"] = self._reactor.callLater(
            self._timeout, self._timedOutNow
        )
        return self.result

    def stop(self, why: str) -> None:
        """
        Kill it, if it still runs: L{result} then fails with C{why}, a
        phrase following "verify" (C{"was stopped: rainbowd is shutting
        down"}).
        """
        if self._done or self._killed is not None:
            return
        self._killed = why
        self._kill()

    def describe(self) -> dict:
        """
        What runs, JSON-able, for C{/status}.
        """
        return {
            "generation": self._generation,
            "command": self._command,
            "pgid": self.pgid,
            "seconds": round(self._reactor.seconds() - self._started, 3),
        }

    # ProcessProtocol

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in self._output.received(childFD, data):
            self._outputLine(childFD, line)

    def processExited(self, reason: Failure) -> None:
        # Not processEnded alone: a child it left could hold its output
        # open forever.
        self._exit = reason
        self._cancel("timeout")
        if self._killed is None:
            self._kill()  # what it left running
        self._killStrays()
        transport = self.transport
        assert transport is not None  # it exited, so it was started
        self._calls["output"] = self._reactor.callLater(
            OUTPUT_GRACE, transport.loseConnection
        )

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._output.unended():
            self._outputLine(childFD, rest)
        self._cancel("output")
        if self._exit is None:
            self._exit = reason
        self._finish(self._outcome(self._exit))

    # Internals

    def _outputLine(self, childFD: int, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        stream = "stdout" if childFD == 1 else "stderr"
        self._lines += 1
        self.output.append(text)
        self.log.info(
            "[generation {generation} verify] {line}",
            generation=self._generation,
            line=text,
            stream=stream,
        )
        if self._lines <= STREAMED_LINES:
            self._onLine(text, stream)

    def _notStarted(self, why: str) -> Deferred:
        self._finish(
            VerifyFailed(f"could not be started: {why}", None, None, False, 0.0, 0, ())
        )
        return self.result

    def _timedOutNow(self) -> None:
        if self._killed is not None:
            return
        self._timedOut = True
        self.stop(
            f"did not finish within verifyTimeout ({self._timeout:g} s), so "
            f"its process group {self.pgid} was killed"
        )
        self.log.warn(
            "generation {generation}: verify did not finish within "
            "verifyTimeout ({timeout:g} s); killing its process group {pgid}",
            generation=self._generation,
            timeout=self._timeout,
            pgid=self.pgid,
        )

    def _kill(self) -> None:
        if self.pgid is not None:
            self._signals.signalGroup(self.pgid, signal.SIGKILL)

    def _killStrays(self) -> None:
        """
        Kill the processes it started outside its process group.
        """
        if not self._marker:
            return
        strays = self._signals.marked(self._marker)
        if strays:
            self.log.warn(
                "generation {generation}: its verify left processes outside "
                "its process group (pids {pids}); killing them",
                generation=self._generation,
                pids=", ".join(map(str, strays)),
            )
        for pid in strays:
            self._signals.signalMarked(pid, self._marker, signal.SIGKILL)

    def _cancel(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _outcome(self, reason: Failure):
        seconds = round(self._reactor.seconds() - self._started, 3)
        output = tuple(self.output)
        if self._killed is None and reason.check(ProcessDone):
            return Verified(seconds, self._lines, output)
        status = reason.value
        code = getattr(status, "exitCode", None)
        signum = getattr(status, "signal", None)
        if self._killed is not None:
            why = self._killed
        else:
            why = describeExit(reason)
            if code in _SHELL_CODES:
                why += ": " + _SHELL_CODES[code]
        return VerifyFailed(
            why, code, signum, self._timedOut, seconds, self._lines, output
        )

    def _finish(self, outcome) -> None:
        if self._done:
            return
        self._done = True
        self._cancel("timeout")
        if isinstance(outcome, Verified):
            self.log.info(
                "generation {generation}: verify passed in {seconds:g} s",
                generation=self._generation,
                seconds=outcome.seconds,
            )
        else:
            self.log.warn(
                "generation {generation}: verify {reason}",
                generation=self._generation,
                reason=outcome.reason,
            )
        if isinstance(outcome, Exception):
            self.result.errback(Failure(outcome))
        else:
            self.result.callback(outcome)


def _socketInodes(table: str, localPort: int, remotePort: int) -> Set[str]:
    """
    The inodes of the sockets of C{table}, the text of C{/proc/net/tcp} or
    C{/proc/net/tcp6}, from port C{localPort} to port C{remotePort}.
    """
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
        except (IndexError, ValueError):
            continue
        if (local, remote) == (localPort, remotePort):
            inodes.add(fields[9])
    return inodes


def verifyAsking(
    signals,
    stateDir: str,
    pid: Optional[int] = None,
    ports: Optional[Tuple[int, int]] = None,
    proc: str = "/proc",
) -> Optional[int]:
    """
    The pid of a verify process of the rainbowd of C{stateDir} at the other
    end of a control connection, or L{None}: the process C{pid} (a unix
    socket's client), or the one holding the TCP connection C{ports}, from
    the client's port to the control port.
    """
    verifying = signals.marked({APP_VARIABLE: stateDir, VERIFY_VARIABLE: "1"})
    if pid is not None or ports is None:
        return pid if pid in verifying else None
    inodes: Set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", table)) as f:
                inodes |= _socketInodes(f.read(), *ports)
        except OSError:
            pass
    links = {f"socket:[{inode}]" for inode in inodes}
    for candidate in verifying:
        fds = os.path.join(proc, str(candidate), "fd")
        try:
            names = os.listdir(fds)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(os.path.join(fds, name)) in links:
                    return candidate
            except OSError:
                pass
    return None


class Verifier:
    """
    Runs the verify command of a backend's config against it.

    @param reactor: an C{IReactorProcess} and C{IReactorTime}.
    @param signals: an L{rainbowd.interfaces.IProcessSignals}.
    """

    def __init__(self, reactor, signals) -> None:
        self._reactor = reactor
        self._signals = signals

    def start(
        self, backend, onLine: Callable[[str, str], None] = lambda line, stream: None
    ) -> VerifyRun:
        """
        Start C{backend.config.verify} against C{backend}, in its directory,
        with its environment and its generation's marker.  It is killed if
        C{backend} drains or stops first (it exited, or rainbowd is
        stopping).
        """
        config = backend.config
        env = dict(os.environ)
        env["PWD"] = config.cwd
        env.update(config.env)
        run = VerifyRun(
            self._reactor,
            self._signals,
            config.verify,
            backend.generation,
            backend.port,
            config.cwd,
            env,
            config.verifyTimeout,
            onLine,
            {**backend.marker(), VERIFY_VARIABLE: "1"},
        )
        run.start()
        backend.whenDraining().addCallback(
            lambda _: run.stop(
                f"was killed: generation {backend.generation} "
                + (backend.exitReason or "was stopped")
            )
        )
        return run
