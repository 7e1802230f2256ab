# -*- test-case-name: rainbowd.test.unit.test_backendlogs -*-
"""
The app's output, one file per generation, in C{stateDir/logs}.

Every line a backend prints is already a log event (see
L{rainbowd.app.backend.Backend}); L{BackendLogs} also writes those lines, as
the backend hands them to its output observers, to a file of the
generation's own::

    stateDir/logs/20261127T021231Z-4242-generation-3.log

named by when this rainbowd started (UTC) and its pid, since generation
numbers start again at 1 with every start of rainbowd.  Only the newest
C{backendLogs} files (by start time, then generation) are kept; older ones
are deleted as new ones are made.  With C{backendLogs} 0 no file is made and
none deleted.
"""

import os
import re
import time
from functools import partial
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from twisted.application.service import Service
from twisted.logger import Logger

from rainbowd.app.deployer import Event
from rainbowd.events import EventKind
from rainbowd.statedir import UnsafeStateDir, makeSubdirectory, openFile

_log = Logger()

_NAME = re.compile(r"\A(\d{8}T\d{6}Z)-(\d+)-generation-(\d+)\.log\Z")


def runId(now: float, pid: int) -> str:
    """
    This start of rainbowd, as the files' names begin: its UTC start time and
    its pid.
    """
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{pid}"


def _order(name: str) -> Optional[Tuple[str, int, int]]:
    match = _NAME.match(name)
    if match is None:
        return None
    return (match.group(1), int(match.group(2)), int(match.group(3)))


class BackendLogs(Service):
    """
    Write each generation's output to a file of its own, keeping the newest
    C{backendLogs} (of the config the generation was launched with).

    @param deployer: whose events say when a generation starts and stops,
        and whose C{backends} have their config and their output.
    @param stateDir: the files go in its C{logs} directory.
    """

    def __init__(self, deployer: Any, stateDir: str, run: Optional[str] = None) -> None:
        self._deployer = deployer
        self.directory = os.path.join(stateDir, "logs")
        self._run = run if run is not None else runId(time.time(), os.getpid())
        self._files: Dict[int, IO[str]] = {}
        self._stopObserving: Optional[Callable[[], None]] = None

    def startService(self) -> None:
        Service.startService(self)
        self._stopObserving = self._deployer.observe(self._event)
        # Generations taken over in an upgrade run already: their output
        # goes on in files of this run.
        for backend in list(self._deployer.backends):
            self._open(backend.generation)

    def stopService(self) -> None:
        # The backends are stopped by now or soon; their last lines still
        # go to their files until each one's "stopped" event closes them.
        Service.stopService(self)

    def fileName(self, generation: int) -> str:
        return os.path.join(self.directory, f"{self._run}-generation-{generation}.log")

    def _write(self, generation: int, line: str) -> None:
        file = self._files.get(generation)
        if file is not None:
            try:
                file.write(line + "\n")
            except OSError:
                # The line is in rainbowd's log anyway.
                pass

    def _event(self, event: Event) -> None:
        if event.generation is None:
            return  # neither launching nor stopped, which name theirs
        if event.kind == EventKind.launching:
            self._open(event.generation)
        elif event.kind == EventKind.stopped:
            file = self._files.pop(event.generation, None)
            if file is not None:
                file.close()
            if not self._files and not self.running and self._stopObserving:
                self._stopObserving()
                self._stopObserving = None

    def _open(self, generation: int) -> None:
        [backend] = [b for b in self._deployer.backends if b.generation == generation]
        keep = backend.config.backendLogs
        if keep <= 0:
            return
        try:
            makeSubdirectory(self.directory)
            self._prune(keep - 1)
            fd = openFile(
                self.fileName(generation), os.O_WRONLY | os.O_APPEND | os.O_CREAT
            )
            self._files[generation] = os.fdopen(
                fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace"
            )
        except (OSError, UnsafeStateDir) as e:
            _log.error(
                "cannot write generation {generation}'s output to {directory}: "
                "{error}; it is only logged",
                generation=generation,
                directory=self.directory,
                error=getattr(e, "strerror", None) or str(e),
            )
            return
        backend.observeOutput(partial(self._write, generation))

    def _prune(self, keep: int) -> None:
        """
        Delete the oldest files but the newest C{keep}, never one still
        being written.
        """
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        open_ = {os.path.basename(self.fileName(g)) for g in self._files}
        found: List[Tuple[Tuple[str, int, int], str]] = []
        for name in names:
            order = _order(name)
            if order is not None:
                found.append((order, name))
        found.sort()
        for order, name in found[: max(0, len(found) - keep)]:
            if name not in open_:
                path = os.path.join(self.directory, name)
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    # A directory under that name, say: the new file is
                    # written all the same.
                    _log.warn(
                        "cannot remove the old output file {path}: {error}; "
                        "remove it (rm -r {path})",
                        path=path,
                        error=e.strerror or e,
                    )
