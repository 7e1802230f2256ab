# -*- test-case-name: rainbowd.test.unit.test_backend -*-
"""
One app process: its launch, output, health check and lifecycle.

A backend's life is a small state machine::

    starting --> ready --> active --> draining --> stopping --> stopped
        |          |          |  ^        |   ^           ^
        |          |          |  |        v   |           |
        |          |          |  +--- standby +-----------+
        |          |          |                           |
        +----------+----------+--- (stop or exit) --------+--> failed

It is I{failed} when it never became ready (it exited, or it was not healthy
within C{startTimeout}), and I{stopped} otherwise.  Either way it is only
over when every process of it is gone.

A backend drained to be kept (L{Backend.drain} with C{keep}) becomes a
I{standby} once drained instead of stopping: alive, idle, and ready to be
active again in one step (a rollback), until it is released or stopped.
"""

import os
import signal
from collections import deque
from enum import Enum
from typing import (
    Any,
    Callable,
    Collection,
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Set,
    cast,
)

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionRefusedError, ProcessDone
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rainbowd.app.health import (
    REPORT_EVERY,
    FailureStreak,
    LivenessProbe,
    describeProbeFailure,
)
from rainbowd.app.outputlines import LONGEST_LINE, OutputLines  # noqa: F401 (LONGEST_LINE: here too)
from rainbowd.config import Config
from rainbowd.interfaces import IProcessSignals, IRoutableBackend
from rainbowd.statedir import readFile
from rainbowd.waiters import Waiters

#: How many of the app's last output lines a backend keeps, for reports.
OUTPUT_LINES = 50

#: How often to look whether a process group has emptied, in seconds.
REAP_INTERVAL = 0.1

#: The environment variable every app process gets, set to the state
#: directory: it marks the processes of rainbowd's apps, so that a later
#: rainbowd on the same state directory knows them for its own.
APP_VARIABLE = "RAINBOWD_STATE_DIR"

#: The environment variable every app process gets, set to its generation's
#: number: with L{APP_VARIABLE}, it marks the processes of one generation,
#: so that those that left its process group (with C{setsid}, say) are
#: found and stopped with it.
GENERATION_VARIABLE = "RAINBOWD_GENERATION"

#: How many times the whole process table is read for a stopping
#: generation's processes outside its group: when the group is empty, then
#: again each time those found are gone, in case they started others.
STRAY_LOOKS = 3

#: How long the app's output may stay open once its process group is gone,
#: in seconds; a process that left the group could hold it open forever.
OUTPUT_GRACE = 1.0


class State(Enum):
    STARTING = "starting"
    READY = "ready"
    ACTIVE = "active"
    DRAINING = "draining"
    STANDBY = "standby"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


_TRANSITIONS = {
    State.STARTING: {State.READY, State.STOPPING},
    State.READY: {State.ACTIVE, State.DRAINING, State.STOPPING},
    State.ACTIVE: {State.DRAINING, State.STOPPING},
    State.DRAINING: {State.STOPPING, State.STANDBY, State.ACTIVE},
    State.STANDBY: {State.ACTIVE, State.STOPPING},
    State.STOPPING: {State.STOPPED, State.FAILED},
    State.STOPPED: set(),
    State.FAILED: set(),
}

#: The states in which a backend has processes that may be alive.
ALIVE = frozenset(
    {
        State.STARTING,
        State.READY,
        State.ACTIVE,
        State.DRAINING,
        State.STANDBY,
        State.STOPPING,
    }
)


class ResponseTally:
    """
    How a generation has answered since it became active: counted by the
    proxy, an integer increment per response, and read by the deployer to
    roll back a version that answers mostly 5xx.

    @ivar responses: responses to requests sent to it, including the 502s
        and 504s rainbowd gave for it.
    @ivar errors: how many of those were 5xx.
    """

    __slots__ = ("responses", "errors")

    def __init__(self) -> None:
        self.responses = 0
        self.errors = 0


class InvalidTransition(Exception):
    """
    A backend was asked to do something its state does not allow.
    """


@attrs.frozen(auto_exc=True)
class BackendFailed(Exception):
    """
    A backend never became ready.

    @ivar reason: a sentence saying why, such as the exit code.
    @ivar output: the app's last lines of output.
    """

    reason: str
    generation: int
    port: int
    output: tuple

    def __str__(self) -> str:
        return self.reason


class AppStopped(Exception):
    """
    The app's process is stopped, so it answers nothing until it gets
    SIGCONT.
    """


#: What a process's end is called when it is the signal rainbowd sent it.
_STOPPED_BY = {
    signal.SIGTERM: "stopped by SIGTERM",
    signal.SIGKILL: "killed with SIGKILL after killTimeout{timeout}",
}


def describeExit(
    reason, sent: Collection[int] = (), killTimeout: Optional[float] = None
) -> str:
    """
    Say how a process ended, from C{processEnded}'s failure.

    @param sent: the signals rainbowd sent the process.  An end by one of
        them (or the exit code 128 + its number, which a shell between
        rainbowd and the app exits with) is the stop rainbowd asked for,
        not a failure; the same end without the signal sent is one.
    @param killTimeout: the C{killTimeout} after which SIGKILL was sent.
    """
    if reason.check(ProcessDone):
        return "exited with code 0"
    status = reason.value
    for signum, words in _STOPPED_BY.items():
        if signum in sent and signum in (status.signal, _byShell(status.exitCode)):
            timeout = "" if killTimeout is None else f" ({killTimeout:g} s)"
            return words.format(timeout=timeout)
    if status.signal is not None:
        try:
            name = f" ({signal.Signals(status.signal).name})"
        except ValueError:  # real-time signals have no name
            name = ""
        return f"was killed by signal {status.signal}{name}"
    return f"exited with code {status.exitCode}"


def _byShell(exitCode: Optional[int]) -> Optional[int]:
    """
    The signal a shell's exit code says its child died of, if any.
    """
    if exitCode is not None and 128 < exitCode < 128 + signal.NSIG:
        return exitCode - 128
    return None


@implementer(IRoutableBackend)
class Backend(ProcessProtocol):
    """
    One generation of the app, run with C{/bin/sh -c run} and proxied to on
    C{port}.

    @ivar inflight: how many proxied requests it is serving.
    @ivar tunnels: the upgraded connections (WebSockets and the like) to it
        that are open; it is drained once they, too, are closed.
    @ivar output: its last lines of output.
    @ivar exitReason: how its process ended, once it has.
    @ivar pgid: the process group of the app, which is the pid of the
        process spawned.
    @ivar liveness: the L{LivenessProbe} watching it (see L{watch}), or
        L{None}.
    @ivar kept: whether it is to become a standby once drained (see
        L{drain}), or is one.
    @ivar tally: its L{ResponseTally}.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        generation: int,
        port: int,
        reactor,
        healthCheck: Callable,
        signals: IProcessSignals,
        onExit: Callable[["Backend"], None] = lambda backend: None,
    ) -> None:
        """
        @param healthCheck: called with C{(port, path, timeout)}, returns a
            Deferred that fires if the backend is healthy.
        @param onExit: called when the process exits while it is serving or
            ready to, that is when it crashed.
        """
        self.config = config
        self.generation = generation
        self.port = port
        self.pidfile = os.path.join(config.stateDir, f"generation-{generation}.pid")
        self.state = State.STARTING
        self.inflight = 0
        self.tunnels: Set[Any] = set()
        self.output: Deque[str] = deque(maxlen=OUTPUT_LINES)
        self.exitReason: Optional[str] = None
        self.pgid: Optional[int] = None
        self.liveness: Optional[LivenessProbe] = None
        self.kept = False
        self.tally = ResponseTally()
        self._reactor = reactor
        self._healthCheck = healthCheck
        self._signals = signals
        self._onExit = onExit
        self._failure: Optional[str] = None
        self._strays: Optional[List[int]] = None
        self._sent: Set[int] = set()
        self._strayLooks = 0
        self._lastProbe = "no health check answered yet"
        self._probeRefused = False
        self._streak = FailureStreak()
        self._unhealthyObservers: List[Callable[..., None]] = []
        self._probing: Optional[Deferred] = None
        self._outputLines = OutputLines()
        self._outputObservers: List[Callable[[str], None]] = []
        self._outputClosed = False
        self._calls: Dict[str, IDelayedCall] = {}
        self._ready = Waiters()
        self._stopped = Waiters()
        self._draining = Waiters()
        self._standby = Waiters()

    def __repr__(self) -> str:
        return f"<Backend generation {self.generation} port {self.port} {self.state.value}>"

    # Lifecycle

    def launch(self) -> None:
        """
        Start the app in a session of its own, with C{$1} the port and C{$2}
        an absolute pidfile path, in C{cwd} (with C{$PWD} saying so), and
        start checking its health.

        @raise OSError: if C{cwd} is gone (a release directory removed).
        """
        self._removePidfile()
        args = [
            "setsid",  # from util-linux: the app gets a process group of its own
            "/bin/sh",
            "-c",
            self.config.run,
            "rainbowd-app",
            str(self.port),
            self.pidfile,
        ]
        if not os.path.isdir(self.config.cwd):
            raise OSError(
                f"its directory {self.config.cwd} (\"cwd\") is gone; a "
                "release directory in use must be kept until a redeploy "
                "replaces it: redeploy"
            )
        env = dict(os.environ)
        env["PWD"] = self.config.cwd
        env.update(self.config.env)
        env.update(self.marker())
        self.log.info(
            "generation {generation}: launching on port {port}: {run}",
            generation=self.generation,
            port=self.port,
            run=self.config.run,
        )
        process = self._reactor.spawnProcess(
            self, args[0], args, env=env, path=self.config.cwd
        )
        self.pgid = process.pid
        self._later("start", self.config.startTimeout, self._startTimedOut)
        if self.config.warmupTime is not None:
            self._later("warmup", self.config.warmupTime, self._becameHealthy)
        else:
            self._probe()

    def adopt(
        self, pid: int, pgid: int, pipes: Mapping[int, int], state: State, output=()
    ) -> None:
        """
        Take over this generation's running app from the rainbowd upgraded
        from, instead of launching it: C{pid} is the process that rainbowd
        spawned, C{pipes} the read ends of its output (child fd -> fd), and
        C{state} C{ACTIVE} or C{STANDBY}.
        """
        from rainbowd.app.adopted import AdoptedProcess

        self.pgid = pgid
        self.adopted = True
        self.output.extend(output)
        if state is State.STANDBY:
            self.kept = True
        self.state = state
        # An AdoptedProcess has the part of a process transport that a
        # Backend uses (loseConnection, signalProcess, pid), not writes to
        # a stdin it does not have.
        self.transport = cast(
            IProcessTransport, AdoptedProcess(self._reactor, self, pid, dict(pipes))
        )
        self.log.info(
            "generation {generation}: taken over ({state}, pid {pid}, port {port})",
            generation=self.generation,
            state=state.value,
            pid=pid,
            port=self.port,
        )

    def handOver(self) -> Dict[int, int]:
        """
        This generation now belongs to the rainbowd upgraded to: stop
        reading its output, checking it and timing it, without a signal to
        it.

        @return: its open output pipes, child fd -> fd, to hand over.
        """
        pipes = {}
        for childFD, reader in getattr(self.transport, "pipes", {}).items():
            if childFD in (1, 2) and reader is not None:
                pipes[childFD] = reader.fileno()
        return pipes

    def abandon(self) -> None:
        """
        Forget this generation, which another rainbowd now supervises: no
        more output read, no check, no timer, and its end is no crash here.
        """
        for reader in list(getattr(self.transport, "pipes", {}).values()):
            if reader is not None:
                reader.stopReading()
        for name in list(self._calls):
            self._cancel(name)
        if self.liveness is not None:
            self.liveness.stop()
        self._onExit = lambda backend: None
        self.abandoned = True

    abandoned = False
    #: Whether it was taken over in an upgrade (see L{adopt}).
    adopted = False

    def activate(self) -> None:
        """
        Traffic now goes to this backend: a ready one, or one kept (a
        standby, or one draining to become one), for a rollback.
        """
        if self.state in (State.DRAINING, State.STANDBY) and not self.kept:
            raise InvalidTransition(
                f"generation {self.generation} cannot be active again: it is "
                f"{self.state.value}, and not kept as a standby"
            )
        if self.kept and self.liveness is not None:
            self.liveness.stop()
        self._moveTo(State.ACTIVE)
        self.kept = False

    def watch(self, probe: LivenessProbe) -> None:
        """
        Start C{probe}, which checks this backend (usually with
        L{checkLiveness}), and run it until this backend drains or stops;
        L{describe} shows it meanwhile, and after.
        """
        if self.state not in (State.READY, State.ACTIVE, State.STANDBY):
            raise InvalidTransition(
                f"generation {self.generation} cannot be watched while "
                f"{self.state.value}"
            )
        if self.liveness is not None:
            self.liveness.stop()
        self.liveness = probe
        probe.start()

    def checkLiveness(self) -> Deferred:
        """
        Check that the app is alive: it fails at once if the app's process
        is stopped (C{kill -STOP}, a debugger), and otherwise if
        C{healthCheckPath} does not answer 2xx within C{healthCheckTimeout}.
        An app started with C{warmupTime} has no health check, so only the
        state of its process is looked at.
        """
        pid = self.appPid()
        if pid is not None and self._signals.isStopped(pid):
            return fail(
                AppStopped(
                    f"its process {pid} is stopped (SIGSTOP, or a debugger), "
                    "so it answers nothing until SIGCONT"
                )
            )
        if self.config.healthCheckPath is None:
            return succeed(None)
        return maybeDeferred(
            self._healthCheck,
            self.port,
            self.config.healthCheckPath,
            self.config.healthCheckTimeout,
        )

    def drain(self, keep: bool = False) -> Deferred:
        """
        Take no new requests; stop once the ones in flight are done, or
        when C{drainTimeout} has passed -- or, if C{keep}, become a standby
        then instead (see L{whenStandby}).
        """
        self._moveTo(State.DRAINING)
        self.kept = keep
        if self.inflight == 0 and not self.tunnels:
            self._drained()
        else:
            self._later("drain", self.config.drainTimeout, self._drainTimedOut)
        return self.whenStopped()

    def release(self) -> Deferred:
        """
        No longer keep this backend: a standby is stopped, one still
        draining stops once drained, as after a plain L{drain}.

        @return: L{whenStopped}.
        """
        self.kept = False
        if self.state is State.STANDBY:
            return self.stop()
        self._stopIfDrained()
        return self.whenStopped()

    def stop(self) -> Deferred:
        """
        SIGTERM the app, then SIGKILL its whole process group if it is still
        alive C{killTimeout} later.

        @return: L{whenStopped}.
        """
        if self.state not in ALIVE - {State.STOPPING}:
            return self.whenStopped()
        if self.state is State.STARTING:
            self._failure = self._failure or "stopped before it became healthy"
        self._moveTo(State.STOPPING)
        target = self.appPid()
        self._sent.add(signal.SIGTERM)
        if target is not None and target != self.pgid:
            self._signals.signalProcess(target, signal.SIGTERM)
        else:
            self._signals.signalGroup(self._group(), signal.SIGTERM)
        self._later("kill", self.config.killTimeout, self._killTimedOut)
        return self.whenStopped()

    # Observers

    def whenReady(self) -> Deferred:
        """
        A Deferred that fires with this backend when it is ready for
        traffic, or fails with L{BackendFailed} if it never will be.
        """
        if self.state is State.FAILED:
            return fail(self._failed())
        if self.state is State.STARTING or self._failure is not None:
            return self._ready.wait()
        return succeed(self)

    def whenDraining(self) -> Deferred:
        """
        A Deferred that fires with this backend when it takes no new
        requests: when it starts draining or stopping.
        """
        if self.state in (State.STARTING, State.READY, State.ACTIVE):
            return self._draining.wait()
        return succeed(self)

    def whenStandby(self) -> Deferred:
        """
        A Deferred that fires with this backend when it becomes a standby
        (see L{drain}); it never fires for one that stops instead.
        """
        if self.state is State.STANDBY:
            return succeed(self)
        return self._standby.wait()

    def whenStopped(self) -> Deferred:
        """
        A Deferred that fires with this backend when all its processes are
        gone.
        """
        if self.state in ALIVE:
            return self._stopped.wait()
        return succeed(self)

    def observeOutput(self, observer: Callable[[str], None]) -> Callable[[], None]:
        """
        Call C{observer} with each line the app prints from now on.

        @return: a function that stops it.
        """
        self._outputObservers.append(observer)
        return lambda: self._outputObservers.remove(observer)

    def observeUnhealthy(self, observer: Callable[..., None]) -> Callable[[], None]:
        """
        Call C{observer(error=..., checks=...)} while this backend starts,
        once its health check has failed the same way L{REPORT_EVERY} times
        in a row, and then at most once a second while it goes on failing
        so: C{checks} times so far, the latest saying C{error}.  The wait
        goes on, up to C{startTimeout}: the app may still come up.

        @return: a function that stops it.
        """
        self._unhealthyObservers.append(observer)
        return lambda: self._unhealthyObservers.remove(observer)

    # Requests

    def requestStarted(self) -> None:
        self.inflight += 1

    def requestFinished(self) -> None:
        self.inflight -= 1
        self._stopIfDrained()

    def tunnelOpened(self, tunnel) -> None:
        """
        A request to this backend was upgraded: C{tunnel} now joins a client
        to it, and has a C{close()} method.
        """
        self.tunnels.add(tunnel)

    def tunnelClosed(self, tunnel) -> None:
        self.tunnels.discard(tunnel)
        self._stopIfDrained()

    def _stopIfDrained(self) -> None:
        if self.state is State.DRAINING and self.inflight == 0 and not self.tunnels:
            self._drained()

    def _drained(self) -> None:
        """
        Nothing is in flight any more, or C{drainTimeout} has passed: stop,
        or become a standby if kept.
        """
        if not self.kept:
            self.stop()
            return
        self._moveTo(State.STANDBY)
        self.log.info(
            "generation {generation} is drained, and kept as the standby",
            generation=self.generation,
        )
        self._standby.fire(self)

    # Reporting

    def marker(self) -> Mapping[str, str]:
        """
        The environment variables that mark this generation's processes.
        """
        return {
            APP_VARIABLE: self.config.stateDir,
            GENERATION_VARIABLE: str(self.generation),
        }

    def appPid(self) -> Optional[int]:
        """
        The app's pid: the one in the pidfile once it is there and names a
        process of this backend, otherwise the spawned process.
        """
        try:
            pid = int(readFile(self.pidfile, 64).strip())
        except (OSError, ValueError):
            return self.pgid
        if self._signals.groupOf(pid) == self.pgid:
            return pid
        return self.pgid

    def describe(self) -> dict:
        """
        This backend as a JSON-able dict, for C{/status}.
        """
        return {
            "generation": self.generation,
            "port": self.port,
            "pid": self.appPid() if self.state in ALIVE else None,
            "state": self.state.value,
            "inflight": self.inflight,
            "upgraded": len(self.tunnels),
            "directory": self.config.cwd,
            "liveness": None if self.liveness is None else self.liveness.describe(),
            **self._adoptedStatus(),
        }

    def _adoptedStatus(self) -> dict:
        """
        For a generation taken over in an upgrade: that its exit status
        cannot be known.
        """
        if not self.adopted:
            return {}
        from rainbowd.app.adopted import UNKNOWN_EXIT

        return {"adopted": True, "exitStatus": UNKNOWN_EXIT}

    # ProcessProtocol

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in self._outputLines.received(childFD, data):
            self._outputLine(childFD, line)

    def processExited(self, reason) -> None:
        # Not processEnded: Twisted only calls that once every process
        # holding the app's output has closed it, which a leftover child
        # may never do.
        if self.abandoned:
            return
        if getattr(reason.value, "unknown", False):
            from rainbowd.app.adopted import UNKNOWN_EXIT

            self.exitReason = UNKNOWN_EXIT
        else:
            self.exitReason = describeExit(reason, self._sent, self.config.killTimeout)
        if self.state is State.STARTING:
            self._failure = f"{self.exitReason} before it became healthy"
            self._moveTo(State.STOPPING)
        elif self.state is not State.STOPPING:
            self.log.warn(
                "generation {generation} {exit} unexpectedly",
                generation=self.generation,
                exit=self.exitReason,
            )
            self._moveTo(State.STOPPING)
            self._onExit(self)
        self._reap()

    def processEnded(self, reason) -> None:
        if self.abandoned:
            return
        for childFD, rest in self._outputLines.unended():
            self._outputLine(childFD, rest)
        self._outputClosed = True
        self._reap()

    # Internals

    def _moveTo(self, state: State) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise InvalidTransition(
                f"generation {self.generation} cannot go from "
                f"{self.state.value} to {state.value}"
            )
        self.state = state
        if state in (State.DRAINING, State.STOPPING):
            self._draining.fire(self)
        for name in {
            State.READY: ("start", "warmup", "probe"),
            State.ACTIVE: ("drain",),
            State.STANDBY: ("drain",),
            State.STOPPING: ("start", "warmup", "probe", "drain"),
        }.get(state, ()):
            self._cancel(name)
        if state is State.STOPPING and self._probing is not None:
            self._probing.cancel()
        if (
            state in (State.DRAINING, State.STANDBY, State.STOPPING)
            and self.liveness is not None
        ):
            self.liveness.stop()

    def _group(self) -> int:
        """
        The app's process group; only asked for once it was launched or
        adopted, which is when it is set.
        """
        assert self.pgid is not None, "a backend not launched has no process group"
        return self.pgid

    def _later(self, name: str, seconds: float, f: Callable[[], None]) -> None:
        self._calls[name] = self._reactor.callLater(seconds, f)

    def _cancel(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _removePidfile(self) -> None:
        try:
            os.remove(self.pidfile)
        except FileNotFoundError:
            pass
        except OSError as e:
            # The app made a directory of it, say: the generation must still
            # stop, and the pid is then the group's (see appPid).
            self.log.warn(
                "cannot remove the pidfile {path} of generation {generation}: "
                "{error}; rainbowd reads only the pid the app writes in that "
                "file ($2), not in a directory; remove it (rm -r {path})",
                path=self.pidfile,
                generation=self.generation,
                error=e.strerror or e,
            )

    def _outputLine(self, childFD: int, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        self.output.append(text)
        self.log.info(
            "[generation {generation}] {line}",
            generation=self.generation,
            line=text,
            stream="stdout" if childFD == 1 else "stderr",
        )
        for observer in list(self._outputObservers):
            observer(text)

    def _probe(self) -> None:
        self._probing = maybeDeferred(
            self._healthCheck,
            self.port,
            self.config.healthCheckPath,
            self.config.healthCheckTimeout,
        )
        self._probing.addCallbacks(self._probeSucceeded, self._probeFailed)

    def _probeSucceeded(self, result) -> None:
        self._probing = None
        if self.state is State.STARTING:
            self._becameHealthy()

    def _probeFailed(self, reason) -> None:
        self._probing = None
        self._lastProbe = describeProbeFailure(reason, self.config.healthCheckPath)
        self._probeRefused = reason.check(ConnectionRefusedError) is not None
        if self.state is not State.STARTING:
            return
        self._later("probe", self.config.healthCheckInterval, self._probe)
        if self._streak.failed(self._lastProbe, self._reactor.seconds()):
            self._unhealthy()

    def _unhealthy(self) -> None:
        error, checks = self._streak.error, self._streak.count
        if checks == REPORT_EVERY:  # the first report of this streak
            self.log.info(
                "generation {generation}: {error} ({checks} times in a row); "
                "still waiting for it to be healthy, up to startTimeout "
                "({timeout:g} s)",
                generation=self.generation,
                error=error,
                checks=checks,
                timeout=self.config.startTimeout,
            )
        for observer in list(self._unhealthyObservers):
            try:
                observer(error=error, checks=checks)
            except Exception:
                self.log.failure(
                    "an observer of generation {generation}'s health checks failed",
                    generation=self.generation,
                )

    def _becameHealthy(self) -> None:
        self._moveTo(State.READY)
        self.log.info(
            "generation {generation} is healthy on port {port}",
            generation=self.generation,
            port=self.port,
        )
        self._ready.fire(self)

    def _startTimedOut(self) -> None:
        self._failure = (
            f"not healthy within startTimeout ({self.config.startTimeout:g} s); "
            f"last health check: {self._lastProbe}"
        )
        if self._probeRefused:
            self._failure += (
                f"; nothing listens on 127.0.0.1:{self.port}: does \"run\" "
                f"make the app listen on port $1?"
            )
        self.log.warn(
            "generation {generation} {failure}; stopping it",
            generation=self.generation,
            failure=self._failure,
        )
        self.stop()

    def _drainTimedOut(self) -> None:
        self.log.warn(
            "generation {generation} still has {inflight} requests in flight "
            "and {tunnels} upgraded connections open after drainTimeout "
            "({timeout:g} s); closing them and {next}",
            generation=self.generation,
            inflight=self.inflight,
            tunnels=len(self.tunnels),
            timeout=self.config.drainTimeout,
            next="keeping it as the standby" if self.kept else "stopping it",
        )
        for tunnel in list(self.tunnels):
            tunnel.close()
        if self.state is State.DRAINING:
            self._drained()

    def _killTimedOut(self) -> None:
        self.log.warn(
            "generation {generation} did not stop within killTimeout "
            "({timeout:g} s) of SIGTERM; sending SIGKILL",
            generation=self.generation,
            timeout=self.config.killTimeout,
        )
        self._sent.add(signal.SIGKILL)
        self._signals.signalGroup(self._group(), signal.SIGKILL)
        for pid in self._strays or ():
            self._signals.signalMarked(pid, self.marker(), signal.SIGKILL)

    def _findStrays(self) -> None:
        """
        The process group is empty: look for processes of this generation
        that left it (C{setsid}), and SIGTERM them.
        """
        self._strayLooks += 1
        self._strays = self._signals.marked(self.marker())
        if not self._strays:
            return
        self.log.warn(
            "generation {generation} left processes outside its process group "
            "(pids {pids}); stopping them",
            generation=self.generation,
            pids=", ".join(map(str, self._strays)),
        )
        for pid in self._strays:
            self._signals.signalMarked(pid, self.marker(), signal.SIGTERM)
        if "kill" not in self._calls or not self._calls["kill"].active():
            self._later("kill", self.config.killTimeout, self._killTimedOut)

    def _reap(self) -> None:
        """
        The spawned process has exited: wait until nothing is left in its
        process group, signalling what is, and until its output is closed,
        then report the end.
        """
        firstLook = "reap" not in self._calls
        self._cancel("reap")
        if self._signals.groupAlive(self._group()):
            if firstLook:
                self._signals.signalGroup(self._group(), signal.SIGTERM)
                if "kill" not in self._calls:
                    self._later("kill", self.config.killTimeout, self._killTimedOut)
            self._later("reap", REAP_INTERVAL, self._reap)
            return
        if self._strays is None:
            self._findStrays()
        while self._strays:
            # Only these pids are looked at again, not the whole system.
            marker = self.marker()
            self._strays = [
                pid for pid in self._strays if self._signals.isMarked(pid, marker)
            ]
            if self._strays:
                self._later("reap", REAP_INTERVAL, self._reap)
                return
            if self._strayLooks >= STRAY_LOOKS:
                break
            # Gone; but they may have started others meanwhile.
            self._findStrays()
        self._cancel("kill")
        if not self._outputClosed:
            if "output" not in self._calls:
                # Set by the spawn (or adopt) that started it, and kept.
                assert self.transport is not None
                self._later("output", OUTPUT_GRACE, self.transport.loseConnection)
            return
        self._cancel("output")
        self._removePidfile()
        if self._failure is not None:
            self._moveTo(State.FAILED)
            self._ready.fire(Failure(self._failed()))
        else:
            self._moveTo(State.STOPPED)
        self.log.info(
            "generation {generation} is {state} ({exit})",
            generation=self.generation,
            state=self.state.value,
            exit=self.exitReason,
        )
        self._stopped.fire(self)

    def _failed(self) -> BackendFailed:
        return BackendFailed(
            reason=f"generation {self.generation} on port {self.port} {self._failure}",
            generation=self.generation,
            port=self.port,
            output=tuple(self.output),
        )
