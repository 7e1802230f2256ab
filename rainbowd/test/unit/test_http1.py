# -*- test-case-name: rainbowd.test.unit.test_http1 -*-
"""
Tests for L{rainbowd.web.http1}: the response parser and the chunked decoder on
their own, and their verdicts against h11's on generated responses.
"""

from typing import List, Optional, Tuple

import h11

# h11 says how a response is framed only through this private function; if
# it goes, the comparison below fails loudly, on import.
from h11._connection import _body_framing
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.web.http1 import (
    CHUNKED,
    LENGTH,
    MAX_HEAD,
    NO_BODY,
    SWITCHED,
    UNTIL_CLOSE,
    BadResponse,
    ChunkedDecoder,
    ResponseParser,
)


def parsed(
    raw: bytes, headOnly: bool = False, upgrade: bool = False
) -> Tuple[ResponseParser, Optional[bytes]]:
    """
    A parser that was given C{raw} in one piece, and what it returned.
    """
    parser = ResponseParser()
    parser.begin(headOnly, upgrade)
    return parser, parser.receive(raw)


class ResponseParserTests(SynchronousTestCase):
    """
    L{ResponseParser} reads a response head into its status, the headers to
    relay, its framing and whether the connection persists.
    """

    def test_contentLength(self) -> None:
        """
        A response with a I{Content-Length} has that many bytes of body, and
        its connection persists in HTTP/1.1.
        """
        parser, rest = parsed(
            b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertEqual(
            (parser.status, parser.reason, parser.headers),
            (201, b"Created", [(b"X-A", b"1"), (b"Content-Length", b"5")]),
        )
        self.assertEqual((parser.framing, parser.length), (LENGTH, 5))
        self.assertTrue(parser.keepAlive)
        self.assertFalse(parser.interim)
        self.assertEqual(rest, b"hello")

    def test_chunked(self) -> None:
        """
        A chunked response is framed by its chunks, and its
        I{Transfer-Encoding} is not among the headers to relay.
        """
        parser, rest = parsed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        self.assertEqual((parser.framing, parser.headers), (CHUNKED, []))
        self.assertTrue(parser.keepAlive)
        self.assertEqual(rest, b"0\r\n\r\n")

    def test_untilClose(self) -> None:
        """
        A response with neither I{Content-Length} nor I{Transfer-Encoding}
        runs until the connection closes, which therefore does not persist.
        """
        parser, rest = parsed(b"HTTP/1.1 200 OK\r\n\r\nabc")
        self.assertEqual((parser.framing, parser.keepAlive), (UNTIL_CLOSE, False))
        self.assertEqual(rest, b"abc")

    def test_noBody(self) -> None:
        """
        The answer to HEAD, a 204 and a 304 have no body, and keep their
        I{Content-Length} to relay.
        """
        for raw, headOnly in [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", True),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", False),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False),
            (b"HTTP/1.1 304 Not Modified\r\n\r\n", False),
        ]:
            parser, rest = parsed(raw, headOnly)
            self.assertEqual((parser.framing, rest), (NO_BODY, b""), raw)
            self.assertTrue(parser.keepAlive, raw)
        self.assertEqual(parser.headers, [])

    def test_interimSkipped(self) -> None:
        """
        Interim responses are skipped, their headers dropped, and the final
        response says they came.
        """
        parser, rest = parsed(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual((parser.status, parser.interim), (200, True))
        self.assertEqual(parser.headers, [(b"Content-Length", b"2")])
        self.assertEqual(rest, b"ok")

    def test_interimInAnEarlierRead(self) -> None:
        """
        Interim responses that came in an earlier call than the final head
        are not counted in C{interim}, as the backend client has always
        read them.
        """
        parser = ResponseParser()
        parser.begin(False, False)
        self.assertIsNone(parser.receive(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1"))
        self.assertEqual(parser.receive(b" 200 OK\r\n\r\n"), b"")
        self.assertEqual((parser.status, parser.interim), (200, False))

    def test_switched(self) -> None:
        """
        A 101 to a request asking to upgrade switches protocols, and keeps
        all its headers, hop-by-hop ones too; to another request it is
        refused.
        """
        raw = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nhello"
        )
        parser, rest = parsed(raw, upgrade=True)
        self.assertEqual((parser.status, parser.framing), (101, SWITCHED))
        self.assertEqual(
            parser.headers, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
        )
        self.assertEqual(rest, b"hello")
        parser = ResponseParser()
        parser.begin(False, False)
        self.assertRaises(BadResponse, parser.receive, raw)

    def test_hopByHopDropped(self) -> None:
        """
        The hop-by-hop headers, and those the I{Connection} header names,
        are not among the headers to relay.
        """
        parser, rest = parsed(
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\nX-Secret: 1\r\nTrailer: X-B\r\n"
            b"Upgrade: h2c\r\nProxy-Connection: close\r\nX-Kept: 2\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.assertEqual(
            parser.headers, [(b"X-Kept", b"2"), (b"Content-Length", b"0")]
        )

    def test_keepAlive(self) -> None:
        """
        The connection persists by default in HTTP/1.1, with I{Connection:
        keep-alive} in HTTP/1.0, and never with I{Connection: close}, after
        a chunked HTTP/1.0 response, or after one with both
        I{Content-Length} and chunked.
        """
        for head, persists in [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0", True),
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0", False),
            (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n", False),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0", False),
            (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0", True),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", True),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                b"Transfer-Encoding: chunked",
                False,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked",
                False,
            ),
        ]:
            parser, rest = parsed(head + b"\r\n\r\n")
            self.assertEqual(parser.keepAlive, persists, head)

    def test_lengthAndChunked(self) -> None:
        """
        Chunked wins over a I{Content-Length}, which is not relayed.
        """
        parser, rest = parsed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        )
        self.assertEqual((parser.framing, parser.headers), (CHUNKED, [(b"X-A", b"1")]))

    def test_contentLengthRepeated(self) -> None:
        """
        A I{Content-Length} repeated with the same value, in a list or in
        two headers, is relayed once, as digits.
        """
        parser, rest = parsed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5 , 5\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        self.assertEqual(
            (parser.length, parser.headers), (5, [(b"Content-Length", b"5")])
        )

    def test_bareLineFeeds(self) -> None:
        """
        A head may end its lines with bare LFs, or mix them with CRLFs; it
        ends at its first empty line.
        """
        for raw in [
            b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 4\n\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 4\r\n\n\r\n\r\n",
        ]:
            parser, rest = parsed(raw)
            self.assertEqual(parser.headers[0], (b"X-A", b"1"))
            self.assertEqual(rest, b"\r\n\r\n")

    def test_inPieces(self) -> None:
        """
        A head cut anywhere, in any number of pieces, is read as it is in
        one.
        """
        raw = (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        for cut in range(len(raw) - 2):
            parser = ResponseParser()
            parser.begin(False, False)
            self.assertIsNone(parser.receive(raw[:cut]))
            self.assertEqual(parser.receive(raw[cut:]), b"ok")
            self.assertEqual(
                (parser.status, parser.length, parser.headers[0]),
                (200, 2, (b"X-A", b"1")),
            )
        parser = ResponseParser()
        parser.begin(False, False)
        for i in range(len(raw) - 3):
            self.assertIsNone(parser.receive(raw[i : i + 1]))
        self.assertEqual(parser.receive(raw[-3:]), b"ok")

    def test_nextResponse(self) -> None:
        """
        After L{ResponseParser.begin}, the parser reads the next response on
        the connection afresh.
        """
        parser, rest = parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        parser.begin(True, False)
        self.assertIsNone(parser.receive(b"HTTP/1.1 404 Not"))
        self.assertEqual(parser.receive(b" Found\r\nX-B: 2\r\n\r\n"), b"")
        self.assertEqual(
            (parser.status, parser.reason, parser.framing, parser.headers),
            (404, b"Not Found", NO_BODY, [(b"X-B", b"2")]),
        )

    def test_refused(self) -> None:
        """
        A head that cannot be read one way only is refused, with a message
        that names what is wrong.
        """
        ok = b"HTTP/1.1 200 OK\r\n"
        for raw, message in [
            (b"HTTP/2 200 OK\r\n\r\n", "not HTTP/1.1"),
            (b"ICY 200 OK\r\n\r\n", "not HTTP/1.1"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "not HTTP/1.1"),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", "not HTTP/1.1"),
            (b"HTTP/1.1 200 O\rK\r\n\r\n", "bare CR or a NUL"),
            (ok + b"X-A: a\rb\r\n\r\n", "bare CR or a NUL"),
            (ok + b"X-A: a\x00b\r\n\r\n", "bare CR or a NUL"),
            (ok + b"X-A: 1\n\r\r\n\r\n", "malformed header line"),
            (ok + b"X-A 1\r\n\r\n", "malformed header line"),
            (ok + b"X-A : 1\r\n\r\n", "malformed header line"),
            (ok + b"X(A): 1\r\n\r\n", "malformed header line"),
            (ok + b": 1\r\n\r\n", "malformed header line"),
            (ok + b"X-A: 1\r\n 2\r\n\r\n", "folded header line"),
            (ok + b"X-A: 1\r\n\t2\r\n\r\n", "folded header line"),
            (ok + b"Content-Length: +5\r\n\r\n", "bad Content-Length"),
            (ok + b"Content-Length: 5, 6\r\n\r\n", "bad Content-Length"),
            (ok + b"Content-Length: \r\n\r\n", "bad Content-Length"),
            (ok + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", "two different"),
            (ok + b"Transfer-Encoding: gzip\r\n\r\n", "other than chunked"),
            (ok + b"Transfer-Encoding: gzip, chunked\r\n\r\n", "other than chunked"),
            (
                ok + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "other than chunked",
            ),
            (ok + b"X-A: " + b"a" * MAX_HEAD + b"\r\n\r\n", "over 64 KiB"),
            (ok + b"X-A: " + b"a" * MAX_HEAD, "over 64 KiB"),
            (ok + b"X-A: " + b"a" * MAX_HEAD + b"\n\n", "over 64 KiB"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "not asking to"),
        ]:
            parser = ResponseParser()
            parser.begin(False, False)
            with self.assertRaises(BadResponse, msg=raw[:80]) as caught:
                parser.receive(raw)
            self.assertIn(message, str(caught.exception), raw[:80])

    def test_justUnderTheLimit(self) -> None:
        """
        A head of exactly L{MAX_HEAD} bytes, without its empty line, is read.
        """
        head = b"HTTP/1.1 200 OK\r\nX-A: "
        head += b"a" * (MAX_HEAD - len(head))
        parser, rest = parsed(head + b"\r\n\r\n")
        self.assertEqual(rest, b"")
        self.assertEqual(len(parser.headers[0][1]), MAX_HEAD - 22)


class ChunkedDecoderTests(SynchronousTestCase):
    """
    L{ChunkedDecoder} turns a chunked body into its pieces of data, and
    finds where it ends.
    """

    def decode(self, *pieces: bytes) -> Tuple[List[bytes], Optional[bytes]]:
        """
        The data a new decoder hands out for C{pieces}, and the bytes after
        the body, once it is over.
        """
        decoder = ChunkedDecoder()
        decoder.begin()
        data = []
        rest = None
        for piece in pieces:
            rest = decoder.decode(piece)
            data.extend(decoder.pieces)
        return data, rest

    def test_chunks(self) -> None:
        """
        Chunk sizes in either case of hex, with extensions, then a trailer
        that is dropped: the body is the chunks' data, and the bytes after
        it are handed back.
        """
        data, rest = self.decode(
            b"A ; a=b\r\n0123456789\r\n0a\r\nabcdefghij\r\n00\r\nX-T: 1\r\n\r\nnext"
        )
        self.assertEqual(data, [b"0123456789", b"abcdefghij"])
        self.assertEqual(rest, b"next")

    def test_byteByByte(self) -> None:
        """
        A body a byte at a time, with bare LF line endings, is decoded whole.
        """
        body = b"5\nhello\n3;x\r\nabc\n0\n\n"
        data, rest = self.decode(*(body[i : i + 1] for i in range(len(body))))
        self.assertEqual(b"".join(data), b"helloabc")
        self.assertEqual(rest, b"")

    def test_notOverYet(self) -> None:
        """
        Until the empty line after the last chunk, the body is not over.
        """
        for body in [b"5\r\nhel", b"5\r\nhello\r\n", b"0\r\n", b"0\r\nX-T: 1\r\n"]:
            data, rest = self.decode(body)
            self.assertIsNone(rest, body)

    def test_refused(self) -> None:
        """
        A bad chunk size, a chunk longer than its size, or a line over
        4 KiB are refused, and the data decoded before the fault is kept.
        """
        for body, message in [
            (b"5\r\nhello\r\nz\r\n", "bad chunk size"),
            (b"5\r\nhello\r\n0x5\r\n", "bad chunk size"),
            (b"5\r\nhello\r\n" + b"1" * 17 + b"\r\n", "bad chunk size"),
            (b"5\r\nhello\r\n-0\r\n", "bad chunk size"),
            (b"5\r\nhello\r\n\r\n", "bad chunk size"),
            (b"5\r\nhelloXX\r\n", "longer than its size"),
            (b"5\r\nhello\r\n" + b"1" * 4097, "over 4 KiB"),
        ]:
            decoder = ChunkedDecoder()
            decoder.begin()
            with self.assertRaises(BadResponse, msg=body[:40]) as caught:
                decoder.decode(body)
            self.assertIn(message, str(caught.exception))
            self.assertEqual(decoder.pieces, [b"hello"])

    def test_nextBody(self) -> None:
        """
        After L{ChunkedDecoder.begin}, the decoder reads the next body
        afresh, even if the last one was cut short.
        """
        decoder = ChunkedDecoder()
        decoder.begin()
        decoder.decode(b"5\r\nhe")
        decoder.begin()
        self.assertEqual(decoder.decode(b"2\r\nok\r\n0\r\n\r\n"), b"")
        self.assertEqual(decoder.pieces, [b"ok"])


# What the two parsers say of a response: None if it is refused, else its
# final status, the framing of its body, the body, and whether the
# connection persists after it.
Verdict = Optional[Tuple[int, str, bytes, bool]]

_FRAMINGS = {NO_BODY: "none", LENGTH: "length", CHUNKED: "chunked"}


def oursOn(raw: bytes, method: bytes) -> Verdict:
    """
    What L{ResponseParser} and L{ChunkedDecoder} say of C{raw}, the whole of
    what a backend sent before closing the connection.
    """
    parser = ResponseParser()
    parser.begin(method == b"HEAD", False)
    try:
        rest = parser.receive(raw)
        if rest is None:
            return None
        framing = parser.framing
        if framing == NO_BODY:
            body = b""
        elif framing == LENGTH:
            if len(rest) < parser.length:
                return None
            body = rest[: parser.length]
        elif framing == CHUNKED:
            decoder = ChunkedDecoder()
            decoder.begin()
            if decoder.decode(rest) is None:
                return None
            body = b"".join(decoder.pieces)
        else:
            return (parser.status, "close", rest, parser.keepAlive)
    except BadResponse:
        return None
    return (parser.status, _FRAMINGS[framing], body, parser.keepAlive)


def h11On(raw: bytes, method: bytes) -> Verdict:
    """
    What h11 says of C{raw}, as the client of a C{method} request.
    """
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    connection.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(raw)
    connection.receive_data(b"")
    body = []
    status = 0
    framing = ""
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
                kind, framingArgs = _body_framing(method, event)
                # (count,) for a content-length, () otherwise.
                args: Tuple[int, ...] = framingArgs
                framing = {"chunked": "chunked", "http/1.0": "close"}.get(
                    kind, "length"
                )
                if framing == "length" and not args[0] and (
                    method == b"HEAD" or status in (204, 304)
                ):
                    framing = "none"
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return None
    except h11.RemoteProtocolError:
        return None
    persists = connection.their_state is h11.DONE and framing != "close"
    return (status, framing, b"".join(body), persists)


@st.composite
def responses(draw: st.DrawFn) -> Tuple[bytes, bytes, dict]:
    """
    A response as a backend may send it, well or badly framed, the method
    of the request it answers, and what was put in it.
    """
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    version = draw(st.sampled_from([b"1.0", b"1.1", b"1.2"]))
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
    status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 404, 500]))
    reason = draw(st.sampled_from([b"OK", b"Not Found", b"X"]))
    lines = []
    for code in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)):
        lines.append(b"HTTP/%s %d Interim%s" % (version, code, eol))
        if draw(st.booleans()):
            lines.append(b"Link: </a.css>" + eol)
        lines.append(eol)
    head = [b"HTTP/%s %d %s" % (version, status, reason)]
    name = st.from_regex(rb"\AX-[A-Za-z0-9]{1,8}\Z")
    value = st.from_regex(rb"\A[A-Za-z0-9/=;.]{0,12}\Z")
    for _ in range(draw(st.integers(0, 3))):
        head.append(draw(name) + b": " + draw(value))
    folded = draw(st.booleans()) and len(head) > 1 and draw(st.booleans())
    if folded:
        head.insert(2, b" " + draw(value) + b"x")
    connection = draw(
        st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive", b"x, close"])
    )
    if connection is not None:
        head.append(b"Connection: " + connection)
    body = draw(st.binary(max_size=40))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3))
    framing = draw(st.sampled_from(["length", "chunked", "both", "close"]))
    length = len(body)
    if framing in ("length", "both"):
        form = draw(
            st.sampled_from(["n", "0n", "n, n", "n\nn", "n, m", "n\nm", "+n", " n "])
        )
        other = length + draw(st.integers(1, 3))
        for each in form.split("\n"):
            text = each.replace("n", str(length)).replace("m", str(other))
            head.append(b"Content-Length: " + text.encode("ascii"))
    coding = None
    if framing in ("chunked", "both"):
        coding = draw(
            st.sampled_from([b"chunked", b"Chunked", b"gzip", b"gzip, chunked"])
        )
        head.append(b"Transfer-Encoding: " + coding)
    raw = b"".join(lines) + eol.join(head) + eol + eol
    bodiless = method == b"HEAD" or status in (204, 304)
    if not bodiless:
        if framing in ("chunked", "both"):
            raw += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        else:
            raw += body
    facts = {
        "version": version,
        "folded": folded,
        "keepAliveToken": connection in (b"keep-alive", b"Keep-Alive"),
        "lengthAndChunked": framing == "both",
        "coded": coding is not None,
    }
    return raw, method, facts


class H11Tests(SynchronousTestCase):
    """
    On generated responses, L{ResponseParser} and h11 agree on what they
    refuse, the final status, the framing, the body and whether the
    connection persists, except where RFC 9112 lets them differ, or where
    rainbowd, a proxy, is rightly stricter than h11, a library for clients.
    """

    @settings(max_examples=400, deadline=None)
    @given(responses())
    def test_sameVerdicts(self, response: Tuple[bytes, bytes, dict]) -> None:
        """
        Both parsers read a generated response alike, but for the
        differences listed here, each with the side that is right.
        """
        raw, method, facts = response
        ours = oursOn(raw, method)
        theirs = h11On(raw, method)
        if theirs is not None:
            status, framing, body, persists = theirs
            if facts["folded"]:
                # A folded header line (obs-fold): h11, a user agent, must
                # unfold it; a proxy must either unfold it or answer 502
                # (RFC 9112 section 5.2).  Both are right; rainbowd refuses
                # it, so that no header is read one way by rainbowd and
                # another by a client that does not unfold.
                theirs = None
            elif facts["version"] == b"1.0" and facts["keepAliveToken"]:
                # An HTTP/1.0 response with Connection: keep-alive: h11 never
                # keeps an HTTP/1.0 connection; RFC 9112 section 9.3 lets the
                # recipient honour keep-alive, as rainbowd does, unless the
                # body runs until the close or has a Transfer-Encoding, which
                # in HTTP/1.0 means faulty framing (RFC 9112 section 6.1).
                persists = framing in ("none", "length") and not facts["coded"]
                theirs = (status, framing, body, persists)
            elif facts["version"] == b"1.2":
                # HTTP/1.2: h11 reads it as 1.1, as RFC 9110 section 2.5 says
                # a recipient should, so h11 is right; rainbowd closes the
                # connection after it, which costs a connection and never
                # misreads a response.
                theirs = (status, framing, body, False)
            if theirs is not None and facts["lengthAndChunked"]:
                # Both Content-Length and chunked: both read the chunks, but
                # h11 keeps the connection.  RFC 9112 section 6.3 says such a
                # message ought to be handled as an error, as it may be an
                # attempt at smuggling: rainbowd, which forwards it, is right
                # to drop the Content-Length and not reuse the connection.
                theirs = (status, framing, body, False)
        self.assertEqual(ours, theirs, raw)
