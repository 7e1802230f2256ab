# -*- test-case-name: rainbowd.test.unit.test_tunnel -*-
"""
Tests for L{rainbowd.web.tunnel}: upgraded requests through the proxy, in the
world of L{rainbowd.test.inmemory}.
"""

from typing import List, Optional, Tuple

from twisted.internet.protocol import Factory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from rainbowd.test.inmemory import (
    UPGRADE_REQUEST,
    BackendApp,
    EchoUpgrade,
    FakeBackend,
    FakeClient,
    World,
    backendSite,
    rawRequest,
)
from rainbowd.web.proxy import ProxyRequest


class UpgradeTests(SynchronousTestCase):
    """
    A request asking to upgrade gets a connection of its own to the backend
    and, if the backend agrees (101), the two connections are joined.
    """

    def setUp(self) -> None:
        self.world = World()
        self.backend = FakeBackend(generation=1, port=20001)
        self.world.deployer.activate(self.backend)

    def upgrade(self) -> Tuple[FakeClient, iosim.IOPump]:
        client = self.world.connectClient()
        client.send(UPGRADE_REQUEST + b"early ")
        self.world.flush()
        pump = self.world.accept(Factory.forProtocol(EchoUpgrade))
        return client, pump

    def test_tunnel(self) -> None:
        """
        The backend gets the upgrade headers, the client gets the 101 with
        them, and bytes then go both ways, those the client sent before the
        101 included.
        """
        client, pump = self.upgrade()
        self.assertIn(b"\r\nConnection: Upgrade\r\nUpgrade: echo", EchoUpgrade.head)
        head, _, rest = client.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head)
        self.assertIn(b"\r\nUpgrade: echo", head)
        self.assertEqual(rest, b"hello early ")
        client.transport.write(b"and more")
        self.world.flush()
        self.assertTrue(client.data.endswith(b"hello early and more"))
        self.assertEqual(len(self.backend.tunnels), 1)
        self.assertEqual((self.backend.started, self.backend.finished), (1, 1))

    def test_ownConnection(self) -> None:
        """
        An upgrade does not take an idle pooled connection.
        """
        self.world.request(rawRequest())
        self.world.accept(backendSite(self.world, BackendApp()))
        client = self.world.connectClient()
        client.send(UPGRADE_REQUEST)
        self.world.flush()
        self.assertEqual(self.world.attempts(), [20001])

    def test_declined(self) -> None:
        """
        A backend answering an upgrade request without switching has its
        answer relayed, and the connection is then closed.
        """
        client = self.world.request(UPGRADE_REQUEST)
        pump = self.world.accept(backendSite(self.world, BackendApp()))
        self.assertEqual(client.response().body, b"hello from the backend")
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual(self.backend.tunnels, [])

    def test_clientCloses(self) -> None:
        """
        The client closing its side closes the backend's, and the backend
        stops counting the tunnel.
        """
        client, pump = self.upgrade()
        client.hangUp()
        self.world.flush()
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual(self.backend.tunnels, [])

    def test_backendCloses(self) -> None:
        """
        The backend closing its side closes the client's.
        """
        client, pump = self.upgrade()
        pump.server.transport.loseConnection()
        self.world.flush()
        self.assertTrue(client.closed)
        self.assertEqual(self.backend.tunnels, [])

    def test_close(self) -> None:
        """
        C{close()}, which a backend at the end of its drain calls, closes
        both sides.
        """
        client, pump = self.upgrade()
        [tunnel] = self.backend.tunnels
        tunnel.close()
        self.world.flush()
        self.assertTrue(client.closed)
        self.assertTrue(pump.serverIO.disconnected)
        self.assertEqual(self.backend.tunnels, [])

    def test_backpressure(self) -> None:
        """
        Each side's transport is the producer of the other's, so a full one
        pauses reading from the other.
        """
        client, pump = self.upgrade()
        clientSide = client.pump.serverIO
        backendSide = pump.clientIO
        self.assertIs(clientSide.producer, backendSide)
        self.assertIs(backendSide.producer, clientSide)

    def test_logged(self) -> None:
        """
        An upgraded request is logged once, as a 101 from its backend's
        generation.
        """
        logged: List[Tuple[int, Optional[int]]] = []

        def log(request: Request) -> None:
            assert isinstance(request, ProxyRequest)
            logged.append((request.code, request.backendGeneration))

        self.world.site.log = log
        self.upgrade()
        self.assertEqual(logged, [(101, 1)])
