"""
Tests for L{rainbowd.app.deployer}.
"""

import os
import signal

import attrs
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.backend import Backend, State
from rainbowd.app.deployer import (
    EVENT_KINDS,
    Deployed,
    Deployer,
    DeployFailed,
    DeployRefused,
    NothingToRollBack,
)
from rainbowd.app.health import REPORT_EVERY, Unhealthy
from rainbowd.app.lifecycle import Input, InvalidInput, Phase
from rainbowd.app.ports import PortPicker
from rainbowd.app.verify import Verifier
from rainbowd.config import Config, ConfigError
from rainbowd.test.fakes import (
    FakeHealthCheck,
    FakeProcessReactor,
    FakeSignals,
    passTime,
)


class Harness:
    """
    A L{Deployer} on fakes: processes, signals, health checks and ports.

    @ivar configs: what the next redeploy reads: the last one, or the last
        one is raised.
    @ivar taken: ports another process holds.
    """

    def __init__(self, testCase: SynchronousTestCase, rollbackWindow=0) -> None:
        self.reactor = FakeProcessReactor()
        self.health = FakeHealthCheck()
        self.signals = FakeSignals(self.reactor)
        self.taken: set = set()
        stateDir = testCase.mktemp()
        os.makedirs(stateDir)
        self.configs = [
            Config(
                run="app $1 $2",
                cwd=stateDir,
                stateDir=stateDir,
                maxBackends=3,
                rollbackWindow=rollbackWindow,
            )
        ]
        self.deployer = Deployer(
            self.configs[0],
            self._loadConfig,
            self._newBackend,
            self.reactor,
            PortPicker(isFree=lambda port: port not in self.taken, cursor=20000),
            backoff=lambda attempt: 2.0**attempt,
            verifier=Verifier(self.reactor, self.signals),
        )

    def _loadConfig(self):
        config = self.configs[-1]
        if isinstance(config, Exception):
            raise config
        return config

    def _newBackend(self, config, generation, port, onExit):
        return Backend(
            config, generation, port, self.reactor, self.health, self.signals, onExit
        )

    def newConfig(self, **changes):
        self.configs.append(attrs.evolve(self.configs[0], **changes))

    def process(self, generation):
        return self.reactor.processes[generation - 1]

    def backend(self, generation):
        return self.process(generation).proto

    def healthy(self, generation):
        self.health.answer(self.backend(generation).port)

    def start(self):
        """
        Start the deployer and make generation 1 healthy.
        """
        self.deployer.startService()
        self.healthy(1)
        return self.backend(1)

    def pendingChecks(self, generation):
        """
        The health checks of C{generation} not answered yet.
        """
        port = self.backend(generation).port
        return [d for (p, path, timeout, d) in self.health.probes if p == port and not d.called]

    def failLiveness(self, generation, times=1):
        """
        C{times} liveness checks of C{generation} in a row find it silent,
        each made one C{livenessInterval} (2 s) after the last.
        """
        for _ in range(times):
            self.reactor.advance(2.0)
            [check] = self.pendingChecks(generation)
            check.errback(TimeoutError("GET / did not answer within 2 s"))

    def passLiveness(self, generation):
        """
        The next liveness check of C{generation} passes.
        """
        self.reactor.advance(2.0)
        [check] = self.pendingChecks(generation)
        check.callback(None)


class StartupTests(SynchronousTestCase):
    def test_firstGeneration(self):
        """
        Starting the deployer launches generation 1, which becomes active once
        healthy.
        """
        h = Harness(self)
        h.deployer.startService()
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIsNone(h.deployer.active)
        h.healthy(1)
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertEqual(h.backend(1).state, State.ACTIVE)
        self.assertEqual(h.backend(1).port, 20000)

    def test_firstGenerationFailsRetried(self):
        """
        If generation 1 fails, another is launched after the backoff delay.
        """
        h = Harness(self)
        h.deployer.startService()
        h.process(1).exit(1)
        self.assertEqual(len(h.reactor.processes), 1)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_whenRoutable(self):
        """
        L{Deployer.whenRoutable} fires with the next backend to become routable.
        """
        h = Harness(self)
        h.deployer.startService()
        d = h.deployer.whenRoutable()
        self.assertNoResult(d)
        h.healthy(1)
        self.assertIs(self.successResultOf(d), h.backend(1))

    def test_whenRoutableCancelled(self):
        """
        A cancelled L{Deployer.whenRoutable} is forgotten.
        """
        h = Harness(self)
        h.deployer.startService()
        d = h.deployer.whenRoutable()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.healthy(1)
        self.assertIs(h.deployer.active, h.backend(1))


class RedeployTests(SynchronousTestCase):
    def test_redeploy(self):
        """
        A redeploy launches a new generation on a new port and fires with
        L{Deployed} once it is healthy and active.
        """
        h = Harness(self)
        h.start()
        h.reactor.advance(2.5)
        d = h.deployer.redeploy()
        self.assertNoResult(d)
        self.assertIs(h.deployer.active, h.backend(1))
        h.reactor.advance(0.5)
        h.healthy(2)
        deployed = self.successResultOf(d)
        self.assertEqual(
            deployed,
            Deployed(generation=2, port=20001, pid=h.process(2).pgid, seconds=0.5),
        )
        self.assertIs(h.deployer.active, h.backend(2))

    def test_oldStoppedAfterSwap(self):
        """
        With nothing in flight, the old generation is sent SIGTERM at the swap
        and forgotten once it has exited.
        """
        h = Harness(self)
        old = h.start()
        h.deployer.redeploy()
        h.healthy(2)
        self.assertEqual(old.state, State.STOPPING)
        self.assertIn(("group", old.pgid, signal.SIGTERM), h.signals.sent)
        h.reactor.advance(0)
        self.assertEqual(old.state, State.STOPPED)
        self.assertEqual(h.deployer.backends, [h.backend(2)])

    def test_inflightStayOnOld(self):
        """
        The old generation drains: it is only stopped when its last request in
        flight is done.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        self.assertEqual(old.state, State.DRAINING)
        self.assertEqual(h.signals.sent, [])
        old.requestFinished()
        self.assertEqual(old.state, State.STOPPING)

    def test_drainTimeout(self):
        """
        An old generation with requests in flight is stopped after
        C{drainTimeout} anyway, and killed C{killTimeout} after that.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        h.process(1).termDelay = None
        h.deployer.redeploy()
        h.healthy(2)
        h.reactor.advance(29.9)
        self.assertEqual(old.state, State.DRAINING)
        h.reactor.advance(0.1)
        self.assertEqual(old.state, State.STOPPING)
        h.reactor.advance(10)
        self.assertIn(("group", old.pgid, signal.SIGKILL), h.signals.sent)
        h.reactor.advance(0)
        self.assertEqual(old.state, State.STOPPED)

    def test_brokenBuild(self):
        """
        A new generation that exits fails the redeploy with its exit code and
        output, and the old one keeps serving.
        """
        h = Harness(self)
        old = h.start()
        d = h.deployer.redeploy()
        h.process(2).emit(b"Traceback (most recent call last):\nImportError: x\n", 2)
        h.process(2).exit(3)
        error = self.failureResultOf(d, DeployFailed).value
        self.assertIn("exited with code 3", error.reason)
        self.assertEqual(error.generation, 2)
        self.assertEqual(
            error.output, ("Traceback (most recent call last):", "ImportError: x")
        )
        self.assertIs(h.deployer.active, old)
        self.assertEqual(old.state, State.ACTIVE)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_neverHealthy(self):
        """
        A new generation not healthy within C{startTimeout} fails the redeploy
        once it is stopped; the old one keeps serving.
        """
        h = Harness(self)
        old = h.start()
        d = h.deployer.redeploy()
        h.process(2).termDelay = 1
        h.reactor.advance(60)
        self.assertNoResult(d)
        h.reactor.advance(1)
        error = self.failureResultOf(d, DeployFailed).value
        self.assertIn("startTimeout", error.reason)
        self.assertIs(h.deployer.active, old)
        self.assertEqual(h.deployer.backends, [old])

    def test_failureInStatus(self):
        """
        The last deploy's failure is in the status.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.process(2).exit(3)
        self.failureResultOf(d)
        last = h.deployer.status()["lastDeploy"]
        self.assertFalse(last["ok"])
        self.assertIn("exited with code 3", last["error"])

    def test_status(self):
        """
        The status lists the backends and names the active one.
        """
        h = Harness(self)
        h.start()
        h.backend(1).requestStarted()
        h.deployer.redeploy()
        self.assertEqual(
            h.deployer.status(),
            {
                "active": 1,
                "routable": 1,
                "standby": None,
                "deploying": True,
                "backends": [
                    {
                        "generation": 1,
                        "port": 20000,
                        "pid": h.process(1).pgid,
                        "state": "active",
                        "inflight": 1,
                        "upgraded": 0,
                        "liveness": {
                            "unresponsive": False,
                            "failures": 0,
                            "lastError": None,
                        },
                        "directory": h.configs[0].cwd,
                    },
                    {
                        "generation": 2,
                        "port": 20001,
                        "pid": h.process(2).pgid,
                        "state": "starting",
                        "inflight": 0,
                        "upgraded": 0,
                        "liveness": None,
                        "directory": h.configs[0].cwd,
                    },
                ],
                "lastDeploy": {
                    "ok": True,
                    "generation": 1,
                    "port": 20000,
                    "pid": h.process(1).pgid,
                    "seconds": 0.0,
                },
                "verify": None,
            },
        )

    def test_reloadsConfig(self):
        """
        A redeploy reads the configuration again and launches with it.
        """
        h = Harness(self)
        h.start()
        h.newConfig(run="new-app $1 $2")
        h.deployer.redeploy()
        self.assertEqual(h.process(2).args[3], "new-app $1 $2")

    def test_startupKeysKept(self):
        """
        Keys only read at startup keep their first value on a redeploy, with
        a warning.
        """
        h = Harness(self)
        h.start()
        h.newConfig(run="new-app $1 $2", stateDir="/elsewhere", port="tcp:9")
        with capturedLogs() as events:
            h.deployer.redeploy()
        self.assertEqual(h.backend(2).config.stateDir, h.configs[0].stateDir)
        self.assertEqual(h.backend(2).config.port, h.configs[0].port)
        self.assertEqual(h.backend(2).config.run, "new-app $1 $2")
        self.assertIn(
            "port, stateDir changed in the config; that takes a restart of rainbowd",
            [formatEvent(event) for event in events],
        )

    def test_configError(self):
        """
        A configuration that no longer loads fails the redeploy with the
        error, and launches nothing.
        """
        h = Harness(self)
        old = h.start()
        h.configs.append(ConfigError('rainbow.conf.json: "run" is required'))
        d = h.deployer.redeploy()
        self.failureResultOf(d, ConfigError)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIs(h.deployer.active, old)

    def test_unexpectedError(self):
        """
        An unexpected error while deploying is logged with its traceback and
        reported as an internal error.
        """
        h = Harness(self)
        h.start()
        h.configs.append(ZeroDivisionError("a bug"))
        d = h.deployer.redeploy()
        self.failureResultOf(d, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            h.deployer.status()["lastDeploy"],
            {"ok": False, "error": "internal error in rainbowd; see its log"},
        )

    def test_noFreePort(self):
        """
        With every port in C{backendPorts} taken, the redeploy fails saying
        so.
        """
        h = Harness(self)
        h.start()
        h.newConfig(backendPorts=(20000, 20001))
        h.taken.add(20001)
        d = h.deployer.redeploy()
        self.assertIn("20000-20001", self.failureResultOf(d, DeployFailed).value.reason)


class CoalesceTests(SynchronousTestCase):
    def test_burst(self):
        """
        Ten redeploys at once cause two launches: the first caller gets the
        first, and the nine that came while it ran share the second.
        """
        h = Harness(self)
        h.start()
        ds = [h.deployer.redeploy() for i in range(10)]
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertEqual(self.successResultOf(ds[0]).generation, 2)
        for d in ds[1:]:
            self.assertNoResult(d)
        self.assertEqual(len(h.reactor.processes), 3)
        h.reactor.advance(0)
        h.healthy(3)
        self.assertEqual(
            [self.successResultOf(d).generation for d in ds[1:]], [3] * 9
        )
        self.assertEqual(len(h.reactor.processes), 3)

    def test_waitersShareFailure(self):
        """
        Callers sharing a redeploy share its failure too.
        """
        h = Harness(self)
        h.start()
        ds = [h.deployer.redeploy() for i in range(3)]
        h.process(2).exit(1)
        self.failureResultOf(ds[0], DeployFailed)
        h.process(3).exit(2)
        for d in ds[1:]:
            self.assertIn(
                "exited with code 2", self.failureResultOf(d, DeployFailed).value.reason
            )


class LimitTests(SynchronousTestCase):
    def test_maxBackends(self):
        """
        A redeploy that would run more than C{maxBackends} processes is
        refused, naming them, and nothing is stopped early.
        """
        h = Harness(self)
        h.start()
        h.backend(1).requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        h.backend(2).requestStarted()
        h.deployer.redeploy()
        h.healthy(3)
        d = h.deployer.redeploy()
        reason = self.failureResultOf(d, DeployRefused).value.reason
        self.assertIn("maxBackends is 3", reason)
        self.assertIn("generation 1 draining", reason)
        self.assertEqual(len(h.reactor.processes), 3)
        self.assertEqual(h.signals.sent, [])


class PortClashTests(SynchronousTestCase):
    def test_retryOnAddressInUse(self):
        """
        A new generation that fails saying its address is in use is retried on
        another port, and the redeploy succeeds there.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.process(2).emit(b"OSError: [Errno 98] Address already in use\n", 2)
        h.process(2).exit(1)
        self.assertNoResult(d)
        self.assertEqual(h.backend(3).port, 20002)
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).port, 20002)

    def test_retryWhenPortTaken(self):
        """
        A new generation that fails while another process holds its port is
        retried on another port.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.taken.add(20001)
        h.process(2).exit(1)
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).generation, 3)

    def test_brokenBuildNotRetried(self):
        """
        A new generation that fails for any other reason is not retried.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.process(2).exit(1)
        self.failureResultOf(d, DeployFailed)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_retriesBounded(self):
        """
        A port clash is retried a bounded number of times.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        for generation in (2, 3, 4):
            h.process(generation).emit(b"Address already in use\n")
            h.process(generation).exit(1)
        self.failureResultOf(d, DeployFailed)
        self.assertEqual(len(h.reactor.processes), 4)


class SupervisionTests(SynchronousTestCase):
    def test_crashReplaced(self):
        """
        When the active generation exits unexpectedly, a replacement is
        launched after the backoff delay with the last good configuration.
        """
        h = Harness(self)
        h.start()
        h.newConfig(run="broken")
        h.process(1).exit(signum=signal.SIGKILL)
        self.assertIsNone(h.deployer.active)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertEqual(h.process(2).args[3], "app $1 $2")
        d = h.deployer.whenRoutable()
        h.healthy(2)
        self.assertIs(self.successResultOf(d), h.backend(2))

    def test_crashWithOutputHeldReplaced(self):
        """
        When the active generation exits while a child it forked still holds
        its output open, a replacement is launched after the backoff delay
        all the same.
        """
        h = Harness(self)
        h.start()
        h.process(1).holdsPipes = True
        h.process(1).members.add(4243)
        h.process(1).termDelay = None
        h.process(1).exit(1)
        self.assertIsNone(h.deployer.active)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_backoffGrows(self):
        """
        Replacements that fail in a row are retried with a growing delay.
        """
        h = Harness(self)
        h.start()
        h.process(1).exit(1)
        h.reactor.advance(1.0)
        h.process(2).exit(1)
        h.reactor.advance(1.9)
        self.assertEqual(len(h.reactor.processes), 2)
        h.reactor.advance(0.1)
        self.assertEqual(len(h.reactor.processes), 3)
        h.process(3).exit(1)
        h.reactor.advance(3.9)
        self.assertEqual(len(h.reactor.processes), 3)
        h.reactor.advance(0.1)
        self.assertEqual(len(h.reactor.processes), 4)

    def test_backoffResets(self):
        """
        A backend that served for a while before crashing is replaced after
        the shortest delay again.
        """
        h = Harness(self)
        h.start()
        h.process(1).exit(1)
        h.reactor.advance(1.0)
        h.healthy(2)
        h.reactor.advance(3600)
        h.process(2).exit(1)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 3)

    def test_crashDuringRedeploy(self):
        """
        When the active generation crashes during a redeploy, the redeploy's
        generation replaces it and nothing else is launched.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.process(1).exit(1)
        h.reactor.advance(10)
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.successResultOf(d)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_crashDuringFailedRedeploy(self):
        """
        When the active generation crashes during a redeploy that fails, a
        replacement is launched afterwards.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.process(1).exit(1)
        h.process(2).exit(1)
        self.failureResultOf(d, DeployFailed)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 3)

    def test_drainingCrashNotReplaced(self):
        """
        A draining generation that exits is not replaced.
        """
        h = Harness(self)
        h.start()
        h.backend(1).requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        h.process(1).exit(1)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_redeployCancelsRestart(self):
        """
        A redeploy while a replacement waits for its backoff delay launches at
        once, and only once.
        """
        h = Harness(self)
        h.start()
        h.process(1).exit(1)
        d = h.deployer.redeploy()
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.successResultOf(d)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)


class _HeldLeftovers:
    """
    An L{rainbowd.app.leftovers.AppGroups} whose cleanup of leftovers ends when
    the test fires L{cleaned}.
    """

    def __init__(self):
        self.cleaned = Deferred()

    def stopLeftovers(self, killTimeout):
        return self.cleaned

    def record(self, backend):
        pass

    def forget(self, backend):
        pass


class PhaseTests(SynchronousTestCase):
    """
    The deployer's L{Phase} as it deploys, queues, restarts and stops.
    """

    def test_cleaningThenDeploying(self):
        """
        While leftovers are stopped the deployer is cleaning, with a
        redeploy asked meanwhile held; then the first deploy runs, with that
        redeploy queued behind it, then the redeploy; then it is idle.
        """
        h = Harness(self)
        groups = _HeldLeftovers()
        h.deployer._groups = groups
        self.assertIs(h.deployer.phase, Phase.IDLE)
        h.deployer.startService()
        self.assertIs(h.deployer.phase, Phase.CLEANING)
        d = h.deployer.redeploy()
        self.assertIs(h.deployer.phase, Phase.CLEANING)
        groups.cleaned.callback([])
        self.assertIs(h.deployer.phase, Phase.QUEUED)
        h.healthy(1)
        self.assertIs(h.deployer.phase, Phase.DEPLOYING)
        h.healthy(2)
        self.assertEqual(self.successResultOf(d).generation, 2)
        self.assertIs(h.deployer.phase, Phase.IDLE)

    def test_queuedThenDeploying(self):
        """
        A redeploy asked for during a deploy queues it; once that deploy is
        done, the queued one is under way and nothing is queued.
        """
        h = Harness(self)
        h.start()
        first = h.deployer.redeploy()
        self.assertIs(h.deployer.phase, Phase.DEPLOYING)
        second = h.deployer.redeploy()
        self.assertIs(h.deployer.phase, Phase.QUEUED)
        h.healthy(2)
        self.successResultOf(first)
        self.assertIs(h.deployer.phase, Phase.DEPLOYING)
        h.healthy(3)
        self.successResultOf(second)
        self.assertIs(h.deployer.phase, Phase.IDLE)

    def test_restartPending(self):
        """
        After a crash a restart is pending until its delay has passed, then
        it is deploying.
        """
        h = Harness(self)
        h.start()
        h.process(1).exit(1)
        self.assertIs(h.deployer.phase, Phase.RESTART_PENDING)
        h.reactor.advance(1.0)
        self.assertIs(h.deployer.phase, Phase.DEPLOYING)
        h.healthy(2)
        self.assertIs(h.deployer.phase, Phase.IDLE)

    def test_restartCalledOff(self):
        """
        A pending restart called off because the backend answers again
        leaves the deployer idle.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        h.start()
        h.failLiveness(1, 3)
        self.assertIs(h.deployer.phase, Phase.RESTART_PENDING)
        h.passLiveness(1)
        self.assertIs(h.deployer.phase, Phase.IDLE)
        h.reactor.advance(10)
        self.assertEqual(len(h.reactor.processes), 1)

    def test_stopping(self):
        """
        Once stopped the deployer is stopping, whatever it was doing, and
        stays so when the deploy under way ends.
        """
        h = Harness(self)
        h.start()
        h.deployer.redeploy()
        h.deployer.stopService()
        self.assertIs(h.deployer.phase, Phase.STOPPING)
        h.healthy(2)
        self.assertIs(h.deployer.phase, Phase.STOPPING)

    def test_invalidInputRaises(self):
        """
        An input the phase does not allow, such as the end of a deploy while
        none is under way, is an error rather than ignored.
        """
        h = Harness(self)
        h.start()
        self.assertRaises(InvalidInput, h.deployer._lifecycle.feed, Input.DONE)
        self.assertIs(h.deployer.phase, Phase.IDLE)


class StandbyTests(SynchronousTestCase):
    """
    With C{rollbackWindow} (60 s here), the generation traffic moved from
    is kept as the standby once drained.
    """

    def redeployed(self, **harness):
        """
        A harness where generation 2 replaced generation 1 by a redeploy.
        """
        h = Harness(self, rollbackWindow=60.0, **harness)
        h.start()
        d = h.deployer.redeploy()
        h.healthy(2)
        self.successResultOf(d)
        return h

    def test_oldKept(self):
        """
        After a redeploy the old generation, drained, stays alive as the
        standby, and C{/status} says so with the seconds left in its window.
        """
        h = self.redeployed()
        self.assertIs(h.deployer.standby, h.backend(1))
        self.assertIs(h.backend(1).state, State.STANDBY)
        self.assertEqual(h.signals.sent, [])
        h.reactor.advance(10)
        status = h.deployer.status()
        self.assertEqual(status["standby"], 1)
        [old] = [b for b in status["backends"] if b["generation"] == 1]
        self.assertEqual(old["state"], "standby")
        self.assertEqual(old["standbySecondsLeft"], 50.0)

    def test_keptAfterDrain(self):
        """
        An old generation with requests in flight drains first, and is the
        standby once they are done.
        """
        h = Harness(self, rollbackWindow=60.0)
        h.start()
        h.backend(1).requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        self.assertIs(h.backend(1).state, State.DRAINING)
        self.assertIs(h.deployer.standby, h.backend(1))
        h.backend(1).requestFinished()
        self.assertIs(h.backend(1).state, State.STANDBY)

    def test_windowEnds(self):
        """
        The standby is stopped once C{rollbackWindow} has passed since the
        switch.
        """
        h = self.redeployed()
        h.reactor.advance(59.9)
        self.assertIs(h.backend(1).state, State.STANDBY)
        h.reactor.advance(0.1)
        self.assertIsNone(h.deployer.standby)
        h.reactor.advance(0)
        self.assertIs(h.backend(1).state, State.STOPPED)
        self.assertEqual(h.deployer.status()["standby"], None)

    def test_laterDeployReplacesIt(self):
        """
        A later successful redeploy stops the standby there was, and keeps
        the generation it replaced instead, with a window of its own.
        """
        h = self.redeployed()
        h.reactor.advance(30)
        d = h.deployer.redeploy()
        self.assertIs(h.backend(1).state, State.STANDBY)
        h.healthy(3)
        self.successResultOf(d)
        h.reactor.advance(0)
        self.assertIs(h.backend(1).state, State.STOPPED)
        self.assertIs(h.deployer.standby, h.backend(2))
        h.reactor.advance(59.9)
        self.assertIs(h.backend(2).state, State.STANDBY)

    def test_failedDeployKeepsIt(self):
        """
        A redeploy that fails leaves the standby as it was.
        """
        h = self.redeployed()
        d = h.deployer.redeploy()
        h.process(3).exit(1)
        self.failureResultOf(d, DeployFailed)
        self.assertIs(h.deployer.standby, h.backend(1))

    def test_standbyChecked(self):
        """
        The standby's health check is asked every second; after
        C{livenessFailures} (3) failures in a row it is stopped and no
        longer a target.
        """
        h = self.redeployed()
        port = h.backend(1).port
        for _ in range(3):
            h.reactor.advance(1.0)
            [check] = h.pendingChecks(1)
            self.assertEqual(
                [p for (p, path, timeout, d) in h.health.probes if d is check],
                [port],
            )
            check.errback(TimeoutError("GET / did not answer within 2 s"))
        self.assertIsNone(h.deployer.standby)
        h.reactor.advance(0)
        self.assertIs(h.backend(1).state, State.STOPPED)

    def test_standbyPasses(self):
        """
        A standby that passes its checks stays the standby.
        """
        h = self.redeployed()
        for _ in range(5):
            h.reactor.advance(1.0)
            [check] = h.pendingChecks(1)
            check.callback(None)
        self.assertIs(h.deployer.standby, h.backend(1))

    def test_standbyExits(self):
        """
        A standby that exits is no longer a target, and nothing restarts.
        """
        h = self.redeployed()
        h.process(1).exit(1)
        self.assertIsNone(h.deployer.standby)
        self.assertIs(h.deployer.phase, Phase.IDLE)
        self.assertIs(h.deployer.active, h.backend(2))
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_maxBackendsStopsStandby(self):
        """
        C{maxBackends} counts the standby; a redeploy that would exceed it
        stops the standby first, then launches, rather than refusing.
        """
        h = self.redeployed()
        h.newConfig(maxBackends=2, rollbackWindow=60.0)
        d = h.deployer.redeploy()
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIsNone(h.deployer.standby)
        h.reactor.advance(0)
        self.assertIs(h.backend(1).state, State.STOPPED)
        self.assertEqual(len(h.reactor.processes), 3)
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).generation, 3)
        self.assertIs(h.deployer.standby, h.backend(2))

    def test_restartDoesNotKeep(self):
        """
        A replacement for an unresponsive generation does not keep that
        generation as the standby.
        """
        h = Harness(self, rollbackWindow=60.0)
        h.start()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        h.healthy(2)
        self.assertIsNone(h.deployer.standby)
        h.reactor.advance(0)
        self.assertIs(h.backend(1).state, State.STOPPED)

    def test_stopServiceStopsStandby(self):
        """
        Stopping rainbowd stops the standby with the rest.
        """
        h = self.redeployed()
        d = h.deployer.stopService()
        h.reactor.advance(0)
        self.successResultOf(d)
        self.assertIs(h.backend(1).state, State.STOPPED)
        self.assertIsNone(h.deployer.standby)

    def test_standbyEvent(self):
        """
        A C{standby} event says which generation is kept, for how long.
        """
        h = Harness(self, rollbackWindow=60.0)
        h.start()
        events = []
        h.deployer.observe(events.append)
        h.deployer.redeploy()
        h.healthy(2)
        [event] = [e for e in events if e.kind == "standby"]
        self.assertEqual((event.generation, event.details), (1, {"seconds": 60.0}))
        self.assertIn("standby", EVENT_KINDS)
        self.assertEqual(
            [e.kind for e in events if e.generation == 1], ["draining", "standby"]
        )


class RollbackTests(SynchronousTestCase):
    """
    Tests for L{Deployer.rollback}.
    """

    def redeployed(self, rollbackWindow=60.0):
        """
        A harness where generation 2 (running C{app2}, in a release
        directory of its own) replaced generation 1 by a redeploy.
        """
        h = Harness(self, rollbackWindow=rollbackWindow)
        h.start()
        release = os.path.abspath(self.mktemp())
        os.makedirs(release)
        h.newConfig(run="app2 $1 $2", rollbackWindow=rollbackWindow, cwd=release)
        d = h.deployer.redeploy()
        h.healthy(2)
        self.successResultOf(d)
        return h

    def test_toStandby(self):
        """
        With a standby, a rollback moves traffic back to it at once, with no
        launch, and the generation rolled back from drains and stops rather
        than becoming the standby.
        """
        h = self.redeployed()
        d = h.deployer.rollback()
        deployed = self.successResultOf(d)
        self.assertEqual(
            deployed,
            Deployed(generation=1, port=20000, pid=h.process(1).pid, seconds=0.0),
        )
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertIs(h.deployer.routable, h.backend(1))
        self.assertIs(h.backend(1).state, State.ACTIVE)
        self.assertIsNone(h.deployer.standby)
        h.reactor.advance(0)
        self.assertIs(h.backend(2).state, State.STOPPED)

    def test_toStandbyWatched(self):
        """
        The generation rolled back to gets liveness checks again, as the
        active one.
        """
        h = self.redeployed()
        h.reactor.advance(0.5)
        self.successResultOf(h.deployer.rollback())
        h.failLiveness(1, 3)
        self.assertIs(h.deployer.phase, Phase.RESTART_PENDING)

    def test_toStandbyStillDraining(self):
        """
        A rollback right after the switch, while the old generation still
        drains, moves traffic back to it too.
        """
        h = Harness(self, rollbackWindow=60.0)
        h.start()
        h.backend(1).requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        self.assertIs(h.backend(1).state, State.DRAINING)
        self.assertEqual(self.successResultOf(h.deployer.rollback()).generation, 1)
        self.assertIs(h.backend(1).state, State.ACTIVE)
        h.reactor.advance(100)
        self.assertIs(h.backend(1).state, State.ACTIVE)

    def test_events(self):
        """
        A rollback is a deploy of its own: C{deploying} with cause
        C{rollback} and who asked, C{switched}, C{draining}, C{deployed}.
        """
        h = self.redeployed()
        events = []
        h.deployer.observe(events.append)
        h.deployer.rollback(requester="127.0.0.1:5000")
        self.assertEqual(
            [(e.kind, e.generation) for e in events],
            [("deploying", None), ("switched", 1), ("draining", 2), ("deployed", 1)],
        )
        self.assertEqual(
            events[0].details,
            {"deploy": 3, "cause": "rollback", "requester": "127.0.0.1:5000", "message": None},
        )
        self.assertEqual(events[1].details, {"deploy": 3, "previous": 2})
        self.assertEqual(events[3].details["deploy"], 3)

    def test_cold(self):
        """
        Without a standby, a rollback launches the previous generation's
        configuration again, through the health check, and the generation
        rolled back from is stopped.
        """
        h = self.redeployed(rollbackWindow=0)
        d = h.deployer.rollback()
        self.assertEqual(len(h.reactor.processes), 3)
        self.assertEqual(h.process(3).args[3], "app $1 $2")
        self.assertNoResult(d)
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).generation, 3)
        self.assertEqual(h.deployer.config.run, "app $1 $2")
        self.assertIsNone(h.deployer.standby)
        h.reactor.advance(0)
        self.assertIs(h.backend(2).state, State.STOPPED)

    def test_coldFails(self):
        """
        A cold rollback whose generation never becomes healthy fails as a
        redeploy does, and the active generation serves on.
        """
        h = self.redeployed(rollbackWindow=0)
        d = h.deployer.rollback()
        h.process(3).exit(1)
        self.failureResultOf(d, DeployFailed)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_coldSameDirectory(self):
        """
        Without a standby, a previous generation that ran in the active
        one's directory is not launched again (its files may have changed
        since): the rollback is refused, saying so.
        """
        h = Harness(self)
        h.start()
        h.newConfig(run="app2 $1 $2")
        h.deployer.redeploy()
        h.healthy(2)
        failure = self.failureResultOf(h.deployer.rollback(), NothingToRollBack)
        self.assertIn("same directory as the active one", str(failure.value))
        self.assertEqual(len(h.reactor.processes), 2)

    def test_coldDirectoryGone(self):
        """
        Without a standby, and with the previous generation's directory
        gone, a rollback is refused, saying why and how to keep a standby.
        """
        h = Harness(self)
        oldDirectory = os.path.abspath(self.mktemp())
        os.makedirs(oldDirectory)
        h.configs[0] = attrs.evolve(h.configs[0], cwd=oldDirectory)
        h.deployer.config = h.configs[0]
        h.start()
        h.newConfig(cwd=h.configs[0].stateDir)
        h.deployer.redeploy()
        h.healthy(2)
        os.rmdir(oldDirectory)
        failure = self.failureResultOf(h.deployer.rollback(), NothingToRollBack)
        self.assertIn(f"directory {oldDirectory} is gone", str(failure.value))
        self.assertIn("rollbackWindow is 0", str(failure.value))
        self.assertEqual(len(h.reactor.processes), 2)

    def test_nothing(self):
        """
        Right after startup there is nothing to roll back to: the rollback
        is refused, and says how to keep a standby.
        """
        h = Harness(self)
        h.start()
        events = []
        h.deployer.observe(events.append)
        failure = self.failureResultOf(h.deployer.rollback(), NothingToRollBack)
        self.assertIsInstance(failure.value, DeployRefused)
        self.assertIn("nothing to roll back to", str(failure.value))
        self.assertIn("set rollbackWindow", str(failure.value))
        self.assertEqual([e.kind for e in events], ["deploying", "refused"])
        self.assertIs(h.deployer.phase, Phase.IDLE)

    def test_twice(self):
        """
        After a rollback to the standby there is nothing more to roll back
        to.
        """
        h = self.redeployed()
        self.successResultOf(h.deployer.rollback())
        failure = self.failureResultOf(h.deployer.rollback(), NothingToRollBack)
        self.assertIn("rolled back to", str(failure.value))

    def test_afterWindow(self):
        """
        Once the window has passed, the refusal says so, and a rollback is
        a cold one when the previous directory is there.
        """
        h = self.redeployed()
        h.reactor.advance(60)
        d = h.deployer.rollback()
        self.assertEqual(len(h.reactor.processes), 3)
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).generation, 3)

    def test_waitsForDeploy(self):
        """
        A rollback asked for during a redeploy waits for it, and then moves
        traffic back to the generation that deploy replaced.
        """
        h = self.redeployed()
        redeploy = h.deployer.redeploy()
        rollback = h.deployer.rollback()
        self.assertIs(h.deployer.phase, Phase.QUEUED)
        self.assertNoResult(rollback)
        h.healthy(3)
        self.assertEqual(self.successResultOf(redeploy).generation, 3)
        self.assertEqual(self.successResultOf(rollback).generation, 2)
        self.assertIs(h.deployer.active, h.backend(2))
        self.assertIs(h.deployer.phase, Phase.IDLE)

    def test_coalesced(self):
        """
        Rollbacks asked for one after the other during a deploy share one
        rollback; a redeploy asked after them is a deploy of its own, after.
        """
        h = self.redeployed()
        h.newConfig(maxBackends=5, rollbackWindow=60.0)
        h.deployer.redeploy()
        first = h.deployer.rollback()
        second = h.deployer.rollback()
        redeploy = h.deployer.redeploy()
        h.healthy(3)
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))
        self.assertIs(h.deployer.active, h.backend(2))
        self.assertNoResult(redeploy)
        h.healthy(4)
        self.assertEqual(self.successResultOf(redeploy).generation, 4)

    def test_stopping(self):
        """
        A rollback asked for while rainbowd stops is refused.
        """
        h = self.redeployed()
        h.deployer.stopService()
        self.failureResultOf(h.deployer.rollback(), DeployRefused)


class AutomaticRollbackTests(SynchronousTestCase):
    """
    While there is a standby (C{rollbackWindow} 60 s here), rainbowd rolls
    back by itself from a new generation that exits, fails its health
    checks, or answers too many 5xx.
    """

    def redeployed(self, **changes):
        h = Harness(self, rollbackWindow=60.0)
        h.start()
        h.newConfig(rollbackWindow=60.0, **changes)
        self.events = []
        h.deployer.observe(self.events.append)
        d = h.deployer.redeploy()
        h.healthy(2)
        self.successResultOf(d)
        del self.events[:]
        return h

    def assertRolledBack(self, h, cause, settle=0.0):
        """
        Generation 1 serves again, generation 2 is stopped (within
        C{settle} seconds), and the events say it was an automatic rollback
        for C{cause}.
        """
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertIs(h.deployer.routable, h.backend(1))
        self.assertIsNone(h.deployer.standby)
        passTime(h.reactor, settle)
        self.assertIs(h.backend(2).state, State.STOPPED)
        kinds = [e.kind for e in self.events]
        self.assertIn("rolledBack", kinds)
        [deploying] = [e for e in self.events if e.kind == "deploying"]
        self.assertEqual(deploying.details["cause"], "automaticRollback")
        [rolledBack] = [e for e in self.events if e.kind == "rolledBack"]
        self.assertEqual(
            {k: rolledBack.details[k] for k in ("cause", "from", "to", "deploy")},
            {"cause": cause, "from": 2, "to": 1, "deploy": 3},
        )
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIs(h.deployer.phase, Phase.IDLE)

    def failChecks(self, h, generation, times):
        for _ in range(times):
            h.reactor.advance(0.1)
            [check] = [d for d in h.pendingChecks(generation)]
            check.errback(TimeoutError("GET / did not answer within 2 s"))

    def test_exits(self):
        """
        A new generation that exits is rolled back from, rather than
        restarted: no launch, and the old process serves again.
        """
        h = self.redeployed()
        with capturedLogs() as logs:
            h.process(2).exit(1)
        self.assertRolledBack(h, "exited")
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)
        messages = [formatEvent(e) for e in logs]
        self.assertTrue(
            any("rolling back to generation 1, the standby" in m for m in messages),
            messages,
        )

    def test_exitsDuringDeploy(self):
        """
        A new generation that exits while another deploy is under way is
        not rolled back from: that deploy replaces it, as outside the
        window.
        """
        h = self.redeployed()
        d = h.deployer.redeploy()
        h.process(2).exit(1)
        self.assertIsNone(h.deployer.active)
        self.assertIs(h.deployer.standby, h.backend(1))
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).generation, 3)
        self.assertIs(h.deployer.active, h.backend(3))

    def test_unhealthy(self):
        """
        A new generation that fails C{rollbackCheckFailures} (3) health
        checks in a row, one every C{healthCheckInterval}, is rolled back
        from.
        """
        h = self.redeployed()
        self.failChecks(h, 2, 2)
        self.assertIs(h.deployer.active, h.backend(2))
        self.failChecks(h, 2, 1)
        self.assertRolledBack(h, "unhealthy")

    def test_healthyKeeps(self):
        """
        Health checks that fail now and then, never three in a row, roll
        nothing back.
        """
        h = self.redeployed()
        for _ in range(10):
            self.failChecks(h, 2, 2)
            h.reactor.advance(0.1)
            [check] = h.pendingChecks(2)
            check.callback(None)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_stoppedApp(self):
        """
        A new generation whose process is stopped (kill -STOP) is rolled
        back from after as many checks, without waiting for timeouts.
        """
        h = self.redeployed()
        h.process(2).stopped = True
        h.reactor.advance(0.1)
        h.reactor.advance(0.1)
        h.reactor.advance(0.1)
        self.assertRolledBack(h, "unhealthy", settle=10.0)

    def test_errorRate(self):
        """
        More 5xx than C{rollbackErrorRate} (0.25) of at least
        C{rollbackMinRequests} (20) responses roll back at the next check.
        """
        h = self.redeployed()
        tally = h.backend(2).tally
        tally.responses, tally.errors = 20, 6
        h.reactor.advance(0.1)
        self.assertRolledBack(h, "errorRate")
        [rolledBack] = [e for e in self.events if e.kind == "rolledBack"]
        self.assertIn("6 of its 20 responses", rolledBack.details["reason"])

    def test_errorRateAtLimit(self):
        """
        A share of 5xx equal to C{rollbackErrorRate}, or over fewer than
        C{rollbackMinRequests} responses, rolls nothing back.
        """
        h = self.redeployed()
        tally = h.backend(2).tally
        tally.responses, tally.errors = 20, 5
        h.reactor.advance(0.1)
        tally.responses, tally.errors = 19, 19
        h.reactor.advance(0.2)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_errorRateOff(self):
        """
        C{rollbackErrorRate} 1 never rolls back for 5xx.
        """
        h = self.redeployed(rollbackErrorRate=1.0)
        tally = h.backend(2).tally
        tally.responses, tally.errors = 100, 100
        h.reactor.advance(0.1)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_tallyFromSwitch(self):
        """
        The tally of a generation starts at its switch.
        """
        h = Harness(self, rollbackWindow=60.0)
        h.start()
        h.backend(1).tally.responses = 7
        h.deployer.redeploy()
        h.backend(2).tally.errors = 3
        h.healthy(2)
        self.assertEqual((h.backend(2).tally.responses, h.backend(2).tally.errors), (0, 0))

    def test_afterWindowLiveness(self):
        """
        Once the window has passed, the active generation is checked every
        C{livenessInterval} again, and one that fails C{livenessFailures}
        checks is replaced through the crash path, not rolled back.
        """
        h = self.redeployed()
        h.reactor.advance(60)
        self.assertIsNone(h.deployer.standby)
        for check in h.pendingChecks(2):
            check.callback(None)
        h.deployer._backoff = lambda attempt: 5.0
        h.failLiveness(2, 3)
        self.assertIs(h.deployer.phase, Phase.RESTART_PENDING)
        self.assertNotIn("rolledBack", [e.kind for e in self.events])

    def test_afterStandbyFailsLiveness(self):
        """
        Once the standby is gone (it failed its checks), the active
        generation is checked as outside the window.
        """
        h = self.redeployed()
        h.backend(1).liveness._threshold = 1
        h.reactor.advance(1.0)
        [check] = h.pendingChecks(1)
        check.errback(TimeoutError("no"))
        self.assertIsNone(h.deployer.standby)
        for check in h.pendingChecks(2):
            check.callback(None)
        self.assertEqual(h.backend(2).liveness._interval, 2.0)

    def test_manualRollbackEvents(self):
        """
        A rollback asked for by hand emits no C{rolledBack}: that is for
        the automatic ones.
        """
        h = self.redeployed()
        self.successResultOf(h.deployer.rollback())
        self.assertNotIn("rolledBack", [e.kind for e in self.events])


class LivenessTests(SynchronousTestCase):
    """
    The active generation is checked every C{livenessInterval} (2 s here),
    and replaced after C{livenessFailures} (3) failed checks in a row.
    """

    def test_activeChecked(self):
        """
        The active generation's C{healthCheckPath} is asked every
        C{livenessInterval}, within C{healthCheckTimeout}.
        """
        h = Harness(self)
        h.start()
        probes = len(h.health.probes)
        h.reactor.advance(1.9)
        self.assertEqual(len(h.health.probes), probes)
        h.reactor.advance(0.1)
        self.assertEqual(h.health.probes[-1][:3], (20000, "/", 2.0))

    def test_belowThreshold(self):
        """
        Two failed checks in a row start nothing, and show in C{/status}.
        """
        h = Harness(self)
        h.start()
        h.failLiveness(1, 2)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertEqual(
            h.deployer.status()["backends"][0]["liveness"],
            {
                "unresponsive": False,
                "failures": 2,
                "lastError": "GET / did not answer within 2 s",
            },
        )

    def test_successResets(self):
        """
        A passed check between failures resets their count.
        """
        h = Harness(self)
        h.start()
        h.failLiveness(1, 2)
        h.passLiveness(1)
        h.failLiveness(1, 2)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 1)

    def test_replaced(self):
        """
        The third failed check in a row is logged as a warning naming the
        generation, pid, port, count and error, and a replacement with the
        last good config is launched after the restart delay; the
        unresponsive generation gets traffic until the replacement is
        healthy, then drains and stops.
        """
        h = Harness(self)
        old = h.start()
        h.newConfig(run="broken")
        h.failLiveness(1, 2)
        with capturedLogs() as events:
            h.failLiveness(1)
        self.assertIn(
            f"generation 1 (pid {old.pgid}, port 20000), the active backend, "
            "failed 3 liveness checks in a row; the last: GET / did not answer "
            "within 2 s; starting a replacement; it gets traffic until that is "
            "healthy",
            [formatEvent(event) for event in events],
        )
        self.assertEqual(events[0]["log_level"].name, "warn")
        self.assertTrue(h.deployer.status()["backends"][0]["liveness"]["unresponsive"])
        h.reactor.advance(0.9)
        self.assertEqual(len(h.reactor.processes), 1)
        h.reactor.advance(0.1)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertEqual(h.process(2).args[3], "app $1 $2")
        self.assertIs(h.deployer.active, old)
        self.assertEqual(old.state, State.ACTIVE)
        h.healthy(2)
        self.assertIs(h.deployer.active, h.backend(2))
        self.assertEqual(old.state, State.STOPPING)
        h.reactor.advance(0)
        self.assertEqual(h.deployer.backends, [h.backend(2)])
        self.assertEqual(h.deployer.status()["lastDeploy"]["generation"], 2)

    def test_stoppedAppReplacedAndKilled(self):
        """
        An app stopped with SIGSTOP fails its checks without waiting for
        any answer, is replaced within C{livenessFailures} intervals plus
        the restart delay, and, since it heeds no SIGTERM, is killed with
        SIGKILL C{killTimeout} after it, leaving nothing.
        """
        h = Harness(self)
        old = h.start()
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0] * 3)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIn("is stopped", old.liveness.lastError)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertEqual(h.signals.sent[-1], ("group", old.pgid, signal.SIGTERM))
        h.reactor.advance(9.9)
        self.assertEqual(old.state, State.STOPPING)
        h.reactor.advance(0.1)
        self.assertEqual(h.signals.sent[-1], ("group", old.pgid, signal.SIGKILL))
        h.reactor.advance(0)
        self.assertEqual(old.state, State.STOPPED)
        self.assertFalse(h.signals.groupAlive(old.pgid))
        self.assertEqual(h.deployer.backends, [h.backend(2)])

    def test_replacementFails(self):
        """
        If the replacement fails, the unresponsive generation serves on,
        the failure is logged and reported, and another replacement follows
        after a longer delay.
        """
        h = Harness(self)
        old = h.start()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        with capturedLogs() as events:
            h.process(2).exit(3)
        h.reactor.advance(0)
        self.assertIs(h.deployer.active, old)
        self.assertIn("exited with code 3", h.deployer.status()["lastDeploy"]["error"])
        self.assertIn(
            "deploy failed: generation 2 on port 20001 exited with code 3 before "
            "it became healthy",
            [formatEvent(event) for event in events],
        )
        h.reactor.advance(1.9)
        self.assertEqual(len(h.reactor.processes), 2)
        h.reactor.advance(0.1)
        self.assertEqual(len(h.reactor.processes), 3)
        h.healthy(3)
        self.assertIs(h.deployer.active, h.backend(3))

    def test_replacementRefused(self):
        """
        A replacement that maxBackends refuses leaves the unresponsive
        generation serving, and is logged.
        """
        h = Harness(self)
        h.configs[0] = attrs.evolve(h.configs[0], maxBackends=1)
        h.deployer.config = h.configs[0]
        old = h.start()
        h.failLiveness(1, 3)
        with capturedLogs() as events:
            h.reactor.advance(1.0)
        self.assertIs(h.deployer.active, old)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIn("maxBackends is 1", h.deployer.status()["lastDeploy"]["error"])
        self.assertTrue(any("maxBackends is 1" in formatEvent(e) for e in events))

    def test_recoveredCallsOffReplacement(self):
        """
        A generation that passes a check again while its replacement waits
        for the restart delay keeps serving, and none is launched.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        old = h.start()
        h.failLiveness(1, 3)
        with capturedLogs() as events:
            h.passLiveness(1)
        self.assertIn(
            "generation 1 passes its liveness check again; its replacement is "
            "called off",
            [formatEvent(event) for event in events],
        )
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIs(h.deployer.active, old)
        self.assertFalse(old.liveness.failing)

    def test_recoveredWhileReplacing(self):
        """
        A generation that answers again once its replacement is launched is
        replaced all the same when the replacement is healthy.
        """
        h = Harness(self)
        old = h.start()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        h.passLiveness(1)
        h.healthy(2)
        self.assertIs(h.deployer.active, h.backend(2))
        self.assertEqual(old.state, State.STOPPING)

    def test_redeployUnderWay(self):
        """
        An active generation that stops answering during a redeploy is
        replaced by that redeploy, and nothing else is launched.
        """
        h = Harness(self)
        h.start()
        d = h.deployer.redeploy()
        h.failLiveness(1, 3)
        h.reactor.advance(30)
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.successResultOf(d)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_redeployUnderWayFails(self):
        """
        If the redeploy under way fails, a replacement of the unresponsive
        generation follows, with the last good config.
        """
        h = Harness(self)
        h.start()
        h.newConfig(run="broken")
        d = h.deployer.redeploy()
        h.failLiveness(1, 3)
        h.process(2).exit(1)
        self.failureResultOf(d, DeployFailed)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 3)
        self.assertEqual(h.process(3).args[3], "app $1 $2")

    def test_redeployDuringDelay(self):
        """
        A redeploy asked for while the replacement waits for its delay
        launches at once, and is the only launch.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        h.start()
        h.failLiveness(1, 3)
        d = h.deployer.redeploy()
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.successResultOf(d)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_redeployDuringReplacement(self):
        """
        A redeploy asked for while the replacement starts waits for it, then
        deploys on its own.
        """
        h = Harness(self)
        h.start()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        d = h.deployer.redeploy()
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertNoResult(d)
        self.assertEqual(len(h.reactor.processes), 3)
        h.healthy(3)
        self.assertEqual(self.successResultOf(d).generation, 3)

    def test_replacedNotChecked(self):
        """
        Once it drains, the replaced generation is no longer checked, and
        the replacement is.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        h.healthy(2)
        self.assertEqual(old.state, State.DRAINING)
        self.assertFalse(old.liveness.running)
        h.reactor.advance(20.0)
        self.assertEqual(h.pendingChecks(1), [])
        self.assertEqual(len(h.pendingChecks(2)), 1)

    def test_stoppedWhileDraining(self):
        """
        A draining generation that is stopped with SIGSTOP is not checked
        nor replaced: it is killed once its drain and C{killTimeout} are
        over, as any old version that ignores SIGTERM.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0] * 14 + [1.9])
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertEqual(h.pendingChecks(1), [])
        self.assertEqual(old.state, State.DRAINING)
        h.reactor.pump([0.1, 9.9])
        self.assertEqual(old.state, State.STOPPING)
        h.reactor.pump([0.1, 0])
        self.assertEqual(h.signals.sent[-1], ("group", old.pgid, signal.SIGKILL))
        self.assertEqual(old.state, State.STOPPED)
        self.assertIs(h.deployer.active, h.backend(2))

    def test_exitWhileReplacing(self):
        """
        An unresponsive generation that exits while its replacement starts
        is a crash, which that replacement answers: nothing else is
        launched.
        """
        h = Harness(self)
        h.start()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        h.process(1).exit(signum=signal.SIGKILL)
        self.assertIsNone(h.deployer.active)
        h.reactor.advance(30)
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertIs(h.deployer.active, h.backend(2))
        h.reactor.advance(30)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_stopDuringDelay(self):
        """
        Stopping rainbowd while a replacement waits for its delay launches
        none, and the stopped app is killed after C{killTimeout}.
        """
        h = Harness(self)
        old = h.start()
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0] * 3)
        d = h.deployer.stopService()
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIn(("group", old.pgid, signal.SIGKILL), h.signals.sent)
        self.successResultOf(d)
        self.assertFalse(h.signals.groupAlive(old.pgid))

    def test_stopDuringReplacement(self):
        """
        Stopping rainbowd while the replacement starts stops both, and
        nothing else is launched.
        """
        h = Harness(self)
        old = h.start()
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0, 2.0, 2.0, 1.0])
        self.assertEqual(len(h.reactor.processes), 2)
        d = h.deployer.stopService()
        h.reactor.advance(100)
        self.successResultOf(d)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertEqual(h.deployer.backends, [])

    def test_stopSaysWhatItWaitsFor(self):
        """
        Stopping rainbowd is observed as shutdown, naming the generations it
        waits for, and logs each second which ones still drain and what they
        hold, until they are gone.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        events = []
        h.deployer.observe(events.append)
        with capturedLogs() as logged:
            d = h.deployer.stopService()
            h.reactor.advance(1.0)
            old.requestFinished()
            h.reactor.advance(0)
            self.successResultOf(d)
            h.reactor.advance(5.0)
        self.assertEqual(
            (events[0].kind, events[0].details), ("shutdown", {"generations": [1]})
        )
        self.assertEqual(
            [
                formatEvent(event)
                for event in logged
                if formatEvent(event).startswith("shutting down")
            ],
            ["shutting down: waiting for generation 1 (draining: 1 request in flight)"]
            * 2,
        )

    def test_stopWhileChecking(self):
        """
        Stopping rainbowd stops the checks: a check under way is cancelled,
        and its failure replaces nothing.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        h.failLiveness(1, 2)
        h.reactor.advance(2.0)
        [check] = h.pendingChecks(1)
        h.deployer.stopService()
        self.assertTrue(check.called)
        self.assertFalse(old.liveness.running)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 1)

    def test_off(self):
        """
        With C{livenessInterval} 0, the active generation is not checked,
        stopped or not.
        """
        h = Harness(self)
        h.configs[0] = attrs.evolve(h.configs[0], livenessInterval=0)
        h.deployer.config = h.configs[0]
        old = h.start()
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        probes = len(h.health.probes)
        h.reactor.advance(600)
        self.assertEqual(len(h.health.probes), probes)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIsNone(h.deployer.status()["backends"][0]["liveness"])

    def test_eachGenerationItsOwnSettings(self):
        """
        The settings are those of the config the generation was deployed
        with: a redeploy with other ones applies them to the new generation.
        """
        h = Harness(self)
        h.start()
        h.newConfig(livenessInterval=10.0, livenessFailures=1)
        h.deployer.redeploy()
        h.healthy(2)
        h.reactor.advance(9.9)
        self.assertEqual(h.pendingChecks(2), [])
        h.reactor.advance(0.1)
        [check] = h.pendingChecks(2)
        check.errback(TimeoutError("GET / did not answer within 2 s"))
        self.assertTrue(h.backend(2).liveness.failing)


class StoppedAppTests(SynchronousTestCase):
    """
    An active generation whose process is found stopped (SIGSTOP, a
    debugger) gets no new requests once it is unresponsive: they wait for
    its replacement, or for it to answer again.
    """

    def stop(self, h, backend):
        """
        Stop C{backend}'s process group, and let C{livenessFailures} (3)
        checks find it stopped.
        """
        h.signals.signalGroup(backend.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0] * 3)

    def test_noNewRequests(self):
        """
        A stopped generation, once unresponsive, is no longer routable but
        is still the active one, in C{/status} too; the log says requests
        wait; those waiting go to the replacement once it is healthy.
        """
        h = Harness(self)
        old = h.start()
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0] * 2)
        self.assertIs(h.deployer.routable, old)
        with capturedLogs() as events:
            h.reactor.advance(2.0)
        self.assertIsNone(h.deployer.routable)
        self.assertIs(h.deployer.active, old)
        self.assertEqual(old.state, State.ACTIVE)
        status = h.deployer.status()
        self.assertEqual((status["active"], status["routable"]), (1, None))
        self.assertIn(
            "starting a replacement; new requests wait for the replacement, "
            "or for it to answer again",
            formatEvent(events[0]),
        )
        waiting = h.deployer.whenRoutable()
        h.reactor.advance(1.0)
        self.assertNoResult(waiting)
        h.healthy(2)
        self.assertIs(self.successResultOf(waiting), h.backend(2))
        self.assertIs(h.deployer.routable, h.backend(2))
        self.assertEqual(old.state, State.STOPPING)

    def test_silentKeepsTraffic(self):
        """
        A generation whose checks fail for want of an answer, its process
        running, stays routable until its replacement is healthy.
        """
        h = Harness(self)
        old = h.start()
        h.failLiveness(1, 3)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIs(h.deployer.routable, old)
        self.assertIsNone(h.deployer.whyNotRoutable())
        h.failLiveness(1, 3)
        self.assertIs(h.deployer.routable, old)
        h.healthy(2)
        self.assertIs(h.deployer.routable, h.backend(2))

    def test_stoppedOnceUnresponsive(self):
        """
        A generation unresponsive for want of an answer, then found stopped
        by a later check, is no longer routable from that check on.
        """
        h = Harness(self)
        old = h.start()
        h.deployer._backoff = lambda attempt: 5.0
        h.failLiveness(1, 3)
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        with capturedLogs() as events:
            h.reactor.advance(2.0)
        self.assertIsNone(h.deployer.routable)
        self.assertIn(
            f"generation 1, the active backend, is stopped: its process "
            f"{old.pgid} is stopped",
            "\n".join(formatEvent(event) for event in events),
        )

    def test_continuedDuringBoot(self):
        """
        A stopped generation that gets SIGCONT and passes a check while its
        replacement boots is routable again, and the requests waiting go to
        it; the replacement still takes over once healthy.
        """
        h = Harness(self)
        old = h.start()
        self.stop(h, old)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)
        waiting = h.deployer.whenRoutable()
        h.signals.signalGroup(old.pgid, signal.SIGCONT)
        with capturedLogs() as events:
            h.passLiveness(1)
        self.assertIs(self.successResultOf(waiting), old)
        self.assertIs(h.deployer.routable, old)
        self.assertIn(
            "generation 1 passes its liveness check again; new requests go to "
            "it again; its replacement takes over once healthy",
            [formatEvent(event) for event in events],
        )
        h.healthy(2)
        self.assertIs(h.deployer.routable, h.backend(2))
        self.assertEqual(old.state, State.STOPPING)

    def test_continuedDuringDelay(self):
        """
        A stopped generation that answers again before its replacement is
        launched is routable again, and no replacement is launched.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        old = h.start()
        self.stop(h, old)
        h.signals.signalGroup(old.pgid, signal.SIGCONT)
        h.passLiveness(1)
        self.assertIs(h.deployer.routable, old)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 1)

    def test_continuedButSilent(self):
        """
        A stopped generation that gets SIGCONT but still fails its checks
        stays out of rotation.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        old = h.start()
        self.stop(h, old)
        h.signals.signalGroup(old.pgid, signal.SIGCONT)
        h.failLiveness(1, 1)
        self.assertIsNone(h.deployer.routable)

    def test_replacementFails(self):
        """
        While the stopped generation is the only one, requests keep waiting,
        and what the proxy's 503 says names it, the failed replacement and
        its error, and the next attempt.
        """
        h = Harness(self)
        old = h.start()
        self.stop(h, old)
        h.reactor.advance(1.0)
        self.assertEqual(
            h.deployer.whyNotRoutable(),
            f"generation 1, the active one, is stopped (kill -STOP, or a "
            f"debugger: its process {old.pgid} runs nothing until SIGCONT), so "
            "new requests wait for its replacement; generation 2 is starting",
        )
        waiting = h.deployer.whenRoutable()
        h.process(2).exit(3)
        h.reactor.advance(0)
        self.assertNoResult(waiting)
        self.assertIsNone(h.deployer.routable)
        self.assertIs(h.deployer.active, old)
        self.assertEqual(
            h.deployer.whyNotRoutable(),
            f"generation 1, the active one, is stopped (kill -STOP, or a "
            f"debugger: its process {old.pgid} runs nothing until SIGCONT), so "
            "new requests wait for its replacement; the replacement, "
            "generation 2, failed: generation 2 on port 20001 exited with "
            "code 3 before it became healthy; another replacement is tried in "
            "2.0 s",
        )
        h.reactor.advance(2.0)
        h.healthy(3)
        self.assertIs(self.successResultOf(waiting), h.backend(3))
        self.assertIsNone(h.deployer.whyNotRoutable())

    def test_redeployMeanwhile(self):
        """
        A redeploy asked for while the stopped generation waits for its
        replacement is that replacement: once healthy it is routable, and
        nothing else is launched.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        old = h.start()
        self.stop(h, old)
        waiting = h.deployer.whenRoutable()
        d = h.deployer.redeploy()
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertEqual(self.successResultOf(d).generation, 2)
        self.assertIs(self.successResultOf(waiting), h.backend(2))
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 2)

    def test_redeployUnderWayFails(self):
        """
        A redeploy under way when the app is found stopped replaces it; if
        it fails, a replacement with the last good config follows, and
        meanwhile the 503 names the failed redeploy.
        """
        h = Harness(self)
        old = h.start()
        h.newConfig(run="broken")
        d = h.deployer.redeploy()
        self.stop(h, old)
        self.assertIsNone(h.deployer.routable)
        h.process(2).exit(1)
        self.failureResultOf(d, DeployFailed)
        self.assertIn(
            "the replacement, generation 2, failed: generation 2 on port 20001 "
            "exited with code 1",
            h.deployer.whyNotRoutable(),
        )
        h.reactor.advance(1.0)
        self.assertEqual(h.process(3).args[3], "app $1 $2")
        h.healthy(3)
        self.assertIs(h.deployer.routable, h.backend(3))

    def test_rainbowdStops(self):
        """
        Stopping rainbowd while requests wait for the stopped generation's
        replacement fails their waits at once, and any later one, with
        L{DeployRefused}; the stopped app is killed.
        """
        h = Harness(self)
        old = h.start()
        self.stop(h, old)
        waiting = h.deployer.whenRoutable()
        stopped = h.deployer.stopService()
        self.failureResultOf(waiting, DeployRefused)
        self.failureResultOf(h.deployer.whenRoutable(), DeployRefused)
        h.reactor.advance(100)
        self.successResultOf(stopped)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIn(("group", old.pgid, signal.SIGKILL), h.signals.sent)

    def test_maxBackends(self):
        """
        A replacement that maxBackends refuses, as an old version still
        drains, leaves requests waiting, and the 503 says why; once the old
        version is gone, the next attempt takes over.
        """
        h = Harness(self)
        h.configs[0] = attrs.evolve(h.configs[0], maxBackends=2)
        h.deployer.config = h.configs[0]
        first = h.start()
        first.requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        self.assertEqual(first.state, State.DRAINING)
        second = h.backend(2)
        self.stop(h, second)
        h.reactor.advance(1.0)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertIsNone(h.deployer.routable)
        self.assertIn(
            "the replacement failed: 2 backends are still alive and maxBackends "
            "is 2 (generation 1 draining, generation 2 active)",
            h.deployer.whyNotRoutable(),
        )
        first.requestFinished()
        h.reactor.advance(2.0)
        self.assertEqual(len(h.reactor.processes), 3)
        h.healthy(3)
        self.assertIs(h.deployer.routable, h.backend(3))

    def test_exits(self):
        """
        A stopped generation killed meanwhile (SIGKILL) is a crash: no
        generation is active, and a replacement follows.
        """
        h = Harness(self)
        old = h.start()
        self.stop(h, old)
        h.process(1).exit(signum=signal.SIGKILL)
        self.assertIsNone(h.deployer.active)
        self.assertIsNone(h.deployer.whyNotRoutable())
        h.reactor.advance(1.0)
        h.healthy(2)
        self.assertIs(h.deployer.routable, h.backend(2))


class StopTests(SynchronousTestCase):
    def test_stopDrains(self):
        """
        Stopping the deployer drains the active generation, stops it and fires
        once no process is left.
        """
        h = Harness(self)
        active = h.start()
        active.requestStarted()
        d = h.deployer.stopService()
        self.assertEqual(active.state, State.DRAINING)
        active.requestFinished()
        self.assertNoResult(d)
        h.reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual(h.deployer.backends, [])

    def test_noRouteOnceStopping(self):
        """
        Once stopping has begun no backend is routable, so a request that
        reaches the proxy late (its body slower than the wait for requests
        still arriving) is never sent to a generation told to stop, and
        waits for none: it is refused at once as rainbowd shuts down.
        """
        h = Harness(self)
        active = h.start()
        h.deployer.stopService()
        self.assertIn(("group", active.pgid, signal.SIGTERM), h.signals.sent)
        self.assertIsNone(h.deployer.routable)
        self.assertIsNone(h.deployer.whyNotRoutable())
        self.assertIn(
            "shutting down",
            self.failureResultOf(h.deployer.whenRoutable(), DeployRefused).value.reason,
        )

    def test_stopLetsDrainingFinish(self):
        """
        Stopping the deployer lets a generation that was already draining
        finish its requests in flight before it is sent SIGTERM.
        """
        h = Harness(self)
        old = h.start()
        old.requestStarted()
        h.deployer.redeploy()
        h.healthy(2)
        d = h.deployer.stopService()
        self.assertEqual(old.state, State.DRAINING)
        self.assertNotIn(("group", old.pgid, signal.SIGTERM), h.signals.sent)
        h.reactor.advance(0)
        self.assertNoResult(d)
        old.requestFinished()
        h.reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual(h.deployer.backends, [])

    def test_noPortRetryAfterStop(self):
        """
        Stopping during a redeploy whose generation said its address is in
        use refuses that redeploy without launching another generation.
        """
        h = Harness(self)
        h.start()
        first = h.deployer.redeploy()
        h.process(2).emit(b"OSError: [Errno 98] Address already in use\n", 2)
        d = h.deployer.stopService()
        h.reactor.advance(0)
        self.failureResultOf(first, DeployRefused)
        self.assertEqual(len(h.reactor.processes), 2)
        self.successResultOf(d)
        self.assertEqual(h.deployer.backends, [])

    def test_stopKills(self):
        """
        An app that ignores SIGTERM is killed C{killTimeout} after it.
        """
        h = Harness(self)
        active = h.start()
        h.process(1).termDelay = None
        d = h.deployer.stopService()
        h.reactor.advance(9.9)
        self.assertNoResult(d)
        h.reactor.advance(0.1)
        self.assertIn(("group", active.pgid, signal.SIGKILL), h.signals.sent)
        h.reactor.advance(0)
        self.successResultOf(d)

    def test_stopDuringRedeploy(self):
        """
        Stopping during a redeploy stops the new generation too, and refuses
        that redeploy, as rainbowd is shutting down, and the queued ones.
        """
        h = Harness(self)
        h.start()
        first = h.deployer.redeploy()
        queued = h.deployer.redeploy()
        d = h.deployer.stopService()
        self.failureResultOf(queued, DeployRefused)
        h.reactor.advance(0)
        self.assertIn(
            "shutting down", self.failureResultOf(first, DeployRefused).value.reason
        )
        self.successResultOf(d)
        self.assertEqual(h.deployer.backends, [])

    def test_redeployAfterStop(self):
        """
        A redeploy once stopping has begun is refused.
        """
        h = Harness(self)
        h.start()
        h.deployer.stopService()
        d = h.deployer.redeploy()
        self.assertIn("shutting down", self.failureResultOf(d, DeployRefused).value.reason)

    def test_noRestartAfterStop(self):
        """
        A crash while stopping launches no replacement, nor says it will.
        """
        h = Harness(self)
        h.start()
        h.backend(1).requestStarted()
        h.deployer.stopService()
        with capturedLogs() as events:
            h.process(1).exit(1)
        h.reactor.advance(100)
        self.assertEqual(len(h.reactor.processes), 1)
        self.assertIn(
            "generation 1, the active backend, exited with code 1",
            [formatEvent(event) for event in events],
        )


class EventTests(SynchronousTestCase):
    def observed(self, h):
        """
        The events C{h}'s deployer emits from now on; each must be of a
        kind L{EVENT_KINDS} documents (else the observer's failure is
        logged, which fails the test).
        """
        events = []

        def observe(event):
            self.assertIn(event.kind, EVENT_KINDS)
            events.append(event)

        h.deployer.observe(observe)
        return events

    def kinds(self, events):
        return [(e.kind, e.generation) for e in events]

    def test_redeploySteps(self):
        """
        A redeploy is observed as deploying, launching, healthy, switched,
        draining, deployed and, once the old generation is gone, stopped.
        """
        h = Harness(self)
        h.start()
        events = self.observed(h)
        h.reactor.advance(1.0)
        h.deployer.redeploy()
        h.reactor.advance(0.5)
        h.healthy(2)
        h.reactor.advance(0)
        self.assertEqual(
            self.kinds(events),
            [
                ("deploying", None),
                ("launching", 2),
                ("healthy", 2),
                ("switched", 2),
                ("draining", 1),
                ("deployed", 2),
                ("stopped", 1),
            ],
        )
        self.assertEqual(
            events[0].asJSON(),
            {
                "event": "deploying",
                "time": 1.0,
                "generation": None,
                "deploy": 2,
                "cause": "redeploy",
                "requester": None,
                "message": None,
            },
        )
        self.assertEqual(events[1].details, {"deploy": 2, "port": 20001})
        self.assertEqual(events[2].details, {"deploy": 2, "port": 20001, "seconds": 0.5})
        self.assertEqual(events[3].details, {"deploy": 2, "previous": 1})
        self.assertEqual(events[4].details, {"inflight": 0})
        self.assertEqual(events[5].details["ok"], True)
        self.assertEqual(
            events[6].details, {"state": "stopped", "exit": "exited with code 0"}
        )

    def test_unhealthy(self):
        """
        A starting generation whose health check answers the same error
        ten times in a row is observed as unhealthy, with its deploy, port,
        the error and the count, while the deploy goes on waiting.
        """
        h = Harness(self)
        h.start()
        events = self.observed(h)
        d = h.deployer.redeploy()
        for n in range(REPORT_EVERY):
            h.health.probes[-1][3].errback(Unhealthy("GET / answered 404"))
            h.reactor.advance(0.1)
        self.assertNoResult(d)
        self.assertEqual(
            self.kinds(events), [("deploying", None), ("launching", 2), ("unhealthy", 2)]
        )
        self.assertEqual(
            events[2].details,
            {"deploy": 2, "port": 20001, "error": "GET / answered 404", "checks": 10},
        )
        h.healthy(2)
        self.successResultOf(d)

    def test_firstDeploy(self):
        """
        The first deploy's cause is startup and it switches from nothing.
        """
        h = Harness(self)
        events = self.observed(h)
        h.start()
        self.assertEqual(
            events[0].details,
            {"deploy": 1, "cause": "startup", "requester": None, "message": None},
        )
        self.assertEqual(events[3].kind, "switched")
        self.assertIsNone(events[3].details["previous"])

    def test_requesterAndMessage(self):
        """
        A redeploy's C{deploying} event names who asked and what they said.
        """
        h = Harness(self)
        h.start()
        events = self.observed(h)
        h.deployer.redeploy(requester="127.0.0.1:5000", message="abc123")
        self.assertEqual(
            events[0].details,
            {
                "deploy": 2,
                "cause": "redeploy",
                "requester": "127.0.0.1:5000",
                "message": "abc123",
            },
        )

    def test_sharedDeployNamesLastRequester(self):
        """
        Redeploys asked for during a deploy share the next one, whose
        C{deploying} event names the last of them; the one after names
        nobody again.
        """
        h = Harness(self)
        h.start()
        h.deployer.redeploy(requester="a", message="one")
        events = self.observed(h)
        h.deployer.redeploy(requester="b", message="two")
        h.deployer.redeploy(requester="c", message="three")
        h.healthy(2)
        [deploying] = [e for e in events if e.kind == "deploying"]
        self.assertEqual(
            (deploying.details["deploy"], deploying.details["requester"],
             deploying.details["message"]),
            (3, "c", "three"),
        )
        h.healthy(3)
        h.process(3).exit(1)
        h.reactor.advance(10)
        restart = [e for e in events if e.kind == "deploying"][-1]
        self.assertEqual(
            (restart.details["cause"], restart.details["requester"],
             restart.details["message"]),
            ("restart", None, None),
        )

    def test_numbersGoOn(self):
        """
        Given the number of deploys before it, the deployer numbers its
        first deploy one more, so numbers go on across restarts.
        """
        h = Harness(self)
        h.deployer = Deployer(
            h.configs[0],
            h._loadConfig,
            h._newBackend,
            h.reactor,
            PortPicker(isFree=lambda port: True, cursor=20000),
            deploys=41,
        )
        events = self.observed(h)
        h.start()
        h.deployer.redeploy()
        self.assertEqual(
            [e.details["deploy"] for e in events if e.kind == "deploying"], [42, 43]
        )

    def test_failure(self):
        """
        A broken build is observed as failed, with the outcome's error and
        output, followed by its generation's stop.
        """
        h = Harness(self)
        h.start()
        events = self.observed(h)
        d = h.deployer.redeploy()
        h.process(2).emit(b"ImportError: x\n", 2)
        h.process(2).exit(3)
        h.reactor.advance(0)
        self.failureResultOf(d, DeployFailed)
        self.assertEqual(
            self.kinds(events),
            [("deploying", None), ("launching", 2), ("failed", 2), ("stopped", 2)],
        )
        self.assertEqual(events[2].details["output"], ["ImportError: x"])
        self.assertIn("exited with code 3", events[2].details["error"])
        self.assertEqual(events[3].details["state"], "failed")

    def test_refused(self):
        """
        A redeploy refused for maxBackends is observed as refused.
        """
        h = Harness(self)
        h.start()
        h.newConfig(maxBackends=1)
        events = self.observed(h)
        self.failureResultOf(h.deployer.redeploy(), DeployRefused)
        self.assertEqual(self.kinds(events), [("deploying", None), ("refused", None)])

    def test_portRetry(self):
        """
        A generation that lost its port is observed as retrying before the
        next launch.
        """
        h = Harness(self)
        h.start()
        events = self.observed(h)
        h.deployer.redeploy()
        h.process(2).emit(b"Address already in use\n", 2)
        h.process(2).exit(1)
        self.assertEqual(
            self.kinds(events)[:4],
            [("deploying", None), ("launching", 2), ("retrying", 2), ("launching", 3)],
        )
        self.assertEqual(events[2].details, {"deploy": 2, "port": 20001})
        self.assertEqual(events[3].details, {"deploy": 2, "port": 20002})

    def test_crash(self):
        """
        A crash of the active generation is observed as crashed and
        restarting, then a deploy whose cause is restart.
        """
        h = Harness(self)
        h.start()
        events = self.observed(h)
        h.process(1).exit(signum=signal.SIGKILL)
        self.assertEqual(
            self.kinds(events), [("crashed", 1), ("restarting", None), ("stopped", 1)]
        )
        self.assertIn("SIGKILL", events[0].details["exit"])
        self.assertEqual(events[1].details, {"delay": 1.0})
        h.reactor.advance(1.0)
        self.assertEqual(events[3].details["cause"], "restart")

    def test_unresponsive(self):
        """
        An active generation that fails its liveness checks is observed as
        unresponsive, with its port, pid, count and last error, then
        restarting, then a deploy whose cause is restart.
        """
        h = Harness(self)
        old = h.start()
        events = self.observed(h)
        h.failLiveness(1, 3)
        self.assertEqual(self.kinds(events), [("unresponsive", 1), ("restarting", None)])
        self.assertEqual(
            events[0].details,
            {
                "port": 20000,
                "pid": old.pgid,
                "failures": 3,
                "error": "GET / did not answer within 2 s",
                "stopped": False,
            },
        )
        self.assertEqual(events[1].details, {"delay": 1.0})
        h.reactor.advance(1.0)
        self.assertEqual(events[2].details["cause"], "restart")

    def test_unresponsiveStopped(self):
        """
        The unresponsive event of a generation whose process is stopped says
        so.
        """
        h = Harness(self)
        old = h.start()
        events = self.observed(h)
        h.signals.signalGroup(old.pgid, signal.SIGSTOP)
        h.reactor.pump([2.0] * 3)
        self.assertEqual(events[0].kind, "unresponsive")
        self.assertTrue(events[0].details["stopped"])

    def test_recovered(self):
        """
        An unresponsive generation that passes a check again is observed as
        recovered.
        """
        h = Harness(self)
        h.deployer._backoff = lambda attempt: 5.0
        old = h.start()
        h.failLiveness(1, 3)
        events = self.observed(h)
        h.passLiveness(1)
        self.assertEqual(self.kinds(events), [("recovered", 1)])
        self.assertEqual(events[0].details, {"port": 20000, "pid": old.pgid})

    def test_observerFails(self):
        """
        An observer that raises is logged and does not stop the deploy or the
        other observers.
        """
        h = Harness(self)
        events = []
        h.deployer.observe(lambda event: 1 / 0)
        h.deployer.observe(events.append)
        with capturedLogs() as logs:
            h.start()
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertEqual(len(events), 5)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 5)
        self.assertIn("an observer of deploying events failed", formatEvent(logs[0]))

    def test_stopObserving(self):
        """
        The function L{Deployer.observe} returns stops the observer.
        """
        h = Harness(self)
        events = []
        stop = h.deployer.observe(events.append)
        stop()
        h.start()
        self.assertEqual(events, [])


class AdoptTests(SynchronousTestCase):
    """
    A deployer that takes over the generations of the rainbowd it upgrades.
    """

    def adopt(self, h, generations=None, active=4, standby=None):
        over = Deferred()
        if generations is None:
            # A live pid to watch: this test's own process.
            generations = [
                {"generation": 4, "pid": os.getpid(), "pgid": 4321, "port": 20004,
                 "state": "active", "directory": None, "output": ["booted"]}
            ]
        h.deployer.adopt(generations, {}, active, standby, 4, over)
        for backend in h.deployer.backends:
            self.addCleanup(lambda b=backend: b.transport._pidfd and b.transport._pidfd.close())
        h.deployer.startService()
        return over

    def test_noLaunch(self):
        """
        Adopted generations are not launched: the active one serves at once,
        with its output tail, and nothing is cleaned up or started.
        """
        h = Harness(self)
        self.adopt(h)
        self.assertEqual(h.reactor.processes, [])
        active = h.deployer.active
        self.assertEqual((active.generation, active.port, active.state), (4, 20004, State.ACTIVE))
        self.assertIs(h.deployer.routable, active)
        self.assertEqual(list(active.output), ["booted"])
        self.assertEqual(active.pgid, 4321)
        [described] = h.deployer.status()["backends"]
        self.assertTrue(described["adopted"])
        self.assertIn("cannot be known", described["exitStatus"])

    def test_redeployWaitsForOldToExit(self):
        """
        A redeploy asked for while the old rainbowd still answers its
        requests waits until it has exited, then launches the next
        generation number.
        """
        h = Harness(self)
        over = self.adopt(h)
        d = h.deployer.redeploy()
        self.assertEqual(h.reactor.processes, [])
        self.assertIs(h.deployer.phase, Phase.ADOPTING)
        over.callback(None)
        self.assertEqual(len(h.reactor.processes), 1)
        h.healthy(1)
        self.assertEqual(self.successResultOf(d).generation, 5)

    def test_exitStatusUnknown(self):
        """
        An adopted app whose process ends is a crash whose exit status the
        log says cannot be known; its replacement waits until the old
        rainbowd has exited.
        """
        h = Harness(self)
        over = self.adopt(h)
        backend = h.deployer.active
        with capturedLogs() as events:
            backend.transport._ended()
            backend.transport._maybeEnded()
        self.assertIn("cannot be known", backend.exitReason)
        self.assertIn("cannot be known", " ".join(formatEvent(e) for e in events))
        self.assertIsNone(h.deployer.active)
        h.reactor.advance(60)
        self.assertEqual(h.reactor.processes, [])
        over.callback(None)
        h.reactor.advance(60)
        self.assertEqual(len(h.reactor.processes), 1)

    def test_standbyKept(self):
        """
        An adopted standby stays one for what was left of its window, and a
        rollback moves traffic back to it.
        """
        h = Harness(self, rollbackWindow=60)
        generations = [
            {"generation": 3, "pid": os.getpid(), "pgid": 300, "port": 20003,
             "state": "standby", "directory": None, "output": []},
            {"generation": 4, "pid": os.getpid(), "pgid": 400, "port": 20004,
             "state": "active", "directory": None, "output": []},
        ]
        over = self.adopt(h, generations, 4, {"generation": 3, "secondsLeft": 30})
        over.callback(None)
        self.assertEqual(h.deployer.standby.generation, 3)
        self.assertEqual(h.deployer.status()["standby"], 3)
        d = h.deployer.rollback()
        self.assertEqual(self.successResultOf(d).generation, 3)
        self.assertEqual(h.deployer.active.generation, 3)

    def test_handOverRefusedWhileDeploying(self):
        """
        The state is not handed over while a deploy is under way: the
        answer says to upgrade once it is done.
        """
        h = Harness(self)
        h.start()
        h.deployer.redeploy()
        with self.assertRaises(DeployRefused) as caught:
            h.deployer.handOverState()
        self.assertIn("upgrade once that is done", str(caught.exception))

    def test_handOverState(self):
        """
        The state handed over names each generation, its pid, group, port
        and state, and the counters.
        """
        h = Harness(self)
        h.start()
        state = h.deployer.handOverState()
        [generation] = state["generations"]
        self.assertEqual(
            {key: generation[key] for key in ("generation", "pid", "pgid", "port", "state")},
            {"generation": 1, "pid": h.process(1).pid, "pgid": h.process(1).pgid,
             "port": 20000, "state": "active"},
        )
        self.assertEqual((state["active"], state["generation"], state["deploys"]), (1, 1, 1))

    def test_abandonSignalsNothing(self):
        """
        After handing over, stopping the deployer signals no app process and
        leaves the generations running.
        """
        h = Harness(self)
        h.start()
        h.deployer.abandon()
        d = h.deployer.stopService()
        self.successResultOf(d)
        self.assertEqual(h.signals.sent, [])
        self.assertFalse(h.process(1).ended)
        h.process(1).exit(1)
        h.reactor.advance(60)
        self.assertEqual(len(h.reactor.processes), 1)

    def test_deploysWaitForHandover(self):
        """
        A redeploy asked for while the state is being handed over waits; if
        the upgrade fails, it then runs here.
        """
        h = Harness(self)
        h.start()
        h.deployer.handOverState()
        d = h.deployer.redeploy()
        self.assertEqual(len(h.reactor.processes), 1)
        h.deployer.keep()
        self.assertEqual(len(h.reactor.processes), 2)
        h.healthy(2)
        self.assertEqual(self.successResultOf(d).generation, 2)

    def test_stopWaitsForOldToExit(self):
        """
        Stopping while the old rainbowd still answers its requests signals
        no adopted app process until that rainbowd has exited.
        """
        h = Harness(self)
        over = self.adopt(h)
        d = h.deployer.stopService()
        h.reactor.advance(60)
        self.assertEqual(h.signals.sent, [])
        self.assertNoResult(d)
        over.callback(None)
        h.reactor.advance(1)
        self.assertNotEqual(h.signals.sent, [])

    def test_deploysRefusedOnceHandedOver(self):
        """
        A redeploy held during a handover that succeeded is refused, saying
        to ask the new rainbowd; none is launched here.
        """
        h = Harness(self)
        h.start()
        h.deployer.handOverState()
        d = h.deployer.redeploy()
        h.deployer.abandon()
        failure = self.failureResultOf(d, DeployRefused)
        self.assertIn("ask again, of it", str(failure.value))
        self.assertEqual(len(h.reactor.processes), 1)
