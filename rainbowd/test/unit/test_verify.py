"""
Tests for L{rainbowd.app.verify}, and for the deployer's verify step.
"""

import errno
import os
import signal

import attrs
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.backend import LONGEST_LINE, OUTPUT_GRACE, Backend, State
from rainbowd.app.deployer import DeployFailed, DeployRefused, describeOutcome
from rainbowd.app.verify import (
    STREAMED_LINES,
    VERIFY_LINES,
    Verified,
    Verifier,
    VerifyFailed,
    VerifyRun,
    verifyAsking,
)
from rainbowd.config import Config
from rainbowd.test.fakes import FakeProcessReactor, FakeSignals
from rainbowd.test.unit.test_deployer import Harness

VERIFY = "curl -fsS http://127.0.0.1:$1/ready"


class VerifyRunTests(SynchronousTestCase):
    """
    A L{VerifyRun} of a backend on fakes, whose process the test ends.
    """

    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.signals = FakeSignals(self.reactor)
        self.stateDir = os.path.abspath(self.mktemp())
        os.makedirs(self.stateDir)
        self.lines: list = []

    def started(self, **changes):
        """
        Start the verify of generation 4 on port 20004, and return the run
        and its process.
        """
        settings = dict(
            run="app $1 $2",
            verify=VERIFY,
            verifyTimeout=5.0,
            cwd=self.stateDir,
            stateDir=self.stateDir,
            env={"APP_ENV": "test"},
        )
        settings.update(changes)
        backend = Backend(
            Config(**settings), 4, 20004, self.reactor, None, self.signals
        )
        run = Verifier(self.reactor, self.signals).start(
            backend, lambda line, stream: self.lines.append((line, stream))
        )
        return run, (self.reactor.processes or [None])[-1]

    def test_command(self):
        """
        The command runs like C{run}: with C{/bin/sh -c} in a session of its
        own, C{$1} the port and C{$2} the generation, in C{cwd}, with the
        app's environment, its generation's marker and C{RAINBOWD_PORT},
        and its input closed.
        """
        run, process = self.started()
        self.assertEqual(process.executable, "setsid")
        self.assertEqual(
            process.args,
            ["setsid", "/bin/sh", "-c", VERIFY, "rainbowd-verify", "20004", "4"],
        )
        self.assertEqual(process.path, self.stateDir)
        self.assertEqual(process.env["RAINBOWD_PORT"], "20004")
        self.assertEqual(process.env["RAINBOWD_GENERATION"], "4")
        self.assertEqual(process.env["RAINBOWD_STATE_DIR"], self.stateDir)
        self.assertEqual(process.env["RAINBOWD_VERIFY"], "1")
        self.assertEqual(process.env["APP_ENV"], "test")
        self.assertEqual(process.env["PATH"], os.environ["PATH"])
        self.assertEqual(run.pgid, process.pid)
        self.assertTrue(process.stdinClosed)

    def test_directory(self):
        """
        The command's C{$PWD} is its generation's directory, as the app's
        is, not the one rainbowd was started in (a release's C{current}
        link, say, which may point elsewhere by now).
        """
        self.patch(os, "environ", {**os.environ, "PWD": "/srv/app/current"})
        run, process = self.started()
        self.assertEqual(process.path, self.stateDir)
        self.assertEqual(process.env["PWD"], self.stateDir)

    def test_passes(self):
        """
        Exit status 0 passes, with the time taken and the last output.
        """
        run, process = self.started()
        self.reactor.advance(1.5)
        process.emit(b"GET /ready: 200\n")
        self.assertNoResult(run.result)
        process.exit(0)
        self.assertEqual(
            self.successResultOf(run.result), Verified(1.5, 1, ("GET /ready: 200",))
        )
        self.assertEqual(self.lines, [("GET /ready: 200", "stdout")])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_fails(self):
        """
        Any other exit status fails, with that status and the last lines of
        output from both streams.
        """
        run, process = self.started()
        process.emit(b"checking /ready\n")
        process.emit(b"curl: (22) The requested URL returned error: 500\n", 2)
        process.exit(22)
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertEqual(error.reason, "exited with code 22")
        self.assertEqual((error.exitCode, error.signal, error.timedOut), (22, None, False))
        self.assertEqual(
            error.output,
            ("checking /ready", "curl: (22) The requested URL returned error: 500"),
        )
        self.assertEqual(self.lines[1][1], "stderr")
        self.assertEqual(error.asJSON()["output"], list(error.output))

    def test_commandNotFound(self):
        """
        Exit status 127 says that the shell did not find the command.
        """
        run, process = self.started(verify="./smoke-test.sh $1")
        process.emit(b"rainbowd-verify: 1: ./smoke-test.sh: not found\n", 2)
        process.exit(127)
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertEqual(error.exitCode, 127)
        self.assertIn("exited with code 127: the shell did not find the command", error.reason)
        self.assertEqual(error.output, ("rainbowd-verify: 1: ./smoke-test.sh: not found",))

    def test_timeout(self):
        """
        A verify still running after C{verifyTimeout} has its whole process
        group killed, and fails saying so.
        """
        run, process = self.started()
        child = process.pid + 100
        process.members.add(child)
        process.termDelay = None  # it ignores SIGTERM
        self.reactor.advance(4.9)
        self.assertNoResult(run.result)
        self.assertEqual(self.signals.sent, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.signals.sent, [("group", run.pgid, signal.SIGKILL)])
        self.assertNotIn(child, process.members)
        self.reactor.advance(0)
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertTrue(error.timedOut)
        self.assertEqual(error.signal, signal.SIGKILL)
        self.assertEqual(
            error.reason,
            "did not finish within verifyTimeout (5 s), so its process group "
            f"{run.pgid} was killed",
        )

    def test_leftoverChildKilled(self):
        """
        What the verify's shell leaves running when it exits is killed, and
        a child that keeps its output open cannot hold the outcome up beyond
        a short grace.
        """
        run, process = self.started()
        child = process.pid + 100
        process.members.add(child)
        process.holdsPipes = True
        process.exit(0)
        self.assertIn(("group", run.pgid, signal.SIGKILL), self.signals.sent)
        self.assertNotIn(child, process.members)
        self.assertNoResult(run.result)
        self.reactor.advance(OUTPUT_GRACE)
        self.reactor.advance(0)
        self.assertIsInstance(self.successResultOf(run.result), Verified)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_straysKilled(self):
        """
        Processes the verify started outside its process group (with
        C{setsid}) are killed once its shell has exited; its generation's
        own are left alone.
        """
        run, process = self.started()
        generation = {"RAINBOWD_STATE_DIR": self.stateDir, "RAINBOWD_GENERATION": "4"}
        self.signals.strays[5001] = {**generation, "RAINBOWD_VERIFY": "1"}
        self.signals.strays[5002] = dict(generation)
        process.exit(0)
        self.assertIn(("marked", 5001, signal.SIGKILL), self.signals.sent)
        self.assertEqual(list(self.signals.strays), [5002])
        self.assertIsInstance(self.successResultOf(run.result), Verified)

    def test_hungChildHoldingOutputTimesOut(self):
        """
        A verify whose shell waits on a child that holds its output open is
        killed at C{verifyTimeout}, and its outcome follows within the
        grace.
        """
        run, process = self.started()
        process.members.add(process.pid + 100)
        process.holdsPipes = True
        self.reactor.advance(5.0)
        self.reactor.advance(0)
        self.assertNoResult(run.result)
        self.reactor.advance(OUTPUT_GRACE)
        self.reactor.advance(0)
        self.assertTrue(self.failureResultOf(run.result, VerifyFailed).value.timedOut)
        self.assertEqual(process.members, set())

    def test_megabytesOfOutput(self):
        """
        A verify that prints megabytes, in lines or in one endless line, is
        held to its last L{VERIFY_LINES} lines, each at most
        L{rainbowd.app.outputlines.LONGEST_LINE} bytes, and streams only its
        first L{STREAMED_LINES}.
        """
        run, process = self.started()
        logged = []
        # Not to the global log: trial -j sends that to its manager, which
        # takes no 64 KiB line.
        run.log = Logger(observer=logged.append)
        line = b"x" * 99 + b"\n"
        for _ in range(64):  # 4 MiB in 64 KiB reads
            process.emit(line * 655 + b"y" * 36)
        for _ in range(64):
            process.emit(b"z" * 65536)
            self.assertLess(sum(map(len, run._output.pending())), 2 * LONGEST_LINE)
        process.exit(1)
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertEqual(len(error.output), VERIFY_LINES)
        self.assertTrue(all(len(text) <= 2 * LONGEST_LINE for text in error.output))
        self.assertEqual(len(self.lines), STREAMED_LINES)
        self.assertGreater(error.lines, 40000)
        self.assertEqual(len(logged), error.lines + 1)

    def test_stop(self):
        """
        L{VerifyRun.stop} kills the verify's process group, and it fails
        with the reason given.
        """
        run, process = self.started()
        run.stop("was killed: rainbowd is shutting down")
        self.assertEqual(self.signals.sent, [("group", run.pgid, signal.SIGKILL)])
        self.reactor.advance(0)
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertEqual(error.reason, "was killed: rainbowd is shutting down")
        self.assertFalse(error.timedOut)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_spawnFails(self):
        """
        A verify that cannot be spawned fails at once, saying why.
        """

        def refuse(*args, **kwargs):
            raise OSError(7, "Argument list too long")

        self.reactor.spawnProcess = refuse
        run = VerifyRun(
            self.reactor, self.signals, VERIFY, 4, 20004, self.stateDir, {}, 5.0
        )
        run.start()
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertIn("could not be started", error.reason)
        self.assertIn("Argument list too long", error.reason)

    def test_spawnFailsOutOfResources(self):
        """
        A verify that cannot be spawned because rainbowd is out of processes
        or file descriptors fails saying which, and what to raise.
        """
        for number, name, fix in [
            (errno.EAGAIN, "Resource temporarily unavailable", "TasksMax="),
            (errno.EMFILE, "Too many open files", "LimitNOFILE="),
            (errno.ENFILE, "Too many open files in system", "fs.file-max"),
        ]:

            def refuse(*args, **kwargs):
                raise OSError(number, name)

            self.reactor.spawnProcess = refuse
            run = VerifyRun(
                self.reactor, self.signals, VERIFY, 4, 20004, self.stateDir, {}, 5.0
            )
            run.start()
            error = self.failureResultOf(run.result, VerifyFailed).value
            self.assertIn(f"could not be started: [Errno {number}] {name}: ", error.reason)
            self.assertIn(fix, error.reason)

    def test_directoryGone(self):
        """
        A verify whose generation's directory is gone (a release directory
        removed since the launch) is not spawned, and fails saying so and
        what to keep.
        """
        release = os.path.join(self.stateDir, "releases", "5")
        run, process = self.started(cwd=release)
        error = self.failureResultOf(run.result, VerifyFailed).value
        self.assertEqual(
            error.reason,
            f"could not be started: its directory {release} (\"cwd\") is gone; "
            "a release directory in use must be kept until a redeploy "
            "replaces it",
        )
        self.assertIsNone(process)

    def test_outputLogged(self):
        """
        Each line is logged as the verify's, not the app's.
        """
        run, process = self.started()
        with capturedLogs() as events:
            process.emit(b"ok: /ready\n")
        self.assertEqual(
            [formatEvent(e) for e in events], ["[generation 4 verify] ok: /ready"]
        )


def _verifyProcess(h: Harness):
    [process] = [p for p in h.reactor.processes if isinstance(p.proto, VerifyRun)]
    return process


class DeployerVerifyTests(SynchronousTestCase):
    """
    The deployer's verify step, between a new generation's health check and
    the switch.
    """

    def redeploying(self, verify=VERIFY, **changes):
        """
        A deployer serving generation 1, redeploying to a generation 2 that
        has just passed its health check; and the redeploy's outcome.
        """
        h = Harness(self)
        h.start()
        self.events = []
        h.deployer.observe(self.events.append)
        h.newConfig(verify=verify, verifyTimeout=5.0, **changes)
        d = h.deployer.redeploy()
        h.healthy(2)
        return h, d

    def kinds(self):
        return [event.kind for event in self.events]

    def test_absent(self):
        """
        Without C{verify}, a healthy generation is switched to at once, and
        nothing else is run.
        """
        h, d = self.redeploying(verify=None)
        self.assertEqual(self.successResultOf(d).generation, 2)
        self.assertEqual(len(h.reactor.processes), 2)
        self.assertNotIn("verifying", self.kinds())

    def test_passes(self):
        """
        A generation whose verify exits 0 is switched to then, and the
        verify's steps and output are events in between.
        """
        h, d = self.redeploying()
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertEqual(h.backend(2).state, State.READY)
        process = _verifyProcess(h)
        self.assertEqual(process.args[-2:], [str(h.backend(2).port), "2"])
        h.reactor.advance(0.25)
        process.emit(b"ok\n")
        process.exit(0)
        self.assertEqual(self.successResultOf(d).generation, 2)
        self.assertIs(h.deployer.active, h.backend(2))
        self.assertEqual(
            self.kinds()[self.kinds().index("healthy") :][:5],
            ["healthy", "verifying", "verifyOutput", "verified", "switched"],
        )
        verifying, output, verified = self.events[
            self.kinds().index("verifying") :
        ][:3]
        self.assertEqual(
            verifying.asJSON(),
            {
                "event": "verifying",
                "time": verifying.time,
                "generation": 2,
                "deploy": 2,
                "port": h.backend(2).port,
                "command": VERIFY,
                "timeout": 5.0,
            },
        )
        self.assertEqual(output.details, {"deploy": 2, "line": "ok", "stream": "stdout"})
        self.assertEqual(verified.details, {"deploy": 2, "seconds": 0.25})

    def test_status(self):
        """
        While a verify runs, the status names it: its generation, command,
        process group and the time it has run; otherwise it is null.
        """
        h, d = self.redeploying()
        process = _verifyProcess(h)
        h.reactor.advance(2.5)
        self.assertEqual(
            h.deployer.status()["verify"],
            {"generation": 2, "command": VERIFY, "pgid": process.pid, "seconds": 2.5},
        )
        process.exit(0)
        self.successResultOf(d)
        self.assertIsNone(h.deployer.status()["verify"])

    def test_failsKeepsOld(self):
        """
        A verify that exits non-zero fails the deploy with its status and
        last output; the new generation is stopped and the old one serves
        on.
        """
        h, d = self.redeploying()
        process = _verifyProcess(h)
        process.emit(b"GET /ready: 500\n")
        process.exit(1)
        failure = self.failureResultOf(d, DeployFailed)
        error = failure.value
        self.assertEqual(
            str(error),
            f"generation 2 on port {h.backend(2).port} failed its verify "
            "command, which exited with code 1; it is stopped before it got "
            "traffic",
        )
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertEqual(h.backend(1).state, State.ACTIVE)
        self.assertEqual(h.backend(2).state, State.STOPPING)
        body = describeOutcome(failure)
        self.assertEqual(body["verify"]["command"], VERIFY)
        self.assertEqual(body["verify"]["exitCode"], 1)
        self.assertEqual(body["verify"]["output"], ["GET /ready: 500"])
        self.assertEqual(self.kinds()[-1], "failed")
        self.assertEqual(self.events[-1].details["verify"]["exitCode"], 1)

    def test_timesOut(self):
        """
        A verify that runs past C{verifyTimeout} is killed, and the deploy
        fails saying so; the old generation serves on.
        """
        h, d = self.redeploying()
        process = _verifyProcess(h)
        h.reactor.advance(5.0)
        self.assertIn(("group", process.pgid, signal.SIGKILL), h.signals.sent)
        h.reactor.advance(0)
        error = self.failureResultOf(d, DeployFailed).value
        self.assertIn("did not finish within verifyTimeout (5 s)", str(error))
        self.assertTrue(error.verify["timedOut"])
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertEqual(h.backend(2).state, State.STOPPED)
        self.assertEqual(h.deployer.backends, [h.backend(1)])

    def test_newGenerationCrashes(self):
        """
        If the new generation exits while its verify runs, the verify is
        killed and the deploy fails with the exit; the old one serves on.
        """
        h, d = self.redeploying()
        process = _verifyProcess(h)
        h.process(2).exit(3)
        self.assertIn(("group", process.pgid, signal.SIGKILL), h.signals.sent)
        h.reactor.advance(0)
        error = self.failureResultOf(d, DeployFailed).value
        self.assertEqual(
            str(error),
            f"generation 2 on port {h.backend(2).port} exited with code 3 "
            "while its verify command ran, which was killed",
        )
        self.assertEqual(
            error.verify["reason"], "was killed: generation 2 exited with code 3"
        )
        self.assertIs(h.deployer.active, h.backend(1))
        self.assertEqual(h.deployer.routable, h.backend(1))

    def test_shutdown(self):
        """
        Stopping rainbowd while a verify runs kills the verify, refuses the
        deploy, and stops every process.
        """
        h, d = self.redeploying()
        process = _verifyProcess(h)
        stopped = h.deployer.stopService()
        self.assertIn(("group", process.pgid, signal.SIGKILL), h.signals.sent)
        h.reactor.advance(0)
        error = self.failureResultOf(d, DeployRefused).value
        self.assertEqual(
            str(error), "rainbowd is shutting down; the verify of generation 2 was killed"
        )
        self.successResultOf(stopped)
        self.assertTrue(all(p.ended for p in h.reactor.processes))

    def test_startupVerified(self):
        """
        The first generation is verified too: until its verify passes, no
        generation serves.
        """
        h = Harness(self)
        h.configs[0] = attrs.evolve(h.configs[0], verify=VERIFY)
        h.deployer.config = h.configs[0]
        h.deployer.startService()
        h.healthy(1)
        self.assertIsNone(h.deployer.active)
        _verifyProcess(h).exit(0)
        self.assertIs(h.deployer.active, h.backend(1))


class VerifyAskingTests(SynchronousTestCase):
    """
    L{verifyAsking} tells a control client that is one of this rainbowd's
    verify processes, on a fake C{/proc}.
    """

    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.signals = FakeSignals(self.reactor)
        self.proc = self.mktemp()
        os.makedirs(os.path.join(self.proc, "net"))
        self.marker = {"RAINBOWD_STATE_DIR": "/srv/app/.rainbowd", "RAINBOWD_VERIFY": "1"}
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        with open(os.path.join(self.proc, "net", "tcp"), "w") as f:
            f.write(
                header
                # The control port 7001 (1B59) listening, the verify's
                # connection to it from 50312 (C488), and rainbowd's end.
                + "   0: 0100007F:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 111 1\n"
                + "   1: 0100007F:C488 0100007F:1B59 01 00000000:00000000 00:00000000 00000000  0 0 222 1\n"
                + "   2: 0100007F:1B59 0100007F:C488 01 00000000:00000000 00:00000000 00000000  0 0 333 1\n"
            )
        self.process(5001, {**self.marker}, ["pipe:[9]", "socket:[222]"])
        self.process(5002, {"RAINBOWD_STATE_DIR": "/srv/app/.rainbowd"}, ["socket:[444]"])

    def process(self, pid, env, links):
        self.signals.strays[pid] = env
        fds = os.path.join(self.proc, str(pid), "fd")
        os.makedirs(fds)
        for fd, link in enumerate(links):
            os.symlink(link, os.path.join(fds, str(fd)))

    def asking(self, **kwargs):
        return verifyAsking(self.signals, "/srv/app/.rainbowd", proc=self.proc, **kwargs)

    def test_tcp(self):
        """
        The verify process holding the TCP connection from the client's port
        to the control port is found; another connection is not its.
        """
        self.assertEqual(self.asking(ports=(50312, 7001)), 5001)
        self.assertIsNone(self.asking(ports=(50313, 7001)))
        self.assertIsNone(self.asking(ports=(7001, 50312)))

    def test_unix(self):
        """
        A unix socket's client is a verify process if it carries this
        rainbowd's verify marker; an app process is not one.
        """
        self.assertEqual(self.asking(pid=5001), 5001)
        self.assertIsNone(self.asking(pid=5002))
        self.assertIsNone(self.asking(pid=None))

    def test_otherRainbowd(self):
        """
        The verify of another rainbowd (another state directory) is not
        this one's.
        """
        self.signals.strays[5001] = {**self.marker, "RAINBOWD_STATE_DIR": "/srv/other"}
        self.assertIsNone(self.asking(ports=(50312, 7001)))
