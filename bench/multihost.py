"""
rainbowd as one member of a pool, on a simulated network: three hosts
behind HAProxy, each a Linux network namespace running a real rainbowd with
the test app, HAProxy in a namespace of its own with the configuration of
C{examples/multihost/haproxy.cfg}, and a steady load from a client
namespace.  Five scenarios, under that load:

  1. rolling: a rolling redeploy of the 3 hosts with
     C{examples/multihost/rolling-deploy.sh} (C{rainbowctl --control});
  2. stop-delay: SIGTERM to one host's rainbowd, with C{stopDelay} sized
     from HAProxy's C{inter} x C{fall} + 1 s, then starting it again;
  3. no-stop-delay: the same with C{stopDelay} 0, to show what it buys;
  4. host-dies: C{kill -9} of one host's rainbowd and app; errors must
     stay within the requests in flight there;
  5. failed-deploy: a deploy that fails on host 2: the script stops there
     and exits non-zero, hosts 1 and 3 keep serving.

Scenarios 1, 2 and 5 must see no non-2xx answer and no error.

Usage (as root, since it makes network namespaces)::

    python3 bench/multihost.py                  # all five
    python3 bench/multihost.py rolling host-dies

It runs itself inside C{unshare --pid --fork --mount-proc}, so that every
process it starts ends with it; the namespaces it makes (all named
C{rbmh-*}, on 10.203.0.0/24) are removed on the way out, Ctrl-C included, and
any left by an earlier run are removed first.  Where network namespaces are
not allowed, it says it was skipped and exits 0.
"""

import argparse
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ROOT, TWISTD, Load, appProcesses, percentile, waitFor  # noqa: E402

PREFIX = "rbmh-"
SUBNET = "10.203.0"
SWITCH = PREFIX + "sw"
LB = (PREFIX + "lb", f"{SUBNET}.2")
CLIENT = (PREFIX + "cl", f"{SUBNET}.3")
HOSTS = [(f"{PREFIX}h{i}", f"{SUBNET}.1{i}") for i in (1, 2, 3)]
EXAMPLES = os.path.join(ROOT, "examples", "multihost")
HEALTH_PATH = "/_rainbowd/up"
RAINBOWCTL = f"{sys.executable} -m rainbowd.control.ctl"
INSIDE = "RBMH_INSIDE_PID_NAMESPACE"
CLONE_NEWNET = 0x40000000


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def ourNamespaces() -> List[str]:
    listed = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def removeNamespaces() -> None:
    """
    Remove every namespace named with our prefix, and what runs in it.
    """
    for name in ourNamespaces():
        for pid in ip("netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("netns", "del", name, check=False)


def netnsRefused() -> Optional[str]:
    """
    Why network namespaces cannot be made here, or L{None} if they can.
    """
    if shutil.which("ip") is None:
        return "there is no ip command"
    probe = PREFIX + "probe"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"ip netns add is not allowed here ({done.stderr.strip()})"
    ip("netns", "del", probe, check=False)
    return None


def buildNetwork() -> None:
    """
    A bridge in a namespace of its own, and each node's namespace plugged
    into it by a veth pair; nothing is added to the caller's namespace.
    """
    ip("netns", "add", SWITCH)
    ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
    ip("-n", SWITCH, "link", "set", "br0", "up")
    for name, address in [LB, CLIENT] + HOSTS:
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", SWITCH, "link", "add", name, "type", "veth", "peer", "name", "eth0",
           "netns", name)
        ip("-n", SWITCH, "link", "set", name, "master", "br0", "up")
        ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")


def enter(namespace: str) -> None:
    """
    Move this process (its threads to come, and its children) into the
    network namespace C{namespace}.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {namespace}")
    finally:
        os.close(fd)


def checkTimes(config: str) -> Dict[str, float]:
    """
    The C{inter} (in seconds) and C{fall} of the C{default-server} line of
    HAProxy config C{config}.
    """
    line = re.search(r"^\s*default-server\b(.*)$", config, re.M).group(1)
    inter = re.search(r"\binter (\d+)(ms|s)\b", line)
    fall = re.search(r"\bfall (\d+)\b", line)
    seconds = int(inter.group(1)) / (1000.0 if inter.group(2) == "ms" else 1.0)
    return {"inter": seconds, "fall": int(fall.group(1))}


def haproxyConfig(template: str, socketPath: str) -> str:
    """
    The example config with this network's addresses and a socket path of
    our own: the bind address, the runtime API socket, and one server line
    per host, in order.
    """
    config, count = re.subn(r"(?m)^(\s*bind )\S+", rf"\g<1>{LB[1]}:80", template)
    config, sockets = re.subn(
        r"(?m)^(\s*stats socket )\S+", rf"\g<1>{socketPath}", config
    )
    servers = iter(HOSTS)

    def server(match: "re.Match[str]") -> str:
        return f"{match.group(1)}{next(servers)[1]}:{match.group(2)}"

    config, servers_ = re.subn(r"(?m)^(\s*server \S+ )[\d.]+:(\d+)", server, config)
    if (count, sockets, servers_) != (1, 1, len(HOSTS)):
        raise RuntimeError(
            f"{EXAMPLES}/haproxy.cfg no longer has one bind line, one stats "
            f"socket and {len(HOSTS)} server lines: update bench/multihost.py"
        )
    return config


class HAProxy:
    """
    HAProxy in its namespace, and its runtime API.
    """

    def __init__(self, directory: str) -> None:
        with open(os.path.join(EXAMPLES, "haproxy.cfg")) as f:
            template = f.read()
        self.times = checkTimes(template)
        self.socket = os.path.join(directory, "haproxy.sock")
        self.path = os.path.join(directory, "haproxy.cfg")
        with open(self.path, "w") as f:
            f.write(haproxyConfig(template, self.socket))
        self.log = open(os.path.join(directory, "haproxy.log"), "w")
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        subprocess.run(["haproxy", "-c", "-q", "-f", self.path], check=True)
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", LB[0], "haproxy", "-db", "-f", self.path],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        waitFor(lambda: os.path.exists(self.socket), "HAProxy's runtime API socket")

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.socket)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return b"".join(chunks).decode()
                chunks.append(chunk)

    def states(self) -> Dict[str, str]:
        """
        Each server's status (UP, DOWN, ...), as HAProxy sees it.
        """
        lines = self.ask("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "app" and row.get("svname", "").startswith("web"):
                found[row["svname"]] = row["status"].split(" ")[0]
        return found

    def waitFor(self, server: str, status: str, deadline: float = 60.0) -> None:
        waitFor(lambda: self.states().get(server) == status,
                f"HAProxy to see {server} {status}", deadline)


class Host:
    """
    One host: its namespace, address and rainbowd.
    """

    def __init__(self, index: int, directory: str, stopDelay: float) -> None:
        self.namespace, self.address = HOSTS[index]
        self.server = f"web{index + 1}"
        self.directory = os.path.join(directory, self.server)
        os.makedirs(self.directory)
        self.stateDir = os.path.join(self.directory, ".rainbowd")
        self.token = os.path.join(directory, "token")
        self.config = {
            "run": f"{sys.executable} -m rainbowd.test.app $1 $2",
            "healthCheckPath": "/health",
            "port": "tcp:7000:interface=0.0.0.0",
            "controlPort": f"tcp:7001:interface={self.address}",
            "controlTokenFile": self.token,
            "lbHealthPath": HEALTH_PATH,
            "stopDelay": int(stopDelay * 1000),
            "drainTimeout": 10000,
            "backendPorts": "20000-20999",
            "env": {"PYTHONPATH": ROOT, "APP_VERSION": "v1"},
        }
        self.writeConfig()
        self.logPath = os.path.join(self.directory, "rainbowd.log")
        self.process: Optional[subprocess.Popen] = None

    def writeConfig(self, **changes) -> None:
        self.config.update(changes)
        with open(os.path.join(self.directory, "rainbow.conf.json"), "w") as f:
            json.dump(self.config, f, indent=2)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *TWISTD, "-n", "--logfile",
             self.logPath, "--pidfile", "", "rainbowd"],
            cwd=self.directory,
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def control(self, path: str) -> dict:
        with open(self.token) as f:
            token = f.read().strip()
        connection = http.client.HTTPConnection(self.address, 7001, timeout=10)
        try:
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def active(self) -> Optional[int]:
        return self.control("/status")["active"]

    def serving(self) -> None:
        def up() -> bool:
            try:
                connection = http.client.HTTPConnection(self.address, 7000, timeout=5)
                connection.request("GET", HEALTH_PATH)
                return connection.getresponse().status == 200
            except (OSError, http.client.HTTPException):
                return False

        waitFor(up, f"{self.server} to serve; log:\n{self.logTail()}", 90)

    def logTail(self, lines: int = 20) -> str:
        try:
            with open(self.logPath) as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, deadline: float = 60.0) -> Optional[int]:
        """
        SIGTERM rainbowd and wait for it: its exit code.
        """
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(deadline)

    def kill(self) -> None:
        """
        C{kill -9} of rainbowd and of its app's processes.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid, _ in appProcesses(self.stateDir):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


class Pool:
    """
    The three hosts, HAProxy, and the client's view of them.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.haproxy = HAProxy(directory)
        times = self.haproxy.times
        #: sized as docs/multihost.rst says: inter x fall + 1 s
        self.stopDelay = times["inter"] * times["fall"] + 1.0
        with open(os.path.join(directory, "token"), "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("multihost-bench-token\n")
        self.hosts = [Host(i, directory, self.stopDelay) for i in range(len(HOSTS))]

    def start(self) -> None:
        for host in self.hosts:
            host.start()
        for host in self.hosts:
            host.serving()
        self.haproxy.start()
        self.allUp()

    def allUp(self) -> None:
        for host in self.hosts:
            self.haproxy.waitFor(host.server, "UP")

    def load(self) -> Load:
        load = Load(80, connections=6, rate=150.0, host=LB[1])
        load.start()
        return load

    def rollingDeploy(self, hosts: List[Host]) -> subprocess.CompletedProcess:
        script = os.path.join(EXAMPLES, "rolling-deploy.sh")
        return subprocess.run(
            ["sh", script, *[host.address for host in hosts]],
            env=dict(os.environ, PYTHONPATH=ROOT, RAINBOWCTL=RAINBOWCTL,
                     TOKEN_FILE=os.path.join(self.directory, "token")),
            capture_output=True, text=True, timeout=600,
        )

    def restart(self, host: Host, **changes) -> None:
        """
        Restart C{host}'s rainbowd (outside any measurement), with config
        C{changes}.
        """
        host.stop()
        host.writeConfig(**changes)
        host.start()
        host.serving()
        self.haproxy.waitFor(host.server, "UP")


def settle(seconds: float) -> None:
    time.sleep(seconds)


def summary(results: List[tuple]) -> Dict[str, object]:
    latencies = [end - start for start, end, status, version, error in results]
    p99 = percentile(latencies, 99)
    return {
        "requests": len(results),
        "non2xx": sum(1 for r in results if r[2] is not None and not 200 <= r[2] < 300),
        "errors": sum(1 for r in results if r[2] is None),
        "p99": None if p99 is None else p99 * 1000,
        "versions": sorted({r[3] for r in results if r[3]}),
        "statuses": sorted({r[2] for r in results if r[2] is not None}),
        "failures": sorted({r[4] for r in results if r[4]})[:3],
    }


SCENARIOS: Dict[str, Callable[[Pool], str]] = {}


def scenario(f):
    SCENARIOS[f.__name__.replace("_", "-")] = f
    return f


def check(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@scenario
def rolling(pool: Pool) -> str:
    before = [host.active() for host in pool.hosts]
    version = f"v{before[0] + 1}"
    for host in pool.hosts:
        host.writeConfig(env=dict(host.config["env"], APP_VERSION=version))
    load = pool.load()
    settle(2)
    done = pool.rollingDeploy(pool.hosts)
    settle(2)
    pool.results = load.stop()
    check(done.returncode == 0, f"the rolling deploy failed:\n{done.stdout}{done.stderr}")
    after = [host.active() for host in pool.hosts]
    check(after == [g + 1 for g in before], f"generations {before} -> {after}")
    check("warning: the control token crosses the network in clear text" in done.stderr,
          f"no clear-text warning: {done.stderr}")
    return f"3 hosts redeployed, generations {before} -> {after}, script exit 0"


def stopAndStart(pool: Pool, host: Host) -> str:
    load = pool.load()
    settle(2)
    stopped = time.monotonic()
    code = host.stop()
    took = time.monotonic() - stopped
    host.start()
    host.serving()
    pool.haproxy.waitFor(host.server, "UP")
    settle(2)
    pool.results = load.stop()
    check(code == 0, f"rainbowd exited with {code}")
    return f"{host.server} stopped in {took:.1f} s (exit 0) and rejoined"


@scenario
def stop_delay(pool: Pool) -> str:
    host = pool.hosts[1]
    check(host.config["stopDelay"] > 0, "stopDelay is not set")
    return stopAndStart(pool, host) + f"; stopDelay {pool.stopDelay:g} s"


@scenario
def no_stop_delay(pool: Pool) -> str:
    host = pool.hosts[1]
    pool.restart(host, stopDelay=0)
    try:
        return stopAndStart(pool, host) + "; stopDelay 0"
    finally:
        pool.restart(host, stopDelay=int(pool.stopDelay * 1000))


@scenario
def host_dies(pool: Pool) -> str:
    host = pool.hosts[2]
    load = pool.load()
    settle(2)
    host.kill()
    died = time.monotonic()
    pool.haproxy.waitFor(host.server, "DOWN")
    noticed = time.monotonic() - died
    settle(1)
    host.start()
    host.serving()
    pool.haproxy.waitFor(host.server, "UP")
    settle(1)
    pool.results = load.stop()
    lost = summary(pool.results)
    bound = load.connections
    check(lost["non2xx"] + lost["errors"] <= bound,
          f"{lost['non2xx']} non-2xx and {lost['errors']} errors: more than the "
          f"{bound} requests that can be in flight")
    return (f"{host.server} killed; HAProxy saw it DOWN {noticed:.1f} s later; at most "
            f"{bound} requests in flight, all hosts")


@scenario
def failed_deploy(pool: Pool) -> str:
    before = [host.active() for host in pool.hosts]
    version = f"v{max(before) + 1}"
    for host in pool.hosts:
        host.writeConfig(env=dict(host.config["env"], APP_VERSION=version))
    broken = pool.hosts[1]
    broken.writeConfig(env=dict(broken.config["env"], APP_FAIL_AT_START="1"))
    load = pool.load()
    settle(2)
    try:
        done = pool.rollingDeploy(pool.hosts)
        settle(2)
    finally:
        pool.results = load.stop()
        env = dict(broken.config["env"])
        env.pop("APP_FAIL_AT_START", None)
        broken.writeConfig(env=env)
    after = [host.active() for host in pool.hosts]
    check(done.returncode != 0, f"the script exited 0:\n{done.stdout}")
    check("rolling deploy STOPPED" in done.stdout, done.stdout)
    check(after == [before[0] + 1, before[1], before[2]],
          f"generations {before} -> {after}")
    states = pool.haproxy.states()
    check(all(states[host.server] == "UP" for host in pool.hosts), f"HAProxy: {states}")
    return (f"host 2's deploy failed, script exit {done.returncode}; generations "
            f"{before} -> {after}; all 3 still UP")


#: Scenarios that must see no non-2xx answer and no error.
CLEAN = {"rolling", "stop-delay", "failed-deploy"}


def runAll(names: List[str], keep: bool) -> int:
    refused = netnsRefused()
    if refused is not None:
        print(f"multihost: SKIPPED: {refused}; it needs root and network namespaces.")
        return 0
    removeNamespaces()
    directory = tempfile.mkdtemp(prefix=PREFIX)
    rows = []
    ok = True
    try:
        buildNetwork()
        enter(CLIENT[0])
        pool = Pool(directory)
        pool.start()
        for name in names:
            pool.allUp()
            print(f"== {name}", flush=True)
            pool.results = []
            try:
                note = SCENARIOS[name](pool)
                passed = True
            except Exception as e:
                note, passed = f"FAILED: {type(e).__name__}: {e}", False
            counts = summary(pool.results)
            if name in CLEAN and (counts["non2xx"] or counts["errors"]):
                passed = False
                note += " -- FAILED: non-2xx or errors"
            ok = ok and passed
            rows.append((name, counts, note, passed))
            print(f"   {'ok' if passed else 'FAILED'}: {note}", flush=True)
            print(f"   {json.dumps(counts)}", flush=True)
    finally:
        print(table(rows))
        removeNamespaces()
        if keep or not ok:
            print(f"logs kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


def table(rows) -> str:
    header = ["scenario", "requests", "non-2xx", "errors", "p99 ms", "result"]
    lines = [header] + [
        [name, str(c["requests"]), str(c["non2xx"]), str(c["errors"]),
         "-" if c["p99"] is None else f"{c['p99']:.0f}", "ok" if passed else "FAILED"]
        for name, c, note, passed in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), rule]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines[1:]]
    return "\n".join(out + [rule])


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"which to run (default: all): {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"no such scenario: {', '.join(unknown)}")
    if os.environ.get(INSIDE) != "1":
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            print("multihost: SKIPPED: it needs root (network namespaces) and unshare.")
            return 0
        os.environ[INSIDE] = "1"
        os.execvp("unshare", ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                              sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    # PID 1 of its namespace: signals need handlers to be seen at all.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if shutil.which("haproxy") is None:
        print("multihost: SKIPPED: HAProxy is not installed (apt-get install haproxy).")
        return 0
    try:
        return runAll(arguments.scenarios or list(SCENARIOS), arguments.keep)
    except KeyboardInterrupt as e:
        print(f"multihost: interrupted ({e}); namespaces removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
