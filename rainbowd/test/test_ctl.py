# -*- test-case-name: rainbowd.test.test_ctl -*-
"""
Tests for L{rainbowd.ctl}: finding rainbowd, and what rainbowctl prints,
with fake connections.
"""

import http.client
import io
import json
import sys
from typing import Dict, List, Optional

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import rainbowd
from rainbowd import versionLine
from rainbowd.ctl import (
    CANNOT,
    FAILED,
    ControlAddress,
    CtlError,
    Progress,
    controlAddress,
    findTarget,
    run,
    statusTable,
)

RUN = "gunicorn app:app --bind 127.0.0.1:$1 --pid $2"

SUCCESS = [
    {
        "event": "deploying",
        "time": 0,
        "generation": None,
        "deploy": 3,
        "cause": "redeploy",
    },
    {"event": "launching", "time": 0, "generation": 3, "deploy": 3, "port": 20003},
    {"event": "waiting", "time": 1, "generation": 3, "deploy": 3, "elapsed": 1.0},
    {"event": "waiting", "time": 2, "generation": 3, "deploy": 3, "elapsed": 2.0},
    {
        "event": "healthy",
        "time": 2.5,
        "generation": 3,
        "deploy": 3,
        "port": 20003,
        "seconds": 2.5,
    },
    {"event": "switched", "time": 2.5, "generation": 3, "deploy": 3, "previous": 2},
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
        "deploy": 4,
        "cause": "redeploy",
    },
    {"event": "launching", "time": 0, "generation": 4, "deploy": 4, "port": 20004},
    {
        "event": "result",
        "time": 0.3,
        "ok": False,
        "error": "generation 4 on port 20004 exited with code 3 before it became healthy",
        "generation": 4,
        "port": 20004,
        "output": ["app: cannot import settings"],
        "hint": "the current version keeps serving; fix the problem and redeploy",
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
                "deploy 3 started",
                "launching generation 3 on port 20003",
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
                "deploy 4 started",
                "launching generation 4 on port 20004",
                "generation 4 stopped (it never became healthy; exited with code 3)",
                "deploy failed: generation 4 on port 20004 exited with code 3 before "
                "it became healthy",
                "last output of generation 4:",
                "    app: cannot import settings",
                "generation 3 is still serving; fix the problem and run rainbowctl "
                "redeploy again.",
            ],
        )

    def test_noResult(self) -> None:
        """
        A stream that ends without a result exits 1 and says to look at the
        status.
        """
        code, text = render(SUCCESS[:3])
        self.assertEqual(code, FAILED)
        self.assertIn("closed before the deploy's outcome", text)

    def test_queued(self) -> None:
        """
        A queued redeploy says it waits for the one under way.
        """
        code, text = render([{"event": "queued", "time": 0}])
        self.assertIn("Another deploy is under way", text)


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


class RunTests(SynchronousTestCase):
    """
    Tests for L{run}, the whole of rainbowctl, with a fake connection.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()
        self.config = {"run": RUN, "port": 8000}
        self.write()

    def write(self) -> None:
        self.directory.child("rainbow.conf.json").setContent(
            json.dumps(self.config).encode()
        )

    def rainbowctl(self, argv: List[str], connection: FakeConnection):
        out, err = io.StringIO(), io.StringIO()
        code = run(argv, out, err, self.directory.path, connection)
        return code, out.getvalue(), err.getvalue()

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

    def test_redeployFails(self) -> None:
        """
        A failed redeploy exits 1 with the reason.
        """
        code, out, err = self.rainbowctl(
            ["redeploy"], FakeConnection(self.ndjson(FAILURE))
        )
        self.assertEqual(code, FAILED)
        self.assertIn("deploy failed: generation 4", out)

    def test_redeployCut(self) -> None:
        """
        A stream cut before the result exits 1 saying so.
        """
        response = self.ndjson(SUCCESS[:2])
        lines = iter([response.readline(), response.readline()])

        def readline() -> bytes:
            for line in lines:
                return line
            raise http.client.IncompleteRead(b"")

        response.readline = readline
        code, out, err = self.rainbowctl(["redeploy"], FakeConnection(response))
        self.assertEqual(code, FAILED)
        self.assertIn("launching generation 3", out)
        self.assertIn("closed before the deploy's outcome", out)

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
        status = {
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
        answer = json.dumps(
            {"error": "generation 7 is not running", "generations": [2, 3]}
        ).encode()
        code, out, err = self.rainbowctl(
            ["logs", "-g", "7"], FakeConnection(FakeResponse(404, answer))
        )
        self.assertEqual(code, CANNOT)
        self.assertIn("generation 7 is not running (running: 2, 3)", err)
