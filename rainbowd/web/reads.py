# -*- test-case-name: rainbowd.test.unit.test_reads -*-
"""
How much a connection asks the kernel for at each read.

Twisted's TCP transport reads C{bufferSize} bytes at a time (64 KiB), and
on PyPy C{socket.recv(n)} takes C{n} bytes of the collector's nursery
however few arrive: two such reads, the request's and the response's, were
two thirds of the nursery a small proxied request filled, and so of the
minor collections (see L{rainbowd.pypygc}).  So the proxy's connections,
on both sides, read L{SMALL} bytes at a time while what arrives fits, and
L{LARGE} from the first read that fills the buffer: a large body is read
64 KiB at a time after its first 16 KiB, as before; a read that would have
fit in L{SMALL} brings the size back down.

C{bufferSize} is a public attribute of Twisted's
L{twisted.internet.abstract.FileDescriptor}, read at each read; any other
transport (TLS, a test's) is left alone.
"""

import socket
from typing import Any, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.protocols.policies import ProtocolWrapper

#: Bytes read at a time while what arrives fits: a request or response head
#: with a small body, a browser's request with its cookies.
SMALL = 16 * 1024

#: Bytes read at a time once a read filled L{SMALL}: Twisted's own size.
LARGE = FileDescriptor.bufferSize


def readingEnd(transport: Any) -> Optional[FileDescriptor]:
    """
    The descriptor under C{transport} (through a L{ProtocolWrapper}, as
    the connection cap wraps the public side's), or L{None} if it is not
    one whose reads can be sized.
    """
    if isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    if isinstance(transport, FileDescriptor):
        return transport
    return None


def readSmall(end: Optional[FileDescriptor]) -> None:
    """
    Start C{end}'s reads at L{SMALL} bytes.
    """
    if end is not None:
        end.bufferSize = SMALL


def readLarge(end: Optional[FileDescriptor]) -> None:
    """
    Read L{LARGE} bytes at a time on C{end} from now on, sizing done (a
    tunnel's bytes pass untouched, however many).
    """
    if end is not None:
        end.bufferSize = LARGE


def fit(end: FileDescriptor, received: int) -> None:
    """
    Size C{end}'s next read after one of C{received} bytes.
    """
    size = end.bufferSize
    if received >= size:
        if size < LARGE:
            end.bufferSize = LARGE
    elif received < SMALL < size:
        end.bufferSize = SMALL


def unread(end: Optional[FileDescriptor]) -> bool:
    """
    Are bytes waiting in the kernel to be read from C{end}?  Closing a
    socket with some unread resets the connection, and the peer loses what
    it sent.  (L{False} where C{end} is not a socket's, or the peer has
    only hung up.)
    """
    sock = getattr(end, "socket", None)
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False
