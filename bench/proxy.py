#!/usr/bin/env python3
"""
The data-path benchmark: how fast rainbowd proxies, next to the proxies
people would otherwise use, against the same backend, in one run.

    python3 bench/proxy.py [--quick] [--json PATH] [--skip-pypy]

It measures the rainbowd of the checkout this script is in (that checkout
goes first on twistd's PYTHONPATH), run as users run it, C{twistd -n
rainbowd} with a generated C{rainbow.conf.json}, on the Python running this
script and on PyPy, and compares it with the backend directly, nginx,
haproxy and node-http-proxy:

  - throughput and latency: wrk, keep-alive, 1 and 32 connections, in
    rounds that rotate through the targets; medians over the rounds;
  - memory: a big download through rainbowd to a client that reads slowly,
    and how much rainbowd's RSS grows meanwhile;
  - server-sent events: time from sending the request to the first event.

The backend is an nginx (one worker, no access log) answering a small body,
so the proxy in front of it is the bottleneck.  rainbowd launches it, with
a C{run} line that starts nginx on C{$1}; every other target proxies to
that same nginx, whose port C{GET /status} on the control port gives.  See
"Benchmarks" in docs/benchmarks.rst.

Every process it starts runs in a process group of its own and is stopped
on the way out, on an error or Ctrl-C too.
"""

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

BENCH = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(BENCH)
WRK_SCRIPT = os.path.join(BENCH, "wrk_report.lua")
NODE_PROXY = os.path.join(BENCH, "http_proxy.js")
SSE_APP = os.path.join(BENCH, "sse_app.py")
DEFAULT_PYPY_VENV = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
    "rainbowd-bench",
    "pypy3-venv",
)

#: What the backend answers on C{/}; every target must answer exactly this.
BODY = "rainbowd benchmark backend\n"

MiB = 1024 * 1024

#: Names of the targets; the ratio columns are relative to these two.
DIRECT = "direct"
NODE = "node-http-proxy"


class BenchError(Exception):
    """
    The benchmark cannot go on; C{str()} says why and what to do.
    """


# Processes


class Processes:
    """
    Every process the benchmark starts, each in a process group (a session)
    of its own, so that stopping one stops whatever it forked, and Ctrl-C
    in the terminal reaches only this script, which then stops them in
    order.
    """

    def __init__(self, logDir: str, serverCPUs: Optional[str] = None) -> None:
        self.logDir = logDir
        self.serverCPUs = serverCPUs
        self._started: List[Tuple[str, subprocess.Popen, float]] = []
        self._strays: List[Tuple[str, int]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        stopTimeout: float = 5.0,
    ) -> subprocess.Popen:
        """
        Start C{argv}, its output going to C{LOGDIR/NAME.log}, on the
        server CPUs if there are any.

        @param stopTimeout: how long it may take to stop after SIGTERM
            before it gets SIGKILL.
        """
        log = open(os.path.join(self.logDir, f"{name}.log"), "wb")
        if self.serverCPUs is not None:
            argv = ["taskset", "-c", self.serverCPUs] + list(argv)
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            raise BenchError(f"cannot start {name} ({argv[0]}): {e}")
        finally:
            log.close()
        self._started.append((name, process, stopTimeout))
        return process

    def logTail(self, name: str, lines: int = 15) -> str:
        try:
            with open(os.path.join(self.logDir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def watchStray(self, name: str, pid: int) -> None:
        """
        Kill the process group of C{pid} at the end if it is still alive
        then: an app process that rainbowd launched in a session of its
        own, and should have stopped itself.
        """
        if (name, pid) not in self._strays:
            self._strays.append((name, pid))

    def stopAll(self) -> List[str]:
        """
        SIGTERM every group, newest first; SIGKILL those still alive after
        their stop timeout; then kill any stray app.  Returns a sentence
        for each process that needed more than SIGTERM.
        """
        complaints = []
        started, self._started = self._started[::-1], []
        for name, process, _ in started:
            _signalGroup(process.pid, signal.SIGTERM)
        for name, process, stopTimeout in started:
            try:
                process.wait(stopTimeout)
            except subprocess.TimeoutExpired:
                complaints.append(f"{name} (pid {process.pid}) ignored SIGTERM")
                _signalGroup(process.pid, signal.SIGKILL)
                process.wait()
            # Whatever else is left in its group (a worker) goes too.
            _signalGroup(process.pid, signal.SIGKILL)
        for name, pid in self._strays:
            if _alive(pid):
                complaints.append(
                    f"{name}: app process {pid} was still running after "
                    f"rainbowd exited"
                )
                try:
                    _signalGroup(os.getpgid(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._strays = []
        return complaints


def _signalGroup(pgid: int, signum: int) -> None:
    if pgid == os.getpgrp():
        return
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _processgroups():
    """
    L{rainbowd.app.processgroups} of this checkout, which reads /proc for rainbowd:
    imported only once Twisted is known to be there (see L{findMissing}).
    """
    if CHECKOUT not in sys.path:
        sys.path.insert(0, CHECKOUT)
    from rainbowd.app import processgroups

    return processgroups


def _alive(pid: int) -> bool:
    return _processgroups().running(pid)


def _waitUntil(
    condition: Callable[[], object],
    what: str,
    timeout: float,
    process: Optional[subprocess.Popen] = None,
    processes: Optional[Processes] = None,
    name: str = "",
):
    """
    Poll C{condition} until it returns something true, and return that.

    @raise BenchError: naming C{what} on timeout, or at once if
        C{process} exits meanwhile, with the end of its log.
    """
    end = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            tail = processes.logTail(name) if processes else ""
            raise BenchError(
                f"{name} exited with status {process.returncode} while "
                f"waiting for {what}; the end of its log:\n{tail}"
            )
        if time.monotonic() > end:
            tail = processes.logTail(name) if processes and name else ""
            raise BenchError(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f"; the end of {name}'s log:\n{tail}" if tail else "")
            )
        time.sleep(0.05)


# HTTP, by hand


def httpGet(port: int, path: str = "/", timeout: float = 5.0) -> Tuple[int, bytes]:
    """
    C{GET path} on 127.0.0.1:C{port}; (status, body), or (0, error text)
    if there is no answer.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e).encode()
    finally:
        connection.close()


def checkAnswers(name: str, port: int, requests: int = 3) -> None:
    """
    C{requests} requests on one keep-alive connection must each get 200
    and exactly L{BODY}.

    @raise BenchError: if not.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(requests):
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
            if response.status != 200 or body != BODY.encode():
                raise BenchError(
                    f"{name} on port {port} answered {response.status} "
                    f"{body[:200]!r}, not 200 {BODY!r}; its numbers would "
                    f"mean nothing"
                )
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"{name} on port {port} does not answer GET /: {e}")
    finally:
        connection.close()


def portIsFree(port: int) -> bool:
    """
    Whether a server could listen on C{port} (as servers do, with
    C{SO_REUSEADDR}, so the last run's closed connections do not count).
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# What the benchmark needs


def findMissing(args: argparse.Namespace) -> List[str]:
    """
    One line per missing tool: what is missing and the command to run.
    """
    missing = []
    for tool, package in [
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
        ("wrk", "wrk"),
        ("node", "nodejs npm"),
        ("setsid", "util-linux"),
        ("taskset", "util-linux"),
        ("sed", "sed"),
    ]:
        if shutil.which(tool) is None:
            missing.append(f"{tool} is missing: apt-get install {package}")
    if not os.path.isdir(os.path.join(BENCH, "node_modules", "http-proxy")):
        missing.append(
            f"node's http-proxy is missing from {BENCH}/node_modules: "
            f"cd {BENCH} && npm install --no-save --no-package-lock http-proxy"
        )
    if importlib.util.find_spec("twisted") is None:
        missing.append(
            f"Twisted is missing from {sys.executable}: run this script with "
            f"the Python you run rainbowd with, or pip install {CHECKOUT}"
        )
    return missing


def pypyVenv(args: argparse.Namespace) -> str:
    """
    The PyPy venv to run rainbowd in: C{--pypy-venv}, or one this script
    makes with what the checkout's rainbowd needs; a venv that can no longer
    import the checkout's rainbowd (a new dependency, say) is brought up to
    date with C{pip install}.

    @raise BenchError: saying what to install, if there can be none.
    """
    venv = args.pypy_venv or DEFAULT_PYPY_VENV
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        imports = subprocess.run(
            [python, "-c", "import rainbowd.tap"],
            env=dict(os.environ, PYTHONPATH=CHECKOUT),
            capture_output=True,
        )
        if imports.returncode == 0:
            return venv
        steps = []
    elif args.pypy_venv is not None:
        raise BenchError(
            f"--pypy-venv {venv} is not a venv; make it with: "
            f"pypy3 -m venv {venv} && {venv}/bin/pip install {CHECKOUT}"
        )
    else:
        pypy = shutil.which("pypy3")
        if pypy is None:
            raise BenchError("pypy3 is missing: apt-get install pypy3 pypy3-venv")
        if subprocess.run(
            [pypy, "-c", "import ensurepip, venv"], capture_output=True
        ).returncode:
            raise BenchError("pypy3 cannot make a venv: apt-get install pypy3-venv")
        steps = [["pypy3", "-m", "venv", venv]]
    print(f"Installing rainbowd's dependencies in the PyPy venv {venv} ...", flush=True)
    for argv in steps + [[os.path.join(venv, "bin", "pip"), "install", "--quiet", CHECKOUT]]:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode:
            raise BenchError(
                f"{' '.join(argv)} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n"
                f"Make the venv by hand and pass --pypy-venv."
            )
    return venv


# Configurations


def backendNginxConfig(workDir: str) -> str:
    """
    The backend: nginx with one worker and no access log, answering
    L{BODY} on every path but C{/big.bin}, a file for the memory scenario.
    C{@PORT@} stands for the port.
    """
    return f"""\
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:@PORT@;
        keepalive_requests 100000000;
        location = /big.bin {{ root {workDir}; }}
        location / {{
            default_type text/plain;
            return 200 "{BODY.rstrip()}\\n";
        }}
    }}
}}
"""


def proxyNginxConfig(listen: int, backend: int) -> str:
    """
    nginx as a proxy, one worker, keeping connections to the backend open
    as rainbowd does.
    """
    return f"""\
worker_processes 1;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{listen};
        keepalive_requests 100000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxyConfig(listen: int, backend: int) -> str:
    """
    haproxy in HTTP mode, one thread, keep-alive both ways.
    """
    return f"""\
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:{listen}
    default_backend app
backend app
    http-reuse always
    server app 127.0.0.1:{backend}
"""


def nginxRunLine(workDir: str, template: str) -> str:
    """
    rainbowd's C{run} line for the backend: the nginx config with the port
    filled in, nginx in the foreground writing its pid to C{$2}.
    """
    return (
        f'sed "s/@PORT@/$1/" {template} > "$2.conf" && '
        f'exec nginx -p {workDir}/ -e "$2.error.log" -c "$2.conf" '
        f'-g "daemon off; pid \'$2\';"'
    )


# Targets


@dataclass(frozen=True)
class Target:
    """
    One thing to point wrk at.

    @ivar name: its name in the table.
    @ivar port: where it listens.
    @ivar pid: the pid whose RSS is sampled, for a rainbowd.
    """

    name: str
    port: int
    pid: Optional[int] = None


class Rainbowd:
    """
    A C{twistd -n rainbowd} in a directory of its own, with a generated
    C{rainbow.conf.json}.
    """

    def __init__(
        self,
        name: str,
        twistd: List[str],
        workDir: str,
        port: int,
        run: str,
        backendPorts: str,
        extraArgs: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        """
        @param env: variables to add to L{twistdEnvironment}.
        """
        self.name = name
        self.env = dict(env or {})
        self.twistd = twistd
        self.directory = os.path.join(workDir, name)
        os.makedirs(self.directory)
        self.port = port
        self.controlPort = port + 1
        self.config = {
            "run": run,
            "healthCheckPath": "/",
            "port": port,
            "controlPort": self.controlPort,
            "backendPorts": backendPorts,
            "drainTimeout": 3000,
            "killTimeout": 2000,
        }
        self.extraArgs = list(extraArgs)
        self.process: Optional[subprocess.Popen] = None

    def start(self, processes: Processes) -> None:
        with open(os.path.join(self.directory, "rainbow.conf.json"), "w") as f:
            json.dump(self.config, f, indent=2)
        self.processes = processes
        self.process = processes.start(
            self.name,
            self.twistd + ["-n", "rainbowd"] + self.extraArgs,
            cwd=self.directory,
            env=dict(twistdEnvironment(), **self.env),
            stopTimeout=15.0,
        )

    def status(self) -> Optional[dict]:
        status, body = httpGet(self.controlPort, "/status")
        if status != 200:
            return None
        return json.loads(body)

    def waitActive(self, timeout: float = 60.0) -> dict:
        """
        Wait until a generation is active and answers through the proxy;
        return the active backend's description (generation, port, pid).

        @raise BenchError: at once if the app fails to start.
        """

        def active():
            status = self.status()
            if status is None:
                return None
            failed = status["lastDeploy"]
            if status["active"] is None and failed and not failed["ok"]:
                output = "\n".join(failed.get("output", []))
                raise BenchError(
                    f"{self.name} cannot start its app: {failed['error']}\n"
                    f"{output}\nthe run line is: {self.config['run']}"
                )
            if status["active"] is None:
                return None
            for backend in status["backends"]:
                self.processes.watchStray(self.name, backend["pid"])
                if backend["generation"] == status["active"]:
                    return backend
            return None

        backend = _waitUntil(
            active,
            f"{self.name} to have an active app",
            timeout,
            self.process,
            self.processes,
            self.name,
        )
        _waitUntil(
            lambda: httpGet(self.port)[0] != 0,
            f"{self.name} to answer on port {self.port}",
            timeout,
            self.process,
            self.processes,
            self.name,
        )
        return backend


def twistdEnvironment() -> Dict[str, str]:
    """
    The environment for twistd: this checkout first on the path, so the
    rainbowd measured is this one, and none of PyPy's C{PYPY_GC_*}
    variables, so that rainbowd on PyPy runs as a user who follows the
    docs runs it, whatever the shell running this script has set.
    """
    path = os.environ.get("PYTHONPATH")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PYPY_GC_") and name != "RAINBOWD_SET_PYPY_GC"
    }
    env.update(
        PYTHONPATH=CHECKOUT + (os.pathsep + path if path else ""),
        PYTHONUNBUFFERED="1",
    )
    return env


def scrapeMetrics(controlPort: int) -> Dict[str, float]:
    """
    The samples of a rainbowd's C{GET /metrics}, each name (with its
    C{kind} label, if any, after a colon) to the sum of its values.
    """
    status, body = httpGet(controlPort, "/metrics")
    if status != 200:
        raise BenchError(f"GET /metrics on port {controlPort}: {status} {body[:200]!r}")
    samples: Dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        if 'kind="' in labels:
            name += ":" + labels.split('kind="', 1)[1].split('"', 1)[0]
        if "le=" not in labels:
            samples[name] = samples.get(name, 0.0) + float(value)
    return samples


def collectorSetting(daemon: "Rainbowd") -> str:
    """
    What a rainbowd on PyPy runs its collector with: its nursery, from its
    metrics, and the C{PYPY_GC_*} variables it was started with.
    """
    try:
        nursery = scrapeMetrics(daemon.controlPort).get("rainbowd_pypy_gc_nursery_bytes")
    except BenchError:
        nursery = None
    assert daemon.process is not None
    environ = [
        entry.decode(errors="replace")
        for entry in _processgroups().environment(daemon.process.pid) or []
    ]
    variables = [e for e in environ if e.startswith("PYPY_GC_")]
    setBy = [e for e in environ if e.startswith("RAINBOWD_SET_PYPY_GC=")]
    return (
        (f"nursery {nursery / MiB:g} MiB" if nursery else "nursery unknown")
        + f"; {' '.join(variables) or 'no PYPY_GC_* variables'}"
        + (" (set by rainbowd)" if setBy else "")
    )


def cpythonTwistd() -> List[str]:
    """
    The C{twistd} of the Python running this script.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


# wrk


def runWrk(port: int, connections: int, seconds: int) -> dict:
    """
    One wrk run, keep-alive, one thread; its report (see wrk_report.lua)
    plus C{rps}.
    """
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        WRK_SCRIPT,
        f"http://127.0.0.1:{port}/",
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        start_new_session=True,
    )
    try:
        return parseWrk(result.stdout, result.stderr, result.returncode)
    except BenchError as e:
        raise BenchError(f"{' '.join(argv)}: {e}")


def parseWrk(stdout: str, stderr: str = "", returncode: int = 0) -> dict:
    """
    The C{WRK-RESULT} line that wrk_report.lua prints, with C{rps} added,
    and wrk's own C{Requests/sec} line checked against it.

    @raise BenchError: if there is no such line.
    """
    report = None
    printedRate = None
    for line in stdout.splitlines():
        if line.startswith("WRK-RESULT "):
            report = json.loads(line[len("WRK-RESULT ") :])
        elif line.startswith("Requests/sec:"):
            printedRate = float(line.split()[1])
    if report is None or returncode:
        raise BenchError(
            f"wrk failed ({returncode}), no result line:\n{stdout}{stderr}"
        )
    seconds = report["duration_us"] / 1e6
    report["rps"] = report["requests"] / seconds if seconds else 0.0
    if (
        printedRate is not None
        and abs(printedRate - report["rps"]) > 0.01 * printedRate + 1
    ):
        raise BenchError(
            f"wrk printed {printedRate} requests/s but its summary gives "
            f"{report['rps']:.2f}:\n{stdout}"
        )
    report["errorCount"] = sum(report["errors"].values())
    return report


# Scenarios


class RSSSampler(threading.Thread):
    """
    Sample a process's VmRSS every C{interval} seconds; C{peak} is the
    highest seen, in bytes.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, vmRSS(self.pid))
            self._done.wait(self.interval)

    def finish(self) -> int:
        self._done.set()
        self.join()
        self.peak = max(self.peak, vmRSS(self.pid))
        return self.peak


def vmRSS(pid: int) -> int:
    """
    The resident set size of C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def readHead(sock: socket.socket) -> Tuple[bytes, bytes]:
    """
    Read a response's head; (head, what came after it).
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"connection closed in the response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def slowDownload(port: int, path: str, rate: float, size: int) -> float:
    """
    Download C{path} (C{size} bytes of zeros) at C{rate} bytes a second, with
    a small receive buffer so the kernel holds little of it; the seconds it
    took.

    @raise BenchError: if the answer is not 200 and C{size} zero bytes.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
    sock.settimeout(30)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Connection: close\r\n\r\n".encode()
        )
        start = time.monotonic()
        head, body = readHead(sock)
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"the download answered {head[:200]!r}")
        received = len(body)
        nonZero = body.count(0) != len(body)
        while True:
            ahead = received / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            chunk = sock.recv(64 * 1024)
            if not chunk:
                break
            received += len(chunk)
            nonZero = nonZero or chunk.count(0) != len(chunk)
        seconds = time.monotonic() - start
    finally:
        sock.close()
    if received != size or nonZero:
        raise BenchError(f"the download got {received} bytes, not {size} zero bytes")
    return seconds


def memoryScenario(rainbowd: Target, mib: int, rate: float) -> dict:
    """
    Download C{mib} MiB through C{rainbowd} at C{rate} MiB/s, sampling its
    RSS: before (after a fast warm-up download), the peak during, and one
    second after.
    """
    size = mib * MiB
    slowDownload(rainbowd.port, "/big.bin", 1e12, size)
    time.sleep(1.0)
    before = vmRSS(rainbowd.pid)
    sampler = RSSSampler(rainbowd.pid)
    sampler.start()
    try:
        seconds = slowDownload(rainbowd.port, "/big.bin", rate * MiB, size)
    finally:
        peak = sampler.finish()
    time.sleep(1.0)
    after = vmRSS(rainbowd.pid)
    return {
        "target": rainbowd.name,
        "mib": mib,
        "rateMiBs": rate,
        "seconds": seconds,
        "rssBeforeMiB": before / MiB,
        "rssPeakMiB": peak / MiB,
        "rssAfterMiB": after / MiB,
        "growthMiB": (peak - before) / MiB,
    }


def firstEventMilliseconds(port: int) -> float:
    """
    Milliseconds from sending C{GET /events} on a fresh connection to the
    whole first event arriving.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = (
            f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Accept: text/event-stream\r\n\r\n"
        ).encode()
        start = time.perf_counter()
        sock.sendall(request)
        head, data = readHead(sock)
        while True:
            event = data.find(b"data: ")
            if event >= 0 and data.find(b"\n\n", event) >= 0:
                return (time.perf_counter() - start) * 1000
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError(
                    f"the event stream ended before an event: {head!r} {data!r}"
                )
            data += chunk


def sseScenario(targets: List[Target], tries: int) -> List[dict]:
    """
    The time to the first event through each of C{targets}, C{tries}
    times each, alternating, after one untimed try each (the first
    request through rainbowd also opens its connection to the app).
    """
    for target in targets:
        firstEventMilliseconds(target.port)
    times: Dict[str, List[float]] = {target.name: [] for target in targets}
    for _ in range(tries):
        for target in targets:
            times[target.name].append(firstEventMilliseconds(target.port))
    return [
        {
            "target": name,
            "medianMs": statistics.median(values),
            "minMs": min(values),
            "maxMs": max(values),
            "tries": values,
        }
        for name, values in times.items()
    ]


# Throughput rounds


def throughput(
    targets: List[Target],
    connectionCounts: List[int],
    rounds: int,
    seconds: int,
    warmup: int,
) -> List[dict]:
    """
    Warm each target up, then C{rounds} rounds that each run wrk against
    every target at every connection count, starting each round at the
    next target, so none is always first; one row per target and
    connection count, with the median over rounds of each figure.
    """
    for target in targets:
        if warmup > 0:
            print(f"  warming up {target.name} ...", flush=True)
            runWrk(target.port, max(connectionCounts), warmup)
    runs: Dict[Tuple[str, int], List[dict]] = {
        (target.name, count): [] for target in targets for count in connectionCounts
    }
    for number in range(rounds):
        order = targets[number % len(targets) :] + targets[: number % len(targets)]
        for target in order:
            for count in connectionCounts:
                report = runWrk(target.port, count, seconds)
                runs[target.name, count].append(report)
                print(
                    f"  round {number + 1}/{rounds}  {target.name:<30} c={count:<3}"
                    f" {report['rps']:>9.0f} req/s  p50 {report['p50_us']:>7.0f} us"
                    f"  p99 {report['p99_us']:>7.0f} us"
                    + (
                        f"  {report['errorCount']} errors"
                        if report["errorCount"]
                        else ""
                    ),
                    flush=True,
                )
    rows = []
    for target in targets:
        for count in connectionCounts:
            mine = runs[target.name, count]

            def ratio(other: str) -> Optional[float]:
                theirs = runs.get((other, count))
                if not theirs:
                    return None
                ratios = [a["rps"] / b["rps"] for a, b in zip(mine, theirs) if b["rps"]]
                return statistics.median(ratios) if ratios else None

            rows.append(
                {
                    "target": target.name,
                    "connections": count,
                    "rps": statistics.median(r["rps"] for r in mine),
                    "p50_us": statistics.median(r["p50_us"] for r in mine),
                    "p99_us": statistics.median(r["p99_us"] for r in mine),
                    "p999_us": statistics.median(r["p999_us"] for r in mine),
                    "vsNode": ratio(NODE),
                    "vsDirect": ratio(DIRECT),
                    "addedP50_us": statistics.median(
                        a["p50_us"] - b["p50_us"]
                        for a, b in zip(mine, runs[DIRECT, count])
                    ),
                    "errors": sum(r["errorCount"] for r in mine),
                    "rounds": mine,
                }
            )
    return rows


# Report


def versions(pypy: Optional[str]) -> Dict[str, str]:
    def first(argv: List[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unknown ({e})"
        return ((result.stdout + result.stderr).strip() or "unknown").splitlines()[0]

    import twisted

    found = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": twisted.__version__,
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "node": first(["node", "--version"]),
        "wrk": first(["wrk", "-v"]),
        "rainbowd": first(["git", "-C", CHECKOUT, "describe", "--always", "--dirty"]),
    }
    if pypy is not None:
        found["pypy"] = first(
            [
                os.path.join(pypy, "bin", "python"),
                "-c",
                "import sys, twisted; print(sys.version.replace(chr(10), ' '), "
                "'| Twisted', twisted.__version__)",
            ]
        )
    return found


def machine() -> Dict[str, object]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg": " ".join(load),
    }


def table(results: dict) -> str:
    """
    The results as text, for people.
    """
    m = results["machine"]
    s = results["settings"]
    lines = [
        f"rainbowd data-path benchmark, {results['date']}",
        f"{m['nproc']} CPUs ({m['cpu']}), {m['kernel']}, load {m['loadavg']} "
        f"at the start, {results['machineAtEnd']['loadavg']} at the end; "
        f"the run took {results['seconds']} s",
        f"wrk -t1, keep-alive, {s['rounds']} rounds x {s['seconds']:g} s per "
        f"target and connection count; medians over rounds; "
        f"pinning: {s['pinning']}",
        "",
        f"{'target':<32} {'conns':>5} {'req/s':>9} {'p50 us':>8} {'p99 us':>8}"
        f" {'p99.9 us':>9} {'vs node':>8} {'vs direct':>9}  errors",
    ]
    for row in results["throughput"]:

        def x(value):
            return f"{value:.2f}x" if value is not None else "-"

        lines.append(
            f"{row['target']:<32} {row['connections']:>5} {row['rps']:>9.0f}"
            f" {row['p50_us']:>8.0f} {row['p99_us']:>8.0f} {row['p999_us']:>9.0f}"
            f" {x(row['vsNode']):>8}"
            f" {x(row['vsDirect']):>9}  {row['errors'] or ''}"
        )
    lines += ["", "added p50 latency over direct, 1 connection:"]
    for row in results["throughput"]:
        if row["connections"] == 1 and row["target"] != DIRECT:
            lines.append(f"  {row['target']:<32} {row['addedP50_us']:>+8.0f} us")
    memory = results.get("memory")
    if memory:
        lines += [
            "",
            f"memory: {memory['mib']} MiB download through {memory['target']} "
            f"to a client reading {memory['rateMiBs']:g} MiB/s "
            f"({memory['seconds']:.1f} s):",
            f"  RSS {memory['rssBeforeMiB']:.1f} MiB before, "
            f"{memory['rssPeakMiB']:.1f} MiB peak (+{memory['growthMiB']:.1f} MiB), "
            f"{memory['rssAfterMiB']:.1f} MiB 1 s after",
        ]
    sse = results.get("sse")
    if sse:
        lines += [
            "",
            f"server-sent events, request sent to first event, median of "
            f"{len(sse[0]['tries'])}:",
        ]
        for row in sse:
            lines.append(
                f"  {row['target']:<32} {row['medianMs']:>8.2f} ms "
                f"(min {row['minMs']:.2f}, max {row['maxMs']:.2f})"
            )
    lines += ["", "versions:"]
    lines += [f"  {name:<9} {value}" for name, value in results["versions"].items()]
    for note in results["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# Main


def parseArguments(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark rainbowd's proxy (this checkout's) against the backend "
            "directly, nginx, haproxy and node-http-proxy; see 'Benchmarks' "
            "in docs/benchmarks.rst."
        )
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of about a minute: 1 round of 2 s, "
        "short warm-up, fewer SSE tries",
    )
    parser.add_argument("--rounds", type=int, help="rounds of every target (default 3)")
    parser.add_argument(
        "--seconds", type=int, help="length of each wrk run, whole seconds (default 5)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="seconds of wrk on each target before the rounds (default 3)",
    )
    parser.add_argument(
        "--connections",
        default="1,32",
        help="connection counts, comma-separated (default 1,32)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON here"
    )
    parser.add_argument(
        "--pypy-venv",
        metavar="DIR",
        help="a PyPy venv with rainbowd's dependencies (default: made "
        f"once in {DEFAULT_PYPY_VENV})",
    )
    parser.add_argument(
        "--skip-pypy", action="store_true", help="leave rainbowd on PyPy out"
    )
    parser.add_argument(
        "--node-no-agent",
        action="store_true",
        help="add node-http-proxy without a keep-alive agent, as "
        "rainbowd.js ran it (a new backend connection per request)",
    )
    parser.add_argument(
        "--download-mib",
        type=int,
        default=300,
        help="size of the memory scenario's download (default 300)",
    )
    parser.add_argument(
        "--download-rate",
        type=float,
        default=30.0,
        help="the slow client's MiB/s (default 30)",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=17200,
        help="the benchmark listens on this port and the 19 after it "
        "(default 17200)",
    )
    parser.add_argument(
        "--backend-ports",
        default="32000-32767",
        help="rainbowd's backendPorts (default 32000-32767)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the clients (wrk, this script) on the last CPU and "
        "every server on the others (default: on, with 2 CPUs "
        "or more)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs and logs)"
    )
    args = parser.parse_args(argv)
    quick = {"rounds": 1, "seconds": 2, "warmup": 1}
    full = {"rounds": 3, "seconds": 5, "warmup": 3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sseTries = 3 if args.quick else 7
    if args.pin is None:
        args.pin = len(os.sched_getaffinity(0)) >= 2
    try:
        args.connectionCounts = [int(c) for c in args.connections.split(",")]
    except ValueError:
        parser.error(f"--connections {args.connections!r} must be numbers, like 1,32")
    if args.rounds < 1 or args.seconds < 1 or args.warmup < 0:
        parser.error("--rounds and --seconds must be at least 1, --warmup at least 0")
    return args


class Ports:
    """
    The benchmark's own listening ports: C{count} from C{base} on, handed
    out in order.
    """

    def __init__(self, base: int, count: int = 20) -> None:
        busy = [p for p in range(base, base + count) if not portIsFree(p)]
        if busy:
            raise BenchError(
                f"ports {busy} are in use; pass --port-base with {count} free "
                f"ports from it on"
            )
        self._ports = iter(range(base, base + count))

    def next(self) -> int:
        return next(self._ports)


def startProxies(
    processes: Processes, workDir: str, ports: Ports, backend: int, noAgent: bool
) -> List[Target]:
    """
    nginx, haproxy and node-http-proxy in front of port C{backend}.
    """
    targets = []
    listen = ports.next()
    proxyDir = os.path.join(workDir, "nginx-proxy")
    os.makedirs(proxyDir)
    config = os.path.join(proxyDir, "nginx.conf")
    with open(config, "w") as f:
        f.write(proxyNginxConfig(listen, backend))
    processes.start(
        "nginx-proxy",
        [
            "nginx",
            "-p",
            proxyDir + "/",
            "-e",
            os.path.join(proxyDir, "error.log"),
            "-c",
            config,
            "-g",
            f"pid {proxyDir}/nginx.pid;",
        ],
    )
    targets.append(Target("nginx", listen))
    listen = ports.next()
    config = os.path.join(workDir, "haproxy.cfg")
    with open(config, "w") as f:
        f.write(haproxyConfig(listen, backend))
    processes.start("haproxy", ["haproxy", "-db", "-f", config])
    targets.append(Target("haproxy", listen))
    modes = [(NODE, "keepalive")]
    if noAgent:
        modes.append((f"{NODE}-noagent", "noagent"))
    for name, mode in modes:
        listen = ports.next()
        processes.start(name, ["node", NODE_PROXY, str(listen), str(backend), mode])
        targets.append(Target(name, listen))
    return targets


def run(
    args: argparse.Namespace, processes: Processes, workDir: str, pypy: Optional[str]
) -> dict:
    """
    Start everything, check every target answers right, and run the
    scenarios; the results, JSON-able.
    """
    started = time.monotonic()
    ports = Ports(args.port_base)
    notes: List[str] = []
    with open(os.path.join(workDir, "big.bin"), "wb") as f:
        f.truncate(args.download_mib * MiB)
    template = os.path.join(workDir, "backend-nginx.conf.in")
    with open(template, "w") as f:
        f.write(backendNginxConfig(workDir))
    nginxRun = nginxRunLine(workDir, template)

    def rainbowd(name, twistd, run, extraArgs=()):
        port = ports.next()
        ports.next()  # its control port
        daemon = Rainbowd(
            name, twistd, workDir, port, run, args.backend_ports, extraArgs
        )
        daemon.start(processes)
        return daemon

    cpython = cpythonTwistd()
    mainName = f"rainbowd-{platform.python_implementation().lower()}"
    main = rainbowd(mainName, cpython, nginxRun)
    daemons = [main]
    onPyPy = None
    if pypy is not None:
        onPyPy = rainbowd("rainbowd-pypy", [os.path.join(pypy, "bin", "twistd")], nginxRun)
        daemons.append(onPyPy)
    accessLog = rainbowd(
        f"{mainName}-accesslog",
        cpython,
        nginxRun,
        ["--access-log", os.path.join(workDir, "access.log")],
    )
    sseDaemon = rainbowd(
        f"{mainName}-sse", cpython, f"exec {sys.executable} {SSE_APP} $1 \"$2\""
    )

    direct = main.waitActive()["port"]
    print(f"{main.name}'s backend nginx is on port {direct}", flush=True)
    proxies = startProxies(processes, workDir, ports, direct, args.node_no_agent)
    try:
        accessLog.waitActive()
        daemons.append(accessLog)
    except BenchError as e:
        notes.append(f"rainbowd with --access-log did not start: {e}")
    generations = {daemon.name: daemon.waitActive()["generation"] for daemon in daemons}
    sseBackend = sseDaemon.waitActive()["port"]

    targets = [Target(DIRECT, direct)]
    targets += [Target(d.name, d.port, d.process.pid) for d in daemons]
    targets += proxies
    for target in targets:
        _waitUntil(
            lambda: httpGet(target.port)[0] != 0,
            f"{target.name} to answer on port {target.port}",
            30,
            processes=processes,
            name=target.name,
        )
        checkAnswers(target.name, target.port)
    print("every target answers 200 with the backend's body", flush=True)

    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "machine": machine(),
        "versions": versions(pypy),
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "connections": args.connectionCounts,
            "pinning": args.pinning,
            "body": BODY,
        },
        "notes": notes,
    }
    if onPyPy is not None:
        results["versions"]["pypy gc"] = collectorSetting(onPyPy)
    print(f"throughput: {len(targets)} targets, {args.rounds} rounds", flush=True)
    results["throughput"] = throughput(
        targets, args.connectionCounts, args.rounds, args.seconds, args.warmup
    )
    for daemon in daemons:
        if daemon.waitActive(5)["generation"] != generations[daemon.name]:
            notes.append(
                f"{daemon.name}'s app was replaced during the run (did it "
                f"crash?); see its log"
            )
    print(
        f"memory: {args.download_mib} MiB at {args.download_rate:g} MiB/s "
        f"through {main.name} ...",
        flush=True,
    )
    results["memory"] = memoryScenario(
        Target(main.name, main.port, main.process.pid),
        args.download_mib,
        args.download_rate,
    )
    print("server-sent events ...", flush=True)
    results["sse"] = sseScenario(
        [Target(DIRECT, sseBackend), Target(main.name, sseDaemon.port)],
        args.sseTries,
    )
    results["machineAtEnd"] = machine()
    results["seconds"] = round(time.monotonic() - started)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    args = parseArguments(argv)
    missing = findMissing(args)
    if missing:
        print("The benchmark needs:", file=sys.stderr)
        for line in missing:
            print(f"  {line}", file=sys.stderr)
        return 2
    pypy = pypyProblem = None
    if not args.skip_pypy:
        try:
            pypy = pypyVenv(args)
        except BenchError as e:
            pypyProblem = (
                f"RAINBOWD ON PYPY IS LEFT OUT: {e}\n"
                f"(pass --skip-pypy to leave it out on purpose)"
            )
            print(f"\n{pypyProblem}\n", file=sys.stderr, flush=True)

    def terminated(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    workDir = tempfile.mkdtemp(prefix="rainbowd-bench-")
    # nginx's workers run as nobody when it runs as root.
    os.chmod(workDir, 0o755)
    serverCPUs = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            print("--pin needs at least 2 CPUs", file=sys.stderr)
            return 2
        # wrk inherits this; the servers get the other CPUs.
        os.sched_setaffinity(0, cpus[-1:])
        serverCPUs = ",".join(str(cpu) for cpu in cpus[:-1])
        args.pinning = f"clients on CPU {cpus[-1]}, servers on CPU {serverCPUs}"
    else:
        args.pinning = "none"
    processes = Processes(workDir, serverCPUs)
    keep = args.keep
    status = 0
    try:
        results = run(args, processes, workDir, pypy)
    except BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        keep, status = True, 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        keep, status = True, 130
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        complaints = processes.stopAll()
        for complaint in complaints:
            print(f"cleanup: {complaint}", file=sys.stderr)
        if keep:
            print(f"configs and logs are in {workDir}", file=sys.stderr)
        else:
            shutil.rmtree(workDir, ignore_errors=True)
    if status:
        return status
    results["notes"] += complaints
    if args.skip_pypy:
        results["notes"].append("rainbowd on PyPy is left out (--skip-pypy)")
    elif pypyProblem:
        results["notes"].append(pypyProblem.splitlines()[0])
    text = table(results)
    print()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwritten to {args.json}")
    if pypyProblem:
        print(f"\n{pypyProblem}", file=sys.stderr)
        return 3
    errors = sum(row["errors"] for row in results["throughput"])
    if errors:
        print(
            f"\n{errors} errors during timing (see the errors column): "
            f"those figures are not to be trusted",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
