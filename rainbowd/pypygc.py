# -*- test-case-name: rainbowd.test.unit.test_pypygc -*-
"""
PyPy's garbage collector, set for a proxy's tail latency.

PyPy sizes its nursery (where every new object goes) from the smallest
C{cache size} line of C{/proc/cpuinfo}: a host that reports a 1 MiB cache
gets a 1 MiB nursery, one that reports an L3 of 36 MiB about 18 MiB.
rainbowd filled about 200 KB of nursery per proxied request, so with 1 MiB
there were thousands of minor collections a second; each one runs a step
of a major collection's marking when one is under way, and those steps,
of a few milliseconds each, then come back to back.  At 32 connections
that made PyPy's p99 three times CPython's on such a host.

With a 16 MiB nursery and 4 MiB increment steps, on that host, PyPy's p99
went below CPython's (4.2 against 6.7 ms), for some 80 MB more memory; on
a slower host 4 MiB steps took 6-10 ms each, and 1 MiB steps (the same
marking, in shorter pieces) gave the shorter tail there, but a longer one
on the first host, where 2 MiB did as well as 4 MiB: so the step is 2 MiB.  The
variables are read once, when PyPy starts, before any Python code runs, so
rainbowd on PyPy re-executes itself with them, before anything else
happens (before twistd writes its pidfile, starts logging to a file,
daemonizes or listens), unless either variable is already set: whoever
set one chose, and is left alone (C{PYPY_GC_NURSERY=} with an empty value
keeps PyPy's own choice).  The process keeps its pid, its command line and
the environment it started with (read from C{/proc/self}, since Twisted
takes systemd's variables out of C{os.environ} once it has read them).
The variables rainbowd set are then removed from its environment, so that
the app does not inherit them.
"""

import os
import stat
import sys
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    MutableMapping,
    Optional,
    Sequence,
)

import attrs
from twisted.logger import Logger

_log = Logger()

#: The nursery and increment step rainbowd runs PyPy with (see the module's
#: docstring and "Running on PyPy" in docs/operations.rst for the measurements).
SETTINGS = (("PYPY_GC_NURSERY", "16M"), ("PYPY_GC_INCREMENT_STEP", "2M"))

#: The environment variable that tells the re-executed rainbowd that it set
#: L{SETTINGS} itself, and the nursery PyPy had chosen, in bytes.
MARKER = "RAINBOWD_SET_PYPY_GC"

MiB = 1024 * 1024


def smallestCacheSize(cpuinfo: str) -> Optional[int]:
    """
    The smallest C{cache size} of C{/proc/cpuinfo}'s text, in bytes, as
    PyPy reads it to size its nursery (only kilobyte figures count); L{None}
    if there is none.
    """
    sizes = []
    for line in cpuinfo.splitlines():
        label, colon, value = line.partition(":")
        if not colon or label.strip() != "cache size":
            continue
        words = value.split()
        if len(words) == 2 and words[0].isdigit() and words[1][:1] in "Kk":
            sizes.append(int(words[0]) * 1024)
    return min(sizes) if sizes else None


def readsAsSize(value: str) -> bool:
    """
    Whether PyPy's collector reads C{value} of a C{PYPY_GC_*} size variable
    as a size, as its C{env.read_from_env} does: a number, with C{k}, C{m}
    or C{g} after it (either case, a C{B} allowed after that), above zero.
    PyPy ignores any other value, without a word, and takes its own size:
    C{16MiB}, C{16M } (a space after it) or C{16_000k} among them.
    """
    if len(value) > 1 and value[-1] in "bB":
        value = value[:-1]
    if value[-1:] in ("k", "K", "m", "M", "g", "G"):
        value = value[:-1]
    if "_" in value:
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return 0 < number < float("inf")


def _size(value: int) -> str:
    if value % MiB == 0:
        return f"{value // MiB} MiB"
    return f"{value / MiB:.1f} MiB"


@attrs.frozen
class Choice:
    """
    What to do about PyPy's collector at startup.

    @ivar setting: the variables to re-execute with, L{MARKER} included;
        empty: go on as is.
    @ivar message: the log line that says why.
    @ivar warn: whether that line is a warning.
    """

    setting: Mapping[str, str]
    message: str
    warn: bool = False


def choose(
    environ: Mapping[str, str],
    nursery: int,
    cpuinfo: Optional[str],
    canReexecute: bool,
    readOnce: Optional[str] = None,
) -> Choice:
    """
    Decide, on PyPy, whether to re-execute with L{SETTINGS}.

    @param environ: the environment rainbowd started with.
    @param nursery: the size of the nursery PyPy chose, in bytes.
    @param cpuinfo: the text of C{/proc/cpuinfo}, or L{None}.
    @param canReexecute: whether rainbowd's command line and environment are
        known.
    @param readOnce: a file read at startup that a re-executed rainbowd
        could not read again (see L{readOnce}), or L{None}.
    """
    wanted = " ".join(f"{name}={value}" for name, value in SETTINGS)
    cache = smallestCacheSize(cpuinfo) if cpuinfo is not None else None
    why = (
        f"from the {cache // 1024} KB 'cache size' in /proc/cpuinfo"
        if cache is not None
        else "as PyPy guessed it"
    )
    setBy = environ.get(MARKER)
    if setBy is not None:
        had = f"{_size(int(setBy))} " if setBy.isdigit() else ""
        return Choice(
            {},
            f"PyPy's collector: a {_size(nursery)} nursery ({wanted}, set by "
            f"rainbowd; PyPy had chosen {had}{why})",
        )
    chosen = [f"{name}={environ[name]}" for name, _ in SETTINGS if name in environ]
    if chosen:
        ignored = [
            f"{name}={environ[name]!r}"
            for name, _ in SETTINGS
            if environ.get(name) and not readsAsSize(environ[name])
        ]
        if ignored:
            return Choice(
                {},
                f"PyPy's collector: a {_size(nursery)} nursery ({' '.join(chosen)} "
                f"given in the environment); PyPy ignored {' and '.join(ignored)}, "
                f"which is not a size it reads, and chose its own: write a size "
                f"such as {wanted} (a number, with k, m or g), or leave the "
                f"variables unset for rainbowd's setting",
                warn=True,
            )
        return Choice(
            {},
            f"PyPy's collector: a {_size(nursery)} nursery ({' '.join(chosen)} "
            f"given in the environment; rainbowd would set {wanted})",
        )
    if readOnce is not None:
        return Choice(
            {},
            f"PyPy's collector: a {_size(nursery)} nursery, {why}; rainbowd "
            f"does not re-execute itself, since it read {readOnce} at startup "
            f"and that is not a file it could read again (a pipe, say): set "
            f"{wanted} in its environment for a short tail latency, or give "
            f"it a file",
            warn=True,
        )
    if not canReexecute:
        return Choice(
            {},
            f"PyPy's collector: a {_size(nursery)} nursery, {why}; rainbowd "
            f"cannot re-execute itself (its command line or environment is "
            f"unknown): set {wanted} in its environment for a short tail "
            f"latency",
            warn=True,
        )
    return Choice(dict(SETTINGS, **{MARKER: str(nursery)}), "")


def _readProc(path: str) -> Optional[List[str]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    words = [os.fsdecode(word) for word in raw.split(b"\0")[:-1]]
    return words or None


def commandLine(path: str = "/proc/self/cmdline") -> Optional[List[str]]:
    """
    The command line this process was started with, the interpreter and its
    options included; L{None} if it cannot be read.
    """
    return _readProc(path)


def startingEnvironment(path: str = "/proc/self/environ") -> Optional[Dict[str, str]]:
    """
    The environment this process was started with, before anything took
    variables out of it (Twisted takes systemd's C{LISTEN_FDS} and
    C{LISTEN_PID} out of C{os.environ} once it has read them); L{None} if
    it cannot be read.
    """
    entries = _readProc(path)
    if entries is None:
        return None
    environ = {}
    for entry in entries:
        name, equals, value = entry.partition("=")
        if equals:
            environ[name] = value
    return environ


def readOnce(paths: Iterable[Optional[str]]) -> Optional[str]:
    """
    The first of C{paths} (the files read at startup, L{None} for one not
    given) that is not a regular file: a pipe such as C{/dev/stdin} or a
    shell's C{<(...)}, whose bytes the first process took and a re-executed
    one would not find again; or one gone since.  L{None} if there is none.
    """
    for path in paths:
        if path is None:
            continue
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return path
        except OSError:
            return path
    return None


def nurserySize() -> int:
    """
    The size of PyPy's nursery, in bytes (on PyPy only).
    """
    import gc

    # gc.get_stats() formats its figures ("1.0MB"); the numbers under it,
    # from a function only PyPy's gc has (so CPython's stubs do not know it):
    return int(gc._get_stats().nursery_size)  # type: ignore[attr-defined]


def hooks() -> Optional[Any]:
    """
    PyPy's C{gc.hooks}; L{None} on CPython.
    """
    import gc

    return getattr(gc, "hooks", None)


def _cpuinfo() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return None


def setUp(
    environ: MutableMapping[str, str] = os.environ,
    nursery: Callable[[], int] = nurserySize,
    cpuinfo: Callable[[], Optional[str]] = _cpuinfo,
    argv: Callable[[], Optional[Sequence[str]]] = commandLine,
    starting: Callable[[], Optional[Dict[str, str]]] = startingEnvironment,
    executable: str = sys.executable,
    execve: Callable[[str, List[str], Dict[str, str]], object] = os.execve,
    isPyPy: bool = sys.implementation.name == "pypy",
    startupFiles: Iterable[Optional[str]] = (),
) -> None:
    """
    On PyPy, re-execute with L{SETTINGS} if L{choose} says so, or log what
    the collector runs with.  Call it once, at startup, before the process
    opens or starts anything; on CPython it does nothing.

    @param environ: the environment now, where the variables rainbowd set
        are removed from once it runs with them.
    @param starting: the environment the process started with, to
        re-execute with.
    @param startupFiles: the files read before this was called, which a
        re-executed rainbowd reads again.
    """
    if not isPyPy:
        return
    line, startedWith = argv(), starting()
    choice = choose(
        environ,
        nursery(),
        cpuinfo(),
        bool(line and startedWith is not None and executable),
        readOnce(startupFiles) if MARKER not in environ else None,
    )
    if MARKER in environ:
        for name, _ in SETTINGS:
            environ.pop(name, None)
        del environ[MARKER]
    if choice.setting:
        assert line is not None and startedWith is not None
        env = dict(startedWith)
        env.update(choice.setting)
        # Nothing is logged first: twistd's log has not begun, and what
        # waits for it would go with this process image (nor written to
        # stderr, which may be a log of JSON lines); the re-executed
        # rainbowd says what happened.
        # Either may be None (closed when rainbowd started) or unwritable,
        # which is no reason not to go on.
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
        try:
            execve(executable, list(line), env)
        except OSError as e:
            _log.warn(
                "PyPy's collector: cannot re-execute {executable} ({error}); "
                "set {wanted} in rainbowd's environment for a short tail latency",
                executable=executable,
                error=e,
                wanted=" ".join(f"{k}={v}" for k, v in SETTINGS),
            )
        return
    (_log.warn if choice.warn else _log.info)("{line}", line=choice.message)
