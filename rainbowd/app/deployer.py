# -*- test-case-name: rainbowd.test.unit.test_deployer -*-
"""
The generations of the app: redeploy, swap, drain and supervision.
"""

import os
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import attrs
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    fail,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rainbowd.app.backend import (
    ALIVE,
    AppStopped,
    Backend,
    BackendFailed,
    ResponseTally,
    State,
)
from rainbowd.app.health import LivenessProbe
from rainbowd.app.leftovers import AppGroups
from rainbowd.app.lifecycle import Input, Lifecycle, Phase
from rainbowd.app.ports import NoFreePort, PortPicker
from rainbowd.app.processgroups import ProcessGroupSignals
from rainbowd.app.shutdown import reportShutdown
from rainbowd.app.verify import Verifier, VerifyFailed, VerifyRun
from rainbowd.config import Config, ConfigError, startupKeys
from rainbowd.events import EVENT_KINDS, EventKind  # noqa: F401 (EVENT_KINDS: here too)
from rainbowd.interfaces import IControlledDeployer, IRoutingDeployer
from rainbowd.waiters import Waiters


@attrs.frozen
class Event:
    """
    One step of a deploy or of a backend's life, for whoever observes the
    deployer: progress reports, metrics, timelines.

    @ivar kind: what happened, an L{EventKind} (see L{EVENT_KINDS}).
    @ivar time: when, in the clock's seconds.
    @ivar generation: the generation it happened to, if any.
    @ivar details: the rest, JSON-able, by kind (see L{EVENT_KINDS}).
    """

    kind: str  # an EventKind, or (from a test) its string
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
        body: Dict[str, Any] = {
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


class NothingToRollBack(DeployRefused):
    """
    A rollback was asked for, and there is neither a standby nor a previous
    generation's directory to go back to.
    """


#: How many ports a deploy tries when the app loses its port to another
#: process between the choice and the bind.
PORT_ATTEMPTS = 3

#: The config keys that are only read when rainbowd starts (those declared
#: with C{startup=True} in L{rainbowd.config.Config}).
STARTUP_KEYS = startupKeys()

#: A backend that served this long before crashing resets the restart
#: backoff, in seconds.
BACKOFF_RESET = 60.0

#: How often the standby's health is checked, in seconds.
STANDBY_CHECK_INTERVAL = 1.0


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


@implementer(IRoutingDeployer, IControlledDeployer)
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
    @ivar standby: the generation that served before C{active}, kept alive
        (once drained) for C{rollbackWindow} after the switch, to roll back
        to; L{None} while there is none.
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
        self.standby: Optional[Backend] = None
        self._standbyUntil = 0.0
        self._windowCall: Any = None
        self._noStandby = "no redeploy has switched traffic since rainbowd started"
        self._previousConfig: Optional[Config] = None
        self._loadConfig = loadConfig
        self._newBackend = newBackend
        self._clock = clock
        self._ports = ports
        self._backoff = backoff
        self._generation = 0
        self._lifecycle = Lifecycle()
        self._queue: List[_Request] = []
        self._routing = Waiters()
        self._replacementFailed: Optional[dict] = None
        self._restartCall: Any = None
        self._restarts = 0
        self._activeSince = 0.0
        self._lastDeploy: Optional[dict] = None
        self._deploys = deploys
        self._observers: List[Callable[[Event], None]] = []
        self._groups = groups
        self._cleanup: Optional[Deferred] = None
        self._verifier = verifier
        self._verifyRun: Optional[VerifyRun] = None

    @property
    def phase(self) -> Phase:
        """
        What the deployer is doing (see L{rainbowd.app.lifecycle}).
        """
        return self._lifecycle.phase

    # IService

    def startService(self) -> None:
        """
        Stop what an earlier rainbowd left running, then launch the first
        generation.  Redeploys asked for meanwhile wait, as they would for
        a deploy under way.
        """
        Service.startService(self)
        if self._adopting:
            return
        if self._groups is None:
            self._deploy("startup", lambda: self.config, Waiters())
            return
        self._lifecycle.feed(Input.CLEAN)
        self._cleanup = self._groups.stopLeftovers(self.config.killTimeout)
        self._cleanup.addErrback(
            lambda f: self.log.failure("stopping leftover app processes failed", f)
        )
        self._cleanup.addCallback(lambda _: self._cleanedUp())

    def _cleanedUp(self) -> None:
        self._cleanup = None
        if self._lifecycle.feed(Input.CLEANED) is Phase.DEPLOYING:
            if self._queue:
                self._lifecycle.feed(Input.QUEUE)
            self._deploy("startup", lambda: self.config, Waiters())

    # Upgrades

    def handOverState(self) -> Dict[str, Any]:
        """
        What a new rainbowd needs of this deployer to take over, and the
        output pipes of each generation (C{"pipes"}: generation -> child fd
        -> fd).

        @raise DeployRefused: while a deploy is under way or a generation
            drains (the new rainbowd would have to finish it): upgrade once
            it is done.
        """
        if self._lifecycle.busy or self.phase is not Phase.IDLE:
            raise DeployRefused(
                f"rainbowd is {self.phase.value}; upgrade once that is done "
                "(rainbowctl status shows it)"
            )
        generations, pipes = [], {}
        for backend in self.backends:
            if backend is self.active:
                state = State.ACTIVE
            elif backend is self.standby and backend.state in (
                State.STANDBY,
                State.DRAINING,
            ):
                state = State.STANDBY
            else:
                raise DeployRefused(
                    f"generation {backend.generation} is {backend.state.value}; "
                    "upgrade once it has stopped (rainbowctl status shows it)"
                )
            transport = backend.transport
            if transport is None:
                raise DeployRefused(
                    f"generation {backend.generation} has no process to hand "
                    "over; upgrade once it has stopped (rainbowctl status shows it)"
                )
            pipes[backend.generation] = backend.handOver()
            generations.append(
                {
                    "generation": backend.generation,
                    "pid": transport.pid,
                    "pgid": backend.pgid,
                    "port": backend.port,
                    "state": state.value,
                    "directory": backend.config.cwd,
                    "output": list(backend.output),
                }
            )
        # Until the upgrade has an outcome, deploys and restarts wait: the
        # new rainbowd takes over exactly what is described here.
        self._lifecycle.feed(Input.HAND_OVER)
        return {
            "generations": generations,
            "active": None if self.active is None else self.active.generation,
            "standby": None
            if self.standby is None
            else {
                "generation": self.standby.generation,
                "secondsLeft": self._standbySecondsLeft(),
            },
            "generation": self._generation,
            "deploys": self._deploys,
            "pipes": pipes,
        }

    def adopt(
        self,
        generations: List[Dict[str, Any]],
        pipes: Dict[int, Dict[int, int]],
        active: Optional[int],
        standby: Optional[Dict[str, Any]],
        generation: int,
        over: Deferred,
    ) -> None:
        """
        Take over the generations of the rainbowd upgraded from, instead of
        cleaning up and launching one on start.  Until C{over} fires (that
        rainbowd has exited, so has nothing in flight on any of them),
        redeploys and rollbacks wait, as during a deploy.
        """
        self._generation = max(self._generation, generation)
        self._lifecycle.feed(Input.ADOPT)
        self._adopting = True
        for each in generations:
            config = attrs.evolve(self.config, cwd=each.get("directory") or self.config.cwd)
            backend = self._newBackend(config, each["generation"], each["port"], self._exited)
            backend.adopt(
                each["pid"],
                each["pgid"],
                pipes.get(each["generation"], {}),
                State(each["state"]),
                each.get("output", ()),
            )
            self.backends.append(backend)
            if self._groups is not None:
                self._groups.record(backend)
                backend.whenStopped().addCallback(self._groups.forget)
            backend.whenStopped().addCallback(self._stopped)
            if each["generation"] == active:
                self.active = backend
                self._route(backend)
                self._activeSince = self._clock.seconds()
            elif standby is not None and each["generation"] == standby["generation"]:
                self.standby = backend
                window = max(float(standby.get("secondsLeft") or 0.0), 0.0)
                self._standbyUntil = self._clock.seconds() + window
                self._windowCall = self._clock.callLater(window, self._windowEnded, backend)
        if self.standby is not None:
            self._watchStandby(self.standby)
        if self.active is not None:
            self._watch(self.active)
        self._over = over
        over.addCallback(lambda _: self._adopted())

    _adopting = False

    def _adopted(self) -> None:
        self._adopting = False
        if self._lifecycle.feed(Input.ADOPTED) is not Phase.IDLE:
            return
        self.log.info("the rainbowd upgraded from has exited: deploys may run")
        self._resume()

    def keep(self) -> None:
        """
        The upgrade begun by L{handOverState} failed: this rainbowd keeps
        everything, and runs the deploys asked for meanwhile.
        """
        if self.phase is not Phase.HANDING_OVER:
            return
        self._lifecycle.feed(Input.KEPT)
        self._resume()

    def _resume(self) -> None:
        """
        Run the deploy asked for while the deployer was held, or restart
        the app if none serves.
        """
        if self._queue:
            request = self._queue.pop(0)
            self._deployRequest(request)
            if self._queue and self.phase is Phase.DEPLOYING:
                self._lifecycle.feed(Input.QUEUE)
        elif self.active is None:
            self._restartLater()

    def abandon(self) -> None:
        """
        This rainbowd has handed over to a new one: forget the generations,
        which the new one supervises, without stopping any; stopping the
        service then stops nothing.
        """
        self._abandoned = True
        queue, self._queue = self._queue, []
        for request in queue:
            request.waiters.fire(
                Failure(
                    DeployRefused(
                        "rainbowd was upgraded meanwhile, and the new rainbowd "
                        "serves: ask again, of it"
                    )
                )
            )
        if self._windowCall is not None and self._windowCall.active():
            self._windowCall.cancel()
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        for backend in self.backends:
            backend.abandon()

    _abandoned = False

    def stopService(self) -> Deferred:
        """
        Refuse redeploys, drain every backend and stop them.

        @return: a Deferred that fires when no app process is left.
        """
        if self._abandoned:
            Service.stopService(self)
            return succeed(None)
        Service.stopService(self)
        self._emit("shutdown", generations=[b.generation for b in self.backends])
        # A request reaching the proxy from now on is refused, never sent to
        # a generation told to stop.
        self.routable = None
        if self.phase is Phase.RESTART_PENDING:
            self._restartCall.cancel()
        self._lifecycle.feed(Input.STOP)
        queue, self._queue = self._queue, []
        for request in queue:
            request.waiters.fire(Failure(DeployRefused("rainbowd is shutting down")))
        self._routing.fire(Failure(DeployRefused("rainbowd is shutting down")))
        if self._adopting:
            # The rainbowd upgraded from may still be answering requests on
            # the generations: stop them once it has exited.
            self.log.info(
                "stopping once the rainbowd upgraded from has answered its requests"
            )
            waited: Deferred = Deferred()

            def oldExited(_: object) -> None:
                self._stopBackends().chainDeferred(waited)

            self._over.addCallback(oldExited)
            return waited
        return self._stopBackends()

    def _stopBackends(self) -> Deferred:
        if self.standby is not None:
            self._releaseStandby("rainbowd is stopping")
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
        return self._ask("redeploy", requester, message)

    def _ask(
        self, cause: str, requester: Optional[str], message: Optional[str] = None
    ) -> Deferred:
        """
        Deploy for C{cause} now, or after the deploy under way: the requests
        of the same cause queued one after the other share one deploy.
        """
        if not self.running:
            return fail(DeployRefused("rainbowd is shutting down"))
        if self._lifecycle.busy:
            last = self._queue[-1] if self._queue else None
            if last is None or last.cause != cause:
                self._queue.append(_Request(cause, requester, message))
            else:
                # Those who share a deploy: the last to ask names it.
                last.requester, last.message = requester, message
            self._lifecycle.feed(Input.QUEUE)
            return self._queue[-1].waiters.wait()
        request = _Request(cause, requester, message)
        d = request.waiters.wait()
        self._deployRequest(request)
        return d

    def rollback(self, requester: Optional[str] = None) -> Deferred:
        """
        Go back to the generation that served before the active one: move
        traffic back to the standby in one step if there is one, or else
        launch the previous generation's configuration again, if its
        directory is still there.  A rollback asked for during a deploy
        waits for it, and then undoes it; rollbacks asked for one after the
        other share one.

        @param requester: who asked, for the C{deploying} event.
        @return: a Deferred that fires with L{Deployed}, or fails as
            L{redeploy}'s does, or with L{NothingToRollBack}.
        """
        return self._ask("rollback", requester)

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
        elif self.phase is Phase.RESTART_PENDING:
            delay = self._restartCall.getTime() - self._clock.seconds()
            why += f"; another replacement is tried in {delay:.1f} s"
        return why

    def status(self) -> dict:
        """
        The backends and the last deploy's outcome, JSON-able, for
        C{/status}.
        """
        backends = []
        for backend in self.backends:
            described = backend.describe()
            if backend is self.standby:
                described["standbySecondsLeft"] = self._standbySecondsLeft()
            backends.append(described)
        return {
            "active": None if self.active is None else self.active.generation,
            "routable": None if self.routable is None else self.routable.generation,
            "standby": None if self.standby is None else self.standby.generation,
            "deploying": self._lifecycle.busy,
            "backends": backends,
            "lastDeploy": self._lastDeploy,
            "verify": None if self._verifyRun is None else self._verifyRun.describe(),
        }

    def _standbySecondsLeft(self) -> float:
        return round(max(self._standbyUntil - self._clock.seconds(), 0.0), 3)

    def observe(self, observer: Callable[[Event], None]) -> Callable[[], None]:
        """
        Call C{observer} with every L{Event} from now on.

        @return: a function that stops it.
        """
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def _emit(self, kind: str, generation: Optional[int] = None, **details) -> None:
        event = Event(EventKind(kind), self._clock.seconds(), generation, details)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("an observer of {kind} events failed", kind=kind)

    # Deploying

    def _deployRequest(self, request: "_Request") -> None:
        """
        Begin the deploy C{request} asked for.
        """
        if request.cause == "rollback":
            self._rollBack(request.cause, request.requester, request.waiters)
        else:
            self._deploy(
                request.cause,
                self._loadConfig,
                request.waiters,
                request.requester,
                request.message,
            )

    def _rollBack(
        self,
        cause: str,
        requester: Optional[str],
        waiters: Waiters,
        switched: Callable[[], None] = lambda: None,
    ) -> None:
        """
        Roll back: to the standby if there is one (a switch, after which
        C{switched} is called, before the outcome), or else to the previous
        generation's configuration (a deploy of it).
        """
        standby, previous = self.standby, self._previousConfig
        if standby is None and previous is not None and self._relaunchable(previous):
            self._deploy(cause, lambda: previous, waiters, requester=requester)
            return
        self._begin(cause, requester=requester)
        started = self._clock.seconds()
        outcome: object
        if standby is None:
            outcome = Failure(NothingToRollBack(self._whyNothingToRollBack()))
        else:
            self.log.info(
                "rolling back from generation {active} to generation "
                "{generation}, the standby",
                active=None if self.active is None else self.active.generation,
                generation=standby.generation,
            )
            self._forgetStandby("traffic was rolled back to it")
            self._previousConfig = None
            self._swap(standby)
            switched()
            outcome = self._deployedNow(standby, started)
        self._deployed(outcome, waiters)

    def _relaunchable(self, previous: Optional[Config]) -> bool:
        """
        Can C{previous}, the configuration of the generation before the
        active one, be launched again as it was?  Only from a directory of
        its own that is still there: in the active generation's directory,
        its files may have changed since (a C{git pull} in place).
        """
        return (
            previous is not None
            and previous.cwd != self.config.cwd
            and os.path.isdir(previous.cwd)
        )

    def _whyNothingToRollBack(self) -> str:
        previous = self._previousConfig
        if previous is None:
            why = "no previous generation is known"
        elif previous.cwd == self.config.cwd:
            why = (
                f"the previous generation ran in the same directory as the "
                f"active one ({previous.cwd}), whose files may have changed "
                "since, so launching it again would not roll back; keep each "
                "release in a directory of its own for that"
            )
        else:
            why = (
                f"the previous generation's directory {previous.cwd} is gone, "
                "so it cannot be launched again"
            )
        return (
            f"nothing to roll back to: there is no standby ({self._noStandby}), "
            f"and {why}; to keep the old version as a standby after each "
            "redeploy, set rollbackWindow (ms, 300000 by default; it is "
            f"{self.config.rollbackWindow * 1000:.0f} now)"
        )

    def _deploy(
        self,
        cause: str,
        loadConfig: Callable[[], Config],
        waiters: Waiters,
        requester: Optional[str] = None,
        message: Optional[str] = None,
    ):
        """
        Launch a generation of the configuration C{loadConfig} gives, and
        swap it in once healthy.
        """
        self._begin(cause, requester, message)
        started = self._clock.seconds()
        d = maybeDeferred(loadConfig).addCallback(self._deployConfig, started, cause)
        d.addBoth(self._deployed, waiters)

    def _begin(
        self, cause: str, requester: Optional[str] = None, message: Optional[str] = None
    ) -> None:
        """
        A deploy begins (unless it is the one queued behind the deploy just
        done, which is then under way already): number it and say so.
        """
        if self.phase is Phase.RESTART_PENDING and self._restartCall.active():
            self._restartCall.cancel()
        if self.phase in (Phase.IDLE, Phase.RESTART_PENDING):
            self._lifecycle.feed(Input.DEPLOY)
        self._deploys += 1
        self._emit(
            "deploying",
            deploy=self._deploys,
            cause=cause,
            requester=requester,
            message=message,
        )

    @inlineCallbacks
    def _deployConfig(self, config: Config, started: float, cause: str):
        config = self._keepStartupKeys(config)
        alive = [backend for backend in self.backends if backend.state in ALIVE]
        standby = self.standby
        if (
            len(alive) >= config.maxBackends
            and standby is not None
            and standby.state is State.STANDBY
        ):
            yield self._releaseStandby(
                f"maxBackends ({config.maxBackends}) processes are alive, and "
                "the new generation needs room"
            )
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
        yield self._beforeSwitch(backend)
        if not self.running:
            backend.stop()
            raise DeployRefused("rainbowd is shutting down")
        self.config = config
        if cause in _ROLLBACKS:
            self._previousConfig = None
        elif cause == "redeploy" and self.active is not None:
            self._previousConfig = self.active.config
        self._swap(backend, keepOld=cause == "redeploy")
        return self._deployedNow(backend, started)

    def _beforeSwitch(self, backend: Backend) -> Deferred:
        """
        The last step between a new generation's health and the switch to
        it, its config's C{verify} if it has one: a Deferred that fires when
        traffic may move, or fails with L{DeployFailed} (C{backend} then
        stopped) if not.
        """
        if backend.config.verify is None:
            return succeed(None)
        return self._verify(backend)

    def _deployedNow(self, backend: Backend, started: float) -> Deployed:
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

    def _swap(self, backend: Backend, keepOld: bool = False) -> None:
        """
        Move traffic to C{backend} in one step, and drain the generation it
        moved from: kept as the standby if C{keepOld} and C{rollbackWindow}
        allows, stopped otherwise.
        """
        old, self.active = self.active, backend
        backend.activate()
        backend.tally = ResponseTally()
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
            keep = keepOld and self.config.rollbackWindow > 0
            if keep:
                self._keep(old)
            else:
                if keepOld:
                    self._noStandby = (
                        f"rollbackWindow is 0, so generation {old.generation} "
                        "is stopped once drained"
                    )
                old.drain()
            self._emit("draining", old.generation, inflight=old.inflight)
            if keep:
                old.whenStandby().addCallback(self._watchStandby)
        self._watch(backend)

    # The standby

    def _keep(self, old: Backend) -> None:
        """
        Drain C{old}, which traffic just moved from, and keep it as the
        standby for C{rollbackWindow}; it replaces the standby there was.
        """
        if self.standby is not None:
            self._releaseStandby(
                f"generation {old.generation} replaces it as the standby",
                rewatch=False,
            )
        window = self.config.rollbackWindow
        old.drain(keep=True)
        self.standby = old
        self._standbyUntil = self._clock.seconds() + window
        self._windowCall = self._clock.callLater(window, self._windowEnded, old)

    def _watchStandby(self, backend: Backend) -> None:
        """
        C{backend} is drained and kept: check its health every
        L{STANDBY_CHECK_INTERVAL} while it is the standby.
        """
        if backend is not self.standby:
            return
        self.log.info(
            "generation {generation} is the standby for {seconds:.0f} s more; "
            "POST /rollback (rainbowctl rollback) moves traffic back to it",
            generation=backend.generation,
            seconds=self._standbySecondsLeft(),
        )
        self._emit("standby", backend.generation, seconds=self._standbySecondsLeft())
        backend.watch(
            LivenessProbe(
                self._clock,
                backend.checkLiveness,
                STANDBY_CHECK_INTERVAL,
                backend.config.livenessFailures,
                onFailing=lambda probe: self._standbyFailed(backend, probe),
            )
        )

    def _standbyFailed(self, backend: Backend, probe: LivenessProbe) -> None:
        if backend is self.standby:
            self._releaseStandby(
                f"it failed {probe.failures} health checks in a row, the last: "
                f"{probe.lastError}; it is no longer a rollback target",
                warn=True,
            )

    def _windowEnded(self, backend: Backend) -> None:
        if backend is self.standby:
            self._windowCall = None
            self._releaseStandby(
                f"its rollbackWindow ({self.config.rollbackWindow:g} s) has passed"
            )

    def _releaseStandby(
        self, why: str, warn: bool = False, rewatch: bool = True
    ) -> Deferred:
        """
        Stop keeping the standby, and stop it (once drained); unless
        C{rewatch} is false, the active generation is then watched as
        usual, with nothing to roll back to.

        @return: a Deferred that fires when it is stopped.
        """
        standby = self._forgetStandby(f"it was stopped: {why}")
        (self.log.warn if warn else self.log.info)(
            "generation {generation}, the standby, is stopped: {why}",
            generation=standby.generation,
            why=why,
        )
        stopped = standby.release()
        if rewatch:
            self._rewatch()
        return stopped

    def _rewatch(self) -> None:
        """
        The standby is gone: watch the active generation for liveness, as
        outside a rollback window.
        """
        active = self.active
        if self.running and active is not None and active.state is State.ACTIVE:
            self._watch(active)

    # Automatic rollback

    def _rollbackTarget(self) -> Optional[Backend]:
        """
        The standby, if rainbowd can roll back to it now: not while a deploy
        is under way, which replaces the active generation anyway.
        """
        if not self.running or self._lifecycle.busy:
            return None
        return self.standby

    def _watchAfterSwitch(self, backend: Backend) -> None:
        """
        While there is a standby, check the active C{backend} every
        C{healthCheckInterval}: roll back when it fails
        C{rollbackCheckFailures} checks in a row, or when its share of 5xx
        is above C{rollbackErrorRate}.
        """
        config = backend.config
        backend.watch(
            LivenessProbe(
                self._clock,
                lambda: self._checkAfterSwitch(backend),
                config.healthCheckInterval,
                config.rollbackCheckFailures,
                onFailing=lambda probe: self._failedAfterSwitch(backend, probe),
            )
        )

    def _checkAfterSwitch(self, backend: Backend):
        config, tally = backend.config, backend.tally
        if (
            tally.responses >= config.rollbackMinRequests
            and tally.errors > config.rollbackErrorRate * tally.responses
            and self._rollBackAutomatically(
                backend,
                "errorRate",
                f"answered {tally.errors} of its {tally.responses} responses "
                f"with 5xx, more than rollbackErrorRate "
                f"({config.rollbackErrorRate:g})",
            )
        ):
            return None
        return backend.checkLiveness()

    def _failedAfterSwitch(self, backend: Backend, probe: LivenessProbe) -> None:
        reason = (
            f"failed {probe.failures} health checks in a row "
            f"(rollbackCheckFailures), the last: {probe.lastError}"
        )
        if not self._rollBackAutomatically(backend, "unhealthy", reason):
            # The deploy under way replaces it; meanwhile, as outside the
            # window.
            self._unresponsive(backend, probe)

    def _rollBackAutomatically(self, backend: Backend, cause: str, reason: str) -> bool:
        """
        Roll back from C{backend}, the active generation (or the one that
        just exited), to the standby, because C{reason}.

        @return: whether it did.
        """
        standby = self._rollbackTarget()
        if standby is None:
            if self.running and self.standby is not None:
                self.log.warn(
                    "generation {generation} {reason}; the deploy under way "
                    "replaces it, so it is not rolled back",
                    generation=backend.generation,
                    reason=reason,
                )
            return False
        self.log.error(
            "generation {generation} {reason}: rolling back to generation "
            "{standby}, the standby",
            generation=backend.generation,
            reason=reason,
            standby=standby.generation,
        )
        self._rollBack(
            "automaticRollback",
            None,
            Waiters(),
            switched=lambda: self._emit(
                "rolledBack",
                standby.generation,
                cause=cause,
                reason=reason,
                deploy=self._deploys,
                **{"from": backend.generation, "to": standby.generation},
            ),
        )
        return True

    def _forgetStandby(self, why: Optional[str] = None) -> Backend:
        """
        There is no standby any more, because C{why}: the one there was is
        returned.
        """
        standby, self.standby = self.standby, None
        assert standby is not None, "there was no standby to forget"
        if why is not None:
            self._noStandby = f"generation {standby.generation} was the standby; {why}"
        if self._windowCall is not None and self._windowCall.active():
            self._windowCall.cancel()
        self._windowCall = None
        return standby

    def _deployed(self, outcome, waiters: Waiters) -> None:
        self._lifecycle.feed(Input.DONE)
        self._lastDeploy = describeOutcome(outcome)
        if isinstance(outcome, Failure):
            _logFailure(outcome)
            if self.active is not None and self.routable is None:
                self._replacementFailed = self._lastDeploy
        self._emit(_outcomeKind(outcome), deploy=self._deploys, **self._lastDeploy)
        waiters.fire(outcome)
        if self.phase is Phase.STOPPING:
            return
        if self.phase is Phase.DEPLOYING:
            request = self._queue.pop(0)
            if self._queue:
                self._lifecycle.feed(Input.QUEUE)
            self._deployRequest(request)
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
        if backend is self.standby:
            self._forgetStandby(f"it {backend.exitReason}")
            self.log.warn(
                "generation {generation}, the standby, {exit}; it is no longer "
                "a rollback target{output}",
                generation=backend.generation,
                exit=backend.exitReason,
                output=_outputBlock(list(backend.output)[-10:]),
            )
            self._rewatch()
            return
        if backend is not self.active:
            return
        self.active = self.routable = None
        if self._clock.seconds() - self._activeSince > BACKOFF_RESET:
            self._restarts = 0
        standby = self._rollbackTarget()
        self.log.error(
            "generation {generation}, the active backend, {exit}{next}{output}",
            generation=backend.generation,
            exit=backend.exitReason,
            next=""
            if not self.running or standby is not None
            else "; starting a replacement",
            output=_outputBlock(list(backend.output)[-10:]),
        )
        self._emit("crashed", backend.generation, exit=backend.exitReason)
        if standby is None or not self._rollBackAutomatically(
            backend, "exited", str(backend.exitReason)
        ):
            self._restartLater()

    def _watch(self, backend: Backend) -> None:
        """
        Check that the newly active C{backend} stays alive, every
        C{livenessInterval} of its config (unless that is 0).
        """
        if self.standby is not None:
            self._watchAfterSwitch(backend)
            return
        config = backend.config
        if config.livenessInterval == 0:
            if backend.liveness is not None:
                backend.liveness.stop()
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
            if self._lifecycle.busy
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
        calledOff = self.phase is Phase.RESTART_PENDING
        if calledOff:
            self._restartCall.cancel()
            self._lifecycle.feed(Input.CALLED_OFF)
        rerouted = self.routable is None
        self.log.info(
            "generation {generation} passes its liveness check again{traffic}{next}",
            generation=backend.generation,
            traffic="; new requests go to it again" if rerouted else "",
            next="; its replacement is called off"
            if calledOff
            else "; its replacement takes over once healthy"
            if self._lifecycle.busy
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
        """
        Deploy the last configuration again after the backoff delay, unless
        a restart is pending already, a deploy under way replaces the
        backend anyway, or rainbowd is stopping.
        """
        if self.phase is Phase.RESTART_PENDING:
            return
        if self._lifecycle.feed(Input.RESTART) is not Phase.RESTART_PENDING:
            return
        delay = self._backoff(self._restarts)
        self._restarts += 1
        self.log.info("{why} in {delay:.1f} s", why=why, delay=delay)
        self._emit("restarting", delay=delay)
        self._restartCall = self._clock.callLater(
            delay, self._deploy, "restart", lambda: self.config, Waiters()
        )


#: The causes of deploys that roll back.
_ROLLBACKS = frozenset({"rollback", "automaticRollback"})


@attrs.define
class _Request:
    """
    Deploys asked for, queued behind the one under way: all of one
    C{cause} asked for one after the other share one deploy.
    """

    cause: str
    requester: Optional[str]
    message: Optional[str] = None
    waiters: Waiters = attrs.field(factory=Waiters)
