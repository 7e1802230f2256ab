"""
End-to-end tests: a real C{twistd rainbowd} running the real app in
L{rainbowd.test.app} on 127.0.0.1.

Each test waits on a real process or socket, always with a deadline, and
leaves no process behind.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Optional
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import rainbowd
import rainbowd.test.app
from rainbowd.test.app import WEBSOCKET_GUID, webSocketFrame
from rainbowd.backend import ProcessGroupSignals

APP = os.path.abspath(rainbowd.test.app.__file__.replace(".pyc", ".py"))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: Where the rainbowd under test is, so twistd runs it and not another
#: installed copy.
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(rainbowd.__file__)))

#: The longest any one step may take, in seconds; generous for a busy
#: 2-core machine, and only ever waited out when something is wrong.
DEADLINE = 30.0


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][0] != "Z"


groupAlive = ProcessGroupSignals().groupAlive


class Daemon:
    """
    A C{twistd -n rainbowd} in a directory of its own.
    """

    def __init__(self, testCase: SynchronousTestCase, **config) -> None:
        self.testCase = testCase
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.port = freePort()
        self.controlPort = freePort()
        low = 21000 + (os.getpid() % 400) * 20
        self.config = {
            "run": f"{sys.executable} {APP} $1 $2",
            "healthCheckPath": "/health",
            "port": self.port,
            "controlPort": self.controlPort,
            "backendPorts": f"{low}-{low + 19}",
            "drainTimeout": 10000,
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

    def start(self) -> subprocess.Popen:
        self.process = subprocess.Popen(
            TWISTD + ["-n", "--logfile", self.logPath, "rainbowd"],
            cwd=self.directory,
            env=dict(os.environ, PYTHONPATH=SOURCE),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.testCase.addCleanup(self.cleanUp)
        return self.process

    def cleanUp(self) -> None:
        """
        Stop rainbowd if it still runs, and kill any app process it left, so
        one test's failure does not leak into the next.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        for pgid in self.appGroups():
            if groupAlive(pgid):
                os.killpg(pgid, signal.SIGKILL)

    def appGroups(self):
        """
        The process groups of the app generations still alive.
        """
        stateDir = os.path.join(self.directory, ".rainbowd")
        groups = []
        for name in os.listdir(stateDir) if os.path.isdir(stateDir) else ():
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

    def control(self, method: str, path: str):
        """
        Call the control API: C{(status, JSON body)}.
        """
        data = b"" if method == "POST" else None
        status, body = self._http(
            f"http://127.0.0.1:{self.controlPort}{path}", data, DEADLINE * 2
        )
        return status, json.loads(body)

    def _http(self, url: str, data: Optional[bytes], timeout: float):
        try:
            with urlopen(Request(url, data=data), timeout=timeout) as response:
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

    def appPid(self) -> int:
        return int(self.serving().split("pid=")[1].split()[0])


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
            s.sendall(b"GET /events HTTP/1.1\r\nHost: app.example\r\n\r\n")
            received = b""
            while b"data: first" not in received:
                chunk = s.recv(4096)
                self.assertTrue(chunk, f"the stream closed early: {received!r}")
                received += chunk
            elapsed = time.monotonic() - started
        self.assertNotIn(b"data: second", received)
        self.assertLess(elapsed, 0.9)
        self.assertIn(b"Content-Type: text/event-stream", received)

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
                "import rainbowd.tap, rainbowd.proxy, rainbowd.health",
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
