# -*- test-case-name: rainbowd.test.unit.test_config -*-
"""
rainbowd's configuration: C{rainbow.conf.json} plus command-line overrides.

The file is a JSON object; times in it are in B{milliseconds}, while
L{Config} holds them in B{seconds}.  A minimal file::

    {"run": "gunicorn myapp:app --bind 127.0.0.1:$1 --pid \\"$2\\""}

Every key is declared once, as a field of L{Config} made by L{_setting},
whose metadata (a L{Setting}) says all there is to know about it: how to
read it from the file (L{_Kind}, which also gives its unit, the kind of its
twistd flag and its type in the docs), its C{--help} line, its line in the
configuration table, whether only the file sets it, and whether it is only read
at startup.  Everything else is derived from those fields: L{loadConfig}
walks them; C{twistd rainbowd}'s flags (L{rainbowd.tap}), the keys only
read at startup (L{rainbowd.app.deployer.STARTUP_KEYS}) and the
configuration table of C{docs/configuration.rst} (L{rainbowd.configdoc}) are made from them.

So adding a key is adding a field, here, after the key it belongs next to::

    rollbackWindow: float = _setting(
        _milliseconds(positive=False),          # its kind: unit, flag, type
        "Time after a deploy during which ..., in ms",  # --help, no "."
        default=60.0,                           # in Config's units: seconds
        doc="time after a deploy during which ...",   # the table's line
        startup=True,                           # if only read at startup
    )

then running C{python -m rainbowd.configdoc} to rewrite the docs'
table (a test fails until it is).  C{doc} defaults to the C{--help} line;
C{docDefault} and the third argument, C{shownDefault}, describe a default
that is not simply the field's; C{fileOnly=True} is for a key with no
flag; C{short="p"} gives a flag a one-letter form.  A key's flag is
C{--rollback-window}, and C{"text"}, C{"number"} or C{"port"} as its
L{_Kind} says.  A key written the old way (an entry in C{tap._FLAGS}, in
C{deployer.STARTUP_KEYS} and a row in the docs' table) becomes one: move
its table meaning into C{doc=} (without "read at startup", which
C{startup=True} adds), drop the other two entries, and regenerate the
table.
"""

import difflib
import json
import math
import os
import re
import stat
from types import MappingProxyType
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
)

import attrs

from rainbowd.app.releases import danglingLinkProblem, resolveRelease
from rainbowd.configfile import DEFAULT_FILENAME, ConfigError
from rainbowd.control.browsers import normalHost, normalOrigin

# endpointArguments and endpointParts for those that import them from here.
from rainbowd.endpoints import (  # noqa: F401
    endpointArguments,
    endpointParts,
    isDigits,
    loopback,
    tcpPortNumber,
)

DEFAULT_STATE_DIR = ".rainbowd"
EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"

RUN_EXAMPLE = '{"run": "gunicorn myapp:app --bind 127.0.0.1:$1 --pid \\"$2\\""}'


class _Invalid(Exception):
    """
    Raised by a L{_Kind}'s parser: the value is not acceptable.

    @ivar detail: an extra explanation, or L{None}.
    @ivar wrongType: the value is not even of the right JSON type.
    """

    def __init__(self, detail: Optional[str] = None, wrongType: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.wrongType = wrongType


@attrs.frozen
class _Kind:
    """
    How to read one key of the file.

    @ivar expected: what a good value is, as a phrase following "must be".
    @ivar parse: file value -> L{Config} value; raises L{_Invalid}.
    @ivar unparse: L{Config} value -> file value, to show a default.
    @ivar unit: the unit of the file value (C{"ms"}), or L{None}.
    @ivar flag: the kind of argument its twistd flag takes: C{"text"}, a
        whole C{"number"} (of C{unit}s), a C{"ratio"} (from 0 to 1), or a
        C{"port"} (a number, or an endpoint description); see L{rainbowd.tap}.
    @ivar type: the type of the file value, in the configuration table.
    """

    expected: str
    parse: Callable[[Any], Any]
    unparse: Callable[[Any], Any] = lambda value: value
    unit: Optional[str] = None
    flag: str = "text"
    type: str = "string"


@attrs.frozen
class Setting:
    """
    What a key of the file is, beyond its L{Config} field: the metadata of
    that field, read with L{setting}.

    @ivar key: the key.
    @ivar kind: how its value is read (L{_Kind}).
    @ivar help: one line on it, for C{--help}.
    @ivar shownDefault: its default in words for C{--help}, when it is not
        simply the field's; or L{None}.
    @ivar flag: the kind of argument of its flag (L{_Kind.flag}), or
        L{None} if only the file sets it.
    @ivar short: its one-letter flag, or L{None}.
    @ivar startup: it is only read when rainbowd starts: a redeploy keeps
        the value rainbowd started with, and warns that it changed.
    @ivar doc: its line in the configuration table (reStructuredText, where
        C{:ref:} links to a section of the docs).
    @ivar docDefault: its default there, when not derived from the
        field's; or L{None}.
    """

    key: str
    kind: _Kind
    help: str
    shownDefault: Optional[str]
    flag: Optional[str]
    short: Optional[str]
    startup: bool
    doc: str
    docDefault: Optional[str]


_SETTING = "rainbowd.config.setting"


def _setting(
    kind: _Kind,
    help: str,
    shownDefault: Optional[str] = None,
    *,
    doc: Optional[str] = None,
    docDefault: Optional[str] = None,
    startup: bool = False,
    fileOnly: bool = False,
    short: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """
    Declare a field of L{Config} that is also a key of the file (see
    L{Setting} for the arguments; the key is filled in from the field's
    name); the rest of C{kwargs} go to L{attrs.field}.

    @param fileOnly: the key has no flag.
    """
    metadata = {
        _SETTING: Setting(
            key="",
            kind=kind,
            help=help,
            shownDefault=shownDefault,
            flag=None if fileOnly else kind.flag,
            short=short,
            startup=startup,
            doc=help if doc is None else doc,
            docDefault=docDefault,
        )
    }
    return attrs.field(metadata=metadata, **kwargs)


def _shortRepr(value: object, limit: int = 60) -> str:
    """
    C{repr(value)}, cut in the middle when longer than C{limit}.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return text[:half] + " ... " + text[-half:]


def _jsonType(value: object) -> str:
    """
    The JSON name of C{value}'s type, for error messages.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number(value: object) -> float:
    """
    A finite JSON number; C{true}/C{false} are not numbers.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(wrongType=True)
    if not math.isfinite(value):
        raise _Invalid("it is not a finite number")
    return value


def _integer(value: object) -> int:
    """
    A whole JSON number (C{8000} or C{8000.0}, not C{8000.5}).
    """
    number = _number(value)
    if number != int(number):
        raise _Invalid("it has a fraction")
    return int(number)


def _milliseconds(positive: bool) -> _Kind:
    """
    A time: milliseconds in the file, seconds in L{Config}.
    """

    def parse(value: object) -> float:
        number = _number(value)
        if number < 0 or (positive and number == 0):
            raise _Invalid()
        return number / 1000.0

    def unparse(seconds: float) -> float:
        ms = round(seconds * 1000.0, 6)
        return int(ms) if ms == int(ms) else ms

    bound = "greater than 0" if positive else "0 or more"
    return _Kind(
        f"a number of milliseconds, {bound}",
        parse,
        unparse,
        "ms",
        flag="number",
        type="ms",
    )


def _whole(expected: str, parse: Callable[[Any], int]) -> _Kind:
    """
    A whole number, taken by C{parse}, that is C{expected}.
    """
    return _Kind(expected, parse, flag="number", type="int")


def _string(value: object) -> str:
    """
    A JSON string that is not blank.
    """
    if not isinstance(value, str):
        raise _Invalid(wrongType=True)
    if not value.strip():
        raise _Invalid("it is empty")
    return value


def _parseUrlPath(value: object) -> str:
    path = _string(value)
    if not path.startswith("/") or re.search(r"\s", path):
        raise _Invalid()
    return path


def _parseAtLeastOne(value: object) -> int:
    count = _integer(value)
    if count < 1:
        raise _Invalid()
    return count


def _parseMaxBackends(value: object) -> int:
    count = _integer(value)
    if count < 2:
        raise _Invalid(
            "a redeploy starts the new version next to the one serving, so "
            "with fewer than 2 no redeploy could ever start"
        )
    return count


def flagName(key: str) -> str:
    """
    The command-line flag for config key C{key}: C{drainTimeout} ->
    C{drain-timeout}.
    """
    return re.sub(r"[A-Z]", lambda match: "-" + match.group(0).lower(), key)


def _parseEndpoint(value: object) -> str:
    """
    A port number (int or all-digits string) becomes a loopback TCP
    description; any other string must parse as a server endpoint.
    """
    if isinstance(value, str) and isDigits(value.strip()):
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        port = _integer(value)
        if not 1 <= port <= 65535:
            raise _Invalid("port numbers go from 1 to 65535")
        return loopback(port)
    description = _string(value)
    # Here, not at the top: rainbowctl reads the config, and starts faster
    # without Twisted's endpoints (see rainbowd.test.unit.test_ctl).
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, description)
    except Exception as e:
        if description.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
            raise _Invalid(
                "systemd passed rainbowd no such socket: start it from a "
                "service unit with a matching .socket unit (see examples/systemd "
                "and docs/operations.rst)"
            )
        raise _Invalid(f"Twisted cannot read it: {e}")
    number = tcpPortNumber(description)
    if number is not None and not 0 <= number <= 65535:
        raise _Invalid("port numbers go from 1 to 65535")
    return description


def _unparseEndpoint(description: str) -> object:
    """
    A loopback TCP description as the bare port number it came from.
    """
    match = re.fullmatch(r"tcp:(\d+):interface=127\.0\.0\.1", description)
    return int(match.group(1)) if match else description


def _parsePortRange(value: object) -> Tuple[int, int]:
    text = _string(value)
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if match is None:
        raise _Invalid()
    low, high = int(match.group(1)), int(match.group(2))
    if not 1024 <= low <= high <= 65535:
        raise _Invalid("it needs 1024 <= LOW <= HIGH <= 65535")
    return (low, high)


def _parseEnv(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(wrongType=True)
    for name, setting in value.items():
        if not name or "=" in name or "\0" in name:
            raise _Invalid(f"{name!r} is not a usable variable name")
        if not isinstance(setting, str):
            raise _Invalid(
                f"the value of {name!r} is {_jsonType(setting)}; quote it, "
                f'e.g. "{name}": "{setting}"'
            )
        if "\0" in setting:
            raise _Invalid(f"the value of {name!r} contains a NUL character")
    return value


def _freeze(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


def _tuple(values: Iterable[str]) -> Tuple[str, ...]:
    # Not converter=tuple: attrs reads a converter's signature, and that of
    # a builtin takes milliseconds to make, which rainbowctl would pay.
    return tuple(values)


#: What follows a "$" that reaches the first positional parameter: the
#: port is only ever given as $1 ($10 is $1 then 0, but ${10} is not it).
_POSITIONAL_PARAMETERS = re.compile(r"[1@*]|\{[#!]?[1@*](?!\d)")


def _expandsPort(run: str) -> bool:
    """
    Whether the shell expands $1 somewhere in C{run}: outside single
    quotes, and not after a backslash.  A quote left open is the shell's
    error to report, so it counts as yes.
    """
    inDouble = False
    i = 0
    while i < len(run):
        c = run[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" and not inDouble:
            end = run.find("'", i + 1)
            if end < 0:
                return True
            i = end
        elif c == '"':
            inDouble = not inDouble
        elif c == "$" and _POSITIONAL_PARAMETERS.match(run, i + 1):
            return True
        i += 1
    return inDouble


def _parseRun(value: object) -> str:
    """
    A command that uses its first argument, the port: one that does not
    cannot listen where rainbowd sends the traffic, and every deploy of
    it would only fail after startTimeout.
    """
    run = _string(value)
    if not _expandsPort(run):
        raise _Invalid(
            "it never uses $1, the only way the port is passed (the shell "
            "leaves $1 as it is in single quotes or after a backslash); a "
            'script gets it if given it, e.g. "./start.sh $1 \\"$2\\""'
        )
    return run


_run = _Kind(
    "a shell command that starts the app listening on port $1 and writes "
    f"its pid to the file $2, e.g. {RUN_EXAMPLE}",
    _parseRun,
)
_verify = _Kind(
    "a shell command that checks the app on port $1 (generation $2) and "
    'exits 0 if it is fit for traffic, e.g. "curl -fsS '
    'http://127.0.0.1:$1/some/page"',
    _string,
)
_urlPath = _Kind('a URL path starting with "/", without spaces', _parseUrlPath)


def _parseLBHealthPath(value: object) -> str:
    path = _parseUrlPath(value)
    if "?" in path or "#" in path:
        raise _Invalid("a query string or fragment is never part of the path matched")
    if path == "/":
        raise _Invalid('"/" would hide the app\'s own home page; use a path of its own')
    return path


_lbHealthPath = _Kind(
    'a URL path starting with "/", without spaces, "?" or "#", like '
    '"/_rainbowd/up"',
    _parseLBHealthPath,
)
_endpoint = _Kind(
    'a port number like 8000, or an endpoint description like "tcp:8000" '
    'or "unix:/run/app.sock:mode=600"',
    _parseEndpoint,
    _unparseEndpoint,
    flag="port",
    type="int or endpoint",
)
_portRange = _Kind(
    'a port range "LOW-HIGH" like "20000-29999"',
    _parsePortRange,
    lambda ports: f"{ports[0]}-{ports[1]}",
)
_env = _Kind(
    'an object of strings, e.g. {"DJANGO_SETTINGS_MODULE": "site.prod"}',
    _parseEnv,
    type="object",
)
def _strings(expected: str, item: Callable[[str], Optional[str]]) -> _Kind:
    """
    A list of strings, each of which C{item} turns into its L{Config} form
    or refuses with L{None}; a single string is a list of one, and on the
    command line the items are separated by commas.
    """

    def parse(value: object) -> Tuple[str, ...]:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise _Invalid(wrongType=True)
        result = []
        for entry in value:
            if not isinstance(entry, str):
                raise _Invalid(
                    f"{_shortRepr(entry)} is {_jsonType(entry)}, not a string"
                )
            parsed = item(entry.strip())
            if parsed is None:
                raise _Invalid(f"{entry!r} is not one")
            result.append(parsed)
        return tuple(result)

    return _Kind(f"a list of {expected}", parse, list, type="list")


_origins = _strings(
    'origins, each "scheme://host" or "scheme://host:port" with no path, '
    'like "https://ops.example.com"',
    normalOrigin,
)
_hosts = _strings(
    'host names or addresses without a port, like "rainbowd.internal" or '
    '"10.0.0.5"',
    normalHost,
)
_path = _Kind("a directory path", _string)
_file = _Kind("a file path", _string)


def _parseAccessLogFormat(value: object) -> str:
    format = _string(value)
    if format not in ACCESS_LOG_FORMATS:
        raise _Invalid()
    return format


def _parseRatio(value: object) -> float:
    ratio = _number(value)
    if not 0 <= ratio <= 1:
        raise _Invalid()
    return float(ratio)


def _parseCount(value: object) -> int:
    count = _integer(value)
    if count < 0:
        raise _Invalid()
    return count


def _parsePositiveCount(value: object) -> int:
    count = _parseCount(value)
    if count == 0:
        raise _Invalid()
    return count


#: The formats of the access log.
ACCESS_LOG_FORMATS = ("combined", "json")


@attrs.frozen(kw_only=True)
class Config:
    """
    A checked configuration.  Times are in seconds; build one with
    L{loadConfig}, change one with C{attrs.evolve}.

    Each field but C{source} is also a key of C{rainbow.conf.json}, declared
    with L{_setting}; see L{settings}, L{settingHelp} and L{settingUnit}.
    """

    run: str = _setting(
        _run,
        "Shell command that starts the app; $1 is its port, $2 its pid file",
        "none; it is required",
        doc="``/bin/sh -c`` command; ``$1`` port (it must use it), ``$2`` pidfile",
        docDefault="required",
    )
    healthCheckPath: Optional[str] = _setting(
        _urlPath,
        "Path the new version must answer with a 2xx before it gets traffic",
        '"/", unless warmupTime is given',
        default="/",
        doc="``GET`` must answer 2xx before traffic moves",
    )
    warmupTime: Optional[float] = _setting(
        _milliseconds(positive=False),
        "Wait this long instead of health-checking a new version, in ms",
        "none, so the health check is used",
        default=None,
        doc=(
            "wait this long instead of a health check; less than "
            "``startTimeout``; giving it and ``healthCheckPath`` is an error"
        ),
    )
    port: str = _setting(
        _endpoint,
        "Port number (on 127.0.0.1) or endpoint description to serve the app on",
        default=loopback(7000),
        doc="where the proxy listens; a number means ``tcp:N:interface=127.0.0.1``",
        startup=True,
        short="p",
    )
    controlPort: str = _setting(
        _endpoint,
        "Port number (on 127.0.0.1) or endpoint description of the control API "
        "(POST /redeploy)",
        "the port + 1",
        default=loopback(7001),
        doc="where the control API listens (same rule); ``unix:/path:mode=600`` works",
        docDefault="``port`` + 1",
        startup=True,
    )
    healthCheckInterval: float = _setting(
        _milliseconds(positive=True),
        "Time between health checks of a starting version, in ms",
        default=0.1,
        doc="time between health checks of a starting version",
    )
    healthCheckTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time one health check request may take, in ms",
        default=2.0,
        doc="time one health check may take",
    )
    verify: Optional[str] = _setting(
        _verify,
        "Shell command that checks a new version once healthy, before it gets "
        "traffic; $1 is its port, $2 its generation; exit 0 switches, "
        "anything else fails the deploy",
        "none, so a healthy version gets traffic at once",
        default=None,
        doc=(
            "``/bin/sh -c`` command run against a healthy new version before "
            "the switch; ``$1`` its port, ``$2`` its generation; exit 0 "
            "switches, anything else fails the deploy (see :ref:`verify "
            "command`)"
        ),
    )
    verifyTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time the verify command may run before it is killed and the deploy "
        "fails, in ms",
        default=30.0,
        doc=(
            "time ``verify`` may run; then its process group is killed and the "
            "deploy fails"
        ),
    )
    livenessInterval: float = _setting(
        _milliseconds(positive=False),
        "Time between liveness checks of the serving version, in ms "
        "(0: none)",
        default=2.0,
        doc=(
            "time between liveness checks of the serving version (see "
            ":ref:`What rainbowd does with processes`); 0: none"
        ),
    )
    livenessFailures: int = _setting(
        _whole("a whole number, 1 or more", _parseAtLeastOne),
        "Liveness checks in a row the serving version may fail before a "
        "replacement is started",
        default=3,
        doc="liveness checks in a row it may fail before a replacement is started",
    )
    startTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time a new version has to pass its health check, in ms",
        default=60.0,
        doc="time a new version has to become healthy",
    )
    drainTimeout: float = _setting(
        _milliseconds(positive=False),
        "Time an old version has to finish its requests before it is stopped, "
        "in ms",
        default=30.0,
        doc="time an old version has to finish its requests",
    )
    rollbackWindow: float = _setting(
        _milliseconds(positive=False),
        "Time after a switch the old version is kept alive as a standby to "
        "roll back to, once drained, in ms (0: stop it once drained)",
        default=300.0,
        doc=(
            "time after a switch the old version is kept, once drained, as a "
            "standby to roll back to (see :ref:`When a release goes wrong`); 0: none"
        ),
        docDefault="300000 (5 min)",
    )
    rollbackCheckFailures: int = _setting(
        _whole("a whole number, 1 or more", _parseAtLeastOne),
        "Health checks in a row (one every healthCheckInterval while there is "
        "a standby) the new version may fail before rainbowd rolls back to "
        "the standby",
        default=3,
        doc=(
            "health checks in a row (one every ``healthCheckInterval`` while "
            "there is a standby) the new version may fail before rainbowd "
            "rolls back to the standby"
        ),
    )
    rollbackErrorRate: float = _setting(
        _Kind("a number from 0 to 1", _parseRatio, flag="ratio", type="number"),
        "Share of the new version's responses that may be 5xx while there is "
        "a standby; above it (over rollbackMinRequests at least) rainbowd "
        "rolls back (1: never)",
        default=0.25,
        doc=(
            "share of the new version's responses that may be 5xx while there "
            "is a standby; above it, rainbowd rolls back; 1: never"
        ),
    )
    rollbackMinRequests: int = _setting(
        _whole("a whole number, 1 or more", _parseAtLeastOne),
        "Responses the new version must have given before its share of 5xx "
        "can roll it back",
        default=20,
        doc="responses the new version must have given before its share of 5xx counts",
    )
    requestHeaderTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time a client has to send a whole request head (from connecting, or "
        "from the first byte of a kept-alive request), in ms; then 408",
        default=10.0,
        doc=(
            "time a client has to send a whole request head, both ports; then "
            "408 (see :ref:`Limits of client requests`)"
        ),
    )
    requestBodyTimeout: float = _setting(
        _milliseconds(positive=True),
        "Window over which a request body must keep up requestBodyMinRate, "
        "in ms; a body that stalls this long is cut with 408",
        default=20.0,
        doc=(
            "window a request body's rate is measured over; a body stalled this"
            " long gets 408"
        ),
    )
    requestBodyMinRate: int = _setting(
        _whole("a whole number of bytes a second, 0 or more", _parseCount),
        "Slowest a request body may arrive, in bytes a second over each "
        "requestBodyTimeout (0: a byte in each)",
        default=500,
        doc=(
            "slowest a request body may arrive, in bytes a second over each "
            "window (0: a byte a window)"
        ),
    )
    maxRequestBody: int = _setting(
        _whole("a whole number of bytes, 1 or more", _parseAtLeastOne),
        "Largest request body taken on the public port, in bytes; a bigger one "
        "gets 413",
        default=100 * 1024 * 1024,
        doc="largest request body on the public port, in bytes; a bigger one gets 413",
        docDefault="104857600 (100 MiB)",
    )
    killTimeout: float = _setting(
        _milliseconds(positive=False),
        "Time between SIGTERM and SIGKILL when stopping a version, in ms",
        default=10.0,
        doc="time between SIGTERM and SIGKILL",
    )
    upgradeTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time a new rainbowd gets to take over on an upgrade (POST /upgrade, "
        "SIGUSR2) before it is killed and the old one serves on, in ms",
        default=60.0,
        doc=(
            "time a new rainbowd gets to take over on an upgrade before it is "
            "killed and the old one serves on (see ``docs/upgrading.rst``)"
        ),
    )
    stopDelay: float = _setting(
        _milliseconds(positive=False),
        "Time rainbowd keeps serving after a SIGTERM, answering lbHealthPath "
        "with 503 so the load balancer stops sending, before it closes its "
        "ports and drains, in ms",
        default=0.0,
        doc=(
            "on SIGTERM, keep serving this long with ``lbHealthPath`` answering"
            " 503, then close the ports and drain (see :ref:`More than one "
            "machine`)"
        ),
        startup=True,
    )
    maxConnections: Optional[int] = _setting(
        _whole("a whole number, 1 or more", _parsePositiveCount),
        "Most connections open at once on the public port; past it, a new "
        "one gets a 503 and is closed",
        "(file descriptor limit - 128 - 8 x maxBackends) / 3",
        default=None,
        doc=(
            "most connections open on the public port; past it, a 503 (see "
            "Connections and file descriptors); read at startup"
        ),
        docDefault="from the descriptor limit",
    )
    queueTimeout: float = _setting(
        _milliseconds(positive=False),
        "Time a request waits for a version to be ready (or for one of its "
        "backendConnections) before a 503, in ms",
        default=30.0,
        doc=(
            "time a request waits for a ready version (or for a "
            "``backendConnections`` slot, or while traffic is paused), then 503"
        ),
        startup=True,
    )
    maintenancePage: Optional[str] = _setting(
        _file,
        "HTML file every request gets (with 503) during maintenance, instead "
        "of rainbowd's page; {{message}} in it is replaced by the message; "
        "read at each POST /maintenance",
        "none, so rainbowd's own small page",
        default=None,
        doc=(
            "HTML file answered (503) in maintenance; ``{{message}}`` in it "
            "becomes the message; read at each ``POST /maintenance`` (see "
            ":ref:`Pause and maintenance`)"
        ),
        docDefault="none: rainbowd's own page",
    )
    backendTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time the app has to send the whole head of its response once the "
        "request is sent, before a 504, in ms",
        default=30.0,
        doc=(
            "time the app has to send the whole head of its response once the "
            "request is sent, then 504"
        ),
        startup=True,
    )
    backendBodyTimeout: float = _setting(
        _milliseconds(positive=True),
        "Time a response body may go without a byte from the app before it is "
        "cut, in ms",
        default=300.0,
        doc="time a response body may go without a byte from the app before it is cut",
        startup=True,
    )
    maxBackends: int = _setting(
        _whole("a whole number, 2 or more", _parseMaxBackends),
        "Most versions running at once (old ones draining included)",
        default=10,
        doc=(
            "most app processes at once, draining ones included; 2 or more, as "
            "a redeploy runs two at least"
        ),
    )
    backendConnections: int = _setting(
        _whole("a whole number, 0 or more", _parseCount),
        "Most requests in flight to one version at once, each on a connection "
        "of its own; more wait in rainbowd, up to queueTimeout (0: no cap)",
        default=0,
        doc=(
            "most requests in flight to one version, each on a connection of "
            "its own; more wait, up to ``queueTimeout``, then 503 (0: no cap; "
            "see Connections to the app)"
        ),
        startup=True,
    )
    backendMaxRequests: int = _setting(
        _whole("a whole number, 0 or more", _parseCount),
        "Responses a connection to the app carries before rainbowd closes it "
        "(0: no limit)",
        default=1000,
        doc=(
            "responses a connection to the app carries before it is closed (0: "
            "no limit)"
        ),
        startup=True,
    )
    backendPorts: Tuple[int, int] = _setting(
        _portRange,
        "Range LOW-HIGH of ports the app versions listen on; keep it below "
        "the kernel's ephemeral range",
        default=(20000, 29999),
        doc='``"LOW-HIGH"``: where app ports are picked from (see Ports)',
    )
    lbHealthPath: Optional[str] = _setting(
        _lbHealthPath,
        "Path on the public port that rainbowd answers itself, for a load "
        "balancer's health check: 200 while a version serves, 503 when none "
        "is ready or rainbowd is stopping; never forwarded to the app",
        "none, so every path goes to the app",
        default=None,
        doc=(
            "path rainbowd answers itself on the public port, for a load "
            "balancer: 200 while a version serves, 503 when none is ready, "
            "traffic is paused or in maintenance, or rainbowd is stopping; "
            "never forwarded"
        ),
        startup=True,
    )
    env: Mapping[str, str] = _setting(
        _env,
        "Environment variables added to rainbowd's own for the app",
        "none",
        factory=dict,
        converter=_freeze,
        hash=False,
        doc="extra environment for the app, on top of rainbowd's",
        fileOnly=True,
    )
    cwd: str = _setting(
        _path,
        "Directory the app runs in",
        "the config file's directory",
        doc="the app's working directory",
        docDefault="the config file's directory",
        fileOnly=True,
    )
    stateDir: str = _setting(
        _path,
        "Directory for pid files and state",
        f"{DEFAULT_STATE_DIR} next to the config file",
        doc=(
            "pidfiles, process group records, a lock, and ``logs/`` (see "
            "``backendLogs``); created 0700, must be rainbowd's user's and "
            "writable by it alone (see The state directory)"
        ),
        docDefault="``.rainbowd`` next to the file",
        startup=True,
    )
    controlTokenFile: Optional[str] = _setting(
        _file,
        "File holding the token every control request must bear "
        "(Authorization: Bearer TOKEN); read at startup",
        "none, so the control API asks for no token",
        default=None,
        doc="file holding the token control requests must send (see Security)",
        startup=True,
    )
    controlAllowedOrigins: Tuple[str, ...] = _setting(
        _origins,
        "Origins (scheme://host[:port]) of the web pages that may call the "
        "control API (comma-separated on the command line); a request with "
        "another Origin, or with Sec-Fetch-Site but no Origin, gets 403",
        "none, so no web page may",
        default=(),
        converter=_tuple,
        doc=(
            'origins (``"https://ops.example.com"``) whose web pages may call '
            'the control API; others get 403 (see Web pages)'
        ),
        startup=True,
    )
    controlAllowedHosts: Tuple[str, ...] = _setting(
        _hosts,
        "Names the control API may be called by in Host, beyond loopback "
        "addresses, localhost and the address it listens on (comma-separated "
        "on the command line); others get 403",
        "none",
        default=(),
        converter=_tuple,
        doc=(
            "names the control API answers to in ``Host`` beyond loopback, "
            "``localhost`` and its own address (see Web pages)"
        ),
        startup=True,
    )
    accessLog: Optional[str] = _setting(
        _Kind('a file path, or "-" for standard output', _string),
        'File to write a line per proxied request to ("-": standard output)',
        "none, so no access log",
        default=None,
        doc='file to write the access log to; ``"-"`` is standard output (see Logs)',
        startup=True,
    )
    accessLogFormat: str = _setting(
        _Kind(
            " or ".join(f'"{name}"' for name in ACCESS_LOG_FORMATS),
            _parseAccessLogFormat,
        ),
        "Format of the access log: combined (as nginx and Apache write it) "
        "or json (a JSON object a line)",
        default="combined",
        doc='``"combined"`` or ``"json"``',
        startup=True,
    )
    backendLogs: int = _setting(
        _whole("a whole number, 0 or more", _parseCount),
        "How many versions' output files to keep in stateDir/logs "
        "(0: no files; the output is still logged)",
        default=0,
        doc=(
            "how many versions' output files to keep in ``stateDir/logs`` (see "
            "Logs); 0: none"
        ),
    )
    source: Optional[str] = attrs.field(default=None)


def settings() -> List[Setting]:
    """
    The keys of C{rainbow.conf.json} as they are declared, in L{Config}'s
    order.
    """
    return [
        attrs.evolve(field.metadata[_SETTING], key=field.name)
        for field in attrs.fields(Config)
        if _SETTING in field.metadata
    ]


def setting(key: str) -> Setting:
    """
    The declaration of key C{key}.

    @raise KeyError: if there is no such key.
    """
    field = attrs.fields_dict(Config).get(key)
    if field is None or _SETTING not in field.metadata:
        raise KeyError(key)
    return attrs.evolve(field.metadata[_SETTING], key=key)


def settingNames() -> List[str]:
    """
    The keys of C{rainbow.conf.json}, in L{Config}'s order.
    """
    return [declared.key for declared in settings()]


def startupKeys() -> Tuple[str, ...]:
    """
    The keys only read when rainbowd starts (L{Setting.startup}), in
    L{Config}'s order.
    """
    return tuple(declared.key for declared in settings() if declared.startup)


def settingHelp(key: str) -> str:
    """
    A sentence on C{key}, its file unit and its default, for C{--help}.
    """
    field = attrs.fields_dict(Config)[key]
    declared = setting(key)
    shown = declared.shownDefault
    if shown is None and field.default not in (None, attrs.NOTHING):
        shown = str(declared.kind.unparse(field.default))
    if shown is None:
        return declared.help + "."
    return f"{declared.help} (default: {shown})."


def settingUnit(key: str) -> Optional[str]:
    """
    The unit of C{key} in the file and on the command line (C{"ms"}), or
    L{None}.  L{Config} holds ms keys in seconds.
    """
    return setting(key).kind.unit


class _Duplicate(Exception):
    pass


def _noDuplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _readBytes(path: str, name: Optional[str] = None) -> bytes:
    """
    The content of config file C{path}, called C{name} (C{path} by default)
    in errors.
    """
    name = path if name is None else name
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"The config file {name} does not exist; check the --config "
            f"path, or leave --config out to use {DEFAULT_FILENAME} in the "
            "current directory."
        )
    except OSError as e:
        raise ConfigError(f"Cannot read the config file {name}: {e.strerror}.")


def _readFile(path: str, name: Optional[str] = None) -> Dict[str, Any]:
    """
    The top-level object of JSON file C{path}, called C{name} (C{path} by
    default) in errors.
    """
    name = path if name is None else name
    return _decode(name, _readBytes(path, name))


def _decode(name: str, data: bytes) -> Dict[str, Any]:
    """
    The top-level object of C{data}, the content of JSON file C{name}.
    """
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise ConfigError(
            f"{name} is empty: write a JSON object with at least a \"run\" "
            f"key in it, e.g. {RUN_EXAMPLE}"
        )
    try:
        loaded = json.loads(data, object_pairs_hook=_noDuplicates)
    except json.JSONDecodeError as e:
        where = f"{name} is not valid JSON: line {e.lineno}, column {e.colno}"
        if e.doc.startswith(("//", "#", "/*"), e.pos):
            raise ConfigError(f"{where}: a comment, which JSON does not have; remove it.")
        raise ConfigError(
            f"{where}: {e.msg}.  Look for a missing comma or quote, or a comma "
            "before a closing brace, just before that point."
        )
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name} is not UTF-8 text: {e}.")
    except _Duplicate as e:
        raise ConfigError(
            f'In {name}, the key "{e.args[0]}" appears twice; keep only one '
            "(JSON would silently use the last)."
        )
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{name} must hold a JSON object at the top level, like "
            f"{RUN_EXAMPLE}, but it holds {_jsonType(loaded)}."
        )
    return loaded


@attrs.frozen
class _Raw:
    """
    The values being loaded, and where each came from.

    @ivar values: key -> value as given, in file units.
    @ivar fromFile: the keys whose value comes from the file.
    @ivar source: the absolute path of the file, or L{None}.
    @ivar cwd: the directory relative command-line paths are relative to.
    """

    values: Dict[str, Any]
    fromFile: FrozenSet[str]
    source: Optional[str]
    cwd: str

    def name(self, key: str) -> str:
        """
        C{key} as the user wrote it: a key of the file, or a flag.
        """
        if key in self.fromFile:
            return f'"{key}"'
        return f'--{flagName(key)} (key "{key}")'

    def error(self, key: str, problem: str) -> ConfigError:
        """
        The L{ConfigError} for C{key}: where and how it was given, then
        C{problem}.
        """
        where = f"In {self.source}" if key in self.fromFile else "On the command line"
        return ConfigError(f"{where}, {self.name(key)} {problem}")


def _defaultOf(key: str) -> Any:
    """
    The default of L{Config}'s field C{key} (which attrs' types say may be
    missing: every field used here has one).
    """
    return getattr(attrs.fields(Config), key).default


def _guess(key: str) -> Optional[str]:
    """
    The known key C{key} is most likely a misspelling of, if any.
    """
    known = settingNames()
    spelt = {_spelling(name): name for name in known}
    if _spelling(key) in spelt:
        return spelt[_spelling(key)]
    guesses = difflib.get_close_matches(key, known, n=1)
    return guesses[0] if guesses else None


def _spelling(key: str) -> str:
    """
    C{key} without its case, underscores and dashes: C{"PORT"},
    C{"drain_timeout"} and C{"drain-timeout"} spell known keys.
    """
    return key.lower().replace("_", "").replace("-", "")


def _unknownKey(raw: _Raw, key: str) -> ConfigError:
    """
    The error for one key rainbowd does not know (without the list of
    those it knows).
    """
    guess = _guess(key)
    hint = f' Did you mean "{guess}"?' if guess else ""
    return raw.error(key, f"is not a key rainbowd knows.{hint}")


def _unknownKeys(raw: _Raw, keys: List[str]) -> ConfigError:
    """
    The error for every key of C{keys}, which rainbowd does not know, at
    once; with a guess for each that looks like a known key, and the list
    of those.
    """
    known = f"The keys are: {', '.join(settingNames())}."
    if len(keys) == 1:
        return ConfigError(f"{_unknownKey(raw, keys[0])} {known}")
    names = ", ".join(f'"{key}"' for key in keys[:-1]) + f' and "{keys[-1]}"'
    guesses = [f'"{_guess(key)}" for "{key}"' for key in keys if _guess(key)]
    hint = f" Did you mean {', '.join(guesses)}?" if guesses else ""
    return ConfigError(
        f"In {raw.source}, {names} are not keys rainbowd knows.{hint} {known}"
    )


def _checkSettings(
    raw: _Raw,
) -> Tuple[Dict[str, Any], List[str], Dict[str, ConfigError]]:
    """
    Check every key given, and convert each to its L{Config} value.

    @return: the converted values by key; the keys rainbowd does not
        know; and the error of each value that is wrong, by key -- each in
        the order given.
    """
    fields = attrs.fields_dict(Config)
    settings = {}
    unknown = []
    invalid = {}
    for key, value in raw.values.items():
        field = fields.get(key)
        if field is None or _SETTING not in field.metadata:
            unknown.append(key)
            continue
        kind = field.metadata[_SETTING].kind
        try:
            settings[key] = kind.parse(value)
        except _Invalid as problem:
            shown = _shortRepr(value)
            if problem.wrongType:
                shown += f" ({_jsonType(value)})"
            detail = f" ({problem.detail})" if problem.detail else ""
            invalid[key] = raw.error(
                key, f"is {shown}, but it must be {kind.expected}{detail}."
            )
    return settings, unknown, invalid


def _readSettings(raw: _Raw) -> Dict[str, Any]:
    """
    Check every key given, and convert each to its L{Config} value.

    @raise ConfigError: naming every key rainbowd does not know, if any;
        else for the first value that is wrong.
    """
    settings, unknown, invalid = _checkSettings(raw)
    if unknown:
        raise _unknownKeys(raw, unknown)
    for error in invalid.values():
        raise error
    return settings


def _checkOnlyOneCheck(raw: _Raw, settings: Dict[str, Any]) -> None:
    """
    A new version is either health-checked or waited for.  A command-line
    choice beats the file's; two choices from the same place are an error.
    """
    if "healthCheckPath" in settings and "warmupTime" in settings:
        fromFile = raw.fromFile & {"healthCheckPath", "warmupTime"}
        if len(fromFile) != 1:
            raise raw.error(
                "healthCheckPath",
                f"and {raw.name('warmupTime')} are both set, but a new "
                "version is either health-checked (healthCheckPath) or given "
                "a fixed time to start (warmupTime), not both: remove one.",
            )
        (fileKey,) = fromFile
        del settings[fileKey]
    if "warmupTime" in settings:
        settings["healthCheckPath"] = None
        startTimeout = settings.get(
            "startTimeout", _defaultOf("startTimeout")
        )
        if settings["warmupTime"] >= startTimeout:
            raise raw.error(
                "warmupTime",
                f"is {settings['warmupTime'] * 1000:g} ms, but a new version "
                f"must be ready within startTimeout ({startTimeout * 1000:g} "
                "ms): make warmupTime shorter, or startTimeout longer.",
            )


def _checkVerifyPort(raw: _Raw, settings: Dict[str, Any]) -> None:
    """
    A verify that asks the public port, and never the new version's (C{$1},
    or C{RAINBOWD_PORT} from L{rainbowd.app.verify}), tests the version
    serving: it would pass whatever the new one does.
    """
    verify = settings.get("verify")
    number = tcpPortNumber(settings.get("port", _defaultOf("port")))
    if (
        verify is None
        or number is None
        or _expandsPort(verify)
        or "RAINBOWD_PORT" in verify
    ):
        return
    public = re.compile(rf":{number}(?!\d)")
    if public.search(verify):
        raise raw.error(
            "verify",
            f"asks port {number}, the public port, which the version serving "
            "answers until the verify passes, so it would not test the new "
            "one; ask $1, the new version's port: "
            + json.dumps(public.sub(":$1", verify), ensure_ascii=False)
            + ".",
        )


def _defaultControlPort(raw: _Raw, settings: Dict[str, Any]) -> None:
    """
    The control port defaults to the port's number + 1, on loopback.
    """
    port = settings.get("port", _defaultOf("port"))
    number = tcpPortNumber(port)
    if "controlPort" not in settings:
        if number is None or not 1 <= number < 65535:
            raise raw.error(
                "port",
                f"is {port!r}, which has no port number + 1 for the control "
                'API, so "controlPort" must be given too, e.g. '
                '"controlPort": 7001.',
            )
        settings["controlPort"] = loopback(number + 1)
    control = settings["controlPort"]
    if control == port or (number and number == tcpPortNumber(control)):
        raise raw.error(
            "controlPort",
            f'is {control!r}, the same port as "port": the app and the '
            "control API need different ports.",
        )


def _home(raw: _Raw) -> str:
    """
    The directory paths in the file are relative to: the file's.
    """
    return os.path.dirname(raw.source) if raw.source else raw.cwd


def _absolute(raw: _Raw, key: str, given: str) -> str:
    """
    The path C{given} for C{key} made absolute: against the config file's
    directory for a value from the file, the current directory for one
    from the command line.
    """
    base = _home(raw) if key in raw.fromFile else raw.cwd
    return os.path.abspath(os.path.join(base, os.path.expanduser(given)))


def _resolveDirectories(
    raw: _Raw, settings: Dict[str, Any], resolvedHome: Optional[str]
) -> None:
    """
    Make C{cwd}, C{stateDir}, C{controlTokenFile}, C{accessLog} (but
    C{"-"}) and C{maintenancePage} absolute, against the config file's
    directory for a value from the file and the current directory for one
    from the command line;
    default the first two to the config file's directory (or the current
    directory), and check C{cwd} exists.  C{cwd} is then resolved to the
    release directory it is (see L{rainbowd.app.releases}), through the config
    file's directory as it was when read, C{resolvedHome}.
    """
    home = _home(raw)
    settings.setdefault("cwd", home)
    settings.setdefault("stateDir", os.path.join(home, DEFAULT_STATE_DIR))
    paths = ("cwd", "stateDir", "controlTokenFile", "accessLog", "maintenancePage")
    for key in paths:
        given = settings.get(key)
        if given is None or (key == "accessLog" and given == "-"):
            continue
        settings[key] = _absolute(raw, key, given)
    dangling = danglingLinkProblem(settings["cwd"])
    if dangling is not None:
        raise raw.error("cwd", f"is {settings['cwd']!r}, but {dangling}.")
    if not os.path.isdir(settings["cwd"]):
        raise raw.error(
            "cwd",
            f"is {settings['cwd']!r}, which is not an existing directory: "
            "create it, or point cwd at the directory the app runs in.",
        )
    settings["cwd"] = resolveRelease(settings["cwd"], home, resolvedHome or home)
    if os.path.exists(settings["stateDir"]) and not os.path.isdir(settings["stateDir"]):
        raise raw.error(
            "stateDir",
            f"is {settings['stateDir']!r}, which exists but is not a "
            "directory: move it away, or choose another stateDir.",
        )


def _noRun(source: Optional[str]) -> ConfigError:
    where = f"{source} has" if source else "the command line has"
    return ConfigError(
        f'No "run" command: {where} no "run" key.  It is required: it '
        "is the shell command that starts your app, given the port to "
        f"listen on as $1 and the pid file to write as $2, e.g. {RUN_EXAMPLE}"
    )


def _source(path: Optional[str], cwd: str) -> Optional[str]:
    """
    The absolute path of the config file: C{path} against C{cwd}, or
    C{rainbow.conf.json} in C{cwd}, or L{None} if that is not there.
    """
    if path is not None:
        return os.path.abspath(os.path.join(cwd, os.path.expanduser(path)))
    source = os.path.join(cwd, DEFAULT_FILENAME)
    return source if os.path.exists(source) else None


def loadConfig(
    path: Optional[str],
    overrides: Mapping[str, object] = MappingProxyType({}),
    cwd: Optional[str] = None,
) -> Config:
    """
    Read and check the configuration.

    @param path: the config file, or L{None} for C{rainbow.conf.json} in
        C{cwd}, which may then be missing if C{overrides} give C{run}.
    @param overrides: values by file key and in file units (ms), e.g. from
        the command line; they beat the file's.  L{None} values are ignored.
    @param cwd: the directory to look in and resolve relative paths
        against; the current directory by default.

    @raise ConfigError: if anything is wrong, with a message for a human.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    overrides = {k: v for k, v in overrides.items() if v is not None}
    source = _source(path, cwd)
    if source is None and "run" not in overrides:
        raise ConfigError(
            f"No {DEFAULT_FILENAME} in {cwd}: write one with a "
            '"run" key (see README), or pass --config PATH or '
            "--run COMMAND."
        )
    fileValues: Dict[str, Any] = {}
    resolvedHome = None
    if source is not None:
        dangling = danglingLinkProblem(source)
        if dangling is not None:
            raise ConfigError(f"Cannot read the config file {source}: {dangling}.")
        # Through the link as it is now, once: the file and the app's
        # directory then come from the same release.
        resolvedHome = os.path.realpath(os.path.dirname(source))
        fileValues = _readFile(
            os.path.join(resolvedHome, os.path.basename(source)), source
        )
    raw = _Raw(
        values={**fileValues, **overrides},
        fromFile=frozenset(fileValues) - frozenset(overrides),
        source=source,
        cwd=cwd,
    )
    if "run" not in raw.values:
        unknown = _checkSettings(raw)[1]
        if unknown:  # such as a misspelt "run"
            raise _unknownKeys(raw, unknown)
        raise _noRun(source)
    settings = _readSettings(raw)
    _checkOnlyOneCheck(raw, settings)
    _checkVerifyPort(raw, settings)
    _defaultControlPort(raw, settings)
    _resolveDirectories(raw, settings, resolvedHome)
    return Config(source=source, **settings)


#: The largest C{maintenancePage} file taken, in bytes.
MAX_MAINTENANCE_PAGE = 1024 * 1024


def readMaintenancePage(path: str) -> bytes:
    """
    The contents of the C{maintenancePage} file C{path}: rainbowd reads it
    whenever it loads its config (so that a bad one stops a redeploy, or
    the start, with this error) and at each maintenance start.  rainbowctl
    does not: it must work, to resume traffic say, whatever the page.

    @raise ConfigError: if it is missing, not a regular file, unreadable,
        not UTF-8 or bigger than L{MAX_MAINTENANCE_PAGE}, saying which and
        the fix.
    """
    data = None
    try:
        # Not blocking: a FIFO would otherwise stop rainbowd until something
        # writes to it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                with open(fd, "rb", closefd=False) as f:
                    data = f.read(MAX_MAINTENANCE_PAGE + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        problem = "does not exist: create it, or remove the key to use rainbowd's page"
    except PermissionError as e:
        problem = (
            f"cannot be read: {e.strerror}.  Give the user rainbowd runs "
            "as read access to it"
        )
    except OSError as e:
        problem = f"cannot be read: {e.strerror}.  Name an HTML file: fix the path"
    else:
        if stat.S_ISDIR(mode):
            problem = "is a directory: name an HTML file"
        elif data is None:
            problem = "is not a regular file: name an HTML file"
        elif len(data) > MAX_MAINTENANCE_PAGE:
            problem = (
                f"is bigger than {MAX_MAINTENANCE_PAGE // 1024} KiB, the most "
                "rainbowd serves as a maintenance page: make it smaller (put "
                "images elsewhere)"
            )
        else:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                problem = f"is not UTF-8 text ({e}): save it as UTF-8"
            else:
                return data
    raise ConfigError(f"The maintenance page {path} (\"maintenancePage\") {problem}.")


#: The keys rainbowctl reads: those that say where the control API listens
#: and the token it asks for.
CONTROL_KEYS = ("port", "controlPort", "controlTokenFile")


@attrs.frozen
class ControlKeys:
    """
    What rainbowctl needs of a config file.

    @ivar controlPort: the control API's endpoint description, as
        L{Config.controlPort}.
    @ivar controlTokenFile: the absolute path of the token file, or
        L{None}.
    @ivar source: the config file.
    @ivar warnings: what is wrong with the rest of the file, a sentence
        each: rainbowd would refuse it, but rainbowctl need not.
    """

    controlPort: str
    controlTokenFile: Optional[str]
    source: str
    warnings: Tuple[str, ...]


def loadControlKeys(path: Optional[str], cwd: Optional[str] = None) -> ControlKeys:
    """
    Read L{CONTROL_KEYS} of the config as L{loadConfig} would, and only
    warn about the rest: the rainbowd running may well be one that started
    before a typo was made elsewhere in the file, and that is when
    C{rainbowctl status} is wanted.  Even from a file that is not valid
    JSON, the keys are read if they can be (each once, with a whole JSON
    value); those not found have their defaults.

    @param path: as for L{loadConfig}.
    @param cwd: as for L{loadConfig}.
    @raise ConfigError: if the file is missing or unreadable, or if one of
        L{CONTROL_KEYS} is wrong or cannot be told from the broken JSON
        (C{port} only if there is no C{controlPort}; a C{systemd:} endpoint
        is not checked, as systemd passes no socket to rainbowctl).
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    source = _source(path, cwd)
    if source is None:
        raise ConfigError(
            f"No {DEFAULT_FILENAME} in {cwd}: pass --config PATH, or go to "
            "the directory of rainbowd's config."
        )
    data = _readBytes(source)
    warnings = []
    try:
        values = _decode(source, data)
    except ConfigError as e:
        values = _salvage(source, data.decode("utf-8", "replace"))
        found = ", ".join(f'"{key}"' for key in CONTROL_KEYS if key in values)
        warnings.append(
            f"{e}  rainbowctl goes on with "
            + (f"the {found} it found there" if found else "the defaults")
            + "."
        )
    raw = _Raw(values=values, fromFile=frozenset(values), source=source, cwd=cwd)
    settings, unknown, invalid = _checkSettings(raw)
    # systemd passes its sockets to rainbowd, not to rainbowctl: a
    # "systemd:" endpoint is rainbowd's to check.
    unchecked = set()
    for key in ("port", "controlPort"):
        value = values.get(key)
        if key in invalid and isinstance(value, str) and value.startswith("systemd:"):
            settings[key] = value
            unchecked.add(str(invalid.pop(key)))
    for key in CONTROL_KEYS:
        # "port" is needed only to tell the default "controlPort".
        if key in invalid and (key != "port" or "controlPort" not in values):
            raise invalid[key]
    if not warnings:
        warnings.extend(str(_unknownKey(raw, key)) for key in unknown)
        warnings.extend(str(error) for error in invalid.values())
    if not warnings:
        try:
            loadConfig(source, cwd=cwd)
        except ConfigError as e:
            if str(e) not in unchecked:
                warnings.append(str(e))
    needed = {key: settings[key] for key in CONTROL_KEYS if key in settings}
    if "port" in needed or "controlPort" not in needed:
        _defaultControlPort(raw, needed)
    tokenFile = needed.get("controlTokenFile")
    if tokenFile is not None:
        tokenFile = _absolute(raw, "controlTokenFile", tokenFile)
    return ControlKeys(needed["controlPort"], tokenFile, source, tuple(warnings))


_COLON = re.compile(r"\s*:\s*")
_LENIENT = json.JSONDecoder(strict=False)


def _topLevelPairs(text: str) -> List[Tuple[str, int]]:
    """
    Each C{"key":} of the top-level object of C{text}, which may not be
    valid JSON, as the key and the offset of its value; not those in a
    string, in a nested object or array, or in a comment (C{//}, C{#} or
    C{/* */}: JSON has none, but people write them, to turn a key off).
    The scan stops at a string that does not end.
    """
    pairs = []
    depth = 0
    i = 0
    while i < len(text):
        if text[i] == '"':
            try:
                name, end = _LENIENT.raw_decode(text, i)
            except ValueError:
                break
            colon = _COLON.match(text, end)
            if depth == 1 and colon is not None:
                pairs.append((name, colon.end()))
            i = end
        elif text.startswith(("//", "#"), i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        else:
            depth += {"{": 1, "[": 1, "}": -1, "]": -1}.get(text[i], 0)
            i += 1
    return pairs


def _salvage(source: str, text: str) -> Dict[str, Any]:
    """
    The values of L{CONTROL_KEYS} in C{text}, which is not valid JSON:
    each key found once at the top level (see L{_topLevelPairs}), as
    C{"key": VALUE} with a whole JSON value followed by a comma, a closing
    brace or nothing.

    @raise ConfigError: if one of them is there more than once, or its
        value cannot be read.
    """
    decoder = json.JSONDecoder()
    pairs = _topLevelPairs(text)
    values = {}
    for key in CONTROL_KEYS:
        found = [start for name, start in pairs if name == key]
        if not found:
            continue
        where = f"{source} is not valid JSON, and rainbowctl"
        if len(found) > 1:
            raise ConfigError(
                f'{where} finds "{key}" {len(found)} times in it: it cannot '
                "tell which one rainbowd uses.  Fix the file."
            )
        try:
            value, end = decoder.raw_decode(text, found[0])
        except ValueError:
            end = None
        # A whole value ends where the object, or the pair, does (or a
        # comment starts).
        if end is None or not re.match(r"\s*([,}]|//|#|/\*|$)", text[end:]):
            raise ConfigError(
                f'{where} cannot read the value of "{key}" in it.  Fix the file.'
            )
        values[key] = value
    return values


def ephemeralPortRange(
    path: str = EPHEMERAL_RANGE_PATH,
) -> Optional[Tuple[int, int]]:
    """
    The kernel's ephemeral port range (the ports outgoing connections
    get), or L{None} if C{path} cannot be read or understood.
    """
    try:
        with open(path) as f:
            low, high = (int(word) for word in f.read().split())
    except (OSError, ValueError):
        return None
    return (low, high)


def portRangeWarning(
    config: Config, ephemeral: Optional[Tuple[int, int]]
) -> Optional[str]:
    """
    A warning if C{config.backendPorts} overlaps the C{ephemeral} range,
    or L{None} if it does not (or the range is unknown).
    """
    if ephemeral is None:
        return None
    low, high = config.backendPorts
    eLow, eHigh = ephemeral
    if high < eLow or low > eHigh:
        return None
    where = f" in {config.source}" if config.source else ""
    warning = (
        f'"backendPorts"{where} is "{low}-{high}", which overlaps the '
        f"kernel's ephemeral port range {eLow}-{eHigh}: outgoing "
        "connections may take one of those ports before a new version of "
        "the app binds it, and that deploy then fails to start."
    )
    defaultLow, defaultHigh = _defaultOf("backendPorts")
    if defaultHigh < eLow:
        suggested = f"{defaultLow}-{defaultHigh}"
    elif eLow - 1 >= 1024 + 100:
        suggested = f"{max(1024, eLow - 10000)}-{eLow - 1}"
    else:
        return warning + (
            " Move the ephemeral range up with sysctl "
            "net.ipv4.ip_local_port_range, or reserve the backend ports with "
            "net.ipv4.ip_local_reserved_ports."
        )
    return warning + f' Use a range below {eLow}, e.g. "backendPorts": "{suggested}".'
