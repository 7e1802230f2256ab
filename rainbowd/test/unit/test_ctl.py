# -*- test-case-name: rainbowd.test.unit.test_ctl -*-
"""
Tests for L{rainbowd.control.ctl}: finding rainbowd, and what rainbowctl prints,
with fake connections.
"""

import io
import json
import sys
import time
from typing import Dict, List, Optional

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import rainbowd
from rainbowd import versionLine
from rainbowd.control.client import ConnectionClosed
from rainbowd.control.ctl import (
    CANNOT,
    FAILED,
    HISTORY_WIDTH,
    ControlAddress,
    CtlError,
    Progress,
    _columns,
    controlAddress,
    findTarget,
    historyTable,
    run,
    statusTable,
)

RUN = "gunicorn app:app --bind 127.0.0.1:$1 --pid $2"

SUCCESS = [
    {
        "event": "deploying",
        "time": 0,
        "generation": None,
        "deploy": 4,
        "cause": "redeploy",
    },
    {"event": "launching", "time": 0, "generation": 3, "deploy": 4, "port": 20003},
    {"event": "waiting", "time": 1, "generation": 3, "deploy": 4, "elapsed": 1.0},
    {"event": "waiting", "time": 2, "generation": 3, "deploy": 4, "elapsed": 2.0},
    {
        "event": "healthy",
        "time": 2.5,
        "generation": 3,
        "deploy": 4,
        "port": 20003,
        "seconds": 2.5,
    },
    {"event": "switched", "time": 2.5, "generation": 3, "deploy": 4, "previous": 2},
    {"event": "draining", "time": 2.5, "generation": 2, "inflight": 2},
    {
        "event": "result",
        "time": 2.5,
        "ok": True,
        "generation": 3,
        "port": 20003,
        "pid": 99,
        "seconds": 2.5,
        "serving": 3,
    },
    {"event": "draining", "time": 3.5, "generation": 2, "inflight": 2, "elapsed": 1.0},
    {"event": "draining", "time": 4.5, "generation": 2, "inflight": 1, "elapsed": 2.0},
    {
        "event": "stopped",
        "time": 5,
        "generation": 2,
        "state": "stopped",
        "exit": "exited with code 0",
    },
]

FAILURE = [
    {
        "event": "deploying",
        "time": 0,
        "generation": None,
        "deploy": 5,
        "cause": "redeploy",
    },
    {"event": "launching", "time": 0, "generation": 4, "deploy": 5, "port": 20004},
    {
        "event": "result",
        "time": 0.3,
        "ok": False,
        "error": "generation 4 on port 20004 exited with code 3 before it became healthy",
        "generation": 4,
        "port": 20004,
        "output": ["app: cannot import settings"],
        "hint": "generation 3 is still serving; fix the problem and redeploy",
        "serving": 3,
    },
    {
        "event": "stopped",
        "time": 0.3,
        "generation": 4,
        "state": "failed",
        "exit": "exited with code 3",
    },
]


class ControlAddressTests(SynchronousTestCase):
    """
    Tests for L{controlAddress}.
    """

    def test_tcp(self) -> None:
        """
        A TCP description is reached on its interface, or on loopback when
        it listens on every interface.
        """
        for description, expected in [
            ("tcp:7001:interface=127.0.0.1", ("127.0.0.1", 7001, "127.0.0.1:7001")),
            ("tcp:7001", ("127.0.0.1", 7001, "127.0.0.1:7001")),
            ("tcp:port=7001:interface=0.0.0.0", ("127.0.0.1", 7001, "127.0.0.1:7001")),
            ("tcp:7001:interface=10.0.0.5", ("10.0.0.5", 7001, "10.0.0.5:7001")),
            ("tcp:7001:10.0.0.5", ("10.0.0.5", 7001, "10.0.0.5:7001")),
            ("tcp6:7001:50:\\:\\:1", ("::1", 7001, "[::1]:7001")),
            ("tcp6:7001", ("::1", 7001, "[::1]:7001")),
        ]:
            address = controlAddress(description)
            self.assertEqual((address.host, address.port, str(address)), expected)

    def test_unix(self) -> None:
        """
        A unix description is reached on its path.
        """
        address = controlAddress("unix:/run/rainbowd/control.sock:mode=600")
        self.assertEqual(address, ControlAddress(path="/run/rainbowd/control.sock"))
        self.assertEqual(str(address), "the unix socket /run/rainbowd/control.sock")

    def test_unsupported(self) -> None:
        """
        Another kind of endpoint is an error naming the kinds rainbowctl
        can reach.
        """
        error = self.assertRaises(
            CtlError, controlAddress, "systemd:domain=INET:index=0"
        )
        self.assertIn("it knows tcp: and unix: endpoints", str(error))


class FindTargetTests(SynchronousTestCase):
    """
    Tests for L{findTarget}.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()

    def write(self, values, name: str = "rainbow.conf.json") -> None:
        self.directory.child(name).setContent(json.dumps(values).encode())

    def test_noConfig(self) -> None:
        """
        Without a config in the directory, the error says to pass --config.
        """
        error = self.assertRaises(CtlError, findTarget, None, self.directory.path)
        self.assertIn(f"No rainbow.conf.json in {self.directory.path}", str(error))
        self.assertIn("--config PATH", str(error))

    def test_portPlusOne(self) -> None:
        """
        The control API is found where rainbowd puts it: port + 1 on
        loopback, without a token unless one is configured.
        """
        self.write({"run": RUN, "port": 8000})
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=8001))
        self.assertIsNone(target.token)

    def test_unixAndToken(self) -> None:
        """
        --config names the file, relative to the current directory; its
        unix controlPort and its token file are used.
        """
        self.write(
            {
                "run": RUN,
                "controlPort": "unix:/run/r.sock:mode=600",
                "controlTokenFile": "token",
            },
            "prod.json",
        )
        self.directory.child("token").setContent(b"s3cret\n")
        target = findTarget("prod.json", self.directory.path)
        self.assertEqual(target.address, ControlAddress(path="/run/r.sock"))
        self.assertEqual(target.token, b"s3cret")
        self.assertEqual(target.tokenFile, self.directory.child("token").path)

    def test_relativeSocket(self) -> None:
        """
        A relative unix socket path is taken relative to the config file's
        directory, where rainbowd is started.
        """
        self.write({"run": RUN, "controlPort": "unix:control.sock"}, "prod.json")
        target = findTarget(self.directory.child("prod.json").path, "/")
        self.assertEqual(
            target.address,
            ControlAddress(path=self.directory.child("control.sock").path),
        )

    def writeText(self, text: str) -> str:
        path = self.directory.child("rainbow.conf.json")
        path.setContent(text.encode("utf-8"))
        return path.path

    def test_tokenFileMissing(self) -> None:
        """
        A token file that cannot be read is an error with rainbowd's
        message: every request would be refused without it.
        """
        self.write({"run": RUN, "controlTokenFile": "token"})
        error = self.assertRaises(CtlError, findTarget, None, self.directory.path)
        self.assertIn("does not exist", str(error))

    def test_otherKeysOnlyWarned(self) -> None:
        """
        What is wrong with keys rainbowctl does not use is a warning each,
        with a guess for a misspelt key, and the control API is still
        found.
        """
        self.write(
            {"run": RUN, "port": 8000, "drainTimout": 5, "killTimeout": "soon", "colour": 1}
        )
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=8001))
        self.assertEqual(len(target.warnings), 3)
        self.assertIn('"drainTimout" is not a key rainbowd knows. Did you mean '
                      '"drainTimeout"?', target.warnings[0])
        self.assertIn('"colour" is not a key', target.warnings[1])
        self.assertIn('"killTimeout" is \'soon\'', target.warnings[2])

    def test_wholeFileProblemWarned(self) -> None:
        """
        A config rainbowd would refuse as a whole (here: no "run") is one
        warning.
        """
        self.write({"controlPort": 9001})
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=9001))
        self.assertEqual(len(target.warnings), 1)
        self.assertIn('No "run" command', target.warnings[0])

    def test_goodConfigNoWarning(self) -> None:
        """
        A config rainbowd loads gives no warning.
        """
        self.write({"run": RUN, "port": 8000, "drainTimeout": 5})
        self.assertEqual(findTarget(None, self.directory.path).warnings, ())

    def test_brokenJSON(self) -> None:
        """
        A file that is not valid JSON (a trailing comma) still gives the
        keys rainbowctl needs, with a warning naming the file and the line.
        """
        path = self.writeText(
            '{\n  "run": "x",\n  "controlPort": "tcp:9001:interface=127.0.0.1",\n'
            '  "controlTokenFile": "token",\n}\n'
        )
        self.directory.child("token").setContent(b"s3cret\n")
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=9001))
        self.assertEqual(target.token, b"s3cret")
        (warning,) = target.warnings
        self.assertIn(f"{path} is not valid JSON: line 5, column 1", warning)
        self.assertIn('goes on with the "controlPort", "controlTokenFile" it found', warning)

    def test_brokenJSONDefaults(self) -> None:
        """
        A file that is not valid JSON and gives none of the keys means the
        defaults: port 7000, so control port 7001.
        """
        self.writeText('{"run": "x" "drainTimeout": 5}')
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=7001))
        self.assertIn("goes on with the defaults", target.warnings[0])

    def test_brokenJSONAmbiguous(self) -> None:
        """
        In a file that is not valid JSON, a key rainbowctl needs found twice,
        or with a value it cannot read, is an error: guessing could reach
        another rainbowd.
        """
        self.writeText('{"port": 8000, "port": 9000,}')
        error = self.assertRaises(CtlError, findTarget, None, self.directory.path)
        self.assertIn('finds "port" 2 times', str(error))
        self.writeText('{"controlPort": 90x1}')
        error = self.assertRaises(CtlError, findTarget, None, self.directory.path)
        self.assertIn('cannot read the value of "controlPort"', str(error))

    def test_brokenJSONCommentedOut(self) -> None:
        """
        In a file that is not valid JSON, a key in a comment (C{//}, C{#} or
        C{/* */}) is not read: the token goes to no port the file does not
        set.
        """
        self.writeText(
            '{\n  "run": "x",\n  // "controlPort": 9999,\n'
            '  # "controlPort": 9998,\n  /* "port": 1, */\n}\n'
        )
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=7001))
        self.assertIn("goes on with the defaults", target.warnings[0])
        self.writeText('{"run": "x", // was "controlPort": 9999\n "controlPort": 9001}')
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=9001))
        self.writeText('{"run": "x",\n "controlPort": 9002 // was 9999\n}')
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=9002))

    def test_brokenJSONNested(self) -> None:
        """
        In a file that is not valid JSON, only the top-level keys are read:
        not a "port" in "env", nor one inside a string.
        """
        self.writeText(
            '{"run": "echo \\"controlPort\\": 9999", "env": {"port": "5000"},'
            ' "x": [{"controlPort": 9998}],}'
        )
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=7001))
        self.assertIn("goes on with the defaults", target.warnings[0])

    def test_systemdPort(self) -> None:
        """
        A "port" systemd passes rainbowd is no problem for rainbowctl,
        which systemd passes no socket: the "controlPort" given is used,
        without a warning.
        """
        self.write(
            {"run": RUN, "port": "systemd:domain=INET:index=0", "controlPort": 9001}
        )
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=9001))
        self.assertEqual(target.warnings, ())

    def test_systemdControlPort(self) -> None:
        """
        A "controlPort" systemd passes rainbowd is an error saying that
        rainbowctl cannot reach it, not that systemd passed no socket.
        """
        self.write({"run": RUN, "controlPort": "systemd:domain=INET:index=1"})
        error = self.assertRaises(CtlError, findTarget, None, self.directory.path)
        self.assertIn("rainbowctl cannot reach a control API on", str(error))

    def test_portWrongOnlyWarned(self) -> None:
        """
        With "controlPort" given, a wrong "port" is only warned about:
        rainbowctl does not need it.
        """
        self.write({"run": RUN, "port": "80x", "controlPort": 9001})
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=9001))
        (warning,) = target.warnings
        self.assertIn('"port" is \'80x\'', warning)

    def test_neededKeyWrong(self) -> None:
        """
        A wrong value of a key rainbowctl needs is an error.
        """
        self.write({"run": RUN, "controlPort": 0})
        error = self.assertRaises(CtlError, findTarget, None, self.directory.path)
        self.assertIn('"controlPort" is 0', str(error))

    def test_emptyFile(self) -> None:
        """
        An empty file is a warning saying so, and the defaults are used.
        """
        path = self.writeText(" \n")
        target = findTarget(None, self.directory.path)
        self.assertEqual(target.address, ControlAddress(host="127.0.0.1", port=7001))
        self.assertIn(f"{path} is empty", target.warnings[0])


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def render(events: List[dict], tty: bool = False):
    out = FakeTTY() if tty else io.StringIO()
    progress = Progress(out, tty)
    for event in events:
        progress.event(event)
    return progress.end(), out.getvalue()


class ProgressTests(SynchronousTestCase):
    """
    Tests for L{Progress}, the printing of a streamed redeploy.
    """

    def test_success(self) -> None:
        """
        Piped, each step is a plain line, waits are printed when they
        start (and every 10 s) or their count changes, and a success
        exits 0.
        """
        code, text = render(SUCCESS)
        self.assertEqual(code, 0)
        self.assertEqual(
            text.splitlines(),
            [
                "deploy 4 started",
                "deploy 4: launching generation 3 on port 20003",
                "waiting for generation 3 to be healthy: 1 s",
                "generation 3 is healthy after 2.5 s",
                "switched: generation 3 serves traffic (was generation 2)",
                "draining generation 2 (2 requests in flight)",
                "deployed generation 3 (port 20003, pid 99) in 2.5 s",
                "draining generation 2 (1 request in flight): 2 s",
                "generation 2 stopped (exited with code 0)",
            ],
        )
        self.assertNotIn("\x1b", text)

    def test_standby(self) -> None:
        """
        A deploy whose old generation is kept says for how long, and how to
        roll back to it.
        """
        events = [e for e in SUCCESS if e["event"] not in ("stopped",)]
        events.append({"event": "standby", "time": 3, "generation": 2, "seconds": 300.0})
        code, text = render(events)
        self.assertEqual(code, 0)
        self.assertEqual(
            text.splitlines()[-1],
            "generation 2 is the standby for 300 s: rainbowctl rollback moves "
            "traffic back to it",
        )

    def test_plainEveryTenSeconds(self) -> None:
        """
        Piped, a long wait is reported every 10 seconds.
        """
        waits = [
            {"event": "waiting", "generation": 3, "elapsed": float(n)}
            for n in range(1, 22)
        ]
        code, text = render(waits)
        self.assertEqual(
            [line for line in text.splitlines() if line.startswith("waiting")],
            [
                "waiting for generation 3 to be healthy: 1 s",
                "waiting for generation 3 to be healthy: 10 s",
                "waiting for generation 3 to be healthy: 20 s",
            ],
        )

    def test_tty(self) -> None:
        """
        On a terminal, a wait is one line rewritten in place, cleared
        before the next step.
        """
        code, text = render(SUCCESS[:5], tty=True)
        self.assertIn(
            "\r\x1b[Kwaiting for generation 3 to be healthy: 1 s"
            "\r\x1b[Kwaiting for generation 3 to be healthy: 2 s"
            "\r\x1b[Kgeneration 3 is healthy after 2.5 s\n",
            text,
        )

    def test_failure(self) -> None:
        """
        A failure exits 1 and ends with the reason, the app's last output
        and the generation still serving.
        """
        code, text = render(FAILURE)
        self.assertEqual(code, FAILED)
        self.assertEqual(
            text.splitlines(),
            [
                "deploy 5 started",
                "deploy 5: launching generation 4 on port 20004",
                "generation 4 stopped (it never became healthy; exited with code 3)",
                "deploy 5 failed: generation 4 on port 20004 exited with code 3 before "
                "it became healthy",
                "last output of generation 4:",
                "    app: cannot import settings",
                "generation 3 is still serving; fix the problem and run rainbowctl "
                "redeploy again.",
            ],
        )

    def test_verify(self) -> None:
        """
        A verify's start, the time it has run, its output and its pass are
        each a line.
        """
        code, text = render(
            [
                {"event": "healthy", "generation": 4, "seconds": 1.0},
                {
                    "event": "verifying",
                    "generation": 4,
                    "port": 20004,
                    "command": "curl -fsS http://127.0.0.1:$1/ready",
                    "timeout": 30.0,
                },
                {"event": "waiting", "generation": 4, "elapsed": 1.0, "step": "verify"},
                {"event": "verifyOutput", "generation": 4, "line": "ready", "stream": "stdout"},
                {"event": "verified", "generation": 4, "seconds": 0.25},
            ]
        )
        self.assertEqual(
            text.splitlines()[:5],
            [
                "generation 4 is healthy after 1 s",
                "verifying generation 4 on port 20004: curl -fsS "
                "http://127.0.0.1:$1/ready",
                "waiting for generation 4's verify: 1 s",
                "    verify: ready",
                "generation 4 passed its verify in 0.25 s",
            ],
        )

    def test_verifyFailure(self) -> None:
        """
        A failed verify ends with the reason, the verify's last output, then
        the app's, and the generation still serving.
        """
        result = {
            **FAILURE[2],
            "error": "generation 4 on port 20004 failed its verify command, "
            "which exited with code 22; it is stopped before it got traffic",
            "output": ["GET /ready 500"],
            "verify": {
                "command": "curl -fsS http://127.0.0.1:$1/ready",
                "reason": "exited with code 22",
                "exitCode": 22,
                "signal": None,
                "timedOut": False,
                "seconds": 0.1,
                "lines": 1,
                "output": ["curl: (22) The requested URL returned error: 500"],
            },
        }
        code, text = render([FAILURE[0], result])
        self.assertEqual(code, FAILED)
        self.assertEqual(
            text.splitlines()[1:],
            [
                "deploy 5 failed: generation 4 on port 20004 failed its verify "
                "command, which exited with code 22; it is stopped before it got "
                "traffic",
                "last output of its verify (1 line in all; rainbowd's log has "
                "every one):",
                "    curl: (22) The requested URL returned error: 500",
                "last output of generation 4:",
                "    GET /ready 500",
                "generation 3 is still serving; fix the problem and run rainbowctl "
                "redeploy again.",
            ],
        )

    def test_controlCharactersReplaced(self) -> None:
        """
        Control characters in a verify's output or the app's (a clear
        screen, a window title, a carriage return) are printed as C{?}, not
        sent for the operator's terminal to act on.
        """
        hostile = "\x1b[2J\x1b]0;owned\x07ok\rbad"
        result = {
            **FAILURE[2],
            "output": [hostile],
            "verify": {"lines": 1, "output": [hostile]},
        }
        code, text = render(
            [
                {"event": "verifyOutput", "generation": 4, "line": hostile, "stream": "stdout"},
                result,
            ]
        )
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\r", text)
        self.assertIn("    verify: ?[2J?]0;owned?ok?bad\n", text)
        self.assertEqual(text.count("    ?[2J?]0;owned?ok?bad\n"), 2)

    def test_noResult(self) -> None:
        """
        A stream that ends without a result exits 1 and says to look at the
        status.
        """
        out, err = io.StringIO(), io.StringIO()
        progress = Progress(out, False, err)
        for event in SUCCESS[:3]:
            progress.event(event)
        self.assertEqual(progress.end(), FAILED)
        self.assertEqual(
            err.getvalue(),
            "rainbowctl: the connection to rainbowd closed before the deploy's "
            "outcome; see rainbowctl status.\n",
        )
        self.assertNotIn("closed", out.getvalue())

    def test_stoppedBySigterm(self) -> None:
        """
        A generation rainbowd stopped with SIGTERM is said to be stopped by
        it; one that never became healthy says that too.
        """
        stopped = {"event": "stopped", "time": 0, "generation": 2, "state": "stopped"}
        code, text = render(
            [
                {**stopped, "exit": "stopped by SIGTERM"},
                {**stopped, "state": "failed", "exit": "stopped by SIGTERM"},
                {**stopped, "exit": "killed with SIGKILL after killTimeout (10 s)"},
            ]
        )
        self.assertEqual(
            text.splitlines(),
            [
                "generation 2 stopped by SIGTERM",
                "generation 2 stopped (it never became healthy; stopped by SIGTERM)",
                "generation 2 stopped (killed with SIGKILL after killTimeout (10 s))",
                "rainbowctl: the connection to rainbowd closed before the "
                "deploy's outcome; see rainbowctl status.",
            ],
        )

    def test_unhealthy(self) -> None:
        """
        A health check failing the same way is said once when it is first
        reported and again when its answer changes; meanwhile the waiting
        line counts it.
        """
        def unhealthy(error: str, checks: int) -> dict:
            return {
                "event": "unhealthy", "time": 0, "generation": 3, "deploy": 4,
                "port": 20003, "error": error, "checks": checks,
            }

        def waiting(elapsed: float) -> dict:
            return {"event": "waiting", "generation": 3, "elapsed": elapsed}

        events = [
            unhealthy("GET /healthz answered 404", 10),
            waiting(1.0),
            unhealthy("GET /healthz answered 404", 20),
            waiting(2.0),
            unhealthy("GET /healthz answered 500", 10),
        ]
        code, text = render(events)
        self.assertEqual(
            text.splitlines()[:3],
            [
                "generation 3: GET /healthz answered 404 (10 times in a row); "
                "still waiting, up to startTimeout",
                "waiting for generation 3 to be healthy: 1 s; GET /healthz "
                "answered 404 (10 times)",
                "generation 3: GET /healthz answered 500 (10 times in a row); "
                "still waiting, up to startTimeout",
            ],
        )
        code, text = render(events[:4], tty=True)
        self.assertIn(
            "\r\x1b[Kwaiting for generation 3 to be healthy: 2 s; GET /healthz "
            "answered 404 (20 times)",
            text,
        )

    def test_failureNothingServing(self) -> None:
        """
        A failure while nothing serves says so, with the same hint as the
        control API's, in rainbowctl's words.
        """
        code, text = render(FAILURE[:2] + [{**FAILURE[2], "serving": None}])
        self.assertEqual(
            text.splitlines()[-1],
            "no generation is serving; fix the problem and run rainbowctl "
            "redeploy again.",
        )

    def test_refusedSaysWhatServes(self) -> None:
        """
        A refused deploy (no hint: nothing is broken) says what serves,
        without telling to fix a problem.
        """
        refused = {
            "event": "result", "time": 0, "ok": False, "serving": 3,
            "error": "2 backends are still alive and maxBackends is 2",
        }
        code, text = render(SUCCESS[:1] + [refused])
        self.assertEqual(code, FAILED)
        self.assertEqual(
            text.splitlines()[-2:],
            [
                "deploy 4 failed: 2 backends are still alive and maxBackends is 2",
                "generation 3 is still serving.",
            ],
        )

    def test_shuttingDown(self) -> None:
        """
        Once rainbowd says it is shutting down, its refusal says only that,
        and a stream cut before the outcome says rainbowd is shutting down
        rather than to look at the status.
        """
        shutdown = {"event": "shutdown", "time": 1, "generation": None,
                    "generations": [2, 3]}
        refused = {
            "event": "result", "time": 1, "ok": False, "serving": 2,
            "error": "rainbowd is shutting down",
        }
        code, text = render(SUCCESS[:3] + [shutdown, refused])
        self.assertEqual(code, FAILED)
        self.assertEqual(
            text.splitlines()[-2:],
            [
                "rainbowd is shutting down; it drains and stops generations 2, 3",
                "deploy 4 failed: rainbowd is shutting down",
            ],
        )
        out, err = io.StringIO(), io.StringIO()
        progress = Progress(out, False, err)
        for event in SUCCESS[:3] + [shutdown]:
            progress.event(event)
        self.assertEqual(progress.end(), FAILED)
        self.assertEqual(
            err.getvalue(),
            "rainbowctl: rainbowd is shutting down, and closed the connection "
            "before the deploy's outcome.\n",
        )

    def test_queued(self) -> None:
        """
        A queued redeploy says it waits for the one under way.
        """
        code, text = render([{"event": "queued", "time": 0}])
        self.assertIn("Another deploy is under way", text)


    def test_queuedWaiting(self) -> None:
        """
        While queued, the time waited for the deploy under way is a wait
        line, printed piped when it begins and every 10 s.
        """
        events = [{"event": "queued", "time": 0}] + [
            {"event": "waiting", "time": t, "step": "queued", "elapsed": float(t)}
            for t in range(1, 12)
        ]
        code, text = render(events)
        self.assertEqual(
            text.splitlines()[:3],
            [
                "Another deploy is under way; this one starts after it.",
                "waiting for the deploy under way: 1 s",
                "waiting for the deploy under way: 10 s",
            ],
        )

    def test_liveness(self) -> None:
        """
        The serving generation not answering, and answering again, are each
        a line; a stopped one's says new requests wait for the replacement.
        """
        code, text = render(
            [
                {
                    "event": "unresponsive",
                    "time": 0,
                    "generation": 3,
                    "port": 20003,
                    "pid": 4251,
                    "failures": 3,
                    "error": "GET /health did not answer within 2 s",
                },
                {"event": "recovered", "time": 1, "generation": 3, "port": 20003},
                {
                    "event": "unresponsive",
                    "time": 2,
                    "generation": 3,
                    "port": 20003,
                    "pid": 4251,
                    "failures": 3,
                    "error": "its process 4251 is stopped",
                    "stopped": True,
                },
            ]
        )
        self.assertEqual(
            text.splitlines()[:3],
            [
                "generation 3 (pid 4251) does not answer: 3 liveness checks "
                "failed in a row, the last: GET /health did not answer within "
                "2 s; a replacement is due",
                "generation 3 answers its liveness check again",
                "generation 3 (pid 4251) does not answer: 3 liveness checks "
                "failed in a row, the last: its process 4251 is stopped; a "
                "replacement is due, and new requests wait for it",
            ],
        )


class StatusTableTests(SynchronousTestCase):
    """
    Tests for L{statusTable}.
    """

    def test_table(self) -> None:
        """
        The backends are a table with aligned columns, followed by the last
        deploy.
        """
        text = statusTable(
            {
                "active": 3,
                "deploying": True,
                "backends": [
                    {
                        "generation": 3,
                        "port": 20003,
                        "pid": 4251,
                        "state": "active",
                        "inflight": 0,
                    },
                    {
                        "generation": 2,
                        "port": 20002,
                        "pid": None,
                        "state": "stopping",
                        "inflight": 12,
                    },
                ],
                "lastDeploy": {
                    "ok": True,
                    "generation": 3,
                    "port": 20003,
                    "pid": 4251,
                    "seconds": 0.53,
                },
            }
        )
        self.assertEqual(
            text,
            (
                "GENERATION  STATE     PORT   PID   IN FLIGHT\n"
                "3           active    20003  4251  0\n"
                "2           stopping  20002  -     12\n"
                "a deploy is under way\n"
                "last deploy: generation 3 deployed in 0.53 s\n"
            ),
        )

    def test_unresponsive(self) -> None:
        """
        A generation that fails its liveness checks is said under the
        table, with the count and the last error, and, when it is stopped,
        that new requests wait for its replacement.
        """
        text = statusTable(
            {
                "active": 3,
                "routable": None,
                "deploying": True,
                "backends": [
                    {
                        "generation": 3,
                        "port": 20003,
                        "pid": 4251,
                        "state": "active",
                        "inflight": 4,
                        "liveness": {
                            "unresponsive": True,
                            "failures": 5,
                            "lastError": "its process 4251 is stopped",
                        },
                    },
                    {
                        "generation": 4,
                        "port": 20004,
                        "pid": 4260,
                        "state": "starting",
                        "inflight": 0,
                        "liveness": None,
                    },
                ],
                "lastDeploy": None,
            }
        )
        self.assertIn(
            "\ngeneration 3 does not answer: 5 liveness checks failed in a row, "
            "the last: its process 4251 is stopped; new requests wait for its "
            "replacement\na deploy is under way\n",
            text,
        )

    def test_verifying(self) -> None:
        """
        A verify under way is said, with its generation, time, process
        group and command.
        """
        text = statusTable(
            {
                "active": 3,
                "deploying": True,
                "backends": [],
                "lastDeploy": None,
                "verify": {
                    "generation": 4,
                    "command": "./smoke.sh $1",
                    "pgid": 4270,
                    "seconds": 12.25,
                },
            }
        )
        self.assertIn(
            "\na deploy is under way: generation 4's verify has run 12 s "
            "(process group 4270): ./smoke.sh $1\n",
            text,
        )

    def test_standby(self) -> None:
        """
        The standby is a row with its state, and a line saying for how long
        it stays one and how to roll back to it.
        """
        text = statusTable(
            {
                "active": 3,
                "standby": 2,
                "backends": [
                    {"generation": 3, "state": "active", "port": 20003, "pid": 9,
                     "inflight": 0},
                    {"generation": 2, "state": "standby", "port": 20002, "pid": 8,
                     "inflight": 0, "standbySecondsLeft": 241.6},
                ],
            }
        )
        lines = text.splitlines()
        self.assertEqual(lines[2].split(), ["2", "standby", "20002", "8", "0"])
        self.assertEqual(
            lines[3],
            "generation 2 is the standby for 242 s more: rainbowctl rollback "
            "moves traffic back to it",
        )

    def test_empty(self) -> None:
        """
        With no backend and a failed last deploy, both are said.
        """
        text = statusTable(
            {
                "active": None,
                "deploying": False,
                "backends": [],
                "lastDeploy": {"ok": False, "error": "boom"},
            }
        )
        self.assertIn("(no app process is running)", text)
        self.assertIn("last deploy failed: boom", text)

    def test_connections(self) -> None:
        """
        The public port's connection counts are a line of their own.
        """
        text = statusTable(
            {
                "active": None,
                "deploying": False,
                "backends": [],
                "lastDeploy": None,
                "connections": {"open": 12, "max": 408, "refused": 3},
            }
        )
        self.assertIn(
            "public connections: 12 open, 408 at most; 3 refused since startup\n",
            text,
        )


class FakeResponse:
    def __init__(self, status: int, body: bytes, contentType: str = "application/json"):
        self.status = status
        self.reason = "Reason"
        self._headers = {"content-type": contentType}
        self._body = io.BytesIO(body)

    def getheader(self, name: str, default: Optional[str] = None):
        return self._headers.get(name.lower(), default)

    def read(self) -> bytes:
        return self._body.read()

    def readline(self) -> bytes:
        return self._body.readline()

    def close(self) -> None:
        self._body.close()


class FakeConnection:
    """
    A connection that records its request and answers C{response}, or
    raises C{error}.
    """

    def __init__(self, response=None, error: Optional[Exception] = None) -> None:
        self.response = response
        self.error = error
        self.requests: List[tuple] = []
        self.timeouts: List[Optional[float]] = []

    def __call__(self, timeout):
        self.timeouts.append(timeout)
        return self

    def request(self, method: str, path: str, body=None, headers: Dict[str, str] = {}):
        self.requests.append((method, path, body, headers))
        if self.error is not None:
            raise self.error

    def getresponse(self):
        return self.response


class RainbowctlTestCase(SynchronousTestCase):
    """
    The setup the tests of L{run} share: a directory with a
    C{rainbow.conf.json} in it, and L{run} called there with a fake
    connection.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()
        self.config: Dict[str, object] = {"run": RUN, "port": 8000}
        self.write()

    def write(self) -> None:
        self.directory.child("rainbow.conf.json").setContent(
            json.dumps(self.config).encode()
        )

    def rainbowctl(self, argv: List[str], connection: FakeConnection):
        out, err = io.StringIO(), io.StringIO()
        code = run(argv, out, err, self.directory.path, connection)
        return code, out.getvalue(), err.getvalue()


class RunTests(RainbowctlTestCase):
    """
    Tests for L{run}, the whole of rainbowctl, with a fake connection.
    """

    def ndjson(self, events: List[dict]) -> FakeResponse:
        body = b"".join(json.dumps(event).encode() + b"\n" for event in events)
        return FakeResponse(200, body, "application/x-ndjson")

    def test_redeploy(self) -> None:
        """
        redeploy POSTs asking for NDJSON, with the token, prints the steps
        and exits 0 on success.
        """
        token = self.directory.child("token")
        token.setContent(b"s3cret\n")
        self.config["controlTokenFile"] = "token"
        self.write()
        connection = FakeConnection(self.ndjson(SUCCESS))
        code, out, err = self.rainbowctl(["redeploy"], connection)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("deployed generation 3", out)
        method, path, body, headers = connection.requests[0]
        self.assertEqual((method, path, body), ("POST", "/redeploy", b""))
        self.assertEqual(headers["Accept"], "application/x-ndjson")
        self.assertEqual(headers["Authorization"], "Bearer s3cret")

    def test_rollback(self) -> None:
        """
        rollback POSTs /rollback asking for NDJSON, says it rolled back and
        to which generation, and exits 0.
        """
        events = [
            {"event": "deploying", "time": 0, "generation": None, "deploy": 4,
             "cause": "rollback", "requester": "unix socket"},
            {"event": "switched", "time": 0, "generation": 2, "deploy": 4, "previous": 3},
            {"event": "result", "time": 0, "ok": True, "generation": 2,
             "port": 20001, "pid": 7, "seconds": 0.002, "serving": 2},
        ]
        connection = FakeConnection(self.ndjson(events))
        code, out, err = self.rainbowctl(["rollback"], connection)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out.splitlines(),
            [
                "rollback 4 started",
                "switched: generation 2 serves traffic (was generation 3)",
                "rolled back to generation 2 (port 20001, pid 7) in 0.002 s",
            ],
        )
        self.assertEqual(connection.requests[0][:2], ("POST", "/rollback"))

    def test_rollbackNothing(self) -> None:
        """
        A rollback with nothing to roll back to exits 1 with the reason.
        """
        events = [
            {"event": "deploying", "time": 0, "generation": None, "deploy": 4,
             "cause": "rollback", "requester": None},
            {"event": "result", "time": 0, "ok": False,
             "error": "nothing to roll back to: ...", "serving": 2},
        ]
        code, out, err = self.rainbowctl(
            ["rollback"], FakeConnection(self.ndjson(events))
        )
        self.assertEqual(code, 1)
        self.assertEqual(
            out.splitlines()[1:],
            [
                "rollback 4 failed: nothing to roll back to: ...",
                "generation 2 is still serving.",
            ],
        )

    def test_redeployWatchRolledBack(self) -> None:
        """
        redeploy --watch asks for the watch, prints the rollback and its
        reason, and exits 1 when the new version was rolled back.
        """
        events = [e for e in SUCCESS if e["event"] != "stopped"] + [
            {"event": "standby", "time": 3, "generation": 2, "seconds": 300.0},
            {"event": "watching", "time": 4, "generation": 3, "standby": 2,
             "secondsLeft": 299.0},
            {"event": "switched", "time": 5, "generation": 2, "deploy": 4, "previous": 3},
            {"event": "rolledBack", "time": 5, "generation": 2, "cause": "errorRate",
             "from": 3, "to": 2, "deploy": 4,
             "reason": "answered 30 of its 40 responses with 5xx"},
            {"event": "watched", "time": 5, "generation": 3, "rolledBack": True,
             "serving": 2},
        ]
        connection = FakeConnection(self.ndjson(events))
        code, out, err = self.rainbowctl(["redeploy", "--watch"], connection)
        self.assertEqual((code, err), (1, ""))
        self.assertEqual(connection.requests[0][1], "/redeploy?watch=1")
        lines = out.splitlines()
        self.assertIn(
            "watching generation 3: 299 s left in the rollback window", lines
        )
        self.assertIn(
            "rolled back by rainbowd: generation 3 answered 30 of its 40 responses "
            "with 5xx; generation 2 serves again",
            lines,
        )
        self.assertEqual(
            lines[-1],
            "generation 3 was rolled back within its window; generation 2 serves",
        )

    def test_redeployWatchServed(self) -> None:
        """
        redeploy --watch exits 0 when the window ended without a rollback.
        """
        events = [e for e in SUCCESS if e["event"] != "stopped"] + [
            {"event": "standby", "time": 3, "generation": 2, "seconds": 1.0},
            {"event": "watched", "time": 5, "generation": 3, "rolledBack": False,
             "serving": 3},
        ]
        code, out, err = self.rainbowctl(
            ["redeploy", "--watch"], FakeConnection(self.ndjson(events))
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[-1], "generation 3 served through its rollback window"
        )

    def test_redeployFails(self) -> None:
        """
        A failed redeploy exits 1 with the reason.
        """
        code, out, err = self.rainbowctl(
            ["redeploy"], FakeConnection(self.ndjson(FAILURE))
        )
        self.assertEqual(code, FAILED)
        self.assertIn("deploy 5 failed: generation 4", out)

    def test_redeployCut(self) -> None:
        """
        A stream cut before the result exits 1 saying so.
        """
        response = self.ndjson(SUCCESS[:2])
        lines = iter([response.readline(), response.readline()])

        def readline() -> bytes:
            for line in lines:
                return line
            raise ConnectionClosed("the connection closed before the end of the answer")

        response.readline = readline
        code, out, err = self.rainbowctl(["redeploy"], FakeConnection(response))
        self.assertEqual(code, FAILED)
        self.assertIn("launching generation 3", out)
        self.assertIn("rainbowctl: the connection to rainbowd closed before", err)

    def test_notRunning(self) -> None:
        """
        A refused connection exits 2 naming the address and saying rainbowd
        may not be running.
        """
        connection = FakeConnection(
            error=ConnectionRefusedError(111, "Connection refused")
        )
        code, out, err = self.rainbowctl(["status"], connection)
        self.assertEqual(code, CANNOT)
        self.assertIn(
            "rainbowctl: Cannot connect to rainbowd's control API at "
            "127.0.0.1:8001 (Connection refused): rainbowd may not be running.",
            err,
        )
        self.assertIn(self.directory.child("rainbow.conf.json").path, err)

    def test_noSocket(self) -> None:
        """
        A unix socket that is not there is said the same way.
        """
        self.config["controlPort"] = "unix:/run/r.sock"
        self.write()
        error = FileNotFoundError(2, "No such file or directory")
        code, out, err = self.rainbowctl(["status"], FakeConnection(error=error))
        self.assertEqual(code, CANNOT)
        self.assertIn("at the unix socket /run/r.sock (No such file or directory)", err)

    def test_socketPermission(self) -> None:
        """
        A socket rainbowctl may not connect to says to run it as rainbowd's
        user.
        """
        self.config["controlPort"] = "unix:/run/r.sock"
        self.write()
        error = PermissionError(13, "Permission denied")
        code, out, err = self.rainbowctl(["status"], FakeConnection(error=error))
        self.assertEqual(code, CANNOT)
        self.assertIn(
            "(Permission denied): run rainbowctl as the user rainbowd runs as", err
        )

    def test_unauthorized(self) -> None:
        """
        A 401 says to configure a token when none was sent, and that the
        token does not match when one was.
        """
        code, out, err = self.rainbowctl(
            ["status"], FakeConnection(FakeResponse(401, b"{}"))
        )
        self.assertEqual(code, CANNOT)
        self.assertIn('none is configured here: set "controlTokenFile"', err)
        self.directory.child("token").setContent(b"old\n")
        self.config["controlTokenFile"] = "token"
        self.write()
        code, out, err = self.rainbowctl(
            ["status"], FakeConnection(FakeResponse(401, b"{}"))
        )
        self.assertIn("is not the one rainbowd started with", err)

    def test_status(self) -> None:
        """
        status prints the table, or with --json the JSON.
        """
        status: Dict[str, object] = {
            "active": None,
            "deploying": False,
            "backends": [],
            "lastDeploy": None,
        }
        body = json.dumps(status).encode()
        code, out, err = self.rainbowctl(
            ["status"], FakeConnection(FakeResponse(200, body))
        )
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("GENERATION"))
        code, out, err = self.rainbowctl(
            ["status", "--json"], FakeConnection(FakeResponse(200, body))
        )
        self.assertEqual(json.loads(out), status)

    def test_redeployFromVerify(self) -> None:
        """
        redeploy run by a verify command (C{RAINBOWD_VERIFY} set) is refused
        without asking rainbowd, since that redeploy would wait for the
        deploy the verify holds up; other commands still work there.
        """
        connection = FakeConnection(self.ndjson(SUCCESS))
        out, err = io.StringIO(), io.StringIO()
        environ = {"RAINBOWD_VERIFY": "1"}
        code = run(["redeploy"], out, err, self.directory.path, connection, environ)
        self.assertEqual(code, CANNOT)
        self.assertEqual(connection.requests, [])
        self.assertIn("rainbowctl: refused: this is a verify command", err.getvalue())
        self.assertIn("take rainbowctl redeploy out of verify", err.getvalue())
        status: Dict[str, object] = {
            "active": None,
            "deploying": True,
            "backends": [],
            "lastDeploy": None,
        }
        connection = FakeConnection(FakeResponse(200, json.dumps(status).encode()))
        code = run(["status"], out, err, self.directory.path, connection, environ)
        self.assertEqual(code, 0)

    def test_redeployMessage(self) -> None:
        """
        redeploy -m sends the message as a JSON body.
        """
        connection = FakeConnection(self.ndjson(SUCCESS))
        code, out, err = self.rainbowctl(["redeploy", "-m", "abc1234"], connection)
        self.assertEqual(code, 0)
        method, path, body, headers = connection.requests[0]
        self.assertEqual(json.loads(body), {"message": "abc1234"})
        self.assertEqual(headers["Content-Type"], "application/json")

    def test_redeployMessageToOlderRainbowd(self) -> None:
        """
        redeploy -m against a rainbowd from before messages (its deploying
        event names no message) says the message was not kept, and the
        fix; against one that keeps it, nothing more is said.
        """
        code, out, err = self.rainbowctl(
            ["redeploy", "-m", "abc1234"], FakeConnection(self.ndjson(SUCCESS))
        )
        self.assertEqual(code, 0)
        self.assertIn(
            "this rainbowd does not keep deploy messages: \"abc1234\" was not "
            "recorded; upgrade rainbowd, and restart it",
            out,
        )
        current = [
            dict(SUCCESS[0], requester="127.0.0.1:5000", message="abc1234")
        ] + SUCCESS[1:]
        code, out, err = self.rainbowctl(
            ["redeploy", "-m", "abc1234"], FakeConnection(self.ndjson(current))
        )
        self.assertNotIn("does not keep", out)
        code, out, err = self.rainbowctl(
            ["redeploy"], FakeConnection(self.ndjson(SUCCESS))
        )
        self.assertNotIn("does not keep", out)

    def test_redeployBadMessage(self) -> None:
        """
        A message rainbowd refuses is an error saying why, and exits 1, as
        any request rainbowd answered with an error.
        """
        answer = json.dumps({"error": '"message" is 1001 characters long'}).encode()
        code, out, err = self.rainbowctl(
            ["redeploy", "-m", "x" * 1001], FakeConnection(FakeResponse(400, answer))
        )
        self.assertEqual(code, FAILED)
        self.assertEqual(
            err,
            'rainbowctl: POST /redeploy failed: "message" is 1001 '
            "characters long\n",
        )

    def test_historyFromOlderRainbowd(self) -> None:
        """
        history against a rainbowd from before the deploy history says so,
        and that upgrading it is the fix.
        """
        answer = json.dumps(
            {"error": "no such endpoint: /deploys", "endpoints": ["POST /redeploy"]}
        ).encode()
        code, out, err = self.rainbowctl(
            ["history"], FakeConnection(FakeResponse(404, answer))
        )
        self.assertEqual(code, FAILED)
        self.assertEqual(
            err,
            "rainbowctl: this rainbowd keeps no deploy history (GET /deploys: "
            "no such endpoint: /deploys): upgrade rainbowd, and restart it\n",
        )

    def test_history(self) -> None:
        """
        history asks for the last 20 deploys, or -n of them, and prints the
        table, or with --json the JSON; a refusal is its error.
        """
        body = json.dumps({"deploys": DEPLOYS, "kept": 4}).encode()
        connection = FakeConnection(FakeResponse(200, body))
        code, out, err = self.rainbowctl(["history"], connection)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(connection.requests[0][:2], ("GET", "/deploys?limit=20"))
        self.assertEqual(out, historyTable(DEPLOYS))
        connection = FakeConnection(FakeResponse(200, body))
        code, out, err = self.rainbowctl(["history", "-n", "4", "--json"], connection)
        self.assertEqual(connection.requests[0][1], "/deploys?limit=4")
        self.assertEqual(json.loads(out), {"deploys": DEPLOYS, "kept": 4})
        answer = json.dumps({"error": "limit must be a whole number"}).encode()
        code, out, err = self.rainbowctl(
            ["history", "-n", "0"], FakeConnection(FakeResponse(400, answer))
        )
        self.assertEqual(
            (code, err),
            (FAILED, "rainbowctl: GET /deploys failed: limit must be a whole number\n"),
        )

    def test_warnings(self) -> None:
        """
        Each warning about the config is a line on stderr, then one saying
        a redeploy would fail; the command still runs.
        """
        self.config["drainTimout"] = 5
        self.config["healthCheckPath"] = 3
        self.write()
        body = json.dumps({"backends": []}).encode()
        code, out, err = self.rainbowctl(
            ["status"], FakeConnection(FakeResponse(200, body))
        )
        self.assertEqual(code, 0)
        lines = err.splitlines()
        self.assertEqual(len(lines), 3, err)
        self.assertTrue(all(line.startswith("rainbowctl: warning: ") for line in lines))
        self.assertIn("drainTimout", lines[0])
        self.assertIn("healthCheckPath", lines[1])
        self.assertIn("refuses it until it is fixed", lines[2])

    def test_version(self) -> None:
        """
        --version prints rainbowd's version, and Twisted's and Python's.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, self.rainbowctl, ["--version"], FakeConnection())
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), versionLine() + "\n")
        self.assertTrue(out.getvalue().startswith(f"rainbowd {rainbowd.__version__} ("))

    def test_logs(self) -> None:
        """
        logs asks for the generation and follows without a timeout, and
        prints the lines; an error answer is its message.
        """
        connection = FakeConnection(FakeResponse(200, b"one\ntwo\n", "text/plain"))
        code, out, err = self.rainbowctl(
            ["logs", "--generation", "2", "--follow"], connection
        )
        self.assertEqual((code, out), (0, "one\ntwo\n"))
        self.assertEqual(connection.requests[0][1], "/logs?generation=2&follow=1")
        self.assertEqual(connection.timeouts, [None])

    def notFound(self, generations: List[int]) -> FakeConnection:
        answer = {"error": "generation 7 is not running", "generations": generations}
        return FakeConnection(FakeResponse(404, json.dumps(answer).encode()))

    def test_logsNotRunning(self) -> None:
        """
        logs for a generation that is not running exits 1 (rainbowd
        answered), saying which generations run and where the rest of the
        output is, in words rather than the API's.
        """
        code, out, err = self.rainbowctl(["logs", "-g", "7"], self.notFound([2, 3]))
        self.assertEqual((code, out), (FAILED, ""))
        self.assertEqual(
            err,
            "rainbowctl: generation 7 is not running (running now: generations "
            "2, 3).  rainbowctl logs shows the output of running generations "
            "only; rainbowd's own log has every line the app printed.\n",
        )
        code, out, err = self.rainbowctl(["logs", "-g", "7"], self.notFound([]))
        self.assertEqual(code, FAILED)
        self.assertIn("generation 7 is not running (no generation is running now)", err)

    def test_logsNoneServing(self) -> None:
        """
        logs without a generation while none serves exits 1, saying to
        choose one of those running.
        """
        code, out, err = self.rainbowctl(["logs"], self.notFound([4]))
        self.assertEqual(
            (code, err),
            (
                FAILED,
                "rainbowctl: no generation is serving (running now: generation "
                "4); choose one with --generation N.\n",
            ),
        )

    def test_errorAnswers(self) -> None:
        """
        Every command that rainbowd answers with an error exits 1 with the
        error, on stderr: it could ask, and rainbowd said no.
        """
        busy = json.dumps({"error": "the control port is busy"}).encode()
        for argv in (["status"], ["logs"], ["logs", "-g", "2", "-f"], ["redeploy"]):
            code, out, err = self.rainbowctl(
                argv, FakeConnection(FakeResponse(503, busy))
            )
            self.assertEqual((code, out), (FAILED, ""), argv)
            self.assertIn("failed: the control port is busy\n", err)
            self.assertTrue(err.startswith("rainbowctl: "), argv)
        code, out, err = self.rainbowctl(
            ["status"], FakeConnection(FakeResponse(500, b"<html>oops"))
        )
        self.assertEqual((code, err), (FAILED, "rainbowctl: GET /status failed: 500 Reason\n"))

    def test_statusNotJSON(self) -> None:
        """
        A 200 to GET /status that is not rainbowd's JSON exits 1 asking
        whether something else has the control port, not with a traceback.
        """
        for body in (b"<html>hello</html>", b"[1, 2]"):
            code, out, err = self.rainbowctl(
                ["status"], FakeConnection(FakeResponse(200, body))
            )
            self.assertEqual((code, out), (FAILED, ""))
            self.assertIn("is something else listening on rainbowd's control", err)

    def test_cannotAsk(self) -> None:
        """
        Every command exits 2 when it cannot reach rainbowd, or rainbowd
        refuses its token.
        """
        for argv in (["status"], ["logs"], ["logs", "-g", "2", "-f"], ["redeploy"]):
            refused = ConnectionRefusedError(111, "Connection refused")
            code, out, err = self.rainbowctl(argv, FakeConnection(error=refused))
            self.assertEqual(code, CANNOT, argv)
            code, out, err = self.rainbowctl(
                argv, FakeConnection(FakeResponse(401, b"{}"))
            )
            self.assertEqual(code, CANNOT, argv)


PAUSED = {
    "mode": "paused",
    "since": 0.0,
    "by": "127.0.0.1:40404",
    "held": 2,
    "message": None,
    "changed": True,
}


class TrafficCommandTests(RainbowctlTestCase):
    """
    Tests for C{rainbowctl pause}, C{maintenance} and C{resume}.
    """

    def test_pause(self) -> None:
        """
        pause POSTs /pause with an empty body and says what traffic does.
        """
        connection = FakeConnection(FakeResponse(200, json.dumps(PAUSED).encode()))
        code, out, err = self.rainbowctl(["pause"], connection)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(connection.requests[0][:3], ("POST", "/pause", b""))
        self.assertEqual(
            out,
            "traffic is paused since 1970-01-01 00:00:00 UTC, asked by "
            "127.0.0.1:40404: new requests wait in rainbowd, up to "
            "queueTimeout; 2 waiting now; rainbowctl resume lets them through\n",
        )

    def test_unchanged(self) -> None:
        """
        When nothing changed, rainbowctl says so.
        """
        answer = {"mode": "serving", "changed": False}
        connection = FakeConnection(FakeResponse(200, json.dumps(answer).encode()))
        code, out, err = self.rainbowctl(["resume"], connection)
        self.assertEqual(connection.requests[0][1], "/resume")
        self.assertEqual(
            (code, out),
            (0, "nothing changed: traffic is serving: requests go to the app\n"),
        )

    def test_maintenance(self) -> None:
        """
        maintenance sends its words as the message, in JSON; without any,
        an empty body.
        """
        answer = {**PAUSED, "mode": "maintenance", "message": "Back at 2"}
        connection = FakeConnection(FakeResponse(200, json.dumps(answer).encode()))
        code, out, err = self.rainbowctl(["maintenance", "Back", "at", "2"], connection)
        method, path, body, headers = connection.requests[0]
        self.assertEqual((path, json.loads(body)), ("/maintenance", {"message": "Back at 2"}))
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertIn('the maintenance page saying "Back at 2"; rainbowctl resume', out)
        connection = FakeConnection(FakeResponse(200, json.dumps(answer).encode()))
        self.rainbowctl(["maintenance"], connection)
        self.assertEqual(connection.requests[0][2], b"")

    def test_refused(self) -> None:
        """
        An error answer exits 1 with its message.
        """
        answer = {"error": "The maintenance page /x.html does not exist"}
        connection = FakeConnection(FakeResponse(500, json.dumps(answer).encode()))
        code, out, err = self.rainbowctl(["maintenance"], connection)
        self.assertEqual(code, FAILED)
        self.assertEqual(
            err,
            "rainbowctl: POST /maintenance failed: The maintenance page /x.html "
            "does not exist\n",
        )

    def test_statusShowsMode(self) -> None:
        """
        The status table says when traffic is not serving, and not when it
        is.
        """
        serving = {"backends": [], "traffic": {"mode": "serving"}}
        self.assertNotIn("traffic", statusTable(serving))
        self.assertIn(
            "traffic is paused since 1970-01-01 00:00:00 UTC",
            statusTable({"backends": [], "traffic": PAUSED}),
        )
DEPLOYS = [
    {
        "deploy": 1042,
        "cause": "redeploy",
        "requester": "127.0.0.1:54321",
        "message": "abc1234: fix the login page",
        "started": 1796150000.5,
        "seconds": 2.13,
        "outcome": "deployed",
        "error": None,
        "generation": 17,
        "port": 20017,
        "directory": "/srv/app/releases/1796149990",
    },
    {
        "deploy": 1041,
        "cause": "automaticRollback",
        "requester": "unix:/run/rainbowd/control.sock (uid 1000, pid 4242)",
        "message": None,
        "started": 1796149000,
        "seconds": 0.004,
        "outcome": "deployed",
        "error": None,
        "generation": 15,
        "port": 20015,
        "directory": "/srv/app/releases/1796148990",
    },
    {
        "deploy": 1040,
        "cause": "redeploy",
        "requester": "SIGHUP",
        "message": None,
        "started": 1796140000,
        "seconds": 30.0,
        "outcome": "failed",
        "error": "generation 16 on port 20016 exited with code 3 before it became healthy",
        "generation": 16,
        "port": 20016,
        "directory": "/srv/app/releases/1796139990",
    },
    {
        "deploy": 1039,
        "cause": "startup",
        "requester": None,
        "message": None,
        "started": 1796130000,
        "seconds": 0.5,
        "outcome": "refused",
        "error": "rainbowd is shutting down",
        "generation": None,
        "port": None,
        "directory": None,
    },
]


class HistoryTableTests(SynchronousTestCase):
    """
    Tests for L{historyTable}, C{rainbowctl history}'s table.
    """

    def test_table(self) -> None:
        """
        A line for each deploy, newest first, then its message and error,
        indented.
        """
        self.assertEqual(
            historyTable(DEPLOYS, time.gmtime),
            "DEPLOY  STARTED         CAUSE          BY               TOOK   RESULT"
            "    GEN  RELEASE\n"
            "  1042  12-01 18:33:20  redeploy       127.0.0.1:54321  2.1s   deployed"
            "   17  1796149990\n"
            "        abc1234: fix the login page\n"
            "  1041  12-01 18:16:40  auto-rollback  unix uid 1000    4ms    deployed"
            "   15  1796148990\n"
            "  1040  12-01 15:46:40  redeploy       SIGHUP           30.0s  failed"
            "     16  1796139990\n"
            "        error: generation 16 on port 20016 exited with code 3 before it "
            "became healthy\n"
            "  1039  12-01 13:00:00  startup        rainbowd         0.5s   refused"
            "     -  -\n"
            "        error: rainbowd is shutting down\n",
        )

    def test_fits(self) -> None:
        """
        However long its values, no line is wider than 100 columns, and
        control characters reach no terminal.
        """
        long = dict(
            DEPLOYS[0],
            deploy=10**6,
            requester="[2001:db8:1234:5678::1]:65535",
            cause="x" * 50,
            message="m" * 1000,
            error="e\x1b[31m" * 300,
            outcome="o" * 30,
            generation=10**9,
            seconds=10**7,
            directory="/" + "d" * 300,
        )
        table = historyTable([long], time.gmtime)
        self.assertEqual(max(len(line) for line in table.splitlines()), HISTORY_WIDTH)
        self.assertNotIn("\x1b", table)

    def test_wideCharacters(self) -> None:
        """
        A message and a release in characters two columns wide (CJK) are
        cut to the table's 100 columns as a terminal shows them, not to
        100 characters, and the columns stay aligned.
        """
        release = "\u30ea\u30ea\u30fc\u30b9"
        wide = dict(DEPLOYS[0], message="\u4fee" * 200, directory="/srv/" + release)
        lines = historyTable([wide, DEPLOYS[1]], time.gmtime).splitlines()
        self.assertLessEqual(max(_columns(n) for n in lines), HISTORY_WIDTH)
        header, first, note, second = lines
        self.assertTrue(note.startswith(" " * 8 + "\u4fee"))
        column = _columns(header[: header.index("RELEASE")])
        self.assertEqual(_columns(first[: first.index(release)]), column)
        self.assertEqual(second.index("1796148990"), column)

    def test_spoofedUid(self) -> None:
        """
        A unix socket client is shown by the uid the kernel gave, which
        rainbowd puts last, not by one written in the path the client bound
        its socket to.
        """
        spoofed = dict(
            DEPLOYS[1], requester="unix:/tmp/x (uid 0, pid 1) (uid 1001, pid 4242)"
        )
        table = historyTable([spoofed], time.gmtime)
        self.assertIn("unix uid 1001", table)
        self.assertNotIn("uid 0", table)

    def test_otherShapes(self) -> None:
        """
        Deploys from an older or a newer rainbowd, with fields missing or
        of other types, are shown as far as they can be, within 100
        columns, and never stop the table.
        """
        deploys = [
            {},
            {"deploy": 3, "outcome": "deployed"},
            dict(
                DEPLOYS[0],
                requester={"unix": "/run/c.sock", "uid": 1000},
                message=["abc", 1],
                error={"code": 3},
                directory=["/srv/app/releases/1"],
                started=10**30,
                seconds=float("nan"),
                generation="17",
            ),
            dict(DEPLOYS[0], started=float("inf"), seconds="2s"),
        ]
        table = historyTable(deploys, time.gmtime)
        lines = table.splitlines()
        self.assertEqual(len([n for n in lines if not n.startswith(" " * 8)]), 5)
        self.assertLessEqual(max(len(n) for n in lines), HISTORY_WIDTH)

    def test_empty(self) -> None:
        """
        No deploy yet says so.
        """
        self.assertIn("(no deploy recorded yet)", historyTable([]))


class UpgradeTests(RainbowctlTestCase):
    """
    Tests for C{rainbowctl upgrade}.
    """

    def test_upgraded(self) -> None:
        """
        upgrade POSTs /upgrade, with no timeout of its own (the new rainbowd
        has upgradeTimeout), says which rainbowd took over, and exits 0.
        """
        body = {"ok": True, "pid": 42, "previousPid": 41, "seconds": 1.25}
        connection = FakeConnection(
            FakeResponse(200, json.dumps(body).encode(), "application/json")
        )
        code, out, err = self.rainbowctl(["upgrade"], connection)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out, "rainbowd 42 took over from 41 in 1.2 s; the app was not restarted\n"
        )
        self.assertEqual(connection.requests[0][:2], ("POST", "/upgrade"))
        self.assertEqual(connection.timeouts, [None])

    def test_failed(self) -> None:
        """
        A failed upgrade exits 1 with the error and the new process's last
        lines, and says the old rainbowd serves on.
        """
        body = {"ok": False, "error": "rainbowd: boom", "output": ["line 1", "line\x1b2"]}
        connection = FakeConnection(
            FakeResponse(502, json.dumps(body).encode(), "application/json")
        )
        code, out, err = self.rainbowctl(["upgrade"], connection)
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertEqual(lines[0], "rainbowctl: upgrade failed: rainbowd: boom")
        self.assertEqual(lines[2], "  line 1")
        self.assertNotIn("\x1b", err)
        self.assertIn("serves on", lines[-1])
