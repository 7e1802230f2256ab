# -*- test-case-name: rainbowd.test.unit.test_http1 -*-
"""
The HTTP/1.1 responses of a backend, parsed: bytes in, a response head and
the pieces of a chunked body out, with no transport, callback or reactor.

L{rainbowd.web.backendclient.BackendConnection} feeds a L{ResponseParser} the
bytes of a response's head, then relays the body as the head's framing says,
through a L{ChunkedDecoder} if chunked.  Both are made once per connection
and reused for each response it carries, so parsing allocates nothing more
than the head's list of headers and the slices of the bytes it was given.

An app cannot be trusted to frame its responses well, and a proxy that reads
a response differently from the client behind it can be made to deliver
bytes to the wrong client.  So the parser refuses (L{BadResponse}, whose
message names the problem) what it cannot read one way only:

  - a head over 64 KiB, whether it has all come or not (L{MAX_HEAD});
  - a status line that is not C{HTTP/1.x}, a space, and three digits;
  - a bare CR anywhere in the head, or a NUL (a head may end its lines with
    CRLF or with a bare LF, RFC 9112 section 2.2: it ends at its first empty
    line, whichever the line endings);
  - a header line without a colon, or whose name is not a token (RFC 9110
    section 5.1), and a folded header line (obs-fold, RFC 9112 section 5.2);
  - a I{Content-Length} that is not digits, or a list of values that are
    not all the same, or two that differ (RFC 9110 section 8.6); a repeated
    one with the same value is kept once;
  - a I{Transfer-Encoding} other than exactly C{chunked}: a proxy cannot
    tell where a gzip-coded body ends, and undoing a coding is the
    client's business;
  - a chunk size that is not 1 to 16 hex digits, a chunk longer than its
    size, a chunk or trailer line over 4 KiB (L{MAX_CHUNK_LINE});
  - a 101 to a request that did not ask to switch protocols.

And it reads the framing as RFC 9112 section 6.3 says:

  - a response to HEAD, a 204 and a 304 have no body, whatever their
    headers say (L{NO_BODY}); their I{Content-Length} is kept, to be
    relayed;
  - interim responses (1xx but 101) are skipped, and not relayed; the
    final response after them is the one parsed, and says so (C{interim});
  - chunked wins over a I{Content-Length}, which is then dropped: such a
    response may be an attempt at smuggling, so its connection is not
    reused;
  - a response with neither runs until the connection closes.

And whether the connection persists after the response (C{keepAlive}, RFC
9112 section 9.3): by default in HTTP/1.1, with I{Connection: keep-alive}
in HTTP/1.0, never with I{Connection: close}, after a body that runs until
the close, after a chunked HTTP/1.0 response, or after one with both
I{Content-Length} and chunked.  (The backend client is stricter still: it
does not reuse a connection after a response that has no body or came after
interim ones, since an app that sends a body there anyway could send it in
a later write.)

The headers it hands out are those a proxy relays: not the hop-by-hop ones
(L{HOP_BY_HOP}, and those the I{Connection} header names), except after a
101, whose headers all go to the tunnel.
"""

import re
from typing import Dict, List, Optional, Tuple

MAX_HEAD = 65536
"""
The most bytes a response head may take, without its last empty line.
"""

MAX_CHUNK_LINE = 4096
"""
The most bytes a chunk-size or trailer line may take.
"""

HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    ]
)
"""
Lower-cased names of the headers that describe one connection rather than the
message (RFC 9110 section 7.6.1, plus the non-standard I{Proxy-Connection}).
"""

_NOT_RELAYED = HOP_BY_HOP - {b"transfer-encoding"}
"""
Response headers not relayed to the client.  I{Transfer-Encoding} is
handled apart, as it decides the framing.
"""

_NO_BODY_CODES = frozenset([204, 304])

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+\Z")
"""
A header name (RFC 9110 section 5.1).
"""

#: How many header names a parser's C{names} remembers as valid; an app that
#: sends more distinct ones gets the others checked each time.
HEADER_NAMES_KEPT = 256

#: The longest header name a parser's C{names} remembers, so that what it
#: holds is bounded in bytes too: a longer one, rare in a real app, is
#: checked each time.
HEADER_NAME_KEPT_LENGTH = 64

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
"""
The end of a response head, its lines ended by CRLF or a bare LF.
"""

_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;|\Z)")
"""
The start of a chunk's first line: its size in hex, then any extensions,
which are ignored.  Sixteen digits are more than any real chunk needs.
"""

# The framings of a response's body.
NO_BODY = 0
"""
No body: the answer to HEAD, a 204 or a 304.
"""
LENGTH = 1
"""
A body of C{length} bytes, from its I{Content-Length}.
"""
CHUNKED = 2
"""
A chunked body, for a L{ChunkedDecoder}.
"""
UNTIL_CLOSE = 3
"""
A body that runs until the connection closes.
"""
SWITCHED = 4
"""
A 101: the connection now speaks another protocol.
"""

# The states of a chunked body's decoder.
_CHUNK_SIZE = 0
_CHUNK_DATA = 1
_CHUNK_END = 2
_TRAILER = 3


class BadResponse(Exception):
    """
    A backend's response is not HTTP/1.1 rainbowd can relay.
    """


class ResponseParser:
    """
    The parser of the heads of the responses on one connection, one
    response after another.

    Call L{begin} when a request is sent, then L{receive} with the bytes that
    come until it returns the bytes after the head; the head is then in the
    attributes below, until the next L{begin}.

    @ivar status: The status code.
    @ivar reason: The reason phrase.
    @ivar headers: The headers to relay, as (name, value) pairs, in order,
        each value stripped of surrounding whitespace.
    @ivar framing: How the body is framed: L{NO_BODY}, L{LENGTH},
        L{CHUNKED}, L{UNTIL_CLOSE} or L{SWITCHED}.
    @ivar length: The body's length, if C{framing} is L{LENGTH}.
    @ivar keepAlive: The connection persists after this response, by RFC
        9112 section 9.3.
    @ivar interim: Interim (1xx) responses came before this one, in the
        bytes of the last call to L{receive}.  (Those that came in earlier
        calls are not counted, as the backend client has always done: it
        then reuses the connection, a laxity that the tests pin.)
    """

    __slots__ = (
        "_buffer",
        "_names",
        "_headOnly",
        "_upgrade",
        "status",
        "reason",
        "headers",
        "framing",
        "length",
        "keepAlive",
        "interim",
    )

    def __init__(self, names: Optional[Dict[bytes, bytes]] = None) -> None:
        """
        @param names: The header names found valid, each to its lower case,
            up to L{HEADER_NAMES_KEPT} of them, each of at most
            L{HEADER_NAME_KEPT_LENGTH} bytes, kept by the caller for all
            the connections to one app: a dictionary lookup rather than a
            regular expression match and a C{lower()} for each header of
            each response (on PyPy, the match alone took a kilobyte of the
            collector's nursery).
        """
        self._buffer = b""
        self._names = {} if names is None else names
        self._headOnly = False
        self._upgrade = False
        self.status = 0
        self.reason = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.framing = NO_BODY
        self.length = 0
        self.keepAlive = False
        self.interim = False

    def begin(self, headOnly: bool, upgrade: bool) -> None:
        """
        A request is sent: parse its response next.

        @param headOnly: It is a HEAD request, so its response has no body.
        @param upgrade: It asks to switch protocols, so a 101 may answer.
        """
        self._buffer = b""
        self._headOnly = headOnly
        self._upgrade = upgrade

    def receive(self, data: bytes) -> Optional[bytes]:
        """
        Parse the next bytes of the response.

        @return: The bytes after the head once it has all come (the start of
            the body, or of what comes after a 101), else L{None}.

        @raise BadResponse: The head cannot be read one way only.
        """
        self.interim = False
        buffered = self._buffer
        if buffered:
            buffer = buffered + data
            searched = len(buffered)
            start = searched - 3 if searched > 3 else 0
        else:
            buffer = data
            start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end != -1:
                crlf = buffer.count(b"\r\n", 0, end)
                strict = (
                    buffer.count(b"\n", 0, end) == crlf
                    and buffer.count(b"\r", 0, end) == crlf
                )
            else:
                strict = False
            if strict:
                if end > MAX_HEAD:
                    raise BadResponse("a response head over 64 KiB")
                rest = buffer[end + 4 :]
                lines = buffer[:end].split(b"\r\n")
            else:
                # Bare LF line endings (RFC 9112 section 2.2), or not all
                # of the head yet: the head ends at its first empty line.
                blank = _BLANK_LINE.search(buffer, start)
                if blank is None:
                    if len(buffer) > MAX_HEAD:
                        raise BadResponse("a response head over 64 KiB")
                    self._buffer = buffer
                    return None
                end = blank.start()
                if end > MAX_HEAD:
                    raise BadResponse("a response head over 64 KiB")
                rest = buffer[blank.end() :]
                lines = [line.rstrip(b"\r") for line in buffer[:end].split(b"\n")]
                if any(b"\r" in line for line in lines):
                    raise BadResponse("a response head with a bare CR or a NUL")
            if buffer.find(b"\x00", 0, end) != -1:
                raise BadResponse("a response head with a bare CR or a NUL")
            version, _, statusLine = lines[0].partition(b" ")
            code, _, phrase = statusLine.partition(b" ")
            if (
                not version.startswith(b"HTTP/1.")
                or len(code) != 3
                or not code.isdigit()
            ):
                raise BadResponse(
                    "a response that is not HTTP/1.1 ({!r})".format(lines[0][:80])
                )
            status = int(code)
            if 100 <= status < 200 and status != 101:
                buffer = rest
                start = 0
                self.interim = True
                continue
            break
        self._buffer = b""
        headers = []
        length = None
        codings = None
        keepAlive = version == b"HTTP/1.1"
        named = None
        names = self._names
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            lower = names.get(name) if colon else None
            if lower is None:
                if not colon or not _TOKEN.match(name):
                    if line[:1] in (b" ", b"\t"):
                        raise BadResponse(
                            "a folded header line (obs-fold, {!r})".format(line[:80])
                        )
                    raise BadResponse(
                        "a malformed header line ({!r})".format(line[:80])
                    )
                lower = name.lower()
                if (
                    len(names) < HEADER_NAMES_KEPT
                    and len(name) <= HEADER_NAME_KEPT_LENGTH
                ):
                    names[name] = lower
            value = value.strip()
            if lower in _NOT_RELAYED:
                if lower == b"connection":
                    tokens = {token.strip() for token in value.lower().split(b",")}
                    if b"close" in tokens:
                        keepAlive = False
                    elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                        keepAlive = True
                    named = tokens if named is None else named | tokens
                if status != 101:
                    continue
            elif lower == b"transfer-encoding":
                codings = value if codings is None else codings + b", " + value
                continue
            elif lower == b"content-length":
                if value.isdigit():
                    this = int(value)
                else:
                    values = {each.strip() for each in value.split(b",")}
                    each = values.pop()
                    if values or not each.isdigit():
                        raise BadResponse(
                            "a bad Content-Length ({!r})".format(value[:80])
                        )
                    this = int(each)
                if length is not None:
                    if this != length:
                        raise BadResponse("two different Content-Lengths")
                    continue
                length = this
                value = b"%d" % (length,)
            headers.append((name, value))
        self.status = status
        self.reason = phrase
        if status == 101:
            if not self._upgrade:
                raise BadResponse("101 Switching Protocols to a request not asking to")
            self.headers = headers
            self.framing = SWITCHED
            self.keepAlive = False
            return rest
        if named:
            headers = [(n, v) for (n, v) in headers if n.lower() not in named]
        if codings is not None:
            if codings.lower() != b"chunked":
                # Undoing another coding is the client's business, not a
                # proxy's, and it cannot be told once the chunks are gone.
                raise BadResponse(
                    "a Transfer-Encoding other than chunked ({!r})".format(
                        codings[:80]
                    )
                )
            if length is not None:
                # Chunked wins over Content-Length, but such a response may
                # be an attempt at smuggling: do not trust the connection
                # with another (RFC 9112 section 6.3).
                headers = [
                    (n, v) for (n, v) in headers if n.lower() != b"content-length"
                ]
                length = None
                keepAlive = False
            elif version == b"HTTP/1.0":
                keepAlive = False
        self.headers = headers
        if self._headOnly or status in _NO_BODY_CODES:
            self.framing = NO_BODY
        elif codings is not None:
            self.framing = CHUNKED
        elif length is not None:
            self.framing = LENGTH
            self.length = length
        else:
            self.framing = UNTIL_CLOSE
            keepAlive = False
        self.keepAlive = keepAlive
        return rest


class ChunkedDecoder:
    """
    The decoder of the chunked bodies of the responses on one connection,
    one body after another (RFC 9112 section 7.1).  Chunk extensions and
    trailers are read and dropped.

    Call L{begin} when a chunked body starts, then L{decode} with its bytes
    as they come, until it returns the bytes after the body.

    @ivar pieces: The data decoded by the last call to L{decode}, in order:
        a list emptied by each call, so read it before the next one.
    """

    __slots__ = ("_state", "_remaining", "_buffer", "pieces")

    def __init__(self) -> None:
        self._state = _CHUNK_SIZE
        self._remaining = 0
        self._buffer = b""
        self.pieces: List[bytes] = []

    def begin(self) -> None:
        """
        A chunked body starts.
        """
        self._state = _CHUNK_SIZE
        self._buffer = b""

    def decode(self, data: bytes) -> Optional[bytes]:
        """
        Decode the next bytes of the body into L{pieces}.

        @return: The bytes after the body once it is over, else L{None}.

        @raise BadResponse: The body is not well chunked; L{pieces} then
            holds the data decoded before the fault.
        """
        pieces = self.pieces
        pieces.clear()
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        position = 0
        size = len(data)
        while position < size:
            state = self._state
            if state == _CHUNK_DATA:
                end = position + self._remaining
                if end > size:
                    pieces.append(data[position:])
                    self._remaining = end - size
                    return None
                pieces.append(data[position:end])
                position = end
                self._state = _CHUNK_END
                continue
            newline = data.find(b"\n", position)
            if newline == -1:
                if size - position > MAX_CHUNK_LINE:
                    raise BadResponse("a chunked body line over 4 KiB")
                self._buffer = data[position:]
                return None
            line = data[position:newline].rstrip(b"\r")
            position = newline + 1
            if state == _CHUNK_SIZE:
                match = _CHUNK_SIZE_LINE.match(line)
                if match is None:
                    raise BadResponse("a bad chunk size ({!r})".format(line[:80]))
                self._remaining = int(match.group(1), 16)
                self._state = _TRAILER if self._remaining == 0 else _CHUNK_DATA
            elif state == _CHUNK_END:
                if line:
                    raise BadResponse("a chunk longer than its size")
                self._state = _CHUNK_SIZE
            elif not line:  # _TRAILER: an empty line ends the body
                return data[position:]
        return None
