# -*- test-case-name: rainbowd.test.unit.test_accesslog -*-
"""
Tests for L{rainbowd.web.accesslog}.
"""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.test.inmemory import (
    BackendApp,
    FakeBackend,
    World,
    backendSite,
    later,
    rawRequest,
)
from rainbowd.web.accesslog import FLUSH_INTERVAL, AccessLog, openLog

#: 2026-11-27 02:12:31 UTC.
NOW = 1795745551.25

REQUEST = rawRequest(
    b"GET",
    b"/a?b=1",
    (
        (b"Host", b"app.example"),
        (b"User-Agent", b"curl/8.5.0"),
        (b"Referer", b'http://x/"q"'),
    ),
)


class AccessLogTests(SynchronousTestCase):
    """
    Requests through the proxy are written to the access log, a line each.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.world = World(queueTimeout=5.0)
        self.world.reactor.advance(NOW)
        self.world.deployer.activate(FakeBackend(generation=3, port=20001))
        self.app = BackendApp(later)
        self.site = backendSite(self.world, self.app)

    def logging(self, format: str) -> AccessLog:
        accessLog = AccessLog(openLog(self.path), format, self.world.reactor)
        accessLog.start()
        self.addCleanup(accessLog.stop)
        self.world.site.requestLog = accessLog
        return accessLog

    def lines(self):
        with open(self.path) as f:
            return f.read().splitlines()

    def serve(self, raw: bytes = REQUEST, seconds: float = 0.0) -> None:
        """
        Proxy C{raw} to a backend that answers "hello" after C{seconds}.
        """
        self.world.request(raw)
        if self.world.attempts():
            self.world.accept(self.site)
        self.world.reactor.advance(seconds)
        self.app.live[-1].write(b"hello")
        self.app.live[-1].finish()
        self.world.flush()

    def test_combined(self) -> None:
        """
        The combined format is nginx's: client, time, request line, status,
        body bytes, referrer and user agent, with quotes escaped.
        """
        self.logging("combined")
        self.serve()
        self.world.reactor.advance(FLUSH_INTERVAL)
        self.assertEqual(
            self.lines(),
            [
                '192.0.2.7 - - [27/Nov/2026:02:12:31 +0000] "GET /a?b=1 HTTP/1.1" '
                '200 5 "http://x/\\x22q\\x22" "curl/8.5.0"'
            ],
        )

    def test_combinedEscapes(self) -> None:
        """
        Bytes that are not printable ASCII are escaped, and a missing header
        is "-".
        """
        self.logging("combined")
        self.serve(
            rawRequest(
                b"GET", b"/a\\b", ((b"Host", b"x"), (b"User-Agent", b"caf\xc3\xa9"))
            )
        )
        self.world.reactor.advance(FLUSH_INTERVAL)
        [line] = self.lines()
        self.assertIn('"GET /a\\x5Cb HTTP/1.1" 200 5 "-" "caf\\xC3\\xA9"', line)

    def test_json(self) -> None:
        """
        The JSON format has the same facts, plus the generation that served
        the request and its duration in seconds.
        """
        self.logging("json")
        self.serve(seconds=0.125)
        self.world.reactor.advance(FLUSH_INTERVAL)
        [line] = self.lines()
        self.assertEqual(
            json.loads(line),
            {
                "time": "2026-11-27T02:12:31.375Z",
                "client": "192.0.2.7",
                "method": "GET",
                "uri": "/a?b=1",
                "protocol": "HTTP/1.1",
                "status": 200,
                "bytes": 5,
                "referer": 'http://x/"q"',
                "userAgent": "curl/8.5.0",
                "generation": 3,
                "duration": 0.125,
                "complete": True,
            },
        )

    def test_jsonEscapes(self) -> None:
        """
        UTF-8 in a request comes out as the text it is; other bytes as
        C{\\xHH}.
        """
        self.logging("json")
        self.serve(
            rawRequest(
                b"GET",
                b"/",
                (
                    (b"Host", b"x"),
                    (b"User-Agent", b"caf\xc3\xa9"),
                    (b"Referer", b"/a\xff"),
                ),
            )
        )
        self.world.reactor.advance(FLUSH_INTERVAL)
        [line] = self.lines()
        self.assertTrue(line.isascii())
        event = json.loads(line)
        self.assertEqual(
            (event["referer"], event["userAgent"]), ("/a\\xff", "caf\u00e9")
        )

    def test_hangUpLogged(self) -> None:
        """
        A request whose client hangs up before any response is logged with
        status 499, as nginx does.
        """
        self.logging("json")
        client = self.world.request(REQUEST)
        self.world.accept(backendSite(self.world, BackendApp(later)))
        client.hangUp()
        self.world.flush()
        self.world.reactor.advance(FLUSH_INTERVAL)
        [line] = self.lines()
        self.assertEqual(
            (json.loads(line)["status"], json.loads(line)["complete"]), (499, False)
        )

    def test_buffered(self) -> None:
        """
        Lines are written to the file once a second, not one write each, and
        when the log stops.
        """
        accessLog = self.logging("combined")
        self.serve()
        self.serve()
        self.assertEqual(self.lines(), [])
        self.world.reactor.advance(FLUSH_INTERVAL)
        self.assertEqual(len(self.lines()), 2)
        self.serve()
        accessLog.stop()
        self.assertEqual(len(self.lines()), 3)

    def test_appends(self) -> None:
        """
        The file is appended to, not replaced.
        """
        with open(self.path, "w") as f:
            f.write("earlier\n")
        self.logging("combined")
        self.serve()
        self.world.reactor.advance(FLUSH_INTERVAL)
        self.assertEqual(self.lines()[0], "earlier")
        self.assertEqual(len(self.lines()), 2)
