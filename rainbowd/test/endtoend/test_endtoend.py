"""
End-to-end tests: a real C{twistd rainbowd} running the real app in
L{rainbowd.test.app} on 127.0.0.1.

Each test waits on a real process or socket, always with a deadline, and
leaves no process behind.
"""

import base64
import contextlib
import hashlib
import http.client
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, List, Optional
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import rainbowd
import rainbowd.test.app
from rainbowd.app.backend import APP_VARIABLE
from rainbowd.app.processgroups import ProcessGroupSignals
from rainbowd.test.app import WEBSOCKET_GUID, webSocketFrame
from rainbowd.test.unit.test_controlsite import tokenFile

APP = os.path.abspath(rainbowd.test.app.__file__.replace(".pyc", ".py"))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: Run a command as systemd runs a socket-activated service: with the
#: listening socket of fd ARGV[1] as fd 3, and LISTEN_PID its pid.
ACTIVATE = [
    sys.executable,
    "-c",
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ['LISTEN_PID'] = str(os.getpid()); "
    "os.execv(sys.argv[2], sys.argv[2:])",
]

#: Where the rainbowd under test is, so twistd runs it and not another
#: installed copy.
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(rainbowd.__file__)))


def _upgradesHere() -> None:
    """
    Skip a test of upgrading rainbowd in place where rainbowd refuses to
    (PyPy: see rainbowd.upgrade.upgrader).
    """
    if platform.python_implementation() == "PyPy":
        raise SkipTest("rainbowd does not upgrade in place on PyPy yet")

#: The control token of the tests that set one.
TOKEN = b"c2VjcmV0LXRva2VuLWZvci10aGUtdGVzdHM"

#: The longest any one step may take, in seconds; generous for a busy
#: 2-core machine, and only ever waited out when something is wrong.
DEADLINE = 30.0

#: How soon a start that cannot succeed must have exited, in seconds: a few
#: times a start on a busy 2-core machine, and far below the waits that a
#: start which hangs would reach (the health check's 60 s; the drain and
#: kill timeouts are set as long for it).
FAILED_START = 12.0


def freePorts(count: int) -> List[int]:
    """
    C{count} different ports free right now: held open together while they
    are chosen, as the kernel may hand a port it has just had back again.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def freePort() -> int:
    [port] = freePorts(1)
    return port


def waitFor(condition: Callable[[], object], what: str, deadline: float = DEADLINE):
    """
    Poll C{condition} until it returns something true, and return that.

    @raise AssertionError: naming C{what} if it does not within
        C{deadline} seconds.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline} s waiting for {what}")


def alive(pid: int) -> bool:
    """
    Whether process C{pid} exists and is not a zombie.  (It may be reaped
    between the two looks: gone, then.)
    """
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def readUntilClosed(s: socket.socket, send: bytes = b"") -> bytes:
    """
    Send C{send} on C{s}, then read until the peer closes it.
    """
    s.settimeout(DEADLINE)
    if send:
        s.sendall(send)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def trickleHead(port: int, every: float = 0.1):
    """
    Send a request head that never ends to C{port} on 127.0.0.1, a byte
    every C{every} seconds, until rainbowd answers.

    @return: what rainbowd sent before it closed the connection, the
        seconds that took, and how many bytes were sent.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), DEADLINE) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sent = 0
        while time.monotonic() - started < DEADLINE:
            # Read before each byte: a byte sent after rainbowd closed would
            # get a reset that can discard its unread answer.
            readable, _, _ = select.select([s], [], [], every)
            if readable:
                return readUntilClosed(s), time.monotonic() - started, sent
            s.send(b"a")
            sent += 1
    raise AssertionError(f"port {port} took a trickled head for {DEADLINE} s")


SIGNALS = ProcessGroupSignals()
groupAlive = SIGNALS.groupAlive


class Daemon:
    """
    A C{twistd -n rainbowd} in a directory of its own.
    """

    def __init__(self, testCase: SynchronousTestCase, **config) -> None:
        self.testCase = testCase
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.port, self.controlPort = freePorts(2)
        low = 21000 + (os.getpid() % 400) * 20
        self.config = {
            "run": f"{sys.executable} {APP} $1 \"$2\"",
            "healthCheckPath": "/health",
            "port": self.port,
            "controlPort": self.controlPort,
            "backendPorts": f"{low}-{low + 19}",
            "drainTimeout": 10000,
            # Old versions stop once drained, unless a test keeps a standby.
            "rollbackWindow": 0,
            "killTimeout": 2000,
        }
        self.config.update(config)
        self.writeConfig()
        self.logPath = os.path.join(self.directory, "rainbowd.log")
        self.process: Optional[subprocess.Popen] = None

    def writeConfig(self, **changes) -> None:
        self.config.update(changes)
        with open(os.path.join(self.directory, "rainbow.conf.json"), "w") as f:
            json.dump(self.config, f)

    def start(
        self,
        twistdOptions=(),
        env=None,
        wrapper=(),
        daemonize=False,
        rainbowdOptions=(),
        **popen,
    ) -> subprocess.Popen:
        """
        Start C{twistd -n rainbowd} (C{twistd rainbowd} if C{daemonize}),
        with C{twistdOptions} before C{rainbowd} and C{rainbowdOptions}
        after it, C{env} added to the environment, and the command run by
        C{wrapper}, a command line to which it is appended.
        """
        if not twistdOptions:
            twistdOptions = ["--logfile", self.logPath]
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.STDOUT)
        foreground = [] if daemonize else ["-n"]
        self.process = subprocess.Popen(
            [*wrapper, *TWISTD, *foreground, *twistdOptions, "rainbowd", *rainbowdOptions],
            cwd=self.directory,
            env=dict(os.environ, PYTHONPATH=SOURCE, **(env or {})),
            **popen,
        )
        self.testCase.addCleanup(self.cleanUp)
        return self.process

    def cleanUp(self) -> None:
        """
        Stop rainbowd if it still runs, and kill any app process it left, so
        one test's failure does not leak into the next.
        """
        # Added as a cleanup once the process is started.
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        stateDir = os.path.join(self.directory, ".rainbowd")
        for pgid in self.appGroups():
            # As rainbowd does: never a stranger that got a stale pid.
            if SIGNALS.groupHas(pgid, APP_VARIABLE, stateDir):
                os.killpg(pgid, signal.SIGKILL)
        marker = {APP_VARIABLE: stateDir}
        for pid in SIGNALS.marked(marker):
            SIGNALS.signalMarked(pid, marker, signal.SIGKILL)

    def appGroups(self):
        """
        The process groups of the app generations still alive.
        """
        stateDir = os.path.join(self.directory, ".rainbowd")
        groups = []
        for name in os.listdir(stateDir) if os.path.isdir(stateDir) else ():
            if not name.endswith(".pid"):
                continue
            with open(os.path.join(stateDir, name)) as f:
                text = f.read().strip()
            try:
                groups.append(os.getpgid(int(text)))
            except (ValueError, ProcessLookupError):
                pass
        return groups

    def log(self) -> str:
        try:
            with open(self.logPath) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def get(self, path: str = "/", timeout: float = DEADLINE):
        """
        GET C{path} through the proxy: C{(status, body)}.
        """
        return self._http(f"http://127.0.0.1:{self.port}{path}", None, timeout)

    def control(self, method: str, path: str, headers=None, data=None):
        """
        Call the control API: C{(status, JSON body)}.
        """
        if data is None and method == "POST":
            data = b""
        status, body = self._http(
            f"http://127.0.0.1:{self.controlPort}{path}", data, DEADLINE * 2, headers
        )
        return status, json.loads(body)

    def _http(self, url: str, data: Optional[bytes], timeout: float, headers=None):
        request = Request(url, data=data, headers=headers or {})
        try:
            with urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except HTTPError as e:
            return e.code, e.read().decode()

    def serving(self) -> str:
        """
        Wait until the proxy serves the app, and return what it says.
        """

        def attempt():
            try:
                status, body = self.get("/", timeout=5)
            except (URLError, ConnectionError, socket.timeout):
                return None
            return body if status == 200 else None

        return waitFor(attempt, f"the app to be served\n{self.log()}")

    def rainbowctl(self, *argv: str) -> subprocess.CompletedProcess:
        """
        Run rainbowctl in the daemon's directory, as a user would.
        """
        return subprocess.run(
            [sys.executable, "-m", "rainbowd.control.ctl", *argv],
            cwd=self.directory,
            env=dict(os.environ, PYTHONPATH=SOURCE),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=DEADLINE * 2,
            universal_newlines=True,
        )

    def output(self) -> str:
        """
        Everything rainbowd wrote, its log and its stdout, once it exited.
        """
        # Started, with its output to a pipe.
        assert self.process is not None and self.process.stdout is not None
        return self.log() + self.process.stdout.read().decode("utf-8", "replace")

    def appPid(self) -> int:
        return int(self.serving().split("pid=")[1].split()[0])


def _stopRainbowd(daemon: "Daemon") -> None:
    """
    Stop the rainbowd an upgrade started, which is not the test's child,
    and wait until it is gone.
    """
    pid = getattr(daemon, "upgradedPid", None)
    if pid is None or not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        waitFor(lambda: not alive(pid), "the upgraded rainbowd to stop")
    except Exception:
        os.kill(pid, signal.SIGKILL)


class EndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("the end-to-end tests need Linux")

    def test_redeploy(self):
        """
        A redeploy answers 200 once the new version serves; a slow request
        begun before it completes on the old version, whose process is then
        gone.
        """
        daemon = Daemon(self)
        daemon.start()
        self.assertTrue(daemon.serving().startswith("v1"))
        oldPid = daemon.appPid()
        slow = {}
        request = threading.Thread(
            target=lambda: slow.update(result=daemon.get("/slow?seconds=2"))
        )
        request.start()
        waitFor(lambda: daemon.control("GET", "/status")[1]["backends"][0]["inflight"], "the slow request to be in flight")
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, result)
        self.assertEqual(result["generation"], 2)
        self.assertTrue(daemon.get("/")[1].startswith("v2"))
        request.join(DEADLINE)
        self.assertEqual(slow["result"][0], 200)
        self.assertTrue(slow["result"][1].startswith(f"v1 pid={oldPid}"))
        waitFor(lambda: not alive(oldPid), "the old app to exit")

    def test_pauseHoldsRequestsAcrossRedeploy(self):
        """
        While paused (rainbowctl pause), a request waits; a redeploy
        meanwhile succeeds and leaves traffic paused; on rainbowctl resume
        the request gets 200 from the new version.  Then, in maintenance, a
        request gets 503 and the page with the message.
        """
        daemon = Daemon(self, queueTimeout=DEADLINE * 4 * 1000)
        daemon.start()
        self.assertTrue(daemon.serving().startswith("v1"))
        paused = daemon.rainbowctl("pause")
        self.assertEqual(paused.returncode, 0, paused.stdout)
        self.assertIn("traffic is paused", paused.stdout)
        held = {}
        request = threading.Thread(
            target=lambda: held.update(result=daemon.get("/", timeout=DEADLINE * 4))
        )
        request.start()
        self.addCleanup(request.join, DEADLINE * 4)
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["traffic"]["held"] == 1,
            "the request to be held",
        )
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual((status, result["generation"]), (200, 2), result)
        status, body = daemon.control("GET", "/status")
        self.assertEqual((body["traffic"]["mode"], body["traffic"]["held"]), ("paused", 1))
        self.assertNotIn("result", held)
        resumed = daemon.rainbowctl("resume")
        self.assertEqual(resumed.returncode, 0, resumed.stdout)
        request.join(DEADLINE)
        self.assertEqual(held["result"][0], 200)
        self.assertTrue(held["result"][1].startswith("v2"), held["result"])
        status, body = daemon.control(
            "POST", "/maintenance", data=b'{"message": "Back <soon>"}'
        )
        self.assertEqual((status, body["mode"]), (200, "maintenance"), body)
        status, page = daemon.get("/")
        self.assertEqual(status, 503)
        self.assertIn("Back &lt;soon&gt;", page)
        log = daemon.log()
        self.assertIn("asked to pause: traffic is now paused", log)
        self.assertIn("asked to resume: traffic is now serving", log)

    def test_pausedThenStopped(self):
        """
        A request held by a pause gets 503 naming the shutdown when rainbowd
        gets SIGTERM, and rainbowd exits 0.
        """
        daemon = Daemon(self, queueTimeout=DEADLINE * 4 * 1000)
        daemon.start()
        daemon.serving()
        self.assertEqual(daemon.control("POST", "/pause")[0], 200)
        held = {}
        request = threading.Thread(
            target=lambda: held.update(result=daemon.get("/", timeout=DEADLINE * 4))
        )
        request.start()
        self.addCleanup(request.join, DEADLINE * 4)
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["traffic"]["held"] == 1,
            "the request to be held",
        )
        daemon.process.send_signal(signal.SIGTERM)
        request.join(DEADLINE)
        self.assertEqual(held["result"][0], 503)
        self.assertIn("rainbowd is shutting down", held["result"][1])
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
    def test_releaseDirectoriesAndHistory(self):
        """
        With C{current} a link to a release directory, each generation runs
        in the release it was deployed from, which C{/status} and the deploy
        history show; the history, with the message given to C{rainbowctl
        redeploy -m}, survives a restart of rainbowd, whose deploys are
        numbered on.
        """
        daemon = Daemon(self)
        releases = os.path.join(daemon.directory, "releases")
        for version in ("1", "2"):
            os.makedirs(os.path.join(releases, version))
            config = dict(
                daemon.config,
                env={"APP_VERSION": f"v{version}"},
                stateDir=os.path.join(daemon.directory, ".rainbowd"),
            )
            with open(os.path.join(releases, version, "rainbow.conf.json"), "w") as f:
                json.dump(config, f)
        current = os.path.join(daemon.directory, "current")

        def point(version):
            os.symlink(f"releases/{version}", current + ".new")
            os.replace(current + ".new", current)

        point("1")
        options = ["--config", "current/rainbow.conf.json"]
        daemon.start(rainbowdOptions=options)
        self.assertTrue(daemon.serving().startswith("v1"))
        point("2")
        done = daemon.rainbowctl("--config", "current/rainbow.conf.json", "redeploy", "-m", "abc1234")
        self.assertEqual(done.returncode, 0, done.stdout)
        self.assertTrue(daemon.get("/")[1].startswith("v2"))
        two = os.path.realpath(os.path.join(releases, "2"))
        pid = daemon.appPid()
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), two)
        with open(f"/proc/{pid}/environ", "rb") as f:
            self.assertIn(b"RAINBOWD_GENERATION=2", f.read().split(b"\0"))
        status = daemon.control("GET", "/status")[1]
        [active] = [b for b in status["backends"] if b["generation"] == status["active"]]
        self.assertEqual(active["directory"], two)
        deploys = daemon.control("GET", "/deploys")[1]["deploys"]
        self.assertEqual(
            [(d["deploy"], d["cause"], d["message"], d["outcome"], d["directory"]) for d in deploys],
            [
                (2, "redeploy", "abc1234", "deployed", two),
                (1, "startup", None, "deployed", os.path.realpath(os.path.join(releases, "1"))),
            ],
        )
        self.assertTrue(deploys[0]["requester"].startswith("127.0.0.1:"))
        daemon.process.send_signal(signal.SIGTERM)
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        daemon.process.stdout.close()
        daemon.start(rainbowdOptions=options)
        self.assertTrue(daemon.serving().startswith("v2"))
        deploys = waitFor(
            lambda: [d["deploy"] for d in daemon.control("GET", "/deploys")[1]["deploys"]] == [3, 2, 1],
            "the startup deploy to be recorded after the restart",
        )
        shown = daemon.rainbowctl("--config", "current/rainbow.conf.json", "history")
        self.assertEqual(shown.returncode, 0, shown.stdout)
        self.assertIn("abc1234", shown.stdout)
        self.assertTrue(all(len(line) <= 100 for line in shown.stdout.splitlines()))
    def test_pypyCollectorSet(self):
        """
        On PyPy, rainbowd re-executes itself, keeping its pid, with its
        collector setting; its metrics show the nursery, the app does not
        inherit the variables, and its log begins with its version line.
        """
        if sys.implementation.name != "pypy":
            raise SkipTest("rainbowd sets PyPy's collector on PyPy only")
        if any(name.startswith("PYPY_GC_") for name in os.environ):
            raise SkipTest("the tests' environment sets PYPY_GC_* itself")
        daemon = Daemon(self)
        process = daemon.start()
        appPid = daemon.appPid()
        with open(f"/proc/{process.pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        self.assertIn(b"PYPY_GC_NURSERY=16M", environ)
        self.assertIn(b"PYPY_GC_INCREMENT_STEP=2M", environ)
        with open(f"/proc/{appPid}/environ", "rb") as f:
            appEnviron = f.read()
        self.assertNotIn(b"PYPY_GC_", appEnviron)
        self.assertNotIn(b"RAINBOWD_SET_PYPY_GC", appEnviron)
        status, metrics = daemon._http(
            f"http://127.0.0.1:{daemon.controlPort}/metrics", None, DEADLINE
        )
        self.assertIn("rainbowd_pypy_gc_nursery_bytes 1.6777216e+07", metrics)
        log = daemon.log()
        self.assertIn("a 16 MiB nursery (PYPY_GC_NURSERY=16M", log)
        # The version line comes first, as the README says, and once.
        self.assertEqual(log.count(rainbowd.versionLine()), 1, log)
        self.assertLess(
            log.index(rainbowd.versionLine()), log.index("PyPy's collector:"), log
        )

    def test_rollbackToStandby(self):
        """
        After a redeploy the old version stays alive as the standby; a
        rollback moves traffic back to that very process, with no launch,
        and the version rolled back from exits.
        """
        daemon = Daemon(self, rollbackWindow=120000)
        daemon.start()
        oldPid = daemon.appPid()
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, result)
        newPid = result["pid"]
        self.assertTrue(daemon.get("/")[1].startswith(f"v2 pid={newPid}"))
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["standby"] == 1,
            "generation 1 to be the standby",
        )
        self.assertTrue(alive(oldPid))
        status, result = daemon.control("POST", "/rollback")
        self.assertEqual(status, 200, result)
        self.assertEqual((result["generation"], result["pid"]), (1, oldPid))
        self.assertEqual(daemon.get("/")[1], f"v1 pid={oldPid}\n")
        waitFor(lambda: not alive(newPid), "the version rolled back from to exit")
        self.assertEqual(daemon.log().count("launching on port"), 2, daemon.log())
        status, result = daemon.control("POST", "/rollback")
        self.assertEqual(status, 409, result)
        self.assertIn("nothing to roll back to", result["error"])

    def test_upgradeThreeTimesUnderLoad(self):
        """
        Under steady keep-alive load, three upgrades in a row each start a
        new rainbowd, which takes over the running app: no request fails,
        the app's pid never changes, rainbowd's changes each time and the
        pidfile follows it; a redeploy and a rollback then work, and
        SIGTERM stops everything.
        """
        _upgradesHere()
        daemon = Daemon(self, rollbackWindow=120000)
        daemon.start()
        appPid = daemon.appPid()
        rainbowdPid = daemon.process.pid
        self.addCleanup(_stopRainbowd, daemon)
        counts = {"ok": 0, "failed": [], "retried": 0, "pids": set()}
        stop = threading.Event()

        def load():
            connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
            while not stop.is_set():
                for attempt in (1, 2):
                    try:
                        connection.request("GET", "/")
                        response = connection.getresponse()
                        body = response.read()
                    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                        # A kept-alive connection closed as the request
                        # went: retried, as HTTP lets a client do.
                        connection.close()
                        if attempt == 2:
                            counts["failed"].append(repr(e))
                        else:
                            counts["retried"] += 1
                        continue
                    if response.status == 200:
                        counts["ok"] += 1
                        counts["pids"].add(body.split(b"pid=")[1].split()[0].decode())
                    else:
                        counts["failed"].append((response.status, body[:200]))
                    break
            connection.close()

        loader = threading.Thread(target=load)
        loader.start()
        try:
            pids = [rainbowdPid]
            for n in range(3):
                waitFor(lambda: counts["ok"] > 20 * (n + 1), "requests to be served")
                status, result = daemon.control("POST", "/upgrade")
                self.assertEqual(status, 200, (result, daemon.log()))
                self.assertEqual(result["previousPid"], pids[-1])
                self.assertNotIn(result["pid"], pids)
                pids.append(result["pid"])
                daemon.upgradedPid = result["pid"]
                status, described = daemon.control("GET", "/status")
                self.assertEqual(described["rainbowd"]["pid"], result["pid"])
                self.assertEqual(described["rainbowd"]["upgradedFrom"], pids[-2])
                waitFor(lambda: not alive(pids[-2]), "the old rainbowd to exit")
            waitFor(lambda: counts["ok"] > 80, "requests to be served")
        finally:
            stop.set()
            loader.join(DEADLINE)
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        self.assertEqual(counts["failed"], [])
        # The old rainbowd answers a kept-alive connection's next request,
        # as its last, rather than close it idle: a busy client never meets
        # a closed connection.
        self.assertEqual(counts["retried"], 0)
        self.assertEqual(counts["pids"], {str(appPid)})
        with open(os.path.join(daemon.directory, "twistd.pid")) as f:
            self.assertEqual(int(f.read()), pids[-1])
        self.assertEqual(daemon.log().count("launching on port"), 1, daemon.log())
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, result)
        self.assertEqual(result["generation"], 2)
        self.assertTrue(daemon.get("/")[1].startswith("v2"))
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["standby"] == 1,
            "generation 1, taken over, to be the standby",
        )
        status, result = daemon.control("POST", "/rollback")
        self.assertEqual(status, 200, result)
        self.assertEqual((result["generation"], result["pid"]), (1, appPid))
        self.assertEqual(daemon.get("/")[1], f"v1 pid={appPid}\n")
        groups = daemon.appGroups()
        os.kill(pids[-1], signal.SIGTERM)
        waitFor(lambda: not alive(pids[-1]), "rainbowd to stop")
        waitFor(
            lambda: not any(alive(pgid) for pgid in groups) and not alive(appPid),
            "every app process to exit",
        )

    def test_upgradeOverUnixControlSocket(self):
        """
        rainbowctl upgrade over a unix control socket gets its answer before
        the old rainbowd exits, and the socket and its lock then belong to
        the new one, which answers the next rainbowctl.
        """
        _upgradesHere()
        socketDirectory = tempfile.mkdtemp(prefix="rainbowd-")
        self.addCleanup(shutil.rmtree, socketDirectory)
        socketPath = os.path.join(socketDirectory, "control.sock")
        daemon = Daemon(self, controlPort=f"unix:{socketPath}")
        daemon.start()
        self.addCleanup(_stopRainbowd, daemon)
        appPid = daemon.appPid()
        for _ in range(2):
            ctl = daemon.rainbowctl("upgrade")
            self.assertEqual(ctl.returncode, 0, ctl.stdout + daemon.log())
            self.assertIn("the app was not restarted", ctl.stdout)
            daemon.upgradedPid = int(ctl.stdout.split()[1])
        self.assertEqual(os.readlink(socketPath + ".lock"), str(daemon.upgradedPid))
        ctl = daemon.rainbowctl("status", "--json")
        self.assertEqual(ctl.returncode, 0, ctl.stdout)
        self.assertEqual(json.loads(ctl.stdout)["rainbowd"]["pid"], daemon.upgradedPid)
        self.assertEqual(daemon.get("/")[1], f"v1 pid={appPid}\n")

    def test_upgradeDuringLongRequest(self):
        """
        A request in flight on the old rainbowd when it hands over is
        answered by it, by the app it began on; a redeploy asked of the new
        rainbowd meanwhile waits until the old one has exited, so it never
        stops the app under that request.
        """
        _upgradesHere()
        daemon = Daemon(self)
        daemon.start()
        self.addCleanup(_stopRainbowd, daemon)
        appPid = daemon.appPid()
        done = []
        slow = threading.Thread(
            target=lambda: done.append(("slow", daemon.get("/slow?seconds=4")))
        )
        slow.start()
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["backends"][0]["inflight"],
            "the slow request to be in flight",
        )
        status, result = daemon.control("POST", "/upgrade")
        self.assertEqual(status, 200, result)
        daemon.upgradedPid = result["pid"]
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        redeploy = threading.Thread(
            target=lambda: done.append(("redeploy", daemon.control("POST", "/redeploy")))
        )
        redeploy.start()
        slow.join(DEADLINE)
        redeploy.join(DEADLINE * 2)
        self.assertEqual([what for what, _ in done], ["slow", "redeploy"])
        self.assertEqual(done[0][1], (200, f"v1 pid={appPid} slept 4.0\n"))
        self.assertEqual(done[1][1][0], 200, done[1][1])
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        self.assertTrue(daemon.get("/")[1].startswith("v2"))

    def test_failedUpgradeKeepsEverything(self):
        """
        A new rainbowd that fails before it is ready (here: it refuses a
        changed port) leaves the old one serving, with the same app and
        pidfile; the answer is 502 with the new process's output, and
        rainbowctl upgrade exits 1 saying so.
        """
        _upgradesHere()
        daemon = Daemon(self)
        daemon.start()
        appPid = daemon.appPid()
        daemon.writeConfig(port=freePort())
        status, result = daemon.control("POST", "/upgrade")
        self.assertEqual(status, 502, result)
        self.assertFalse(result["ok"])
        self.assertIn('"port" changed', result["error"])
        self.assertIsInstance(result["output"], list)
        ctl = daemon.rainbowctl("upgrade")
        self.assertEqual(ctl.returncode, 1, ctl.stdout)
        self.assertIn("upgrade failed", ctl.stdout)
        self.assertIn("serves on", ctl.stdout)
        self.assertEqual(daemon.get("/")[1], f"v1 pid={appPid}\n")
        self.assertIsNone(daemon.process.poll())
        status, described = daemon.control("GET", "/status")
        self.assertEqual(described["rainbowd"]["pid"], daemon.process.pid)
        with open(os.path.join(daemon.directory, "twistd.pid")) as f:
            self.assertEqual(int(f.read()), daemon.process.pid)

    def test_automaticRollbackOn5xx(self):
        """
        A new version whose C{/} answers 500 while its health check passes
        is rolled back by rainbowd within its window: the old process
        serves again, without a boot, and C{redeploy --watch} exits 1.
        """
        daemon = Daemon(self, rollbackWindow=120000, rollbackMinRequests=10)
        daemon.start()
        oldPid = daemon.appPid()
        daemon.writeConfig(env={"APP_VERSION": "v2", "APP_ROOT_STATUS": "500"})
        watch = subprocess.Popen(
            [sys.executable, "-c", "from rainbowd.control.ctl import main; main()",
             "redeploy", "--watch"],
            cwd=daemon.directory,
            env=dict(os.environ, PYTHONPATH=SOURCE),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: watch.poll() is None and watch.kill())
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["active"] == 2,
            "generation 2 to serve",
        )
        codes = []

        def served():
            status, body = daemon.get("/")
            codes.append(status)
            return status == 200 and body == f"v1 pid={oldPid}\n"

        waitFor(served, "the old version to serve again")
        self.assertIn(500, codes)
        output = watch.communicate(timeout=DEADLINE)[0].decode()
        self.assertEqual(watch.returncode, 1, output)
        self.assertIn("rolled back by rainbowd: generation 2 answered", output)
        log = daemon.log()
        self.assertIn("rolling back to generation 1, the standby", log)
        self.assertEqual(log.count("launching on port"), 2, log)
        status = daemon.control("GET", "/status")[1]
        self.assertEqual(status["active"], 1)
        self.assertIsNone(status["standby"])

    def test_historyOfDeploysCutShort(self):
        """
        A redeploy under way when rainbowd gets SIGTERM is recorded,
        refused, before rainbowd exits; one under way when rainbowd is
        killed keeps its number: each later rainbowd numbers after them.
        """
        daemon = Daemon(self)

        def startServing():
            daemon.writeConfig(env={})
            daemon.start()
            self.assertTrue(daemon.serving().startswith("v1"))

        def redeployStuck():
            # A version that takes a minute to listen: the deploy waits.
            daemon.writeConfig(env={"APP_STARTUP_DELAY": "60"})

            def ask():
                try:
                    daemon.control("POST", "/redeploy")
                except (OSError, http.client.HTTPException):
                    pass  # rainbowd went away

            asking = threading.Thread(target=ask, daemon=True)
            asking.start()
            self.addCleanup(asking.join, DEADLINE)
            waitFor(
                lambda: len(daemon.control("GET", "/status")[1]["backends"]) == 2,
                "the new version to be launched",
            )

        def numbers():
            deploys = daemon.control("GET", "/deploys")[1]["deploys"]
            return [(d["deploy"], d["outcome"]) for d in deploys]

        startServing()
        redeployStuck()
        daemon.process.send_signal(signal.SIGTERM)
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        daemon.process.stdout.close()
        startServing()
        waitFor(lambda: len(numbers()) == 3, "the startup deploy to be recorded")
        self.assertEqual(numbers(), [(3, "deployed"), (2, "refused"), (1, "deployed")])
        redeployStuck()
        daemon.process.kill()
        daemon.process.wait(DEADLINE)
        daemon.process.stdout.close()
        startServing()
        waitFor(lambda: len(numbers()) == 4, "the startup deploy to be recorded")
        self.assertEqual(numbers()[0], (5, "deployed"))

    def test_upgradeSurvivesRedeployUntilDrainTimeout(self):
        """
        An upgraded connection (an echo protocol) is tunnelled to the app,
        counted in C{/status}, keeps working on the old version after a
        redeploy, and is closed by rainbowd at C{drainTimeout}, after which
        the old version stops.
        """
        daemon = Daemon(self, drainTimeout=4000)
        daemon.start()
        oldPid = daemon.appPid()
        tunnel = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
        self.addCleanup(tunnel.close)
        tunnel.sendall(
            b"GET /echo HTTP/1.1\r\nHost: app.example\r\n"
            b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        received = b""
        while b"pid=" not in received or not received.endswith(b"\n"):
            chunk = tunnel.recv(4096)
            self.assertTrue(chunk, f"the tunnel closed early: {received!r}")
            received += chunk
        head, _, greeting = received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertEqual(greeting, f"v1 pid={oldPid}\n".encode("ascii"))

        def echoes(data):
            tunnel.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = tunnel.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got

        self.assertEqual(echoes(b"before"), b"before")
        [backend] = daemon.control("GET", "/status")[1]["backends"]
        self.assertEqual((backend["upgraded"], backend["inflight"]), (1, 0))
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, result)
        redeployed = time.monotonic()
        self.assertEqual(echoes(b"after"), b"after")
        old = daemon.control("GET", "/status")[1]["backends"][0]
        self.assertEqual((old["generation"], old["state"], old["upgraded"]), (1, "draining", 1))

        def closed():
            try:
                return tunnel.recv(4096) == b""
            except ConnectionResetError:
                return True

        self.assertTrue(closed())
        self.assertGreater(time.monotonic() - redeployed, 2.0)
        waitFor(lambda: not alive(oldPid), "the old app to exit")
        self.assertTrue(daemon.get("/")[1].startswith("v2"))

    def test_webSocket(self):
        """
        A WebSocket handshake goes through to the app, whose
        I{Sec-WebSocket-Accept} reaches the client, and messages then go
        both ways.
        """
        daemon = Daemon(self)
        daemon.start()
        daemon.serving()
        key = base64.b64encode(os.urandom(16))
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE) as s:
            s.sendall(
                b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
                + webSocketFrame(1, b"hello", mask=b"abcd")
            )
            expected = webSocketFrame(1, b"hello")
            received = b""
            while not received.endswith(expected):
                chunk = s.recv(4096)
                self.assertTrue(chunk, f"the WebSocket closed early: {received!r}")
                received += chunk
        head = received.partition(b"\r\n\r\n")[0]
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"\r\nSec-WebSocket-Accept: " + accept, head)

    def test_eventStreamNotBuffered(self):
        """
        The first event of a C{text/event-stream} reaches the client while
        the app is still waiting to send the next one.
        """
        daemon = Daemon(self)
        daemon.start()
        daemon.serving()
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE) as s:
            started = time.monotonic()
            s.sendall(b"GET /events?gap=5 HTTP/1.1\r\nHost: app.example\r\n\r\n")
            received = b""
            while b"data: first" not in received:
                chunk = s.recv(4096)
                self.assertTrue(chunk, f"the stream closed early: {received!r}")
                received += chunk
            elapsed = time.monotonic() - started
        self.assertNotIn(b"data: second", received)
        self.assertLess(elapsed, 4)
        self.assertIn(b"Content-Type: text/event-stream", received)

    def test_connectionCapQueuesInRainbowd(self):
        """
        With C{backendConnections} 1, a request that arrives while another is
        in flight waits in rainbowd, counted in C{/status}, and reaches the
        app only once the first is answered.
        """
        daemon = Daemon(self, backendConnections=1)
        daemon.start()
        daemon.serving()
        ended = {}

        def get(name, path):
            result = daemon.get(path)
            ended[name] = (time.monotonic(), result)

        def inflight():
            return daemon.control("GET", "/status")[1]["backends"][0]["inflight"]

        slow = threading.Thread(target=get, args=("slow", "/slow?seconds=2"))
        sent = time.monotonic()
        slow.start()
        waitFor(lambda: inflight() == 1, "the slow request to be in flight")
        fast = threading.Thread(target=get, args=("fast", "/"))
        fast.start()
        waitFor(lambda: inflight() == 2, "the second request to wait")
        slow.join(DEADLINE)
        fast.join(DEADLINE)
        self.assertEqual([ended[n][1][0] for n in ("slow", "fast")], [200, 200])
        # Sent at once, the fast one would be answered in milliseconds; it
        # waited for the slow one's 2 s.  (Which thread saw its answer
        # first is up to the scheduler.)
        self.assertGreaterEqual(ended["fast"][0], sent + 2)

    def test_misframingAppServesEveryoneTheirOwn(self):
        """
        An app that sends bytes outside its responses' framing -- a body
        after HEAD, 204 and 304, more than its Content-Length, a second
        response -- while keep-alive clients ask for their own tokens: every
        client gets the body it asked for, and the app's bug is logged once.
        """
        daemon = Daemon(self, env={"APP_MISBEHAVE": "1"})
        daemon.start()
        daemon.serving()
        stop = threading.Event()
        wrong, answered, errors = [], [], []

        def client(name):
            connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
            try:
                for i in range(100000):
                    if stop.is_set():
                        return
                    token = f"{name}-{i}"
                    connection.request("GET", f"/token?t={token}")
                    response = connection.getresponse()
                    body = response.read()
                    answered.append(token)
                    if body != f"token={token}\n".encode() or response.getheader("Set-Cookie"):
                        wrong.append((token, response.status, body))
            except Exception as e:  # reported below, whatever it is
                errors.append(f"{name}: {type(e).__name__}: {e}")
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(f"c{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        self.addCleanup(stop.set)
        misbehaving = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
        self.addCleanup(misbehaving.close)

        def ask(method, path, status, body=b""):
            misbehaving.request(method, path)
            response = misbehaving.getresponse()
            got = response.read()
            if (response.status, got) != (status, body) or response.getheader("Set-Cookie"):
                wrong.append((method, path, response.status, got))

        for i in range(5):
            ask("HEAD", "/misframe/head", 200)
            ask("GET", "/misframe/204", 204)
            ask("GET", "/misframe/304", 304)
        waitFor(lambda: "frames its responses wrongly" in daemon.log(), "the warning")
        for i in range(5):
            ask("GET", f"/misframe/long?t=long-{i}", 200, f"token=long-{i}\n".encode())
            ask("GET", f"/misframe/twice?t=twice-{i}", 200, f"token=twice-{i}\n".encode())
        waitFor(lambda: len(answered) >= 400 or errors, "400 requests")
        stop.set()
        for thread in threads:
            thread.join(DEADLINE)
        self.assertEqual((wrong, errors), ([], []))
        log = daemon.log()
        self.assertEqual(log.count("frames its responses wrongly"), 1, log)
        self.assertIn("Backend generation 1 on port", log)

    def test_hungAppTimesOut(self):
        """
        A request to an app that accepts it and never answers gets a 504
        at backendTimeout, counted in the metrics.
        """
        daemon = Daemon(self, backendTimeout=2000, env={"APP_MISBEHAVE": "1"})
        daemon.start()
        daemon.serving()
        started = time.monotonic()
        status, body = daemon.get("/stall")
        took = time.monotonic() - started
        self.assertEqual(status, 504)
        self.assertIn("did not answer GET /stall within 2 s (backendTimeout)", body)
        self.assertGreaterEqual(took, 1.9)
        self.assertLess(took, 2 + DEADLINE / 3)
        metrics = urlopen(f"http://127.0.0.1:{daemon.controlPort}/metrics", timeout=DEADLINE)
        self.assertIn(
            b'rainbowd_backend_timeouts_total{phase="head"} 1.0', metrics.read()
        )
        self.assertEqual(daemon.get("/token?t=after"), (200, "token=after\n"))

    def test_brokenBuild(self):
        """
        A redeploy whose new version exits at once answers non-2xx with the
        reason and the app's output, and the old version serves on.
        """
        daemon = Daemon(self)
        daemon.start()
        daemon.serving()
        daemon.writeConfig(env={"APP_FAIL_AT_START": "1"})
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 502)
        self.assertIn("exited with code 3", result["error"])
        self.assertIn(
            "app: cannot import settings (simulated broken build)", result["output"]
        )
        self.assertEqual(daemon.get("/")[0], 200)
        self.assertEqual(daemon.control("GET", "/status")[1]["active"], 1)

    def test_failingVerifyKeepsOld(self):
        """
        A new version whose verify fails is stopped while the old one serves
        on; the 502 and rainbowctl carry the verify's exit status and
        output, 127 is told as a command not found, and a verify that passes
        switches.
        """
        daemon = Daemon(self)
        daemon.start()
        oldPid = daemon.appPid()
        daemon.writeConfig(
            env={"APP_VERSION": "v2"},
            verify="curl -fsS http://127.0.0.1:$1/ | grep -q v3 || "
            '{ echo "no v3 on port $1 (generation $2, RAINBOWD_PORT=$RAINBOWD_PORT)"; '
            "exit 4; }",
        )
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 502, result)
        self.assertEqual(result["verify"]["exitCode"], 4)
        port = result["port"]
        self.assertEqual(
            result["verify"]["output"],
            [f"no v3 on port {port} (generation 2, RAINBOWD_PORT={port})"],
        )
        self.assertIn("failed its verify command, which exited with code 4", result["error"])
        self.assertEqual(daemon.get("/"), (200, f"v1 pid={oldPid}\n"))
        self.assertIn(f"[generation 2 verify] no v3 on port {port}", daemon.log())
        daemon.writeConfig(verify="./smoke-test.sh $1")
        ctl = daemon.rainbowctl("redeploy")
        self.assertEqual(ctl.returncode, 1, ctl.stdout)
        self.assertIn("verifying generation 3 on port", ctl.stdout)
        self.assertIn("exited with code 127: the shell did not find the command", ctl.stdout)
        self.assertIn("smoke-test.sh: not found", ctl.stdout)
        self.assertIn("generation 1 is still serving", ctl.stdout)
        self.assertEqual(daemon.get("/"), (200, f"v1 pid={oldPid}\n"))
        daemon.writeConfig(
            env={"APP_VERSION": "v3"},
            verify="curl -fsS http://127.0.0.1:$1/ | grep v3",
        )
        ctl = daemon.rainbowctl("redeploy")
        self.assertEqual(ctl.returncode, 0, ctl.stdout)
        self.assertIn("    verify: v3 pid=", ctl.stdout)
        self.assertIn("generation 4 passed its verify", ctl.stdout)
        self.assertTrue(daemon.get("/")[1].startswith("v3 "))
        waitFor(lambda: not alive(oldPid), "the old app to exit")

    def test_verifyChildrenKilled(self):
        """
        A verify that leaves children holding its output open, in its
        process group and out of it, passes when its shell exits 0, and the
        children are killed; one that waits on such a
        child past verifyTimeout has its whole process group killed, and
        the deploy fails.
        """
        child = os.path.abspath(self.mktemp())
        daemon = Daemon(self, verifyTimeout=3000)
        daemon.start()
        oldPid = daemon.appPid()
        stray, out = os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp())
        daemon.writeConfig(
            verify=f"sleep 300 & echo $! > {child}; "
            f"setsid sh -c 'echo out > {out}; exec sleep 300' & echo $! > {stray}; "
            # Exit only once the child is out of the group, in a session of its own.
            f"while [ ! -s {out} ]; do sleep 0.05; done; exit 0"
        )
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, result)
        with open(child) as f:
            first = int(f.read())
        waitFor(lambda: not alive(first), "the verify's child to be killed")
        with open(stray) as f:
            outside = int(f.read())
        waitFor(lambda: not alive(outside), "the verify's setsid child to be killed")
        self.assertIn("its verify left processes outside its process group", daemon.log())
        daemon.writeConfig(verify=f"sleep 300 & echo $! > {child}; wait")
        started = time.monotonic()
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 502, result)
        self.assertTrue(result["verify"]["timedOut"], result)
        self.assertIn("did not finish within verifyTimeout (3 s)", result["error"])
        self.assertLess(time.monotonic() - started, DEADLINE)
        with open(child) as f:
            second = int(f.read())
        waitFor(lambda: not alive(second), "the hung verify's child to be killed")
        self.assertEqual(daemon.control("GET", "/status")[1]["active"], 2)
        self.assertNotEqual(daemon.appPid(), oldPid)

    def test_redeployFromVerifyRefused(self):
        """
        A verify that runs rainbowctl redeploy, or POSTs /redeploy itself,
        fails at once, saying why, rather than waiting out verifyTimeout for
        a redeploy queued behind the very deploy it holds up; the old
        version serves on and no deploy follows.
        """
        daemon = Daemon(self, verifyTimeout=DEADLINE * 1000)
        daemon.start()
        oldPid = daemon.appPid()
        daemon.writeConfig(verify=f"{sys.executable} -m rainbowd.control.ctl redeploy")
        started = time.monotonic()
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 502, result)
        self.assertLess(time.monotonic() - started, DEADLINE / 2)
        self.assertEqual(result["verify"]["exitCode"], 2, result)
        self.assertIn("rainbowctl: refused: this is a verify command", result["verify"]["output"][-1])
        self.assertEqual(daemon.get("/"), (200, f"v1 pid={oldPid}\n"))
        status, body = daemon.control("GET", "/status")
        self.assertFalse(body["deploying"], body)
        self.assertEqual(body["active"], 1)
        daemon.writeConfig(
            verify=f"curl -sS -X POST -d '' http://127.0.0.1:{daemon.controlPort}/redeploy; exit 3"
        )
        started = time.monotonic()
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 502, result)
        self.assertLess(time.monotonic() - started, DEADLINE / 2)
        output = "\n".join(result["verify"]["output"])
        self.assertIn("comes from process", output)
        self.assertIn("take redeploys out of verify", output)
        status, body = daemon.control("GET", "/status")
        self.assertFalse(body["deploying"], body)
        self.assertEqual(body["active"], 1)

    def test_shutdownDuringVerify(self):
        """
        SIGTERM to rainbowd while a verify runs kills the verify and its
        children, refuses the deploy, and rainbowd exits 0 leaving no
        process.
        """
        pids = os.path.abspath(self.mktemp())
        daemon = Daemon(self)
        process = daemon.start()
        daemon.serving()
        daemon.writeConfig(verify=f"echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait")
        answer = {}

        def redeploy():
            try:
                answer["result"] = daemon.control("POST", "/redeploy")
            except (URLError, ConnectionError, http.client.HTTPException) as e:
                answer["error"] = e

        thread = threading.Thread(target=redeploy)
        thread.start()

        def verifyPids():
            try:
                with open(pids) as f:
                    found = [int(line) for line in f.read().split()]
            except FileNotFoundError:
                return None
            return found if len(found) == 2 else None

        shell, sleeper = waitFor(verifyPids, f"the verify to run\n{daemon.log()}")
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())
        thread.join(DEADLINE)
        self.assertFalse(alive(shell))
        self.assertFalse(alive(sleeper))
        if "result" in answer:
            status, body = answer["result"]
            self.assertEqual(status, 503, body)
            self.assertIn("shutting down", body["error"])
        stateDir = os.path.join(daemon.directory, ".rainbowd")
        self.assertEqual(SIGNALS.marked({APP_VARIABLE: stateDir}), [])

    def test_crashedAppReplaced(self):
        """
        After the active app is killed with SIGKILL, traffic comes back by
        itself.
        """
        daemon = Daemon(self)
        daemon.start()
        pid = daemon.appPid()
        os.kill(pid, signal.SIGKILL)
        waitFor(lambda: not alive(pid), "the app to die")
        self.assertNotEqual(daemon.appPid(), pid)

    def test_stoppedAppReplaced(self):
        """
        After the active app's whole process group is stopped with SIGSTOP,
        a replacement serves within a few liveness intervals and its boot
        (1 s here), C{/status} and the log say why; requests sent once the
        stop is noticed wait in rainbowd, not in the stopped app, and all
        get 200 from the replacement; and once rainbowd stops, the stopped
        group is gone, killed: nothing is left behind.
        """
        daemon = Daemon(
            self,
            livenessInterval=300,
            livenessFailures=3,
            # Long enough that generation 1, drained at once, is still in
            # /status when generation 2's first is read on a slow machine.
            killTimeout=5000,
            env={"APP_STARTUP_DELAY": "1"},
        )
        process = daemon.start()
        oldPid = daemon.appPid()
        [group] = daemon.appGroups()
        os.killpg(group, signal.SIGSTOP)
        stopped = time.monotonic()

        def noticed():
            status = daemon.control("GET", "/status")[1]
            old = [b for b in status["backends"] if b["generation"] == 1][0]
            return (old["liveness"] or {}).get("unresponsive") and status

        status = waitFor(noticed, f"the stop to be noticed\n{daemon.log()}")
        if status["active"] == 1:
            self.assertIsNone(status["routable"], status)
        answers = []

        def get():
            answers.append(daemon.get("/"))

        waiting = [threading.Thread(target=get) for _ in range(4)]
        for thread in waiting:
            thread.start()
        for thread in waiting:
            thread.join(DEADLINE)

        def replaced():
            status = daemon.control("GET", "/status")[1]
            return status["active"] == 2 and status

        status = waitFor(replaced, f"generation 2 to serve\n{daemon.log()}")
        took = time.monotonic() - stopped
        self.assertEqual(len(answers), 4, daemon.log())
        for code, body in answers:
            self.assertEqual(code, 200, body)
            self.assertNotIn(f"pid={oldPid}\n", body)
        self.assertEqual(status["routable"], 2)
        old = [b for b in status["backends"] if b["generation"] == 1][0]
        self.assertTrue(old["liveness"]["unresponsive"], old)
        self.assertIn(f"process {oldPid} is stopped", old["liveness"]["lastError"])
        for _ in range(5):
            code, body = daemon.get("/")
            self.assertEqual(code, 200)
            self.assertNotIn(f"pid={oldPid}\n", body)
        self.assertIn(
            f"generation 1 (pid {oldPid}, port {old['port']}), the active "
            "backend, failed 3 liveness checks in a row",
            daemon.log(),
        )
        self.assertLess(took, DEADLINE)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())
        self.assertFalse(groupAlive(group))
        self.assertIn("generation 1 did not stop within killTimeout", daemon.log())

    def test_deadlockedAppReplaced(self):
        """
        An app that still accepts connections but answers none (deadlocked)
        fails its liveness checks by their timeout, is replaced, and is
        killed once drained, since SIGTERM no longer ends it.
        """
        daemon = Daemon(
            self,
            livenessInterval=300,
            healthCheckTimeout=500,
            drainTimeout=1000,
            killTimeout=1000,
        )
        daemon.start()
        oldPid = daemon.appPid()
        [group] = daemon.appGroups()
        hang = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
        self.addCleanup(hang.close)
        hang.sendall(b"GET /hang HTTP/1.1\r\nHost: app.example\r\n\r\n")

        def replaced():
            status = daemon.control("GET", "/status")[1]
            return status["active"] == 2 and status

        status = waitFor(replaced, f"generation 2 to serve\n{daemon.log()}")
        old = [b for b in status["backends"] if b["generation"] == 1][0]
        self.assertEqual(
            old["liveness"]["lastError"], "GET /health did not answer within 0.5 s"
        )
        code, body = daemon.get("/")
        self.assertEqual(code, 200)
        self.assertNotIn(f"pid={oldPid}\n", body)
        waitFor(lambda: not groupAlive(group), f"the hung app to die\n{daemon.log()}")
        self.assertIn("generation 1 did not stop within killTimeout", daemon.log())
        answer = b""
        while b"\r\n" not in answer:
            chunk = hang.recv(4096)
            self.assertTrue(chunk, f"the held request got no answer: {answer!r}")
            answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 502 "), answer)

    def test_stopLeavesNoProcess(self):
        """
        SIGTERM to rainbowd stops every app process, including one the app
        forked, and rainbowd exits 0.
        """
        daemon = Daemon(self, env={"APP_FORK_CHILD": "1"})
        process = daemon.start()
        daemon.serving()
        groups = daemon.appGroups()
        self.assertEqual(len(groups), 1)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())
        self.assertFalse(groupAlive(groups[0]))

    def test_stopClosesKeptAliveConnections(self):
        """
        On SIGTERM, a kept-alive connection with no request on it is closed
        while the app still runs, and one whose request is being answered
        gets its answer, saying C{Connection: close}: a kept-alive client's
        next request never goes to an app that was told to stop.
        """
        daemon = Daemon(self)
        process = daemon.start()
        daemon.serving()
        idle = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
        self.addCleanup(idle.close)
        idle.request("GET", "/")
        self.assertTrue(idle.getresponse().read().startswith(b"v1 "))
        busy = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=DEADLINE)
        self.addCleanup(busy.close)
        busy.request("GET", "/slow?seconds=5")
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["backends"][0]["inflight"] == 1,
            "the slow request to be in flight",
        )
        groups = daemon.appGroups()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(idle.sock.recv(1), b"", "the idle connection is closed")
        self.assertEqual(
            select.select([busy.sock], [], [], 0)[0], [], "the slow request is answered later"
        )
        self.assertTrue(groupAlive(groups[0]), "the app still runs")
        response = busy.getresponse()
        self.assertEqual(response.status, 200)
        self.assertTrue(response.read().startswith(b"v1 "))
        self.assertEqual(response.getheader("Connection"), "close")
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())

    def test_stopSendsTheLastResponseWhole(self):
        """
        On SIGTERM, a response still on its way to a client that reads it
        slowly is sent whole before rainbowd exits, even once the app is
        drained and stopped.
        """
        daemon = Daemon(self, drainTimeout=30000)
        process = daemon.start()
        daemon.serving()
        size = 6 * 1024 * 1024
        client = socket.socket()
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.settimeout(DEADLINE)
        client.connect(("127.0.0.1", daemon.port))
        client.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (size,))
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["backends"][0]["inflight"] == 1,
            "the large response to be in flight",
        )
        process.send_signal(signal.SIGTERM)
        received = b""
        while True:
            data = client.recv(8192)
            if not data:
                break
            received += data
            time.sleep(0.01)
        head, _, body = received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(len(body), size)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())

    def test_stopClosesCleanlyBehindPipelinedRequest(self):
        """
        On SIGTERM, a connection with a large request pipelined behind the
        one being answered gets that answer whole, however slowly it reads
        it, and then a clean close, although what was pipelined is never
        read: closing with it unread would reset the connection, and the
        kernel would drop what it had yet to send of the answer.
        """
        daemon = Daemon(self, drainTimeout=30000)
        process = daemon.start()
        daemon.serving()
        size = 6 * 1024 * 1024
        client = socket.socket()
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.settimeout(DEADLINE)
        client.connect(("127.0.0.1", daemon.port))
        client.sendall(
            b"GET /big?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (size,)
            + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            + b"y" * 200000
        )
        waitFor(
            lambda: daemon.control("GET", "/status")[1]["backends"][0]["inflight"] == 1,
            "the large response to be in flight",
        )
        process.send_signal(signal.SIGTERM)
        received = b""
        while True:
            data = client.recv(8192)
            if not data:
                break
            received += data
            time.sleep(0.01)
        head, _, body = received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(len(body), size)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())

    def test_leftoversOfKilledRainbowdStopped(self):
        """
        After rainbowd is killed with SIGKILL, its app (which would have
        outlived it) is stopped by the next rainbowd on the same state
        directory before that launches its own, which then serves.
        """
        daemon = Daemon(self)
        first = daemon.start()
        oldPid = daemon.appPid()
        [oldGroup] = daemon.appGroups()
        first.kill()
        first.wait(DEADLINE)
        first.stdout.close()
        self.assertTrue(groupAlive(oldGroup))
        daemon.start()
        newPid = daemon.appPid()
        self.assertNotEqual(newPid, oldPid)
        self.assertFalse(groupAlive(oldGroup))
        self.assertIn(
            f"of an earlier rainbowd (process group {oldGroup}", daemon.log()
        )

    def test_leftoverWithoutMarkerStopped(self):
        """
        After rainbowd is killed with SIGKILL, an app that overwrote its
        environment (Perl's C{$0 = ...}, as C{setproctitle} does), so that
        it no longer shows rainbowd's marker, is stopped all the same by the
        next rainbowd, which knows its recorded group's leader.
        """
        perl = shutil.which("perl")
        if perl is None:
            raise SkipTest("no perl to overwrite its environment with $0")
        server = (
            "use IO::Socket::INET; $0 = q(app); my $s = IO::Socket::INET->new("
            "LocalAddr => q(127.0.0.1), LocalPort => $ARGV[0], Listen => 5, "
            "ReuseAddr => 1) or die; while (my $c = $s->accept) { print $c "
            'qq(HTTP/1.0 200 OK\\r\\nConnection: close\\r\\n\\r\\npid=$$ ok\\n); '
            "close $c }"
        )
        daemon = Daemon(self, run=f"exec {perl} -e '{server}' $1")
        first = daemon.start()
        oldPid = daemon.appPid()
        self.addCleanup(lambda: alive(oldPid) and os.kill(oldPid, signal.SIGKILL))
        with open(f"/proc/{oldPid}/environ", "rb") as f:
            self.assertNotIn(APP_VARIABLE.encode("ascii"), f.read())
        first.kill()
        first.wait(DEADLINE)
        first.stdout.close()
        self.assertTrue(alive(oldPid))
        daemon.start()
        newPid = daemon.appPid()
        self.addCleanup(lambda: alive(newPid) and os.kill(newPid, signal.SIGKILL))
        self.assertNotEqual(newPid, oldPid)
        self.assertFalse(alive(oldPid))
        self.assertIn(f"of an earlier rainbowd (process group {oldPid}", daemon.log())

    def test_setsidChildrenStopped(self):
        """
        A process the app starts in a session of its own (C{setsid} in
        C{run}) is stopped with its generation, after a redeploy, and when
        rainbowd stops; rainbowd still exits 0.
        """
        strays = os.path.abspath(self.mktemp())
        daemon = Daemon(
            self,
            run=f"setsid sleep 999 & echo $! >> {strays}; "
            f"exec {sys.executable} {APP} $1 $2",
        )
        process = daemon.start()
        daemon.serving()

        def pids():
            with open(strays) as f:
                return [int(line) for line in f.read().split()]

        [first] = waitFor(pids, "the first stray's pid")
        self.assertTrue(alive(first))
        self.assertNotEqual(os.getpgid(first), daemon.appGroups()[0])
        status, body = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, body)
        waitFor(lambda: not alive(first), f"the stray {first} to stop\n{daemon.log()}")
        self.assertIn("generation 1 left processes outside its process group", daemon.log())
        second = waitFor(lambda: pids()[1:], "the second stray's pid")[0]
        self.assertTrue(alive(second))
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())
        self.assertFalse(alive(second))

    def test_setsidChildOfKilledRainbowdStopped(self):
        """
        After rainbowd is killed with SIGKILL, a process its app started in
        a session of its own is stopped by the next rainbowd on the same
        state directory, though no record names it.
        """
        strays = os.path.abspath(self.mktemp())
        daemon = Daemon(
            self,
            run=f"setsid sleep 999 & echo $! >> {strays}; "
            f"exec {sys.executable} {APP} $1 $2",
        )
        first = daemon.start()
        daemon.serving()

        def written():
            try:
                with open(strays) as f:
                    return f.read().split()
            except FileNotFoundError:
                return None

        stray = int(waitFor(written, "the stray's pid")[0])
        first.kill()
        first.wait(DEADLINE)
        first.stdout.close()
        self.assertTrue(alive(stray))
        daemon.start()
        daemon.serving()
        self.assertFalse(alive(stray))
        self.assertIn(f"processes {stray} of an earlier rainbowd's app", daemon.log())

    def test_webPagesRefused(self):
        """
        A cross-origin POST from a page, or a request for a rebound host
        name, gets 403 and does not redeploy; curl's and rainbowctl's
        requests work as before.
        """
        daemon = Daemon(self)
        daemon.start()
        daemon.serving()
        for headers in [
            {"Origin": "http://evil.example", "Content-Type": "text/plain"},
            {"Origin": "null"},
            {"Host": f"attacker.example:{daemon.controlPort}"},
        ]:
            status, body = daemon.control("POST", "/redeploy", headers=headers)
            self.assertEqual(status, 403, (headers, body))
            self.assertIn(body["key"], ("controlAllowedOrigins", "controlAllowedHosts"))
        status, body = daemon.control("GET", "/status")
        self.assertEqual(status, 200)
        self.assertEqual([b["generation"] for b in body["backends"]], [1])
        status, body = daemon.control(
            "POST", "/redeploy", headers={"Host": f"localhost:{daemon.controlPort}"}
        )
        self.assertEqual(status, 200, body)
        result = daemon.rainbowctl("status")
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("Origin: http://evil.example", daemon.log())

    def test_unsafeStateDirRefused(self):
        """
        A state directory others may write to makes twistd exit non-zero
        at once, with one line naming it and the chmod that fixes it, and
        no app launched.
        """
        daemon = Daemon(self)
        stateDir = os.path.join(daemon.directory, ".rainbowd")
        os.mkdir(stateDir)
        os.chmod(stateDir, 0o777)
        process = daemon.start()
        output = process.communicate(timeout=DEADLINE)[0].decode()
        self.assertNotEqual(process.returncode, 0)
        self.assertIn(f"chmod 700 {stateDir}", output + daemon.log())
        self.assertNotIn("Traceback", output + daemon.log())
        self.assertEqual(os.listdir(stateDir), [])

    def failedStart(self, daemon: Daemon, daemonize: bool) -> str:
        """
        Start C{daemon}, daemonized (C{twistd rainbowd}) or not (C{twistd -n
        rainbowd}), and check that it fails as a user needs: a non-zero exit
        within L{FAILED_START} seconds, one C{rainbowd:} line on the
        terminal, no process left and no pidfile.

        @return: that line.
        """
        # Past FAILED_START, so that a start that fails only once a drain or
        # a kill has been waited out fails the test.
        daemon.writeConfig(drainTimeout=60000, killTimeout=60000)
        marker = {"RAINBOWD_TEST_START": daemon.directory}
        started = time.monotonic()
        process = daemon.start(daemonize=daemonize, env=marker, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(timeout=FAILED_START)
            # A daemon's child may still be exiting when its parent has.
            end, left = time.monotonic() + 2.0, SIGNALS.marked(marker)
            while left and time.monotonic() < end:
                time.sleep(0.05)
                left = SIGNALS.marked(marker)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            self.fail(f"twistd rainbowd still runs after {FAILED_START} s\n{daemon.log()}")
        finally:
            for pid in SIGNALS.marked(marker):
                SIGNALS.signalMarked(pid, marker, signal.SIGKILL)
        self.assertLess(time.monotonic() - started, FAILED_START)
        self.assertNotEqual(process.returncode, 0)
        self.assertEqual(left, [], "processes of the failed start were left running")
        self.assertFalse(os.path.exists(os.path.join(daemon.directory, "twistd.pid")))
        lines = err.decode().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("rainbowd: "), err)
        return lines[0]

    def test_portTaken(self):
        """
        C{twistd rainbowd}, daemonized or not, on a port that is taken exits
        non-zero at once with the error on the terminal, leaving no process
        and no pidfile.
        """
        for daemonize in [True, False]:
            daemon = Daemon(self)
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", daemon.port))
                taken.listen()
                error = self.failedStart(daemon, daemonize)
            self.assertIn(
                f'cannot listen on tcp:{daemon.port}:interface=127.0.0.1 ("port")', error
            )

    def test_stateDirLocked(self):
        """
        A second C{twistd rainbowd}, daemonized or not, on the state
        directory of one that runs exits non-zero at once with the error on
        the terminal, leaving no process and no pidfile, and the first one
        serves on.
        """
        first = Daemon(self)
        first.start()
        first.serving()
        for daemonize in [True, False]:
            second = Daemon(self, stateDir=os.path.join(first.directory, ".rainbowd"))
            error = self.failedStart(second, daemonize)
            self.assertIn(
                f"another rainbowd (pid {first.process.pid}) uses the state directory",
                error,
            )
        self.assertTrue(first.serving().startswith("v1"))

    def test_daemonUnixSocketLocked(self):
        """
        A daemonized rainbowd holds the lock of its unix control socket in
        its own name: a second rainbowd, on another state directory, on
        that socket exits with the error, and the first serves on.
        """
        # A short path: a unix socket's is at most 107 bytes.
        socketDirectory = tempfile.mkdtemp(prefix="rainbowd-")
        self.addCleanup(shutil.rmtree, socketDirectory)
        socketPath = os.path.join(socketDirectory, "control.sock")
        first = Daemon(self, controlPort=f"unix:{socketPath}")
        marker = {"RAINBOWD_TEST_START": first.directory}

        def stop():
            for pid in SIGNALS.marked(marker):
                SIGNALS.signalMarked(pid, marker, signal.SIGTERM)
            waitFor(lambda: not SIGNALS.marked(marker) or None, "the daemon to stop")

        process = first.start(daemonize=True, env=marker)
        self.addCleanup(stop)
        self.assertEqual(process.wait(DEADLINE), 0, process.stdout.read())
        self.assertTrue(first.serving().startswith("v1"))
        second = Daemon(self, controlPort=first.config["controlPort"])
        error = self.failedStart(second, daemonize=False)
        self.assertIn("another rainbowd is using that socket", error)
        self.assertTrue(first.serving().startswith("v1"))

    def test_example(self):
        """
        The bundled example serves and redeploys as the Quick start says,
        with no virtualenv on PATH: its "run" line finds Twisted through
        RAINBOWD_PYTHON.
        """
        example = os.path.join(SOURCE, "examples", "rainbow.conf.json")
        if not os.path.exists(example):
            raise SkipTest("the examples are in the checkout, not installed")
        daemon = Daemon(self)
        process = daemon.start(
            env={"PATH": "/usr/bin:/bin"},
            rainbowdOptions=[
                "--config", example,
                "--port", str(daemon.port),
                "--control-port", str(daemon.controlPort),
                "--state-dir", os.path.join(daemon.directory, ".rainbowd"),
            ],
        )
        self.assertTrue(daemon.serving().startswith("example app "), daemon.log())
        status, result = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, result)
        self.assertEqual(result["generation"], 2)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0)
        self.assertEqual(daemon.appGroups(), [])

    def test_noDeprecationWarnings(self):
        """
        rainbowd's modules import nothing deprecated (such as
        L{twisted.web.http.HTTPClient}), so no deprecation warning reaches a
        user's log.
        """
        subprocess.run(
            [
                sys.executable,
                "-W",
                "error::DeprecationWarning",
                "-c",
                "import rainbowd.tap, rainbowd.web.proxy, rainbowd.app.health",
            ],
            env=dict(os.environ, PYTHONPATH=SOURCE),
            check=True,
            timeout=DEADLINE,
        )

    def test_configWithoutRun(self):
        """
        A config without "run" makes twistd exit non-zero at once, with a
        message naming "run".
        """
        daemon = Daemon(self)
        del daemon.config["run"]
        daemon.writeConfig()
        process = daemon.start()
        output = process.communicate(timeout=DEADLINE)[0].decode()
        self.assertNotEqual(process.returncode, 0)
        self.assertIn('"run"', output)

    def test_controlToken(self):
        """
        With a token file, a control request without the token or with a
        wrong one gets 401, one with it redeploys, and the token appears in
        none of rainbowd's output, nor in that of a start that fails.
        """
        daemon = Daemon(self)
        daemon.writeConfig(controlTokenFile=tokenFile(self, TOKEN + b"\n"))
        process = daemon.start()
        daemon.serving()
        bearer = {"Authorization": "Bearer " + TOKEN.decode()}
        for headers in [{}, {"Authorization": "Bearer " + TOKEN.decode()[:-1]}]:
            status, body = daemon.control("POST", "/redeploy", headers)
            self.assertEqual(status, 401)
            self.assertIn("Authorization: Bearer TOKEN", body["error"])
        self.assertEqual(daemon.control("GET", "/status", bearer)[1]["active"], 1)
        status, result = daemon.control("POST", "/redeploy", bearer)
        self.assertEqual((status, result["generation"]), (200, 2), result)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0)
        output = daemon.output()
        self.assertIn("refused a control request", output)
        self.assertNotIn(TOKEN.decode(), output)
        self.assertNotIn(TOKEN.decode()[:-1], output)

        broken = Daemon(self)
        brokenToken = tokenFile(self, TOKEN + b" and more\n")
        broken.writeConfig(controlTokenFile=brokenToken)
        process = broken.start()
        output = process.communicate(timeout=DEADLINE)[0].decode() + broken.log()
        self.assertNotEqual(process.returncode, 0)
        self.assertIn(brokenToken, output)
        self.assertNotIn(TOKEN.decode(), output)

    def test_bigBodyRefused(self):
        """
        A 5 MB control request body is refused with 413, and rainbowd
        serves and answers on.
        """
        daemon = Daemon(self)
        daemon.start()
        daemon.serving()
        status, body = daemon.control("POST", "/redeploy", data=b"x" * (5 * 1024 * 1024))
        self.assertEqual(status, 413)
        self.assertIn("larger than 65536 bytes", body["error"])
        self.assertEqual(daemon.control("GET", "/status")[1]["active"], 1)
        self.assertEqual(daemon.get("/")[0], 200)
        self.assertIn(
            "Answered 413 to a client of the control API", daemon.log()
        )
        self.assertIn("body is larger than 65536 bytes", daemon.log())

    def test_trickledHeadsTimedOut(self):
        """
        On both ports, a request head trickled a byte every 0.1 s is
        answered 408 and closed once requestHeaderTimeout (1 s) has passed,
        though bytes kept coming, and logged; rainbowd serves on.
        """
        daemon = Daemon(self, requestHeaderTimeout=1000)
        daemon.start()
        daemon.serving()
        for port, what in [
            (daemon.port, "public port"),
            (daemon.controlPort, "control API"),
        ]:
            answer, seconds, sent = trickleHead(port)
            self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), (what, answer))
            self.assertIn(b"requestHeaderTimeout", answer)
            self.assertGreaterEqual(seconds, 1.0)
            self.assertGreaterEqual(sent, 3)
            waitFor(
                lambda: f"Answered 408 to a client of the {what}" in daemon.log(),
                f"the 408 on the {what} to be logged",
            )
        self.assertEqual(daemon.get("/")[0], 200)
        self.assertEqual(daemon.control("GET", "/status")[1]["active"], 1)

    def test_bigBodyRefusedOnPublicPort(self):
        """
        A request whose Content-Length is over maxRequestBody is answered
        413 without reaching the app, and rainbowd serves on.
        """
        daemon = Daemon(self, maxRequestBody=1000)
        daemon.start()
        daemon.serving()
        with socket.create_connection(("127.0.0.1", daemon.port), DEADLINE) as s:
            s.sendall(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 1001\r\n\r\n"
            )
            answer = readUntilClosed(s, send=b"x" * 1001)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertIn(b"larger than 1000 bytes", answer)
        self.assertNotIn(b"100 Continue", answer)
        self.assertEqual(daemon.get("/")[0], 200)

    def test_rainbowctlOverUnixSocket(self):
        """
        rainbowctl finds rainbowd's unix socket (mode 600) and token in
        rainbow.conf.json: redeploy shows each step and exits 0, a broken
        build exits 1 with the reason, status shows the generation; after
        rainbowd is killed, its left-over socket does not stop a restart.
        """
        directory = tempfile.mkdtemp(prefix="rainbowd-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        socketPath = os.path.join(directory, "control.sock")
        daemon = Daemon(self)
        daemon.writeConfig(
            controlPort=f"unix:{socketPath}:mode=600",
            controlTokenFile=tokenFile(self, TOKEN),
        )
        process = daemon.start()
        daemon.serving()
        self.assertEqual(os.stat(socketPath).st_mode & 0o777, 0o600)

        done = daemon.rainbowctl("redeploy")
        self.assertEqual(done.returncode, 0, done.stdout)
        for step in [
            "launching generation 2 on port",
            "generation 2 is healthy after",
            "switched: generation 2 serves traffic (was generation 1)",
            "draining generation 1",
            "deployed generation 2",
            "generation 1 stopped",
        ]:
            self.assertIn(step, done.stdout)
        self.assertNotIn("\x1b", done.stdout)

        daemon.writeConfig(env={"APP_FAIL_AT_START": "1"})
        done = daemon.rainbowctl("redeploy")
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn("exited with code 3 before it became healthy", done.stdout)
        self.assertIn("app: cannot import settings (simulated broken build)", done.stdout)
        self.assertIn("generation 2 is still serving", done.stdout)

        done = daemon.rainbowctl("status")
        self.assertEqual(done.returncode, 0, done.stdout)
        self.assertRegex(done.stdout, r"\n2 +active ")

        done = daemon.rainbowctl("history", "--json")
        self.assertEqual(done.returncode, 0, done.stdout)
        redeploys = [d for d in json.loads(done.stdout)["deploys"] if d["cause"] == "redeploy"]
        self.assertEqual([d["outcome"] for d in redeploys], ["failed", "deployed"])
        self.assertTrue(
            redeploys[0]["requester"].startswith(f"unix:{socketPath} (uid {os.getuid()}, pid "),
            redeploys[0]["requester"],
        )

        process.kill()
        process.wait(DEADLINE)
        daemon.cleanUp()
        self.assertTrue(os.path.exists(socketPath))
        daemon.writeConfig(env={})
        daemon.start()
        daemon.serving()
        done = daemon.rainbowctl("status")
        self.assertEqual(done.returncode, 0, done.stdout + daemon.log())


    def test_poolMember(self):
        """
        With lbHealthPath and stopDelay, rainbowd answers the path itself
        (200 while serving); after a SIGTERM it answers 503 there while it
        still serves the app, until a second SIGTERM cuts the delay short
        and it exits 0.  rainbowctl --control reaches it with no config.
        """
        daemon = Daemon(self, lbHealthPath="/_up", stopDelay=60000)
        daemon.writeConfig(controlTokenFile=tokenFile(self, TOKEN))
        process = daemon.start()
        daemon.serving()
        self.assertEqual(daemon.get("/_up"), (200, "rainbowd: up\n"))
        elsewhere = tempfile.mkdtemp(prefix="rainbowd-")
        self.addCleanup(shutil.rmtree, elsewhere, True)
        done = subprocess.run(
            [sys.executable, "-m", "rainbowd.control.ctl", "--control",
             f"tcp:127.0.0.1:{daemon.controlPort}", "--token-file",
             tokenFile(self, TOKEN), "status"],
            cwd=elsewhere,
            env=dict(os.environ, PYTHONPATH=SOURCE),
            capture_output=True,
            text=True,
            timeout=DEADLINE * 2,
        )
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertRegex(done.stdout, r"\n1 +active ")

        process.send_signal(signal.SIGTERM)
        waitFor(lambda: "stopping in 60.0 s (stopDelay)" in daemon.log(), "the delay")
        self.assertEqual(
            daemon.get("/_up"), (503, "rainbowd: down: rainbowd is stopping\n")
        )
        self.assertEqual(daemon.get("/")[0], 200)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())
        self.assertIn("SIGTERM during stopDelay: cutting it short", daemon.log())
    def test_firstHourMessages(self):
        """
        What a new user meets is said plainly by rainbowctl: a health check
        answering 404 is reported while the deploy waits; a generation that
        is not running has no logs (exit 1); an app that dies of the SIGTERM
        rainbowd sent, through a shell that exits 143, was stopped by
        SIGTERM, not failed; rainbowd's shutdown logs what it waits for.
        """
        # The run line has no exec: the shell waits for the app, and exits
        # 143 once the app dies of SIGTERM.
        daemon = Daemon(self, env={"APP_DIE_OF_SIGTERM": "1"})
        process = daemon.start()
        daemon.serving()

        daemon.writeConfig(healthCheckPath="/nope", startTimeout=10000)
        done = daemon.rainbowctl("redeploy")
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn("deploy 2: launching generation 2 on port", done.stdout)
        self.assertIn(
            "generation 2: GET /nope answered 404 (10 times in a row); still "
            "waiting, up to startTimeout",
            done.stdout,
        )
        self.assertIn("generation 1 is still serving; fix the problem", done.stdout)

        done = daemon.rainbowctl("logs", "--generation", "2")
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn(
            "rainbowctl: generation 2 is not running (running now: generation 1)",
            done.stdout,
        )

        daemon.writeConfig(healthCheckPath="/health")
        done = daemon.rainbowctl("redeploy")
        self.assertEqual(done.returncode, 0, done.stdout)
        self.assertIn("deploy 3: launching generation 3 on port", done.stdout)
        self.assertIn("generation 1 stopped by SIGTERM", done.stdout)
        self.assertIn("generation 1 is stopped (stopped by SIGTERM)", daemon.log())

        process.send_signal(signal.SIGINT)
        process.wait(DEADLINE)
        self.assertIn(
            "shutting down: waiting for generation 3 (stopping", daemon.log()
        )
        self.assertIn("generation 3 is stopped (stopped by SIGTERM)", daemon.log())
        self.assertNotIn("exited with code 143", daemon.log())

    def test_fileLimitRaised(self):
        """
        rainbowd started with a soft descriptor limit below the hard one
        raises it, says so, and derives maxConnections from the raised one.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2048:
            raise SkipTest(f"the hard descriptor limit is {hard}, below 2048")
        daemon = Daemon(self)
        daemon.start(
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 2048))
        )
        daemon.serving()
        connections = daemon.control("GET", "/status")[1]["connections"]
        self.assertEqual(connections["max"], (2048 - 128 - 8 * 10) // 3)
        self.assertIn("file descriptor limit: soft 512 raised to 2048", daemon.log())

    def test_connectionFloodUnderLowLimit(self):
        """
        Under a descriptor limit of 1024 (systemd's default), 2,000
        connections trickling partial heads fill the public port up to
        maxConnections and get clean 503s past it; the control API still
        redeploys, a new client still gets a 503 or a 200, never a hang or a
        reset, and the log has no line per connection.
        """
        flood = 2000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = flood + 256
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SkipTest(
                f"the test opens {flood} connections, but its hard descriptor "
                f"limit is {hard}: run it with ulimit -n {need} or more"
            )
        if soft != resource.RLIM_INFINITY and soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

        def lowLimit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

        daemon = Daemon(self)
        # A listen queue as long as the systemd socket unit's: with
        # Twisted's default of 50 the flood's connects, faster than
        # rainbowd's accepts, would wait for SYNs to be sent again.
        daemon.writeConfig(port=f"tcp:{daemon.port}:interface=127.0.0.1:backlog=1024")
        daemon.start(preexec_fn=lowLimit)
        daemon.serving()
        maximum = daemon.control("GET", "/status")[1]["connections"]["max"]
        self.assertEqual(maximum, (1024 - 128 - 8 * 10) // 3)

        clients = []

        def closeAll():
            for client in clients:
                client.close()

        self.addCleanup(closeAll)
        for i in range(flood):
            client = socket.create_connection(("127.0.0.1", daemon.port), timeout=DEADLINE)
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: flood%d\r\n" % (i,))
            client.setblocking(False)
            clients.append(client)

        answers = {"503": 0, "other": [], "reset": 0}
        held = set(clients)

        def readAnswers():
            """
            Read what the refused connections got, and close them as a
            client does after a 503 with Connection: close.
            """
            for client in list(held):
                try:
                    data = client.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    answers["reset"] += 1
                else:
                    if data.startswith(b"HTTP/1.1 503 "):
                        answers["503"] += 1
                    else:
                        answers["other"].append(data[:100])
                held.discard(client)
                client.close()

        def trickle():
            for client in held:
                try:
                    client.send(b"X")
                except (BlockingIOError, OSError):
                    pass

        def settled():
            readAnswers()
            return len(held) <= maximum and daemon.control("GET", "/status")[1]

        status = waitFor(settled, f"the flood to be answered: {answers}")
        trickle()
        self.assertEqual(status["connections"]["open"], maximum, status)
        self.assertEqual(len(held), maximum)
        self.assertGreaterEqual(status["connections"]["refused"], flood - maximum)
        self.assertEqual(answers["other"], [])
        self.assertEqual(answers["503"] + answers["reset"], flood - maximum, answers)

        daemon.writeConfig(env={"APP_VERSION": "v2"})
        code, result = daemon.control("POST", "/redeploy")
        self.assertEqual(code, 200, result)
        trickle()
        for _ in range(3):
            try:
                code, body = daemon.get("/", timeout=10)
            except socket.timeout:
                self.fail("a new client got no answer while the public port was full")
            self.assertEqual(code, 503, body)
            self.assertIn('as many as "maxConnections" allows', body)
        readAnswers()
        self.assertEqual(len(held), maximum, answers)

        for client in list(held)[:10]:
            held.discard(client)
            client.close()

        def served():
            try:
                return daemon.get("/", timeout=10)[0] == 200
            except OSError:
                return False

        waitFor(served, "a new client to be served once connections closed")
        self.assertLess(len(daemon.log().splitlines()), 200, daemon.log()[-3000:])
        self.assertNotIn("EMFILE", daemon.log())
        self.assertEqual(answers["reset"], 0, answers)


class ServiceTests(SynchronousTestCase):
    """
    Running under systemd, for real: SIGHUP, JSON logs, readiness and an
    inherited listening socket.
    """

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("the end-to-end tests need Linux")

    def test_hangupRedeploys(self):
        """
        SIGHUP to twistd deploys the next generation, and the outcome is in
        the log.
        """
        daemon = Daemon(self)
        process = daemon.start()
        daemon.serving()
        daemon.writeConfig(env={"APP_VERSION": "v2"})
        process.send_signal(signal.SIGHUP)
        waitFor(
            lambda: daemon.get("/")[1].startswith("v2"),
            f"generation 2 to serve\n{daemon.log()}",
        )
        self.assertEqual(daemon.control("GET", "/status")[1]["active"], 2)
        waitFor(
            lambda: "redeploy on SIGHUP done: generation 2" in daemon.log(),
            "the outcome in the log",
        )

    def test_jsonLogs(self):
        """
        With C{--logger rainbowd.logs.jsonObserver}, twistd writes every
        event as a JSON line on its standard output, the app's output with
        its generation.
        """
        daemon = Daemon(self)
        output = os.path.join(daemon.directory, "stdout.json")
        with open(output, "w") as out:
            process = daemon.start(
                ["--logger", "rainbowd.logs.jsonObserver"], stdout=out
            )
        daemon.serving()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0)
        with open(output) as f:
            events = [json.loads(line) for line in f]
        served = [
            event for event in events
            if event.get("line", "").startswith("app v1: ")
        ]
        self.assertTrue(served, events)
        self.assertEqual(served[0]["generation"], 1)
        self.assertEqual(served[0]["stream"], "stdout")

    def test_upgradeUnderSystemd(self):
        """
        Under systemd (a socket it passes, a NOTIFY_SOCKET), the rainbowd an
        upgrade starts serves on that socket and tells systemd its pid and
        that it is ready; the old one says nothing of stopping, and the new
        one, which redeploys, says STOPPING=1 when it is stopped.
        """
        _upgradesHere()
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        port = listening.getsockname()[1]
        notifyName = f"@rainbowd-test-{os.getpid()}-{port}-upgrade"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify.bind("\0" + notifyName[1:])
        notify.settimeout(DEADLINE)
        daemon = Daemon(self, port="systemd:domain=INET:index=0")
        daemon.port = port
        daemon.start(
            env={
                "LISTEN_FDS": "1",
                "LISTEN_FDNAMES": "rainbowd.socket",
                "NOTIFY_SOCKET": notifyName,
            },
            wrapper=[*ACTIVATE, str(listening.fileno())],
            pass_fds=(listening.fileno(),),
        )
        self.addCleanup(_stopRainbowd, daemon)
        self.assertTrue(notify.recv(4096).startswith(b"READY=1\n"))
        appPid = daemon.appPid()
        listening.close()
        status, result = daemon.control("POST", "/upgrade")
        self.assertEqual(status, 200, (result, daemon.log()))
        daemon.upgradedPid = result["pid"]
        self.assertEqual(
            notify.recv(4096).decode().split("\n"),
            [f"MAINPID={result['pid']}", "READY=1"],
        )
        self.assertEqual(daemon.process.wait(DEADLINE), 0)
        self.assertEqual(daemon.get("/")[1], f"v1 pid={appPid}\n")
        # The config, with its "systemd:" port, still reads for a redeploy.
        status, deployed = daemon.control("POST", "/redeploy")
        self.assertEqual(status, 200, deployed)
        notify.recv(4096)  # its STATUS=
        os.kill(result["pid"], signal.SIGTERM)
        self.assertEqual(notify.recv(4096).split(b"\n")[0], b"STOPPING=1")
        waitFor(lambda: not alive(result["pid"]), "rainbowd to stop")

    def test_socketActivationAndReadiness(self):
        """
        Given a listening socket the way systemd passes one (fd 3,
        LISTEN_FDS, LISTEN_PID) and a NOTIFY_SOCKET, rainbowd serves on that
        socket and sends READY=1 (to an abstract socket) once the app
        serves, and STOPPING=1 when it stops; a request made while
        no rainbowd runs waits in the socket for the next one.
        """
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        port = listening.getsockname()[1]
        notifyName = f"@rainbowd-test-{os.getpid()}-{port}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify.bind("\0" + notifyName[1:])
        notify.settimeout(DEADLINE)

        def start(daemon):
            return daemon.start(
                env={
                    "LISTEN_FDS": "1",
                    "LISTEN_FDNAMES": "rainbowd.socket",
                    "NOTIFY_SOCKET": notifyName,
                },
                wrapper=[*ACTIVATE, str(listening.fileno())],
                pass_fds=(listening.fileno(),),
            )

        daemon = Daemon(self, port="systemd:domain=INET:index=0")
        daemon.port = port
        process = start(daemon)
        ready = notify.recv(4096).decode()
        self.assertTrue(ready.startswith("READY=1\n"), ready)
        self.assertIn("STATUS=serving generation 1", ready)
        self.assertTrue(daemon.get("/")[1].startswith("v1"))
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(DEADLINE), 0, daemon.log())
        self.assertEqual(notify.recv(4096).split(b"\n")[0], b"STOPPING=1")

        waiting = {}
        request = threading.Thread(
            target=lambda: waiting.update(result=daemon.get("/"))
        )
        request.start()
        second = Daemon(self, port="systemd:domain=INET:index=0")
        second.port = port
        start(second)
        request.join(DEADLINE)
        self.assertEqual(waiting["result"][0], 200)
