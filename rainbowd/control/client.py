# -*- test-case-name: rainbowd.test.unit.test_client -*-
"""
The blocking HTTP/1.1 client that C{rainbowctl} asks its one question with:
a request on a connection of its own, and the answer read as it comes.

It does what C{rainbowctl} needed of L{http.client}, which imports
L{email.parser} and more for its headers: a quarter of the time
C{rainbowctl} took to start.  The answer is parsed by L{rainbowd.web.http1},
the same sans-IO parser the proxy reads the app's responses with, so a
framing it would refuse from an app it refuses from rainbowd too.
"""

import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Protocol

from rainbowd.web.http1 import (
    CHUNKED,
    LENGTH,
    UNTIL_CLOSE,
    BadResponse,
    ChunkedDecoder,
    ResponseParser,
)

if TYPE_CHECKING:
    import ssl

#: How many bytes one C{recv} asks for.
READ_SIZE = 65536


class Socket(Protocol):
    """
    What a L{Connection} needs of its socket (a L{socket.socket}; tests
    pass a fake).
    """

    def sendall(self, __data: bytes) -> None:
        ...

    def recv(self, __size: int) -> bytes:
        ...

    def close(self) -> None:
        ...


class ConnectionClosed(BadResponse):
    """
    The connection closed before the answer's head or body was all read.
    """


@contextmanager
def _closedOnError(sock: Socket) -> Iterator[None]:
    """
    Close C{sock} if what the block does with it fails, however it fails
    (a timeout, a bad answer, ^C), so that no error leaves it open.
    """
    try:
        yield
    except BaseException:
        sock.close()
        raise


class Response:
    """
    An answer whose head has been read: its C{status}, C{reason} and
    headers, and its body to L{read} or to read a line at a time.
    """

    def __init__(self, parser: ResponseParser, sock: Socket, rest: bytes) -> None:
        self.status = parser.status
        self.reason = parser.reason.decode("latin-1")
        self._headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in parser.headers
        }
        self._sock = sock
        self._framing = parser.framing
        self._remaining = parser.length
        self._decoder: Optional[ChunkedDecoder] = None
        if self._framing == CHUNKED:
            self._decoder = ChunkedDecoder()
            self._decoder.begin()
        self._done = self._framing not in (LENGTH, CHUNKED, UNTIL_CLOSE) or (
            self._framing == LENGTH and self._remaining == 0
        )
        # What has come of the body and is not yet read: a bytearray, so
        # that adding to its end and taking lines off its start do not copy
        # the rest each time (a long history, or logs, is many lines).
        self._body = bytearray()
        self._searched = 0
        if self._done:
            sock.close()
        with _closedOnError(sock):
            self._feed(rest)

    def getheader(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """
        The value of header C{name} (in any case), or C{default}.
        """
        return self._headers.get(name.lower(), default)

    def read(self) -> bytes:
        """
        The rest of the body, once it has all come.

        @raise ConnectionClosed: if the connection closed before its end.
        @raise OSError: if reading failed, or timed out.
        """
        while not self._done:
            self._receive()
        body = bytes(self._body)
        del self._body[:]
        self._searched = 0
        return body

    def readline(self) -> bytes:
        """
        The body's next line, with its C{\\n}; the last one without, if the
        body does not end with one; C{b""} once the body is over.

        @raise ConnectionClosed: if the connection closed before its end.
        @raise OSError: if reading failed, or timed out.
        """
        while True:
            newline = self._body.find(b"\n", self._searched)
            if newline != -1 or self._done:
                end = len(self._body) if newline == -1 else newline + 1
                line = bytes(self._body[:end])
                del self._body[:end]
                self._searched = 0
                return line
            self._searched = len(self._body)
            self._receive()

    def close(self) -> None:
        """
        Close the connection, whatever of the body is still to come.
        """
        self._sock.close()

    def _receive(self) -> None:
        with _closedOnError(self._sock):
            data = self._sock.recv(READ_SIZE)
            if not data:
                self._sock.close()
                if self._framing != UNTIL_CLOSE:
                    raise ConnectionClosed("the connection closed before the end of the answer")
                self._done = True
                return
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._done or not data:
            return
        if self._decoder is not None:
            after = self._decoder.decode(data)
            self._body += b"".join(self._decoder.pieces)
            self._done = after is not None
        elif self._framing == LENGTH:
            data = data[: self._remaining]
            self._remaining -= len(data)
            self._body += data
            self._done = self._remaining == 0
        else:
            self._body += data
        if self._done:
            self._sock.close()


class Connection:
    """
    One request, and its answer, on a connection of its own: the part of
    L{http.client.HTTPConnection} that C{rainbowctl} uses.

    @param connect: Opens the connection (with its timeout set).

    @ivar host: The I{Host} header it sends.
    """

    def __init__(self, connect: Callable[[], Socket], host: str) -> None:
        self._connect = connect
        self.host = host
        self._sock: Optional[Socket] = None
        self._headOnly = False

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Dict[str, str] = {},
    ) -> None:
        """
        Connect, and send the request: C{body} with its I{Content-Length},
        if not L{None}.

        @raise OSError: if the connection cannot be made or written to.
        """
        lines: List[str] = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._headOnly = method == "HEAD"
        sock = self._sock = self._connect()
        with _closedOnError(sock):
            sock.sendall(head + (body or b""))

    def getresponse(self) -> Response:
        """
        Read the answer's head.

        @raise BadResponse: if it is not HTTP/1.1 that can be read one way
            only (L{ConnectionClosed} if the connection closed first).
        @raise OSError: if reading failed, or timed out.
        """
        sock = self._sock
        assert sock is not None, "getresponse() before request()"
        parser = ResponseParser()
        parser.begin(headOnly=self._headOnly, upgrade=False)
        with _closedOnError(sock):
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    raise ConnectionClosed("the connection closed before an answer came")
                rest = parser.receive(data)
                if rest is not None:
                    return Response(parser, sock, rest)


def hostHeader(host: str, port: int, defaultPort: int) -> str:
    """
    The I{Host} header for C{host} and C{port}, as L{http.client} sends
    it: an IPv6 address in brackets, without its zone (C{%eth0}); a name
    that is not ASCII in its IDNA form (C{xn--...}); the port left out if
    it is the scheme's C{defaultPort}.

    @raise UnicodeError: if C{host} is not ASCII and has no IDNA form.
    """
    if ":" in host:
        host = "[{}]".format(host.partition("%")[0])
    elif not host.isascii():
        host = host.encode("idna").decode("ascii")
    return host if port == defaultPort else f"{host}:{port}"


def tcpConnection(host: str, port: int, timeout: Optional[float]) -> Connection:
    """
    A L{Connection} to C{host} and C{port} over plain TCP.
    """
    return Connection(
        lambda: socket.create_connection((host, port), timeout),
        hostHeader(host, port, 80),
    )


def unixConnection(path: str, timeout: Optional[float]) -> Connection:
    """
    A L{Connection} to the unix socket at C{path}.
    """

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    return Connection(connect, "localhost")


def tlsConnection(
    host: str, port: int, context: "ssl.SSLContext", timeout: Optional[float]
) -> Connection:
    """
    A L{Connection} to C{host} and C{port} over TLS with C{context}, the
    certificate checked for C{host}.
    """

    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout)
        try:
            return context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    return Connection(connect, hostHeader(host, port, 443))
