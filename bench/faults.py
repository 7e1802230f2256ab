#!/usr/bin/env python3
"""
Fault scenarios for rainbowd, each on a real C{twistd rainbowd} and a real
app, most of them under steady keep-alive load:

    python3 bench/faults.py              all of them
    python3 bench/faults.py crash storm  some of them
    python3 bench/faults.py --list

Each prints PASS or FAIL with what happened; the run exits non-zero if any
failed.  Every scenario also checks that rainbowd exits 0 on SIGTERM and
leaves no app process and no listening port behind.
"""

import argparse
import base64
import http.client
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    TEST_APP,
    Load,
    Ports,
    Rainbowd,
    appCommand,
    children,
    groupAlive,
    reap,
    request,
    running,
    waitFor,
)

#: The stdlib test app (see rainbowd/test/app.py), driven by APP_* variables.
APP = f"exec {sys.executable} {TEST_APP} $1 \"$2\""

SCENARIOS = []


def scenario(f):
    SCENARIOS.append(f)
    return f


class Failed(Exception):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise Failed(message)


def failures(results, after: float = 0.0):
    """
    The requests begun at or after C{after} that got no 2xx answer.
    """
    return [r for r in results if r[0] >= after and (r[4] is not None or not 200 <= r[2] < 300)]


def groupOf(pid: int):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def tasks(pid: int) -> List[str]:
    """
    The thread ids of process C{pid}; none once it is reaped.
    """
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def inThread(f, *args):
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=f(*args)), daemon=True)
    thread.start()
    return thread, box


@scenario
def slowBoot(daemon: Rainbowd, load: Load) -> str:
    """An app that boots slowly (10 s) under load: no request fails while it boots."""
    daemon.writeConfig(env={"APP_STARTUP_DELAY": "10", "APP_VERSION": "v2"})
    started = time.monotonic()
    code, answer = daemon.control("POST", "/redeploy")
    took = time.monotonic() - started
    time.sleep(0.5)
    bad = failures(load.stop())
    check(code == 200, f"redeploy answered {code}: {answer}")
    check(took >= 10, f"the switch came after {took:.1f} s, before the app booted")
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    check(daemon.get("/")[1].startswith("v2"), "v2 does not serve")
    return f"switched after {took:.1f} s; {len(load.results)} requests, none failed"


@scenario
def neverHealthy(daemon: Rainbowd, load: Load) -> str:
    """An app that never becomes healthy: the redeploy fails at startTimeout, the old version serves on."""
    daemon.writeConfig(healthCheckPath="/missing", startTimeout=3000,
                       env={"APP_VERSION": "v2"})
    started = time.monotonic()
    code, answer = daemon.control("POST", "/redeploy")
    took = time.monotonic() - started
    time.sleep(0.5)
    bad = failures(load.stop())
    check(code == 502, f"redeploy answered {code}: {answer}")
    check("not healthy within startTimeout (3 s)" in answer["error"], answer["error"])
    check(3 <= took < 8, f"the redeploy failed after {took:.1f} s")
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    check(daemon.get("/")[1].startswith("v1"), "v1 does not serve on")
    check(daemon.status()["active"] == 1, "generation 1 is no longer active")
    return f"502 after {took:.1f} s: {answer['error'][:90]}...; v1 served on, 0 failed requests"


@scenario
def exitsAtOnce(daemon: Rainbowd, load: Load) -> str:
    """An app that exits at once: the failure names the exit code and shows the output."""
    daemon.writeConfig(env={"APP_FAIL_AT_START": "1"})
    code, answer = daemon.control("POST", "/redeploy")
    time.sleep(0.5)
    bad = failures(load.stop())
    check(code == 502, f"redeploy answered {code}: {answer}")
    check("exited with code 3" in answer["error"], answer["error"])
    check(any("simulated broken build" in line for line in answer["output"]), answer)
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    check(daemon.get("/")[1].startswith("v1"), "v1 does not serve on")
    return f"502: {answer['error']}; output: {answer['output'][-1]!r}; 0 failed requests"


@scenario
def failingVerify(daemon: Rainbowd, load: Load) -> str:
    """A healthy version whose verify fails (a 404 on a page it must serve): the redeploy fails with the verify's status and output, the old version serves on, the new one is stopped."""
    daemon.writeConfig(
        env={"APP_VERSION": "v2"},
        verify="curl -fsS http://127.0.0.1:$1/ && curl -fsS http://127.0.0.1:$1/missing",
    )
    started = time.monotonic()
    code, answer = daemon.control("POST", "/redeploy")
    took = time.monotonic() - started
    time.sleep(0.5)
    bad = failures(load.stop())
    check(code == 502, f"redeploy answered {code}: {answer}")
    verify = answer.get("verify") or {}
    check(verify.get("exitCode") == 22, f"the verify's status is not curl's 22: {answer}")
    check(any(line.startswith("v2 pid=") for line in verify["output"]), verify["output"])
    check(any("404" in line for line in verify["output"]), verify["output"])
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    check(daemon.get("/")[1].startswith("v1"), "v1 does not serve on")
    waitFor(lambda: [b["generation"] for b in daemon.status()["backends"]] == [1],
            "generation 2 to be stopped")
    return (f"502 after {took:.1f} s, verify exit {verify['exitCode']}: "
            f"{verify['output'][-1]!r}; v1 served on, {len(load.results)} requests, 0 failed")


@scenario
def crash(daemon: Rainbowd, load: Load) -> str:
    """An app that crashes (SIGKILL) while active: it is replaced, and requests wait instead of failing."""
    pid = daemon.status()["backends"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    # Until it has run its exit, the kernel still queues connections on its
    # socket, which its exit then resets: the crash is when every thread of
    # it is a zombie.
    end = time.monotonic() + 10
    while any(running(task) for task in tasks(pid)):
        check(time.monotonic() < end, f"app {pid} still runs 10 s after SIGKILL")
        time.sleep(0.001)
    killed = time.monotonic()
    waitFor(lambda: daemon.status()["active"] == 2, "generation 2 to replace the crashed one", 30)
    replaced = time.monotonic() - killed
    time.sleep(1)
    results = load.stop()
    inFlight = [r for r in failures(results) if r[0] < killed]
    bad = failures(results, after=killed)
    slowest = max((r[1] - r[0] for r in results if r[0] >= killed), default=0)
    check(not bad, f"{len(bad)} requests begun after the crash failed: {bad[:3]}")
    return (f"replaced in {replaced:.2f} s; requests begun after the crash: 0 failed, "
            f"slowest waited {slowest * 1000:.0f} ms; in flight at the crash and lost: "
            f"{len(inFlight)}")


@scenario
def hang(daemon: Rainbowd, load: Load) -> str:
    """The active app hangs (kill -STOP of its process group) under load: it is noticed, new requests wait in rainbowd, the replacement (2 s boot) takes them, the stopped app is killed."""
    [old] = daemon.status()["backends"]
    group = groupOf(old["pid"])
    os.killpg(group, signal.SIGSTOP)
    stopped = time.monotonic()
    late = None
    try:
        def noticed():
            status = daemon.status()
            backends = status["backends"]
            return any(b["generation"] == 1 and (b["liveness"] or {}).get("unresponsive")
                       for b in backends) and status

        status = waitFor(noticed, "the stopped app to be noticed", 30)
        noticedAt = time.monotonic()
        noticedAfter = noticedAt - stopped
        # The first clients are held by the stopped app; fresh ones, from
        # the moment it was noticed, must all be answered.
        late = Load(daemon.port, connections=4, rate=40)
        late.start()
        check(status["active"] != 1 or status["routable"] is None,
              f"the stopped generation still gets new requests: {status}")
        waitFor(lambda: daemon.status()["active"] == 2, "generation 2 to replace it", 30)
        switched = time.monotonic()
        code, body = daemon.get("/", timeout=10)
        answered = time.monotonic()
        waitFor(lambda: not groupAlive(group), "the stopped app to be killed", 30)
        gone = time.monotonic()
    finally:
        if groupAlive(group):
            os.killpg(group, signal.SIGCONT)
        lateResults = [] if late is None else late.stop()
    time.sleep(0.5)
    results = load.stop()
    stuck = [r for r in results if r[0] < switched and r[1] > stopped]
    stuckFailed = failures(stuck)
    after = failures(results, after=switched)
    lateFailed = failures(lateResults)
    waited = [r for r in lateResults if r[0] < switched]
    resumed = min((r[1] for r in results if r[1] > gone and not failures([r])), default=None)
    check(code == 200 and f"pid={old['pid']}\n" not in body, f"after the switch: {code} {body!r}")
    check(noticedAfter < 10, f"noticed only {noticedAfter:.1f} s after the stop")
    check(waited, "no request was sent between the notice and the switch")
    check(not lateFailed, f"{len(lateFailed)} of {len(lateResults)} requests begun after "
          f"the stop was noticed failed: {lateFailed[:3]}")
    check(not after, f"{len(after)} requests begun after the switch failed: {after[:3]}")
    check(resumed is not None, "the load clients got no answer after the stopped app was killed")
    check("sending SIGKILL" in daemon.log(), "no SIGKILL in the log")
    slowest = max((r[1] - r[0] for r in stuck), default=0)
    slowestWait = max((r[1] - r[0] for r in waited), default=0)
    return (f"noticed {noticedAfter:.1f} s after the stop, replacement serving at "
            f"{switched - stopped:.1f} s (a new request was answered in "
            f"{(answered - switched) * 1000:.0f} ms); {len(stuck)} requests were held "
            f"by the stopped app ({len(stuckFailed)} failed, the slowest took "
            f"{slowest:.1f} s), until it was killed at {gone - stopped:.1f} s "
            f"(drainTimeout + killTimeout after the switch); gap in answers to the "
            f"first load clients: {resumed - stopped:.1f} s; 0 of "
            f"{len(lateResults)} requests begun after the stop was noticed failed "
            f"({len(waited)} of them begun before the switch was seen, the slowest "
            f"took {slowestWait:.1f} s); 0 of "
            f"{len([r for r in results if r[0] >= switched])} requests begun after "
            "the switch failed")


hang.config = {"drainTimeout": 3000, "killTimeout": 2000, "env": {"APP_STARTUP_DELAY": "2"}}


def badRelease(daemon: Rainbowd, load: Load, env: dict, fault=None):
    """
    Redeploy to a bad v2 (C{env}), do C{fault} to it, and wait until
    rainbowd has rolled back to v1 by itself.

    @return: the load's results, when v2 began serving and when v1 was
        back, and the rollback's reason from the log.
    """
    v1 = daemon.status()["backends"][0]["pid"]
    daemon.writeConfig(env={"APP_VERSION": "v2", **env})
    code, answer = daemon.control("POST", "/redeploy")
    check(code == 200, f"the redeploy answered {code}: {answer}")
    switched = time.monotonic()
    group = groupOf(answer["pid"])
    try:
        if fault is not None:
            fault(group)
        waitFor(lambda: daemon.status()["active"] == 1, "the rollback to v1", 60)
        back = time.monotonic()
        waitFor(lambda: not groupAlive(group), "v2 to be stopped", 30)
    finally:
        if group is not None and groupAlive(group):
            os.killpg(group, signal.SIGCONT)
    time.sleep(1)
    results = load.stop()
    status, body = daemon.get("/")
    check(status == 200 and body.startswith(f"v1 pid={v1}\n"), f"after: {status} {body!r}")
    reasons = [line for line in daemon.log().splitlines() if "rolling back to" in line]
    check(reasons, "no rollback in the log")
    check(daemon.log().count("launching on port") == 2, "a generation was launched to roll back")
    return results, switched, back, reasons[0].split("] ", 1)[-1]


def servedFor(results, version: str) -> str:
    answered = [r for r in results if r[3] == version]
    if not answered:
        return f"{version} answered no request"
    first, last = min(r[1] for r in answered), max(r[1] for r in answered)
    return f"{version} answered {len(answered)} requests over {last - first:.2f} s"


@scenario
def release500(daemon: Rainbowd, load: Load) -> str:
    """A release whose pages answer 500 while its health check passes: rainbowd rolls back to the standby by itself, and only v2's own answers failed."""
    results, switched, back, reason = badRelease(daemon, load, {"APP_ROOT_STATUS": "500"})
    bad = [r for r in failures(results) if r[3] != "v2"]
    check(not bad, f"{len(bad)} failed requests not answered by v2: {bad[:3]}")
    return (f"rolled back {back - switched:.2f} s after the switch ({reason}); "
            f"{servedFor(results, 'v2')}; 0 other requests failed of {len(results)}")


release500.config = {"rollbackWindow": 60000}


@scenario
def releaseCrashes(daemon: Rainbowd, load: Load) -> str:
    """A release that crashes 5 s after it starts: rainbowd rolls back to the standby instead of restarting it; only the requests v2 held when it died failed."""
    results, switched, back, reason = badRelease(daemon, load, {"APP_CRASH_AFTER": "5"})
    crashed = [line for line in daemon.log().splitlines() if "crashing" in line]
    check(crashed, "v2 did not crash")
    lost = [r for r in failures(results) if r[3] != "v1"]
    bad = [r for r in failures(results) if r[3] == "v1"]
    check(not bad, f"{len(bad)} requests failed on v1: {bad[:3]}")
    check(len(lost) <= load.connections, f"{len(lost)} requests failed around the crash: {lost[:3]}")
    after = failures(results, after=back)
    check(not after, f"{len(after)} requests begun after the rollback failed: {after[:3]}")
    return (f"v2 served {back - switched:.2f} s and was rolled back from at its crash "
            f"({reason}); {servedFor(results, 'v2')}; in flight at the crash and "
            f"lost: {len(lost)}; 0 of {len(results)} others failed")


releaseCrashes.config = {"rollbackWindow": 60000}


@scenario
def releaseHangs(daemon: Rainbowd, load: Load) -> str:
    """A release that hangs (kill -STOP of its group) 2 s after the switch: rainbowd rolls back within a few health checks; only requests v2 held failed."""
    stoppedAt = []

    def hang(group):
        time.sleep(2)
        os.killpg(group, signal.SIGSTOP)
        stoppedAt.append(time.monotonic())

    results, switched, back, reason = badRelease(daemon, load, {}, hang)
    held = [r for r in failures(results) if r[0] < back]
    after = failures(results, after=back)
    check(not after, f"{len(after)} requests begun after the rollback failed: {after[:3]}")
    check(len(held) <= load.connections, f"{len(held)} requests failed before the rollback: {held[:3]}")
    return (f"rolled back {back - stoppedAt[0]:.2f} s after the stop ({reason}); "
            f"{servedFor(results, 'v2')}; held by the stopped v2 and lost: {len(held)}; "
            f"0 of {len([r for r in results if r[0] >= back])} requests begun after "
            "the rollback failed")


releaseHangs.config = {"rollbackWindow": 60000, "drainTimeout": 3000, "killTimeout": 2000}


@scenario
def pauseAcrossRedeploy(daemon: Rainbowd, load: Load) -> str:
    """Traffic paused for 3 s under load, with a redeploy meanwhile: no request fails, the held ones go to the new version on resume."""
    status, answer = daemon.control("POST", "/pause", 10)
    check(status == 200, f"POST /pause answered {status}: {answer}")
    paused = time.monotonic()
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    status, answer = daemon.control("POST", "/redeploy")
    check(status == 200, f"the redeploy while paused answered {status}: {answer}")
    deployed = time.monotonic() - paused
    time.sleep(max(0.0, 3.0 - deployed))
    held = daemon.status()["traffic"]["held"]
    check(held > 0, "no request was held")
    # Stamped before the resume is asked for: what it releases may be
    # answered before its own answer arrives.
    resuming = time.monotonic()
    status, answer = daemon.control("POST", "/resume", 10)
    check(status == 200, f"POST /resume answered {status}: {answer}")
    time.sleep(1)
    results = load.stop()
    bad = failures(results)
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    # Those begun once the pause was answered are held, however slow the
    # machine; those in flight at the pause may finish meanwhile.
    during = [r for r in results if paused <= r[0] and r[1] < resuming]
    check(not during, f"{len(during)} requests begun while paused were answered "
          f"before the resume: {during[:3]}")
    released = [r for r in results if r[0] < resuming <= r[1]]
    versions = sorted({r[3] for r in released})
    check(versions == ["v2"], f"the held requests were answered by {versions}")
    longest = max(r[1] - r[0] for r in released)
    return (f"redeploy while paused took {deployed:.2f} s; {held} requests held at "
            f"resume, all answered 200 by v2, the longest after {longest:.2f} s; "
            "0 requests failed")


@scenario
def ignoresSigterm(daemon: Rainbowd, load: Load) -> str:
    """An app that ignores SIGTERM: SIGKILL after killTimeout, and no process is left."""
    [old] = daemon.status()["backends"]
    group = groupOf(old["pid"])
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    code, answer = daemon.control("POST", "/redeploy")
    swapped = time.monotonic()
    check(code == 200, f"redeploy answered {code}: {answer}")
    waitFor(lambda: not groupAlive(group), "the old app's group to be gone", 30)
    gone = time.monotonic() - swapped
    bad = failures(load.stop())
    check(1.5 <= gone < 6, f"the old app was gone {gone:.1f} s after the swap, killTimeout is 2 s")
    check("sending SIGKILL" in daemon.log(), "no SIGKILL in the log")
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    return f"old group {group} gone {gone:.1f} s after the swap (killTimeout 2 s), by SIGKILL"


ignoresSigterm.config = {"killTimeout": 2000, "env": {"APP_IGNORE_SIGTERM": "1"}}


@scenario
def longRequests(daemon: Rainbowd, load: Load) -> str:
    """Long requests (20 s) spanning two redeploys complete on the backend they started on."""
    load.stop()
    first = inThread(daemon.get, "/slow?seconds=20")
    waitFor(lambda: daemon.status()["backends"][0]["inflight"], "the first long request")
    pid1 = daemon.status()["backends"][0]["pid"]
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    check(daemon.control("POST", "/redeploy")[0] == 200, "first redeploy failed")
    second = inThread(daemon.get, "/slow?seconds=20")
    waitFor(lambda: any(b["generation"] == 2 and b["inflight"] for b in daemon.status()["backends"]),
            "the second long request")
    pid2 = [b["pid"] for b in daemon.status()["backends"] if b["generation"] == 2][0]
    daemon.writeConfig(env={"APP_VERSION": "v3"})
    check(daemon.control("POST", "/redeploy")[0] == 200, "second redeploy failed")
    states = {b["generation"]: b["state"] for b in daemon.status()["backends"]}
    check(states == {1: "draining", 2: "draining", 3: "active"}, f"states: {states}")
    for (thread, box), version, pid in ((first, "v1", pid1), (second, "v2", pid2)):
        thread.join(60)
        status, body = box["result"]
        check(status == 200 and body.startswith(f"{version} pid={pid} "),
              f"a long request begun on {version} got {status} {body!r}")
    return f"both completed on their own generation (v1 pid {pid1}, v2 pid {pid2}) while 3 were alive"


longRequests.config = {"drainTimeout": 60000}


@scenario
def storm(daemon: Rainbowd, load: Load) -> str:
    """A redeploy storm of 10 concurrent POST /redeploy coalesces into at most 2 launches."""
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    posts = [inThread(daemon.control, "POST", "/redeploy") for _ in range(10)]
    for thread, box in posts:
        thread.join(60)
    answers = [box.get("result") for thread, box in posts]
    time.sleep(0.5)
    bad = failures(load.stop())
    codes = [a[0] if a else None for a in answers]
    generations = sorted({a[1].get("generation") for a in answers if a})
    check(codes == [200] * 10, f"answers: {codes}")
    check(max(generations) <= 3, f"generations launched: {generations}")
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    return f"10 POSTs all 200, served by generations {generations}: {max(generations) - 1} launches"


@scenario
def maxBackends(daemon: Rainbowd, load: Load) -> str:
    """maxBackends reached while an old generation drains slowly: a clear refusal, nothing killed early."""
    load.stop()
    slow = inThread(daemon.get, "/slow?seconds=8")
    waitFor(lambda: daemon.status()["backends"][0]["inflight"], "the slow request")
    pid1 = daemon.status()["backends"][0]["pid"]
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    check(daemon.control("POST", "/redeploy")[0] == 200, "first redeploy failed")
    code, answer = daemon.control("POST", "/redeploy")
    check(code == 503, f"the redeploy over maxBackends answered {code}: {answer}")
    check("maxBackends is 2" in answer["error"], answer["error"])
    check(os.path.exists(f"/proc/{pid1}"), "the draining app was killed early")
    slow[0].join(30)
    status, body = slow[1]["result"]
    check(status == 200 and body.startswith(f"v1 pid={pid1} "), f"slow request: {status} {body!r}")
    return f"503: {answer['error']}; the slow request then completed on v1"


maxBackends.config = {"maxBackends": 2, "drainTimeout": 60000}


@scenario
def connectionCap(daemon: Rainbowd, load: Load) -> str:
    """backendConnections 2: requests beyond it wait in rainbowd, move to the new version at a swap, and get 503 at queueTimeout."""
    load.stop()

    def inflight(generation):
        return sum(b["inflight"] for b in daemon.status()["backends"]
                   if b["generation"] == generation)

    slow = []
    for n in range(4):
        slow.append(inThread(daemon.get, "/slow?seconds=3"))
        waitFor(lambda: inflight(1) > n, f"slow request {n + 1} to arrive")
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    check(daemon.control("POST", "/redeploy")[0] == 200, "the redeploy failed")
    answers = []
    for thread, box in slow:
        thread.join(60)
        answers.append(box["result"])
    versions = [body.split(" ", 1)[0] for status, body in answers]
    check([status for status, body in answers] == [200] * 4, f"answers: {answers}")
    check(versions == ["v1", "v1", "v2", "v2"],
          f"the two beyond the cap were not moved to v2: {versions}")

    held = []
    for n in range(3):
        held.append(inThread(daemon.get, "/slow?seconds=7"))
        waitFor(lambda: inflight(2) > n, f"long request {n + 1} to arrive")
    started = time.monotonic()
    held[2][0].join(60)
    waited = time.monotonic() - started
    status, body = held[2][1]["result"]
    check(status == 503 and "backendConnections (2)" in body, f"the third got {status} {body!r}")
    check(waited < 6.5, f"the 503 came after {waited:.1f} s, past queueTimeout (5 s)")
    for thread, box in held[:2]:
        thread.join(60)
        check(box["result"][0] == 200, f"a long request got {box['result']}")
    return (f"v1 served the first two, v2 the two that waited; past the cap: "
            f"{status} after {waited:.1f} s: {body.strip()[:110]}...")


connectionCap.config = {"backendConnections": 2, "queueTimeout": 5000}


@scenario
def rainbowdKilled(daemon: Rainbowd, load: Load) -> str:
    """rainbowd killed with SIGKILL: the next one on the same stateDir stops the old app, then serves."""
    load.stop()
    pid = daemon.status()["backends"][0]["pid"]
    group = groupOf(pid)
    daemon.process.kill()
    daemon.process.wait()
    check(groupAlive(group), "the app died with rainbowd; nothing to test")
    daemon.start()
    body = daemon.serving()
    check(not groupAlive(group), f"the old app's group {group} is still alive")
    check(f"pid={pid} " not in body, "the old app serves")
    check(f"of an earlier rainbowd (process group {group}" in daemon.log(), "nothing logged")
    return f"old group {group} was stopped at startup; the new generation serves: {body.strip()}"


@scenario
def portStolen(daemon: Rainbowd, load: Load) -> str:
    """A port taken between rainbowd's choice and the app's bind: the deploy retries on another port."""
    # The app waits for the thief to hold its port, however slow the machine.
    gate = os.path.join(daemon.directory, "port-stolen")
    daemon.writeConfig(env={"APP_VERSION": "v2", "APP_WAIT_FOR": gate})
    post = inThread(daemon.control, "POST", "/redeploy")
    backend = waitFor(lambda: [b for b in daemon.status()["backends"]
                               if b["generation"] == 2 and b["state"] == "starting"],
                      "generation 2 to start")[0]
    thief = socket.socket()
    # As app servers bind, so that the closed connections of an earlier
    # backend on this port (TIME_WAIT) do not keep the thief off it.
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        thief.bind(("127.0.0.1", backend["port"]))
        thief.listen()
        open(gate, "w").close()
        post[0].join(60)
    finally:
        thief.close()
    code, answer = post[1]["result"]
    bad = failures(load.stop())
    check(code == 200, f"redeploy answered {code}: {answer}")
    check(answer["generation"] == 3 and answer["port"] != backend["port"], answer)
    check("lost port" in daemon.log(), "no retry in the log")
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    return (f"generation 2 lost port {backend['port']}; generation 3 deployed on "
            f"port {answer['port']}; 0 failed requests")


@scenario
def connectionFlood(daemon: Rainbowd, load: Load) -> str:
    """2,000 connections trickling partial heads, descriptor limit 1024: load served, new clients 200 or 503, redeploy works."""
    flood = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < flood + 256:
        raise Failed(f"the flood needs {flood + 256} descriptors, the hard limit is {hard}: ulimit -n")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    maximum = daemon.status()["connections"]["max"]
    held, answers, stop = set(), {"503": 0, "408": 0, "reset": 0, "other": []}, threading.Event()
    lock = threading.Lock()
    connected = {}

    def flooder():
        for i in range(flood):
            client = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            connected[client] = time.monotonic()
            client.sendall(b"GET / HTTP/1.1\r\nHost: flood%d\r\n" % i)
            client.setblocking(False)
            with lock:
                held.add(client)
            time.sleep(0.001)  # faster than this, the listen queue (50) overflows
        while not stop.wait(1.0):
            with lock:
                for client in list(held):
                    try:
                        data = client.recv(4096)
                    except BlockingIOError:
                        try:
                            client.send(b"X")
                        except OSError:
                            pass
                        continue
                    except ConnectionResetError:
                        answers["reset"] += 1
                    else:
                        if data.startswith(b"HTTP/1.1 503 "):
                            answers["503"] += 1
                        elif (data.startswith(b"HTTP/1.1 408 ")
                              and time.monotonic() - connected[client] >= 9.5):
                            # A held one's head deadline (requestHeaderTimeout,
                            # 10 s from its accept) passed: a slow machine.
                            answers["408"] += 1
                        else:
                            answers["other"].append(data[:80])
                    held.discard(client)
                    client.close()

    fresh = []

    def freshClients():
        while not stop.wait(0.2):
            try:
                fresh.append(daemon.get("/", timeout=10))
            except (OSError, http.client.HTTPException) as e:
                fresh.append((None, f"{type(e).__name__}: {e}"))

    threads = [inThread(flooder)[0], inThread(freshClients)[0]]
    waitFor(lambda: answers["503"] + answers["reset"] + len(answers["other"]) >= flood - maximum,
            f"the flood to be answered: {answers}", 60)
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    code, answer = daemon.control("POST", "/redeploy")
    time.sleep(3)
    status = daemon.status()["connections"]
    stop.set()
    for thread in threads:
        thread.join(30)
    with lock:
        stillHeld = len(held)
        for client in held:
            client.close()
    bad = failures(load.stop())
    waitFor(lambda: daemon.get("/", timeout=10)[0] == 200, "a new client to be served", 30)
    log = daemon.log()
    badFresh = [r for r in fresh if r[0] not in (200, 503) or (r[0] == 503 and "maxConnections" not in r[1])]
    check(code == 200, f"the redeploy during the flood answered {code}: {answer}")
    check(not bad, f"{len(bad)} requests of the load failed: {bad[:3]}")
    check(not badFresh, f"{len(badFresh)} new clients got neither 200 nor a clear 503: {badFresh[:3]}")
    check(not answers["other"], f"flood connections got: {answers['other'][:3]}")
    check("EMFILE" not in log, "rainbowd ran out of descriptors")
    refusalLines = log.count("refused")
    check(refusalLines <= 15, f"{refusalLines} lines about refusals")
    codes = sorted({r[0] for r in fresh})
    return (f"cap {maximum}: {stillHeld} held, {answers['503']} got a 503, "
            f"{answers['408']} a 408 at their deadline, {answers['reset']} reset; "
            f"{status['refused']} refused in all; redeploy 200; {len(load.results)} load requests, "
            f"none failed; {len(fresh)} new clients got {codes}; {refusalLines} log lines on refusals")


connectionFlood.fileLimit = 1024
def trickle(port: int, count: int, start: bytes, every: float, deadline: float):
    """
    Open C{count} connections to C{port}, send C{start} on each, then a byte
    every C{every} seconds on each, until rainbowd closes it.

    @return: for each connection, what rainbowd sent and how many seconds
        the connection lasted, from its connect (a connect the listen queue
        held back a second does not count); L{None} for one still open at
        C{deadline}.
    """
    began = time.monotonic()
    open_, connected = {}, {}
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), 10)
        connected[s] = time.monotonic()
        s.sendall(start)
        s.setblocking(False)
        open_[s] = b""
    done = []
    nextByte = began + every
    while open_ and time.monotonic() - began < deadline:
        readable, _, _ = select.select(list(open_), [], [], max(0, nextByte - time.monotonic()))
        for s in readable:
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                open_[s] += chunk
                continue
            done.append((open_.pop(s), time.monotonic() - connected[s]))
            s.close()
        if time.monotonic() >= nextByte:
            nextByte += every
            for s in list(open_):
                # Not on a connection that has answered: a reset could
                # discard what it sent.
                if not open_[s]:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass
    for s, data in open_.items():
        done.append((None, deadline))
        s.close()
    return done


@scenario
def slowClients(daemon: Rainbowd, load: Load) -> str:
    """Heads and bodies trickled a byte a second on both ports: all get 408 at their deadline (or, past the control port's cap, are closed for newer ones), others and a redeploy unaffected."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
    body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    groups = [(daemon.port, 150, head), (daemon.port, 50, body), (daemon.controlPort, 50, head)]
    threads = [inThread(trickle, port, count, start, 1.0, 30.0) for port, count, start in groups]
    time.sleep(1)
    daemon.writeConfig(env={"APP_VERSION": "v2"})
    code, answer = daemon.control("POST", "/redeploy")
    check(code == 200, f"redeploy answered {code}: {answer}")
    public, control = [], []
    for (port, _, _), (thread, box) in zip(groups, threads):
        thread.join(60)
        (control if port == daemon.controlPort else public).extend(box["result"])
    results = public + control
    bad = failures(load.stop())
    check(not bad, f"{len(bad)} requests failed: {bad[:3]}")
    open_ = [r for r in results if r[0] is None]
    check(not open_, f"{len(open_)} trickling connections still open after 30 s")
    not408 = [r for r in public if not r[0].startswith(b"HTTP/1.1 408 ")]
    check(not not408, f"{len(not408)} on the public port got no 408: {not408[:2]}")
    # The control API serves 32 connections: past that, the oldest still
    # waiting for a request is closed for each new one, the redeploy's too.
    evicted = [r for r in control if r[0] == b""]
    not408 = [r for r in control if r[0] != b"" and not r[0].startswith(b"HTTP/1.1 408 ")]
    check(not not408, f"{len(not408)} on the control port got neither a 408 nor a close: {not408[:2]}")
    check(len(evicted) <= len(control) - 32 + 1, f"{len(evicted)} control connections closed, over the cap's share")
    slowest = max(seconds for _, seconds in results)
    check(slowest < 3 + 5, f"the last was closed after {slowest:.1f} s (deadlines 3 s)")
    lines = daemon.log().count("Answered 408 to")
    check(lines <= 6, f"{lines} lines logged for {len(results)} timeouts")
    return (f"{len(results) - len(evicted)} trickling connections 408, the last after {slowest:.1f} s, "
            f"{len(evicted)} past the control port's cap closed for newer ones; {lines} log lines; "
            f"redeploy 200 meanwhile; 0 of {len(load.results)} requests failed")


slowClients.config = {"requestHeaderTimeout": 3000, "requestBodyTimeout": 3000}


class TokenClients:
    """
    C{count} keep-alive clients asking, as fast as they can, for
    C{/token?t=T}, T unique to each request, and checking that the body is
    theirs; the misbehaving requests C{asks} (method, path, expected status
    and body, in which C{{t}} is a unique token) are sent round-robin on two
    more keep-alive connections.
    """

    def __init__(self, port: int, count: int, asks=()) -> None:
        self.port = port
        self.stopping = threading.Event()
        self.answered = 0
        #: per kind of request, how many got a body not theirs
        self.wrong: dict = {}
        self.examples: list = []
        self.errors: list = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(f"c{n}", [("GET", "/token?t={t}", 200, "token={t}\n")]), daemon=True)
                         for n in range(count)]
        if asks:
            self._threads += [threading.Thread(target=self._run, args=(f"m{n}", list(asks)), daemon=True)
                              for n in range(2)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, name: str, asks) -> None:
        import http.client

        connection = None
        i = 0
        while not self.stopping.is_set():
            method, path, status, body = asks[i % len(asks)]
            token = f"{name}-{i}"
            i += 1
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                connection.request(method, path.format(t=token))
                response = connection.getresponse()
                got = response.read()
            except Exception as e:  # every outcome counts, whatever it is
                self.errors.append(f"{method} {path}: {type(e).__name__}: {e}")
                if connection is not None:
                    connection.close()
                connection = None
                continue
            with self._lock:
                self.answered += 1
                if ((response.status, got.decode(errors="replace")) != (status, body.format(t=token))
                        or response.getheader("Set-Cookie")):
                    self.wrong[path] = self.wrong.get(path, 0) + 1
                    if len(self.examples) < 3:
                        self.examples.append((method, path.format(t=token), response.status, got[:60]))
        if connection is not None:
            connection.close()


MISFRAMED = [
    ("HEAD", "/misframe/head", 200, ""),
    ("GET", "/misframe/204", 204, ""),
    ("GET", "/misframe/304", 304, ""),
    ("GET", "/misframe/long?t={t}", 200, "token={t}\n"),
    ("GET", "/misframe/twice?t={t}", 200, "token={t}\n"),
]


@scenario
def misframing(daemon: Rainbowd, load: Load) -> str:
    """An app that sends a body after HEAD, 204 and 304, then also more than its Content-Length and a second response 50 ms later, under load from keep-alive clients: each gets its own body."""
    # A late stray after a well-framed response can only be told once the
    # app has shown it misframes (see "Connections to the app" in
    # docs/proxy.rst), so the bodies after bodiless responses come first.
    first = TokenClients(daemon.port, 6, MISFRAMED[:3])
    first.start()
    waitFor(lambda: "frames its responses wrongly" in daemon.log(), "the misframing warning", 30)
    time.sleep(2)
    first.stop()
    then = TokenClients(daemon.port, 6, MISFRAMED)
    then.start()
    time.sleep(8)
    then.stop()
    load.stop()
    warnings = daemon.log().count("frames its responses wrongly")
    answered = first.answered + then.answered
    wrong = {path: first.wrong.get(path, 0) + then.wrong.get(path, 0)
             for path in set(first.wrong) | set(then.wrong)}
    errors = first.errors + then.errors
    check(not errors, f"{len(errors)} errors: {errors[:3]}")
    check(not wrong, f"{sum(wrong.values())} wrong bodies of {answered} ({wrong}): "
                     f"{first.examples + then.examples}")
    check(warnings == 1, f"the misframing was logged {warnings} times")
    return f"{answered} requests, 0 wrong bodies; logged once"


misframing.config = {"env": {"APP_MISBEHAVE": "1"}}


@scenario
def hungApp(daemon: Rainbowd, load: Load) -> str:
    """An app that accepts requests and never answers them: each gets a 504 at backendTimeout (2 s), the others are served."""
    started = time.monotonic()
    hung = [inThread(daemon.get, "/stall") for _ in range(8)]
    for thread, _ in hung:
        thread.join(60)
    took = time.monotonic() - started
    time.sleep(0.5)
    bad = failures(load.stop())
    answers = [box.get("result") for _, box in hung]
    check(all(a and a[0] == 504 and "within 2 s (backendTimeout)" in a[1] for a in answers),
          f"the hung requests got {answers}")
    check(2 <= took < 6, f"the 504s came after {took:.1f} s")
    check(not bad, f"{len(bad)} other requests failed: {bad[:3]}")
    _, metrics = request(daemon.controlPort, "GET", "/metrics", 10)
    check('rainbowd_backend_timeouts_total{phase="head"} 8.0' in metrics, "the 504s are not counted")
    return f"8 hung requests: 504 after {took:.1f} s, counted; 0 other requests failed"


hungApp.config = {"backendTimeout": 2000, "env": {"APP_MISBEHAVE": "1"}}


def appPids(daemon: Rainbowd) -> dict:
    """
    Generation -> the pid of its app process, from C{/status}.
    """
    return {b["generation"]: b["pid"] for b in daemon.status()["backends"]}


def upgraded(daemon: Rainbowd, oldPid: int, apps: dict, code: int, answer: dict) -> None:
    """
    Check that an upgrade from rainbowd C{oldPid} answered 200, that a new
    rainbowd serves now, and that the app's processes are still C{apps}.
    """
    check(code == 200, f"POST /upgrade answered {code}: {answer}")
    check(answer.get("pid") not in (None, oldPid) and answer.get("previousPid") == oldPid,
          f"rainbowd was pid {oldPid}, POST /upgrade answered {answer}")
    described = daemon.status().get("rainbowd", {})
    check(described.get("pid") == answer["pid"] and described.get("upgradedFrom") == oldPid,
          f"/status says rainbowd is {described}")
    check(appPids(daemon) == apps, f"the app's processes changed: {apps} before, "
                                   f"{appPids(daemon)} after")


def noFailures(bad, answered: float, detail: str) -> str:
    """
    Check that no request failed, saying when the failures began and
    ended relative to the upgrade's answer at C{answered}, and what else
    the scenario saw (C{detail}, which is returned if none failed).
    """
    if bad:
        kinds = sorted({r[4] or f"HTTP {r[2]}" for r in bad})
        raise Failed(f"{len(bad)} requests failed, begun from {bad[0][0] - answered:+.3f} s to "
                     f"{bad[-1][0] - answered:+.3f} s after POST /upgrade answered: {kinds}; "
                     f"all else passed: {detail}")
    return detail


def frame(opcode: int, payload: bytes) -> bytes:
    """
    A client's (masked) final WebSocket frame, of under 126 bytes.
    """
    mask = os.urandom(4)
    return (bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def openWebSocket(port: int) -> socket.socket:
    """
    A WebSocket to the test app's C{/ws}, its handshake done.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        check(chunk, f"the WebSocket handshake was cut off: {head!r}")
        head += chunk
    check(head.startswith(b"HTTP/1.1 101 "), f"the WebSocket handshake got {head!r}")
    return s


def echoes(s: socket.socket, message: bytes) -> bool:
    """
    Whether the app echoes C{message} on WebSocket C{s}.
    """
    expected = bytes([0x81, len(message)]) + message
    try:
        s.sendall(frame(1, message))
        received = b""
        while len(received) < len(expected):
            chunk = s.recv(len(expected) - len(received))
            if not chunk:
                return False
            received += chunk
    except OSError:
        return False
    return received == expected


def closedWithin(s: socket.socket, deadline: float) -> float:
    """
    Wait for the other side to close C{s}; return when it did.
    """
    s.settimeout(deadline)
    try:
        while s.recv(4096):
            pass
    except socket.timeout:
        raise Failed(f"the WebSocket was still open {deadline:g} s later")
    except OSError:
        pass
    return time.monotonic()


#: drainTimeout, in seconds, of the scenario with a WebSocket open across an
#: upgrade.
WEBSOCKET_DRAIN = 8


@scenario
def upgradeWebSocket(daemon: Rainbowd, load: Load) -> str:
    """An upgrade of rainbowd while a WebSocket is open: the upgrade does not wait for it; it stays open on the old rainbowd and works until drainTimeout (8 s), when it is closed and the old one exits 0; a new WebSocket goes to the new one."""
    ws = openWebSocket(daemon.port)
    check(echoes(ws, b"before"), "the WebSocket does not echo before the upgrade")
    apps, oldPid = appPids(daemon), daemon.pid
    posted = time.monotonic()
    code, answer = daemon.upgrade()
    answered = time.monotonic()
    upgraded(daemon, oldPid, apps, code, answer)
    check(answered - posted < WEBSOCKET_DRAIN - 2,
          f"POST /upgrade took {answered - posted:.1f} s: it waited for the WebSocket")
    worked = 0
    while time.monotonic() - answered < WEBSOCKET_DRAIN - 2:
        check(running(oldPid), f"the old rainbowd exited {time.monotonic() - answered:.1f} s "
                               "after the upgrade, with a WebSocket open on it")
        check(echoes(ws, b"during %d" % worked), "the WebSocket stopped working on the old "
              f"rainbowd {time.monotonic() - answered:.1f} s after the upgrade")
        worked += 1
        time.sleep(1)
    fresh = openWebSocket(daemon.port)
    check(echoes(fresh, b"fresh"), "a WebSocket opened after the upgrade does not echo")
    closed = closedWithin(ws, WEBSOCKET_DRAIN + 30) - answered
    exit = reap(daemon.retired[-1], 30)
    exited = time.monotonic() - answered
    daemon.exits[oldPid] = exit
    check(echoes(fresh, b"fresh again"), "the new rainbowd's WebSocket broke when the old one exited")
    fresh.close()
    ws.close()
    bad = failures(load.stop())
    check(exit == 0, f"the old rainbowd exited with {exit}")
    check(WEBSOCKET_DRAIN - 1 <= closed <= WEBSOCKET_DRAIN + 5,
          f"the old WebSocket was closed {closed:.1f} s after the upgrade, drainTimeout is "
          f"{WEBSOCKET_DRAIN} s")
    return noFailures(bad, answered, f"rainbowd {oldPid} -> {answer['pid']} in {answered - posted:.2f} s, app pids "
            f"{sorted(apps.values())} kept; the WebSocket echoed {worked} times on the old "
            f"rainbowd, was closed {closed:.1f} s after the upgrade (drainTimeout "
            f"{WEBSOCKET_DRAIN} s), the old one exited 0 at {exited:.1f} s; a new WebSocket "
            f"worked throughout; {len(load.results)} requests, 0 failed, {load.retried} retried")


upgradeWebSocket.config = {"drainTimeout": WEBSOCKET_DRAIN * 1000}
# The old rainbowd closes its idle keep-alive connections once the new one
# serves: the load sends a request that met such a close again, and counts it.
upgradeWebSocket.retryReused = True


@scenario
def upgradeLongRequest(daemon: Rainbowd, load: Load) -> str:
    """An upgrade of rainbowd during a 20 s request: the upgrade does not wait for it, the request completes with a 200 from the same app process, then the old rainbowd exits 0."""
    apps, oldPid = appPids(daemon), daemon.pid
    began = time.monotonic()
    long = inThread(daemon.get, "/slow?seconds=20")
    waitFor(lambda: daemon.status()["backends"][0]["inflight"], "the long request to reach the app")
    # The load's requests take milliseconds: what is in flight a second
    # later is the long one.
    time.sleep(1)
    check(daemon.status()["backends"][0]["inflight"], "the long request is not in flight")
    posted = time.monotonic()
    code, answer = daemon.upgrade()
    answered = time.monotonic()
    upgraded(daemon, oldPid, apps, code, answer)
    check(answered - began < 15, f"POST /upgrade took {answered - posted:.1f} s: it waited "
                                 "for the long request")
    check(running(oldPid), "the old rainbowd exited with a request in flight on it")
    long[0].join(60)
    done = time.monotonic()
    status, body = long[1].get("result", (None, "no answer"))
    exit = reap(daemon.retired[-1], 30)
    exited = time.monotonic()
    daemon.exits[oldPid] = exit
    bad = failures(load.stop())
    [appPid] = apps.values()
    check(status == 200 and body.startswith(f"v1 pid={appPid} slept 20"),
          f"the long request got {status} {body!r}")
    check(exit == 0, f"the old rainbowd exited with {exit}")
    check(exited - done < 5, f"the old rainbowd exited {exited - done:.1f} s after its last "
                             "request was done")
    return noFailures(bad, answered, f"rainbowd {oldPid} -> {answer['pid']} in {answered - posted:.2f} s, "
            f"{posted - began:.1f} s into the request; the request answered 200 from app "
            f"pid {appPid} after {done - began:.1f} s; the old rainbowd exited 0 "
            f"{exited - done:.2f} s later; {len(load.results)} requests, 0 failed, "
            f"{load.retried} retried")


upgradeLongRequest.config = {"drainTimeout": 60000}
upgradeLongRequest.retryReused = True


#: What a rainbowd that cannot start prints: see L{upgradeFails}.
BROKEN = "simulated broken install of attrs"


@scenario
def upgradeFails(daemon: Rainbowd, load: Load) -> str:
    """Upgrades whose new rainbowd fails (a config whose port changed; a broken install that crashes at import): each answers 502 with the new process's output, the old rainbowd keeps serving with the same app, 0 failed requests; then an upgrade succeeds."""
    apps, oldPid = appPids(daemon), daemon.pid
    outcomes = []
    moved = daemon.port + 1000
    daemon.writeConfig(port=moved)
    try:
        started = time.monotonic()
        code, answer = daemon.upgrade()
        outcomes.append(("port changed", code, answer, time.monotonic() - started))
    finally:
        daemon.writeConfig(port=daemon.port)
    # The new process runs in rainbowd's working directory, first on its
    # sys.path (python -c): a module there stands for a broken
    # "pip install -U" of a package rainbowd imports.
    shadow = os.path.join(daemon.directory, "attrs.py")
    with open(shadow, "w") as f:
        f.write(f"import sys\nsys.stderr.write({BROKEN!r} + '\\n')\nsys.exit(1)\n")
    try:
        started = time.monotonic()
        code, answer = daemon.upgrade()
        outcomes.append(("broken install", code, answer, time.monotonic() - started))
    finally:
        os.remove(shadow)
    serving = daemon.status().get("rainbowd", {}).get("pid")
    kept = appPids(daemon)
    status, body = daemon.get("/")
    posted = time.monotonic()
    code, answer = daemon.upgrade()
    took = time.monotonic() - posted
    upgraded(daemon, oldPid, apps, code, answer)
    answered = time.monotonic()
    exit = daemon.exits[oldPid] = reap(daemon.retired[-1], 30)
    bad = failures(load.stop())
    for what, failedCode, failed, _ in outcomes:
        check(failedCode == 502 and failed.get("ok") is False,
              f"the upgrade with a {what} answered {failedCode}: {failed}")
    [port, broken] = [answer for _, _, answer, _ in outcomes]
    check("port" in port.get("error", ""), f"the error does not name the port: {port}")
    check(any(BROKEN in line for line in broken.get("output", [])),
          f"the new process's output is not in the answer: {broken}")
    check(serving == oldPid, f"after the failed upgrades /status names rainbowd {serving}")
    check(kept == apps, f"the app's processes changed: {apps} before, {kept} after")
    check(status == 200 and body.startswith("v1 "), f"after the failed upgrades: {status} {body!r}")
    check(exit == 0, f"the old rainbowd exited with {exit} after the good upgrade")
    said = "; ".join(f"{what}: 502 after {seconds:.1f} s, {answer['error'][:100]!r}, output "
                     f"{(answer.get('output') or ['-'])[-1][:60]!r}"
                     for what, _, answer, seconds in outcomes)
    return noFailures(bad, answered, f"{said}; rainbowd {oldPid} served on with app pids {sorted(apps.values())}; "
            f"then an upgrade to {answer['pid']} in {took:.2f} s; {len(load.results)} "
            f"requests, 0 failed, {load.retried} retried")


upgradeFails.retryReused = True


def listeningInode(port: int) -> str:
    """
    The socket inode of the listening TCP socket on 127.0.0.1:C{port}.
    """
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return fields[9]
    raise Failed(f"nothing listens on port {port}")


def holds(pid: int, inode: str) -> bool:
    """
    Whether process C{pid} has a descriptor on socket C{inode}.
    """
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for entry in entries:
        try:
            if os.readlink(f"/proc/{pid}/fd/{entry}") == f"socket:[{inode}]":
                return True
        except OSError:
            pass
    return False


def killedDuringUpgrade(daemon: Rainbowd, load: Load, holding: bool) -> str:
    """
    Ask for an upgrade, SIGKILL the old rainbowd as soon as the new one has
    started (or, if C{holding}, holds the listening socket), and check that
    the new one serves with the same app or, if it gave up, that a restart
    stops the orphaned app and serves.
    """
    apps, oldPid = appPids(daemon), daemon.pid
    groups = {pid: groupOf(pid) for pid in apps.values()}
    inode = listeningInode(daemon.port)

    def upgrade():
        try:
            return daemon.upgrade()
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}"

    post = inThread(upgrade)
    # Polled every 5 ms: the socket arrives in the new process moments
    # before it says it is ready.
    new, end = None, time.monotonic() + 60
    while new is None and time.monotonic() < end:
        new = next((pid for pid in children(oldPid)
                    if appCommand(pid, daemon.stateDir) is None
                    and (not holding or holds(pid, inode))), None)
        if new is None:
            time.sleep(0.005)
    check(new is not None, "no new rainbowd " + ("held the listening socket" if holding
                                                 else "started") + " within 60 s")
    os.kill(oldPid, signal.SIGKILL)
    killed = time.monotonic()
    daemon.process.wait()
    post[0].join(60)
    answered = post[1].get("result")

    def settled():
        if not running(new):
            return "exited"
        try:
            status = daemon.control("GET", "/status", 5)[1]
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return status.get("rainbowd", {}).get("pid") == new and "serves"

    outcome = waitFor(settled, f"the new rainbowd {new} to serve or exit", 60)
    settledAfter = time.monotonic() - killed
    if outcome == "serves":
        daemon.retired.append(daemon.process)
        daemon.adopted = new
        check(appPids(daemon) == apps, f"the app's processes changed: {apps} before, "
                                       f"{appPids(daemon)} after")
        status, body = daemon.get("/")
        check(status == 200 and body.startswith("v1 "), f"the new rainbowd answered {status} {body!r}")
        after = f"the new rainbowd {new} serves, with app pids {sorted(apps.values())}"
    else:
        exit = reap(new, 5)
        daemon.start()
        body = daemon.serving()
        settledAfter = time.monotonic() - killed
        orphans = [g for g in groups.values() if g is not None and groupAlive(g)]
        check(not orphans, f"the old app's groups {orphans} outlived the restart")
        after = (f"the new rainbowd {new} exited ({exit}) and a restart stopped the orphaned "
                 f"app, then served {body.strip()!r}")
    # The load's requests in flight then (on connections the kill cut, or
    # still trying to connect) are done within a second.
    results = load.stop()
    lost = failures(results)
    late = failures(results, after=killed + settledAfter + 1)
    check(not late, f"{len(late)} requests failed once it settled: {late[:3]}")
    return (f"killed rainbowd {oldPid} once {new} " + ("held the listening socket" if holding
                                                        else "had started")
            + f" (POST /upgrade got {answered if isinstance(answered, str) else answered and answered[0]}); "
            f"{after}, {settledAfter:.1f} s after the kill; {len(lost)} of {len(results)} "
            "requests failed, all before then")


@scenario
def upgradeKilledMidway(daemon: Rainbowd, load: Load) -> str:
    """SIGKILL of the old rainbowd in the middle of an upgrade, once the new one holds the listening socket: the new one serves with the same app, or, if it gave up, a restart of rainbowd stops the orphaned app and serves; either way no app process is left over."""
    return killedDuringUpgrade(daemon, load, holding=True)


@scenario
def upgradeKilledEarly(daemon: Rainbowd, load: Load) -> str:
    """SIGKILL of the old rainbowd as soon as the new one has started, before the handover: the new one gives up (or serves), a restart of rainbowd stops the orphaned app and serves; no app process is left over."""
    return killedDuringUpgrade(daemon, load, holding=False)


def run(f, ports: Ports, backendPorts: str) -> bool:
    # The old version stops once drained, unless a scenario keeps a standby.
    config = {"run": APP, "drainTimeout": 30000, "killTimeout": 5000,
              "rollbackWindow": 0, "env": {}}
    config.update(getattr(f, "config", {}))
    daemon = Rainbowd(f.__name__, ports, backendPorts, **config)
    daemon.fileLimit = getattr(f, "fileLimit", None)
    daemon.start()
    load = None
    try:
        daemon.serving()
        daemon.writeConfig(env={})
        load = Load(daemon.port, connections=4, rate=100,
                    retryReused=getattr(f, "retryReused", False))
        load.start()
        time.sleep(0.5)
        detail = f(daemon, load)
        ok = True
    except Failed as e:
        detail, ok = f"Failed: {e}", False
    except (RuntimeError, OSError, KeyError) as e:
        # Not a check that failed: say where, in the harness and in this
        # file, so that one CI log is enough.
        frames = traceback.extract_tb(e.__traceback__)
        here = os.path.dirname(os.path.abspath(__file__))
        ours = [f for f in frames if os.path.dirname(os.path.abspath(f.filename)) == here]
        scenario = [f for f in ours if os.path.abspath(f.filename) == os.path.abspath(__file__)]
        shown = [ours[-1]] + ([scenario[-1]] if scenario[-1] is not ours[-1] else [])
        where = ", from ".join(f"{os.path.basename(f.filename)}:{f.lineno}: {f.line}"
                               for f in shown)
        detail, ok = f"{type(e).__name__}: {e}, at {where}", False
    finally:
        if load is not None:
            load.stop()
        code = daemon.stop()
        left = daemon.leftovers()
    if ok and (code != 0 or left):
        detail, ok = f"{detail}; but rainbowd exited {code} and left {left}", False
    print(f"{'PASS' if ok else 'FAIL'} {f.__name__}: {f.__doc__}\n     {detail}", flush=True)
    if not ok:
        print(f"     rainbowd's directory is kept: {daemon.directory}\n" +
              "\n".join("     | " + l for l in daemon.logTail(25).splitlines()), flush=True)
    daemon.cleanUp(keep=not ok)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="scenarios to run; all by default")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--first-port", type=int, default=17600)
    parser.add_argument("--backend-ports", default="22000-22999")
    args = parser.parse_args(argv)
    if args.list:
        for f in SCENARIOS:
            print(f"{f.__name__:16} {f.__doc__}")
        return 0
    chosen = [f for f in SCENARIOS if not args.names or f.__name__ in args.names]
    unknown = set(args.names) - {f.__name__ for f in SCENARIOS}
    if unknown:
        parser.error(f"no scenario {', '.join(sorted(unknown))}; see --list")
    ports = Ports(args.first_port)
    passed = [run(f, ports, args.backend_ports) for f in chosen]
    print(f"{sum(passed)} of {len(passed)} fault scenarios passed")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
