# -*- test-case-name: rainbowd.test.unit.test_nodelay -*-
"""
The proxy's connections to the app send what they are given at once:
Nagle's algorithm off (C{TCP_NODELAY}), as twisted.web's own HTTP client
has it, and as nginx (C{tcp_nodelay on}), HAProxy and node's http module
have it.  (The public side's connections have it already: twisted.web's
C{HTTPChannel} turns it off on every TCP connection it serves.)

With Nagle's algorithm on, a small write waits while bytes sent before it
are not yet acknowledged, and the peer may hold its acknowledgement back
(by up to 40 ms on Linux) until it has something to send; a proxy's writes
to the app are small and follow each other on kept-alive connections.
"""

from typing import Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ITCPTransport


def sendAtOnce(end: Optional[FileDescriptor]) -> None:
    """
    Turn Nagle's algorithm off on C{end}, if it is a TCP connection's
    descriptor (see L{rainbowd.web.reads.readingEnd}); none is left as it
    is.  (A unix socket's transport provides L{ITCPTransport} too, and its
    C{setTcpNoDelay} does nothing; Twisted's TCP one logs a failure to set
    the option rather than raise it.)
    """
    if ITCPTransport.providedBy(end):
        end.setTcpNoDelay(True)
