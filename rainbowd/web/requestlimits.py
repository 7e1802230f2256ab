# -*- test-case-name: rainbowd.test.unit.test_requestlimits -*-
"""
What a client may send to either of rainbowd's ports, and how slowly.

Both sites, the proxy's and the control API's, are L{LimitedSite}s: their
connections are L{LimitedChannel}s, twisted.web's L{HTTPChannel} with its one
timer put to stricter use, and their requests L{LimitedRequest}s.

  - B{The request head} (request line and headers) must be complete within
    C{headerTimeout} seconds of the connection being opened, or of the first
    byte of a later request on a kept-alive connection.  Bytes arriving do
    not move that deadline, so a head trickled a byte at a time is cut.
  - B{The request body} must keep up: in every C{bodyTimeout}-long window,
    at least C{bodyMinRate} bytes a second of it must arrive, until it is
    complete.
  - Between requests, a kept-alive connection may stay idle for the site's
    C{timeout}; the first byte of the next request starts its head
    deadline.  While a request is being answered nothing is timed out, but
    the client: one that reads nothing of its response for as long (so
    that rainbowd's buffer for it stays full) has its connection aborted,
    rather than hold it, and the app's answer, forever.
  - A client timed out part-way through a request gets a 408 and the
    connection is closed; one that sent nothing of a request is just
    closed.  Refusals and timeouts are logged at most once a minute for
    each status code, with a count, so that thousands of slow clients make
    a few lines, not thousands.
  - B{A body bigger than C{maxBody}} gets a 413: at once when its
    I{Content-Length} says so (before any I{100 Continue}), as soon as the
    chunks received pass it otherwise.  The rest of it is read and dropped,
    up to L{DISCARD_LIMIT}, so that the client reads the answer.
  - B{A body that cannot be stored} (a full disk, a quota) gets a 507 and
    one log line, instead of an unhandled error and a dropped connection.
  - B{A transfer coding other than chunked} gets a 501 (RFC 9112 section
    6.1): twisted.web would take C{Transfer-Encoding: identity} for an empty
    body and read the body as the next request.  (Codings it does not know
    at all, C{gzip} say, it refuses with 400 itself.)

The answers are the site's to word (L{LimitedSite.answer}): plain text on
the public port, JSON on the control port.
"""

import errno
import math
import tempfile
from typing import IO, Any, Dict, Optional

import attrs
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger, LogLevel
from twisted.protocols.basic import LineReceiver
from twisted.web.http import (
    HTTPChannel,
    _getContentFile,
    _NoPushProducer,
    maxChunkSizeLineLength,
)
from twisted.web.server import Request, Site

from rainbowd.config import Config
from rainbowd.web.reads import fit, readingEnd, readSmall, unread
from twisted import version as _twistedVersion

_log = Logger()

#: How much of a refused body is read and thrown away, in bytes, so that
#: the client reads its answer instead of a reset connection; beyond this the
#: connection is closed.
DISCARD_LIMIT = 16 * 1024 * 1024

#: The shortest time between two log lines about timed-out clients, in
#: seconds; the ones in between are counted.
LOG_INTERVAL = 60.0

#: The errors of a failed body spool that mean storage ran out, answered 507.
_STORAGE_ERRORS = frozenset([errno.ENOSPC, errno.EDQUOT, errno.EFBIG])

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    507: b"Insufficient Storage",
}

#: The status code L{_RefusalLog} counts connections closed without an
#: answer under: their response had begun.
_CLOSED = 0

#: What a connection is doing, for its timer.
_FIRST = "first"  # opened; nothing of a request yet
_IDLE = "idle"  # kept alive after a response; nothing of a request yet
_HEAD = "head"  # part of a request head received
_BODY = "body"  # head received, body coming
_ANSWERING = "answering"  # a request is being answered: no timeout
_REFUSED = "refused"  # refused; reading and dropping the rest of the body
_LINGERING = "lingering"  # last response sent at stop; dropping what comes

#: Where a request body is spooled: twisted.web's choice, memory under
#: 100 KB and a temporary file above.
spoolFile = _getContentFile


@attrs.frozen
class RequestLimits:
    """
    The limits of one site's requests.

    @ivar headerTimeout: Seconds the request head may take to arrive.
    @ivar bodyTimeout: The window, in seconds, over which a request body's
        rate is measured; a body that stalls this long is cut.
    @ivar bodyMinRate: The slowest a request body may arrive, in bytes a
        second, averaged over each C{bodyTimeout} window; 0 asks for a byte
        in each window.
    @ivar maxBody: The largest request body taken, in bytes.
    """

    headerTimeout: float
    bodyTimeout: float
    bodyMinRate: int
    maxBody: int

    @classmethod
    def fromConfig(cls, config: Any, maxBody: Optional[int] = None) -> "RequestLimits":
        """
        The limits a L{Config} (or its defaults, for L{None}) sets, with
        C{maxBody} instead of its C{maxRequestBody} if given.
        """
        if config is None:
            config = _ConfigDefaults()
        return cls(
            headerTimeout=config.requestHeaderTimeout,
            bodyTimeout=config.requestBodyTimeout,
            bodyMinRate=config.requestBodyMinRate,
            maxBody=config.maxRequestBody if maxBody is None else maxBody,
        )


class _ConfigDefaults:
    """
    The defaults of L{Config}'s fields, as attributes.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(attrs.fields(Config), name).default


class _RefusalLog:
    """
    Log the requests a site refused or timed out, at most one line for
    each status code every L{LOG_INTERVAL} seconds: the first at once, then
    how many more there were, when the interval is over.  A thousand slow
    clients make a few lines, not a thousand.
    """

    def __init__(self, reactor, what: str) -> None:
        self._reactor = reactor
        self._what = what
        self._more: Dict[int, int] = {}
        self._call: Optional[IDelayedCall] = None

    def refused(self, code: int, peer: str, message: str) -> None:
        if code in self._more:
            self._more[code] += 1
            return
        self._more[code] = 0
        _log.emit(
            LogLevel.info if code in (408, _CLOSED) else LogLevel.warn,
            "Closed a connection of the {what} ({peer}): {problem}"
            if code == _CLOSED
            else "Answered {code} to a client of the {what} ({peer}): {problem}",
            code=code,
            what=self._what,
            peer=peer,
            problem=message,
        )
        if self._call is None:
            self._call = self._reactor.callLater(LOG_INTERVAL, self._intervalOver)

    def _intervalOver(self) -> None:
        self._call = None
        more = {code: count for code, count in self._more.items() if count}
        for code, count in sorted(more.items()):
            _log.emit(
                LogLevel.info if code in (408, _CLOSED) else LogLevel.warn,
                "Closed {count} more connections of the {what} whose client "
                "read nothing of its response, in the last {interval:g} s"
                if code == _CLOSED
                else "Answered {code} to {count} more clients of the {what} in "
                "the last {interval:g} s",
                code=code,
                count=count,
                what=self._what,
                interval=LOG_INTERVAL,
            )
        # A code seen in this interval is counted, not logged, in the next.
        self._more = dict.fromkeys(more, 0)
        if more:
            self._call = self._reactor.callLater(LOG_INTERVAL, self._intervalOver)

    def stop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


class LimitedRequest(Request):
    """
    A request whose body may not grow beyond its site's C{maxBody}, and
    whose failure to store its body is answered, not raised.
    """

    _received = 0
    # None once the connection is lost, which Twisted's annotation omits.
    channel: "LimitedChannel"
    # Twisted's class attribute "content = None" is read as its type.
    content: Optional[IO[bytes]]  # type: ignore[assignment]

    def gotLength(self, length: Optional[int]) -> None:
        try:
            self.content = spoolFile(length)
        except OSError as e:
            self.content = None
            self.channel.spoolFailed(e)

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None:
            return
        if channel.refused:
            channel.discarded(len(data))
            return
        self._received += len(data)
        if self._received > channel.limits.maxBody:
            channel.refuse(413, channel.tooLargeMessage())
            return
        content = self.content
        # Set by gotLength; None only once spoolFailed refused the request.
        assert content is not None
        try:
            content.write(data)
        except OSError as e:
            channel.spoolFailed(e)


class LimitedChannel(HTTPChannel):
    """
    An HTTP channel that enforces its site's L{RequestLimits}; see the
    module's docstring.

    Its one timer is twisted.web's (L{setTimeout}), never reset by bytes
    arriving, and never moved sooner on the way of a request (Twisted's
    reactor finds a call moved sooner by a linear search of all of them,
    one per connection).  While a connection waits for a request head, the
    timer fires at least every C{headerTimeout}, checks what the connection
    has done since, and sets itself again if time is left; so when a head
    begins, its deadline is never before the timer, and when its body
    begins the timer is moved later, not sooner (or, if C{bodyTimeout} is
    the shorter, left to start the first window when it fires).

    @ivar refused: This request has been answered before it was all
        received; the rest of it is dropped, and the connection closed.
    @ivar _headDeadline: When the head being received is due, in the
        reactor's seconds.
    @ivar _idleLeft: How much longer than the timer's period a kept-alive
        connection may stay idle.
    @ivar _measuring: Whether the body's rate is being measured, over
        windows that started when the timer was last set.
    @ivar _idleFirst: The timer's first period after a response.
    @ivar _bodyTimerLater: Whether setting the timer for C{bodyTimeout} when
        a body begins moves it later.
    @ivar _closing: Whether the request on its way is the last this
        connection answers (see L{closeWhenAnswered}).
    @ivar _unread: Whether, when rainbowd stopped, a request had reached
        the socket but not yet been read.
    @ivar _graceUntil: When the grace of L{closeWhenAnswered} ends, in the
        reactor's seconds, if the response being sent had begun without
        saying C{Connection: close}; else L{None}.
    """

    refused = False
    limits: RequestLimits
    site: "LimitedSite"
    # The connection: connlimit's wrapper of a TCP, unix or TLS one, or a
    # test's StringTransport; read for more than one interface says
    # (disconnecting, abortConnection).
    transport: Any
    _seconds: Any
    _idleFirst = 0.0
    _bodyTimerLater = True
    _phase = _FIRST
    _idleTimeout = 0.0
    _headDeadline = 0.0
    _idleLeft = 0.0
    _measuring = False
    _bodyBytes = 0
    _discarded = 0
    _closing = False
    _unread = False
    _graceUntil: Optional[float] = None
    _end: Optional[FileDescriptor] = None

    def connectionMade(self) -> None:
        limits = self.limits = self.site.limits
        self._seconds = self.site.reactor.seconds
        # A site without an idle timeout (None) keeps idle connections.
        idle = self._idleTimeout = math.inf if self.timeOut is None else self.timeOut
        self._idleFirst = min(idle, limits.headerTimeout)
        self._bodyTimerLater = limits.bodyTimeout >= limits.headerTimeout
        self._headDeadline = self._seconds() + limits.headerTimeout
        # HTTPChannel.connectionMade starts the timer with timeOut.
        # Seconds as a float, which TimeoutMixin takes though it says int.
        self.timeOut = limits.headerTimeout  # type: ignore[assignment]
        HTTPChannel.connectionMade(self)
        self._end = readingEnd(self.transport)
        readSmall(self._end)

    def waitingForRequest(self) -> bool:
        """
        Is this connection waiting for a request: nothing of one yet, or
        only part of its head?
        """
        return self._phase in (_FIRST, _IDLE, _HEAD)

    def receivingRequest(self) -> bool:
        """
        Is a request on its way in: part of its head or body received, and
        not yet handed to the site's resource (or, once rainbowd stops,
        waiting unread on the socket)?
        """
        phase = self._phase
        if phase is _HEAD or phase is _BODY:
            return True
        return self._unread and phase in (_FIRST, _IDLE)

    def closeWhenAnswered(self, idleGrace: float = 0.0) -> None:
        """
        rainbowd stops: close this connection now if nothing of a request
        is on it, or else once the request on its way is answered, whose
        response then says C{Connection: close} (if its head is not sent
        yet).  Anything pipelined behind that request is not read.  Bytes
        that have reached the socket unread are a request on its way.

        @param idleGrace: How long a connection with nothing of a request on
            it stays open first, in seconds: a request that comes meanwhile
            is answered, as the last, rather than meet a closed connection,
            which a client that does not retry would take for a failure.
            For an upgrade, whose old rainbowd can still answer; 0 at stop.
            With a grace, a response already begun, too late to say
            C{Connection: close}, is not the last either if it ends within
            the grace: the client would take the connection for kept alive
            and send its next request into the close, so that request is
            the last, if it comes before the grace ends (counted from now:
            no later, so that it is answered before the drain is over).
        """
        if self._phase in (_FIRST, _IDLE):
            if not unread(self._end):
                if idleGrace <= 0:
                    self.loseConnection()
                    return
                self._closing = True
                self._idleLeft = 0.0
                self.setTimeout(idleGrace)
                return
            self._unread = True
        if self._phase in (_BODY, _ANSWERING):
            request = self.requests[-1]
            if request.startedWriting and idleGrace > 0:
                self._graceUntil = self._seconds() + idleGrace
                return
            self._answerLast(request)
        self._closing = True

    def _answerLast(self, request) -> None:
        """
        Make C{request}'s response the last on this connection.
        """
        self.persistent = False
        self._unread = False
        if not request.startedWriting:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def dataReceived(self, data: bytes) -> None:
        end = self._end
        if end is not None:
            fit(end, len(data))
        phase = self._phase
        if phase is _BODY:
            self._bodyBytes += len(data)
        elif phase is _IDLE:
            # The first byte of a request on a kept-alive connection: its
            # head is due headerTimeout from now.  The timer, set for no
            # later than that, is left as it is.
            self._phase = _HEAD
            self._headDeadline = self._seconds() + self.limits.headerTimeout
        elif phase is _FIRST:
            self._phase = _HEAD
        elif phase is _REFUSED and self.transport.disconnecting:
            return
        elif phase is _LINGERING:
            return
        # Not HTTPChannel's, which would reset the timer.
        LineReceiver.dataReceived(self, data)
        if self._phase is _BODY and not self._measuring and self._bodyTimerLater:
            # A body not all here with its head: measure its rate from now,
            # moving the timer later.
            self._measuring = True
            self.setTimeout(self.limits.bodyTimeout)

    if (_twistedVersion.major, _twistedVersion.minor) < (26, 10):

        def headerReceived(self, line: bytes) -> bool:
            # Before 26.10, twisted.web turned a bare CR or LF in a header
            # value into a space, so that rainbowd would forward a header an
            # app, or a proxy in front, may read as two.  (The PyPy of
            # Debian 12 is Python 3.9, for which 26.4 is the newest Twisted.)
            if b"\r" in line or b"\n" in line:
                self._respondToBadRequestAndDisconnect()
                return False
            return HTTPChannel.headerReceived(self, line)

    def allHeadersReceived(self) -> None:
        # HTTPChannel's, but with no "100 Continue" for a refused body.
        request = self.requests[-1]
        # As getRawHeaders would, at a quarter of the cost: the channel has
        # stored every name canonical.
        codings = request.requestHeaders._rawHeaders.get(b"Transfer-Encoding")
        if codings is not None and (len(codings) > 1 or self.length is not None):
            # twisted.web refuses codings it does not know, but takes
            # "identity" for no coding at all (and reads the body, if it has
            # no Content-Length, as the next request).
            self.refuse(
                501,
                "no transfer coding but chunked is supported, and the "
                "request has Transfer-Encoding: "
                f"{b', '.join(codings).decode('latin-1')}; send the body with "
                "a Content-Length, or chunked",
            )
            self._close()
            return
        request.parseCookies()
        self.persistent = self.checkPersistence(request, self._version)
        if self._closing:
            self._answerLast(request)
        if self.length is not None and self.length > self.limits.maxBody:
            self.refuse(413, self.tooLargeMessage())
            return
        request.gotLength(self.length)
        if self.refused:
            return
        if self.length != 0:
            # Measured once what came with the head is read (dataReceived),
            # or from when the timer next fires.
            self._phase = _BODY
            self._bodyBytes = 0
            self._measuring = False
        expect = request.requestHeaders.getRawHeaders(b"Expect")
        if (
            expect
            and expect[0].lower() == b"100-continue"
            and self._version == b"HTTP/1.1"
        ):
            self._send100Continue()

    def allContentReceived(self) -> None:
        # The public hook between the end of a body and the request's
        # Request.requestReceived, which seeks its content and then calls
        # Request.process: too late there, since that seek is what would
        # raise.
        if self._phase is _BODY and not self.refused:
            try:
                # What is still buffered goes to disk now, not in the
                # seek twisted.web does next, out of reach of spoolFailed.
                self.requests[-1].content.flush()
            except OSError as e:
                self.spoolFailed(e)
        if self.refused:
            self._close()
            return
        self._phase = _ANSWERING
        # Off, so that HTTPChannel neither saves nor restores it.
        self.setTimeout(None)
        HTTPChannel.allContentReceived(self)
        if (
            self._phase is _ANSWERING
            and self._waitingForTransport
            and self._idleTimeout != math.inf
        ):
            # Pipelined behind a response the client has yet to read: the
            # transport's buffer is still full.
            self.setTimeout(self._idleTimeout)

    def requestDone(self, request) -> None:
        # Before HTTPChannel's, which parses what was pipelined; and also
        # when the connection is to close, so that a client that does not
        # read the end of its response cannot hold it open.
        if self._graceUntil is None or not self._graceAfterResponse():
            self._idleLeft = self._idleTimeout - self._idleFirst
            self.setTimeout(self._idleFirst)
        if self.persistent and (self._buffer or self._dataBuffer):
            # The next request has begun, pipelined behind this one: its
            # head is due headerTimeout from now.  (Behind a last response,
            # it is never read.)
            self._phase = _HEAD
            self._headDeadline = self._seconds() + self.limits.headerTimeout
        else:
            self._phase = _IDLE
        HTTPChannel.requestDone(self, request)

    def _graceAfterResponse(self) -> bool:
        """
        A response begun before L{closeWhenAnswered} (with a grace) is over:
        what comes within the grace is the last request; after it, nothing.

        @return: Whether the grace goes on (its timer is set).
        """
        left = self._graceUntil - self._seconds()
        self._graceUntil = None
        self._closing = True
        if left > 0 and self.persistent:
            self._idleLeft = 0.0
            self.setTimeout(left)
            return True
        self.persistent = False
        return False

    def pauseProducing(self) -> None:
        # The transport's buffer for the client is full.  While a response
        # is being sent, the client has as long as an idle connection to
        # read some of it.  (The transport pauses the channel again at each
        # write while its buffer is full: that does not extend the wait.)
        waiting = self._waitingForTransport
        HTTPChannel.pauseProducing(self)
        if (
            not waiting
            and self._phase is _ANSWERING
            and self._idleTimeout != math.inf
        ):
            self.setTimeout(self._idleTimeout)

    def resumeProducing(self) -> None:
        HTTPChannel.resumeProducing(self)
        if self._phase is _ANSWERING:
            self.setTimeout(None)

    def _idlePeriod(self) -> float:
        """
        Take the next period of the idle wait off C{_idleLeft}: no longer
        than C{headerTimeout}, so that a head beginning meanwhile is due no
        sooner than the timer.
        """
        period = min(self._idleLeft, self.limits.headerTimeout)
        self._idleLeft -= period
        return period

    def timeoutConnection(self) -> None:
        phase = self._phase
        limits = self.limits
        why = None
        if phase is _ANSWERING:
            self.site.refusalLog.refused(
                _CLOSED,
                str(self.transport.getPeer()),
                f"its client read nothing of its response for "
                f"{self._idleTimeout:g} s, as long as a kept-alive connection "
                "may stay idle",
            )
            self.transport.abortConnection()
            return
        if phase is _IDLE:
            if self._idleLeft > 0 and not self._closing:
                self.setTimeout(self._idlePeriod())
                return
        elif phase is _HEAD:
            left = self._headDeadline - self._seconds()
            if left > 0:
                self.setTimeout(left)
                return
            why = (
                "the request head was not complete within "
                f"{limits.headerTimeout:g} s (requestHeaderTimeout)"
            )
        elif phase is _BODY:
            if not self._measuring or self._bodyBytes >= max(
                limits.bodyMinRate * limits.bodyTimeout, 1
            ):
                # It kept up over this window (or none was measured yet):
                # measure the next.
                self._measuring = True
                self._bodyBytes = 0
                self.setTimeout(limits.bodyTimeout)
                return
            why = (
                f"the request body arrived slower than {limits.bodyMinRate} "
                f"bytes/s over {limits.bodyTimeout:g} s "
                "(requestBodyMinRate, requestBodyTimeout)"
            )
        elif phase is _REFUSED and not self._measuring:
            # Time to read and drop the refused body, so that the client
            # reads the answer rather than a reset connection.
            self._measuring = True
            self.setTimeout(limits.bodyTimeout)
            return
        if why is not None:
            self.refuse(408, "timed out: " + why)
        self._phase = _REFUSED
        self.refused = True
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(
                self.abortTimeout, self.forceAbortClient
            )
        self._close()

    def loseConnection(self) -> None:
        end = self._end
        if self._closing and self._phase is _IDLE and end is not None:
            # The last response, at stop: send it and then a FIN, but read
            # (and drop) what the client still sends until it closes, as
            # closing a socket with bytes unread, or that get bytes later,
            # resets it, and the kernel drops what it has yet to send of the
            # response.  The idle timer still ends the wait.
            self._phase = _LINGERING
            self._networkProducer.unregisterProducer()
            # Reading goes on, whatever the channel's producer calls later.
            self._networkProducer = _NoPushProducer()
            end.loseWriteConnection()
            end.resumeProducing()
            return
        HTTPChannel.loseConnection(self)

    def _close(self) -> None:
        """
        Close the connection, if that has not begun yet.
        """
        if not self.transport.disconnecting:
            self.loseConnection()

    def forceAbortClient(self) -> None:
        # HTTPChannel's, without its log line for every connection.
        self._abortingCall = None
        self.transport.abortConnection()

    # Refusing a request before it is all received

    def tooLargeMessage(self) -> str:
        return (
            f"the request body is larger than {self.limits.maxBody} bytes, "
            f"the most {self.site.bodyLimitNote}"
        )

    def refuse(self, code: int, message: str, logged: Optional[str] = None) -> None:
        """
        Answer C{code} with C{message} at once and take no more of this
        request: the rest of its body is read and dropped, up to
        L{DISCARD_LIMIT}, then the connection is closed.

        @param logged: What to log instead of C{message}.
        """
        if self.refused:
            return
        self.refused = True
        self._phase = _REFUSED
        # The timer, when it next fires, gives the rest of the body a window.
        self._measuring = False
        self.persistent = False
        self.site.refusalLog.refused(
            code, str(self.transport.getPeer()), logged or message
        )
        self.transport.write(self.site.answer(code, message))

    def spoolFailed(self, error: OSError) -> None:
        """
        Writing the request body to its temporary file failed: answer 507
        if storage ran out, 503 otherwise.
        """
        code = 507 if error.errno in _STORAGE_ERRORS else 503
        reason = error.strerror or str(error)
        request = self.requests[-1]
        content, request.content = request.content, None
        if content is not None:
            try:
                content.close()
            except OSError:
                # What it still buffers cannot be written either; the file is
                # closed all the same.  twisted.web would otherwise close it,
                # and raise, when the connection is lost.
                pass
        self.refuse(
            code,
            f"there is no room to keep the request body ({reason}); try again "
            "later",
            f"could not write a request body to a temporary file in "
            f"{tempfile.gettempdir()} (TMPDIR): {reason}",
        )

    def badRequestMessage(self) -> str:
        return (
            "the request is malformed, or too big for rainbowd: a request "
            f"line or header of at most {self.MAX_LENGTH} bytes, at most "
            f"{self.maxHeaders} headers and {self.totalHeadersSize} bytes of "
            "head in all, chunk-size lines of at most "
            f"{maxChunkSizeLineLength} bytes and 64 KiB of trailers"
        )

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's answers a bare 400, and again for each error it finds
        # in the rest of a refused request.
        self.refuse(400, self.badRequestMessage())
        self._close()

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver's closes the connection without a word.
        self._respondToBadRequestAndDisconnect()

    def discarded(self, size: int) -> None:
        self._discarded += size
        if self._discarded > DISCARD_LIMIT:
            self._close()


class LimitedSite(Site):
    """
    A site of L{LimitedChannel}s and L{LimitedRequest}s.

    @ivar limits: The L{RequestLimits} of its requests.
    @ivar what: What it serves, for log lines ("public port").
    @ivar bodyLimitNote: The end of the sentence of a 413, after "the
        most".
    @ivar refusalLog: Logs the requests refused or timed out, a line a
        minute for each status code at most.
    """

    # An HTTP/1.1 channel, not Twisted's wrapper that can switch to HTTP/2.
    protocol = LimitedChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    what = "site"
    bodyLimitNote = "rainbowd takes"

    def __init__(
        self, resource, *args, limits: Optional[RequestLimits] = None, **kwargs
    ) -> None:
        """
        @param limits: The limits of its requests; by default, L{Config}'s.
        """
        Site.__init__(self, resource, *args, **kwargs)
        self.limits = RequestLimits.fromConfig(None) if limits is None else limits
        self.refusalLog = _RefusalLog(self.reactor, self.what)

    def stopFactory(self) -> None:
        self.refusalLog.stop()
        Site.stopFactory(self)

    def answer(self, code: int, message: str) -> bytes:
        """
        The whole response, closing the connection, that tells a client its
        request was refused and why.
        """
        contentType, body = self.errorBody(message)
        return (
            b"HTTP/1.1 %d %s\r\n"
            b"Content-Type: %s\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n"
            b"\r\n%s" % (code, _REASONS[code], contentType, len(body), body)
        )

    def errorBody(self, message: str):
        """
        The content type and body of an answer saying C{message}.
        """
        return b"text/plain; charset=utf-8", f"{message}\n".encode("utf-8")
