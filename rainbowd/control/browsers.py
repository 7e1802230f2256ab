# -*- test-case-name: rainbowd.test.unit.test_browsers -*-
"""
Keep web pages away from the control API.

A page the operator has open in a browser can send requests to
C{localhost:7001}: a cross-origin form POST to C{/redeploy} needs no
permission from rainbowd, and a page whose own name is made to resolve to
127.0.0.1 (DNS rebinding) can even read C{/status}, C{/logs} and
C{/metrics}, since to the browser they are then the page's own origin.

Browsers say where a request comes from, and clients that are not browsers
(curl, rainbowctl, Prometheus) do not send those headers, so
L{refusal} refuses a control request that:

  - carries an C{Origin} header not listed in C{controlAllowedOrigins};
  - carries C{Sec-Fetch-Site} other than C{none} (what a typed-in address
    sends) without such a listed C{Origin};
  - over TCP, names in C{Host} anything but a loopback address,
    C{localhost}, the address the connection arrived at, or a name listed
    in C{controlAllowedHosts}.  A rebinding page's requests name the
    attacker's host there.  Over a unix socket, which no browser reaches,
    any C{Host} goes.

A request without C{Host} is not refused: every browser sends one, so it
is not a page's.

This module only reads values; L{rainbowd.control.site.ControlSite} asks it
about each request, before the token check, so that what a page learns --
403 whatever token it sends -- says nothing of the token.
"""

import ipaddress
import re
from typing import Any, Iterable, Optional, Sequence, Tuple

import attrs

#: Origins are compared in the form browsers send them: lower case, no
#: default port, no path.
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9._~%!$&'()*+,;=-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)

_DEFAULT_PORTS = {"http": "80", "https": "443"}

#: A host name as it may appear in C{Host}: letters, digits, C{-}, C{_}
#: and dots.
_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
)


def normalOrigin(origin: str) -> Optional[str]:
    """
    C{origin} (C{scheme://host[:port]}) as a browser sends it in C{Origin}:
    lower case and without its scheme's default port; the literal C{null}
    as it is; L{None} if it is not an origin (a path, a user, no scheme).
    """
    if origin == "null":
        return origin
    match = _ORIGIN.fullmatch(origin.lower())
    if match is None:
        return None
    scheme, host, port = match.group("scheme", "host", "port")
    if host.startswith("[") and _address(host[1:-1]) is None:
        return None
    if port is not None:
        if not 0 < int(port) <= 65535:
            return None
        port = str(int(port))
        if _DEFAULT_PORTS.get(scheme) == port:
            port = None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def normalHost(host: str) -> Optional[str]:
    """
    A host name or address as C{Host} values are compared: lower case,
    without a trailing dot, an IPv6 address without brackets and in its
    short form; L{None} if it is neither a name nor an address.
    """
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        address = _address(host)
        return None if address is None or address.version != 6 else str(address)
    address = _address(host)
    if address is not None:
        return str(address)
    if host.endswith("."):
        host = host[:-1]
    if _NAME.fullmatch(host) is None:
        return None
    return host


def hostOfHeader(value: str) -> Optional[str]:
    """
    The host a C{Host} header names, by L{normalHost}, without its port:
    C{"LocalHost.:7001"} is C{"localhost"}, C{"[::1]:7001"} is C{"::1"};
    L{None} if the header is malformed (a bare IPv6 address, a port that
    is not a number).
    """
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
        return None
    return normalHost(host)


def _address(text: str) -> Any:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _isLoopback(host: str) -> bool:
    if host == "localhost":
        return True
    address = _address(host)
    if address is None:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _sameAddress(host: str, local: Optional[str]) -> bool:
    """
    Is C{host} the address C{local} (the connection's own, as Twisted
    gives it) is?
    """
    if local is None:
        return False
    address, other = _address(host), _address(local.split("%")[0])
    if address is None or other is None:
        return False
    return (getattr(address, "ipv4_mapped", None) or address) == (
        getattr(other, "ipv4_mapped", None) or other
    )


@attrs.frozen
class Refusal:
    """
    Why a control request is refused: the header, its value as sent, the
    config key that would let it in, and a sentence saying all that.
    """

    header: str
    value: Optional[str]
    key: str
    error: str


def _shown(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _strings(values: Iterable[str]) -> Tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class BrowserGuard:
    """
    What may call the control API from a browser, and by which names.

    @ivar allowedOrigins: the origins (by L{normalOrigin}) whose pages may
        call it.
    @ivar allowedHosts: the names (by L{normalHost}) it may be called by,
        beyond loopback addresses, C{localhost} and the address it listens
        on.
    """

    allowedOrigins: Tuple[str, ...] = attrs.field(default=(), converter=_strings)
    allowedHosts: Tuple[str, ...] = attrs.field(default=(), converter=_strings)

    def refusal(
        self,
        origin: Optional[bytes],
        fetchSite: Optional[bytes],
        hosts: Sequence[bytes],
        local: Optional[str],
    ) -> Optional[Refusal]:
        """
        Why a request must be refused, or L{None} if it may go on.

        @param origin: its C{Origin} header, or L{None}.
        @param fetchSite: its C{Sec-Fetch-Site} header, or L{None}.
        @param hosts: its C{Host} headers (normally one, or none).
        @param local: the address the connection arrived at, or L{None}
            for a unix socket, where C{Host} is not looked at.
        """
        if origin is not None:
            text = origin.decode("latin-1").strip()
            if normalOrigin(text) not in self.allowedOrigins:
                return self._origin(text)
        elif fetchSite is not None and fetchSite.strip().lower() != b"none":
            text = fetchSite.decode("latin-1").strip()
            return Refusal(
                "Sec-Fetch-Site",
                text,
                "controlAllowedOrigins",
                f'refused: the request has "Sec-Fetch-Site: {_shown(text)}", '
                "so a web page sent it, and it has no Origin header to "
                'check against "controlAllowedOrigins"; the control API '
                "answers pages only from the origins listed there, and "
                "requests typed into the address bar (Sec-Fetch-Site: none)",
            )
        if local is None:
            return None
        if len(hosts) > 1:
            return Refusal(
                "Host",
                None,
                "controlAllowedHosts",
                "refused: the request has more than one Host header; send one",
            )
        if not hosts or not hosts[0].strip():
            return None
        text = hosts[0].decode("latin-1").strip()
        host = hostOfHeader(text)
        if host is not None and (
            _isLoopback(host) or _sameAddress(host, local) or host in self.allowedHosts
        ):
            return None
        example = host if host is not None else "NAME"
        return Refusal(
            "Host",
            text,
            "controlAllowedHosts",
            f'refused: the request has "Host: {_shown(text)}", which is not a '
            "loopback address, localhost, the address the control API "
            f"listens on ({local}) or a name listed in "
            '"controlAllowedHosts"; a web page can make its own name point '
            "here (DNS rebinding) and read the answers.  Connect to "
            f'127.0.0.1, or add the name: "controlAllowedHosts": ["{example}"]',
        )

    def _origin(self, text: str) -> Refusal:
        normal = normalOrigin(text)
        if normal is None:
            hint = (
                "a web page sent it; list the origin of a page allowed to "
                'call the control API in "controlAllowedOrigins"'
            )
        elif normal == "null":
            hint = (
                "a web page in a sandbox, a local file or a redirect sent "
                'it; "null" is only let in if "controlAllowedOrigins" '
                "lists it, which lets in every such page"
            )
        else:
            hint = (
                "a web page of that origin sent it; if that page may "
                "redeploy and read the control API, add "
                f'"controlAllowedOrigins": ["{normal}"]'
            )
        return Refusal(
            "Origin",
            text,
            "controlAllowedOrigins",
            f'refused: the request has "Origin: {_shown(text)}", so {hint}',
        )
