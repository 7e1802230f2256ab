"""
What parsing a backend's response head costs: the code rainbowd had before
rainbowd.web.http1 (BackendConnection._head, loaded from the commit named
below), the same step now (ResponseParser.receive, then the connection's
_head, which tells the handler), the parser alone, and h11 (its parsing
alone, then with the making of a connection and the sending of its request,
which h11 needs before it can read a response).

    python3 bench/http1.py [repeats]

Run it from a git checkout, which the old code is read from.  Each figure is
the best of C{repeats} runs (5 by default) of 20,000 heads, in microseconds
per head, with the median run after it; the runs take turns, so that a busy
moment of the machine falls on each alike.
"""

import os
import statistics
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import h11  # noqa: E402
from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from rainbowd.web import backendclient  # noqa: E402
from rainbowd.web.http1 import ResponseParser  # noqa: E402

BEFORE = "c41004b"
"""
The last commit whose backend client parsed response heads itself.
"""

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: gunicorn\r\n"
    b"Date: Tue, 01 Dec 2026 20:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Length: 13\r\n"
    b"X-Request-Id: 3f2c9a1e-77b0-4c55\r\n"
    b"Cache-Control: no-cache\r\n"
    b"\r\n"
)

N = 20000


class Handler:
    upgrade = False

    def responseHead(self, code, phrase, headers):
        pass


def oldModule():
    """
    rainbowd.backendclient as it was at L{BEFORE}.
    """
    source = subprocess.run(
        ["git", "show", BEFORE + ":rainbowd/backendclient.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    module = types.ModuleType("oldbackendclient")
    exec(compile(source, "oldbackendclient.py", "exec"), module.__dict__)
    return module


def connection(module):
    pool = module.Pool(MemoryReactorClock(), 20001)
    connection = module.BackendConnection(pool)
    connection.handler = Handler()
    return connection


def old(module):
    c = connection(module)
    head = c._head
    state = module._HEAD
    start = time.perf_counter()
    for _ in range(N):
        c._state = state
        head(HEAD, 0)
    return time.perf_counter() - start


def new():
    c = connection(backendclient)
    parser = c._parser
    begin = parser.begin
    receive = parser.receive
    head = c._head
    start = time.perf_counter()
    for _ in range(N):
        begin(False, False)
        head(receive(HEAD))
    return time.perf_counter() - start


def parserAlone():
    parser = ResponseParser()
    begin = parser.begin
    receive = parser.receive
    start = time.perf_counter()
    for _ in range(N):
        begin(False, False)
        receive(HEAD)
    return time.perf_counter() - start


def h11Connections():
    connections = []
    for _ in range(N):
        c = h11.Connection(h11.CLIENT)
        c.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        c.send(h11.EndOfMessage())
        connections.append(c)
    return connections


def withH11():
    connections = h11Connections()
    start = time.perf_counter()
    for c in connections:
        c.receive_data(HEAD)
        c.next_event()
    return time.perf_counter() - start


def withFreshH11():
    start = time.perf_counter()
    for _ in range(N):
        c = h11.Connection(h11.CLIENT)
        c.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        c.send(h11.EndOfMessage())
        c.receive_data(HEAD)
        c.next_event()
    return time.perf_counter() - start


def opcodes(step):
    """
    How many bytecodes of Python C{step()} runs: a count that, unlike time,
    a busy machine does not blur.
    """
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        step()
    finally:
        sys.settrace(None)
    return count


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    module = oldModule()
    rows = [
        ("before (BackendConnection._head at {})".format(BEFORE), lambda: old(module)),
        ("now (ResponseParser.receive + _head)", new),
        ("ResponseParser.receive alone", parserAlone),
        ("h11 (receive_data + next_event)", withH11),
        ("h11, with a new Connection and its request", withFreshH11),
    ]
    print(
        "{}-byte head, {} heads a run, best and median of {} runs".format(
            len(HEAD), N, repeats
        )
    )
    # In turns, so that a busy moment of the machine falls on all alike.
    times = [[] for _ in rows]
    for _ in range(repeats):
        for (name, run), each in zip(rows, times):
            each.append(run() / N * 1e6)
    results = [
        (name, min(each), statistics.median(each))
        for (name, run), each in zip(rows, times)
    ]
    oldConnection = connection(module)
    newConnection = connection(backendclient)
    parser = newConnection._parser

    def oldStep():
        oldConnection._state = module._HEAD
        oldConnection._head(HEAD, 0)

    def newStep():
        parser.begin(False, False)
        newConnection._head(parser.receive(HEAD))

    print(
        "Python bytecodes run a head: before {}, now {}".format(
            opcodes(oldStep), opcodes(newStep)
        )
    )
    base = results[0][1]
    for name, best, median in results:
        print(
            "{:<48} {:6.2f} us  (median {:6.2f})  {:5.2f}x before".format(
                name, best, median, best / base
            )
        )


if __name__ == "__main__":
    main()
