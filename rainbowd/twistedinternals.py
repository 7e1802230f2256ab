# -*- test-case-name: rainbowd.test.unit.test_twistedinternals -*-
"""
The private names of Twisted that rainbowd relies on, each with where and
why, so that they are in one place: C{rainbowd.test.unit.test_twistedinternals}
checks that each is still there, and fails naming the code that uses it if
a release of Twisted renames one, rather than that code failing silently
(or, for an attribute read with a default, dropping bytes).

Each is a reach past twisted.web's public API where it offers no other way:
the bytes a channel has read but not parsed, its request's protocol version
before the request exists, and the hooks of its own refusals.  The test
finds them in rainbowd's code three ways: a private name read on any object
of the classes it watches; one imported from Twisted or reached through
what was (C{endpoints._SystemdParser._sddaemon}); and one of a Twisted class
that a subclass in rainbowd reads, sets or overrides.

Some are no longer needed, and are not to come back: the end of a request
body is C{allContentReceived} (public), not HTTPChannel's private
C{_finishRequestBody} (C{Request.process} would be too late:
C{Request.requestReceived} seeks the body first, and a body too large must
be refused before it is all read); and a port that cannot listen fails
startup through C{rainbowd.tap._ListenNow}, an endpoint that raises from
C{listen}, not through the private C{_raiseSynchronously} of
StreamServerEndpointService, which C{strports.service} sets.
"""

from typing import Tuple

import attrs


@attrs.frozen
class Internal:
    """
    One private name of Twisted that rainbowd uses.

    @ivar owner: the class, by its dotted name, whose instances have it.
    @ivar name: the attribute or method.
    @ivar usedIn: where rainbowd uses it.
    @ivar why: what it is for, and why nothing public does it.
    """

    owner: str
    name: str
    usedIn: str
    why: str


_CHANNEL = "twisted.web.http.HTTPChannel"

INTERNALS: Tuple[Internal, ...] = (
    Internal(
        _CHANNEL,
        "_dataBuffer",
        "rainbowd.web.proxy._Forwarding.upgraded, "
        "rainbowd.web.requestlimits.LimitedChannel.requestDone",
        "what a client sent after a request head while that request was "
        "answered: the start of an upgraded connection's stream, or the next "
        "pipelined request",
    ),
    Internal(
        "twisted.protocols.basic.LineReceiver",
        "_buffer",
        "rainbowd.web.requestlimits.LimitedChannel.requestDone",
        "LineReceiver's unparsed bytes: whether a pipelined request has begun",
    ),
    Internal(
        _CHANNEL,
        "_version",
        "rainbowd.web.requestlimits.LimitedChannel.allHeadersReceived",
        "the request's HTTP version, for checkPersistence and 100 Continue, "
        "as HTTPChannel.allHeadersReceived (which rainbowd replaces) reads it",
    ),
    Internal(
        _CHANNEL,
        "_waitingForTransport",
        "rainbowd.web.requestlimits.LimitedChannel.allContentReceived",
        "whether the client has yet to read a response: a pipelined request "
        "then waits, and its idle timer must run",
    ),
    Internal(
        _CHANNEL,
        "_send100Continue",
        "rainbowd.web.requestlimits.LimitedChannel.allHeadersReceived",
        "the interim response HTTPChannel.allHeadersReceived sends, which "
        "rainbowd sends only for a body it takes",
    ),
    Internal(
        _CHANNEL,
        "_respondToBadRequestAndDisconnect",
        "rainbowd.web.requestlimits.LimitedChannel (overridden)",
        "twisted.web's bare 400: rainbowd's says what was wrong",
    ),
    Internal(
        _CHANNEL,
        "_networkProducer",
        "rainbowd.web.requestlimits.LimitedChannel.loseConnection",
        "the producer between the channel and its transport: replaced, when "
        "the last response is sent at stop, by one that never pauses, so that "
        "what the client still sends is read and dropped rather than reset "
        "the connection",
    ),
    Internal(
        _CHANNEL,
        "_abortingCall",
        "rainbowd.web.requestlimits.LimitedChannel.timeoutConnection, "
        "forceAbortClient",
        "the call that aborts a timed-out connection whose client does not "
        "close it, which HTTPChannel.connectionLost cancels; rainbowd's "
        "timeoutConnection, which replaces HTTPChannel's, sets it as that does",
    ),
    Internal(
        "twisted.web.http",
        "_getContentFile",
        "rainbowd.web.requestlimits.spoolFile",
        "the temporary file twisted.web keeps a request body in, by its size: "
        "rainbowd's LimitedRequest.gotLength, which answers a failure to make "
        "one, makes it the same way",
    ),
    Internal(
        "twisted.web.http",
        "_NoPushProducer",
        "rainbowd.web.requestlimits.LimitedChannel.loseConnection",
        "the producer HTTPChannel registers while it has no request, that "
        "never stops the transport reading (see _networkProducer)",
    ),
    Internal(
        "twisted.web.client",
        "_HTTP11ClientFactory",
        "rainbowd.app.health._QuietFactory",
        "the factory of HTTPConnectionPool's connections, subclassed only to "
        "set noisy = False",
    ),
    Internal(
        "twisted.web.client.HTTPConnectionPool",
        "_factory",
        "rainbowd.app.health._QuietPool (overridden)",
        "the factory the pool makes its connections with: the health check's "
        "logs no line per connection (a renamed one would be a log line a "
        "second per backend, without a word)",
    ),
    Internal(
        "twisted.internet.endpoints",
        "_SystemdParser",
        "rainbowd.tap._rereadSystemdSockets",
        "the parser of systemd: endpoint descriptions (see _sddaemon)",
    ),
    Internal(
        "twisted.internet.endpoints._SystemdParser",
        "_sddaemon",
        "rainbowd.tap._rereadSystemdSockets",
        "the descriptors systemd passed, read once when twisted.internet."
        "endpoints is imported: a rainbowd started by an upgrade sets them "
        "again once it has set LISTEN_PID to itself (set on a renamed one, "
        "systemd: ports would find none, without a word)",
    ),
    Internal(
        "twisted.web.http_headers.Headers",
        "_rawHeaders",
        "rainbowd.web.requestlimits.LimitedChannel.allHeadersReceived",
        "the headers by canonical name, read once per request at a quarter "
        "of getRawHeaders' cost",
    ),
    Internal(
        "twisted.internet.tcp.Port",
        "_logger",
        "rainbowd.web.connlimit.quietAccepts",
        "the only way a port's failed accepts (EMFILE) are told, once per "
        "failure: rainbowd sums them into a line a second",
    ),
    Internal(
        "twisted.internet.base.ReactorBase",
        "_exitSignal",
        "rainbowd.tap._OrderlyStop.stopService",
        "the signal the reactor re-raises at exit (twisted.internet."
        "interfaces._ISupportsExitSignalCapturing): rainbowd exits 0 after a "
        "clean stop, as supervisors expect",
    ),
)
