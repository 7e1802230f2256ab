# -*- test-case-name: rainbowd.test.unit.test_twistedinternals -*-
"""
Tests for L{rainbowd.twistedinternals}: every private name of Twisted that
rainbowd uses is still there.
"""

import ast
import glob
import inspect
import os
import re
from functools import lru_cache
from typing import Callable, Dict, Iterator, Optional, Set, Tuple

from twisted.internet.testing import StringTransport
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

import rainbowd
from rainbowd.twistedinternals import INTERNALS, Internal


def _channel() -> HTTPChannel:
    """
    A channel in the middle of a request, as rainbowd's code sees one.
    """
    channel = HTTPChannel()
    # What Site.buildProtocol sets, and Twisted's HTTPChannel does not
    # declare; buildProtocol itself would give the channel the global
    # reactor's callLater.
    channel.site = Site(Resource())  # type: ignore[attr-defined]
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return channel


#: How to make an object that has the names set per instance; the others
#: are looked for on the class.
_INSTANCES: Dict[str, Callable[[], object]] = {
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

    def test_rawHeadersByCanonicalName(self) -> None:
        """
        C{Headers._rawHeaders} holds each header's values under its
        canonical name, whatever case it was received in, as
        L{rainbowd.web.requestlimits.LimitedChannel.allHeadersReceived} reads
        it: were that to change, its lookup would find no
        I{Transfer-Encoding}, and let one it refuses through, without a
        word.
        """
        channel = _channel()
        channel.dataReceived(b"transfer-ENCODING: chunked\r\n")
        # The header is stored once the next line shows it is complete.
        channel.dataReceived(b"X-Other: 1\r\n")
        headers = channel.requests[-1].requestHeaders
        self.assertEqual(headers._rawHeaders.get(b"Transfer-Encoding"), [b"chunked"])

    def test_everyUseListed(self) -> None:
        """
        Each private name of those classes that rainbowd's code reads, and
        does not itself define, is in the list, so that none is relied on
        unchecked.
        """
        listed = {internal.name for internal in INTERNALS}
        known: Set[str] = set()
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


def _sources() -> Dict[str, str]:
    """
    The text of each of rainbowd's modules (not its tests), by module name.
    """
    source = os.path.dirname(rainbowd.__file__)
    texts = {}
    for path in sorted(glob.glob(os.path.join(source, "*.py"))):
        name = os.path.basename(path)[: -len(".py")]
        with open(path) as f:
            texts["rainbowd" if name == "__init__" else f"rainbowd.{name}"] = f.read()
    return texts


def _isPrivate(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _dotted(node: ast.expr, names: Dict[str, str]) -> Optional[str]:
    """
    The dotted name of what C{node} is, if it is something imported from
    Twisted (or an attribute of one), else L{None}.
    """
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _dotted(node.value, names)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def _reachedByName(text: str) -> Iterator[Tuple[str, str]]:
    """
    The private names of Twisted a module's code names through Twisted's
    modules, as C{(owner, name)}: those it imports (C{from twisted.web.http
    import _getContentFile}), and those it reads or sets on what it
    imported (C{endpoints._SystemdParser._sddaemon}, C{HTTPChannel._x}).
    """
    tree = ast.parse(text)
    names: Dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "twisted":
                    if alias.asname is None:
                        names["twisted"] = "twisted"
                    else:
                        names[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            if module.split(".")[0] != "twisted":
                continue
            for alias in node.names:
                if _isPrivate(alias.name):
                    yield module, alias.name
                names[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _isPrivate(node.attr):
            owner = _dotted(node.value, names)
            if owner is not None:
                yield owner, node.attr


@lru_cache(maxsize=None)
def _classSources(path: str) -> Dict[str, str]:
    """
    The text of each class the module at C{path} defines, by its name
    (nested ones by their own name, too).
    """
    with open(path) as f:
        text = f.read()
    lines = text.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.ClassDef)
    }


def _classSource(cls: type) -> str:
    """
    The text of C{cls}'s definition, or nothing if it cannot be found.
    """
    path = getattr(inspect.getmodule(cls), "__file__", None)
    if path is None or not path.endswith(".py"):
        return ""
    return _classSources(path).get(cls.__name__, "")


@lru_cache(maxsize=None)
def _privatesOf(cls: type) -> Set[str]:
    """
    The private names a class of Twisted's has: in its dictionary, or set on
    its instances by its own code (C{self._x = ...}).
    """
    names = {name for name in vars(cls) if _isPrivate(name)}
    text = _classSource(cls)
    names.update(re.findall(r"self\.(_[a-zA-Z]\w*)\s*(?::[^=\n]*)?=(?!=)", text))
    return names


def _reachedBySubclasses(module: str) -> Iterator[Tuple[type, str, str]]:
    """
    The private names of Twisted's classes that the subclasses of them in
    C{module} use, read, set or override, as C{(subclass, base, name)}.
    """
    for cls in vars(namedAny(module)).values():
        if not (inspect.isclass(cls) and cls.__module__ == module):
            continue
        bases = [
            base for base in cls.__mro__ if base.__module__.split(".")[0] == "twisted"
        ]
        if not bases:
            continue
        text = _classSource(cls)
        used = set(re.findall(r"self\.(_[a-zA-Z]\w*)\b", text))
        used.update(name for name in vars(cls) if _isPrivate(name))
        for base in bases:
            for name in sorted(used & _privatesOf(base)):
                yield cls, f"{base.__module__}.{base.__qualname__}", name


def _listedFor(owner: object, name: str) -> Optional[Internal]:
    """
    The entry of L{INTERNALS} for C{name} on C{owner} (or on a class it
    inherits C{name} from), if there is one.
    """
    for internal in INTERNALS:
        if internal.name != name:
            continue
        listed = namedAny(internal.owner)
        if listed is owner or (
            inspect.isclass(owner) and inspect.isclass(listed) and issubclass(owner, listed)
        ):
            return internal
    return None


class ReachTests(SynchronousTestCase):
    """
    Tests that find, in rainbowd's code, the private names of Twisted it
    reaches for, and check that each is in L{INTERNALS}.
    """

    def test_namedThroughModules(self) -> None:
        """
        Each private name of Twisted's that rainbowd imports, or reaches
        through what it imports from Twisted, is listed.
        """
        for module, text in sorted(_sources().items()):
            for owner, name in sorted(set(_reachedByName(text))):
                self.assertIsNotNone(
                    _listedFor(namedAny(owner), name),
                    f"{module} uses {owner}.{name}, a private name of "
                    "Twisted's: list it in rainbowd.twistedinternals",
                )

    def test_usedBySubclasses(self) -> None:
        """
        Each private name of a class of Twisted's that a subclass of it in
        rainbowd reads, sets or overrides is listed: a subclass that set one
        Twisted renamed would go on without a word, and one that chose the
        same name for its own use would clobber Twisted's.
        """
        for module in sorted(_sources()):
            for cls, base, name in _reachedBySubclasses(module):
                self.assertIsNotNone(
                    _listedFor(namedAny(base), name),
                    f"{module}.{cls.__name__} uses {name}, a private name of "
                    f"{base}: list it in rainbowd.twistedinternals",
                )

    def test_findsThem(self) -> None:
        """
        The search finds a private name imported from Twisted, one reached
        through an imported module, and one a subclass sets.
        """
        text = (
            "from twisted.internet import endpoints\n"
            "from twisted.web.http import HTTPChannel, _getContentFile\n"
            "endpoints._SystemdParser._sddaemon = None\n"
            "HTTPChannel._finishRequestBody\n"
            "self._notTwisted\n"
        )
        self.assertEqual(
            sorted(set(_reachedByName(text))),
            [
                ("twisted.internet.endpoints", "_SystemdParser"),
                ("twisted.internet.endpoints._SystemdParser", "_sddaemon"),
                ("twisted.web.http", "_getContentFile"),
                ("twisted.web.http.HTTPChannel", "_finishRequestBody"),
            ],
        )
        found = {
            (cls.__name__, name)
            for cls, base, name in _reachedBySubclasses("rainbowd.web.requestlimits")
        }
        self.assertIn(("LimitedChannel", "_dataBuffer"), found)
        self.assertIn(("LimitedChannel", "_respondToBadRequestAndDisconnect"), found)
