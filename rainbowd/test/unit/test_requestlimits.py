# -*- test-case-name: rainbowd.test.unit.test_requestlimits -*-
"""
Tests for L{rainbowd.web.requestlimits}, through the public port's real channel:
a L{ProxySite} serving a recording resource, driven over a
L{StringTransport} with time from a L{MemoryReactorClock}.  The control
port's site is tested the same way in L{rainbowd.test.unit.test_controlsite}.
"""

import errno
import os
import socket
from io import BytesIO
from typing import TYPE_CHECKING, List, Tuple, TypeVar, cast

import attrs
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.base import DelayedCall
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rainbowd.config import Config
from rainbowd.test.fakes import passTime
from rainbowd.web import requestlimits
from rainbowd.web.proxy import ProxySite
from rainbowd.web.requestlimits import LOG_INTERVAL, RequestLimits

if TYPE_CHECKING:
    from typing_extensions import Buffer

_T = TypeVar("_T")


def _default(field: "attrs.Attribute[_T]") -> _T:
    """
    The default of a config key that has one.
    """
    assert field.default is not None
    return field.default


DEFAULTS = attrs.fields(Config)
HEADER_TIMEOUT = _default(DEFAULTS.requestHeaderTimeout)
BODY_TIMEOUT = _default(DEFAULTS.requestBodyTimeout)
MIN_RATE = _default(DEFAULTS.requestBodyMinRate)
IDLE_TIMEOUT = 60


class Recorder(Resource):
    """
    Records the method, path and body of each request reaching it.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.reached: List[Tuple[bytes, bytes, bytes]] = []

    def render(self, request) -> bytes:
        self.reached.append((request.method, request.path, request.content.read()))
        return b"reached\n"


class FullFile(BytesIO):
    """
    A spool file on a full disk: every write fails, with C{ENOSPC} by
    default.
    """

    def __init__(self, error: int = errno.ENOSPC) -> None:
        super().__init__()
        self.error = error

    def write(self, data: "Buffer") -> int:
        raise OSError(self.error, os.strerror(self.error))

    def close(self) -> None:
        # As a buffered file does: what it holds cannot be written either.
        super().close()
        raise OSError(self.error, os.strerror(self.error))


class LimitsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resource = Recorder()
        self.site = ProxySite(self.resource, reactor=self.reactor, timeout=IDLE_TIMEOUT)

    def connect(self):
        """
        A client connection to the public port's site.
        """
        address = IPv4Address("TCP", "192.0.2.7", 40000)
        protocol = self.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def trickle(self, protocol, transport, data: bytes, every: float) -> None:
        """
        Send C{data} a byte every C{every} seconds, as long as the
        connection stays open.
        """
        for byte in data:
            if transport.disconnecting:
                return
            protocol.dataReceived(bytes([byte]))
            passTime(self.reactor, every)

    def code(self, transport) -> int:
        return int(transport.value().split(b" ", 2)[1])


class HeadTimeoutTests(LimitsTestCase):
    """
    The request head must be complete within requestHeaderTimeout.
    """

    def test_trickledHeadTimedOut(self) -> None:
        """
        A head trickled a byte every 5 s, which an idle timeout reset by
        every byte would never cut, gets 408 and is closed once
        requestHeaderTimeout has passed since the connection opened.
        """
        protocol, transport = self.connect()
        head = b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Slow: " + b"a" * 1000
        self.trickle(protocol, transport, head, 5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.reactor.seconds(), HEADER_TIMEOUT)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer)
        self.assertIn(b"Connection: close\r\n", answer)
        self.assertIn(
            b"rainbowd: timed out: the request head was not complete within 10 s "
            b"(requestHeaderTimeout)\n",
            answer,
        )
        self.assertEqual(self.resource.reached, [])

    def test_wholeHeadInTime(self) -> None:
        """
        A head that arrives slowly but whole within requestHeaderTimeout is
        served.
        """
        protocol, transport = self.connect()
        head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        self.trickle(protocol, transport, head, (HEADER_TIMEOUT - 0.5) / len(head))
        self.assertEqual(self.code(transport), 200)
        self.assertFalse(transport.disconnecting)

    def test_silentConnectionClosed(self) -> None:
        """
        A connection that sends nothing is closed without an answer once
        requestHeaderTimeout has passed, not after the idle timeout.
        """
        protocol, transport = self.connect()
        passTime(self.reactor, HEADER_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_keptAliveIdle(self) -> None:
        """
        After a response, a kept-alive connection may stay idle for the idle
        timeout; the first byte of the next request then starts that head's
        deadline, which trickling does not move.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = transport.value()
        passTime(self.reactor, IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        started = self.reactor.seconds()
        self.trickle(protocol, transport, b"GET / HTTP/1.1\r\nHost: " + b"x" * 100, 1)
        self.assertEqual(self.reactor.seconds() - started, HEADER_TIMEOUT)
        self.assertTrue(transport.value()[len(answered) :].startswith(b"HTTP/1.1 408 "))

    def test_headBegunMidIdle(self) -> None:
        """
        A head begun at any point of a long idle wait is due
        requestHeaderTimeout after its first byte, not when the idle
        timeout would have ended.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        passTime(self.reactor, 35.5)
        protocol.dataReceived(b"G")
        passTime(self.reactor, HEADER_TIMEOUT - 0.5)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 0.5)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_noIdleTimeout(self) -> None:
        """
        A site without an idle timeout keeps a kept-alive connection open,
        however long it stays idle, and still times out the next head.
        """
        self.site = ProxySite(self.resource, reactor=self.reactor, timeout=None)
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        passTime(self.reactor, 3600)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"G")
        passTime(self.reactor, HEADER_TIMEOUT)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_keptAliveIdleTimeout(self) -> None:
        """
        A kept-alive connection that stays idle is closed without an answer
        after the idle timeout.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = transport.value()
        passTime(self.reactor, IDLE_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answered)

    def test_unreadResponseAborted(self) -> None:
        """
        A client that asked for the connection to close, and does not read
        its response, loses the connection the idle timeout plus
        C{abortTimeout} later.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        passTime(self.reactor, IDLE_TIMEOUT + protocol.abortTimeout - 1)
        self.assertFalse(transport.disconnected)
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnected)

    def streaming(self):
        """
        A connection whose request is being answered, its response begun
        and not finished.
        """
        pending = []

        class Slow(Resource):
            isLeaf = True

            def render(self, request):
                pending.append(request)
                return 1  # NOT_DONE_YET

        self.site.resource = Slow()
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        pending[0].write(b"x" * 1000)
        return protocol, transport, pending[0]

    def test_unreadResponseMidwayAborted(self) -> None:
        """
        A client that reads nothing of a response being sent, so that
        rainbowd's buffer for it stays full, has its connection aborted
        once the idle timeout has passed, and it is logged.
        """
        protocol, transport, request = self.streaming()
        # What the transport does when its buffer for the client is full.
        protocol.pauseProducing()
        passTime(self.reactor, IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnected)
        with capturedLogs() as events:
            passTime(self.reactor, 1)
        self.assertTrue(transport.disconnected)
        [line] = [formatEvent(event) for event in events]
        self.assertIn("read nothing of its response for 60 s", line)

    def test_writesWhileFullDoNotExtend(self) -> None:
        """
        The wait for an unread response is not extended by more being
        written to it: the transport pauses the channel again at each write
        while its buffer is full.
        """
        protocol, transport, request = self.streaming()
        protocol.pauseProducing()
        for _ in range(IDLE_TIMEOUT - 1):
            passTime(self.reactor, 1)
            request.write(b"y")
            protocol.pauseProducing()
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnected)

    def test_slowReaderNotCut(self) -> None:
        """
        A client that reads its response, however slowly, is not cut: each
        time its buffer drains the wait starts again, and a response that
        is not held up by the client is never timed out.
        """
        protocol, transport, request = self.streaming()
        for _ in range(10):
            protocol.pauseProducing()
            passTime(self.reactor, IDLE_TIMEOUT - 1)
            protocol.resumeProducing()
        passTime(self.reactor, 3600)
        self.assertFalse(transport.disconnecting)
        request.finish()
        self.assertIn(b"x" * 1000, transport.value())

    def test_pipelinedBehindUnread(self) -> None:
        """
        A request pipelined behind one whose response the client has not
        read is answered under the same wait: the client has the idle
        timeout to read, from when the first response was done.
        """
        pending = []

        class Streamed(Resource):
            isLeaf = True

            def render(self, request):
                pending.append(request)
                return 1  # NOT_DONE_YET

        self.site.resource = Streamed()
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        pending[0].write(b"x" * 1000)
        # The transport's buffer for the client is full.
        protocol.pauseProducing()
        passTime(self.reactor, 30)
        pending[0].finish()
        pending[1].write(b"y")
        protocol.pauseProducing()
        passTime(self.reactor, IDLE_TIMEOUT - 1)
        self.assertFalse(transport.disconnected)
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnected)

    def test_pipelinedHeadsDue(self) -> None:
        """
        A request pipelined behind another, half sent, is due
        requestHeaderTimeout after the first is answered.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n")
        passTime(self.reactor, HEADER_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([path for (_, path, _) in self.resource.reached], [b"/1"])

    def test_forceAbort(self) -> None:
        """
        A timed-out client that does not let the connection close is
        aborted C{abortTimeout} later, without a log line of its own.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET")
        passTime(self.reactor, HEADER_TIMEOUT)
        with capturedLogs() as events:
            passTime(self.reactor, protocol.abortTimeout)
        self.assertTrue(transport.disconnected)
        self.assertEqual(events, [])


class BodyRateTests(LimitsTestCase):
    """
    A request body must arrive at requestBodyMinRate, over each
    requestBodyTimeout window.
    """

    def post(self, length: int):
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length
        )
        return protocol, transport

    def test_slowBodyCut(self) -> None:
        """
        A body arriving below requestBodyMinRate is answered 408 and closed
        at the end of the window, and never reaches the resource.
        """
        protocol, transport = self.post(1000000)
        for _ in range(int(BODY_TIMEOUT)):
            protocol.dataReceived(b"x" * (MIN_RATE - 1))
            passTime(self.reactor, 1)
        self.assertTrue(transport.disconnecting)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        self.assertIn(b"slower than 500 bytes/s over 20 s", answer)
        self.assertEqual(self.resource.reached, [])

    def test_stalledBodyCut(self) -> None:
        """
        A body that has kept up and then stops is cut within two windows.
        """
        protocol, transport = self.post(1000000)
        protocol.dataReceived(b"x" * int(MIN_RATE * BODY_TIMEOUT))
        passTime(self.reactor, BODY_TIMEOUT)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, BODY_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_keepingUpNotCut(self) -> None:
        """
        A body that keeps up with requestBodyMinRate, for many windows,
        reaches the resource whole, however long it takes.
        """
        size = int(MIN_RATE * BODY_TIMEOUT * 6)
        protocol, transport = self.post(size)
        sent = 0
        while sent < size:
            protocol.dataReceived(b"x" * MIN_RATE)
            sent += MIN_RATE
            passTime(self.reactor, 1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.code(transport), 200)
        self.assertEqual(self.resource.reached, [(b"POST", b"/upload", b"x" * size)])

    def test_chunkedBodyTimedToo(self) -> None:
        """
        A chunked body is held to the same rate.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.trickle(protocol, transport, b"1\r\nx\r\n" * 100, 5)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertEqual(self.reactor.seconds(), BODY_TIMEOUT)

    def test_noTimeoutWhileAnswering(self) -> None:
        """
        Once the request is complete, nothing is timed out while it is
        answered.
        """
        pending = []

        class Slow(Resource):
            isLeaf = True

            def render(self, request):
                pending.append(request)
                return 1  # NOT_DONE_YET

        self.site.resource = Slow()
        protocol, transport = self.post(3)
        protocol.dataReceived(b"abc")
        passTime(self.reactor, 3600)
        self.assertFalse(transport.disconnecting)
        pending[0].write(b"done")
        pending[0].finish()
        self.assertIn(b"done", transport.value())


    def test_bodyTimeoutShorterThanHead(self) -> None:
        """
        With a requestBodyTimeout shorter than requestHeaderTimeout, a
        stalled body is cut within the two.
        """
        self.site.limits = attrs.evolve(
            self.site.limits, headerTimeout=30.0, bodyTimeout=5.0
        )
        protocol, transport = self.post(1000)
        passTime(self.reactor, 35)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))


class SoonerRecordingClock(MemoryReactorClock):
    """
    A clock that records every delayed call moved sooner, which Twisted's
    real reactor does by a linear search of all its calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.movedSooner: list = []

    def callLater(self, delay, f, *args, **kwargs):
        call = super().callLater(delay, f, *args, **kwargs)
        call.resetter = self.movedSooner.append
        return call


class TimerCostTests(LimitsTestCase):
    """
    The limits cost no more timer work than twisted.web's idle timeout.
    """

    def test_noTimerMovedSooner(self) -> None:
        """
        Serving kept-alive requests, with and without bodies, whole or
        trickled, and pipelined, moves no timer sooner.
        """
        self.reactor = SoonerRecordingClock()
        self.site = ProxySite(self.resource, reactor=self.reactor, timeout=IDLE_TIMEOUT)
        protocol, transport = self.connect()
        post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        for _ in range(3):
            protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            passTime(self.reactor, 25)
            protocol.dataReceived(post)
            self.trickle(protocol, transport, post, 0.125)
            protocol.dataReceived(post + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.resource.reached), 15)
        self.assertEqual(self.reactor.movedSooner, [])


class BodySizeTests(LimitsTestCase):
    """
    A body bigger than maxRequestBody gets 413.
    """

    def setUp(self) -> None:
        super().setUp()
        self.site.limits = attrs.evolve(self.site.limits, maxBody=1000)

    def test_atTheLimit(self) -> None:
        """
        A body of exactly maxRequestBody bytes is taken.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        )
        self.assertEqual(self.code(transport), 200)

    def test_contentLengthTooLarge(self) -> None:
        """
        A Content-Length over maxRequestBody is answered 413 as soon as the
        head is in, with no 100 Continue; the body is read and dropped, and
        the connection closes after it.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1001\r\n\r\n"
        )
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), answer)
        self.assertNotIn(b"100 Continue", answer)
        self.assertIn(
            b"rainbowd: the request body is larger than 1000 bytes, the most "
            b"rainbowd takes (maxRequestBody)",
            answer,
        )
        protocol.dataReceived(b"x" * 1000)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answer)
        self.assertEqual(self.resource.reached, [])

    def test_chunkedCut(self) -> None:
        """
        A chunked body is answered 413 as soon as its chunks pass
        maxRequestBody.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3e8\r\n" + b"x" * 1000 + b"\r\n"
        )
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"1\r\nx\r\n")
        self.assertEqual(self.code(transport), 413)
        protocol.dataReceived(b"0\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])

    def test_pipelinedBehindRefused(self) -> None:
        """
        A request pipelined behind a refused body, in the same bytes as its
        end, is never read: the 413 is the only answer, and the connection
        closes.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3e9\r\n" + b"x" * 1001 + b"\r\n0\r\n\r\n"
            b"GET /pipelined HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.code(transport), 413)
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)
        self.assertEqual(self.resource.reached, [])

    def test_refusedDiscardIsTimed(self) -> None:
        """
        The body of a refused request is read and dropped for at most one
        requestBodyTimeout window after the head's deadline.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        passTime(self.reactor, HEADER_TIMEOUT + BODY_TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        passTime(self.reactor, 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.code(transport), 413)


class SpoolFailureTests(LimitsTestCase):
    """
    A body that cannot be stored is answered, and logged once.
    """

    def fullDisk(self, error: int = errno.ENOSPC) -> None:
        self.patch(requestlimits, "spoolFile", lambda length: FullFile(error))

    def upload(self):
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
        )
        for _ in range(4):
            protocol.dataReceived(b"x" * 50000)
        return protocol, transport

    def test_fullDisk(self) -> None:
        """
        A write that fails with ENOSPC is answered 507 with a body saying
        so, logged in one line naming the temporary directory, with no
        traceback; the connection closes once the body is read, and the
        site serves the next client.
        """
        self.fullDisk()
        with capturedLogs() as events:
            protocol, transport = self.upload()
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 507 Insufficient Storage\r\n"))
        self.assertIn(
            b"rainbowd: there is no room to keep the request body (No space "
            b"left on device); try again later\n",
            answer,
        )
        self.assertTrue(transport.disconnecting)
        [event] = events
        text = formatEvent(event)
        self.assertIn("Answered 507 to a client of the public port", text)
        self.assertIn("No space left on device", text)
        self.assertIn("(TMPDIR)", text)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.resource.reached, [])
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.code(transport), 200)

    def test_quota(self) -> None:
        """
        EDQUOT, a quota used up, is answered 507 too.
        """
        self.fullDisk(errno.EDQUOT)
        protocol, transport = self.upload()
        self.assertEqual(self.code(transport), 507)

    def test_otherError(self) -> None:
        """
        Another error (EIO) is answered 503.
        """
        self.fullDisk(errno.EIO)
        protocol, transport = self.upload()
        self.assertEqual(self.code(transport), 503)

    def test_cannotCreate(self) -> None:
        """
        A temporary file that cannot be made is answered 507 at once, with
        no 100 Continue.
        """

        def noFile(length):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(requestlimits, "spoolFile", noFile)
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 200000\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 507 "))
        self.assertNotIn(b"100 Continue", transport.value())
        protocol.dataReceived(b"x" * 200000)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failedFlush(self) -> None:
        """
        A write that fails only when the spool file's buffer is flushed,
        at the end of the body, is answered 507 too.
        """

        class FailsOnFlush(FullFile):
            def write(self, data):
                return len(data)

            def flush(self):
                raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(requestlimits, "spoolFile", lambda length: FailsOnFlush())
        protocol, transport = self.upload()
        self.assertEqual(self.code(transport), 507)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    def failsOnFlush(self) -> None:
        """
        Make every spool file one whose writes succeed and whose flush
        fails with ENOSPC.
        """

        class FailsOnFlush(FullFile):
            def write(self, data):
                return len(data)

            def flush(self):
                raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(requestlimits, "spoolFile", lambda length: FailsOnFlush())

    def test_failedFlushChunked(self) -> None:
        """
        A chunked body whose spool file fails when flushed, at the last
        chunk, is answered 507 too, and reaches no resource.
        """
        self.failsOnFlush()
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        self.assertEqual(self.code(transport), 507)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_noBodyNotFlushed(self) -> None:
        """
        Only a body is flushed: a request without one is served even where
        flushing a spool file would fail.
        """
        self.failsOnFlush()
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.code(transport), 200)
        self.assertEqual(self.resource.reached, [(b"GET", b"/", b"")])


class TransferCodingTests(LimitsTestCase):
    """
    A transfer coding other than chunked is refused.
    """

    def test_identityRefused(self) -> None:
        """
        C{Transfer-Encoding: identity}, which twisted.web takes for an empty
        body, is answered 501 and the connection closed: its body is never
        read as a next request.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"
            b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), answer)
        self.assertIn(b"Transfer-Encoding: identity", answer)
        self.assertEqual(answer.count(b"HTTP/1.1"), 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])

    def test_otherCodingsRefused(self) -> None:
        """
        Identity in any case, next to chunked or a Content-Length, gets 501
        too, and codings twisted.web does not know get its 400; whatever
        the headers around them, the connection is closed.
        """
        for codings, code in [
            ([b"Identity"], 501),
            ([b"identity\r\nContent-Length: 0"], 501),
            ([b"identity", b"chunked"], 501),
            ([b"chunked", b"identity"], 501),
            ([b"gzip"], 400),
            ([b"gzip, chunked"], 400),
            ([b"chunked, identity"], 400),
        ]:
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"POST / HTTP/1.1\r\n"
                + b"".join(b"transfer-ENCODING: " + c + b"\r\n" for c in codings)
                + b"Host: x\r\n\r\n0\r\n\r\n"
            )
            self.assertEqual(self.code(transport), code, codings)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])

    def test_identityWithLengthRefused(self) -> None:
        """
        Identity with a Content-Length, which twisted.web reads by the
        length, gets 501 too: a front proxy may read it otherwise.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: identity\r\n\r\nabc"
        )
        self.assertEqual(self.code(transport), 501)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.reached, [])

    def test_chunkedTaken(self) -> None:
        """
        C{Transfer-Encoding: chunked}, in any case, is taken.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(self.code(transport), 200)
        self.assertEqual(self.resource.reached, [(b"POST", b"/", b"abc")])


class HeaderValueTests(LimitsTestCase):
    """
    What the Twisted floor in setup.cfg is for.
    """

    def test_bareCRLFAndNULRefused(self) -> None:
        """
        A request header value with a NUL, or a CR or LF not ending its
        line, is refused with 400 by the channel and reaches nothing; older
        twisted.web turned a bare CR or LF into a space.
        """
        for value in [b"a\x00b", b"a\rb", b"a\nb", b"a\rX-Injected: 1"]:
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Value: " + value + b"\r\n\r\n"
            )
            self.assertEqual(self.code(transport), 400, value)
        self.assertEqual(self.resource.reached, [])


class BadRequestTests(LimitsTestCase):
    """
    twisted.web's own refusals get an answer that says what may be wrong.
    """

    def test_badRequestSaysWhy(self) -> None:
        """
        A malformed request, a head too big, a chunk-size line or trailers
        too long, are answered 400 with a body naming the limits and
        I{Connection: close}, and logged (a line a minute).
        """
        logged: List[str] = []
        for data in [
            b"NOT A REQUEST LINE AT ALL\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 600 + b"\r\n",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1" * 2000,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\nx\r\n0\r\n" + (b"X-T: " + b"a" * 100 + b"\r\n") * 700,
        ]:
            protocol, transport = self.connect()
            with capturedLogs() as events:
                protocol.dataReceived(data)
            logged.extend(formatEvent(event) for event in events)
            answer = transport.value()
            self.assertEqual(self.code(transport), 400, data[:60])
            self.assertIn(b"Connection: close\r\n", answer)
            self.assertIn(b"at most 500 headers", answer)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(answer.count(b"HTTP/1.1 "), 1)
        self.assertEqual(self.resource.reached, [])
        [line] = logged
        self.assertIn("Answered 400 to a client of the public port", line)


class RefusalLogTests(LimitsTestCase):
    """
    Refusals and timeouts are logged a line a minute at most per status.
    """

    def test_manyTimeoutsFewLines(self) -> None:
        """
        A thousand clients timed out within a minute make one line at once
        and one with the count of the others when the minute is over.
        """
        with capturedLogs() as events:
            for _ in range(1000):
                protocol, transport = self.connect()
                protocol.dataReceived(b"GET / HTTP/1.1\r\n")
            passTime(self.reactor, HEADER_TIMEOUT)
            self.assertEqual(len(events), 1)
            passTime(self.reactor, LOG_INTERVAL)
        lines = [formatEvent(event) for event in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("Answered 408 to a client of the public port", lines[0])
        self.assertIn("request head was not complete", lines[0])
        self.assertIn("Answered 408 to 999 more clients of the public port", lines[1])

    def test_quietAgain(self) -> None:
        """
        After a minute without refusals, the next one is logged at once.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"G")
        passTime(self.reactor, HEADER_TIMEOUT)
        passTime(self.reactor, LOG_INTERVAL)
        with capturedLogs() as events:
            protocol, transport = self.connect()
            protocol.dataReceived(b"G")
            passTime(self.reactor, HEADER_TIMEOUT)
        self.assertEqual(len(events), 1)

    def test_stoppedWithTheSite(self) -> None:
        """
        Stopping the site cancels the log's timer.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"G")
        passTime(self.reactor, HEADER_TIMEOUT)
        self.site.doStart()
        self.site.doStop()
        self.assertEqual(
            # A Clock's delayed calls are DelayedCalls.
            [
                cast(DelayedCall, call).func.__name__
                for call in self.reactor.getDelayedCalls()
            ],
            ["forceAbortClient"],
        )


class LimitsFromConfigTests(SynchronousTestCase):
    """
    Tests for L{RequestLimits.fromConfig}.
    """

    def test_defaults(self) -> None:
        """
        Without a config, the limits are L{Config}'s defaults.
        """
        self.assertEqual(
            RequestLimits.fromConfig(None),
            RequestLimits(
                headerTimeout=10.0,
                bodyTimeout=20.0,
                bodyMinRate=500,
                maxBody=100 * 1024 * 1024,
            ),
        )


class SocketEnd(FileDescriptor):
    """
    The descriptor under a connection, as L{requestlimits} sees it: a real
    socket (one end of a pair), and whether its writing side was closed.
    """

    writeClosed = False

    def __init__(self, sock: socket.socket) -> None:
        FileDescriptor.__init__(self, MemoryReactorClock())
        self.socket = sock

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def resumeProducing(self) -> None:
        pass


class CloseWhenAnsweredTests(LimitsTestCase):
    """
    Tests for L{requestlimits.LimitedChannel.closeWhenAnswered}, how a
    connection ends when rainbowd stops.
    """

    def test_idle(self) -> None:
        """
        A connection with nothing of a request on it, new or kept alive
        after a response, is closed at once.
        """
        protocol, transport = self.connect()
        self.assertFalse(protocol.receivingRequest())
        protocol.closeWhenAnswered()
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"reached", transport.value())
        self.assertFalse(transport.disconnecting)
        protocol.closeWhenAnswered()
        self.assertTrue(transport.disconnecting)

    def test_waitingInTheKernel(self) -> None:
        """
        A connection, new or kept alive, whose request has reached the
        socket but not yet been read is not closed (which would reset it,
        the request lost): it counts as receiving, and the request is
        answered with C{Connection: close}; one whose peer has only hung up
        is closed.
        """
        for kept in (False, True):
            protocol, transport = self.connect()
            if kept:
                protocol.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            ours, theirs = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(theirs.close)
            end = protocol._end = SocketEnd(ours)
            theirs.sendall(b"GET /b HTTP/1.1\r\n")
            protocol.closeWhenAnswered()
            self.assertFalse(transport.disconnecting, kept)
            self.assertTrue(protocol.receivingRequest(), kept)
            protocol.dataReceived(ours.recv(100) + b"Host: x\r\n\r\n")
            self.assertFalse(protocol.receivingRequest(), kept)
            self.assertIn(b"\r\nConnection: close\r\n", transport.value())
            self.assertTrue(end.writeClosed, kept)
        protocol, transport = self.connect()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        protocol._end = SocketEnd(ours)
        theirs.close()
        protocol.closeWhenAnswered()
        self.assertTrue(transport.disconnecting)

    def test_lingersAfterTheLastResponse(self) -> None:
        """
        After the last response at stop, only the sending side is closed:
        what the client still sends (a request pipelined behind) is read
        and dropped, never answered, until the client closes, so that the
        close does not reset the connection and lose the response; the
        idle timer ends the wait.
        """
        protocol, transport = self.connect()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        end = protocol._end = SocketEnd(ours)
        protocol.dataReceived(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        protocol.closeWhenAnswered()
        protocol.dataReceived(b"ok" + b"POST /b HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(end.writeClosed)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"POST /c HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual([path for _, path, _ in self.resource.reached], [b"/a"])
        self.assertFalse(protocol.receivingRequest())
        passTime(self.reactor, HEADER_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_idleGrace(self) -> None:
        """
        With a grace, an idle connection stays open that long: a request
        that comes meanwhile is answered with C{Connection: close}, and its
        connection then closes; one that stays idle is closed at the end.
        """
        busy, busyTransport = self.connect()
        idle, idleTransport = self.connect()
        for protocol in (busy, idle):
            protocol.closeWhenAnswered(idleGrace=5.0)
        self.reactor.advance(4.0)
        self.assertFalse(busyTransport.disconnecting or idleTransport.disconnecting)
        busy.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"\r\nConnection: close\r\n", busyTransport.value())
        self.assertEqual([path for _, path, _ in self.resource.reached], [b"/a"])
        self.assertTrue(busyTransport.disconnecting)
        self.reactor.advance(1.0)
        self.assertTrue(idleTransport.disconnecting)

    def test_headOnItsWay(self) -> None:
        """
        A request whose head is on its way is still answered, saying
        C{Connection: close}, and the connection is then closed, without
        reading what was pipelined behind it.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /a HTTP/1.1\r\nHo")
        self.assertTrue(protocol.receivingRequest())
        protocol.closeWhenAnswered()
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"st: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertFalse(protocol.receivingRequest())
        self.assertEqual([path for _, path, _ in self.resource.reached], [b"/a"])
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_bodyOnItsWay(self) -> None:
        """
        A request whose body is on its way is received whole, answered
        with C{Connection: close}, and its connection closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        self.assertTrue(protocol.receivingRequest())
        protocol.closeWhenAnswered()
        protocol.dataReceived(b"cd")
        self.assertEqual(self.resource.reached, [(b"POST", b"/a", b"abcd")])
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_answering(self) -> None:
        """
        A request being answered, its response not begun, gets
        C{Connection: close}; one whose response has begun ends it as it
        was, and either way the connection closes once it is answered.
        """
        for begun in (False, True):
            held = []

            class Holding(Resource):
                isLeaf = True

                def render(self, request):
                    held.append(request)
                    if begun:
                        request.setHeader(b"Content-Length", b"2")
                        request.write(b"o")
                    return NOT_DONE_YET

            self.site.resource = Holding()
            protocol, transport = self.connect()
            protocol.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertFalse(protocol.receivingRequest())
            protocol.closeWhenAnswered()
            self.assertFalse(transport.disconnecting)
            held[0].write(b"k" if begun else b"ok")
            held[0].finish()
            self.assertEqual(
                b"Connection: close" in transport.value(), not begun, begun
            )
            self.assertTrue(transport.disconnecting, begun)

    def test_answeringBegunWithGrace(self) -> None:
        """
        With a grace (an upgrade), a response already begun cannot say
        C{Connection: close}, so its connection is not closed after it,
        which the client, taking it for kept alive, would send its next
        request into: that next request, if it comes within the grace, is
        answered as the last, with C{Connection: close}; else the
        connection is closed idle at the end of the grace.
        """
        for comes in (True, False):
            held: List[Request] = []

            class Holding(Resource):
                isLeaf = True

                def render(self, request):
                    if not held:
                        held.append(request)
                        request.setHeader(b"Content-Length", b"2")
                        request.write(b"o")
                        return NOT_DONE_YET
                    return b"last"

            self.site.resource = Holding()
            protocol, transport = self.connect()
            protocol.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            protocol.closeWhenAnswered(idleGrace=5.0)
            held[0].write(b"k")
            held[0].finish()
            self.assertNotIn(b"Connection: close", transport.value())
            self.assertFalse(transport.disconnecting, comes)
            self.reactor.advance(4.0)
            self.assertFalse(transport.disconnecting, comes)
            if comes:
                transport.clear()
                protocol.dataReceived(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertIn(b"\r\nConnection: close\r\n", transport.value())
                self.assertTrue(transport.value().endswith(b"last"))
            else:
                self.reactor.advance(1.0)
            self.assertTrue(transport.disconnecting, comes)
