# -*- test-case-name: rainbowd.test.unit.test_tunnel -*-
"""
The tunnel an upgraded request (a WebSocket, say) becomes: the client's
connection joined to the backend's, bytes going both ways untouched.
"""

from typing import Any, List

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from rainbowd.web.reads import readingEnd, readLarge


class Tunnel:
    """
    A client connection joined to a backend connection after an upgrade
    (WebSocket, for one): bytes go both ways untouched, each side's reading
    paused while the other's write buffer is full.

    @ivar backend: The backend at the other end, which counts this tunnel
        until it closes.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._ends: List[_TunnelEnd] = []
        self._open = 0

    def join(self, client: Any, server: Any, toServer: bytes, toClient: bytes) -> None:
        """
        Take the transports C{client} and C{server} over, and send each the
        bytes already received from the other.
        """
        clientEnd, serverEnd = _TunnelEnd(self), _TunnelEnd(self)
        clientEnd.peer, serverEnd.peer = serverEnd, clientEnd
        self._ends = [clientEnd, serverEnd]
        self._open = 2
        for transport, end in [(client, clientEnd), (server, serverEnd)]:
            if getattr(transport, "producer", None) is not None:
                transport.unregisterProducer()
            if isinstance(transport, ProtocolWrapper):
                transport.wrappedProtocol = end
            else:
                transport.protocol = end
            end.makeConnection(transport)
            readLarge(readingEnd(transport))
        client.registerProducer(server, True)
        server.registerProducer(client, True)
        client.resumeProducing()
        server.resumeProducing()
        if toServer:
            server.write(toServer)
        if toClient:
            client.write(toClient)

    def close(self) -> None:
        """
        End the tunnel now, on both sides.
        """
        for end in self._ends:
            if end.transport is not None and not end.closed:
                end.transport.abortConnection()

    def endClosed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self.backend.tunnelClosed(self)


class _TunnelEnd(Protocol):
    """
    One side of a L{Tunnel}.
    """

    peer: "_TunnelEnd"
    transport: ITCPTransport  # once connected, which it is before it is used

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        if not self.peer.closed:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        if not self.peer.closed:
            self.peer.transport.loseConnection()
        self.tunnel.endClosed()
