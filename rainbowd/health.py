# -*- test-case-name: rainbowd.test.test_health -*-
"""
Asking a starting backend whether it is ready: C{GET healthCheckPath} must
answer 2xx.
"""

from urllib.parse import quote

import attrs
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer


#: The characters that go into a request line as they are.
_URI_CHARACTERS = "".join(map(chr, range(0x21, 0x7F)))


class Unhealthy(Exception):
    """
    The backend answered the health check, but not with a 2xx status.
    """


@implementer(IAgentEndpointFactory)
@attrs.frozen
class _Loopback:
    """
    Connect to the URI's port on 127.0.0.1, where backends listen, without
    any name resolution.
    """

    reactor: object

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", uri.port)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


class _QuietPool(HTTPConnectionPool):
    """
    A pool that logs no line for each connection it opens and closes.
    """

    _factory = _QuietFactory


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
            _Loopback(self.reactor),
            pool=_QuietPool(self.reactor, persistent=False),
        )
        # Percent-encode what a request line cannot hold (non-ASCII, control
        # characters); the Agent would raise on it rather than fail the probe.
        url = f"http://127.0.0.1:{port}{quote(path, safe=_URI_CHARACTERS)}"
        d = agent.request(b"GET", url.encode("ascii"))
        d.addCallback(self._checkStatus, path)
        d.addTimeout(
            timeout,
            self.reactor,
            onTimeoutCancel=lambda result, seconds: self._timedOut(path, seconds),
        )
        return d

    @staticmethod
    def _timedOut(path, seconds):
        # Cancelling the Agent's request fails with ConnectingCancelledError
        # or ResponseNeverReceived, which say nothing of a timeout.
        raise TimeoutError(f"GET {path} did not answer within {seconds:g} s")

    @staticmethod
    def _checkStatus(response, path):
        response.deliverBody(Protocol())  # discard it; the connection closes
        if not 200 <= response.code < 300:
            raise Unhealthy(f"GET {path} answered {response.code}")
