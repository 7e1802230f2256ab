# -*- test-case-name: rainbowd.test.test_health -*-
"""
Asking a starting backend whether it is ready: C{GET healthCheckPath} must
answer 2xx.
"""

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool

import attrs


class Unhealthy(Exception):
    """
    The backend answered the health check, but not with a 2xx status.
    """


@attrs.frozen
class LoopbackEndpoints:
    """
    An endpoint factory for L{Agent} that connects straight to 127.0.0.1,
    whatever the URI's host says, with no name resolution.
    """

    reactor: object

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", uri.port)


@attrs.frozen
class HTTPHealthCheck:
    """
    Probes a backend over HTTP, one connection per probe.
    """

    reactor: object

    def __call__(self, port: int, path: str, timeout: float) -> Deferred:
        """
        Fire with L{None} if C{GET path} on C{127.0.0.1:port} answers 2xx
        within C{timeout} seconds; fail otherwise.
        """
        agent = Agent.usingEndpointFactory(
            self.reactor,
            LoopbackEndpoints(self.reactor),
            pool=HTTPConnectionPool(self.reactor, persistent=False),
        )
        url = f"http://127.0.0.1:{port}{path}".encode("ascii")
        d = agent.request(b"GET", url)
        d.addCallback(self._checkStatus, path)
        d.addTimeout(timeout, self.reactor)
        return d

    @staticmethod
    def _checkStatus(response, path):
        response.deliverBody(Protocol())  # discard it; the connection closes
        if not 200 <= response.code < 300:
            raise Unhealthy(f"GET {path} answered {response.code}")
