# -*- test-case-name: rainbowd.test.test_twistedinternals -*-
"""
Tests for L{rainbowd.twistedinternals}: every private name of Twisted that
rainbowd uses is still there.
"""

import glob
import os
import re

from twisted.internet.testing import StringTransport
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

import rainbowd
from rainbowd.twistedinternals import INTERNALS


def _channel() -> HTTPChannel:
    """
    A channel in the middle of a request, as rainbowd's code sees one.
    """
    channel = HTTPChannel()
    channel.site = Site(Resource())
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return channel


#: How to make an object that has the names set per instance; the others
#: are looked for on the class.
_INSTANCES = {
    "twisted.web.http.HTTPChannel": _channel,
    "twisted.web.http_headers.Headers": Headers,
}


#: The classes of Twisted's whose private names rainbowd's code could reach
#: for: those it subclasses, or whose objects it is handed.
_WATCHED = {
    "twisted.web.http.HTTPChannel",
    "twisted.web.http.Request",
    "twisted.web.server.Request",
    "twisted.web.server.Site",
    "twisted.web.http_headers.Headers",
    "twisted.internet.tcp.Port",
    "twisted.internet.tcp.Server",
    "twisted.internet.base.ReactorBase",
    "twisted.internet.abstract.FileDescriptor",
    "twisted.internet.protocol.ProcessProtocol",
    "twisted.protocols.policies.ProtocolWrapper",
    "twisted.application.internet.StreamServerEndpointService",
}


class InternalsTests(SynchronousTestCase):
    """
    Tests for L{INTERNALS}.
    """

    def test_stillThere(self) -> None:
        """
        Each private name is there on an instance of its class, as the code
        that uses it expects; if Twisted renamed one, this says which code
        to change.
        """
        for internal in INTERNALS:
            owner = namedAny(internal.owner)
            make = _INSTANCES.get(internal.owner)
            self.assertTrue(
                hasattr(owner if make is None else make(), internal.name),
                f"{internal.owner}.{internal.name} is gone: {internal.usedIn} "
                f"relies on it ({internal.why})",
            )

    def test_everyUseListed(self) -> None:
        """
        Each private name of those classes that rainbowd's code reads, and
        does not itself define, is in the list, so that none is relied on
        unchecked.
        """
        listed = {internal.name for internal in INTERNALS}
        known = set()
        for owner in _WATCHED | {internal.owner for internal in INTERNALS}:
            known.update(name for name in dir(namedAny(owner)) if name.startswith("_"))
        source = os.path.dirname(rainbowd.__file__)
        texts = {}
        for path in glob.glob(os.path.join(source, "*.py")):
            with open(path) as f:
                texts[os.path.basename(path)] = f.read()
        defined = set()
        for text in texts.values():
            defined.update(re.findall(r"self\.(_\w+)\s*(?::[^=\n]*)?=(?!=)", text))
            defined.update(re.findall(r"^\s*(?:def |class )?(_\w+)\b", text, re.M))
        for name, text in sorted(texts.items()):
            for used in set(re.findall(r"\.(_[a-zA-Z]\w*)\b", text)):
                if used in known and used not in defined:
                    self.assertIn(
                        used,
                        listed,
                        f"{name} uses {used}, a private name of Twisted's: "
                        "list it in rainbowd.twistedinternals",
                    )
