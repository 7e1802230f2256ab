# -*- test-case-name: rainbowd.test.unit.test_connlimit -*-
"""
The listening ports under pressure: the caps on open connections (the
public port's C{maxConnections}, the control port's own), a log of failed
accepts that says once a second what a flood of them would otherwise say
once per connection, and the graceful close of the connections when
rainbowd stops (L{ConnectionCap.closeGracefully}).

Past the cap, a new connection is accepted and answered at once with a 503
and I{Connection: close}, rather than left unaccepted: a connection the
kernel has completed but rainbowd does not accept waits in the listen
queue, then overflows it, with no answer, and neither the client nor a load
balancer in front can tell rainbowd is full.  The 503 costs one descriptor
for a moment, and at most L{LINGERING} of them wait for their client to
close (see L{_Refusal}); these are part of L{rainbowd.fdlimit.RESERVED}.
"""

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

_log = Logger()

#: The most refused connections that wait at once for their client to read
#: the 503 and close; past it, a refused connection is closed as soon as its
#: 503 is written.
LINGERING = 32

#: How long a refused connection waits for its client to close, in seconds,
#: so that what the client sent meanwhile is read rather than answered with
#: a reset that could destroy the 503 before the client reads it (Apache's
#: and nginx's "lingering close").
LINGER_TIME = 2.0

#: Bytes of a refused connection read before it is closed regardless.
LINGER_BYTES = 64 * 1024

#: How often, in seconds, a graceful close looks again for requests still on
#: their way in, or connections still open: only while rainbowd stops, and
#: each such request is bounded by requestHeaderTimeout and
#: requestBodyMinRate anyway, each response by the idle timeout.
_RECEIVING_CHECK = 0.05


def refusal(maximum: int) -> bytes:
    """
    The response to a connection past the cap of C{maximum}.
    """
    body = (
        f"rainbowd: too many connections: {maximum} are open, as many as "
        '"maxConnections" allows; try again in a moment.\n'
    ).encode("utf-8")
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n"
        b"Retry-After: 1\r\n"
        b"\r\n%s" % (len(body), body)
    )


#: What the log line about the public port's refusals says after how many
#: connections were open.
_PUBLIC_ADVICE = (
    "as many as maxConnections allows.  If the app can take more, raise "
    "maxConnections (and the file descriptor limit with it)"
)


if TYPE_CHECKING:
    # A factory of _Counted wrappers, subscripted for mypy only: an older
    # Twisted's WrappingFactory need not be generic at runtime.
    _CountingFactory = WrappingFactory["_Counted"]
else:
    _CountingFactory = WrappingFactory


class ConnectionCap(_CountingFactory):
    """
    Serve at most C{maximum} connections of C{wrappedFactory}'s at once;
    answer any other with a 503 and close it.

    A line is logged one second after the first refusal, with how many
    there were in that second, so that a flood of them is a line a second.

    @ivar open: the connections being served.
    @ivar refused: how many connections were refused since startup.
    @ivar lingering: the refused connections still open.
    """

    noisy = False

    def __init__(
        self,
        wrappedFactory: Any,
        maximum: int,
        reactor: Any,
        response: Optional[bytes] = None,
        what: str = "the public port",
        advice: str = _PUBLIC_ADVICE,
        evictWaiting: bool = False,
    ) -> None:
        """
        @param response: The whole response of a refused connection; by
            default, L{refusal}'s.
        @param what: The port, as the log line names it.
        @param advice: What the log line says after how many were open:
            why that is the cap, and how to change it.
        @param evictWaiting: At the cap, close the oldest connection still
            waiting for a request (whose protocol's C{waitingForRequest()}
            is true), rather than refuse the new one: a flood of idle or
            trickling connections then cannot lock a real client out.
        """
        super().__init__(wrappedFactory)
        self.maximum = maximum
        self.reactor = reactor
        self.open = 0
        self.refused = 0
        self.evicted = 0
        self.lingering = 0
        # The connections served, oldest first.
        self._served: Dict[_Counted, None] = {}
        self._evictWaiting = evictWaiting
        self.response = refusal(maximum) if response is None else response
        self._what = what
        self._advice = advice
        self._logged = 0
        self._loggedEvicted = 0
        self._logCall: Optional[IDelayedCall] = None

    # A refused connection gets a plain Protocol, not a wrapper.
    def buildProtocol(self, addr: Any) -> Protocol:  # type: ignore[override]
        if self.open < self.maximum or self._evictOne():
            return _Counted(self, self.wrappedFactory.buildProtocol(addr))
        self.refused += 1
        if self._logCall is None:
            self._logCall = self.reactor.callLater(1.0, self._logRefusals)
        return _Refusal(self)

    def stopFactory(self) -> None:
        """
        The port is closed: log the refusals not logged yet.
        """
        if self._logCall is not None:
            self._logCall.cancel()
            self._logRefusals()

    def _logRefusals(self) -> None:
        self._logCall = None
        evicted, self._loggedEvicted = self.evicted - self._loggedEvicted, self.evicted
        refused, self._logged = self.refused - self._logged, self.refused
        for count, done in [
            (evicted, "closed {count} connection{s} still waiting for a request, "
             "the oldest, in the last second, to serve new ones"),
            (refused, "refused {count} connection{s} with a 503 in the last second"),
        ]:
            if count:
                _log.warn(
                    "{what} " + done + ": {maximum} were open, {advice}",
                    what=self._what,
                    count=count,
                    s="" if count == 1 else "s",
                    maximum=self.maximum,
                    advice=self._advice,
                )

    def _evictOne(self) -> bool:
        """
        Close the oldest connection still waiting for a request, if some
        may be evicted and one is.

        @return: Whether one was.
        """
        if not self._evictWaiting:
            return False
        served = self._served
        for wrapper in served:
            waiting = getattr(wrapper.wrappedProtocol, "waitingForRequest", None)
            if waiting is not None and waiting():
                del served[wrapper]
                # Served from makeConnection to connectionLost: connected.
                assert wrapper.transport is not None
                wrapper.transport.abortConnection()
                self.evicted += 1
                if self._logCall is None:
                    self._logCall = self.reactor.callLater(1.0, self._logRefusals)
                return True
        return False

    def registerProtocol(self, protocol: "_Counted") -> None:
        self.open += 1
        self._served[protocol] = None

    def unregisterProtocol(self, protocol: "_Counted") -> None:
        self.open -= 1
        self._served.pop(protocol, None)

    def closeGracefully(self, timeout: float, idleGrace: float = 0.0) -> Deferred:
        """
        The port no longer accepts, and rainbowd stops: close each
        connection that has nothing of a request on it, and have each that
        has one close once it is answered (see
        L{rainbowd.web.requestlimits.LimitedChannel.closeWhenAnswered}).  A
        kept-alive connection then gets no request after the app was told
        to stop.  Upgraded connections are left to the app's drain.

        @param idleGrace: How long a connection with nothing of a request
            on it may still bring one, to be answered as its last.

        @return: A Deferred that fires once no connection is receiving a
            request, so that every request still to be answered is in the
            proxy's hands (and counted by its backend, which drains it), or
            once C{timeout} seconds have passed.
        """
        for wrapper in list(self._served):
            close = getattr(wrapper.wrappedProtocol, "closeWhenAnswered", None)
            if close is not None:
                close(idleGrace)
        return self._waitForNone(
            self._receiving,
            timeout,
            "{what}: {count} request{s} still arriving after {timeout:g} s; "
            "draining the app without waiting longer",
        )

    def whenClosed(self, timeout: float) -> Deferred:
        """
        After L{closeGracefully}, and once the app is drained: wait for the
        connections still open, each closing once its last response is
        sent, so that rainbowd does not exit (its reactor dropping what is
        still buffered) with a response half sent.

        @return: A Deferred that fires once no connection is open, or once
            C{timeout} seconds have passed.
        """
        return self._waitForNone(
            lambda: len(self._served),
            timeout,
            "{what}: {count} connection{s} still sending a response after "
            "{timeout:g} s; stopping without waiting longer",
        )

    def _waitForNone(
        self, count: Callable[[], int], timeout: float, warning: str
    ) -> Deferred:
        """
        Look at C{count()} every L{_RECEIVING_CHECK} seconds until it is 0,
        or for C{timeout} seconds, after which log C{warning}.
        """
        done: Deferred = Deferred()
        deadline = self.reactor.seconds() + timeout

        def check() -> None:
            left = count()
            if not left:
                done.callback(None)
            elif self.reactor.seconds() >= deadline:
                _log.warn(
                    warning,
                    what=self._what,
                    count=left,
                    s="" if left == 1 else "s",
                    timeout=timeout,
                )
                done.callback(None)
            else:
                self.reactor.callLater(_RECEIVING_CHECK, check)

        check()
        return done

    def _receiving(self) -> int:
        """
        How many connections are receiving a request.
        """
        count = 0
        for wrapper in self._served:
            receiving = getattr(wrapper.wrappedProtocol, "receivingRequest", None)
            if receiving is not None and receiving():
                count += 1
        return count

    def describe(self) -> Dict[str, int]:
        """
        The counts, for C{/status}.
        """
        return {"open": self.open, "max": self.maximum, "refused": self.refused}


#: What twisted.web calls on a connection's transport for every request.
_BOUND = ("write", "writeSequence", "getPeer", "resumeProducing")


class _Counted(ProtocolWrapper):
    """
    A connection being served, counted from C{makeConnection} to
    C{connectionLost}.  The transport's methods a request calls are bound
    at once, rather than relayed a call at a time.
    """

    # Looked up on every adaptation, such as twisted.web's ISSLTransport(
    # transport, None) for each request's isSecure(): found here, rather
    # than by ProtocolWrapper.__getattr__ on the transport, which has none.
    __conform__ = None

    # A TCP, unix or TLS connection: each has the abortConnection that
    # ITCPTransport declares.
    transport: Optional[ITCPTransport]

    def makeConnection(self, transport: Any) -> None:
        for name in _BOUND:
            method = getattr(transport, name, None)
            if method is not None:
                setattr(self, name, method)
        # Asked of every request (twisted.web's Request.__init__), and a
        # system call each time (getsockname): it does not change.
        host = transport.getHost()
        self.getHost = lambda: host  # type: ignore[method-assign]
        ProtocolWrapper.makeConnection(self, transport)

    @property
    def wrappedProtocol(self) -> Any:
        return self._wrapped

    @wrappedProtocol.setter
    def wrappedProtocol(self, protocol: Any) -> None:
        # Each read goes straight to the protocol, the channel or the tunnel
        # that took its connection over (see rainbowd.web.tunnel).
        self._wrapped = protocol
        if protocol is not None:  # None once the connection is lost
            self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]


class _Refusal(Protocol):
    """
    A connection past the cap: write the 503, stop writing, and read what
    the client sends until it closes, for at most L{LINGER_TIME} and
    L{LINGER_BYTES}; or close at once if L{LINGERING} refusals are already
    waiting.
    """

    transport: Optional[ITCPTransport]

    def __init__(self, cap: ConnectionCap) -> None:
        self.cap = cap
        self.received = 0
        self.lingerCall: Optional[IDelayedCall] = None

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None  # connected
        transport.write(self.cap.response)
        # TLS (a ProtocolWrapper) has no half-close of its own, whatever the
        # connection under it has: close it, after the 503.
        halfClose = getattr(transport, "loseWriteConnection", None)
        if (
            self.cap.lingering >= LINGERING
            or halfClose is None
            or isinstance(transport, ProtocolWrapper)
        ):
            transport.loseConnection()
            return
        self.cap.lingering += 1
        self.lingerCall = self.cap.reactor.callLater(LINGER_TIME, self._close)
        halfClose()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > LINGER_BYTES:
            self._close()

    def _close(self) -> None:
        # Only while connected: the timer is cancelled once it is lost.
        assert self.transport is not None
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.lingerCall is not None:
            self.cap.lingering -= 1
            if self.lingerCall.active():
                self.lingerCall.cancel()
            self.lingerCall = None


#: The formats of what Twisted's C{tcp.Port} logs when C{accept()} fails
#: (C{twisted.internet.tcp._accept}), each with the error it means.
_EMFILE_START = "EMFILE encountered; releasing reserved file descriptor."
_EMFILE_CLOSED = "EMFILE recovery: Closed socket from {address}"
_EMFILE_END = "Re-reserving EMFILE recovery file descriptor."
_ACCEPT_FAILED = "Could not accept new connection ({acceptError})"

#: What each error of C{accept()} means, and what to do about it.
_MEANING = {
    "EMFILE": "Out of file descriptors: raise rainbowd's limit (LimitNOFILE= "
    'in the systemd unit, ulimit -n) or lower "maxConnections"',
    "ENFILE": "The system is out of file descriptors: raise fs.file-max, or "
    "find what holds them",
    "ENOBUFS": "The kernel is out of memory for sockets",
    "ENOMEM": "The kernel is out of memory for sockets",
    "ECONNABORTED": "Clients gave up before they were accepted",
}


@implementer(ILogObserver)
class AcceptErrors:
    """
    A log observer for a listening port's own log (see L{quietAccepts}):
    the events of failed C{accept()}s are counted, and a line saying how
    many is logged one C{interval} after the first, so a flood of them is a
    line a second; any other event goes on to C{observer}.

    @ivar errors: how many accepts failed since startup, by error name.
    @ivar closed: how many connections were closed unanswered since startup,
        to get a descriptor back (Twisted's EMFILE recovery).
    """

    def __init__(
        self,
        what: str,
        clock: Any,
        observer: ILogObserver,
        interval: float = 1.0,
    ) -> None:
        """
        @param what: the port, as the lines name it: C{'tcp:7000 ("port")'}.
        """
        self._what = what
        self._clock = clock
        self._observer = observer
        self._interval = interval
        self.errors: Dict[str, int] = {}
        self.closed = 0
        self._pendingErrors: Dict[str, int] = {}
        self._pendingClosed = 0
        self._flushCall: Optional[IDelayedCall] = None

    def __call__(self, event: LogEvent) -> None:
        format = event.get("log_format")
        if format == _EMFILE_CLOSED:
            self._pendingClosed += 1
            self.closed += 1
        elif format in (_EMFILE_START, _ACCEPT_FAILED):
            error = "EMFILE" if format == _EMFILE_START else str(event["acceptError"])
            self._pendingErrors[error] = self._pendingErrors.get(error, 0) + 1
            self.errors[error] = self.errors.get(error, 0) + 1
        elif format != _EMFILE_END:
            self._observer(event)
            return
        if self._flushCall is None:
            self._flushCall = self._clock.callLater(self._interval, self._flush)

    def _flush(self) -> None:
        self._flushCall = None
        errors, self._pendingErrors = self._pendingErrors, {}
        closed, self._pendingClosed = self._pendingClosed, 0
        failures = ", ".join(
            f"{name} {count} time{'s' if count != 1 else ''}"
            for name, count in sorted(errors.items())
        )
        text = (
            f"accept() on {self._what} failed in the last "
            f"{self._interval:g} s: {failures}"
        )
        if closed:
            text += (
                f"; {closed} connection{'s were' if closed != 1 else ' was'} "
                "closed unanswered to get a descriptor back"
            )
        meanings = {_MEANING[name] for name in errors if name in _MEANING}
        if meanings:
            text += ".  " + ".  ".join(sorted(meanings))
        _log.warn("{text}.", text=text)


def quietAccepts(port: Any, what: str, clock: Any) -> AcceptErrors:
    """
    Route the log of C{port}, a C{twisted.internet.tcp.Port} (or a unix or
    TLS one, which are kinds of it), through a new L{AcceptErrors}, and
    return that.  Twisted logs up to three lines for every connection it
    cannot accept, which is thousands a second when descriptors run out;
    its port logs through its C{_logger} only, and only about accepting.
    """
    logger = port._logger
    errors = AcceptErrors(what, clock, logger.observer)
    port._logger = Logger(namespace=logger.namespace, observer=errors)
    return errors
