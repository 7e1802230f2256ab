#!/usr/bin/env python3
"""
PyPy's collector settings against each other and against CPython, in one
run: the measurements behind the nursery rainbowd gives PyPy (see "Running
on PyPy" in docs/operations.rst).

    python3 bench/pypygc.py [--quick] [--json PATH] [--variants ...]

Each variant is a C{twistd -n rainbowd} of this checkout, with its own
backend nginx, as C{bench/proxy.py} runs them:

  - cpython:   rainbowd on the Python running this script;
  - pypy:      rainbowd on PyPy as the docs run it, nothing set (rainbowd
               then re-executes itself with its own setting);
  - pypy-own:  C{PYPY_GC_NURSERY=} (empty): PyPy's own nursery, from the
               "cache size" in /proc/cpuinfo;
  - N/S:       C{PYPY_GC_NURSERY=N PYPY_GC_INCREMENT_STEP=S}, e.g. 8M/2M;
  - N:         C{PYPY_GC_NURSERY=N} alone.

wrk runs at each connection count against every variant in rounds that
rotate through them; for each: medians over the rounds of req/s, p50, p99
and p99.9, the largest RSS seen after a run, and for PyPy, from rainbowd's
metrics, the collections per 10,000 requests, the time they took, and the
nursery filled per request (minor collections times the nursery).  A full
run takes about five minutes.
"""

import argparse
import datetime
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proxy  # noqa: E402  (bench/proxy.py)

DEFAULT_VARIANTS = "cpython,pypy,pypy-own,16M,8M/2M,4M/1M,32M/8M"


def variantEnvironment(variant: str) -> Optional[Dict[str, str]]:
    """
    The C{PYPY_GC_*} variables of a PyPy variant; L{None} for CPython.

    @raise ValueError: for a variant that is none of those above.
    """
    if variant == "cpython":
        return None
    if variant == "pypy":
        return {}
    if variant == "pypy-own":
        return {"PYPY_GC_NURSERY": ""}
    nursery, _, step = variant.partition("/")
    if not nursery[:-1].isdigit() or nursery[-1:] not in "KMG":
        raise ValueError(
            f"variant {variant!r}: give cpython, pypy, pypy-own, a nursery "
            f"like 8M, or a nursery and increment step like 8M/2M"
        )
    env = {"PYPY_GC_NURSERY": nursery}
    if step:
        env["PYPY_GC_INCREMENT_STEP"] = step
    return env


def parseArguments(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare PyPy's collector settings for rainbowd, and "
        "CPython, in one run; see 'Running on PyPy' in docs/operations.rst."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round of 1 s, no warm-up"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--warmup", type=int, help="seconds of wrk per variant first (default 3)"
    )
    parser.add_argument(
        "--connections", default="32,1", help="connection counts (default 32,1)"
    )
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated (default {DEFAULT_VARIANTS})",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--pypy-venv", metavar="DIR", help="as for bench/proxy.py")
    parser.add_argument("--port-base", type=int, default=17300)
    parser.add_argument("--backend-ports", default="31000-31767")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clients on the last CPU, servers on the others (default: "
        "on, with 2 CPUs or more)",
    )
    args = parser.parse_args(argv)
    for key, full, quick in [("rounds", 3, 1), ("seconds", 5, 1), ("warmup", 3, 0)]:
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.variantList = args.variants.split(",")
    try:
        args.environments = {v: variantEnvironment(v) for v in args.variantList}
        args.connectionCounts = [int(c) for c in args.connections.split(",")]
    except ValueError as e:
        parser.error(str(e))
    if args.pin is None:
        args.pin = len(os.sched_getaffinity(0)) >= 2
    return args


def collectorCounts(before: Dict[str, float], after: Dict[str, float]) -> dict:
    """
    What rainbowd's metrics say the collector did between two scrapes.
    """

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    requests = delta("rainbowd_http_requests_total")
    nursery = after.get("rainbowd_pypy_gc_nursery_bytes")
    if not requests or nursery is None:
        return {}
    per = 10000 / requests
    minors = delta("rainbowd_pypy_gc_pause_seconds_count:minor")
    return {
        "requests": requests,
        "minorPer10k": minors * per,
        "stepsPer10k": delta("rainbowd_pypy_gc_pause_seconds_count:step") * per,
        "majorsPer10k": delta("rainbowd_pypy_gc_major_collections_total") * per,
        "gcMsPer10k": 1000 * per * (
            delta("rainbowd_pypy_gc_pause_seconds_sum:minor")
            + delta("rainbowd_pypy_gc_pause_seconds_sum:step")
        ),
        "nurseryBytesPerRequest": minors * nursery / requests,
    }


def run(args: argparse.Namespace, processes: proxy.Processes, workDir: str) -> dict:
    started = time.monotonic()
    ports = proxy.Ports(args.port_base, 2 * len(args.variantList))
    template = os.path.join(workDir, "backend-nginx.conf.in")
    with open(template, "w") as f:
        f.write(proxy.backendNginxConfig(workDir))
    nginxRun = proxy.nginxRunLine(workDir, template)
    pypy = None
    if any(env is not None for env in args.environments.values()):
        pypy = proxy.pypyVenv(args)
    daemons = {}
    for variant in args.variantList:
        env = args.environments[variant]
        if env is None or pypy is None:
            twistd = proxy.cpythonTwistd()
        else:
            twistd = [os.path.join(pypy, "bin", "twistd")]
        port = ports.next()
        ports.next()
        name = "rainbowd-" + variant.replace("/", "-")
        daemon = proxy.Rainbowd(
            name, twistd, workDir, port, nginxRun, args.backend_ports, env=env
        )
        daemon.start(processes)
        daemons[variant] = daemon
    settings = {}
    for variant, daemon in daemons.items():
        daemon.waitActive()
        proxy.checkAnswers(daemon.name, daemon.port)
        if args.environments[variant] is not None:
            settings[variant] = proxy.collectorSetting(daemon)
    print("every variant answers 200 with the backend's body", flush=True)
    variants = list(daemons)
    for variant in variants:
        if args.warmup:
            proxy.runWrk(daemons[variant].port, max(args.connectionCounts), args.warmup)
    runs: Dict[tuple, List[dict]] = {(v, c): [] for v in variants for c in args.connectionCounts}
    for number in range(args.rounds):
        order = variants[number % len(variants) :] + variants[: number % len(variants)]
        for variant in order:
            daemon = daemons[variant]
            for count in args.connectionCounts:
                before = proxy.scrapeMetrics(daemon.controlPort)
                report = proxy.runWrk(daemon.port, count, args.seconds)
                report.update(collectorCounts(before, proxy.scrapeMetrics(daemon.controlPort)))
                assert daemon.process is not None
                report["rssMiB"] = proxy.vmRSS(daemon.process.pid) / proxy.MiB
                runs[variant, count].append(report)
                print(
                    f"  round {number + 1}/{args.rounds}  {variant:<10} c={count:<3}"
                    f" {report['rps']:>7.0f} req/s  p99 {report['p99_us']:>7.0f} us"
                    f"  p99.9 {report['p999_us']:>7.0f} us",
                    flush=True,
                )
    rows = []
    for variant in variants:
        for count in args.connectionCounts:
            mine = runs[variant, count]

            def median(key: str) -> Optional[float]:
                values = [r[key] for r in mine if key in r]
                return statistics.median(values) if values else None

            rows.append(
                {
                    "variant": variant,
                    "connections": count,
                    "rps": median("rps"),
                    "p50_us": median("p50_us"),
                    "p99_us": median("p99_us"),
                    "p999_us": median("p999_us"),
                    "rssMiB": max(r["rssMiB"] for r in mine),
                    "minorPer10k": median("minorPer10k"),
                    "stepsPer10k": median("stepsPer10k"),
                    "majorsPer10k": median("majorsPer10k"),
                    "gcMsPer10k": median("gcMsPer10k"),
                    "nurseryBytesPerRequest": median("nurseryBytesPerRequest"),
                    "errors": sum(r["errorCount"] for r in mine),
                    "rounds": mine,
                }
            )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": proxy.machine(),
        "versions": proxy.versions(pypy),
        "collector": settings,
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "pinning": args.pinning,
        },
        "throughput": rows,
        "seconds": round(time.monotonic() - started),
        "machineAtEnd": proxy.machine(),
    }


def table(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    lines = [
        f"PyPy collector settings for rainbowd, {results['date']}",
        f"{m['nproc']} CPUs ({m['cpu']}), {m['kernel']}, load {m['loadavg']} at the "
        f"start, {results['machineAtEnd']['loadavg']} at the end; {results['seconds']} s",
        f"wrk -t1, keep-alive, {s['rounds']} rounds x {s['seconds']} s; medians over "
        f"rounds; RSS: the largest after a run; GC figures per 10k requests, from "
        f"rainbowd's metrics; pinning: {s['pinning']}",
        "",
        f"{'variant':<10} {'conns':>5} {'req/s':>7} {'p50 us':>7} {'p99 us':>7}"
        f" {'p99.9 us':>8} {'RSS MiB':>7} {'minor':>6} {'steps':>6} {'major':>6}"
        f" {'GC ms':>6} {'KB/req':>6}  errors",
    ]

    def f(value: Optional[float], spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for row in results["throughput"]:
        perRequest = row["nurseryBytesPerRequest"]
        lines.append(
            f"{row['variant']:<10} {row['connections']:>5} {row['rps']:>7.0f}"
            f" {row['p50_us']:>7.0f} {row['p99_us']:>7.0f} {row['p999_us']:>8.0f}"
            f" {row['rssMiB']:>7.1f} {f(row['minorPer10k'], '6.0f'):>6}"
            f" {f(row['stepsPer10k'], '6.0f'):>6} {f(row['majorsPer10k'], '6.2f'):>6}"
            f" {f(row['gcMsPer10k'], '6.1f'):>6}"
            f" {f(perRequest / 1000 if perRequest is not None else None, '6.0f'):>6}"
            f"  {row['errors'] or ''}"
        )
    lines += ["", "collector of each PyPy variant:"]
    lines += [f"  {v:<10} {setting}" for v, setting in results["collector"].items()]
    lines += ["", "versions:"]
    lines += [f"  {name:<9} {value}" for name, value in results["versions"].items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parseArguments(argv)
    for tool in ("nginx", "wrk", "taskset", "sed"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing; see bench/proxy.py's needs", file=sys.stderr)
            return 2

    def terminated(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    workDir = tempfile.mkdtemp(prefix="rainbowd-pypygc-")
    os.chmod(workDir, 0o755)
    serverCPUs = None
    args.pinning = "none"
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            print("--pin needs at least 2 CPUs", file=sys.stderr)
            return 2
        os.sched_setaffinity(0, cpus[-1:])
        serverCPUs = ",".join(str(cpu) for cpu in cpus[:-1])
        args.pinning = f"clients on CPU {cpus[-1]}, servers on CPU {serverCPUs}"
    processes = proxy.Processes(workDir, serverCPUs)
    status = 0
    try:
        results = run(args, processes, workDir)
    except proxy.BenchError as e:
        print(f"\nbenchmark failed: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for complaint in processes.stopAll():
            print(f"cleanup: {complaint}", file=sys.stderr)
        if status:
            print(f"configs and logs are in {workDir}", file=sys.stderr)
        else:
            shutil.rmtree(workDir, ignore_errors=True)
    if status:
        return status
    print()
    print(table(results))
    if args.json:
        import json

        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
        print(f"\nwritten to {args.json}")
    return 1 if any(row["errors"] for row in results["throughput"]) else 0


if __name__ == "__main__":
    sys.exit(main())
