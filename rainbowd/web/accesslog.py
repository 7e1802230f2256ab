# -*- test-case-name: rainbowd.test.unit.test_accesslog -*-
"""
The access log: a line per proxied request, in the combined format nginx
and Apache write, or as JSON.

Lines are written to a large buffer and flushed to the file once a second
(and when rainbowd stops), so a busy proxy makes a few writes a second
rather than one per request.  A crash loses at most the last second.
"""

import os
import re
import time
from json.encoder import encode_basestring_ascii as _encodeString
from typing import IO, Any, Callable, Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from rainbowd.interfaces import IRequestLog

_log = Logger()

#: Bytes of lines kept before they are written out.
BUFFER_SIZE = 64 * 1024

#: Seconds between flushes of the buffer to the file.
FLUSH_INTERVAL = 1.0

#: The status logged for a request whose connection closed before any of
#: its response was sent (nginx's "client closed request").
CLIENT_CLOSED = 499

_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

# Bytes a quoted field of the combined format can hold as they are: printable
# ASCII but '"' and '\'.
_UNSAFE = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def _quotable(value: bytes) -> str:
    """
    C{value} for a quoted field of the combined format: unprintable bytes,
    C{"} and C{\\} escaped as C{\\xHH}, as nginx does.
    """
    if not _UNSAFE.search(value):
        return value.decode("ascii")
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group(0)[0], value).decode("ascii")


def _client(request: Request) -> str:
    return getattr(request.getClientAddress(), "host", None) or "-"


def _status(request: Request, finished: bool) -> int:
    if finished or request.startedWriting:
        return request.code
    return CLIENT_CLOSED


class _Clock:
    """
    The current second as the two formats write it, computed once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self.combined = ""
        self.iso = ""

    def update(self, now: float) -> None:
        second = int(now)
        if second == self._second:
            return
        self._second = second
        t = time.gmtime(second)
        self.combined = (
            f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"
        )
        self.iso = time.strftime("%Y-%m-%dT%H:%M:%S", t)


def combinedLine(
    request: Request, seconds: float, now: float, clock: _Clock, finished: bool
) -> str:
    """
    C{request} in the combined log format::

        127.0.0.1 - - [27/Nov/2026:02:12:31 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/8.5.0"
    """
    headers = request.requestHeaders
    referrer = headers.getRawHeaders(b"referer")
    agent = headers.getRawHeaders(b"user-agent")
    return (
        f'{_client(request)} - - {clock.combined} "'
        f"{_quotable(request.method)} {_quotable(request.uri)} "
        f'{_quotable(request.clientproto)}" {_status(request, finished)} '
        f'{request.sentLength} "{_quotable(referrer[0]) if referrer else "-"}" '
        f'"{_quotable(agent[0]) if agent else "-"}"\n'
    )


def _jsonString(value: Optional[bytes]) -> str:
    """
    C{value} as a JSON string: UTF-8 text, with any byte that is not UTF-8
    shown as C{\\xHH}; or C{null}.
    """
    if value is None:
        return "null"
    return _encodeString(value.decode("utf-8", "backslashreplace"))


def jsonLine(
    request: Request, seconds: float, now: float, clock: _Clock, finished: bool
) -> str:
    """
    C{request} as a JSON object on one line, with the generation that served
    it and its duration in seconds.  (Written by hand: twice as fast as
    C{json.dumps} of a dict.)
    """
    headers = request.requestHeaders
    referrer = headers.getRawHeaders(b"referer")
    agent = headers.getRawHeaders(b"user-agent")
    generation = getattr(request, "backendGeneration", None)
    return (
        f'{{"time": "{clock.iso}.{int(now * 1000) % 1000:03d}Z", '
        f'"client": {_encodeString(_client(request))}, '
        f'"method": {_jsonString(request.method)}, '
        f'"uri": {_jsonString(request.uri)}, '
        f'"protocol": {_jsonString(request.clientproto)}, '
        f'"status": {_status(request, finished):d}, '
        f'"bytes": {request.sentLength:d}, '
        f'"referer": {_jsonString(referrer[0] if referrer else None)}, '
        f'"userAgent": {_jsonString(agent[0] if agent else None)}, '
        f'"generation": {"null" if generation is None else int(generation)}, '
        f'"duration": {round(seconds, 6)!r}, '
        f'"complete": {"true" if finished else "false"}}}\n'
    )


FORMATS = {"combined": combinedLine, "json": jsonLine}


def openLog(path: str) -> IO[str]:
    """
    Open the access log file C{path} for appending (C{"-"}: standard
    output), with a buffer of L{BUFFER_SIZE}.

    @raise OSError: if it cannot be opened.
    """
    fd = os.dup(1) if path == "-" else os.open(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640
    )
    return open(
        fd, "w", buffering=BUFFER_SIZE, encoding="utf-8", errors="backslashreplace",
        newline="\n",
    )


@implementer(IRequestLog)
class AccessLog:
    """
    The access log, as a L{rainbowd.web.proxy.ProxySite}'s C{requestLog}.

    @param file: where lines go; flushed every L{FLUSH_INTERVAL} seconds
        once L{start}ed, and closed by L{stop}.
    @param format: C{"combined"} or C{"json"}.
    @param clock: the reactor's C{IReactorTime}.
    """

    def __init__(self, file: IO[str], format: str, clock: Any) -> None:
        self._file = file
        self._line: Callable[..., str] = FORMATS[format]
        self._clock = clock
        self._now = _Clock()
        self._flushing = LoopingCall(self.flush)
        self._flushing.clock = clock
        self._failing = False

    def start(self) -> None:
        self._flushing.start(FLUSH_INTERVAL, now=False)

    def stop(self) -> None:
        """
        Write out what is buffered and close the file; lines after this are
        dropped.
        """
        if self._flushing.running:
            self._flushing.stop()
        if not self._file.closed:
            self.flush()
            self._file.close()

    def finished(self, request: Request, seconds: float) -> None:
        self._write(request, seconds, True)

    def unfinished(self, request: Request, seconds: float) -> None:
        self._write(request, seconds, False)

    def _write(self, request: Request, seconds: float, finished: bool) -> None:
        now = self._clock.seconds()
        self._now.update(now)
        line = self._line(request, seconds, now, self._now, finished)
        try:
            self._file.write(line)
        except (OSError, ValueError) as e:  # ValueError: closed by stop()
            self._failed(e)

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            self._failed(e)
        else:
            self._failing = False

    def _failed(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            _log.error(
                "cannot write the access log: {error}; its lines are lost "
                "until it can",
                error=getattr(error, "strerror", None) or str(error),
            )


@implementer(IRequestLog)
class Both:
    """
    A C{requestLog} that tells two others, in order.
    """

    def __init__(self, first: Any, second: Any) -> None:
        self._first = first
        self._second = second

    def finished(self, request: Request, seconds: float) -> None:
        self._first.finished(request, seconds)
        self._second.finished(request, seconds)

    def unfinished(self, request: Request, seconds: float) -> None:
        self._first.unfinished(request, seconds)
        self._second.unfinished(request, seconds)
