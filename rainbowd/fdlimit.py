# -*- test-case-name: rainbowd.test.unit.test_fdlimit -*-
"""
rainbowd's file descriptor limit: raised at startup, and shared out.

Every open connection, pipe and file is a descriptor, and a process may
hold at most C{RLIMIT_NOFILE}'s soft limit of them.  systemd starts a
service with a soft limit of 1024 (and, since systemd 240, a hard limit of
524288): a process that needs more is expected to raise its soft limit to
the hard one itself, which L{raiseFileLimit} does once at startup.

The descriptors are then shared out by L{defaultMaxConnections}: a fixed
reserve for rainbowd itself and its app versions, and three per public
connection (the client's, its request body's temporary file, and the
connection to the app that a request or a tunnel on it holds).
"""

import resource
from typing import Callable, Optional, Tuple

import attrs

#: Where Linux says how high a limit may be set (a hard limit of
#: C{RLIM_INFINITY} means this much).
NR_OPEN_PATH = "/proc/sys/fs/nr_open"

#: Descriptors kept for rainbowd itself whatever C{maxBackends} is: its
#: standard streams, the event loop, the two listening sockets, the state
#: lock, its log files, the connections to the control API (at most
#: L{rainbowd.control.site.MAX_CONNECTIONS}), and the connections of each
#: port being refused with a 503 (at most L{rainbowd.web.connlimit.LINGERING}
#: each).
RESERVED = 128

#: Descriptors kept for each app version that may run (C{maxBackends}): the
#: pipes of its standard streams, its health check's connection, its output
#: file, and its pid file while it is read.
RESERVED_PER_BACKEND = 8

#: Descriptors a public connection may hold: its own; the temporary file of
#: its request's body (twisted.web spools a chunked body, or one of 100 KB
#: or more, to one), open until the response is finished; and one
#: connection to the app, held while a request on it is being answered
#: (twisted.web answers a connection's requests one at a time) or while it
#: is a tunnel.  The pool's idle connections to the app are at most as many
#: as the requests that were once in flight at the same time, so they fit
#: too.
PER_CONNECTION = 3

#: Below this many descriptors, the startup line says how to get more.
LOW = 4096


@attrs.frozen
class FileLimit:
    """
    The descriptor limit rainbowd runs with.

    @ivar soft: the soft limit now: the one that counts.
    @ivar hard: the hard limit, the most the soft one can be raised to
        without privileges (C{resource.RLIM_INFINITY} for none).
    @ivar before: the soft limit rainbowd was started with.
    @ivar error: why the soft limit could not be raised, or L{None}.
    """

    soft: int
    hard: int
    before: int
    error: Optional[str] = None


def _readNrOpen(path: str = NR_OPEN_PATH) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def raiseFileLimit(
    getrlimit: Callable[[int], Tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, Tuple[int, int]], None] = resource.setrlimit,
    nrOpen: Callable[[], Optional[int]] = _readNrOpen,
) -> FileLimit:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit (to the kernel's
    C{nr_open} if the hard limit is infinite), and say what it is now.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = nrOpen() or 1 << 20
    if soft != resource.RLIM_INFINITY and soft >= target:
        return FileLimit(soft, hard, soft)
    try:
        setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        return FileLimit(soft, hard, soft, f"setrlimit failed: {reason}")
    return FileLimit(target, hard, soft)


def _shown(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


def reserved(maxBackends: int) -> int:
    """
    The descriptors kept out of the public connections' share.
    """
    return RESERVED + RESERVED_PER_BACKEND * maxBackends


def defaultMaxConnections(limit: int, maxBackends: int) -> int:
    """
    The default of C{maxConnections}: C{(limit - 128 - 8 * maxBackends) /
    3}, at least 1.
    """
    if limit == resource.RLIM_INFINITY:
        limit = 1 << 20
    return max(1, (limit - reserved(maxBackends)) // PER_CONNECTION)


def isLow(limit: FileLimit) -> bool:
    """
    Whether C{limit} could not be raised, or is still low: the startup line
    then says how to raise it.
    """
    return limit.error is not None or (
        limit.soft != resource.RLIM_INFINITY and limit.soft < LOW
    )


def describeLimit(limit: FileLimit, maxConnections: int, derived: bool) -> str:
    """
    The startup line on the descriptor limit and the connection cap it
    gives: what it was, what it is, and how to raise it when it is low or
    could not be raised.
    """
    if limit.error is not None:
        said = (
            f"file descriptor limit: soft {_shown(limit.soft)}, hard "
            f"{_shown(limit.hard)}; raising the soft limit to the hard one "
            f"failed ({limit.error})"
        )
    elif limit.soft != limit.before:
        said = (
            f"file descriptor limit: soft {_shown(limit.before)} raised to "
            f"{_shown(limit.soft)}, the hard limit"
        )
    else:
        said = (
            f"file descriptor limit: soft {_shown(limit.soft)}, hard "
            f"{_shown(limit.hard)}"
        )
    how = "derived from the limit" if derived else "as configured"
    said += f"; maxConnections {maxConnections} ({how})"
    if isLow(limit):
        said += (
            ".  For more, raise the hard limit: LimitNOFILE=65536 in the "
            "systemd unit, or ulimit -n 65536 in the shell that starts "
            "rainbowd"
        )
    return said + "."


def budgetWarning(limit: int, maxConnections: int, maxBackends: int) -> Optional[str]:
    """
    A warning if C{maxConnections} connections may need more descriptors
    than C{limit} leaves them, or L{None}.
    """
    fits = defaultMaxConnections(limit, maxBackends)
    if maxConnections <= fits:
        return None
    return (
        f'"maxConnections" is {maxConnections}, but with a limit of {limit} '
        f"file descriptors only {fits} public connections fit (each may "
        f"hold {PER_CONNECTION}, and {reserved(maxBackends)} are kept for "
        "the control API, the app's pipes, health checks and logs): past "
        "that, new connections and the control API may fail for lack of "
        "descriptors.  Raise the limit (LimitNOFILE= in the systemd unit, "
        'ulimit -n), or lower "maxConnections".'
    )
