# -*- test-case-name: rainbowd.test.unit.test_controlsite -*-
"""
Endpoint descriptions (C{tcp:7001:interface=127.0.0.1}) read as Twisted
reads them, without importing Twisted: rainbowctl reads them too.
"""

import re
from typing import Dict, List, Optional, Tuple


def isDigits(text: str) -> bool:
    """
    C{text} is all ASCII digits (not C{"\u0663"}, which C{int} takes).
    """
    return text.isascii() and text.isdigit()


def loopback(port: int) -> str:
    """
    The endpoint description for TCP C{port} on 127.0.0.1.
    """
    return f"tcp:{port}:interface=127.0.0.1"


def endpointParts(description: str) -> Tuple[str, List[str], Dict[str, str]]:
    """
    Split an endpoint description like C{tcp:7001:interface=127.0.0.1}
    into its kind, its positional arguments and its keyword arguments, the
    way Twisted reads it (C{\\:} is a colon inside an argument).
    """
    parts = [part.replace("\\:", ":") for part in re.split(r"(?<!\\):", description)]
    args: List[str] = []
    kwargs: Dict[str, str] = {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals and re.fullmatch(r"\w+", name):
            kwargs[name] = value
        else:
            args.append(part)
    return parts[0], args, kwargs


#: The positional arguments of the server endpoints rainbowd looks into, in
#: Twisted's order (which is not the same for tcp and tcp6).
_POSITIONAL = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


def endpointArguments(description: str) -> Tuple[str, Dict[str, str]]:
    """
    The kind of server endpoint C{description} and its arguments by name,
    positional ones included: C{tcp:7001:127.0.0.1} is C{("tcp", {"port":
    "7001", "interface": "127.0.0.1"})}.  Kinds other than tcp, tcp6, ssl
    and unix only have their keyword arguments.
    """
    kind, args, kwargs = endpointParts(description)
    return kind, {**dict(zip(_POSITIONAL.get(kind, ()), args)), **kwargs}


def tcpPortNumber(description: str) -> Optional[int]:
    """
    The port number of a C{tcp:} or C{tcp6:} server endpoint description
    (positional, or C{port=}), or L{None} for other kinds of endpoint.
    """
    kind, arguments = endpointArguments(description)
    port = arguments.get("port", "")
    if kind not in ("tcp", "tcp6") or not isDigits(port):
        return None
    return int(port)
