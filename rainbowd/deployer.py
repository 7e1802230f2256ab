# -*- test-case-name: rainbowd.test.test_deployer -*-
"""
The generations of the app: redeploy, swap, drain and supervision.
"""

from functools import partial
from typing import Any, Callable, List, Mapping, Optional, Sequence

import attrs
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    fail,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rainbowd.backend import (
    ALIVE,
    AppStopped,
    Backend,
    BackendFailed,
    ProcessGroupSignals,
    State,
)
from rainbowd.config import Config, ConfigError
from rainbowd.health import REPORT_EVERY, LivenessProbe
from rainbowd.leftovers import AppGroups
from rainbowd.ports import NoFreePort, PortPicker
from rainbowd.shutdown import reportShutdown
from rainbowd.verify import Verifier, VerifyFailed, VerifyRun
from rainbowd.waiters import Waiters


@attrs.frozen
class Event:
    """
    One step of a deploy or of a backend's life, for whoever observes the
    deployer: progress reports, metrics, timelines.

    @ivar kind: what happened, one of L{EVENT_KINDS}.
    @ivar time: when, in the clock's seconds.
    @ivar generation: the generation it happened to, if any.
    @ivar details: the rest, JSON-able, by kind (see L{EVENT_KINDS}).
    """

    kind: str
    time: float
    generation: Optional[int] = None
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def asJSON(self) -> dict:
        return {
            "event": self.kind,
            "time": self.time,
            "generation": self.generation,
            **self.details,
        }


#: The kinds of L{Event}, with the details each one carries.
EVENT_KINDS = {
    "deploying": "a deploy began: deploy (its number), cause (startup, "
    "redeploy or restart), requester (who asked: the control client's "
    "address, SIGHUP, or null for rainbowd itself), message (the one the "
    "redeploy was asked with, or null)",
    "launching": "a generation was started: deploy, port",
    "unhealthy": "a starting generation's health check failed the same way "
    f"{REPORT_EVERY} times in a row, or goes on failing so (at most once a "
    "second); it is waited for on, up to startTimeout: deploy, port, error "
    "(of the latest check), checks (how many in a row)",
    "shutdown": "rainbowd is stopping: it drains and stops every generation, "
    "and refuses deploys: generations (those it waits for)",
    "retrying": "a generation lost its port and another is tried: deploy, port",
    "healthy": "a generation passed its health check: deploy, port, seconds "
    "(since its launch)",
    "verifying": "a healthy generation's verify command started: deploy, "
    "port, command, timeout (seconds)",
    "verifyOutput": "a line the verify command printed (only its first "
    "lines are events; all are logged): deploy, line, stream",
    "verified": "a generation's verify command exited 0: deploy, seconds",
    "switched": "traffic moved to a generation: deploy, previous (generation "
    "or null)",
    "draining": "a generation no longer gets new requests: inflight",
    "stopped": "every process of a generation is gone: state (stopped or "
    "failed), exit (how its process ended)",
    "crashed": "the active generation exited by itself: exit",
    "unresponsive": "the active generation failed livenessFailures liveness "
    "checks in a row, and a replacement is due: port, pid, failures, error "
    "(of the last check), stopped (whether its process is stopped, so that "
    "new requests wait for the replacement; otherwise it serves on until "
    "that is healthy)",
    "recovered": "the active generation passed a liveness check again after "
    "it was unresponsive (and gets new requests again if it was stopped): "
    "port, pid",
    "restarting": "a replacement deploy is due: delay (seconds)",
    "deployed": "a deploy is done: deploy, and the outcome's JSON",
    "failed": "a deploy failed: deploy, and the outcome's JSON",
    "refused": "a deploy was refused: deploy, and the outcome's JSON",
}


@attrs.frozen
class Deployed:
    """
    The outcome of a redeploy that succeeded: generation C{generation} is
    serving on C{port}.
    """

    generation: int
    port: int
    pid: Optional[int]
    seconds: float

    def asJSON(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen(auto_exc=True)
class DeployFailed(Exception):
    """
    A redeploy's new generation did not become healthy; the old one serves
    on.
    """

    reason: str
    generation: Optional[int] = None
    port: Optional[int] = None
    output: Sequence[str] = ()
    verify: Optional[Mapping[str, Any]] = None

    def __str__(self) -> str:
        return self.reason

    def asJSON(self) -> dict:
        body = {
            "error": self.reason,
            "generation": self.generation,
            "port": self.port,
            "output": list(self.output),
        }
        if self.verify is not None:
            body["verify"] = dict(self.verify)
        return body


@attrs.frozen(auto_exc=True)
class DeployRefused(Exception):
    """
    A redeploy was not attempted, for example because C{maxBackends}
    processes are still alive.
    """

    reason: str

    def __str__(self) -> str:
        return self.reason

    def asJSON(self) -> dict:
        return {"error": self.reason}


#: How many ports a deploy tries when the app loses its port to another
#: process between the choice and the bind.
PORT_ATTEMPTS = 3

#: The config keys that are only read when rainbowd starts.
STARTUP_KEYS = (
    "port",
    "controlPort",
    "stateDir",
    "lbHealthPath",
    "stopDelay",
    "queueTimeout",
    "backendConnections",
    "backendMaxRequests",
    "backendTimeout",
    "backendBodyTimeout",
    "controlTokenFile",
    "controlAllowedOrigins",
    "controlAllowedHosts",
    "accessLog",
    "accessLogFormat",
)

#: A backend that served this long before crashing resets the restart
#: backoff, in seconds.
BACKOFF_RESET = 60.0


def _lostItsPort(backend: Backend, isFree: Callable[[int], bool]) -> bool:
    """
    Did C{backend} fail because another process took its port?
    """
    return not isFree(backend.port) or any(
        "address already in use" in line.lower() for line in backend.output
    )


def _unresponsive(backend: Backend) -> bool:
    """
    Has C{backend} failed its liveness checks, with none passed since?
    """
    return backend.liveness is not None and backend.liveness.failing


def _foundStopped(probe: LivenessProbe) -> bool:
    """
    Has C{probe} failed its checks, the latest because the app's process is
    stopped: exact evidence that it answers nothing, unlike a slow answer?
    """
    return probe.failing and isinstance(probe.lastReason, AppStopped)


def _outputBlock(lines) -> str:
    return "".join(f"\n    {line}" for line in lines)


def describeOutcome(outcome) -> dict:
    """
    A redeploy's outcome -- L{Deployed} or a L{Failure} -- as a JSON-able
    dict, for the control API and C{/status}.
    """
    if not isinstance(outcome, Failure):
        return {"ok": True, **outcome.asJSON()}
    error = outcome.value
    if isinstance(error, (DeployFailed, DeployRefused)):
        return {"ok": False, **error.asJSON()}
    if isinstance(error, ConfigError):
        return {"ok": False, "error": str(error)}
    return {"ok": False, "error": "internal error in rainbowd; see its log"}


def _outcomeKind(outcome) -> str:
    if not isinstance(outcome, Failure):
        return "deployed"
    return "refused" if outcome.check(DeployRefused) else "failed"


def _logFailure(failure: Failure) -> None:
    if failure.check(DeployFailed, DeployRefused, ConfigError):
        Deployer.log.error(
            "deploy failed: {reason}{output}",
            reason=str(failure.value),
            output=_outputBlock(getattr(failure.value, "output", ())),
            generation=getattr(failure.value, "generation", None),
        )
    else:
        Deployer.log.failure("deploy failed unexpectedly", failure)


class Deployer(Service):
    """
    Runs the generations of the app: the first one at startup, a new one on
    each redeploy, a replacement when the active one crashes or stops
    answering its liveness checks.

    @ivar config: the last configuration that deployed, which replacements
        use.
    @ivar active: the backend that serves: the last one swapped in, until it
        is replaced or exits; L{None} while there is none.
    @ivar routable: the backend new requests go to: C{active}, except while
        its process is found stopped (C{kill -STOP}, a debugger), when it is
        L{None} and requests wait (L{whenRoutable}) for it to pass a check
        again or for its replacement; and L{None} once rainbowd stops.
    @ivar backends: the backends whose processes may be alive, oldest first.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        loadConfig: Callable[[], Config],
        newBackend: Callable[..., Backend],
        clock: IReactorTime,
        ports: PortPicker,
        backoff: Callable[[int], float] = backoffPolicy(
            initialDelay=0.1, maxDelay=30.0, factor=2.0, jitter=lambda: 0
        ),
        groups: Optional[AppGroups] = None,
        deploys: int = 0,
        verifier: Optional[Verifier] = None,
    ) -> None:
        """
        @param loadConfig: reads the configuration again, for a redeploy.
        @param newBackend: makes a L{Backend} from C{config}, C{generation},
            C{port} and C{onExit}, not yet launched.
        @param backoff: the delay before the C{n}th restart in a row.
        @param groups: where each generation's process group is recorded,
            and where the ones an earlier rainbowd left are found and
            stopped before the first launch; L{None} to keep no record.
        @param verifier: runs a config's C{verify} command; by default, as a
            process of C{clock}, which is then the reactor.
        """
        self.config = config
        self.active: Optional[Backend] = None
        self.routable: Optional[Backend] = None
        self.backends: List[Backend] = []
        self._loadConfig = loadConfig
        self._newBackend = newBackend
        self._clock = clock
        self._ports = ports
        self._backoff = backoff
        self._generation = 0
        self._deploying = False
        self._queued = Waiters()
        self._routing = Waiters()
        self._replacementFailed: Optional[dict] = None
        self._restartCall = None
        self._restarts = 0
        self._activeSince = 0.0
        self._lastDeploy: Optional[dict] = None
        self._deploys = deploys
        self._asked: tuple = (None, None)
        self._observers: List[Callable[[Event], None]] = []
        self._groups = groups
        self._cleanup: Optional[Deferred] = None
        self._verifier = verifier
        self._verifyRun: Optional[VerifyRun] = None

    # IService

    def startService(self) -> None:
        """
        Stop what an earlier rainbowd left running, then launch the first
        generation.  Redeploys asked for meanwhile wait, as they would for
        a deploy under way.
        """
        Service.startService(self)
        if self._groups is None:
            self._deploy("startup", lambda: self.config, Waiters())
            return
        self._deploying = True
        self._cleanup = self._groups.stopLeftovers(self.config.killTimeout)
        self._cleanup.addErrback(
            lambda f: self.log.failure("stopping leftover app processes failed", f)
        )
        self._cleanup.addCallback(lambda _: self._cleanedUp())

    def _cleanedUp(self) -> None:
        self._cleanup = None
        if self.running:
            self._deploy("startup", lambda: self.config, Waiters())
        else:
            self._deploying = False

    def stopService(self) -> Deferred:
        """
        Refuse redeploys, drain every backend and stop them.

        @return: a Deferred that fires when no app process is left.
        """
        Service.stopService(self)
        self._emit("shutdown", generations=[b.generation for b in self.backends])
        # A request reaching the proxy from now on is refused, never sent to
        # a generation told to stop.
        self.routable = None
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        self._queued.fire(Failure(DeployRefused("rainbowd is shutting down")))
        self._routing.fire(Failure(DeployRefused("rainbowd is shutting down")))
        stops = [] if self._cleanup is None else [self._cleanup]
        for backend in list(self.backends):
            if backend.state in (State.READY, State.ACTIVE):
                stops.append(backend.drain())
            elif backend.state is State.DRAINING:
                stops.append(backend.whenStopped())
            else:
                stops.append(backend.stop())
        report = reportShutdown(self._clock, lambda: self.backends)
        return gatherResults(stops).addCallback(lambda _: None).addBoth(report)

    # What the control API and the proxy use

    def redeploy(
        self, requester: Optional[str] = None, message: Optional[str] = None
    ) -> Deferred:
        """
        Deploy the code and configuration as they are now.  A redeploy asked
        for while one is under way waits for the next one, which every such
        request shares; that deploy's C{deploying} event names the last of
        them to ask.

        @param requester: who asks (the control client's address, or
            C{SIGHUP}), for the C{deploying} event.
        @param message: what the requester says of the deploy (a git sha,
            say), for the C{deploying} event.

        @return: a Deferred that fires with L{Deployed}, or fails with
            L{DeployFailed}, L{DeployRefused} or L{ConfigError}.
        """
        if not self.running:
            return fail(DeployRefused("rainbowd is shutting down"))
        d = self._queued.wait()
        self._asked = (requester, message)
        if not self._deploying:
            self._deployQueued()
        return d

    def whenRoutable(self) -> Deferred:
        """
        A Deferred that fires with the next backend to become C{routable}
        (a new one swapped in, or a stopped one that answers again), or
        fails with L{DeployRefused} once rainbowd is stopping.
        """
        if not self.running:
            return fail(DeployRefused("rainbowd is shutting down"))
        return self._routing.wait()

    def whyNotRoutable(self) -> Optional[str]:
        """
        Why no backend takes new requests, when the reason is the active
        one's stopped process: which generations, and what became of the
        replacement; L{None} otherwise.  For the 503 of a request that
        waited in vain.
        """
        backend = self.active
        if backend is None or self.routable is not None or not self.running:
            return None
        why = (
            f"generation {backend.generation}, the active one, is stopped "
            f"(kill -STOP, or a debugger: its process {backend.appPid()} runs "
            "nothing until SIGCONT), so new requests wait for its replacement"
        )
        failed = self._replacementFailed
        if failed is not None:
            replacement = failed.get("generation")
            why += "; the replacement{} failed: {}".format(
                "" if replacement is None else f", generation {replacement},",
                failed["error"],
            )
        starting = [b for b in self.backends if b.state is State.STARTING]
        if starting:
            why += f"; generation {starting[-1].generation} is starting"
        elif self._restartCall is not None and self._restartCall.active():
            delay = self._restartCall.getTime() - self._clock.seconds()
            why += f"; another replacement is tried in {delay:.1f} s"
        return why

    def status(self) -> dict:
        """
        The backends and the last deploy's outcome, JSON-able, for
        C{/status}.
        """
        return {
            "active": None if self.active is None else self.active.generation,
            "routable": None if self.routable is None else self.routable.generation,
            "deploying": self._deploying,
            "backends": [backend.describe() for backend in self.backends],
            "lastDeploy": self._lastDeploy,
            "verify": None if self._verifyRun is None else self._verifyRun.describe(),
        }

    def observe(self, observer: Callable[[Event], None]) -> Callable[[], None]:
        """
        Call C{observer} with every L{Event} from now on.

        @return: a function that stops it.
        """
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def _emit(self, kind: str, generation: Optional[int] = None, **details) -> None:
        event = Event(kind, self._clock.seconds(), generation, details)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("an observer of {kind} events failed", kind=kind)

    # Deploying

    def _deployQueued(self) -> None:
        waiters, self._queued = self._queued, Waiters()
        (requester, message), self._asked = self._asked, (None, None)
        self._deploy("redeploy", self._loadConfig, waiters, requester, message)

    def _deploy(
        self,
        cause: str,
        loadConfig: Callable[[], Config],
        waiters: Waiters,
        requester: Optional[str] = None,
        message: Optional[str] = None,
    ):
        self._deploying = True
        self._deploys += 1
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        started = self._clock.seconds()
        self._emit(
            "deploying",
            deploy=self._deploys,
            cause=cause,
            requester=requester,
            message=message,
        )
        d = maybeDeferred(loadConfig).addCallback(self._deployConfig, started)
        d.addBoth(self._deployed, waiters)

    @inlineCallbacks
    def _deployConfig(self, config: Config, started: float):
        config = self._keepStartupKeys(config)
        alive = [backend for backend in self.backends if backend.state in ALIVE]
        if len(alive) >= config.maxBackends:
            raise DeployRefused(
                f"{len(alive)} backends are still alive and maxBackends is "
                f"{config.maxBackends} ("
                + ", ".join(
                    f"generation {b.generation} {b.state.value}" for b in alive
                )
                + "); wait for the old ones to drain, or raise maxBackends"
            )
        for attempt in range(1, PORT_ATTEMPTS + 1):
            backend = self._launch(config, exclude={b.port for b in alive})
            launched = self._clock.seconds()
            try:
                yield backend.whenReady()
            except BackendFailed as e:
                if not self.running:
                    raise DeployRefused("rainbowd is shutting down")
                if attempt < PORT_ATTEMPTS and _lostItsPort(backend, self._ports.isFree):
                    self.log.warn(
                        "generation {generation} lost port {port} to another "
                        "process; trying another port",
                        generation=backend.generation,
                        port=backend.port,
                    )
                    self._emit(
                        "retrying",
                        backend.generation,
                        deploy=self._deploys,
                        port=backend.port,
                    )
                    continue
                raise DeployFailed(e.reason, e.generation, e.port, e.output)
            self._emit(
                "healthy",
                backend.generation,
                deploy=self._deploys,
                port=backend.port,
                seconds=round(self._clock.seconds() - launched, 3),
            )
            break
        if config.verify is not None:
            yield self._verify(backend)
        if not self.running:
            backend.stop()
            raise DeployRefused("rainbowd is shutting down")
        self.config = config
        self._swap(backend)
        return Deployed(
            generation=backend.generation,
            port=backend.port,
            pid=backend.appPid(),
            seconds=round(self._clock.seconds() - started, 3),
        )

    @inlineCallbacks
    def _verify(self, backend: Backend):
        """
        Run the healthy C{backend}'s C{verify} command against it; if it
        does not pass, stop C{backend} and fail the deploy (or refuse it, on
        the way down).
        """
        if self._verifier is None:
            self._verifier = Verifier(self._clock, ProcessGroupSignals())
        generation, deploy = backend.generation, self._deploys
        self._emit(
            "verifying",
            generation,
            deploy=deploy,
            port=backend.port,
            command=backend.config.verify,
            timeout=backend.config.verifyTimeout,
        )
        run = self._verifier.start(
            backend,
            lambda line, stream: self._emit(
                "verifyOutput", generation, deploy=deploy, line=line, stream=stream
            ),
        )
        self._verifyRun = run
        try:
            verified = yield run.result
        except VerifyFailed as e:
            backend.stop()
            if not self.running:
                raise DeployRefused(
                    "rainbowd is shutting down; the verify of generation "
                    f"{generation} was killed"
                )
            raise DeployFailed(
                e.describe(backend),
                generation,
                backend.port,
                tuple(backend.output),
                {"command": backend.config.verify, **e.asJSON()},
            )
        finally:
            self._verifyRun = None
        self._emit("verified", generation, deploy=deploy, seconds=verified.seconds)

    def _keepStartupKeys(self, config: Config) -> Config:
        """
        C{config} with the keys only read at startup as they were then.
        """
        changed = [
            key for key in STARTUP_KEYS if getattr(config, key) != getattr(self.config, key)
        ]
        if not changed:
            return config
        self.log.warn(
            "{keys} changed in the config; that takes a restart of rainbowd",
            keys=", ".join(changed),
        )
        return attrs.evolve(config, **{key: getattr(self.config, key) for key in changed})

    def _launch(self, config: Config, exclude) -> Backend:
        try:
            port = self._ports.pick(config.backendPorts, exclude)
        except NoFreePort as e:
            raise DeployFailed(str(e))
        self._generation += 1
        backend = self._newBackend(config, self._generation, port, self._exited)
        try:
            backend.launch()
        except OSError as e:
            raise DeployFailed(
                f"generation {backend.generation} could not be started: {e}",
                backend.generation,
                port,
            )
        self.backends.append(backend)
        if self._groups is not None:
            self._groups.record(backend)
            backend.whenStopped().addCallback(self._groups.forget)
        backend.whenStopped().addCallback(self._stopped)
        self._emit("launching", backend.generation, deploy=self._deploys, port=port)
        unhealthy = partial(self._emit, "unhealthy", backend.generation)
        backend.observeUnhealthy(partial(unhealthy, deploy=self._deploys, port=port))
        return backend

    def _stopped(self, backend: Backend) -> None:
        self.backends.remove(backend)
        self._emit(
            "stopped",
            backend.generation,
            state=backend.state.value,
            exit=backend.exitReason,
        )

    def _swap(self, backend: Backend) -> None:
        old, self.active = self.active, backend
        backend.activate()
        self._watch(backend)
        self._activeSince = self._clock.seconds()
        self.log.info(
            "generation {generation} is now serving on port {port}",
            generation=backend.generation,
            port=backend.port,
        )
        self._emit(
            "switched",
            backend.generation,
            deploy=self._deploys,
            previous=None if old is None else old.generation,
        )
        self._route(backend)
        if old is not None and old.state is State.ACTIVE:
            old.drain()
            self._emit("draining", old.generation, inflight=old.inflight)

    def _deployed(self, outcome, waiters: Waiters) -> None:
        self._deploying = False
        self._lastDeploy = describeOutcome(outcome)
        if isinstance(outcome, Failure):
            _logFailure(outcome)
            if self.active is not None and self.routable is None:
                self._replacementFailed = self._lastDeploy
        self._emit(_outcomeKind(outcome), deploy=self._deploys, **self._lastDeploy)
        waiters.fire(outcome)
        if not self.running:
            return
        if self._queued:
            self._deployQueued()
        elif self.active is None:
            self._restartLater()
        elif _unresponsive(self.active):
            self._restartLater(
                f"generation {self.active.generation} still does not answer; "
                "starting a replacement"
            )

    # Supervision

    def _exited(self, backend: Backend) -> None:
        """
        A backend's process ended while it was not being stopped.
        """
        if backend is not self.active:
            return
        self.active = self.routable = None
        if self._clock.seconds() - self._activeSince > BACKOFF_RESET:
            self._restarts = 0
        self.log.error(
            "generation {generation}, the active backend, {exit}{next}{output}",
            generation=backend.generation,
            exit=backend.exitReason,
            next="; starting a replacement" if self.running else "",
            output=_outputBlock(list(backend.output)[-10:]),
        )
        self._emit("crashed", backend.generation, exit=backend.exitReason)
        if not self._deploying and self.running:
            self._restartLater()

    def _watch(self, backend: Backend) -> None:
        """
        Check that the newly active C{backend} stays alive, every
        C{livenessInterval} of its config (unless that is 0).
        """
        config = backend.config
        if config.livenessInterval == 0:
            return
        backend.watch(
            LivenessProbe(
                self._clock,
                backend.checkLiveness,
                config.livenessInterval,
                config.livenessFailures,
                onFailing=lambda probe: self._unresponsive(backend, probe),
                onRecovered=lambda probe: self._recovered(backend),
                onStillFailing=lambda probe: self._stillFailing(backend, probe),
            )
        )

    def _unresponsive(self, backend: Backend, probe: LivenessProbe) -> None:
        """
        The active C{backend} failed C{livenessFailures} liveness checks in
        a row: start a replacement, as after a crash.  If its process is
        stopped, new requests wait for that replacement; otherwise it serves
        on until the replacement is healthy, since it may yet answer (a slow
        health check is no proof of a hang).
        """
        if backend is not self.active or not self.running:
            return
        if self._clock.seconds() - self._activeSince > BACKOFF_RESET:
            self._restarts = 0
        pid = backend.appPid()
        stopped = _foundStopped(probe)
        if stopped:
            self._unroute()
        self.log.warn(
            "generation {generation} (pid {pid}, port {port}), the active "
            "backend, failed {failures} liveness checks in a row; the last: "
            "{error}; {next}; {traffic}",
            generation=backend.generation,
            pid=pid,
            port=backend.port,
            failures=probe.failures,
            error=probe.lastError,
            next="the deploy under way replaces it"
            if self._deploying
            else "starting a replacement",
            traffic="new requests wait for the replacement, or for it to "
            "answer again"
            if stopped
            else "it gets traffic until that is healthy",
        )
        self._emit(
            "unresponsive",
            backend.generation,
            port=backend.port,
            pid=pid,
            failures=probe.failures,
            error=probe.lastError,
            stopped=stopped,
        )
        if not self._deploying:
            self._restartLater(
                f"generation {backend.generation} does not answer; starting a "
                "replacement"
            )

    def _stillFailing(self, backend: Backend, probe: LivenessProbe) -> None:
        """
        The active C{backend}, already unresponsive, failed another check:
        if it is found stopped now, new requests wait for its replacement.
        """
        if (
            backend is self.active
            and self.routable is backend
            and self.running
            and _foundStopped(probe)
        ):
            self._unroute()
            self.log.warn(
                "generation {generation}, the active backend, is stopped: "
                "{error}; new requests wait for its replacement, or for it "
                "to answer again",
                generation=backend.generation,
                error=probe.lastError,
            )

    def _recovered(self, backend: Backend) -> None:
        """
        The active C{backend} answers its liveness check again: it gets new
        requests again if it had been found stopped; a replacement still
        waiting for its delay is called off; one already launched takes
        over when healthy, as a redeploy would.
        """
        if backend is not self.active:
            return
        call, calledOff = self._restartCall, False
        if call is not None and call.active():
            call.cancel()
            calledOff = True
        rerouted = self.routable is None
        self.log.info(
            "generation {generation} passes its liveness check again{traffic}{next}",
            generation=backend.generation,
            traffic="; new requests go to it again" if rerouted else "",
            next="; its replacement is called off"
            if calledOff
            else "; its replacement takes over once healthy"
            if self._deploying
            else "",
        )
        if rerouted:
            self._route(backend)
        self._emit(
            "recovered", backend.generation, port=backend.port, pid=backend.appPid()
        )

    def _route(self, backend: Backend) -> None:
        """
        New requests go to C{backend}, and those waiting go now.
        """
        self.routable = backend
        self._replacementFailed = None
        self._routing.fire(backend)

    def _unroute(self) -> None:
        """
        The active backend is stopped: new requests wait.  Those it holds
        stay where they are: they may have been acted on, so they are not
        sent again.
        """
        self.routable = None
        self._replacementFailed = None

    def _restartLater(self, why: str = "no backend is serving; starting one") -> None:
        if self._restartCall is not None and self._restartCall.active():
            return
        delay = self._backoff(self._restarts)
        self._restarts += 1
        self.log.info("{why} in {delay:.1f} s", why=why, delay=delay)
        self._emit("restarting", delay=delay)
        self._restartCall = self._clock.callLater(
            delay, self._deploy, "restart", lambda: self.config, Waiters()
        )
