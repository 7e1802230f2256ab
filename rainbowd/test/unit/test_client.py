"""
Tests for L{rainbowd.control.client}.
"""

import socket
from typing import Any, List, Optional

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.control.client import (
    Connection,
    ConnectionClosed,
    hostHeader,
)
from rainbowd.web.http1 import BadResponse


class FakeSocket:
    """
    A connected socket whose peer sends C{pieces}, one per C{recv}, then
    closes; a piece that is an exception is raised instead, as is
    C{sendError} when sending.
    """

    def __init__(self, pieces: List[Any], sendError: Optional[Exception] = None) -> None:
        self.pieces = list(pieces)
        self.sendError = sendError
        self.sent = b""
        self.closed = False
        self.asked: List[int] = []

    def sendall(self, data: bytes) -> None:
        if self.sendError is not None:
            raise self.sendError
        self.sent += data

    def recv(self, size: int) -> bytes:
        self.asked.append(size)
        piece = self.pieces.pop(0) if self.pieces else b""
        if isinstance(piece, Exception):
            raise piece
        return piece

    def close(self) -> None:
        self.closed = True


def exchange(pieces: List[bytes], method: str = "GET", body=None, headers={}):
    """
    Send a request on a L{Connection} to a L{FakeSocket} answering
    C{pieces}; return the socket and the response.
    """
    sock = FakeSocket(pieces)
    connection = Connection(lambda: sock, "127.0.0.1:7001")
    connection.request(method, "/status", body=body, headers=headers)
    return sock, connection.getresponse()


class RequestTests(SynchronousTestCase):
    """
    What L{Connection.request} sends.
    """

    def test_get(self) -> None:
        """
        A request without a body has no I{Content-Length}, asks for the
        connection to close, and sends the headers given.
        """
        sock, _ = exchange([b"HTTP/1.1 204 No Content\r\n\r\n"], headers={"Accept": "x/y"})
        self.assertEqual(
            sock.sent,
            b"GET /status HTTP/1.1\r\nHost: 127.0.0.1:7001\r\nAccept: x/y\r\n"
            b"Connection: close\r\n\r\n",
        )

    def test_postWithBody(self) -> None:
        """
        A body is sent after the head, with its length; an empty one too.
        """
        for body in (b'{"a": 1}', b""):
            sock, _ = exchange([b"HTTP/1.1 204 No Content\r\n\r\n"], "POST", body)
            head, _, sent = sock.sent.partition(b"\r\n\r\n")
            self.assertIn(b"\r\nContent-Length: %d\r\n" % (len(body),), head + b"\r\n")
            self.assertEqual(sent, body)

    def test_hostHeader(self) -> None:
        """
        The I{Host} header brackets an IPv6 address and leaves out the
        scheme's default port, as L{http.client} does.
        """
        self.assertEqual(hostHeader("127.0.0.1", 7001, 80), "127.0.0.1:7001")
        self.assertEqual(hostHeader("::1", 7001, 80), "[::1]:7001")
        self.assertEqual(hostHeader("web1", 80, 80), "web1")
        self.assertEqual(hostHeader("web1", 443, 443), "web1")
        self.assertEqual(hostHeader("web1", 80, 443), "web1:80")

    def test_hostHeaderZoneAndIDNA(self) -> None:
        """
        An IPv6 address's zone is left out, which the control site's Host
        check would not match, and a name that is not ASCII is sent in its
        IDNA form, as in C{controlAllowedHosts}; one that has none raises
        L{UnicodeError}.
        """
        self.assertEqual(hostHeader("fe80::1%lo", 7001, 80), "[fe80::1]:7001")
        self.assertEqual(hostHeader("bücher.example", 7001, 80), "xn--bcher-kva.example:7001")
        self.assertRaises(UnicodeError, hostHeader, "ü" * 70 + ".example", 7001, 80)


class ResponseTests(SynchronousTestCase):
    """
    How L{Connection.getresponse} and L{Response} read an answer.
    """

    def test_head(self) -> None:
        """
        The status, reason and headers are read, the headers by any case,
        even when the head comes a byte at a time.
        """
        answer = b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n"
        _, response = exchange([bytes([b]) for b in answer])
        self.assertEqual((response.status, response.reason), (409, "Conflict"))
        self.assertEqual(response.getheader("content-type"), "application/json")
        self.assertEqual(response.getheader("CONTENT-TYPE"), "application/json")
        self.assertIsNone(response.getheader("x-missing"))
        self.assertEqual(response.getheader("x-missing", ""), "")
        self.assertEqual(response.read(), b"")

    def test_contentLength(self) -> None:
        """
        A body of I{Content-Length} bytes is read to its end, not past it,
        and the connection is closed.
        """
        sock, response = exchange(
            [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123", b"456789", b"junk"]
        )
        self.assertEqual(response.read(), b"0123456789")
        self.assertEqual(response.read(), b"")
        self.assertTrue(sock.closed)
        self.assertEqual(sock.pieces, [b"junk"])

    def test_chunkedLines(self) -> None:
        """
        A chunked body is read a line at a time, lines split across chunks
        and reads, the last one without its newline, then C{b""}.
        """
        _, response = exchange(
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\n{\"a\":\r\n",
                b"4\r\n 1}\n\r\n3\r\n{}\n\r\n",
                b"2\r\nxy\r\n0\r\n\r\n",
            ]
        )
        self.assertEqual(
            [response.readline() for _ in range(5)],
            [b'{"a": 1}\n', b"{}\n", b"xy", b"", b""],
        )

    def test_untilClose(self) -> None:
        """
        A body with neither length nor chunks runs until the connection
        closes.
        """
        _, response = exchange([b"HTTP/1.0 200 OK\r\n\r\nab", b"cd"])
        self.assertEqual(response.read(), b"abcd")

    def test_headResponse(self) -> None:
        """
        The answer to HEAD has no body, whatever its I{Content-Length}.
        """
        sock, response = exchange(
            [b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"], "HEAD"
        )
        self.assertEqual(response.read(), b"")
        self.assertEqual(sock.asked, [65536])
        self.assertTrue(sock.closed)

    def test_interimSkipped(self) -> None:
        """
        An interim answer is skipped for the final one.
        """
        _, response = exchange(
            [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"]
        )
        self.assertEqual((response.status, response.read()), (200, b"x"))

    def test_closedBeforeHead(self) -> None:
        """
        A connection closed before the head has all come is
        L{ConnectionClosed}, which is a L{BadResponse}.
        """
        sock = FakeSocket([b"HTTP/1.1 200 OK\r\n"])
        connection = Connection(lambda: sock, "h")
        connection.request("GET", "/")
        error = self.assertRaises(ConnectionClosed, connection.getresponse)
        self.assertIsInstance(error, BadResponse)
        self.assertIn("before an answer came", str(error))
        self.assertTrue(sock.closed)

    def test_closedInBody(self) -> None:
        """
        A connection closed before a body of known length or a chunked one
        has all come is L{ConnectionClosed}, for L{Response.read} and
        L{Response.readline} alike.
        """
        for answer in (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01",
        ):
            _, response = exchange([answer])
            self.assertRaises(ConnectionClosed, response.read)
            _, response = exchange([answer])
            self.assertRaises(ConnectionClosed, response.readline)

    def test_badAnswer(self) -> None:
        """
        An answer the proxy's parser would refuse from an app is refused:
        L{BadResponse}, naming the problem.
        """
        error = self.assertRaises(
            BadResponse,
            exchange,
            [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
        )
        self.assertIn("two different Content-Lengths", str(error))
        error = self.assertRaises(BadResponse, exchange, [b"SSH-2.0-OpenSSH\r\n\r\n"])
        self.assertIn("not HTTP/1.1", str(error))


class ClosedOnErrorTests(SynchronousTestCase):
    """
    Whatever goes wrong, the socket is closed.
    """

    def assertClosedAfter(self, pieces: List[Any], error, read: str = "", sendError=None):
        sock = FakeSocket(pieces, sendError)
        connection = Connection(lambda: sock, "h")
        if sendError is not None:
            self.assertRaises(error, connection.request, "GET", "/")
        else:
            connection.request("GET", "/")
            if read:
                response = connection.getresponse()
                self.assertRaises(error, getattr(response, read))
            else:
                self.assertRaises(error, connection.getresponse)
        self.assertTrue(sock.closed)

    def test_sendFails(self) -> None:
        """
        A request that cannot be sent.
        """
        self.assertClosedAfter([], BrokenPipeError, sendError=BrokenPipeError())

    def test_badHead(self) -> None:
        """
        An answer whose head is refused, or whose head never comes.
        """
        self.assertClosedAfter([b"SSH-2.0-x\r\n\r\n"], BadResponse)
        self.assertClosedAfter(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"], BadResponse
        )
        self.assertClosedAfter([socket.timeout("timed out")], socket.timeout)

    def test_badBody(self) -> None:
        """
        A bad chunk, with the head or after it, and a body that times out.
        """
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.assertClosedAfter([chunked + b"zz\r\n"], BadResponse)
        self.assertClosedAfter([chunked, b"zz\r\n"], BadResponse, "read")
        self.assertClosedAfter([chunked, socket.timeout("timed out")], socket.timeout, "readline")
