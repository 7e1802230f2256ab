# -*- test-case-name: rainbowd.test.unit.test_controlsite -*-
"""
The control API's site: who may call it, and how much they may send.

Every control request goes through L{ControlSite}, whatever its path: one
that a web page sent, or that names a host rainbowd does not know (see
L{rainbowd.control.browsers}), is answered 403; then, when
a token is configured (C{controlTokenFile}), a request without
C{Authorization: Bearer TOKEN} is answered 401 before any resource sees
it.  Request bodies are capped at L{MAX_BODY} bytes, refused with 413 as
soon as the headers (or the chunks so far) say they are bigger; slow
requests are timed out as on the public port (L{rainbowd.web.requestlimits}),
and connections idle between requests are closed after L{TIMEOUT} seconds.
At most L{MAX_CONNECTIONS} are served at once (L{capped}).
"""

import hmac
from typing import Optional, Tuple

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from rainbowd.config import Config
from rainbowd.control.api import readControlToken  # noqa: F401 (imported from here)
from rainbowd.control.browsers import BrowserGuard, Refusal
from rainbowd.control.resource import jsonBody, writeJSON
from rainbowd.endpoints import endpointArguments
from rainbowd.web.connlimit import ConnectionCap
from rainbowd.web.requestlimits import LimitedChannel, LimitedSite, RequestLimits

_log = Logger()

#: The largest control request body taken, in bytes.
MAX_BODY = 64 * 1024

#: The most connections the control port serves at once; past them, a new
#: one gets a 503 and is closed.  Enough for rainbowctl, a metrics scraper
#: and a few followed logs, and few enough that a flood of connections to
#: the control port cannot take the descriptors the public port and the
#: app's connections need (they are part of L{rainbowd.fdlimit.RESERVED}).
MAX_CONNECTIONS = 32

#: How long a kept-alive control connection may stay idle between
#: requests, in seconds.
TIMEOUT = 30

#: After a refused request from a web page is logged, how long further
#: ones are only counted, in seconds; the count is then logged.
REFUSAL_LOG_INTERVAL = 10.0

#: The realm named in C{WWW-Authenticate}.
REALM = b'Bearer realm="rainbowd"'


def capped(site: "ControlSite", reactor) -> ConnectionCap:
    """
    C{site}, serving at most L{MAX_CONNECTIONS} connections at once, with a
    JSON 503 for the others.
    """
    body = jsonBody(
        {
            "error": f"too many connections to the control API: "
            f"{MAX_CONNECTIONS} are open, the most it serves at once; close "
            "some (a followed log, say) or try again in a moment"
        }
    )
    response = (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n"
        b"Retry-After: 1\r\n"
        b"\r\n%s" % (len(body), body)
    )
    return ConnectionCap(
        site,
        MAX_CONNECTIONS,
        reactor,
        response=response,
        what="the control API",
        advice="the most it serves at once, so that connections to it leave "
        "the public port its file descriptors.  Look for a client that "
        "opens connections to it and does not close them",
        evictWaiting=True,
    )


_LOOPBACK = ("127.0.0.1", "::1", "localhost") + tuple(f"127.{n}" for n in range(10))


def exposureWarning(config: Config) -> Optional[str]:
    """
    A warning if the control API listens on TCP beyond loopback without
    a token, or sends its token there in clear text; or L{None}.
    """
    kind, arguments = endpointArguments(config.controlPort)
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    interface = arguments.get("interface", "")
    if interface.startswith("127.") or interface in _LOOPBACK:
        return None
    where = "every interface" if interface in ("", "0.0.0.0", "::") else interface
    if config.controlTokenFile is None:
        risk = (
            "anyone who can reach it can redeploy: set controlTokenFile, "
            "and firewall the port"
        )
    elif kind == "ssl":
        return None
    else:
        risk = (
            "the token crosses the network in clear text: keep it on "
            "loopback or a unix socket, or tunnel it (ssh, TLS)"
        )
    return f'The control API ("controlPort" {config.controlPort}) listens on {where}; {risk}.'


class _Unauthorized(Resource):
    """
    The answer to a control request without the right token.
    """

    isLeaf = True

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self._sent = sent

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"www-authenticate", REALM)
        if self._sent:
            error = (
                "the token sent does not match: send "
                '"Authorization: Bearer TOKEN" with the token in the '
                "controlTokenFile rainbowd was started with (it reads that "
                "file only at startup)"
            )
        else:
            error = (
                "this control API needs a token: send "
                '"Authorization: Bearer TOKEN" with the token in rainbowd\'s '
                "controlTokenFile"
            )
        return writeJSON(request, 401, {"error": error})


class _Forbidden(Resource):
    """
    The answer to a control request from a web page, or for a host name
    rainbowd does not know: 403 and the L{Refusal}'s sentence.
    """

    isLeaf = True

    def __init__(self, refusal: Refusal) -> None:
        super().__init__()
        self._refusal = refusal

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"x-content-type-options", b"nosniff")
        refusal = self._refusal
        return writeJSON(
            request,
            403,
            {
                "error": refusal.error,
                "header": refusal.header,
                "value": refusal.value,
                "key": refusal.key,
            },
        )


class _Preflight(Resource):
    """
    The answer to a CORS preflight (C{OPTIONS}) from an origin listed in
    C{controlAllowedOrigins}: its page may send what rainbowctl sends.
    """

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", b"GET, HEAD, POST")
        request.setHeader(b"access-control-allow-headers", b"authorization, accept")
        request.setHeader(b"access-control-max-age", b"600")
        return b""


class _RefusalLog:
    """
    Log refused requests from web pages: the first one at once, then at most
    one line per L{REFUSAL_LOG_INTERVAL} with how many more there were, so
    a page that sends thousands fills no disk.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._more = 0
        self._quiet = None

    def refused(self, request: IRequest, refusal: Refusal) -> None:
        if self._quiet is not None:
            self._more += 1
            return
        _log.warn(
            "refused a control request from {peer} ({method} {path}): {error}",
            peer=str(request.getClientAddress()),
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
            error=refusal.error,
        )
        self._quiet = self._reactor.callLater(REFUSAL_LOG_INTERVAL, self._count)

    def _count(self) -> None:
        self._quiet = None
        if self._more:
            _log.warn(
                "refused {count} more control requests from web pages or for "
                "unknown host names in the last {interval:g} s",
                count=self._more,
                interval=REFUSAL_LOG_INTERVAL,
            )
            self._more = 0
            self._quiet = self._reactor.callLater(REFUSAL_LOG_INTERVAL, self._count)


class _ControlChannel(LimitedChannel):
    """
    A control connection: fewer headers than on the public port.
    """

    maxHeaders = 100
    totalHeadersSize = 16 * 1024


class ControlSite(LimitedSite):
    """
    The site of the control API: connections with the limits of
    L{rainbowd.web.requestlimits}, bodies up to L{MAX_BODY}, idle connections
    closed after L{TIMEOUT}, JSON answers to the requests refused; no
    resource for a request C{guard} refuses (a web page's, or one for an
    unknown host name); and, when C{token} is given, none for a request
    that does not bear it.
    """

    protocol = _ControlChannel
    what = "control API"
    bodyLimitNote = (
        "the control API takes; send a smaller one (POST /redeploy needs none)"
    )

    def __init__(
        self,
        resource: Resource,
        token: Optional[bytes] = None,
        timeout: float = TIMEOUT,
        reactor=None,
        guard: BrowserGuard = BrowserGuard(),
        limits: Optional[RequestLimits] = None,
    ) -> None:
        """
        @param limits: The timeouts of its requests (their C{maxBody} is
            always L{MAX_BODY}); by default, L{Config}'s.
        """
        limits = RequestLimits.fromConfig(None) if limits is None else limits
        LimitedSite.__init__(
            self,
            resource,
            timeout=timeout,
            reactor=reactor,
            limits=attrs.evolve(limits, maxBody=MAX_BODY),
        )
        self._token = token
        self._guard = guard
        self._refusals = _RefusalLog(self.reactor)

    def errorBody(self, message: str) -> Tuple[bytes, bytes]:
        return b"application/json", jsonBody({"error": message})

    def getResourceFor(self, request: Request) -> Resource:
        # Before the token: a page learns nothing of it, right or wrong.
        refused = self._browserCheck(request)
        if refused is not None:
            request.site = self
            return refused
        if self._token is not None:
            sent = _bearerToken(request)
            # compare_digest takes time independent of where they differ.
            if sent is None or not hmac.compare_digest(sent, self._token):
                _log.warn(
                    "refused a control request from {peer} ({method} {path}): "
                    "{problem}",
                    peer=str(request.getClientAddress()),
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("ascii", "replace"),
                    problem="wrong token" if sent is not None else "no token",
                )
                request.site = self
                return _Unauthorized(sent is not None)
        return Site.getResourceFor(self, request)

    def _browserCheck(self, request: IRequest) -> Optional[Resource]:
        """
        The resource answering C{request} if it comes from a web page or
        names an unknown host: 403, or a listed origin's preflight; or
        L{None} if it may go on (with CORS headers for a listed origin).
        """
        headers = request.requestHeaders
        origin = headers.getRawHeaders(b"origin", [None])[-1]
        local = request.getHost()
        refusal = self._guard.refusal(
            origin,
            headers.getRawHeaders(b"sec-fetch-site", [None])[-1],
            headers.getRawHeaders(b"host", []),
            local.host if isinstance(local, (IPv4Address, IPv6Address)) else None,
        )
        if refusal is not None:
            self._refusals.refused(request, refusal)
            return _Forbidden(refusal)
        if origin is not None:
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"vary", b"Origin")
            if request.method == b"OPTIONS" and headers.hasHeader(
                b"access-control-request-method"
            ):
                return _Preflight()
        return None


def _bearerToken(request: IRequest) -> Optional[bytes]:
    """
    The token of the request's C{Authorization: Bearer} header, or L{None}.
    """
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip()
