# -*- test-case-name: rainbowd.test.unit.test_remote -*-
"""
C{rainbowctl --control ENDPOINT}: the control API of a rainbowd on another
host, named explicitly rather than found in C{rainbow.conf.json}.

C{ENDPOINT} is a client endpoint description: C{tcp:HOST:PORT}, or
C{ssl:HOST:PORT} (the certificate checked against the system's trusted
authorities, or C{cafile=PATH}).  The token comes from
C{--token-file}.

Over plain C{tcp:} to another host the token crosses the network in clear
text, so rainbowctl warns unless the host is a loopback address, as it is
through an ssh tunnel::

    ssh -N -L 7001:127.0.0.1:7001 web1 &
    rainbowctl --control tcp:127.0.0.1:7001 --token-file token redeploy

The remote rainbowd checks the I{Host} header rainbowctl sends (see
L{rainbowd.control.browsers}): an address it listens on passes, and so does a
loopback one (the tunnel); a name must be listed in that rainbowd's
C{controlAllowedHosts}.
"""

import ipaddress
from typing import TYPE_CHECKING, Optional

import attrs

from rainbowd.configfile import ConfigError
from rainbowd.control.api import readControlToken
from rainbowd.control.client import Connection, hostHeader, tcpConnection, tlsConnection
from rainbowd.endpoints import endpointParts

if TYPE_CHECKING:
    import ssl

EXAMPLE = "tcp:web1.internal:7001"


class RemoteError(Exception):
    """
    The C{--control} endpoint or token file cannot be used; C{str()} says
    why and what to give instead.
    """


@attrs.frozen
class RemoteAddress:
    """
    A control API as C{--control} names it: C{host} and C{port} over TCP,
    with TLS if C{tls} (checked against C{cafile}, or the system's
    authorities).
    """

    host: str
    port: int
    tls: bool = False
    cafile: Optional[str] = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'ssl' if self.tls else 'tcp'}:{host}:{self.port}"

    def tlsContext(self) -> "ssl.SSLContext":
        """
        The TLS settings of a connection to C{ssl:}.

        @raise RemoteError: if C{cafile} cannot be read, or holds no
            certificate.
        """
        # Imported here: only a connection over TLS needs it.
        import ssl

        try:
            return ssl.create_default_context(cafile=self.cafile)
        except OSError as e:
            why = str(e) if isinstance(e, ssl.SSLError) else e.strerror
            raise RemoteError(
                f"--control {self}: the CA file {self.cafile} (cafile= of "
                f"--control) cannot be used: {why}.  Give the PEM file of the "
                "authority that signed that rainbowd's certificate, or leave "
                "cafile= out to check it against the system's authorities."
            )

    def connect(self, timeout: Optional[float]) -> Connection:
        if self.tls:
            return tlsConnection(self.host, self.port, self.tlsContext(), timeout)
        return tcpConnection(self.host, self.port, timeout)


def remoteAddress(description: str) -> RemoteAddress:
    """
    Read a C{--control} client endpoint description.

    @raise RemoteError: if it is not C{tcp:HOST:PORT} or C{ssl:HOST:PORT}.
    """
    kind, args, kwargs = endpointParts(description.strip())
    if kind in ("tcp", "ssl"):
        host = kwargs.get("host") or (args[0] if args else "")
        port = kwargs.get("port") or (args[1] if len(args) > 1 else "")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        problem = _hostProblem(host)
        if problem is not None:
            raise RemoteError(
                f"--control {description!r}: the host {host!r} {problem}: "
                "give its address, or its name as xn--..."
            )
        if host and port.isascii() and port.isdigit() and 0 < int(port) <= 65535:
            return RemoteAddress(
                host=host,
                port=int(port),
                tls=kind == "ssl",
                cafile=kwargs.get("cafile"),
            )
    raise RemoteError(
        f"--control {description!r} is not an endpoint rainbowctl can reach: "
        f"give tcp:HOST:PORT (e.g. {EXAMPLE}) or ssl:HOST:PORT (optionally "
        "ending :cafile=PATH)."
    )


def _hostProblem(host: str) -> Optional[str]:
    """
    What makes C{host} one rainbowctl cannot write in a I{Host} header or
    look up, if anything.
    """
    if ":" in host:
        address, _, zone = host.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return "has colons but is not an IPv6 address"
        if not zone.isascii():
            return "has an IPv6 zone that is not ASCII"
        return None
    try:
        hostHeader(host, 80, 80)
    except UnicodeError as e:
        return f"has no ASCII (IDNA) form ({e})"
    return None


def readTokenFile(path: str) -> bytes:
    """
    The token in C{--token-file PATH}.

    @raise RemoteError: if it cannot be read, or is not a token.
    """
    try:
        return readControlToken(path)[0]
    except ConfigError as e:
        raise RemoteError(str(e).replace('("controlTokenFile")', "(--token-file)"))


def _isLoopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def clearTextWarning(address: RemoteAddress, token: Optional[bytes]) -> Optional[str]:
    """
    A warning if requests to C{address} cross the network in clear text:
    plain TCP to a host that is not a loopback address (through an ssh
    tunnel, the host is one).
    """
    if address.tls or _isLoopback(address.host):
        return None
    what = (
        "the control token crosses the network in clear text"
        if token is not None
        else "the requests cross the network in clear text, and without a "
        "token (--token-file) anyone who reaches that port can redeploy"
    )
    port = address.port
    return (
        f"warning: {what} to {address}.  Use an ssl: endpoint, or an ssh "
        f"tunnel: ssh -N -L {port}:127.0.0.1:{port} {address.host} & then "
        f"rainbowctl --control tcp:127.0.0.1:{port} ..."
    )
