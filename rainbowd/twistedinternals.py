# -*- test-case-name: rainbowd.test.test_twistedinternals -*-
"""
The private names of Twisted that rainbowd relies on, each with where and
why, so that they are in one place: C{rainbowd.test.test_twistedinternals}
checks that each is still there, and fails naming the code that uses it if
a release of Twisted renames one, rather than that code failing silently
(or, for an attribute read with a default, dropping bytes).

Each is a reach past twisted.web's public API where it offers no other way:
the bytes a channel has read but not parsed, its request's protocol version
before the request exists, and the hooks of its own refusals.
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
        "rainbowd.proxy._Forwarding.upgraded, "
        "rainbowd.requestlimits.LimitedChannel.requestDone",
        "what a client sent after a request head while that request was "
        "answered: the start of an upgraded connection's stream, or the next "
        "pipelined request",
    ),
    Internal(
        _CHANNEL,
        "_buffer",
        "rainbowd.requestlimits.LimitedChannel.requestDone",
        "LineReceiver's unparsed bytes: whether a pipelined request has begun",
    ),
    Internal(
        _CHANNEL,
        "_version",
        "rainbowd.requestlimits.LimitedChannel.allHeadersReceived",
        "the request's HTTP version, for checkPersistence and 100 Continue, "
        "as HTTPChannel.allHeadersReceived (which rainbowd replaces) reads it",
    ),
    Internal(
        _CHANNEL,
        "_waitingForTransport",
        "rainbowd.requestlimits.LimitedChannel.allContentReceived",
        "whether the client has yet to read a response: a pipelined request "
        "then waits, and its idle timer must run",
    ),
    Internal(
        _CHANNEL,
        "_send100Continue",
        "rainbowd.requestlimits.LimitedChannel.allHeadersReceived",
        "the interim response HTTPChannel.allHeadersReceived sends, which "
        "rainbowd sends only for a body it takes",
    ),
    Internal(
        _CHANNEL,
        "_respondToBadRequestAndDisconnect",
        "rainbowd.requestlimits.LimitedChannel (overridden)",
        "twisted.web's bare 400: rainbowd's says what was wrong",
    ),
    Internal(
        "twisted.web.http_headers.Headers",
        "_rawHeaders",
        "rainbowd.requestlimits.LimitedChannel.allHeadersReceived",
        "the headers by canonical name, read once per request at a quarter "
        "of getRawHeaders' cost",
    ),
    Internal(
        "twisted.internet.tcp.Port",
        "_logger",
        "rainbowd.connlimit.quietAccepts",
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
