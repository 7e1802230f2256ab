# -*- test-case-name: rainbowd.test.unit.test_backendclient -*-
"""
The lean HTTP/1.1 client the proxy forwards requests to a backend with.

A L{Pool} keeps the persistent connections to one backend, each a
L{BackendConnection} carrying one request at a time.  A connection streams
the response to its handler as it comes, and is the producer of the
client's response, so that a slow client pauses reading from the backend.
(L{twisted.web.client.Agent}, which it replaced, makes Deferreds, a
L{Headers} object and a body-delivery protocol for every response, and
relayed about a third as many small requests a second.)

The handler of a request (the proxy's forwarding of it) provides
L{rainbowd.interfaces.IRequestHandler}: it has an C{upgrade} attribute,
true when the request asks to switch protocols, and hears:

  - C{connected(connection)} or C{connectionFailed(reason)}, from
    L{Pool.connect};
  - C{responseFailed(reason, stale)} if the connection closes before any
    of a response came;
  - C{responseHead(code, phrase, headers)}, then C{responseData(data)} for
    each piece of the body, C{responseStreaming(connection)} once more of
    the body is to come than has arrived, and C{responseDone()};
  - C{responseBroken(reason)} instead, if the response cannot be relayed,
    the connection fails in the middle of it, or its body stalls for the
    pool's C{bodyTimeout};
  - C{responseTimedOut(timeout)} if the response head has not all come
    within the pool's C{timeout} of the request being sent;
  - C{upgraded(connection, phrase, headers, rest)} if the backend answers
    101, after which the connection is the handler's to take over.
"""

import array
import fcntl
import termios
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure

from rainbowd.web.http1 import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    SWITCHED,
    BadResponse,
    ChunkedDecoder,
    ResponseParser,
)
from rainbowd.web.nodelay import sendAtOnce
from rainbowd.web.reads import fit, readingEnd, readSmall

_log = Logger()

IDLE_TIMEOUT = 1.0
"""
Seconds an idle connection to a backend is kept for reuse: less than the
keep-alive timeouts of app servers (gunicorn's is 2 s), so that rainbowd
closes an idle connection before the app does, rather than sending a request
down one the app is closing, which could only be retried if idempotent.
"""

TIMEOUT = 30.0
"""
Seconds a backend has, by default, to send the whole head of its response
once the request is sent (C{backendTimeout}).
"""

BODY_TIMEOUT = 300.0
"""
Seconds a response body may, by default, go without a byte before it is cut
(C{backendBodyTimeout}).
"""

CHUNK_SIZE = 65536
"""
Bytes of a request body read from twisted.web's buffer (a temporary file
for large bodies) and written to the backend at a time.
"""

_ioctl = fcntl.ioctl
_FIONREAD = termios.FIONREAD

_UNREAD = array.array("i", [0])
"""
Where L{BackendConnection.quiet} has the kernel write how many bytes a
socket holds unread (one buffer, as the reactor runs one thing at a time).
"""

class Pool:
    """
    The connections to one backend: those idle, ready for a request, the
    way to open more, and the cap on how many requests it carries at once.

    A request holds one of the pool's I{slots} from the moment it is sent
    until its response is over (L{acquire}, L{free}).  With a cap
    (C{maxConnections}), a request that finds every slot taken waits, in
    the order it came, for the next one to be freed; the connection that
    carried the request before it is then handed on, so that under a queue
    the connections stay open and busy rather than closed and opened again.
    Idle connections hold no slot: there are never more of them than slots
    were taken before, and none while requests wait, since a freed slot goes
    to the first of them at once.

    Without a cap, no slot is taken (the forwarding does not ask), and a
    request never waits: the queue (a deque, and one timer for the wait's
    deadline) exists only while a request waits.

    A handler that waits provides L{rainbowd.interfaces.ISlotWaiter}: it
    has a C{deadline} (in the reactor's seconds) and hears, once it is out of the queue, one of C{slotGranted()} (which may
    return C{False} to decline the slot, which then goes to the next),
    C{slotTimedOut()} or C{slotMoved()} (its backend began draining: it
    should find another).

    @ivar idle: The idle connections, the most recently used last.
    @ivar draining: The backend takes no new requests: connections are closed
        as soon as they are idle.
    @ivar maxConnections: The most requests carried at once; 0 for no cap.
    @ivar maxRequests: A connection is closed after this many responses
        rather than reused; 0 for no limit.
    @ivar busy: How many slots are taken.
    @ivar timeout: Seconds the backend has to send a response's head once
        the request is sent.
    @ivar bodyTimeout: Seconds a response body may go without a byte.
    @ivar misframed: What the backend sent outside the framing of its
        responses, once it has: its connections are then never reused, since
        bytes it sends late could be read as the next request's response.
    @ivar headerNames: The response header names its connections found
        valid, shared by their parsers (see L{ResponseParser}).
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        maxConnections: int = 0,
        maxRequests: int = 0,
        generation: Optional[int] = None,
        timeout: float = TIMEOUT,
        bodyTimeout: float = BODY_TIMEOUT,
        monitor: Any = None,
    ) -> None:
        """
        @param monitor: Told C{backendMisframed()} when the backend is
            first found to misframe, if not L{None}.
        """
        self.reactor = reactor
        self.port = port
        self.generation = generation
        self.timeout = timeout
        self.bodyTimeout = bodyTimeout
        self.monitor = monitor
        self.idle: List[BackendConnection] = []
        self.draining = False
        self.maxConnections = maxConnections
        self.maxRequests = maxRequests
        self.busy = 0
        self._waiting: Optional[Deque[Any]] = None
        self._expiry: Optional[IDelayedCall] = None
        self.misframed: Optional[str] = None
        self.headerNames: Dict[bytes, bytes] = {}

    def connect(self, handler: Any) -> Any:
        """
        Open a new connection for C{handler}, which hears of it through
        C{connected} or C{connectionFailed}.

        @return: The connector.
        """
        return self.reactor.connectTCP(
            "127.0.0.1", self.port, _Connecting(self, handler)
        )

    def take(self) -> Optional["BackendConnection"]:
        """
        An idle connection, if there is one, the most recently used first;
        one holding bytes nobody asked for is closed instead (see
        L{BackendConnection.quiet}).
        """
        # Looked up each time: a connection found misframing closes the
        # others, and empties the list.
        while self.idle:
            connection = self.idle.pop()
            if connection.quiet():
                return connection
        return None

    def release(self, connection: "BackendConnection") -> None:
        """
        C{connection} has finished a response and can take another, unless
        it has carried C{maxRequests} of them.
        """
        connection.requests += 1
        if self.draining or connection.requests == self.maxRequests:
            connection.transport.loseConnection()
            return
        connection.idleSince = self.reactor.seconds()
        self.idle.append(connection)
        if connection.idleCall is None:
            connection.idleCall = self.reactor.callLater(
                IDLE_TIMEOUT, self._checkIdle, connection
            )

    # Slots

    def acquire(self, handler: Any) -> bool:
        """
        Take a slot for C{handler}'s request if one is free; otherwise queue
        C{handler} until one is, or until its C{deadline}.

        @return: Whether the slot was taken; if not, C{handler} waits.
        """
        limit = self.maxConnections
        if not limit or self.busy < limit:
            self.busy += 1
            return True
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        waiting.append(handler)
        self._expireBy(handler.deadline)
        return False

    def free(self) -> None:
        """
        A request's response is over: its slot goes to the first request
        waiting that takes it (C{slotGranted()} returns C{False} to
        decline), if any.
        """
        # Looked up each time: a handler declining may have drained the pool.
        while self._waiting:
            waiting = self._waiting
            handler = waiting.popleft()
            if not waiting:
                self._stopWaiting()
            if handler.slotGranted() is not False:
                return
        self.busy -= 1

    def leave(self, handler: Any) -> None:
        """
        C{handler} no longer waits for a slot (its client hung up).
        """
        waiting = self._waiting
        if waiting is not None:
            try:
                waiting.remove(handler)
            except ValueError:
                return
            if not waiting:
                self._stopWaiting()

    def _expireBy(self, deadline: float) -> None:
        """
        Make sure the wait's timer fires by C{deadline}.
        """
        expiry = self._expiry
        if expiry is None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._expiry = self.reactor.callLater(delay, self._expire)
        elif deadline < expiry.getTime():
            expiry.reset(max(0.0, deadline - self.reactor.seconds()))

    def _expire(self) -> None:
        """
        Answer those who waited until their deadline, in the order they
        came; look again at the next deadline.
        """
        self._expiry = None
        waiting = self._waiting
        if not waiting:
            return
        now = self.reactor.seconds()
        late = [handler for handler in waiting if handler.deadline <= now]
        if late:
            kept = deque(handler for handler in waiting if handler.deadline > now)
            if kept:
                self._waiting = kept
            else:
                self._stopWaiting()
        if self._waiting:
            self._expireBy(min(handler.deadline for handler in self._waiting))
        for handler in late:
            handler.slotTimedOut()

    def _stopWaiting(self) -> None:
        self._waiting = None
        expiry, self._expiry = self._expiry, None
        if expiry is not None:
            expiry.cancel()

    # Idle connections

    def linger(self, connection: "BackendConnection") -> None:
        """
        C{connection} is closing, and still read from: close it for good
        after C{IDLE_TIMEOUT} if the backend has not by then.
        """
        connection.idleSince = self.reactor.seconds()
        if connection.idleCall is None:
            connection.idleCall = self.reactor.callLater(
                IDLE_TIMEOUT, self._checkIdle, connection
            )

    def watch(self, connection: "BackendConnection") -> None:
        """
        C{connection} carries a request: make sure its timer runs, to hold
        it to C{timeout} and C{bodyTimeout}.
        """
        call = connection.idleCall
        if call is None:
            connection.idleCall = self.reactor.callLater(
                min(IDLE_TIMEOUT, self.timeout), self._checkIdle, connection
            )
        elif self.timeout < IDLE_TIMEOUT:
            deadline = connection.sentAt + self.timeout
            if call.getTime() > deadline:
                call.reset(max(0.0, deadline - self.reactor.seconds()))

    def _checkIdle(self, connection: "BackendConnection") -> None:
        """
        Close C{connection} if it has been idle for C{IDLE_TIMEOUT}, or if the
        response it carries is late (see L{BackendConnection.expire}); look
        again when it could have been, if it is still open.

        (One timer per connection, moved on only when it fires, costs less
        than one per request.)
        """
        connection.idleCall = None
        if connection.lost:
            return
        now = self.reactor.seconds()
        if connection.handler is None:
            if connection.detached:
                return
            idleFor = now - connection.idleSince
            if idleFor >= IDLE_TIMEOUT:
                self.forget(connection)
                connection.transport.loseConnection()
                return
            wait = IDLE_TIMEOUT - idleFor
        else:
            wait = connection.expire(now)
            if wait is None:
                return
        connection.idleCall = self.reactor.callLater(wait, self._checkIdle, connection)

    def misframing(self, what: str) -> None:
        """
        The backend sent bytes outside the framing of its responses, as
        C{what} says: never reuse its connections again, and say so once.
        """
        if self.misframed is not None:
            return
        self.misframed = what
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.transport.loseConnection()
        _log.warn(
            "Backend generation {generation} on port {port} {what}.  It "
            "frames its responses wrongly, and bytes it sends late could be "
            "read as the answer to another request: rainbowd no longer "
            "reuses its connections (one request per connection from now on, "
            "which is slower).  Fix the app to send exactly one response per "
            "request, no body after a HEAD request or a 204 or 304 response, "
            "and no more body than its Content-Length; then redeploy.",
            generation=self.generation,
            port=self.port,
            what=what,
        )
        if self.monitor is not None:
            self.monitor.backendMisframed()

    def forget(self, connection: "BackendConnection") -> None:
        """
        C{connection} is closed or closing: never hand it out again.
        """
        try:
            self.idle.remove(connection)
        except ValueError:
            pass

    def drain(self) -> None:
        """
        The backend takes no new requests: close the idle connections, and
        each busy one once its response is over; those waiting for a slot
        are told to find another backend.
        """
        self.draining = True
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.transport.loseConnection()
        waiting = self._waiting
        if waiting:
            self._stopWaiting()
            for handler in waiting:
                handler.slotMoved()


class _Connecting(ClientFactory):
    """
    Open one connection to a backend for one request.
    """

    noisy = False

    def __init__(self, pool: Pool, handler: Any) -> None:
        self.pool = pool
        self.handler = handler

    # A BackendConnection lets go of its factory once connected (None),
    # which the protocol type of Twisted's Factory does not allow.
    def buildProtocol(self, addr: object) -> "BackendConnection":  # type: ignore[override]
        connection = BackendConnection(self.pool)
        connection.factory = self
        return connection

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.handler.connectionFailed(reason)


# The states of a backend connection.
_IDLE = 0
_HEAD = 1
_LENGTH = 2
_CHUNKED = 3
_UNTIL_CLOSE = 4
_DETACHED = 5

class BackendTimeout(Exception):
    """
    A backend's response stopped coming.
    """


@implementer(IPushProducer)
class BackendConnection(Protocol):
    """
    One HTTP/1.1 connection to a backend, carrying one request at a time.

    Its L{rainbowd.web.http1.ResponseParser} reads just what a proxy needs of
    a response -- status, headers, framing (I{Content-Length}, chunked, or
    until close), whether the connection persists -- and the connection
    hands the rest to its handler as it arrives, through a
    L{rainbowd.web.http1.ChunkedDecoder} if chunked.  It is the producer of the
    client's response, so that a slow client pauses reading from the
    backend.

    @ivar handler: The handler of the request it carries, if any.
    @ivar used: It has carried a whole response before, so the app may have
        closed it since.
    @ivar received: Some of the current response has come.
    @ivar dedicated: Carrying an upgrade request: never reused.
    @ivar requests: How many responses it has carried and been released
        after, counted by its pool.
    @ivar detached: Upgraded: the connection is no longer this protocol's.
    @ivar lost: The connection is closed.
    @ivar sentAt: When the current (or last) request was sent.
    """

    factory: Optional[_Connecting] = None
    # A TCP connection to 127.0.0.1, from makeConnection on: before that
    # the protocol is its factory's, and in no one else's hands.
    transport: "Connection"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.handler: Any = None
        self._fd: Optional[int] = None  # the socket's, once quiet() has looked
        self.used = False
        self.received = False
        self.dedicated = False
        self.detached = False
        self.lost = False
        self.idleSince = 0.0
        self.sentAt = 0.0
        self.idleCall: Optional[IDelayedCall] = None
        self.requests = 0
        self._state = _IDLE
        self._parser = ResponseParser(pool.headerNames)
        self._decoder: Optional[ChunkedDecoder] = None  # for the first chunked body
        self._keepAlive = True
        self._remaining = 0
        self._streaming = False
        self._paused = False
        self._sender: Optional[_BodySender] = None
        self._bodiless = False
        self._status = 0
        self._request = b""
        self._previous = b""
        self._active = False
        self._taken = False
        self._quietSince = 0.0
        self._end: Optional[FileDescriptor] = None

    def connectionMade(self) -> None:
        self._end = readingEnd(self.transport)
        readSmall(self._end)
        sendAtOnce(self._end)
        factory, self.factory = self.factory, None
        if factory is not None:
            factory.handler.connected(self)

    # Requests

    def send(
        self,
        handler: Any,
        head: bytes,
        content: Any,
        length: int,
        headOnly: bool,
    ) -> None:
        """
        Send a request: C{head}, then C{length} bytes of C{content}, a
        file; C{handler} hears of the response.
        """
        self.handler = handler
        self.received = False
        self._state = _HEAD
        self._parser.begin(headOnly, handler.upgrade)
        self._previous = self._request
        self._request = head
        pool = self.pool
        self.sentAt = pool.reactor.seconds()
        if self.idleCall is None or pool.timeout < IDLE_TIMEOUT:
            pool.watch(self)
        if length == 0:
            self.transport.write(head)
        elif length <= CHUNK_SIZE:
            content.seek(0)
            self.transport.write(head + content.read(length))
        else:
            self.transport.write(head)
            content.seek(0)
            self._sender = _BodySender(self, content, length)
            self._sender.start()

    def quiet(self) -> bool:
        """
        Is this idle connection fit to carry another request?  Bytes the app
        sent unasked may have reached its socket and not been read yet by the
        reactor: they would be read as the next request's response.  If there
        are any, the connection is closed.

        (FIONREAD costs about 1 us; a C{recv} with C{MSG_PEEK}, which would
        also see the end of the connection, about 3 us.)
        """
        fd = self._fd
        if fd is None:
            handle = getattr(self.transport, "socket", None)
            fd = self._fd = -1 if handle is None else handle.fileno()
        if fd < 0:
            return True
        try:
            _ioctl(fd, _FIONREAD, _UNREAD, True)
        except OSError:
            return True  # closed: the reactor will tell
        if not _UNREAD[0]:
            return True
        self._keepAlive = False
        self.transport.loseConnection()
        self._misframed("sent {} bytes on an idle connection".format(_UNREAD[0]))
        return False

    def expire(self, now: float) -> Optional[float]:
        """
        Hold the response this connection carries to the pool's limits: its
        whole head within C{timeout} of the request being sent (or of the
        last piece of its body the app took), then a byte of its body at
        least every C{bodyTimeout}, unless the client is what holds it up.

        @return: Seconds until it must be looked at again, or L{None} if it
            was closed.
        """
        pool = self.pool
        state = self._state
        if state == _HEAD:
            if self._taken:
                # The app is still taking the request's body.
                self._taken = False
                self.sentAt = now
            remaining = self.sentAt + pool.timeout - now
            if remaining > 0:
                return min(IDLE_TIMEOUT, remaining)
            handler = self._drop()
            handler.responseTimedOut(pool.timeout)
            return None
        if state == _DETACHED:
            return None
        if self._active or self._paused:
            self._active = False
            self._quietSince = now
        elif now - self._quietSince >= pool.bodyTimeout:
            handler = self._drop()
            handler.responseBroken(
                Failure(
                    BackendTimeout(
                        "sent no byte of the response body for {:g} s "
                        "(backendBodyTimeout)".format(pool.bodyTimeout)
                    )
                )
            )
            return None
        return IDLE_TIMEOUT

    def _drop(self) -> Any:
        """
        Give up on the response this connection carries: close the
        connection at once, never to be reused.

        @return: The handler of its request.
        """
        handler, self.handler = self.handler, None
        if self._sender is not None:
            self._sender.stop()
        self._state = _DETACHED
        self._keepAlive = False
        self.pool.forget(self)
        self.transport.abortConnection()
        return handler

    def _misframed(self, what: str, request: Optional[bytes] = None) -> None:
        """
        Tell the pool the app sent bytes outside its responses' framing,
        C{what}, after its answer to C{request} (by default the last one
        sent).
        """
        if request is None:
            request = self._request
        line = request.split(b"\r\n", 1)[0].rsplit(b" ", 1)[0]
        if line:
            what += " after answering {} to {}".format(
                self._status, line[:200].decode("latin-1")
            )
        self.pool.misframing(what)

    def abort(self) -> None:
        """
        The client is gone: drop this connection, since the rest of the
        response would have to be read before it could carry another.
        """
        if self._sender is not None:
            # twisted.web may close the body's file once the client is gone.
            self._sender.stop()
        if self._state == _DETACHED:
            return
        self.handler = None
        self._state = _DETACHED
        self._keepAlive = False
        self.transport.abortConnection()

    # IPushProducer, for the client's response

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.abort()

    # Responses

    def dataReceived(self, data: bytes) -> None:
        end = self._end
        if end is not None:
            fit(end, len(data))
        state = self._state
        self._active = True
        if state == _HEAD:
            self.received = True
            try:
                received = self._parser.receive(data)
            except BadResponse as e:
                if self.used:
                    # Perhaps the rest of the last response, sent late.
                    self._misframed(
                        "sent {} on a reused connection".format(e), self._previous
                    )
                self._fail(Failure(e))
                return
            if received is None:
                return
            after = self._head(received)
            if after is None:
                return
            data = after
            state = self._state
            if state == _IDLE:
                self._finished(data)
                return
        handler = self.handler
        if state == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                if data:
                    handler.responseData(data)
            else:
                if remaining:
                    handler.responseData(data[:remaining])
                self._finished(data[remaining:])
                return
        elif state == _CHUNKED:
            decoder = self._decoder
            assert decoder is not None
            try:
                rest = decoder.decode(data)
            except BadResponse as e:
                for piece in decoder.pieces:
                    handler.responseData(piece)
                self._fail(Failure(e))
                return
            for piece in decoder.pieces:
                handler.responseData(piece)
            if rest is not None:
                self._finished(rest)
                return
        elif state == _UNTIL_CLOSE:
            handler.responseData(data)
        elif state == _IDLE:
            # Bytes no request asked for: this connection cannot be trusted,
            # nor handed out while it closes.
            self._keepAlive = False
            self.pool.forget(self)
            self.transport.loseConnection()
            self._misframed("sent {} bytes no request asked for".format(len(data)))
            return
        else:
            return
        if not self._streaming and self.handler is not None:
            self._streaming = True
            handler.responseStreaming(self)

    def _head(self, rest: bytes) -> Optional[bytes]:
        """
        The head of the response has come, and is in the parser: tell the
        handler, and get ready for the body.

        @param rest: The bytes after the head.

        @return: The bytes after the head, or L{None} if the response was an
            upgrade.
        """
        parser = self._parser
        handler = self.handler
        framing = parser.framing
        if framing == SWITCHED:
            self._state = _DETACHED
            self.detached = True
            self.handler = None
            handler.upgraded(self, parser.reason, parser.headers, rest)
            return None
        # A body after a response that has none, or after interim responses,
        # is a classic bug of hand-written apps, and could come in any later
        # write: such a connection carries no other request.
        bodiless = framing == NO_BODY
        self._bodiless = suspect = bodiless or parser.interim
        self._status = status = parser.status
        self._keepAlive = parser.keepAlive and not self.dedicated and not suspect
        handler.responseHead(status, parser.reason, parser.headers)
        if bodiless:
            self._state = _IDLE
        elif framing == LENGTH:
            length = self._remaining = parser.length
            self._state = _LENGTH if length else _IDLE
        elif framing == CHUNKED:
            self._state = _CHUNKED
            decoder = self._decoder
            if decoder is None:
                decoder = self._decoder = ChunkedDecoder()
            decoder.begin()
        else:
            self._state = _UNTIL_CLOSE
        return rest

    def _finished(self, extra: bytes) -> None:
        """
        The response is over: make the connection ready for the next one,
        or close it, and tell the handler.
        """
        handler, self.handler = self.handler, None
        self._state = _IDLE
        self._streaming = False
        pool = self.pool
        reusable = self._keepAlive and not extra and pool.misframed is None
        if self._sender is not None:
            # The app answered before reading the whole body.
            self._sender.stop()
            reusable = False
        if self._paused:
            self.resumeProducing()
        if reusable:
            self.used = True
            pool.release(self)
        elif self._bodiless and not extra:
            # Read on for a while, to tell the operator if a body follows.
            pool.forget(self)
            self.transport.loseWriteConnection()
            pool.linger(self)
        else:
            self.transport.loseConnection()
        if extra:
            # Before the handler hears, as the slot it frees may go to a
            # request that would otherwise take another idle connection.
            self._misframed(
                "sent {} bytes more than its response".format(len(extra))
            )
        handler.responseDone()

    def _fail(self, reason: Failure) -> None:
        """
        The response cannot be relayed: close the connection and tell the
        handler.
        """
        handler, self.handler = self.handler, None
        self._state = _IDLE
        self._keepAlive = False
        self.transport.loseConnection()
        if handler is not None:
            handler.responseBroken(reason)

    def bodySent(self) -> None:
        self._sender = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        if self.idleCall is not None:
            self.idleCall.cancel()
            self.idleCall = None
        if self._sender is not None:
            self._sender.stop()
        self.pool.forget(self)
        handler, self.handler = self.handler, None
        if handler is None:
            return
        state = self._state
        self._state = _IDLE
        if state == _HEAD:
            if not self.received:
                handler.responseFailed(reason, stale=self.used)
            else:
                handler.responseBroken(
                    Failure(BadResponse("the connection closed in the response head"))
                )
        elif state == _UNTIL_CLOSE and reason.check(ConnectionDone):
            handler.responseDone()
        else:
            # A reset ends a body delimited by the close too, but not whole.
            handler.responseBroken(reason)


@implementer(IPushProducer)
class _BodySender:
    """
    Write a request body that twisted.web has buffered (in a temporary file
    when large) to a backend connection, a chunk at a time, as fast as the
    connection takes it.
    """

    def __init__(
        self, connection: BackendConnection, content: Any, length: int
    ) -> None:
        self._connection = connection
        self._content = content
        self._remaining = length
        self._paused = False
        self._stopped = False

    def start(self) -> None:
        self._connection.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        transport = self._connection.transport
        while self._remaining > 0 and not self._paused and not self._stopped:
            chunk = self._content.read(min(CHUNK_SIZE, self._remaining))
            if not chunk:
                # twisted.web wrote this many bytes: it cannot be shorter.
                self._remaining = 0
                break
            self._remaining -= len(chunk)
            transport.write(chunk)
            self._connection._taken = True
        if self._remaining <= 0 and not self._stopped:
            self.stop()

    def stopProducing(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._connection.bodySent()
        transport = self._connection.transport
        if transport is not None and transport.producer is self:
            transport.unregisterProducer()
