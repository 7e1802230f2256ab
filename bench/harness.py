"""
What the soak and fault runs share: a real C{twistd rainbowd} in a
directory of its own, a load generator that records every request, a
poller of C{GET /status}, and the check that nothing is left once rainbowd
has stopped.

Times are C{time.monotonic()} seconds throughout.
"""

import ctypes
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional

#: The checkout this harness belongs to: it is the rainbowd that runs.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# What rainbowd reads of /proc, the harness reads the same way.
from rainbowd.app.processgroups import (  # noqa: E402
    ProcessGroupSignals,
    processIds,
    running,
    statFields,
)
from rainbowd.app.processgroups import groupMembers as _groupMembers  # noqa: E402

APPS = os.path.join(ROOT, "bench", "apps")
TEST_APP = os.path.join(ROOT, "rainbowd", "test", "app.py")
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: prctl(2)'s option that makes this process the reaper of its orphaned
#: descendants: the rainbowd an upgrade starts outlives its parent, and
#: only a reaper can learn how it exited.
PR_SET_CHILD_SUBREAPER = 36

#: The environment variable rainbowd sets, to its state directory, in every
#: app process (see rainbowd.app.backend.APP_VARIABLE).
APP_VARIABLE = "RAINBOWD_STATE_DIR"


def waitFor(condition: Callable[[], object], what: str, deadline: float = 60.0):
    """
    Poll C{condition} until it returns something true, and return that.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {deadline:g} s waiting for {what}")


def percentile(values: List[float], p: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Ports:
    """
    Hands out proxy and control ports from C{first} upwards, two at a
    time, skipping any that are taken.
    """

    def __init__(self, first: int) -> None:
        self._next = first

    def pair(self):
        found = []
        while len(found) < 2:
            port, self._next = self._next, self._next + 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            found.append(port)
        return found


class Rainbowd:
    """
    A C{twistd -n rainbowd} in a fresh directory, with the sample apps
    copied into it and a C{VERSION} file the apps read when they start.
    """

    def __init__(self, name: str, ports: Ports, backendPorts: str, **config) -> None:
        self.directory = tempfile.mkdtemp(prefix=f"rainbowd-soak-{name}-")
        for entry in os.listdir(APPS):
            if not entry.startswith((".", "__")):
                shutil.copy(os.path.join(APPS, entry), self.directory)
        self.stateDir = os.path.join(self.directory, ".rainbowd")
        self.port, self.controlPort = ports.pair()
        self.config = {
            "healthCheckPath": "/health",
            "port": self.port,
            "controlPort": self.controlPort,
            "backendPorts": backendPorts,
            "env": {"PYTHONPATH": self.directory},
        }
        self.config.update(config)
        self.writeConfig()
        self.setVersion("v1")
        self.logPath = os.path.join(self.directory, "rainbowd.log")
        self.process: Optional[subprocess.Popen] = None
        #: the descriptor limit (soft and hard) to start rainbowd with, or
        #: None for the harness's own
        self.fileLimit: Optional[int] = None
        #: every backend port and app process group seen in /status, for
        #: the leftover check
        self.backendPorts = set()
        #: process group -> its leader's start time, when seen
        self.groups: Dict[int, Optional[str]] = {}
        #: the rainbowd that serves now, once an upgrade has replaced the
        #: one L{start} ran (which is then in L{retired}): its pid
        self.adopted: Optional[int] = None
        #: the rainbowds upgrades replaced, oldest first: a L{subprocess.Popen}
        #: for the one L{start} ran, a pid for later ones
        self.retired: List[object] = []
        #: pid -> its exit code (None if it had to be killed or is not
        #: this harness's to reap), for every rainbowd that has ended
        self.exits: Dict[int, Optional[int]] = {}

    def writeConfig(self, **changes) -> None:
        self.config.update(changes)
        with open(os.path.join(self.directory, "rainbow.conf.json"), "w") as f:
            json.dump(self.config, f, indent=2)

    def setVersion(self, version: str) -> None:
        """
        Put new code in place: the next generation to start answers
        C{version}.
        """
        with open(os.path.join(self.directory, "VERSION"), "w") as f:
            f.write(version + "\n")

    def start(self) -> None:
        limit = self.fileLimit
        self.process = subprocess.Popen(
            TWISTD + ["-n", "--logfile", self.logPath, "rainbowd"],
            cwd=self.directory,
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=None if limit is None else lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (limit, limit)
            ),
        )

    @property
    def pid(self) -> Optional[int]:
        """
        The pid of the rainbowd that serves now.
        """
        if self.adopted is not None:
            return self.adopted
        return None if self.process is None else self.process.pid

    def upgrade(self, timeout: float = 120.0):
        """
        C{POST /upgrade}: C{(status, answer)}.  On a 200 the new rainbowd
        becomes L{pid} and the old one is kept in L{retired}, to be reaped
        (see L{waitRetired}).
        """
        becomeSubreaper()
        old = self.adopted if self.adopted is not None else self.process
        code, answer = self.control("POST", "/upgrade", timeout)
        if code == 200 and answer.get("pid"):
            self.retired.append(old)
            self.adopted = answer["pid"]
        return code, answer

    def waitRetired(self, deadline: float = 90.0) -> Dict[int, Optional[int]]:
        """
        Wait for every rainbowd an upgrade replaced to exit, and return
        their pids and exit codes.
        """
        end = time.monotonic() + deadline
        for old in self.retired:
            pid = old.pid if isinstance(old, subprocess.Popen) else old
            if pid not in self.exits:
                self.exits[pid] = reap(old, max(0.0, end - time.monotonic()))
        return {(old.pid if isinstance(old, subprocess.Popen) else old):
                self.exits[old.pid if isinstance(old, subprocess.Popen) else old]
                for old in self.retired}

    def serving(self, deadline: float = 60.0) -> str:
        """
        Wait until the proxy serves the app, and return what it says.
        """

        def attempt():
            try:
                status, body = self.get("/", timeout=5)
            except (OSError, http.client.HTTPException):
                return None
            return body if status == 200 else None

        return waitFor(attempt, f"the app to be served; log:\n{self.logTail()}", deadline)

    def get(self, path: str, timeout: float = 60.0):
        return request(self.port, "GET", path, timeout)

    def control(self, method: str, path: str, timeout: float = 120.0):
        status, body = request(self.controlPort, method, path, timeout)
        return status, json.loads(body)

    def status(self) -> dict:
        status = self.control("GET", "/status", 10)[1]
        for backend in status["backends"]:
            self.saw(backend)
        return status

    def saw(self, backend: dict) -> None:
        """
        Note a backend from C{/status}: its port and process group.  The
        group counts only if its leader is this rainbowd's app: a process
        just spawned is still in rainbowd's group (and the harness's) until
        C{setsid} has run, and by the time C{/status} has been read the app
        may be gone and its pid reused.
        """
        self.backendPorts.add(backend["port"])
        pid = backend["pid"]
        if not pid:
            return
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return
        if pgid not in self.groups and appCommand(pgid, self.stateDir) is not None:
            self.groups[pgid] = startTime(pgid)

    def log(self) -> str:
        try:
            with open(self.logPath) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def logTail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, deadline: float = 90.0) -> Optional[int]:
        """
        SIGTERM rainbowd and return its exit code, or L{None} if it had to
        be killed.
        """
        if self.process is None:
            return None
        if self.adopted is not None:
            if self.adopted not in self.exits:
                try:
                    os.kill(self.adopted, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                self.exits[self.adopted] = reap(self.adopted, deadline)
            self.waitRetired(deadline)
            return self.exits[self.adopted]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(deadline)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode

    def leftovers(self) -> List[str]:
        """
        What is left once rainbowd has stopped: app processes (any process
        whose environment names this state directory) and listening ports.
        """
        found = [f"process {pid} ({cmd})" for pid, cmd in appProcesses(self.stateDir)]
        for pgid, started in sorted(self.groups.items()):
            members = groupMembers(pgid)
            # The kernel hands out a group's id again only once the group
            # is empty; a leader born at another time is then a stranger.
            leader = startTime(pgid)
            if members and (leader is None or started is None or leader == started):
                found.append(f"process group {pgid} is alive: {members}")
        for port in sorted({self.port, self.controlPort} | self.backendPorts):
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    found.append(f"port {port} still accepts connections")
        return found

    def killLeftovers(self) -> None:
        for pid, cmd in appProcesses(self.stateDir):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanUp(self, keep: bool = False) -> None:
        self.stop()
        self.killLeftovers()
        if self.retired:
            reapOrphans()
        if not keep:
            shutil.rmtree(self.directory, ignore_errors=True)


def becomeSubreaper() -> None:
    """
    Make this process the reaper of its orphaned descendants (Linux), so
    that the rainbowd an upgrade starts is reaped here, with its exit code,
    once its parent has exited.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reapOrphans() -> None:
    """
    Reap the zombies left to this process as their reaper: app processes
    whose rainbowd was upgraded from, once they have exited.  (Only once
    every rainbowd of the run has been waited for: this reaps any child.)
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def reap(process, deadline: float) -> Optional[int]:
    """
    Wait for C{process} (a L{subprocess.Popen} or a pid) to exit, SIGKILL
    it after C{deadline} seconds, and return its exit code: L{None} if it
    had to be killed, or if it is no child of this process (it is then
    awaited through C{/proc}, and its code is unknown).
    """
    if isinstance(process, subprocess.Popen):
        try:
            return process.wait(deadline)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
    pid = process
    end = time.monotonic() + deadline
    killed = False
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            if not running(pid):
                return None
        else:
            if done:
                return None if killed else os.waitstatus_to_exitcode(status)
        if not killed and time.monotonic() > end:
            killed = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


#: How the harness looks at processes: as rainbowd does.
SIGNALS = ProcessGroupSignals()


def commandLine(pid) -> Optional[str]:
    """
    The command line of process C{pid}, its arguments joined by spaces, or
    L{None} if it cannot be read.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def processName(pid) -> str:
    """
    The name of process C{pid} (C{/proc/PID/comm}), for one without a
    command line, such as a kernel thread.
    """
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"({f.read().strip()})"
    except OSError:
        return "(gone)"


def children(pid: int) -> List[int]:
    """
    The running child processes of C{pid}.
    """
    found = []
    for entry in processIds():
        fields = statFields(entry)
        if fields is not None and int(fields[1]) == pid and fields[0] not in "ZX":
            found.append(int(entry))
    return found


def appProcesses(stateDir: str):
    """
    The live processes whose environment has rainbowd's marker for
    C{stateDir}: C{(pid, command line)}.
    """
    found = []
    for pid in SIGNALS.marked({APP_VARIABLE: stateDir}):
        cmd = commandLine(pid)
        if cmd is not None:
            found.append((pid, cmd[:80]))
    return found


def appCommand(pid: int, stateDir: str) -> Optional[str]:
    """
    The command line of process C{pid} if it runs (zombies aside) with
    rainbowd's marker for C{stateDir} in its environment, else L{None}.
    """
    if not SIGNALS.isMarked(pid, {APP_VARIABLE: stateDir}):
        return None
    cmd = commandLine(pid)
    return None if cmd is None else cmd[:80]


def groupMembers(pgid: int) -> List[str]:
    """
    The running processes (zombies aside) of group C{pgid}, described.
    """
    found = []
    for entry in _groupMembers(pgid):
        fields = statFields(entry)
        cmd = commandLine(entry)
        if fields is None or cmd is None:
            continue
        found.append(f"{entry} {fields[0]} {cmd[:60] or processName(entry)}")
    return found


def startTime(pid: int) -> Optional[str]:
    """
    When process C{pid} started, in clock ticks since boot, if it runs.
    """
    fields = statFields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def groupAlive(pgid: int) -> bool:
    return SIGNALS.groupAlive(pgid)


def request(port: int, method: str, path: str, timeout: float):
    """
    One request on a fresh connection: C{(status, body text)}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class Load:
    """
    C{connections} keep-alive clients sending C{GET path} to C{port} (on
    C{host}), at
    C{rate} requests a second in all (L{None}: each as fast as it can), each
    recording every outcome in L{results} as C{(start, end, status,
    version, error)}: status and version are L{None} on a connection error,
    error is L{None} otherwise.
    """

    def __init__(self, port: int, connections: int = 8, rate: Optional[float] = 200.0,
                 path: str = "/", host: str = "127.0.0.1", retryReused: bool = False) -> None:
        self.port = port
        #: whether a request whose reused keep-alive connection closed
        #: without an answer is sent again, once, on a new connection, as
        #: HTTP lets a client do (RFC 9112, section 9.3.1) and browsers do
        self.retryReused = retryReused
        #: how many requests were sent again so
        self.retried = 0
        self.host = host
        self.connections = connections
        self.interval = connections / rate if rate else 0.0
        self.path = path
        self.results: List[tuple] = []
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    def start(self) -> None:
        self.started = time.monotonic()
        for i in range(self.connections):
            thread = threading.Thread(
                target=self._client, args=(self.started + i * self.interval / self.connections,),
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> List[tuple]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.stopped = time.monotonic()
        return self.results

    def _client(self, due: float) -> None:
        connection = None
        reused = False
        while not self._stop.is_set():
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            # Steady pace; after a stall, carry on from now rather than
            # bursting to catch up.
            due = max(due + self.interval, time.monotonic())
            start = time.monotonic()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(
                        self.host, self.port, timeout=60
                    )
                    reused = False
                try:
                    connection.request("GET", self.path)
                    response = connection.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not (self.retryReused and reused):
                        raise
                    self.retried += 1
                    connection.close()
                    connection = http.client.HTTPConnection(
                        self.host, self.port, timeout=60
                    )
                    connection.request("GET", self.path)
                    response = connection.getresponse()
                body = response.read()
                reused = True
                end = time.monotonic()
                version = body.split(b" ", 1)[0].decode(errors="replace") or None
                self.results.append((start, end, response.status, version, None))
                if response.will_close:
                    connection.close()
                    connection = None
            except Exception as e:  # every outcome counts, whatever it is
                self.results.append(
                    (start, time.monotonic(), None, None, f"{type(e).__name__}: {e}")
                )
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()


class StatusPoller:
    """
    Polls C{GET /status} every C{interval} seconds, and records when each
    generation was first seen in each state, when it was last seen, and
    when each became the active one.
    """

    def __init__(self, daemon: Rainbowd, interval: float = 0.05) -> None:
        self.daemon = daemon
        self.interval = interval
        #: generation -> {state: first time seen}
        self.seen: Dict[int, Dict[str, float]] = {}
        #: generation -> last time seen alive in /status
        self.lastSeen: Dict[int, float] = {}
        #: generation -> first time seen gone, after being seen
        self.gone: Dict[int, float] = {}
        #: generation -> first time seen as the active one
        self.activeSince: Dict[int, float] = {}
        self.pids: Dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _poll(self) -> None:
        connection = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(
                        "127.0.0.1", self.daemon.controlPort, timeout=5
                    )
                connection.request("GET", "/status")
                status = json.loads(connection.getresponse().read())
            except (OSError, ValueError, http.client.HTTPException):
                connection = None
                time.sleep(self.interval)
                continue
            now = time.monotonic()
            alive = set()
            for backend in status["backends"]:
                generation = backend["generation"]
                alive.add(generation)
                self.daemon.saw(backend)
                self.seen.setdefault(generation, {}).setdefault(backend["state"], now)
                self.lastSeen[generation] = now
                if backend["pid"]:
                    self.pids[generation] = backend["pid"]
            for generation in self.seen:
                if generation not in alive:
                    self.gone.setdefault(generation, now)
            if status["active"] is not None:
                self.activeSince.setdefault(status["active"], now)
            time.sleep(self.interval)

    def healthy(self, generation: int) -> Optional[float]:
        states = self.seen.get(generation, {})
        times = [states[s] for s in ("ready", "active", "draining") if s in states]
        return min(times) if times else None

    def launched(self, generation: int) -> Optional[float]:
        states = self.seen.get(generation, {})
        return min(states.values()) if states else None
