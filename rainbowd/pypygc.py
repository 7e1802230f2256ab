# -*- test-case-name: rainbowd.test.test_pypygc -*-
"""
PyPy's garbage collector, set for a proxy's tail latency.

PyPy sizes its nursery (where every new object goes) from the smallest
C{cache size} line of C{/proc/cpuinfo}: a host that reports a 1 MiB cache
gets a 1 MiB nursery, one that reports an L3 of 36 MiB about 18 MiB.
rainbowd fills about 110 KB of nursery per proxied request, so with 1 MiB
there are thousands of minor collections a second; each one runs a step
of a major collection's marking when one is under way, and those steps,
of a few milliseconds each, then come back to back.  At 32 connections
that made PyPy's p99 three times CPython's on such a host.

With a 16 MiB nursery and 4 MiB increment steps the tail is below
CPython's on every host we measured, for some 80 MB more memory.  The
variables are read once, when PyPy starts, before any Python code runs, so
rainbowd on PyPy re-executes itself with them, before anything else
happens (before twistd writes its pidfile, starts logging to a file,
daemonizes or listens), unless either variable is already set: whoever
set one chose, and is left alone (C{PYPY_GC_NURSERY=} with an empty value
keeps PyPy's own choice).  The process keeps its pid and its command line.
The variables rainbowd set are then removed from its environment, so that
the app does not inherit them.
"""

import os
import sys
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Sequence

import attrs
from twisted.logger import Logger

_log = Logger()

#: The nursery and increment step rainbowd runs PyPy with (see the module's
#: docstring and "Running on PyPy" in the README for the measurements).
SETTINGS = (("PYPY_GC_NURSERY", "16M"), ("PYPY_GC_INCREMENT_STEP", "4M"))

#: The environment variable that tells the re-executed rainbowd which of
#: L{SETTINGS} it set itself, as a comma-separated list of names.
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


def _size(value: int) -> str:
    if value % MiB == 0:
        return f"{value // MiB} MiB"
    return f"{value / MiB:.1f} MiB"


@attrs.frozen
class Choice:
    """
    What to do about PyPy's collector at startup.

    @ivar setting: the variables to re-execute with; empty: go on as is.
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
) -> Choice:
    """
    Decide, on PyPy, whether to re-execute with L{SETTINGS}.

    @param environ: the environment rainbowd started with.
    @param nursery: the size of the nursery PyPy chose, in bytes.
    @param cpuinfo: the text of C{/proc/cpuinfo}, or L{None}.
    @param canReexecute: whether rainbowd's command line is known.
    """
    wanted = " ".join(f"{name}={value}" for name, value in SETTINGS)
    setBy = environ.get(MARKER)
    if setBy is not None:
        return Choice(
            {}, f"PyPy's collector: a {_size(nursery)} nursery ({wanted}, set by rainbowd)"
        )
    chosen = [f"{name}={environ[name]}" for name, _ in SETTINGS if name in environ]
    if chosen:
        return Choice(
            {},
            f"PyPy's collector: a {_size(nursery)} nursery ({' '.join(chosen)} "
            f"given in the environment; rainbowd would set {wanted})",
        )
    cache = smallestCacheSize(cpuinfo) if cpuinfo is not None else None
    why = (
        f"from the {cache // 1024} KB 'cache size' in /proc/cpuinfo"
        if cache is not None
        else "as PyPy guessed it"
    )
    if not canReexecute:
        return Choice(
            {},
            f"PyPy's collector: a {_size(nursery)} nursery, {why}; rainbowd "
            f"cannot re-execute itself (its command line is unknown): set "
            f"{wanted} in its environment for a short tail latency",
            warn=True,
        )
    return Choice(
        dict(SETTINGS),
        f"PyPy's collector: PyPy chose a {_size(nursery)} nursery {why}; "
        f"re-executing with {wanted}",
    )


def commandLine(path: str = "/proc/self/cmdline") -> Optional[List[str]]:
    """
    The command line this process was started with, the interpreter and its
    options included; L{None} if it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    argv = [os.fsdecode(arg) for arg in raw.split(b"\0")[:-1]]
    return argv or None


def nurserySize() -> int:
    """
    The size of PyPy's nursery, in bytes (on PyPy only).
    """
    import gc

    # gc.get_stats() formats its figures ("1.0MB"); the numbers under it:
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
    executable: str = sys.executable,
    execve: Callable[[str, List[str], Dict[str, str]], object] = os.execve,
    isPyPy: bool = sys.implementation.name == "pypy",
) -> None:
    """
    On PyPy, re-execute with L{SETTINGS} if L{choose} says so, or log what
    the collector runs with.  Call it once, at startup, before the process
    opens or starts anything; on CPython it does nothing.
    """
    if not isPyPy:
        return
    line = argv()
    choice = choose(environ, nursery(), cpuinfo(), bool(line and executable))
    for name in environ.pop(MARKER, "").split(","):
        environ.pop(name, None)
    if choice.setting:
        assert line is not None
        env = dict(environ)
        env.update(choice.setting)
        env[MARKER] = ",".join(choice.setting)
        # Written straight away: twistd's log is not started yet, and what
        # waits for it is lost with this process image.
        sys.stderr.write(f"rainbowd: {choice.message}\n")
        sys.stderr.flush()
        sys.stdout.flush()
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
