#!/usr/bin/env python3
"""
Soak rainbowd: for each app server, run a real C{twistd rainbowd} on it under
steady keep-alive HTTP load, redeploy a new version of the app N times while
the load runs, and report what the clients saw.

    python3 bench/soak.py                     the whole matrix, 5 redeploys each
    python3 bench/soak.py --readme            the same, printed as the table in docs/benchmarks.rst
    python3 bench/soak.py -s uvicorn -n 2     one server, 2 redeploys
    python3 bench/soak.py --plots docs/       also a timeline PNG per server
    python3 bench/soak.py --full-speed        as fast as the clients can go
    python3 bench/soak.py -s waitress -u 3    3 upgrades of rainbowd itself too,
                                              interleaved with the redeploys

It exits non-zero if any request failed (non-2xx or a connection error),
any request that began after a redeploy answered was served by an older
version, any redeploy failed, rainbowd did not exit 0, or any app process
or listening port was left after rainbowd stopped.

With --upgrades N, rainbowd itself is upgraded N times (C{POST /upgrade}),
in turn with the redeploys; the run also fails if an upgrade did not answer
200, if the app's processes changed across it or rainbowd's pid did not,
or if the old rainbowd did not exit 0 afterwards.

With --full-speed, the recording clients send requests back to back, with
no pause, and wrk (when installed) adds 16 more connections at full speed;
the run also fails if any request took more than 2 s (SLOW), whether a
recording client saw it or wrk timed it out.  A request that sits in an app
server's accept queue is seen that way even if wrk does not count it.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Load, Ports, Rainbowd, StatusPoller, percentile, reap, waitFor  # noqa: E402

#: The app servers and the "run" line for each, exactly as in README.rst
#: and docs/apps.rst.
SERVERS = {
    "gunicorn-sync": (
        'gunicorn wsgiapp:app --bind 127.0.0.1:$1 --pid "$2" --no-control-socket '
        "--workers 2"
    ),
    "gunicorn-gthread": (
        'gunicorn wsgiapp:app --bind 127.0.0.1:$1 --pid "$2" --no-control-socket '
        "--workers 2 --worker-class gthread --threads 4"
    ),
    "uvicorn": "echo $$ > \"$2\"; exec uvicorn asgiapp:app --port $1",
    "waitress": "echo $$ > \"$2\"; exec waitress-serve --listen=127.0.0.1:$1 wsgiapp:app",
    "hypercorn": "hypercorn asgiapp:app --bind 127.0.0.1:$1 --pid \"$2\"",
    "twistd-web": (
        "twistd -n --pidfile \"$2\" web --listen tcp:$1:interface=127.0.0.1 "
        "--wsgi wsgiapp.app"
    ),
    "puma": (
        "puma --bind tcp://127.0.0.1:$1 --pidfile \"$2\" --environment production "
        "--threads 5:5 config.ru"
    ),
    "unicorn": "echo $$ > \"$2\"; exec unicorn --listen 127.0.0.1:$1 --env production config.ru",
}

#: Lines the docs advise against, soaked to show what rainbowd does for
#: them: puma 5.6 with fewer threads at least than at most.  Its thread pool
#: loses a wakeup while it may still grow (docs/apps.rst), so at full speed
#: a request can wait in its accept queue for a second or more, and on a
#: busy machine past SLOW: that is reported for these lines, not failed.
#: An error, a non-2xx response or a stale one still fails them.
STALLING = ("puma-4:8", "puma-defaults")
SERVERS.update({
    "puma-4:8": (
        "puma --bind tcp://127.0.0.1:$1 --pidfile \"$2\" --environment production "
        "--threads 4:8 config.ru"
    ),
    "puma-defaults": (
        "puma --bind tcp://127.0.0.1:$1 --pidfile \"$2\" --environment production config.ru"
    ),
})

#: A request that took longer than this, in seconds, fails a full-speed run.
SLOW = 2.0

#: wrk's connections in a full-speed run, on top of the recording clients.
WRK_CONNECTIONS = 16

WRK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_report.lua")

#: Pause between one redeploy's old generation stopping and the next
#: redeploy, and before the first and after the last, in seconds.
GAP = 1.0


class Wrk:
    """
    wrk at full speed on C{port} until L{stop}, counting the requests it
    timed out after L{SLOW} seconds.
    """

    def __init__(self, port: int, connections: int) -> None:
        self.argv = ["wrk", "-t1", f"-c{connections}", "-d3600s", "--timeout",
                     f"{SLOW:g}s", "-s", WRK_SCRIPT, f"http://127.0.0.1:{port}/"]
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)

    def stop(self) -> dict:
        """
        Stop wrk (on SIGINT it prints its summary) and return its report.
        """
        self.process.send_signal(signal.SIGINT)
        try:
            output, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        for line in output.splitlines():
            if line.startswith("WRK-RESULT "):
                return json.loads(line[len("WRK-RESULT "):])
        raise RuntimeError(f"{' '.join(self.argv)} printed no result:\n{output}")


#: How long an old rainbowd may take to exit after an upgrade answered, in
#: seconds: its in-flight requests are short ones.
OLD_EXIT = 60.0


def plan(redeploys: int, upgrades: int) -> List[str]:
    """
    The order of the soak's actions: C{"redeploy"} and C{"upgrade"} in
    turn, a redeploy first, the rest of the more numerous kind at the end.
    """
    order = []
    for n in range(max(redeploys, upgrades)):
        if n < redeploys:
            order.append("redeploy")
        if n < upgrades:
            order.append("upgrade")
    return order


def appPids(status: dict) -> Dict[int, int]:
    """
    Generation -> the pid of its app process, from C{/status}.
    """
    return {b["generation"]: b["pid"] for b in status["backends"]}


def upgrade(daemon: Rainbowd, result: dict) -> None:
    """
    Upgrade C{daemon}'s rainbowd, check that the app's processes stayed and
    rainbowd's changed, wait for the old one to exit, and record it all in
    C{result}.
    """
    before = daemon.status()
    oldPid = daemon.pid
    posted = time.monotonic()
    code, answer = daemon.upgrade()
    answered = time.monotonic()
    record = {"ok": code == 200, "posted": posted, "answered": answered,
              "oldPid": oldPid, "pid": answer.get("pid"), "appKept": None,
              "oldExited": None, "oldCode": None}
    result["upgrades"].append(record)
    if code != 200:
        result["problems"].append(f"upgrade answered {code}: {answer}")
        return
    problems = []
    if answer.get("pid") == oldPid or answer.get("previousPid") != oldPid:
        problems.append(f"rainbowd was pid {oldPid}, POST /upgrade answered {answer}")
    after = daemon.status()
    described = after.get("rainbowd", {})
    if described.get("pid") != answer.get("pid") or described.get("upgradedFrom") != oldPid:
        problems.append(f"/status says rainbowd is {described} after an upgrade from "
                        f"{oldPid} to {answer.get('pid')}")
    kept = appPids(before) == appPids(after)
    record["appKept"] = kept
    if not kept:
        problems.append(f"the app's processes changed across the upgrade: "
                        f"{appPids(before)} before, {appPids(after)} after")
    old = daemon.retired[-1]
    record["oldCode"] = daemon.exits[oldPid] = reap(old, OLD_EXIT)
    record["oldExited"] = time.monotonic()
    if record["oldCode"] != 0:
        problems.append(f"the old rainbowd (pid {oldPid}) exited with {record['oldCode']} "
                        "after the upgrade")
    record["ok"] = not problems
    result["problems"].extend(problems)


def soak(name: str, run: str, redeploys: int, ports: Ports, backendPorts: str,
         connections: int, rate: Optional[float], fullSpeed: bool = False,
         config: Optional[dict] = None, upgrades: int = 0, retry: bool = True) -> dict:
    """
    Soak one server; return what happened.
    """
    # Each redeploy waits for the old version to stop: no standby.
    settings = dict(drainTimeout=30000, killTimeout=10000, startTimeout=60000,
                    rollbackWindow=0)
    settings.update(config or {})
    daemon = Rainbowd(name, ports, backendPorts, run=run, **settings)
    result = {"server": name, "run": run, "redeploys": [], "problems": [], "notes": [],
              "fullSpeed": fullSpeed, "upgrades": [], "upgradesAsked": upgrades,
              "rainbowdPids": []}
    daemon.start()
    poller = StatusPoller(daemon)
    # An old rainbowd closes its idle keep-alive connections once the new
    # one serves: a request sent on one as it closes is sent again, as
    # browsers do, and counted.
    load = Load(daemon.port, connections=connections, rate=None if fullSpeed else rate,
                retryReused=bool(upgrades) and retry)
    wrk = Wrk(daemon.port, WRK_CONNECTIONS) if fullSpeed and shutil.which("wrk") else None
    try:
        daemon.serving()
        poller.start()
        load.start()
        if wrk is not None:
            wrk.start()
        time.sleep(GAP * 2)
        result["rainbowdPids"].append(daemon.pid)
        n = 1
        for action in plan(redeploys, upgrades):
            if action == "upgrade":
                upgrade(daemon, result)
                result["rainbowdPids"].append(daemon.pid)
                time.sleep(GAP)
                continue
            n += 1
            version = f"v{n}"
            old = daemon.status()["active"]
            daemon.setVersion(version)
            posted = time.monotonic()
            code, answer = daemon.control("POST", "/redeploy")
            answered = time.monotonic()
            redeploy = {
                "version": n,
                "ok": code == 200,
                "posted": posted,
                "answered": answered,
                "generation": answer.get("generation"),
                "old": old,
                "seconds": answer.get("seconds"),
            }
            result["redeploys"].append(redeploy)
            if code != 200:
                result["problems"].append(f"redeploy to {version} answered {code}: {answer}")
                continue
            waitFor(lambda: old in poller.gone, f"generation {old} to stop", 60)
            time.sleep(GAP)
        time.sleep(GAP)
    except Exception as e:
        result["problems"].append(f"{type(e).__name__}: {e}")
    finally:
        if wrk is not None and wrk.process is not None:
            try:
                result["wrk"] = wrk.stop()
            except RuntimeError as e:
                result["problems"].append(str(e))
        if hasattr(load, "started"):
            result["results"] = load.stop()
            result["retried"] = load.retried
            result["loadStarted"], result["loadStopped"] = load.started, load.stopped
        poller.stop()
        for redeploy in result["redeploys"]:
            generation = redeploy["generation"]
            redeploy["launched"] = poller.launched(generation)
            redeploy["healthy"] = poller.healthy(generation)
            redeploy["switched"] = poller.activeSince.get(generation)
            redeploy["oldStopped"] = poller.gone.get(redeploy["old"])
        code = daemon.stop()
        if code != 0:
            result["problems"].append(f"rainbowd exited with {code}")
        left = daemon.leftovers()
        if left:
            result["problems"].append("left after rainbowd stopped: " + "; ".join(left))
        result["leftovers"] = len(left)
        result["directory"] = daemon.directory
        daemon.cleanUp(keep=bool(result["problems"]))
    summarize(result)
    return result


def summarize(result: dict) -> None:
    """
    Add the figures of the report to C{result}.
    """
    results = result.get("results", [])
    redeploys = [r for r in result["redeploys"] if r["ok"]]
    windows = [(r["posted"], r["oldStopped"] or r["answered"]) for r in redeploys]
    upgrades = [u for u in result["upgrades"] if u["ok"]]
    upgradeWindows = [(u["posted"], u["oldExited"] or u["answered"])
                      for u in result["upgrades"]]

    def during(start):
        if any(a <= start <= b for a, b in windows):
            return "during"
        if any(a <= start <= b for a, b in upgradeWindows):
            return "upgrading"
        return "outside"

    ok = [r for r in results if r[2] is not None and 200 <= r[2] < 300]
    result["requests"] = len(results)
    result["non2xx"] = sum(1 for r in results if r[2] is not None and not 200 <= r[2] < 300)
    result["errors"] = sum(1 for r in results if r[4] is not None)
    result["firstErrors"] = sorted({r[4] or f"HTTP {r[2]}" for r in results
                                    if r not in ok})[:5]
    stale = 0
    for start, end, status, version, error in ok:
        due = max((r["version"] for r in redeploys if r["answered"] < start), default=1)
        if version is None or not version.startswith("v") or int(version[1:]) < due:
            stale += 1
    result["stale"] = stale
    for key in ("outside", "during", "upgrading"):
        latencies = [(r[1] - r[0]) * 1000 for r in ok if during(r[0]) == key]
        result[key] = {p: percentile(latencies, q) for p, q in (("p50", 50), ("p99", 99))}
        result[key]["max"] = max(latencies) if latencies else None
    switches = [r["answered"] - r["posted"] for r in redeploys]
    healthy = [r["healthy"] - r["launched"] for r in redeploys
               if r["healthy"] is not None and r["launched"] is not None]
    result["switch"] = (percentile(switches, 50), max(switches, default=None))
    result["healthyTime"] = (percentile(healthy, 50), max(healthy, default=None))
    result["okRedeploys"] = len(redeploys)
    result["okUpgrades"] = len(upgrades)
    result["upgradeTime"] = pair([u["answered"] - u["posted"] for u in upgrades])
    result["oldExitTime"] = pair([u["oldExited"] - u["answered"] for u in upgrades])
    for name, count in (("non-2xx responses", result["non2xx"]),
                        ("connection errors", result["errors"]),
                        ("requests served by an older version", stale)):
        if count:
            result["problems"].append(f"{count} {name}: {result['firstErrors']}")
    result["slow"] = sum(1 for r in results if r[1] - r[0] > SLOW)
    result["max"] = max(((r[1] - r[0]) * 1000 for r in results), default=None)
    wrk = result.get("wrk")
    if result["fullSpeed"]:
        slow = []
        if result["slow"]:
            slow.append(f"{result['slow']} requests took over {SLOW:g} s (the longest "
                        f"{result['max'] / 1000:.1f} s)")
        if wrk is not None and wrk["errors"]["timeout"]:
            slow.append(f"wrk timed out {wrk['errors']['timeout']} requests after {SLOW:g} s")
        if result["server"] in STALLING:
            result["notes"].extend(f"{what}: puma's lost wakeup (docs/apps.rst)" for what in slow)
        else:
            result["problems"].extend(slow)
        if wrk is not None and wrk["errors"]["status"]:
            result["problems"].append(f"wrk got {wrk['errors']['status']} non-2xx responses")


def pair(values: List[float]):
    """
    The median and the maximum of C{values} (L{None}s if there are none).
    """
    return percentile(values, 50), max(values, default=None)


def ms(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def seconds(pair) -> str:
    median, worst = pair
    return "-" if median is None else f"{median:.2f} / {worst:.2f}"


COLUMNS = [
    ("server", lambda r: r["server"]),
    ("redeploys", lambda r: f"{r['okRedeploys']}/{len(r['redeploys'])}"),
    ("requests", lambda r: str(r["requests"])),
    ("non-2xx", lambda r: str(r["non2xx"])),
    ("errors", lambda r: str(r["errors"])),
    ("stale", lambda r: str(r["stale"])),
    ("steady ms", lambda r: " / ".join(ms(r["outside"][k]) for k in ("p50", "p99", "max"))),
    ("redeploying ms", lambda r: " / ".join(ms(r["during"][k]) for k in ("p50", "p99", "max"))),
    ("switch s", lambda r: seconds(r["switch"])),
    ("healthy s", lambda r: seconds(r["healthyTime"])),
    ("left", lambda r: str(r["leftovers"])),
]

#: The columns a full-speed run adds.
FULL_SPEED_COLUMNS = [
    (f"over {SLOW:g} s", lambda r: str(r["slow"])),
    ("wrk requests", lambda r: str(r["wrk"]["requests"]) if r.get("wrk") else "-"),
    (f"wrk over {SLOW:g} s", lambda r: str(r["wrk"]["errors"]["timeout"]) if r.get("wrk") else "-"),
    ("wrk max ms", lambda r: ms(r["wrk"]["max_us"] / 1000) if r.get("wrk") else "-"),
]

def appPidsCell(kept: List[Optional[bool]]) -> str:
    """
    Whether the app's processes were kept across every upgrade that got
    as far as the check (L{None}: it did not).
    """
    checked = [k for k in kept if k is not None]
    return "-" if not checked else "kept" if all(checked) else "CHANGED"


#: The columns an upgrade run adds.
UPGRADE_COLUMNS = [
    ("upgrades", lambda r: f"{r['okUpgrades']}/{r['upgradesAsked']}"),
    ("retried", lambda r: str(r.get("retried", 0))),
    ("upgrading ms", lambda r: " / ".join(ms(r["upgrading"][k]) for k in ("p50", "p99", "max"))),
    ("upgrade s", lambda r: seconds(r["upgradeTime"])),
    ("old exit s", lambda r: seconds(r["oldExitTime"])),
    ("app pids", lambda r: appPidsCell([u["appKept"] for u in r["upgrades"]])),
    ("rainbowd pids", lambda r: str(len(set(r["rainbowdPids"])))),
]

#: What each column means, for --help and docs/benchmarks.rst.
LEGEND = """\
redeploys: succeeded / asked; requests: answered or failed, all told;
non-2xx, errors: responses that were not 2xx, connection errors;
stale: requests begun after a POST /redeploy had answered, yet served by an
older version (must be 0); steady ms, redeploying ms: latency p50 / p99 / max
of the requests begun outside and during a redeploy (from POST /redeploy
until the old generation is gone); switch s: POST /redeploy until it
answered, that is until traffic moved (median / max); healthy s: the new
generation's launch until it was first seen healthy in /status (median /
max); left: app processes and listening ports left once rainbowd stopped.
With --full-speed: over 2 s: requests of the recording clients that took
longer (must be 0); wrk requests, wrk over 2 s, wrk max ms: what wrk's own
connections did (timed out after 2 s; must be 0).  For puma-4:8 and
puma-defaults, lines the docs advise against, requests over 2 s are noted,
not failed: puma's pool loses a wakeup (docs/apps.rst).
With --upgrades: upgrades: succeeded / asked; retried: requests sent again
on a new connection because the kept-alive one closed without an answer
(an idle one the old rainbowd closed; without --no-retry); upgrading ms: latency of the
requests begun during an upgrade (from POST /upgrade until the old rainbowd
exited); upgrade s: POST /upgrade until it answered, that is until the new
rainbowd had adopted the sockets and the app (median / max); old exit s:
from that answer until the old rainbowd exited 0; app pids: whether every
generation's app process was the same after each upgrade as before (must
be "kept"); rainbowd pids: how many rainbowd processes served in turn
(upgrades + 1)."""


def table(results, rst: bool) -> str:
    """
    The report as a plain text table, or a reStructuredText simple table.
    """
    columns = COLUMNS
    if any(r["fullSpeed"] for r in results):
        columns = columns + FULL_SPEED_COLUMNS
    if any(r.get("upgradesAsked") for r in results):
        columns = columns + UPGRADE_COLUMNS
    rows = [[header for header, f in columns]] + [[f(r) for header, f in columns] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not rst:
        return "\n".join(lines)
    rule = "  ".join("=" * w for w in widths)
    return "\n".join([rule, lines[0], rule] + lines[1:] + [rule])


def plot(result: dict, path: str) -> None:
    """
    A timeline of C{result}: req/s and p99 latency per 100 ms, errors, and
    each redeploy's moments.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = result["loadStarted"]
    results = result["results"]
    buckets = {}
    for start, end, status, version, error in results:
        buckets.setdefault(int((end - origin) * 10), []).append((end - start) * 1000)
    last = int((result["loadStopped"] - origin) * 10) + 1
    xs = [b / 10 for b in range(last)]
    rate = [len(buckets.get(b, ())) * 10 for b in range(last)]
    p99 = [percentile(buckets[b], 99) if b in buckets else None for b in range(last)]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=80)
    ax.plot(xs, rate, color="black", linewidth=1.0, label="req/s (per 100 ms)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("req/s")
    ax.set_ylim(bottom=0)
    latency = ax.twinx()
    latency.plot(xs, [v if v is not None else float("nan") for v in p99],
                 color="tab:red", linewidth=0.8, alpha=0.7, label="p99 ms (per 100 ms)")
    latency.set_ylabel("p99 latency, ms")
    latency.set_ylim(bottom=0)
    failures = [r[1] - origin for r in results if r[4] is not None or not 200 <= (r[2] or 0) < 300]
    if failures:
        ax.plot(failures, [0] * len(failures), "x", color="crimson", markersize=8,
                label="failed request")
    styles = [("launched", "tab:blue", "--", "launched"),
              ("healthy", "tab:green", "-", "healthy"),
              ("switched", "tab:cyan", ":", "switched"),
              ("oldStopped", "tab:orange", "-", "old stopped")]
    for key, color, style, label in styles:
        for i, redeploy in enumerate(result["redeploys"]):
            if redeploy.get(key) is not None:
                ax.axvline(redeploy[key] - origin, color=color, linestyle=style,
                           linewidth=0.9, label=label if i == 0 else None)
    lines = ax.get_legend_handles_labels()
    more = latency.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper center",
              bbox_to_anchor=(0.5, -0.18), fontsize=7, ncol=7, frameon=False)
    ax.set_title(f"rainbowd: {result['server']}, {len(result['redeploys'])} "
                 f"redeploys under load", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.system()} "
            f"{platform.release()}, {cpus} CPUs ({model}), Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at the start")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-s", "--server", action="append", choices=sorted(SERVERS),
                        help="a server to soak (repeatable); all by default")
    parser.add_argument("-n", "--redeploys", type=int, default=5)
    parser.add_argument("-u", "--upgrades", type=int, default=0,
                        help="also upgrade rainbowd itself (POST /upgrade) this many "
                             "times, in turn with the redeploys")
    parser.add_argument("--no-retry", action="store_true",
                        help="with --upgrades, count a request whose kept-alive connection "
                             "the old rainbowd closed as it was sent as an error, rather "
                             "than send it again")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--rate", type=float, default=200.0,
                        help="requests per second, all connections together")
    parser.add_argument("--full-speed", action="store_true",
                        help="the clients go as fast as they can (4 recording connections "
                             "unless --connections is given, plus wrk's 16), and any "
                             f"request over {SLOW:g} s fails the run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a rainbowd config key for every server (a JSON value), "
                             "e.g. --set backendConnections=8")
    parser.add_argument("--plots", metavar="DIR", help="write DIR/soak-SERVER.png")
    parser.add_argument("--readme", action="store_true",
                        help="print the table as reStructuredText, with the date and machine")
    parser.add_argument("--first-port", type=int, default=17400,
                        help="proxy and control ports are taken from here up")
    parser.add_argument("--backend-ports", default="21000-21999")
    args = parser.parse_args(argv)
    names = args.server or list(SERVERS)
    connections = args.connections or (4 if args.full_speed else 8)
    config = {}
    for setting in args.set:
        key, _, value = setting.partition("=")
        config[key] = json.loads(value)
    ports = Ports(args.first_port)
    started = machine()
    results = []
    for name in names:
        print(f"soaking {name}: {SERVERS[name]}", file=sys.stderr, flush=True)
        result = soak(name, SERVERS[name], args.redeploys, ports, args.backend_ports,
                      connections, args.rate, args.full_speed, config, args.upgrades,
                      not args.no_retry)
        results.append(result)
        for note in result["notes"]:
            print(f"  NOTE {name}: {note}", file=sys.stderr)
        for problem in result["problems"]:
            print(f"  FAIL {name}: {problem}  (kept {result['directory']})", file=sys.stderr)
        if args.plots and result.get("results"):
            os.makedirs(args.plots, exist_ok=True)
            plot(result, os.path.join(args.plots, f"soak-{name}.png"))
    if args.readme:
        pace = "as fast as they go, plus wrk's 16" if args.full_speed else (
            f"at {args.rate:g} req/s in all")
        settings = "".join(f", {key} {value}" for key, value in config.items())
        upgrades = f" and {args.upgrades} upgrades of rainbowd" if args.upgrades else ""
        print(f"{args.redeploys} redeploys{upgrades} per server, {connections} keep-alive "
              f"connections {pace}{settings}; {started}:\n")
        print(table(results, rst=True))
    else:
        print(table(results, rst=False))
        print("\n" + LEGEND)
    failed = [r["server"] for r in results if r["problems"]]
    if failed:
        print(f"FAIL: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
