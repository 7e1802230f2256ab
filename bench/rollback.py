#!/usr/bin/env python3
"""
How long a rollback to the standby takes, on a real C{twistd rainbowd} and
the stdlib test app:

    python3 bench/rollback.py [--tries N]

Each try redeploys (v1 and v2 in turn), waits until the old version is the
standby, then times C{POST /rollback}: from sending the request to the end
of its answer (the switch happens before the answer is written), and
rainbowd's own C{seconds}, from the deploy's start to the switch.  It
prints the distribution of both, in ms.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import TEST_APP, Ports, Rainbowd, percentile, waitFor  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=50)
    parser.add_argument("--first-port", type=int, default=17800)
    parser.add_argument("--backend-ports", default="23000-23999")
    args = parser.parse_args(argv)
    daemon = Rainbowd(
        "rollback",
        Ports(args.first_port),
        args.backend_ports,
        run=f"exec {sys.executable} {TEST_APP} $1 $2",
        rollbackWindow=600000,
    )
    roundTrips, switches = [], []
    try:
        daemon.start()
        daemon.serving()
        for attempt in range(args.tries):
            daemon.writeConfig(env={"APP_VERSION": f"v{attempt % 2 + 2}"})
            code, answer = daemon.control("POST", "/redeploy")
            assert code == 200, answer
            waitFor(lambda: daemon.status()["standby"] is not None, "a standby")
            started = time.perf_counter()
            code, answer = daemon.control("POST", "/rollback")
            roundTrips.append((time.perf_counter() - started) * 1000)
            assert code == 200, answer
            switches.append(answer["seconds"] * 1000)
            waitFor(lambda: len(daemon.status()["backends"]) == 1, "the old one to stop")
    finally:
        daemon.cleanUp()
    for name, values in (("request to answer", roundTrips), ("deploy start to switch", switches)):
        print(
            f"{name:24} n={len(values)}  min {min(values):.1f}  "
            + "  ".join(f"p{p} {percentile(values, p):.1f}" for p in (50, 90, 99))
            + f"  max {max(values):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
