"""
Tests for L{rainbowd.app.leftovers}.
"""

import json
import os
import signal
import stat

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.backend import APP_VARIABLE, REAP_INTERVAL, Backend, State
from rainbowd.app.deployer import Deployer, DeployRefused
from rainbowd.app.leftovers import KILL_GRACE, AppGroups
from rainbowd.app.ports import PortPicker
from rainbowd.config import Config
from rainbowd.control.metrics import Metrics
from rainbowd.control.systemd import Readiness, RedeployOnHangup
from rainbowd.test.fakes import FakeHealthCheck, FakeProcessReactor, FakeSignals
from rainbowd.test.unit.test_systemd import RecordingNotifier

KILL_TIMEOUT = 5.0


class Fixture:
    """
    A state directory, the fake process table, and L{AppGroups} on them.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.stateDir = os.path.abspath(testCase.mktemp())
        os.makedirs(self.stateDir)
        self.reactor = FakeProcessReactor()
        self.signals = FakeSignals(self.reactor)
        self.groups = AppGroups(self.stateDir, self.signals, self.reactor)

    def leftover(self, generation: int = 1, stateDir=None, recorded=True):
        """
        A process group still alive from an earlier rainbowd, with its
        record.
        """
        env = {APP_VARIABLE: stateDir or self.stateDir}
        process = self.reactor.spawnProcess(ProcessProtocol(), "setsid", env=env)
        if recorded:
            self.writeRecord(process.pgid, generation)
        return process

    def writeRecord(self, pgid: int, generation: int = 1, leader=None) -> str:
        path = os.path.join(self.stateDir, f"app-{pgid}.json")
        record = {"pgid": pgid, "generation": generation, "port": 20000, "run": "app"}
        if leader is not None:
            record["leader"] = leader
        with open(path, "w") as f:
            json.dump(record, f)
        return path

    def records(self):
        return sorted(n for n in os.listdir(self.stateDir) if n.startswith("app-"))

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, in steps of L{REAP_INTERVAL}.
        """
        for _ in range(round(seconds / REAP_INTERVAL)):
            self.reactor.advance(REAP_INTERVAL)


class StopLeftoversTests(SynchronousTestCase):
    """
    Tests for L{AppGroups.stopLeftovers}.
    """

    def test_nothingRecorded(self) -> None:
        """
        With no record, nothing is signalled and the result is at once an
        empty list.
        """
        fixture = Fixture(self)
        self.assertEqual(
            self.successResultOf(fixture.groups.stopLeftovers(KILL_TIMEOUT)), []
        )
        self.assertEqual(fixture.signals.sent, [])

    def test_aliveGroupTerminated(self) -> None:
        """
        A recorded group still alive gets SIGTERM, and the result, its
        record, comes once the group is empty; the record is then removed.
        """
        fixture = Fixture(self)
        process = fixture.leftover(generation=4)
        process.termDelay = 1.0
        with capturedLogs() as events:
            d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        self.assertEqual(fixture.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertNoResult(d)
        fixture.advance(1.0 + REAP_INTERVAL)
        [record] = self.successResultOf(d)
        self.assertEqual(record["generation"], 4)
        self.assertEqual(fixture.records(), [])
        self.assertIn(
            f"generation 4 of an earlier rainbowd (process group {process.pgid}, "
            "port 20000) is still running; stopping it",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_ignoresSigterm(self) -> None:
        """
        A group still alive C{killTimeout} after SIGTERM gets SIGKILL.
        """
        fixture = Fixture(self)
        process = fixture.leftover()
        process.termDelay = None
        with capturedLogs() as events:
            d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
            fixture.advance(KILL_TIMEOUT - REAP_INTERVAL)
            self.assertNotIn(signal.SIGKILL, [s for _, _, s in fixture.signals.sent])
            fixture.advance(2 * REAP_INTERVAL)
            self.assertIn(("group", process.pgid, signal.SIGKILL), fixture.signals.sent)
            fixture.advance(REAP_INTERVAL)
        self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertFalse(fixture.signals.groupAlive(process.pgid))
        self.assertIn(
            f"process groups {process.pgid} did not stop within killTimeout "
            f"({KILL_TIMEOUT:g} s) of SIGTERM; sending SIGKILL",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_sigkillOnlyToThoseLeft(self) -> None:
        """
        Of two groups, only the one still alive C{killTimeout} after SIGTERM
        gets SIGKILL: the other's id, free since, may be a stranger's.
        """
        fixture = Fixture(self)
        quick, stubborn = fixture.leftover(1), fixture.leftover(2)
        stubborn.termDelay = None
        d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        fixture.advance(KILL_TIMEOUT + 2 * REAP_INTERVAL)
        self.assertEqual(len(self.successResultOf(d)), 2)
        self.assertEqual(
            [(pgid, signum) for kind, pgid, signum in fixture.signals.sent
             if signum == signal.SIGKILL],
            [(stubborn.pgid, signal.SIGKILL)],
        )
        self.assertIn(("group", quick.pgid, signal.SIGTERM), fixture.signals.sent)
        self.assertEqual(fixture.records(), [])

    def test_slowToDieAfterSigkill(self) -> None:
        """
        A group that takes a while to empty after SIGKILL (its processes
        are in the kernel) is waited for, up to L{KILL_GRACE}, and not
        given up on.
        """
        fixture = Fixture(self)
        process = fixture.leftover()

        def deliver(pid: int, signum: int) -> None:
            if signum == signal.SIGKILL:
                fixture.reactor.callLater(2.0, process.members.clear)

        process.deliver = deliver
        with capturedLogs() as events:
            d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
            fixture.advance(KILL_TIMEOUT + 1.0)
            self.assertNoResult(d)
            fixture.advance(1.0 + 2 * REAP_INTERVAL)
        self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertNotIn("outlived", "\n".join(formatEvent(e) for e in events))

    def test_strangerByTheSignal(self) -> None:
        """
        A group found the app's that is a stranger's by the time it would
        be signalled (its app exited and the id was taken) is not
        signalled, then or later; its record is removed.
        """
        fixture = Fixture(self)
        process = fixture.leftover()
        looks = iter([True])
        fixture.signals.groupHas = lambda pgid, variable, value: next(looks, False)
        d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        fixture.advance(KILL_TIMEOUT + KILL_GRACE + 3 * REAP_INTERVAL)
        self.successResultOf(d)
        self.assertEqual(fixture.signals.sent, [])
        self.assertTrue(fixture.signals.groupAlive(process.pgid))
        self.assertEqual(fixture.records(), [])

    def test_workersLeftByDeadShell(self) -> None:
        """
        A group whose first process is gone but whose workers live on is
        stopped as a whole.
        """
        fixture = Fixture(self)
        process = fixture.leftover()
        process.members |= {process.pid + 100, process.pid + 101}
        d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        fixture.advance(REAP_INTERVAL)
        self.assertEqual(process.members, set())
        self.assertEqual(len(self.successResultOf(d)), 1)

    def test_outlivesSigkill(self) -> None:
        """
        A group that outlives SIGKILL by L{KILL_GRACE} is given up on, with
        an error in the log, so that rainbowd still starts.
        """
        fixture = Fixture(self)
        process = fixture.leftover()
        process.termDelay = None
        process.deliver = lambda pid, signum: None
        with capturedLogs() as events:
            d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
            fixture.advance(KILL_TIMEOUT + KILL_GRACE - REAP_INTERVAL)
            self.assertNoResult(d)
            fixture.advance(4 * REAP_INTERVAL)
        self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertIn(
            f"process groups {process.pgid} outlived SIGKILL",
            "\n".join(formatEvent(e) for e in events),
        )
        self.assertEqual(fixture.records(), [])

    def test_goneGroupForgotten(self) -> None:
        """
        A record whose group is gone is removed without any signal.
        """
        fixture = Fixture(self)
        fixture.writeRecord(4242)
        self.assertEqual(
            self.successResultOf(fixture.groups.stopLeftovers(KILL_TIMEOUT)), []
        )
        self.assertEqual(fixture.signals.sent, [])
        self.assertEqual(fixture.records(), [])

    def test_strangerNotSignalled(self) -> None:
        """
        A live group that got the recorded id but is not an app of this
        state directory is never signalled; its record is removed.
        """
        fixture = Fixture(self)
        stranger = fixture.leftover(stateDir="/srv/other/.rainbowd")
        self.assertEqual(
            self.successResultOf(fixture.groups.stopLeftovers(KILL_TIMEOUT)), []
        )
        self.assertEqual(fixture.signals.sent, [])
        self.assertTrue(fixture.signals.groupAlive(stranger.pgid))
        self.assertEqual(fixture.records(), [])

    def test_markerOverwritten(self) -> None:
        """
        A live group none of whose processes shows the marker any more (the
        app overwrote its environment, as Perl's C{$0 = ...} does) is
        stopped all the same when its leader is still the process
        recorded.
        """
        fixture = Fixture(self)
        process = fixture.reactor.spawnProcess(ProcessProtocol(), "setsid", env={})
        fixture.writeRecord(process.pgid, leader=f"started:{process.pgid}")
        d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        fixture.advance(REAP_INTERVAL)
        [found] = self.successResultOf(d)
        self.assertEqual(found["pgid"], process.pgid)
        self.assertEqual(fixture.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertFalse(fixture.signals.groupAlive(process.pgid))
        self.assertEqual(fixture.records(), [])

    def test_markerOverwrittenLeaderGone(self) -> None:
        """
        A group known by its leader gets SIGKILL after C{killTimeout} even
        if the leader exited on SIGTERM and only workers, without the
        marker, are left.
        """
        fixture = Fixture(self)
        process = fixture.reactor.spawnProcess(ProcessProtocol(), "setsid", env={})
        process.termDelay = None
        worker = process.pid + 100
        process.members.add(worker)
        fixture.writeRecord(process.pgid, leader=f"started:{process.pgid}")
        d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        self.assertEqual(fixture.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        process.members.discard(process.pid)
        fixture.advance(KILL_TIMEOUT + REAP_INTERVAL)
        self.assertIn(("group", process.pgid, signal.SIGKILL), fixture.signals.sent)
        self.assertNotIn(worker, process.members)
        fixture.advance(REAP_INTERVAL)
        self.assertEqual(len(self.successResultOf(d)), 1)

    def test_otherLeaderNotSignalled(self) -> None:
        """
        A live group without the marker whose leader is not the process
        recorded (its pid was reused since) is never signalled.
        """
        fixture = Fixture(self)
        stranger = fixture.reactor.spawnProcess(ProcessProtocol(), "setsid", env={})
        fixture.writeRecord(stranger.pgid, leader="started:1")
        self.assertEqual(
            self.successResultOf(fixture.groups.stopLeftovers(KILL_TIMEOUT)), []
        )
        self.assertEqual(fixture.signals.sent, [])
        self.assertTrue(fixture.signals.groupAlive(stranger.pgid))

    def test_unreadableRecord(self) -> None:
        """
        A file that is not a record is logged and removed; other files in
        the state directory are left alone.
        """
        fixture = Fixture(self)
        with open(os.path.join(fixture.stateDir, "app-7.json"), "w") as f:
            f.write("{garbled")
        with open(os.path.join(fixture.stateDir, "generation-1.pid"), "w") as f:
            f.write("7\n")
        with capturedLogs() as events:
            self.successResultOf(fixture.groups.stopLeftovers(KILL_TIMEOUT))
        self.assertEqual(os.listdir(fixture.stateDir), ["generation-1.pid"])
        self.assertIn(
            "is not a record of an app process group",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_straysStopped(self) -> None:
        """
        Processes carrying this state directory's marker outside any
        recorded group -- an app's C{setsid} children, of any generation --
        are stopped after the groups: SIGTERM, then SIGKILL after
        C{killTimeout}; the cleanup ends when they are gone.
        """
        fixture = Fixture(self)
        fixture.leftover()
        marker = {APP_VARIABLE: fixture.stateDir}
        fixture.signals.strays[5000] = {**marker, "RAINBOWD_GENERATION": "1"}
        fixture.signals.strays[5001] = {**marker, "RAINBOWD_GENERATION": "7"}
        fixture.signals.stubborn.add(5001)
        fixture.signals.strays[5002] = {APP_VARIABLE: "/elsewhere"}
        fixture.signals.strays[5003] = {}
        with capturedLogs() as events:
            d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
            fixture.advance(REAP_INTERVAL)
            self.assertEqual(
                [s for s in fixture.signals.sent if s[0] == "marked"],
                [("marked", 5000, signal.SIGTERM), ("marked", 5001, signal.SIGTERM)],
            )
            self.assertNoResult(d)
            fixture.advance(KILL_TIMEOUT + 2 * REAP_INTERVAL)
        self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertIn(("marked", 5001, signal.SIGKILL), fixture.signals.sent)
        self.assertEqual(sorted(fixture.signals.strays), [5002, 5003])
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("processes 5000, 5001 of an earlier rainbowd's app", text)
        self.assertIn("processes 5001 did not stop within killTimeout", text)

    def test_strayOutlivesSigkill(self) -> None:
        """
        A stray still there L{KILL_GRACE} after SIGKILL is given up on with
        an error in the log, so that rainbowd still starts.
        """
        fixture = Fixture(self)
        fixture.signals.strays[5000] = {APP_VARIABLE: fixture.stateDir}
        fixture.signals.unkillable.add(5000)
        with capturedLogs() as events:
            d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
            fixture.advance(KILL_TIMEOUT + KILL_GRACE + 3 * REAP_INTERVAL)
        self.assertEqual(self.successResultOf(d), [])
        self.assertIn(("marked", 5000, signal.SIGKILL), fixture.signals.sent)
        self.assertIn(
            f"processes 5000 outlived SIGKILL by {KILL_GRACE:g} s; giving up on them",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_straysWithoutRecords(self) -> None:
        """
        Strays are stopped even when no record is left, as after a clean
        stop of an older rainbowd that did not look for them.
        """
        fixture = Fixture(self)
        fixture.signals.strays[5000] = {APP_VARIABLE: fixture.stateDir}
        d = fixture.groups.stopLeftovers(KILL_TIMEOUT)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(fixture.signals.strays, {})

    def test_linkedRecordIgnored(self) -> None:
        """
        A record that is a symbolic link is not followed: it is logged and
        removed, its target left alone, and the group it names is not
        signalled.
        """
        fixture = Fixture(self)
        process = fixture.leftover(recorded=False)
        target = fixture.writeRecord(process.pgid)
        elsewhere = os.path.abspath(self.mktemp())
        os.rename(target, elsewhere)
        os.symlink(elsewhere, target)
        with capturedLogs() as events:
            self.successResultOf(fixture.groups.stopLeftovers(KILL_TIMEOUT))
        self.assertEqual(fixture.records(), [])
        self.assertTrue(os.path.exists(elsewhere))
        self.assertEqual(fixture.signals.sent, [])
        self.assertIn(
            "is not a record of an app process group",
            "\n".join(formatEvent(e) for e in events),
        )


class DeployerLeftoversTests(SynchronousTestCase):
    """
    How L{Deployer} records its generations and stops an earlier
    rainbowd's before the first launch.
    """

    def setUp(self) -> None:
        self.fixture = Fixture(self)
        self.health = FakeHealthCheck()
        self.config = Config(
            run="app $1 $2",
            cwd=self.fixture.stateDir,
            stateDir=self.fixture.stateDir,
            killTimeout=KILL_TIMEOUT,
        )
        self.deployer = Deployer(
            self.config,
            lambda: self.config,
            self.newBackend,
            self.fixture.reactor,
            PortPicker(isFree=lambda port: True, cursor=20000),
            groups=self.fixture.groups,
        )
        self.backends: list = []

    def newBackend(self, config, generation, port, onExit):
        backend = Backend(
            config,
            generation,
            port,
            self.fixture.reactor,
            self.health,
            self.fixture.signals,
            onExit,
        )
        self.backends.append(backend)
        return backend

    def test_generationRecorded(self) -> None:
        """
        Each generation's process group is recorded when it is launched,
        and the record removed once the group is gone.
        """
        self.deployer.startService()
        [backend] = self.backends
        self.assertEqual(self.fixture.records(), [f"app-{backend.pgid}.json"])
        with open(os.path.join(self.fixture.stateDir, f"app-{backend.pgid}.json")) as f:
            self.assertEqual(
                json.load(f),
                {
                    "pgid": backend.pgid,
                    "generation": 1,
                    "port": 20000,
                    "run": "app $1 $2",
                    "leader": f"started:{backend.pgid}",
                },
            )
        self.health.answer(backend.port)
        self.deployer.stopService()
        self.fixture.advance(REAP_INTERVAL)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(self.fixture.records(), [])

    def test_recordPrivate(self) -> None:
        """
        A record, which holds the run line, is readable by rainbowd's user
        alone.
        """
        self.deployer.startService()
        [backend] = self.backends
        path = os.path.join(self.fixture.stateDir, f"app-{backend.pgid}.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_plantedTemporary(self) -> None:
        """
        A link planted as a record's temporary file after startup is not
        written through: the record is written in its place.
        """
        victim = os.path.abspath(self.mktemp())
        with open(victim, "w") as f:
            f.write("precious\n")
        self.deployer.startService()
        [first] = self.backends
        self.health.answer(first.port)
        following = first.pgid + 1
        os.symlink(
            victim, os.path.join(self.fixture.stateDir, f"app-{following}.json.tmp")
        )
        self.deployer.redeploy()
        second = self.backends[1]
        self.assertEqual(second.pgid, following)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n")
        path = os.path.join(self.fixture.stateDir, f"app-{following}.json")
        self.assertIn(f"app-{following}.json", self.fixture.records())
        self.assertNotIn(f"app-{following}.json.tmp", self.fixture.records())
        self.assertFalse(os.path.islink(path))
        with open(path) as f:
            self.assertEqual(json.load(f)["generation"], 2)

    def test_cleanupErrorLogged(self) -> None:
        """
        An unexpected error while looking for leftovers is logged with its
        traceback, and generation 1 is launched all the same.
        """
        self.fixture.groups._records = lambda: 1 / 0
        with capturedLogs() as events:
            self.deployer.startService()
        self.assertEqual(len(self.backends), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn(
            "stopping leftover app processes failed",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_recordNotWritten(self) -> None:
        """
        A record that cannot be written is logged, and the generation runs
        all the same.
        """
        os.makedirs(os.path.join(self.fixture.stateDir, "app-1001.json.tmp"))
        with capturedLogs() as events:
            self.deployer.startService()
        self.health.answer(20000)
        self.assertIs(self.backends[0].state, State.ACTIVE)
        self.assertIn(
            "cannot record generation 1's process group",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_leftoversStoppedBeforeFirstLaunch(self) -> None:
        """
        Generation 1 is launched only once the groups an earlier rainbowd
        left are gone.
        """
        leftover = self.fixture.leftover()
        leftover.termDelay = 2.0
        self.deployer.startService()
        self.assertEqual(self.backends, [])
        self.fixture.advance(2.0 + REAP_INTERVAL)
        self.assertFalse(self.fixture.signals.groupAlive(leftover.pgid))
        self.assertEqual(len(self.backends), 1)
        self.assertEqual(self.fixture.records(), [f"app-{self.backends[0].pgid}.json"])

    def test_redeployDuringCleanupWaits(self) -> None:
        """
        A redeploy asked for while leftovers are being stopped waits for
        generation 1, then launches generation 2.
        """
        leftover = self.fixture.leftover()
        leftover.termDelay = 2.0
        self.deployer.startService()
        d = self.deployer.redeploy()
        self.assertEqual(self.deployer.status()["deploying"], True)
        self.fixture.advance(2.0 + REAP_INTERVAL)
        self.health.answer(self.backends[0].port)
        self.assertNoResult(d)
        self.assertEqual(len(self.backends), 2)
        self.health.answer(self.backends[1].port)
        self.assertEqual(self.successResultOf(d).generation, 2)

    def test_stopDuringCleanup(self) -> None:
        """
        Stopping rainbowd while leftovers are being stopped waits for them,
        launches nothing, and refuses a redeploy that was waiting.
        """
        leftover = self.fixture.leftover()
        leftover.termDelay = 2.0
        self.deployer.startService()
        redeploy = self.deployer.redeploy()
        stopped = self.deployer.stopService()
        self.failureResultOf(redeploy, DeployRefused)
        self.assertNoResult(stopped)
        self.fixture.advance(2.0 + REAP_INTERVAL)
        self.successResultOf(stopped)
        self.assertEqual(self.backends, [])
        self.assertFalse(self.deployer.status()["deploying"])

    def test_hangupDuringCleanup(self) -> None:
        """
        A SIGHUP while leftovers are being stopped redeploys after
        generation 1: systemd hears READY=1 once generation 1 serves and no
        reload, and the metrics count a startup deploy and a redeploy.
        """
        notifier = RecordingNotifier()
        readiness = Readiness(self.deployer, notifier, "tcp:7000")
        readiness.startService()
        metrics = Metrics(self.deployer, processMetrics=False)
        hangup = RedeployOnHangup(
            self.fixture.reactor, self.deployer.redeploy, readiness, lambda *a: None
        )
        hangup.startService()
        self.fixture.leftover().termDelay = 2.0
        self.deployer.startService()
        hangup.redeploy()  # what the SIGHUP handler has the reactor run
        self.fixture.advance(2.0 + REAP_INTERVAL)
        self.health.answer(self.backends[0].port)
        self.health.answer(self.backends[1].port)
        self.assertEqual(
            notifier.sent,
            [
                ["READY=1", "STATUS=serving generation 1 on tcp:7000"],
                ["STATUS=serving generation 2 on tcp:7000"],
            ],
        )
        deploys = {
            cause: metrics.registry.get_sample_value(
                "rainbowd_deploys_total", {"outcome": "deployed", "cause": cause}
            )
            for cause in ("startup", "redeploy")
        }
        self.assertEqual(deploys, {"startup": 1.0, "redeploy": 1.0})
