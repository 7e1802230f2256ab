# -*- test-case-name: rainbowd.test.test_health -*-
"""
HTTP clients for talking to backends, which always listen on 127.0.0.1.
"""

import attrs
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer


@implementer(IAgentEndpointFactory)
@attrs.frozen
class LoopbackEndpoints:
    """
    Connect to the URI's port on 127.0.0.1, whatever its host says, without
    any name resolution.
    """

    reactor: object

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", uri.port)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    A connection pool that does not log every connection it opens and
    closes.
    """

    _factory = _QuietFactory


def loopbackAgent(reactor, pool: HTTPConnectionPool) -> Agent:
    """
    An L{Agent} for backends, using C{pool}.
    """
    return Agent.usingEndpointFactory(reactor, LoopbackEndpoints(reactor), pool=pool)
