"""
What rainbowd's per-request hooks cost: the metrics, the access log in
each format, and the proxy site's hook around them.

    python3 bench/requestlog.py [repeats]

Each figure is the best of 5 runs, in microseconds per request.
"""

import os
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel

from rainbowd.control.metrics import Metrics
from rainbowd.web.accesslog import AccessLog, Both, openLog
from rainbowd.web.proxy import ProxyRequest, ProxySite


class Deployer:
    backends = []
    active = None

    def observe(self, observer):
        return lambda: None


def request():
    channel = DummyChannel()
    channel.transport.client = IPv4Address("TCP", "192.0.2.7", 54321)
    r = ProxyRequest(channel)
    r.method = b"GET"
    r.uri = r.path = b"/some/path?x=1"
    r.clientproto = b"HTTP/1.1"
    r.code = 200
    r.sentLength = 1234
    r.requestHeaders.setRawHeaders(b"host", [b"app.example"])
    r.requestHeaders.setRawHeaders(b"user-agent", [b"Mozilla/5.0 (X11; Linux x86_64)"])
    r.requestHeaders.setRawHeaders(b"referer", [b"https://app.example/"])
    r.backendGeneration = 3
    return r


def best(f, number):
    return min(timeit.repeat(f, number=number, repeat=5)) / number * 1e6


def main(number=100000):
    reactor = MemoryReactorClock()
    reactor.advance(1795745551.25)
    r = request()
    metrics = Metrics(Deployer(), processMetrics=False)
    directory = tempfile.mkdtemp()
    logs = {}
    for format in ("combined", "json"):
        path = os.path.join(directory, format + ".log")
        logs[format] = AccessLog(openLog(path), format, reactor)

    figures = [
        ("metrics.finished", lambda: metrics.finished(r, 0.003)),
        ("accessLog combined", lambda: logs["combined"].finished(r, 0.003)),
        ("accessLog json", lambda: logs["json"].finished(r, 0.003)),
    ]

    leaf = Resource()
    leaf.isLeaf = True
    both = Both(metrics, logs["combined"])
    for name, requestLog in [
        ("site hook, off", None),
        ("site hook, metrics", metrics),
        ("site hook, metrics + combined", both),
    ]:
        site = ProxySite(leaf, reactor=reactor)
        site.requestLog = requestLog

        def served(site=site):
            # What ProxyRequest.process and ProxySite.log do for a request.
            r.receivedAt = None
            if site.requestLog is not None:
                r.receivedAt = site.reactor.seconds()
            site.log(r)
        figures.append((name, served))

    for name, f in figures:
        print(f"{name:32} {best(f, number):6.2f} us/request")
    for log in logs.values():
        log.stop()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
