"""
Tests for L{rainbowd.app.backend}.
"""

import os
import signal
from typing import List, Mapping, cast

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import (
    ConnectionRefusedError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.logger import ILogObserver, Logger, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.backend import (
    APP_VARIABLE,
    GENERATION_VARIABLE,
    LONGEST_LINE,
    OUTPUT_GRACE,
    OUTPUT_LINES,
    REAP_INTERVAL,
    AppStopped,
    Backend,
    BackendFailed,
    InvalidTransition,
    State,
    describeExit,
)
from rainbowd.app.health import LivenessProbe, Unhealthy
from rainbowd.config import Config
from rainbowd.test.fakes import (
    FakeHealthCheck,
    FakeProcess,
    FakeProcessReactor,
    FakeSignals,
)

RUN = "exec gunicorn app:app --bind 127.0.0.1:$1 --pid $2"
GENERATION = 3
#: A signal number L{signal.Signals} has no name for (a real-time signal on
#: Linux).
UNNAMED_SIGNAL = 40
PORT = 20001

#: The timings every test's L{Config} uses, in seconds.
TIMINGS = dict(
    healthCheckInterval=1.0,
    healthCheckTimeout=0.5,
    startTimeout=5.0,
    drainTimeout=10.0,
    killTimeout=3.0,
)


class BackendTestCase(SynchronousTestCase):
    """
    A L{Backend} on a L{FakeProcessReactor}, its signals acting on the fake
    process table and its health checks answered by the test.
    """

    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.signals = FakeSignals(self.reactor)
        self.health = FakeHealthCheck()
        self.stateDir = os.path.abspath(self.mktemp())
        os.makedirs(self.stateDir)
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        self.exited: List[Backend] = []

    def config(self, **changes) -> Config:
        settings = dict(TIMINGS, run=RUN, cwd=self.cwd, stateDir=self.stateDir)
        settings.update(changes)
        return Config(**settings)

    def backend(self, generation: int = GENERATION, port: int = PORT, **changes):
        return Backend(
            self.config(**changes),
            generation,
            port,
            self.reactor,
            self.health,
            self.signals,
            onExit=self.exited.append,
        )

    def launched(self, **changes):
        """
        A launched backend, and its process.
        """
        backend = self.backend(**changes)
        backend.launch()
        return backend, self.reactor.processes[-1]

    def ready(self, **changes):
        """
        A backend that passed its health check, and its process.
        """
        backend, process = self.launched(**changes)
        self.health.answer(backend.port)
        self.assertIs(backend.state, State.READY)
        return backend, process

    def active(self, **changes):
        """
        An active backend, and its process.
        """
        backend, process = self.ready(**changes)
        backend.activate()
        return backend, process

    def failProbe(self, message: str = "GET / answered 503") -> None:
        """
        The latest health check fails with L{Unhealthy}.
        """
        port, path, timeout, d = self.health.probes[-1]
        d.errback(Unhealthy(message))

    def writePidfile(self, backend: Backend, pid: int) -> None:
        with open(backend.pidfile, "w") as f:
            f.write(f"{pid}\n")

    def addWorker(self, process: FakeProcess, pid: int) -> None:
        """
        Put pid C{pid} in C{process}'s group, as a worker of the app.
        """
        process.members.add(pid)


class LaunchTests(BackendTestCase):
    """
    Tests for L{Backend.launch}.
    """

    def test_arguments(self) -> None:
        """
        The app is run as C{setsid /bin/sh -c RUN rainbowd-app PORT PIDFILE},
        so C{$1} is the port and C{$2} an absolute pidfile in C{stateDir}.
        """
        backend, process = self.launched()
        self.assertEqual(process.executable, "setsid")
        self.assertEqual(
            process.args,
            ["setsid", "/bin/sh", "-c", RUN, "rainbowd-app", str(PORT), backend.pidfile],
        )
        self.assertTrue(os.path.isabs(backend.pidfile))
        self.assertEqual(os.path.dirname(backend.pidfile), self.stateDir)
        self.assertIn(str(GENERATION), os.path.basename(backend.pidfile))

    def test_pidfilePerGeneration(self) -> None:
        """
        Two generations get two pidfiles.
        """
        self.assertNotEqual(self.backend(3).pidfile, self.backend(4).pidfile)

    def test_processGroup(self) -> None:
        """
        The backend's process group is the pid of the process it spawned.
        """
        backend, process = self.launched()
        self.assertEqual(backend.pgid, process.pid)

    def test_environment(self) -> None:
        """
        The app inherits rainbowd's environment plus C{env}, whose values
        win over inherited ones, plus L{APP_VARIABLE} naming the state
        directory and L{GENERATION_VARIABLE} the generation (which an app
        may report), and C{PWD} naming its directory.
        """
        extra = {"RAINBOWD_TEST_SETTING": "site.prod", "PATH": "/opt/app/bin"}
        backend, process = self.launched(env=extra)
        expected = dict(os.environ)
        expected["PWD"] = self.cwd
        expected.update(extra)
        expected[APP_VARIABLE] = backend.config.stateDir
        expected[GENERATION_VARIABLE] = str(GENERATION)
        self.assertEqual(process.env, expected)

    def test_appVariableWins(self) -> None:
        """
        C{env} cannot change L{APP_VARIABLE}: it always names the state
        directory, which is what marks the app's processes as rainbowd's.
        """
        backend, process = self.launched(
            env={APP_VARIABLE: "/elsewhere", GENERATION_VARIABLE: "1"}
        )
        self.assertEqual(process.env[APP_VARIABLE], backend.config.stateDir)
        self.assertEqual(process.env[GENERATION_VARIABLE], str(GENERATION))

    def test_directoryGone(self) -> None:
        """
        A backend whose directory is gone (a release directory removed) is
        not started: launching it raises an error that names the directory
        and says to redeploy.
        """
        backend = self.backend()
        os.rmdir(self.cwd)
        error = self.assertRaises(OSError, backend.launch)
        self.assertEqual(
            str(error),
            f'its directory {self.cwd} ("cwd") is gone; a release directory '
            "in use must be kept until a redeploy replaces it: redeploy",
        )
        self.assertEqual(self.reactor.processes, [])

    def test_cwd(self) -> None:
        """
        The app runs in C{cwd}.
        """
        backend, process = self.launched()
        self.assertEqual(process.path, self.cwd)

    def test_stalePidfileRemoved(self) -> None:
        """
        A pidfile left by an earlier run of the same generation is removed
        before the app starts, so its pid is never signalled.
        """
        backend = self.backend()
        self.writePidfile(backend, 4242)
        backend.launch()
        self.assertFalse(os.path.exists(backend.pidfile))

    def test_pidfileMadeADirectory(self) -> None:
        """
        A generation whose app made a directory of its pidfile (taking
        C{$2} for a directory to write its pidfile in) still stops, and
        the pidfile that could not be removed is logged.
        """
        backend, process = self.active()
        os.mkdir(backend.pidfile)
        with open(os.path.join(backend.pidfile, "app.pid"), "w") as f:
            f.write("4242\n")
        with capturedLogs() as events:
            backend.stop()
            self.reactor.advance(0)
        self.assertIs(self.successResultOf(backend.whenStopped()), backend)
        self.assertIs(backend.state, State.STOPPED)
        self.assertIn(
            f"cannot remove the pidfile {backend.pidfile}",
            "\n".join(formatEvent(e) for e in events),
        )

    def test_plantedPidfileRemoved(self) -> None:
        """
        A link planted as the pidfile is removed before the app starts, and
        its target left alone, so the app does not write through it.
        """
        backend = self.backend()
        target = os.path.abspath(self.mktemp())
        with open(target, "w") as f:
            f.write("precious\n")
        os.symlink(target, backend.pidfile)
        backend.launch()
        self.assertFalse(os.path.lexists(backend.pidfile))
        with open(target) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_firstProbe(self) -> None:
        """
        The health check is asked at once, for the port, C{healthCheckPath}
        and C{healthCheckTimeout}.
        """
        backend, process = self.launched(healthCheckPath="/health")
        self.assertEqual(
            [probe[:3] for probe in self.health.probes], [(PORT, "/health", 0.5)]
        )
        self.assertIs(backend.state, State.STARTING)


class StartTests(BackendTestCase):
    """
    Tests for how a launched backend becomes ready, or fails to.
    """

    def test_healthyIsReady(self) -> None:
        """
        A healthy answer makes the backend ready and fires C{whenReady} with
        it; C{whenReady} asked afterwards fires at once.
        """
        backend, process = self.launched()
        d = backend.whenReady()
        self.assertNoResult(d)
        self.health.answer(PORT)
        self.assertIs(backend.state, State.READY)
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(self.successResultOf(backend.whenReady()), backend)

    def test_readyStopsTimers(self) -> None:
        """
        Once ready, no start timeout or further probe is pending.
        """
        backend, process = self.ready()
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(TIMINGS["startTimeout"])
        self.assertIs(backend.state, State.READY)
        self.assertEqual(len(self.health.probes), 1)

    def test_failedProbeRetried(self) -> None:
        """
        A failed probe is tried again C{healthCheckInterval} later, not
        sooner, and the backend is ready once a probe succeeds.
        """
        backend, process = self.launched()
        self.failProbe()
        self.reactor.advance(0.9)
        self.assertEqual(len(self.health.probes), 1)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.health.probes), 2)
        self.failProbe()
        self.reactor.advance(1.0)
        self.assertEqual(len(self.health.probes), 3)
        self.assertIs(backend.state, State.STARTING)
        self.health.answer(PORT)
        self.assertIs(backend.state, State.READY)

    def test_pendingProbeNotDoubled(self) -> None:
        """
        While a probe is unanswered no other is started.
        """
        backend, process = self.launched()
        self.reactor.advance(4.0)
        self.assertEqual(len(self.health.probes), 1)

    def test_warmupTime(self) -> None:
        """
        With C{warmupTime} the backend is ready that long after launch,
        without any health check.
        """
        backend, process = self.launched(warmupTime=2.0, healthCheckPath=None)
        d = backend.whenReady()
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(self.health.probes, [])

    def test_startTimeout(self) -> None:
        """
        A backend not healthy within C{startTimeout} is sent SIGTERM and ends
        failed, with a reason naming startTimeout and the last probe's
        error; C{whenReady} fails with L{BackendFailed} carrying its output.
        """
        backend, process = self.launched()
        process.termDelay = 1.0
        d = backend.whenReady()
        process.emit(b"Booting worker\nconnecting to db\n")
        self.failProbe("GET / answered 503")
        self.reactor.advance(1.0)
        hung = self.health.probes[-1][3]
        self.reactor.advance(3.9)
        self.assertEqual(self.signals.sent, [])
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertIs(backend.state, State.STOPPING)
        self.assertTrue(hung.called)
        self.assertNoResult(d)
        self.reactor.advance(1.0)
        self.assertIs(backend.state, State.FAILED)
        failure = self.failureResultOf(d, BackendFailed)
        self.assertEqual(
            failure.value.reason,
            f"generation {GENERATION} on port {PORT} not healthy within "
            "startTimeout (5 s); last health check: GET / answered 503",
        )
        self.assertEqual(
            failure.value.output, ("Booting worker", "connecting to db")
        )
        self.assertEqual(
            (failure.value.generation, failure.value.port), (GENERATION, PORT)
        )

    def test_startTimeoutRefused(self) -> None:
        """
        A start timeout after refused health checks asks whether the app
        listens on C{$1}.
        """
        backend, process = self.launched()
        d = backend.whenReady()
        self.health.probes[-1][3].errback(ConnectionRefusedError())
        self.reactor.advance(5.0)
        self.assertIn(
            f'nothing listens on 127.0.0.1:{PORT}: does "run" make the app '
            "listen on port $1?",
            str(self.failureResultOf(d, BackendFailed).value),
        )

    def test_startTimeoutRefusedSentence(self) -> None:
        """
        The reason of a start timeout after refused health checks reads as
        one sentence: the refusal is a clause, with no full stop inside.
        """
        backend, process = self.launched(healthCheckPath="/healthz")
        d = backend.whenReady()
        self.health.probes[-1][3].errback(
            ConnectionRefusedError(string="Connection refused")
        )
        self.reactor.advance(5.0)
        reason = str(self.failureResultOf(d, BackendFailed).value)
        self.assertIn(
            "last health check: GET /healthz: connection refused; nothing "
            f"listens on 127.0.0.1:{PORT}",
            reason,
        )
        self.assertNotIn(".;", reason)

    def test_unhealthyObserved(self) -> None:
        """
        While it starts, the tenth health check in a row that fails the same
        way is told to the observers with its count, and then one a second;
        a new answer counts anew, and only the first tenth is logged.
        """
        backend, process = self.launched(startTimeout=60.0)
        told = []
        backend.observeUnhealthy(lambda **check: told.append(check))
        with capturedLogs() as events:
            for n in range(12):
                self.failProbe("GET / answered 404")
                self.reactor.advance(1.0)
            for n in range(10):
                self.health.probes[-1][3].errback(ConnectionRefusedError())
                self.reactor.advance(1.0)
        self.assertEqual(
            told,
            [
                {"error": "GET / answered 404", "checks": 10},
                {"error": "GET / answered 404", "checks": 11},
                {"error": "GET / answered 404", "checks": 12},
                {"error": "GET /: connection refused", "checks": 10},
            ],
        )
        self.assertIs(backend.state, State.STARTING)
        logged = [
            formatEvent(event) for event in events if "times in a row" in formatEvent(event)
        ]
        self.assertEqual(
            logged,
            [
                f"generation {GENERATION}: GET / answered 404 (10 times in a row); "
                "still waiting for it to be healthy, up to startTimeout (60 s)",
                f"generation {GENERATION}: GET /: connection refused (10 times in "
                "a row); still waiting for it to be healthy, up to startTimeout "
                "(60 s)",
            ],
        )

    def test_healthCheckRaises(self) -> None:
        """
        A health check that raises counts as a failed probe, named in the
        start timeout's reason, rather than breaking the launch.
        """

        class Broken(FakeHealthCheck):
            def __call__(self, port: int, path: str, timeout: float) -> Deferred:
                raise ValueError("cannot probe")

        self.health = Broken()
        backend, process = self.launched()
        d = backend.whenReady()
        self.reactor.advance(5.0)
        self.assertIn(
            "last health check: cannot probe",
            str(self.failureResultOf(d, BackendFailed).value),
        )

    def test_startTimeoutNoAnswer(self) -> None:
        """
        A start timeout with no probe ever answered says so.
        """
        backend, process = self.launched()
        d = backend.whenReady()
        self.reactor.advance(5.0)
        self.assertIn(
            "no health check answered yet",
            str(self.failureResultOf(d, BackendFailed).value),
        )

    def test_noProbeAfterStartTimeout(self) -> None:
        """
        Once the start timed out, no more probes are made, and a probe
        succeeding late does not make the backend ready.
        """
        backend, process = self.launched()
        process.termDelay = None
        self.failProbe()
        self.reactor.advance(5.0)
        probes = len(self.health.probes)
        self.reactor.advance(2.0)
        self.assertEqual(len(self.health.probes), probes)
        self.assertIs(backend.state, State.STOPPING)

    def test_exitDuringStart(self) -> None:
        """
        An app that exits while starting ends failed with its exit code in
        the reason, without being signalled and without calling C{onExit}.
        """
        backend, process = self.launched()
        ready, stopped = backend.whenReady(), backend.whenStopped()
        process.emit(b"Error: address already in use\n", 2)
        process.exit(3)
        self.assertIs(backend.state, State.FAILED)
        failure = self.failureResultOf(ready, BackendFailed)
        self.assertEqual(
            str(failure.value),
            f"generation {GENERATION} on port {PORT} exited with code 3 "
            "before it became healthy",
        )
        self.assertEqual(failure.value.output, ("Error: address already in use",))
        self.assertIs(self.successResultOf(stopped), backend)
        self.assertEqual(self.signals.sent, [])
        self.assertEqual(self.exited, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_killedDuringStart(self) -> None:
        """
        An app killed by a signal while starting ends failed, the signal
        named in the reason.
        """
        backend, process = self.launched()
        d = backend.whenReady()
        process.exit(signum=signal.SIGSEGV)
        self.assertIn(
            f"was killed by signal {int(signal.SIGSEGV)} (SIGSEGV)",
            str(self.failureResultOf(d, BackendFailed).value),
        )

    def test_whenReadyAfterFailed(self) -> None:
        """
        C{whenReady} asked of a failed backend fails at once.
        """
        backend, process = self.launched()
        process.exit(1)
        self.failureResultOf(backend.whenReady(), BackendFailed)

    def test_stopWhileStarting(self) -> None:
        """
        Stopping a starting backend cancels its probe, makes it fail as
        stopped before it became healthy, and ends it failed.
        """
        backend, process = self.launched()
        ready = backend.whenReady()
        probe = self.health.probes[0][3]
        stopped = backend.stop()
        self.assertTrue(probe.called)
        self.reactor.advance(0)
        self.assertIs(backend.state, State.FAILED)
        self.assertIn(
            "stopped before it became healthy",
            str(self.failureResultOf(ready, BackendFailed).value),
        )
        self.assertIs(self.successResultOf(stopped), backend)
        self.assertEqual(len(self.health.probes), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


    def test_stopBetweenProbes(self) -> None:
        """
        Stopping a starting backend while it waits to probe again means no
        further probe is made.
        """
        backend, process = self.launched()
        process.termDelay = None
        self.failProbe()
        backend.stop()
        self.reactor.advance(TIMINGS["healthCheckInterval"])
        self.assertEqual(len(self.health.probes), 1)


class OutputTests(BackendTestCase):
    """
    Tests for how a backend keeps the app's output.
    """

    def test_linesAcrossChunks(self) -> None:
        """
        A line arriving in pieces is kept once whole, without its line end.
        """
        backend, process = self.launched()
        process.emit(b"hel")
        process.emit(b"lo\nwor")
        self.assertEqual(list(backend.output), ["hello"])
        process.emit(b"ld\r\n")
        self.assertEqual(list(backend.output), ["hello", "world"])

    def test_stdoutAndStderr(self) -> None:
        """
        Lines of stdout and stderr are both kept, each stream's partial line
        apart from the other's.
        """
        backend, process = self.launched()
        process.emit(b"out: ", 1)
        process.emit(b"err: oops\n", 2)
        process.emit(b"fine\n", 1)
        self.assertEqual(list(backend.output), ["err: oops", "out: fine"])

    def test_lastLinesOnly(self) -> None:
        """
        Only the last C{OUTPUT_LINES} (50) lines are kept.
        """
        backend, process = self.launched()
        process.emit(b"".join(b"line %d\n" % (i,) for i in range(120)))
        self.assertEqual(OUTPUT_LINES, 50)
        self.assertEqual(
            list(backend.output), [f"line {i}" for i in range(70, 120)]
        )

    def test_longLineCut(self) -> None:
        """
        Output with no line end is kept as a line once it reaches
        C{LONGEST_LINE} bytes, so it cannot grow without bound.
        """
        backend, process = self.launched()
        # Logged here, not to the global log: trial -j cannot carry a line
        # this long from its workers.
        logged: list = []
        # Any callable of an event observes; mypy-zope knows only those
        # declared to provide ILogObserver.
        backend.log = Logger(observer=cast(ILogObserver, logged.append))
        process.emit(b"x" * (LONGEST_LINE - 1))
        self.assertEqual(list(backend.output), [])
        process.emit(b"yz")
        self.assertEqual(list(backend.output), ["x" * (LONGEST_LINE - 1) + "yz"])
        process.emit(b"end\n")
        self.assertEqual(backend.output[-1], "end")
        self.assertEqual(len(logged), 2)

    def test_partialLineAtExit(self) -> None:
        """
        An unterminated last line is kept when the app exits.
        """
        backend, process = self.launched()
        d = backend.whenReady()
        process.emit(b"starting\nTraceback: boom")
        process.exit(1)
        self.assertEqual(
            self.failureResultOf(d, BackendFailed).value.output,
            ("starting", "Traceback: boom"),
        )

    def test_undecodable(self) -> None:
        """
        Output that is not UTF-8 is kept with replacement characters.
        """
        backend, process = self.launched()
        process.emit(b"caf\xe9\n")
        self.assertEqual(list(backend.output), ["caf\ufffd"])

    def test_observeOutput(self) -> None:
        """
        An output observer gets each whole line as it is kept, until it
        stops observing.
        """
        backend, process = self.launched()
        process.emit(b"before\n")
        lines: List[str] = []
        stop = backend.observeOutput(lines.append)
        process.emit(b"one\ntw")
        process.emit(b"o\n", 2)
        process.emit(b"o\n")
        stop()
        process.emit(b"after\n")
        self.assertEqual(lines, ["one", "o", "two"])


class DrainTests(BackendTestCase):
    """
    Tests for L{Backend.activate} and L{Backend.drain}.
    """

    def test_activate(self) -> None:
        """
        A ready backend can be activated.
        """
        backend, process = self.ready()
        backend.activate()
        self.assertIs(backend.state, State.ACTIVE)

    def test_drainIdle(self) -> None:
        """
        Draining a backend with no request in flight stops it at once.
        """
        backend, process = self.active()
        d = backend.drain()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.reactor.advance(0)
        self.assertIs(backend.state, State.STOPPED)
        self.assertIs(self.successResultOf(d), backend)

    def test_drainWaitsForInflight(self) -> None:
        """
        A draining backend is sent SIGTERM only when its last request in
        flight finishes.
        """
        backend, process = self.active()
        backend.requestStarted()
        backend.requestStarted()
        d = backend.drain()
        self.assertIs(backend.state, State.DRAINING)
        backend.requestFinished()
        self.reactor.advance(5.0)
        self.assertEqual(self.signals.sent, [])
        backend.requestFinished()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_drainTimeout(self) -> None:
        """
        A backend still serving C{drainTimeout} after it began draining is
        sent SIGTERM anyway.
        """
        backend, process = self.active()
        process.termDelay = 1.0
        backend.requestStarted()
        d = backend.drain()
        self.reactor.advance(9.9)
        self.assertEqual(self.signals.sent, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertIs(backend.state, State.STOPPING)
        self.reactor.advance(1.0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(backend.state, State.STOPPED)

    def test_requestFinishedAfterStop(self) -> None:
        """
        A request finishing after the drain timed out does not signal again.
        """
        backend, process = self.active()
        process.termDelay = 1.0
        backend.requestStarted()
        backend.drain()
        self.reactor.advance(10.0)
        backend.requestFinished()
        self.assertEqual(len(self.signals.sent), 1)

    def test_drainReady(self) -> None:
        """
        A backend that was ready but never active can be drained.
        """
        backend, process = self.ready()
        d = backend.drain()
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)

    def test_drainWaitsForTunnels(self) -> None:
        """
        A draining backend is sent SIGTERM only once its last upgraded
        connection (tunnel) is closed, not when its last request finishes.
        """
        backend, process = self.active()
        tunnel = FakeTunnel()
        backend.requestStarted()
        backend.tunnelOpened(tunnel)
        backend.requestFinished()
        d = backend.drain()
        self.reactor.advance(5.0)
        self.assertEqual(self.signals.sent, [])
        backend.tunnelClosed(tunnel)
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)

    def test_drainTimeoutClosesTunnels(self) -> None:
        """
        At C{drainTimeout} a draining backend closes its tunnels, and only
        then is sent SIGTERM.
        """
        backend, process = self.active()
        events = []
        tunnel = FakeTunnel(lambda: events.append(list(self.signals.sent)))
        backend.tunnelOpened(tunnel)
        backend.drain()
        self.reactor.advance(9.9)
        self.assertEqual(events, [])
        self.reactor.advance(0.1)
        self.assertEqual(events, [[]])
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])

    def test_whenDraining(self) -> None:
        """
        C{whenDraining} fires when the backend starts draining, and at once
        for one already draining.
        """
        backend, process = self.active()
        backend.requestStarted()
        d = backend.whenDraining()
        self.assertNoResult(d)
        backend.drain()
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(self.successResultOf(backend.whenDraining()), backend)

    def test_whenDrainingOnStop(self) -> None:
        """
        C{whenDraining} fires when the backend is stopped without draining.
        """
        backend, process = self.active()
        d = backend.whenDraining()
        backend.stop()
        self.assertIs(self.successResultOf(d), backend)


class FakeTunnel:
    """
    An upgraded connection as a backend sees it: something to close.
    """

    def __init__(self, onClose=lambda: None) -> None:
        self._onClose = onClose
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._onClose()


class StopTests(BackendTestCase):
    """
    Tests for L{Backend.stop}: whom SIGTERM goes to, SIGKILL, and reaping.
    """

    def test_sigkillAfterKillTimeout(self) -> None:
        """
        An app that ignores SIGTERM is sent SIGKILL, to its whole group,
        C{killTimeout} after it.
        """
        backend, process = self.active()
        process.termDelay = None
        d = backend.stop()
        self.reactor.advance(2.9)
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(
            self.signals.sent[1:], [("group", process.pgid, signal.SIGKILL)]
        )
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(
            backend.exitReason, "killed with SIGKILL after killTimeout (3 s)"
        )

    def test_stoppedBySigterm(self) -> None:
        """
        An app that ends by the SIGTERM rainbowd sent it, or by the exit
        code 143 a shell reports that with, is said to be stopped by
        SIGTERM, in its exit reason and its log line, not to have failed.
        """
        for code, signum in ((143, None), (None, signal.SIGTERM)):
            backend, process = self.active()
            process.termDelay = None
            with capturedLogs() as events:
                d = backend.stop()
                process.exit(code, signum)
                self.reactor.advance(0)
            self.successResultOf(d)
            self.assertEqual(backend.exitReason, "stopped by SIGTERM")
            self.assertIn(
                f"generation {GENERATION} is stopped (stopped by SIGTERM)",
                [formatEvent(event) for event in events],
            )

    def test_crashWithCode143(self) -> None:
        """
        An app that exits with code 143, or dies of SIGTERM, when rainbowd
        sent it no signal crashed, and is said to, with its code or signal.
        """
        for code, signum, said in (
            (143, None, "exited with code 143"),
            (None, signal.SIGTERM, "was killed by signal 15 (SIGTERM)"),
        ):
            backend, process = self.active()
            process.exit(code, signum)
            self.reactor.advance(0)
            self.assertEqual(backend.exitReason, said)
            self.assertIs(self.exited[-1], backend)

    def test_failsAfterSigterm(self) -> None:
        """
        An app that exits with another code after rainbowd's SIGTERM is
        said to exit with that code: its shutdown failed.
        """
        backend, process = self.active()
        process.termDelay = None
        backend.stop()
        process.exit(1)
        self.reactor.advance(0)
        self.assertEqual(backend.exitReason, "exited with code 1")

    def test_noSigkillAfterExit(self) -> None:
        """
        An app that exits within C{killTimeout} of SIGTERM is not sent
        SIGKILL, and no timer is left behind.
        """
        backend, process = self.active()
        process.termDelay = 2.0
        d = backend.stop()
        self.reactor.advance(2.0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(backend.exitReason, "exited with code 0")
        self.assertEqual(
            [sent[2] for sent in self.signals.sent], [signal.SIGTERM]
        )

    def test_sigtermToPidfilePid(self) -> None:
        """
        When the pidfile names a process of the backend's group, SIGTERM
        goes to that process alone.
        """
        backend, process = self.active()
        process.appPid = 4242
        self.addWorker(process, 4242)
        self.writePidfile(backend, 4242)
        d = backend.stop()
        self.assertEqual(self.signals.sent, [("pid", 4242, signal.SIGTERM)])
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)

    def test_sigtermToGroupWithoutPidfile(self) -> None:
        """
        Without a pidfile SIGTERM goes to the whole process group.
        """
        backend, process = self.active()
        self.addWorker(process, 4242)
        backend.stop()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])

    def test_unreadablePidfile(self) -> None:
        """
        A pidfile that does not hold a number is ignored: SIGTERM goes to the
        whole group.
        """
        backend, process = self.active()
        with open(backend.pidfile, "w") as f:
            f.write("starting\n")
        backend.stop()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])

    def test_foreignPidfileIgnored(self) -> None:
        """
        A pidfile naming a process of another group -- here another
        generation's app -- is ignored: that process is never signalled.
        """
        other = self.backend(generation=4, port=20002)
        other.launch()
        otherProcess = self.reactor.processes[-1]
        backend, process = self.active()
        process.termDelay = None
        self.writePidfile(backend, otherProcess.pid)
        self.assertEqual(backend.appPid(), process.pid)
        backend.stop()
        self.reactor.advance(TIMINGS["killTimeout"])
        self.assertEqual(
            [sent[:2] for sent in self.signals.sent],
            [("group", process.pgid), ("group", process.pgid)],
        )
        self.assertFalse(otherProcess.ended)
        self.assertIs(other.state, State.STARTING)

    def test_linkedPidfileIgnored(self) -> None:
        """
        A pidfile that is a symbolic link is not followed, even to a file
        naming a process of the group: SIGTERM goes to the whole group.
        """
        backend, process = self.active()
        self.addWorker(process, 4242)
        target = os.path.abspath(self.mktemp())
        with open(target, "w") as f:
            f.write("4242\n")
        os.symlink(target, backend.pidfile)
        self.assertEqual(backend.appPid(), process.pid)
        backend.stop()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])

    def test_unknownPidfileIgnored(self) -> None:
        """
        A pidfile naming a pid that no process of the backend has is ignored.
        """
        backend, process = self.active()
        self.writePidfile(backend, 31337)
        backend.stop()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])

    def test_leftoverGroupTerminated(self) -> None:
        """
        Once the app has exited, the processes left in its group are sent
        SIGTERM at once, and the backend is stopped when they are gone.
        """
        backend, process = self.active()
        process.appPid = 4242
        process.holdsPipes = True  # the worker inherited the app's output
        self.addWorker(process, 4242)
        self.addWorker(process, 4243)
        self.writePidfile(backend, 4242)
        d = backend.stop()
        self.assertEqual(self.signals.sent, [("pid", 4242, signal.SIGTERM)])
        self.reactor.advance(0)
        self.assertEqual(self.signals.sent[-1], ("group", process.pgid, signal.SIGTERM))
        self.assertEqual(process.members, set())
        self.assertNoResult(d)
        self.reactor.advance(REAP_INTERVAL)
        process.closePipes()
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_leftoverGroupKilled(self) -> None:
        """
        Processes left in the app's group that ignore SIGTERM are waited for,
        and killed C{killTimeout} after it, before the backend is stopped.
        """
        backend, process = self.active()
        process.termDelay = None
        self.addWorker(process, 4243)
        d = backend.stop()
        self.reactor.advance(1.0)
        process.exit(0)
        self.assertIs(backend.state, State.STOPPING)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertIn(("group", process.pgid, signal.SIGKILL), self.signals.sent)
        self.assertEqual(process.members, set())
        self.reactor.advance(REAP_INTERVAL)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopTwice(self) -> None:
        """
        Stopping a stopping backend sends nothing more and both callers learn
        of the end.
        """
        backend, process = self.active()
        process.termDelay = 1.0
        first = backend.stop()
        second = backend.stop()
        self.assertEqual(len(self.signals.sent), 1)
        self.reactor.advance(1.0)
        self.assertIs(self.successResultOf(first), backend)
        self.assertIs(self.successResultOf(second), backend)

    def test_stopStopped(self) -> None:
        """
        Stopping a stopped backend fires at once and sends nothing.
        """
        backend, process = self.active()
        backend.stop()
        self.reactor.advance(0)
        sent = list(self.signals.sent)
        self.assertIs(self.successResultOf(backend.stop()), backend)
        self.assertEqual(self.signals.sent, sent)

    def test_whenStoppedAfterEnd(self) -> None:
        """
        C{whenStopped} asked after the end fires at once.
        """
        backend, process = self.launched()
        process.exit(1)
        self.assertIs(self.successResultOf(backend.whenStopped()), backend)

    def test_whenStoppedWhileAlive(self) -> None:
        """
        C{whenStopped} asked of a live backend waits for its end.
        """
        backend, process = self.active()
        d = backend.whenStopped()
        self.assertNoResult(d)
        process.exit(0)
        self.assertIs(self.successResultOf(d), backend)


class StrayTests(BackendTestCase):
    """
    Tests for the processes of a generation that left its process group.
    """

    def stray(self, backend: Backend, pid: int, **changes) -> None:
        """
        Put a process of C{backend}'s outside its group, as C{setsid} in
        C{run} does.
        """
        self.signals.strays[pid] = {**backend.marker(), **changes}

    def test_strayStopped(self) -> None:
        """
        Once the group is empty, the processes outside it that carry the
        generation's marker get SIGTERM, it is logged, and the backend is
        stopped only when they are gone.
        """
        backend, process = self.active()
        self.stray(backend, 5000)
        self.stray(backend, 5001)
        self.signals.stubborn.add(5001)
        with capturedLogs() as events:
            d = backend.stop()
            self.reactor.advance(0)
        self.assertIn(("marked", 5000, signal.SIGTERM), self.signals.sent)
        self.assertIn(("marked", 5001, signal.SIGTERM), self.signals.sent)
        self.assertIn(
            "generation 3 left processes outside its process group (pids 5000, 5001)",
            "\n".join(formatEvent(e) for e in events),
        )
        self.assertNoResult(d)
        self.assertIs(backend.state, State.STOPPING)
        self.reactor.advance(TIMINGS["killTimeout"])
        self.assertIn(("marked", 5001, signal.SIGKILL), self.signals.sent)
        self.reactor.advance(REAP_INTERVAL)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(self.signals.strays, {})

    def test_othersLeftAlone(self) -> None:
        """
        Processes of another generation, another state directory, or with
        no marker are never signalled.
        """
        backend, process = self.active()
        self.stray(backend, 5000, RAINBOWD_GENERATION="4")
        self.stray(backend, 5001, RAINBOWD_STATE_DIR="/elsewhere")
        self.signals.strays[5002] = {"HOME": "/root"}
        backend.stop()
        self.reactor.advance(TIMINGS["killTimeout"] + REAP_INTERVAL)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(sorted(self.signals.strays), [5000, 5001, 5002])
        self.assertEqual([s for s in self.signals.sent if s[0] == "marked"], [])

    def test_strayOfCrash(self) -> None:
        """
        The strays of an app that crashed are stopped too.
        """
        backend, process = self.active()
        self.stray(backend, 5000)
        process.exit(1)
        self.assertEqual(self.signals.sent, [("marked", 5000, signal.SIGTERM)])
        self.reactor.advance(REAP_INTERVAL)
        self.assertIs(backend.state, State.STOPPED)

    def test_lookedForOnce(self) -> None:
        """
        The whole process table is read when the group is empty, and once
        more when the strays found are gone, not while waiting for them.
        """
        backend, process = self.active()
        self.stray(backend, 5000)
        self.signals.stubborn.add(5000)
        looks: List[Mapping[str, str]] = []
        marked = self.signals.marked

        def lookingFor(marker: Mapping[str, str]) -> List[int]:
            looks.append(marker)
            return marked(marker)

        self.signals.marked = lookingFor
        backend.stop()
        self.reactor.advance(0)
        for _ in range(20):
            self.reactor.advance(REAP_INTERVAL)
        self.assertEqual(looks, [backend.marker()])
        self.reactor.advance(TIMINGS["killTimeout"])
        self.reactor.advance(REAP_INTERVAL)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(looks, [backend.marker()] * 2)

    def test_straysOfStrays(self) -> None:
        """
        Processes the strays started while they were being stopped are
        found by a look once those are gone, at most C{STRAY_LOOKS} times
        in all.
        """
        backend, process = self.active()
        self.stray(backend, 5000)
        marked = self.signals.marked
        respawned = iter([5001, 5002, 5003, 5004])

        def marking(marker):
            found = marked(marker)
            self.stray(backend, next(respawned))
            return found

        self.signals.marked = marking
        backend.stop()
        for _ in range(10):
            self.reactor.advance(REAP_INTERVAL)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(
            [s[1] for s in self.signals.sent if s[0] == "marked"], [5000, 5001, 5002]
        )


class CrashTests(BackendTestCase):
    """
    Tests for an app that exits on its own once it is ready.
    """

    def test_activeCrash(self) -> None:
        """
        An active backend whose app exits calls C{onExit} with it and ends
        stopped, its exit code kept.
        """
        backend, process = self.active()
        d = backend.whenStopped()
        process.exit(1)
        self.assertEqual(self.exited, [backend])
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(backend.exitReason, "exited with code 1")
        self.assertIs(self.successResultOf(d), backend)

    def test_readyCrash(self) -> None:
        """
        A ready backend whose app exits also calls C{onExit}.
        """
        backend, process = self.ready()
        process.exit(1)
        self.assertEqual(self.exited, [backend])
        self.assertIs(backend.state, State.STOPPED)

    def test_stoppedExitIsNoCrash(self) -> None:
        """
        An app exiting because it was stopped does not call C{onExit}.
        """
        backend, process = self.active()
        backend.stop()
        self.reactor.advance(0)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(self.exited, [])

    def test_killedByUnnamedSignal(self) -> None:
        """
        An app killed by a signal without a name, such as a real-time one,
        still ends its backend, as stopped.
        """
        backend, process = self.active()
        d = backend.whenStopped()
        process.exit(signum=UNNAMED_SIGNAL)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(backend.exitReason, f"was killed by signal {UNNAMED_SIGNAL}")
        self.assertEqual(self.exited, [backend])

    def test_crashLeftovers(self) -> None:
        """
        When a crashed app leaves processes in its group they are sent
        SIGTERM, then SIGKILL after C{killTimeout}, and the backend is only
        stopped once they are gone.
        """
        backend, process = self.active()
        process.termDelay = None
        self.addWorker(process, 4243)
        d = backend.whenStopped()
        process.exit(1)
        self.assertEqual(self.exited, [backend])
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertIs(backend.state, State.STOPPING)
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(self.signals.sent[-1], ("group", process.pgid, signal.SIGKILL))
        self.reactor.advance(REAP_INTERVAL)
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(backend.state, State.STOPPED)

    def test_crashLeftoversLeaveOnSigterm(self) -> None:
        """
        Leftover processes that end on SIGTERM are not sent SIGKILL.
        """
        backend, process = self.active()
        self.addWorker(process, 4243)
        d = backend.whenStopped()
        process.exit(1)
        self.reactor.advance(REAP_INTERVAL)
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(
            [sent[2] for sent in self.signals.sent], [signal.SIGTERM]
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])


    def test_exitSeenWhileOutputHeld(self) -> None:
        """
        An app that exits while a process it started still holds its output
        open is seen to have exited at once: C{onExit} is called and what is
        left of its group is sent SIGTERM.
        """
        backend, process = self.active()
        process.holdsPipes = True
        self.addWorker(process, 4243)
        d = backend.whenStopped()
        process.exit(1)
        self.assertEqual(self.exited, [backend])
        self.assertEqual(backend.exitReason, "exited with code 1")
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertNoResult(d)
        process.closePipes()
        self.assertIs(self.successResultOf(d), backend)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_outputAfterExitKept(self) -> None:
        """
        Output read after the app exited, before its pipes closed, is in the
        report of its failure.
        """
        backend, process = self.launched()
        process.holdsPipes = True
        d = backend.whenReady()
        process.exit(3)
        process.emit(b"Traceback: boom")
        self.assertNoResult(d)
        process.closePipes()
        self.assertEqual(
            self.failureResultOf(d, BackendFailed).value.output, ("Traceback: boom",)
        )

    def test_outputHeldOutsideGroup(self) -> None:
        """
        Once the app's group is gone, output that a process outside the group
        still holds open is closed C{OUTPUT_GRACE} later, so the backend ends
        instead of waiting for that process forever.
        """
        backend, process = self.active()
        process.holdsPipes = True
        d = backend.stop()
        self.reactor.advance(0)
        self.assertIs(backend.state, State.STOPPING)
        self.reactor.advance(OUTPUT_GRACE)
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(backend.state, State.STOPPED)
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class LivenessTests(BackendTestCase):
    """
    Tests for L{Backend.checkLiveness} and L{Backend.watch}.
    """

    def probe(self, backend: Backend, failing: List[LivenessProbe]) -> LivenessProbe:
        """
        A probe of C{backend} every 2 s, failing at the second failure.
        """
        return LivenessProbe(
            self.reactor, backend.checkLiveness, 2.0, 2, onFailing=failing.append
        )

    def test_healthCheck(self) -> None:
        """
        The check of a live app is C{healthCheckPath} within
        C{healthCheckTimeout}, and passes if it answers.
        """
        backend, process = self.active(healthCheckPath="/health")
        d = backend.checkLiveness()
        port, path, timeout, probe = self.health.probes[-1]
        self.assertEqual((port, path, timeout), (PORT, "/health", 0.5))
        self.assertNoResult(d)
        probe.callback(None)
        self.successResultOf(d)

    def test_healthCheckFails(self) -> None:
        """
        The check fails as the health check does.
        """
        backend, process = self.active()
        d = backend.checkLiveness()
        self.health.probes[-1][3].errback(TimeoutError("GET / did not answer within 0.5 s"))
        self.failureResultOf(d, TimeoutError)

    def test_stoppedProcess(self) -> None:
        """
        An app whose process is stopped (SIGSTOP) fails the check at once,
        naming its pid, without waiting for an HTTP answer that cannot come.
        """
        backend, process = self.active()
        probes = len(self.health.probes)
        self.signals.signalGroup(process.pgid, signal.SIGSTOP)
        failure = self.failureResultOf(backend.checkLiveness(), AppStopped)
        self.assertEqual(
            str(failure.value),
            f"its process {process.pid} is stopped (SIGSTOP, or a debugger), "
            "so it answers nothing until SIGCONT",
        )
        self.assertEqual(len(self.health.probes), probes)

    def test_stoppedAppPid(self) -> None:
        """
        The process looked at is the app's, from its pidfile.
        """
        backend, process = self.active()
        process.appPid = 4242
        self.addWorker(process, 4242)
        self.writePidfile(backend, 4242)
        self.signals.isStopped = lambda pid: pid == 4242
        failure = self.failureResultOf(backend.checkLiveness(), AppStopped)
        self.assertIn("process 4242 is stopped", str(failure.value))

    def test_warmupTime(self) -> None:
        """
        An app started with C{warmupTime} has no health check to ask: its
        check passes unless its process is stopped.
        """
        backend, process = self.launched(warmupTime=1.0, healthCheckPath=None)
        self.reactor.advance(1.0)
        backend.activate()
        self.successResultOf(backend.checkLiveness())
        self.assertEqual(self.health.probes, [])
        self.signals.signalGroup(process.pgid, signal.SIGSTOP)
        self.failureResultOf(backend.checkLiveness(), AppStopped)

    def test_watch(self) -> None:
        """
        A watched backend runs its probe, and C{describe} shows it.
        """
        backend, process = self.active()
        failing: List[LivenessProbe] = []
        probe = self.probe(backend, failing)
        backend.watch(probe)
        self.assertTrue(probe.running)
        self.signals.signalGroup(process.pgid, signal.SIGSTOP)
        self.reactor.advance(2.0)
        self.reactor.advance(2.0)
        self.assertEqual(failing, [probe])
        self.assertEqual(
            backend.describe()["liveness"],
            {
                "unresponsive": True,
                "failures": 2,
                "lastError": f"its process {process.pid} is stopped (SIGSTOP, "
                "or a debugger), so it answers nothing until SIGCONT",
            },
        )

    def test_watchEndsOnDrain(self) -> None:
        """
        The probe stops when the backend starts draining, and its check under
        way is cancelled; C{describe} still shows its last state.
        """
        backend, process = self.active()
        backend.requestStarted()
        probe = self.probe(backend, [])
        backend.watch(probe)
        self.reactor.advance(2.0)
        [(port, path, timeout, checking)] = self.health.probes[1:]
        backend.drain()
        self.assertFalse(probe.running)
        self.assertTrue(checking.called)
        self.reactor.advance(10.0)
        self.assertEqual(len(self.health.probes), 2)
        self.assertEqual(backend.describe()["liveness"]["failures"], 0)

    def test_watchEndsOnStop(self) -> None:
        """
        The probe stops when the backend is stopped, or exits.
        """
        for end in ("stop", "exit"):
            backend, process = self.active()
            probe = self.probe(backend, [])
            backend.watch(probe)
            if end == "stop":
                backend.stop()
            else:
                process.exit(1)
            self.assertFalse(probe.running, end)

    def test_watchAgain(self) -> None:
        """
        Watching with another probe stops the first.
        """
        backend, process = self.active()
        first, second = self.probe(backend, []), self.probe(backend, [])
        backend.watch(first)
        backend.watch(second)
        self.assertFalse(first.running)
        self.assertTrue(second.running)
        self.assertIs(backend.liveness, second)

    def test_watchNotServing(self) -> None:
        """
        A backend that is starting, or no longer serving, cannot be
        watched.
        """
        backend, process = self.launched()
        self.assertRaises(InvalidTransition, backend.watch, self.probe(backend, []))
        self.health.answer(PORT)
        backend.activate()
        backend.requestStarted()
        backend.drain()
        self.assertRaises(InvalidTransition, backend.watch, self.probe(backend, []))

    def test_stoppedAppKilled(self) -> None:
        """
        A stopped app heeds no SIGTERM, so stopping it ends with SIGKILL to
        its whole group C{killTimeout} later, and it is gone.
        """
        backend, process = self.active()
        self.signals.signalGroup(process.pgid, signal.SIGSTOP)
        d = backend.stop()
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.assertIs(backend.state, State.STOPPING)
        self.reactor.advance(0.1)
        self.assertEqual(
            self.signals.sent[-1], ("group", process.pgid, signal.SIGKILL)
        )
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertFalse(self.signals.groupAlive(process.pgid))
        self.assertEqual(
            backend.exitReason, "killed with SIGKILL after killTimeout (3 s)"
        )


class StandbyTests(BackendTestCase):
    """
    Tests for L{Backend.drain} with C{keep}, L{Backend.release} and a
    standby's activation.
    """

    def test_keptIdleBecomesStandby(self) -> None:
        """
        A kept backend with nothing in flight is a standby at once, alive
        and sent no signal, and L{Backend.whenStandby} fires.
        """
        backend, process = self.active()
        d = backend.drain(keep=True)
        self.assertIs(backend.state, State.STANDBY)
        self.assertEqual(self.signals.sent, [])
        self.assertIs(self.successResultOf(backend.whenStandby()), backend)
        self.assertNoResult(d)

    def test_keptWaitsForInflight(self) -> None:
        """
        A kept backend drains as any: it becomes a standby when its last
        request in flight is done.
        """
        backend, process = self.active()
        backend.requestStarted()
        standby = backend.whenStandby()
        backend.drain(keep=True)
        self.assertIs(backend.state, State.DRAINING)
        self.assertNoResult(standby)
        backend.requestFinished()
        self.assertIs(self.successResultOf(standby), backend)
        self.assertEqual(self.signals.sent, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_keptDrainTimeout(self) -> None:
        """
        At C{drainTimeout} a kept backend's upgraded connections are closed
        and it becomes a standby, rather than stopped.
        """
        backend, process = self.active()
        tunnel = FakeTunnel()
        tunnel = FakeTunnel(lambda: backend.tunnelClosed(tunnel))
        backend.tunnelOpened(tunnel)
        backend.drain(keep=True)
        self.reactor.advance(10.0)
        self.assertTrue(tunnel.closed)
        self.assertIs(backend.state, State.STANDBY)
        self.assertEqual(self.signals.sent, [])

    def test_releaseStandby(self) -> None:
        """
        Releasing a standby stops it.
        """
        backend, process = self.active()
        backend.drain(keep=True)
        d = backend.release()
        self.assertEqual(self.signals.sent, [("group", process.pgid, signal.SIGTERM)])
        self.reactor.advance(0)
        self.assertIs(self.successResultOf(d), backend)
        self.assertIs(backend.state, State.STOPPED)

    def test_releaseWhileDraining(self) -> None:
        """
        A kept backend released while it still drains stops once drained,
        without becoming a standby.
        """
        backend, process = self.active()
        backend.requestStarted()
        standby = backend.whenStandby()
        backend.drain(keep=True)
        backend.release()
        self.assertIs(backend.state, State.DRAINING)
        backend.requestFinished()
        self.assertIs(backend.state, State.STOPPING)
        self.assertNoResult(standby)

    def test_activateStandby(self) -> None:
        """
        A standby can be active again, and is then no longer kept.
        """
        backend, process = self.active()
        backend.drain(keep=True)
        backend.activate()
        self.assertIs(backend.state, State.ACTIVE)
        self.assertFalse(backend.kept)

    def test_activateKeptWhileDraining(self) -> None:
        """
        A backend still draining to become a standby can be active again,
        and its drain timeout no longer applies.
        """
        backend, process = self.active()
        backend.requestStarted()
        backend.drain(keep=True)
        backend.activate()
        self.assertIs(backend.state, State.ACTIVE)
        self.reactor.advance(100)
        self.assertIs(backend.state, State.ACTIVE)
        self.assertEqual(self.signals.sent, [])

    def test_standbyExits(self) -> None:
        """
        A standby whose process exits is reported as a crash, and stops.
        """
        backend, process = self.active()
        backend.drain(keep=True)
        process.exit(1)
        self.assertEqual(self.exited, [backend])
        self.assertIs(backend.state, State.STOPPED)

    def test_standbyWatched(self) -> None:
        """
        A standby can be watched by a liveness probe, which stops when it
        is active again.
        """
        backend, process = self.active()
        backend.drain(keep=True)
        probe = LivenessProbe(self.reactor, backend.checkLiveness, 1.0, 3, lambda p: None)
        backend.watch(probe)
        self.assertTrue(probe.running)
        backend.activate()
        self.assertFalse(probe.running)

    def test_describeStandby(self) -> None:
        """
        A standby is described with state C{standby} and its pid.
        """
        backend, process = self.active()
        backend.drain(keep=True)
        self.assertEqual(backend.describe()["state"], "standby")
        self.assertEqual(backend.describe()["pid"], process.pid)


class StateTests(BackendTestCase):
    """
    Tests for the state machine's refusals and L{Backend.describe}.
    """

    def test_activateWhileStarting(self) -> None:
        """
        A starting backend cannot be activated.
        """
        backend, process = self.launched()
        self.assertRaises(InvalidTransition, backend.activate)
        self.assertIs(backend.state, State.STARTING)

    def test_drainWhileStarting(self) -> None:
        """
        A starting backend cannot be drained (it is stopped instead).
        """
        backend, process = self.launched()
        self.assertRaises(InvalidTransition, backend.drain)
        self.assertEqual(self.signals.sent, [])

    def test_activateWhileDraining(self) -> None:
        """
        A draining backend not kept as a standby cannot be activated again.
        """
        backend, process = self.active()
        backend.requestStarted()
        backend.drain()
        e = self.assertRaises(InvalidTransition, backend.activate)
        self.assertIn("draining", str(e))
        self.assertIs(backend.state, State.DRAINING)

    def test_activateStopped(self) -> None:
        """
        A stopped backend cannot be activated.
        """
        backend, process = self.active()
        process.exit(0)
        self.assertRaises(InvalidTransition, backend.activate)

    def test_drainTwice(self) -> None:
        """
        A draining backend cannot be drained again.
        """
        backend, process = self.active()
        backend.requestStarted()
        backend.drain()
        self.assertRaises(InvalidTransition, backend.drain)

    def test_describe(self) -> None:
        """
        C{describe} gives generation, port, app pid, state, requests in
        flight, upgraded connections and liveness (none, unwatched), and no
        pid once the backend has ended.
        """
        backend, process = self.active()
        process.appPid = 4242
        self.addWorker(process, 4242)
        self.writePidfile(backend, 4242)
        backend.requestStarted()
        tunnel = FakeTunnel()
        backend.tunnelOpened(tunnel)
        self.assertEqual(
            backend.describe(),
            {
                "generation": GENERATION,
                "port": PORT,
                "pid": 4242,
                "state": "active",
                "inflight": 1,
                "upgraded": 1,
                "liveness": None,
                "directory": self.cwd,
            },
        )
        backend.tunnelClosed(tunnel)
        backend.requestFinished()
        process.exit(1)
        self.assertEqual(
            backend.describe(),
            {
                "generation": GENERATION,
                "port": PORT,
                "pid": None,
                "state": "stopped",
                "inflight": 0,
                "upgraded": 0,
                "liveness": None,
                "directory": self.cwd,
            },
        )

    def test_appPidWithoutPidfile(self) -> None:
        """
        Until the app writes its pidfile its pid is the spawned process's.
        """
        backend, process = self.launched()
        self.assertEqual(backend.appPid(), process.pid)


class DescribeExitTests(SynchronousTestCase):
    """
    Tests for L{describeExit}.
    """

    def test_describeExit(self) -> None:
        """
        A clean exit, an exit code and a signal are each said in words.
        """
        self.assertEqual(
            [
                describeExit(Failure(ProcessDone(0))),
                describeExit(Failure(ProcessTerminated(2))),
                describeExit(Failure(ProcessTerminated(None, signal.SIGTERM))),
            ],
            [
                "exited with code 0",
                "exited with code 2",
                "was killed by signal 15 (SIGTERM)",
            ],
        )

    def test_describeSent(self) -> None:
        """
        An end by a signal rainbowd sent, or by the shell's code for it, is
        its stop; the same end without that signal sent is not.
        """
        term, kill = signal.SIGTERM, signal.SIGKILL
        self.assertEqual(
            [
                describeExit(Failure(ProcessTerminated(143)), {term}),
                describeExit(Failure(ProcessTerminated(None, term)), {term}),
                describeExit(Failure(ProcessTerminated(None, kill)), {term, kill}, 10),
                describeExit(Failure(ProcessTerminated(137)), {term, kill}),
                describeExit(Failure(ProcessTerminated(143)), {kill}),
                describeExit(Failure(ProcessTerminated(None, kill)), {term}),
                describeExit(Failure(ProcessTerminated(143))),
                describeExit(Failure(ProcessTerminated(1)), {term}),
            ],
            [
                "stopped by SIGTERM",
                "stopped by SIGTERM",
                "killed with SIGKILL after killTimeout (10 s)",
                "killed with SIGKILL after killTimeout",
                "exited with code 143",
                "was killed by signal 9 (SIGKILL)",
                "exited with code 143",
                "exited with code 1",
            ],
        )

    def test_describeUnnamedSignal(self) -> None:
        """
        A signal with no name in L{signal.Signals}, such as a real-time one,
        is said by its number.
        """
        self.assertEqual(
            describeExit(Failure(ProcessTerminated(None, UNNAMED_SIGNAL))),
            f"was killed by signal {UNNAMED_SIGNAL}",
        )
