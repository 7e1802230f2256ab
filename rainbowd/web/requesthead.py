# -*- test-case-name: rainbowd.test.unit.test_requesthead -*-
"""
The head of the request rainbowd sends to a backend for a client's request:
its target in origin form, its I{Host}, the I{X-Forwarded-*} headers, its
own I{Content-Length}, and none of the headers that describe the client's
connection rather than the request.

The proxy calls, for each request, L{originForm}, L{contentLength},
L{isUpgrade} and then L{requestHead}, which raises L{Unforwardable} for a
request that cannot be sent on as it is.
"""

import re
from typing import Optional
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.client import URI
from twisted.web.server import Request

from rainbowd.web.http1 import HOP_BY_HOP

_NOT_FORWARDED = HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"host",
    b"x-forwarded-for",
}
"""
Request headers not copied as they are: the hop-by-hop ones; two more
because rainbowd frames the body itself and twisted.web has already answered
any I{Expect: 100-continue} before the body reached rainbowd; and two that
rainbowd writes itself.
"""

_BODILESS_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS"])
"""
Methods forwarded without a I{Content-Length} when their body is empty, so
that none is invented.
"""

_ABSOLUTE_FORM = re.compile(rb"\A[A-Za-z][A-Za-z0-9+.-]*://")

_BAD_HEADER_VALUE = re.compile(rb"[\x00\r\n]")


def isUpgrade(request: Request) -> bool:
    """
    Does C{request} ask to switch protocols (RFC 9110 section 7.8)?
    """
    if request.clientproto != b"HTTP/1.1":
        return False
    headers = request.requestHeaders
    if not headers.hasHeader(b"Upgrade"):
        return False
    connection = headers.getRawHeaders(b"Connection")
    if not connection:
        return False
    tokens = b",".join(connection).lower().split(b",")
    return any(token.strip() == b"upgrade" for token in tokens)


def originForm(uri: bytes) -> Optional[bytes]:
    """
    The request target to send to the backend: the path and query string
    of C{uri}, or L{None} if C{uri} is neither a path nor an absolute URI.
    """
    if uri.startswith(b"/"):
        return uri
    if _ABSOLUTE_FORM.match(uri):
        try:
            target = URI.fromBytes(uri).originForm
        except ValueError:  # an authority that does not parse
            return None
        # URI.originForm leaves out the "/" of http://host?query.
        return target if target.startswith(b"/") else b"/" + target
    return None


def authority(uri: bytes) -> Optional[bytes]:
    """
    The host and port of C{uri} if it is in absolute form (which, by RFC
    9112 section 3.2.2, take the place of the I{Host} header), without any
    user info; otherwise L{None}.
    """
    if not _ABSOLUTE_FORM.match(uri):
        return None
    return urlsplit(uri).netloc.rpartition(b"@")[2] or None


def contentLength(request: Request) -> int:
    """
    The size of the body twisted.web received with C{request}.
    """
    content = request.content
    if content is None:
        return 0
    content.seek(0, 2)
    length = content.tell()
    content.seek(0)
    return length


class Unforwardable(Exception):
    """
    A request cannot be forwarded as it is; the message says why.
    """


def requestHead(
    request: Request, target: bytes, bodyLength: int, upgrade: bool
) -> bytes:
    """
    The request line and headers to send to the backend for C{request}:
    not those with an underscore in their name, since the app may read
    them as the header with a dash in its place.

    @raise Unforwardable: Its target names a host that cannot go in a
        header, or it has more than one I{Host} header.
    """
    requestHeaders = request.requestHeaders
    drop = _NOT_FORWARDED
    connection = requestHeaders.getRawHeaders(b"Connection")
    if connection:
        named = (name.strip().lower() for name in b",".join(connection).split(b","))
        drop = drop.union(name for name in named if name)
    lines = [request.method, b" ", target, b" HTTP/1.1\r\n"]
    add = lines.extend
    forwardedProto = forwardedHost = False
    for name, values in requestHeaders.getAllRawHeaders():
        lower = name.lower()
        if lower in drop or b"_" in lower:
            # WSGI and CGI name X_Forwarded_For as they name X-Forwarded-For:
            # as nginx does, no header with an underscore is passed on.
            continue
        if lower == b"x-forwarded-proto":
            forwardedProto = True
        elif lower == b"x-forwarded-host":
            forwardedHost = True
        for value in values:
            add((name, b": ", value, b"\r\n"))

    host = authority(request.uri)
    if host is not None:
        if _BAD_HEADER_VALUE.search(host):
            raise Unforwardable(
                "a request whose target names the host {!r}".format(
                    request.uri.decode("latin-1")
                )
            )
    else:
        hosts = requestHeaders.getRawHeaders(b"Host")
        if hosts:
            if len(hosts) > 1:
                raise Unforwardable(
                    "a request with {} Host headers; send exactly one".format(
                        len(hosts)
                    )
                )
            host = hosts[0]
        else:
            # An HTTP/1.0 client may send none: name rainbowd's own address,
            # not the backend's port, which goes at the next deploy.
            own = request.getHost()
            if isinstance(own, (IPv4Address, IPv6Address)):
                ownName = f"[{own.host}]" if own.type == "TCP6" else own.host
                host = f"{ownName}:{own.port}".encode("ascii")
            else:
                host = b"localhost"
    add((b"Host: ", host, b"\r\n"))
    if not forwardedHost:
        add((b"X-Forwarded-Host: ", host, b"\r\n"))

    clientIP = getattr(request.getClientAddress(), "host", None)
    forwardedFor = requestHeaders.getRawHeaders(b"X-Forwarded-For")
    if clientIP is not None:
        forwardedFor = [*(forwardedFor or ()), clientIP.encode("ascii")]
    if forwardedFor:
        add((b"X-Forwarded-For: ", b", ".join(forwardedFor), b"\r\n"))
    if not forwardedProto:
        add(
            (
                b"X-Forwarded-Proto: ",
                b"https" if request.isSecure() else b"http",
                b"\r\n",
            )
        )
    if bodyLength or request.method not in _BODILESS_METHODS:
        add((b"Content-Length: ", b"%d" % (bodyLength,), b"\r\n"))
    if upgrade:
        protocols = b", ".join(requestHeaders.getRawHeaders(b"Upgrade", ()))
        add((b"Connection: Upgrade\r\nUpgrade: ", protocols, b"\r\n"))
    lines.append(b"\r\n")
    return b"".join(lines)
