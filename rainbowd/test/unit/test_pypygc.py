# -*- test-case-name: rainbowd.test.unit.test_pypygc -*-
"""
Tests for L{rainbowd.pypygc}.
"""

import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.pypygc import (
    MARKER,
    SETTINGS,
    choose,
    commandLine,
    setUp,
    smallestCacheSize,
    startingEnvironment,
)

#: Two cores of an AMD EPYC VM, as its /proc/cpuinfo reads.
AMD = """\
processor\t: 0
model name\t: AMD EPYC
cache size\t: 1024 KB
cache_alignment\t: 64

processor\t: 1
model name\t: AMD EPYC
cache size\t: 1024 KB
"""

#: An Intel Xeon, which reports its L3 there.
INTEL = "model name\t: Intel(R) Xeon(R)\ncache size\t: 36608 KB\n"

#: The environment rainbowd started with, as systemd gave it.
STARTING = {"HOME": "/home/app", "LISTEN_FDS": "1", "LISTEN_PID": "4242"}

ARGV = ["/opt/venv/bin/pypy3", "/opt/venv/bin/twistd", "-n", "rainbowd", "--port", "8000"]


class Exec:
    """
    A fake C{os.execve} that records its calls.
    """

    def __init__(self, error: Optional[OSError] = None) -> None:
        self.calls: List[Tuple[str, Sequence[str], Dict[str, str]]] = []
        self.error = error

    def __call__(self, path: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.calls.append((path, list(argv), dict(env)))
        if self.error is not None:
            raise self.error


class CacheSizeTests(SynchronousTestCase):
    def test_smallest(self) -> None:
        """
        The smallest kilobyte C{cache size} line counts, as PyPy reads it.
        """
        self.assertEqual(smallestCacheSize(AMD + INTEL), 1024 * 1024)
        self.assertEqual(smallestCacheSize(INTEL), 36608 * 1024)

    def test_none(self) -> None:
        """
        Without a kilobyte C{cache size} line (an ARM host, or a figure in
        another unit), there is no size.
        """
        self.assertIsNone(smallestCacheSize("processor\t: 0\nBogoMIPS\t: 50.00\n"))
        self.assertIsNone(smallestCacheSize("cache size\t: 2 MB\n"))
        self.assertIsNone(smallestCacheSize("cache sizes\t: 1024 KB\n"))


class ChooseTests(SynchronousTestCase):
    def test_nothingSet(self) -> None:
        """
        With neither variable set, rainbowd re-executes with both, and with
        the marker that carries the nursery PyPy chose.
        """
        choice = choose({}, 1024 * 1024, AMD, True)
        self.assertEqual(dict(choice.setting), dict(SETTINGS, **{MARKER: "1048576"}))

    def test_largeNurseryToo(self) -> None:
        """
        A host whose PyPy chose a large nursery gets the same setting, so the
        tail does not depend on what the host reports (and the increment
        step is not left at twice a large nursery).
        """
        choice = choose({}, 18 * 1024 * 1024, INTEL, True)
        self.assertEqual(dict(choice.setting), dict(SETTINGS, **{MARKER: "18874368"}))

    def test_userSetOne(self) -> None:
        """
        Either variable set, even empty, is the operator's choice: no
        re-execution, and the log line names what was given.
        """
        for environ in [
            {"PYPY_GC_NURSERY": "4M"},
            {"PYPY_GC_INCREMENT_STEP": "2M"},
            {"PYPY_GC_NURSERY": ""},
        ]:
            choice = choose(environ, 4 * 1024 * 1024, AMD, True)
            self.assertEqual(choice.setting, {})
            name, value = next(iter(environ.items()))
            self.assertIn(f"{name}={value} given in the environment", choice.message)

    def test_userValueIgnoredByPyPy(self) -> None:
        """
        A value PyPy does not read as a size (it ignores it without a word
        and keeps its own nursery) is a warning that says so and how to
        write one; values it reads are not.
        """
        for value in ["16MiB", "garbage", "16M ", "0", "16_0k", "inf"]:
            choice = choose({"PYPY_GC_NURSERY": value}, 1024 * 1024, AMD, True)
            self.assertEqual(choice.setting, {})
            self.assertTrue(choice.warn, value)
            self.assertIn(f"PyPy ignored PYPY_GC_NURSERY={value!r}", choice.message)
            self.assertIn("write a size such as PYPY_GC_NURSERY=16M", choice.message)
        choice = choose(
            {"PYPY_GC_NURSERY": "16M", "PYPY_GC_INCREMENT_STEP": "4MiB"},
            16 * 1024 * 1024,
            AMD,
            True,
        )
        self.assertTrue(choice.warn)
        self.assertIn("PyPy ignored PYPY_GC_INCREMENT_STEP='4MiB',", choice.message)
        for value in ["16M", "16m", "16MB", "16mb", "1.5M", " 16M", "16 M", "16777216", "1GB", ""]:
            choice = choose({"PYPY_GC_NURSERY": value}, 16 * 1024 * 1024, AMD, True)
            self.assertFalse(choice.warn, value)

    def test_reexecuted(self) -> None:
        """
        Once re-executed (the marker is set), rainbowd does not do it again.
        """
        environ = dict(SETTINGS)
        environ[MARKER] = "1048576"
        choice = choose(environ, 16 * 1024 * 1024, AMD, True)
        self.assertEqual(choice.setting, {})
        self.assertIn("a 16 MiB nursery", choice.message)
        self.assertIn(
            "set by rainbowd; PyPy had chosen 1 MiB from the 1024 KB", choice.message
        )

    def test_cannotReexecute(self) -> None:
        """
        Without a known command line, rainbowd warns with what to set.
        """
        choice = choose({}, 1024 * 1024, None, False)
        self.assertEqual(choice.setting, {})
        self.assertTrue(choice.warn)
        self.assertIn("set PYPY_GC_NURSERY=16M PYPY_GC_INCREMENT_STEP=2M", choice.message)


class SetUpTests(SynchronousTestCase):
    def setUpCollector(self, environ: Dict[str, str], execve: Exec, **kwargs) -> None:
        arguments: Dict[str, Any] = dict(
            environ=environ,
            nursery=lambda: 1024 * 1024,
            cpuinfo=lambda: AMD,
            argv=lambda: ARGV,
            starting=lambda: dict(STARTING),
            executable="/opt/venv/bin/pypy3",
            execve=execve,
            isPyPy=True,
        )
        arguments.update(kwargs)
        setUp(**arguments)

    def test_reexecutes(self) -> None:
        """
        rainbowd re-executes its own interpreter with its whole command line
        and the environment it started with (systemd's variables, which
        Twisted takes out of C{os.environ}, included), plus the settings and
        the marker with the nursery PyPy had chosen; it writes nothing
        before, which would go into a log of JSON lines.
        """
        execve = Exec()
        with capturedLogs() as events:
            self.setUpCollector({"HOME": "/home/app"}, execve)
        [(path, argv, env)] = execve.calls
        self.assertEqual(path, "/opt/venv/bin/pypy3")
        self.assertEqual(argv, ARGV)
        self.assertEqual(
            env,
            {
                "HOME": "/home/app",
                "LISTEN_FDS": "1",
                "LISTEN_PID": "4242",
                "PYPY_GC_NURSERY": "16M",
                "PYPY_GC_INCREMENT_STEP": "2M",
                MARKER: "1048576",
            },
        )
        self.assertEqual(list(events), [])

    def test_afterReexecution(self) -> None:
        """
        The re-executed rainbowd does not execute again, logs what it runs
        with, and removes what it set from its environment, so that the app
        does not inherit it.
        """
        environ = {"HOME": "/home/app", MARKER: "1048576"}
        environ.update(SETTINGS)
        execve = Exec()
        with capturedLogs() as events:
            self.setUpCollector(environ, execve, nursery=lambda: 16 * 1024 * 1024)
        self.assertEqual(execve.calls, [])
        self.assertEqual(environ, {"HOME": "/home/app"})
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "PyPy's collector: a 16 MiB nursery (PYPY_GC_NURSERY=16M "
                "PYPY_GC_INCREMENT_STEP=2M, set by rainbowd; PyPy had chosen "
                "1 MiB from the 1024 KB 'cache size' in /proc/cpuinfo)"
            ],
        )

    def test_userChoiceKept(self) -> None:
        """
        A variable the operator set stays in the environment, for the app
        too, and there is no re-execution.
        """
        environ = {"PYPY_GC_NURSERY": "8M", "PYPY_GC_INCREMENT_STEP": "2M"}
        execve = Exec()
        self.setUpCollector(environ, execve)
        self.assertEqual(execve.calls, [])
        self.assertEqual(environ, {"PYPY_GC_NURSERY": "8M", "PYPY_GC_INCREMENT_STEP": "2M"})

    def test_noStandardStreams(self) -> None:
        """
        rainbowd re-executes when started with its standard output and error
        closed (C{sys.stdout} is then L{None}) or unwritable: there is
        nothing to flush then, and nothing to say it failed.
        """

        class Full:
            def flush(self) -> None:
                raise OSError(28, "No space left on device")

        for stdout, stderr in [(None, None), (Full(), Full())]:
            self.patch(sys, "stdout", stdout)
            self.patch(sys, "stderr", stderr)
            execve = Exec()
            self.setUpCollector({}, execve)
            self.assertEqual(len(execve.calls), 1)

    def test_configFromPipe(self) -> None:
        """
        A file read at startup that is a pipe (C{--config /dev/stdin}, a
        shell's C{<(...)}), or gone, would be empty or missing for a
        re-executed rainbowd: it goes on as it is and warns with what to
        set; regular files, and files not given, are no obstacle.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        pipe, regular = os.path.join(directory, "pipe"), os.path.join(directory, "conf")
        os.mkfifo(pipe)
        with open(regular, "w") as f:
            f.write("{}")
        for files in [[regular, pipe], [os.path.join(directory, "gone")]]:
            execve = Exec()
            with capturedLogs() as events:
                self.setUpCollector({}, execve, startupFiles=files)
            self.assertEqual(execve.calls, [])
            [event] = events
            self.assertEqual(event["log_level"].name, "warn")
            self.assertIn(f"since it read {files[-1]} at startup", formatEvent(event))
            self.assertIn("set PYPY_GC_NURSERY=16M", formatEvent(event))
        execve = Exec()
        self.setUpCollector({}, execve, startupFiles=[regular, None])
        self.assertEqual(len(execve.calls), 1)

    def test_execFails(self) -> None:
        """
        If the re-execution fails, rainbowd goes on and warns with what to
        set.
        """
        environ: Dict[str, str] = {}
        with capturedLogs() as events:
            self.setUpCollector(environ, Exec(OSError(13, "Permission denied")))
        [event] = events
        self.assertEqual(event["log_level"].name, "warn")
        self.assertIn("Permission denied", formatEvent(event))
        self.assertIn("PYPY_GC_NURSERY=16M", formatEvent(event))
        self.assertEqual(environ, {})

    def test_cpython(self) -> None:
        """
        On CPython nothing happens, nothing is read and nothing is logged.
        """

        def never():
            raise AssertionError("read on CPython")

        execve = Exec()
        with capturedLogs() as events:
            self.setUpCollector({}, execve, isPyPy=False, nursery=never, argv=never)
        self.assertEqual((execve.calls, list(events)), ([], []))

    def test_cannotReadEnvironment(self) -> None:
        """
        Without the starting environment, rainbowd does not re-execute, and
        warns with what to set.
        """
        execve = Exec()
        with capturedLogs() as events:
            self.setUpCollector({}, execve, starting=lambda: None)
        self.assertEqual(execve.calls, [])
        [event] = events
        self.assertIn("set PYPY_GC_NURSERY=16M", formatEvent(event))


class CommandLineTests(SynchronousTestCase):
    def test_read(self) -> None:
        """
        The command line is C{/proc/self/cmdline}'s NUL-separated words.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\0".join(w.encode() for w in ARGV) + b"\0")
        self.assertEqual(commandLine(path), ARGV)

    def test_unreadable(self) -> None:
        """
        A command line or an environment that cannot be read is L{None}.
        """
        self.assertIsNone(commandLine(self.mktemp()))
        self.assertIsNone(startingEnvironment(self.mktemp()))

    def test_environment(self) -> None:
        """
        The starting environment is C{/proc/self/environ}'s NUL-separated
        entries, split at their first C{=}; an entry without one is left out.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"HOME=/home/app\0A=b=c\0EMPTY=\0junk\0")
        self.assertEqual(
            startingEnvironment(path), {"HOME": "/home/app", "A": "b=c", "EMPTY": ""}
        )
