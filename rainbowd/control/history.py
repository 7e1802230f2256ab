# -*- test-case-name: rainbowd.test.unit.test_history -*-
"""
The deploy history: the last L{KEPT} deploys, each once it has an outcome,
kept in C{stateDir}/L{FILENAME} across restarts, and served as
C{GET /deploys}.

The file holds one JSON object a line, oldest first.  Each deploy is
appended as one write of one line, and its number, as it begins, as
another (C{{"begun": N}}), so that a rainbowd killed mid-deploy does not
leave the next to number a deploy the same; a line cut short (rainbowd
killed, or the disk full, mid-write) is skipped when the file is read,
with a warning.  Once the file holds L{COMPACT_AT} lines it is rewritten with the
last L{KEPT}, through a temporary file that is synced, then renamed.

The history never holds a deploy up: a file that cannot be written is
logged once, with the fix, and the history is kept in memory meanwhile,
and written whole once the file can be written again.
"""

import errno
import json
import math
import os
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from rainbowd.app.deployer import Event
from rainbowd.control.resource import Endpoint, writeJSON
from rainbowd.events import OUTCOMES, EventKind
from rainbowd.statedir import UnsafeStateDir, openFile, writeAtomically

#: The history's file, in the state directory.
FILENAME = "deploys.jsonl"

#: How many deploys the history keeps.
KEPT = 1000

#: Added to the file's name to keep one that could not be read.
UNREADABLE = ".unreadable"

#: How many lines the file may hold before it is rewritten with the last
#: L{KEPT}: twice as many, so that it is rewritten once every L{KEPT} / 2
#: deploys (two lines each), and stays under a megabyte as a rule.
COMPACT_AT = 2 * KEPT

#: A longer line is not one rainbowd wrote, and is skipped, in bytes.
LONGEST_LINE = 64 * 1024

#: Only the last this many bytes of a bigger file are read: about twice
#: what L{COMPACT_AT} of the longest records rainbowd writes take (a
#: record is a few hundred bytes as a rule, some 17 KB at most).
LONGEST_FILE = 64 * 1024 * 1024

#: How many of the lines skipped in a file the warning names.
SHOWN = 10

#: How much of a deploy's error the history keeps, in characters.
LONGEST_ERROR = 2000

#: C{GET /deploys} without C{?limit=}: this many, newest first.
DEFAULT_LIMIT = 20


@attrs.frozen
class DeployRecord:
    """
    One deploy, once it has an outcome.

    @ivar deploy: its number, unique across restarts of rainbowd.
    @ivar cause: C{startup}, C{redeploy}, C{restart}, C{rollback} or
        C{automaticRollback}.
    @ivar requester: who asked: the control client's address (C{host:port},
        or C{unix:PATH} for the control socket), C{SIGHUP}, or L{None} for
        rainbowd itself.
    @ivar message: what the requester said of it (C{-m}), or L{None}.
    @ivar started: when it began, in seconds since the epoch.
    @ivar seconds: how long it took.
    @ivar outcome: one of L{OUTCOMES}.
    @ivar error: why it failed or was refused, or L{None}.
    @ivar generation: the generation it deployed, or tried to; or L{None}.
    @ivar port: that generation's port, or L{None}.
    @ivar directory: that generation's directory (a release directory
        with its links resolved), or L{None}.
    """

    deploy: int
    cause: str
    requester: Optional[str]
    message: Optional[str]
    started: float
    seconds: float
    outcome: str
    error: Optional[str]
    generation: Optional[int]
    port: Optional[int]
    directory: Optional[str]

    def asJSON(self) -> Dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def fromJSON(cls, value: Any) -> "DeployRecord":
        """
        The record a line of the file holds.

        @raise ValueError: if C{value} is not one.
        """
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        fields = attrs.fields(cls)
        missing = [f.name for f in fields if f.name not in value]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        record = cls(**{f.name: value[f.name] for f in fields})
        if not (
            _isInt(record.deploy)
            and 1 <= record.deploy <= LARGEST_DEPLOY
            and record.outcome in OUTCOMES
            and isinstance(record.cause, str)
            and all(_isNumber(n) for n in (record.started, record.seconds))
            and all(
                n is None or isinstance(n, str)
                for n in (
                    record.requester,
                    record.message,
                    record.error,
                    record.directory,
                )
            )
            and all(n is None or _isInt(n) for n in (record.generation, record.port))
        ):
            raise ValueError("not a deploy record")
        return record


#: The largest deploy number read: the largest integer JSON readers such
#: as JavaScript's keep exactly.
LARGEST_DEPLOY = 2**53


def _isInt(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _isNumber(value: Any) -> bool:
    if _isInt(value):
        return abs(value) <= LARGEST_DEPLOY
    return isinstance(value, float) and math.isfinite(value)


def _begunLine(deploy: int) -> bytes:
    return b'{"begun":%d}\n' % (deploy,)


def _begunNumber(value: Any) -> Optional[int]:
    """
    The number of a line written by L{HistoryFile.begin}, or L{None} if
    C{value} is not one.
    """
    if not (isinstance(value, dict) and list(value) == ["begun"]):
        return None
    number = value["begun"]
    if _isInt(number) and 1 <= number <= LARGEST_DEPLOY:
        return number
    return None


def _line(record: DeployRecord) -> bytes:
    # ASCII, with \u escapes: a name from the filesystem or the kernel
    # that is not UTF-8 holds lone surrogates, which UTF-8 cannot encode.
    return (json.dumps(record.asJSON(), separators=(",", ":")) + "\n").encode("ascii")


def _lastLines(f: Any, start: int, size: int, wanted: int) -> Tuple[int, int]:
    """
    Where the last C{wanted} lines of file C{f} between offsets C{start}
    and C{size} begin, and how many lines come before them there: counted
    a block at a time from the end, so that a file of very many short
    lines takes no longer to skip than a few.
    """
    if size <= start:
        return start, 0
    f.seek(size - 1)
    # The newlines to find from the end: one after each of those lines,
    # but the last may have none.
    needed = wanted + (1 if f.read(1) == b"\n" else 0)
    begin: Optional[int] = None
    before = 0
    position = size
    while position > start:
        low = max(start, position - _BLOCK)
        f.seek(low)
        block = f.read(position - low)
        position = low
        if begin is not None:
            before += block.count(b"\n")
            continue
        count = block.count(b"\n")
        if count < needed:
            needed -= count
            continue
        index = len(block)
        for _ in range(needed):
            index = block.rindex(b"\n", 0, index)
        begin = low + index + 1
        before += block.count(b"\n", 0, index + 1)
    return (start, 0) if begin is None else (begin, before)


#: How much of the file L{_lastLines} reads at a time, in bytes.
_BLOCK = 1024 * 1024


class HistoryFile:
    """
    The history's file: read once, appended to a line at a time, rewritten
    whole.

    @param write: L{os.write}, or a test's fake (a full disk, say).
    @param rewrite: replaces the file with the bytes given, durably; a
        test's fake may fail.
    """

    def __init__(
        self,
        path: str,
        write: Callable[[int, bytes], int] = os.write,
        rewrite: Callable[[str, bytes], None] = lambda path, data: writeAtomically(
            path, data, sync=True
        ),
    ) -> None:
        self.path = path
        self._write = write
        self._rewrite = rewrite

    def read(self) -> Tuple[List[DeployRecord], List[int], int, int, int]:
        """
        The last L{KEPT} records in the file, oldest first.

        @return: the records, the numbers of the first L{SHOWN} lines
            skipped (cut short, or not a record), how many were skipped,
            how many lines the file holds, and the highest deploy number
            a line says was begun (see L{begin}), or 0; an absent file is
            an empty one.
        @raise UnsafeStateDir: if the file is not one rainbowd made.
        @raise OSError: if it cannot be read.
        """
        try:
            fd = openFile(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return [], [], 0, 0, 0
        records: Deque[DeployRecord] = deque(maxlen=KEPT)
        skipped: List[int] = []
        skippedCount = 0
        begun = 0
        number = 0
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # Of a file bigger than rainbowd writes, only the end: its
            # newest lines are there, and the first of those read may be
            # cut.  Of more lines than rainbowd writes, only the last.
            begin, number = _lastLines(
                f, max(0, size - LONGEST_FILE), size, COMPACT_AT
            )
            f.seek(begin)
            while True:
                line = f.readline(LONGEST_LINE + 1)
                if not line:
                    break
                number += 1
                whole, rest = True, line
                while rest and not rest.endswith(b"\n"):
                    # A line cut short at the end, or the rest of one too
                    # long to be a record.
                    whole = False
                    rest = f.readline(LONGEST_LINE)
                try:
                    if not whole:
                        raise ValueError("cut short, or too long")
                    value = json.loads(line)
                    started = _begunNumber(value)
                    if started is not None:
                        begun = max(begun, started)
                    else:
                        records.append(DeployRecord.fromJSON(value))
                except (ValueError, TypeError):
                    skippedCount += 1
                    if len(skipped) < SHOWN:
                        skipped.append(number)
        return list(records), skipped, skippedCount, number, begun

    def begin(self, deploy: int) -> None:
        """
        Keep the number of a deploy that begins, as a line of its own
        (C{{"begun": N}}), so that a rainbowd killed before the deploy has
        an outcome does not leave the next one to give that number again.

        @raise UnsafeStateDir: if the file is not one rainbowd made.
        @raise OSError: if it cannot be written whole.
        """
        self._appendLine(_begunLine(deploy))

    def append(self, record: DeployRecord) -> None:
        """
        Add C{record} as one line, in one write.

        The file is opened for each record (deploys are rare), so that a
        file removed, or replaced by a link, since the last is not written
        through, nor is the record lost to a file no longer there.

        @raise UnsafeStateDir: if the file is not one rainbowd made;
            nothing is written then.
        @raise OSError: if it cannot be written whole (what was written may
            then be a line cut short).
        """
        self._appendLine(_line(record))

    def _appendLine(self, data: bytes) -> None:
        fd = openFile(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            written = self._write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(
                errno.ENOSPC, f"only {written} of {len(data)} bytes were written"
            )

    def replace(
        self,
        records: List[DeployRecord],
        setAside: bool = False,
        begun: Optional[int] = None,
    ) -> None:
        """
        Make the file hold C{records} and nothing else: a new file, synced,
        renamed over the old one.  This may run in another thread.

        @param setAside: first move the old file (one that could not be
            read) to C{path}L{UNREADABLE}, rather than lose it.
        @param begun: the number of a deploy under way, kept as L{begin}
            does, or L{None}.
        @raise OSError: if it cannot be written; the old file is then left.
        """
        if setAside:
            try:
                os.replace(self.path, self.path + UNREADABLE)
            except FileNotFoundError:
                pass
        data = b"".join(_line(record) for record in records)
        if begun is not None:
            data += _begunLine(begun)
        self._rewrite(self.path, data)


class DeployHistory(Service):
    """
    The last L{KEPT} deploys, as the deployer's events tell them, kept in a
    L{HistoryFile}.

    Call L{load} first (it only reads), then give the deployer, which
    numbers its deploys after L{lastDeploy}, to L{follow}; the history
    records once it is started, in the state directory it may then write.

    A deploy is appended in the reactor's thread (one write, to the page
    cache); a rewrite, which syncs the file to the disk, runs with
    C{inThread}, so that a slow disk holds up no request meanwhile.

    @ivar lastDeploy: the highest deploy number recorded, 0 for none.
    """

    log = Logger()

    def __init__(
        self,
        file: HistoryFile,
        inThread: Callable[..., Deferred] = maybeDeferred,
    ) -> None:
        """
        @param inThread: calls a function with arguments in another thread
            and returns a Deferred of its result, such as
            L{twisted.internet.threads.deferToThreadPool} on the reactor's
            pool; by default, calls it at once.
        """
        self.file = file
        self._inThread = inThread
        self._rewriting: Optional[Deferred] = None
        self.lastDeploy = 0
        self._records: Deque[DeployRecord] = deque(maxlen=KEPT)
        self._lines = 0
        self._rewriteNext = False
        self._setAside = False
        self._failing: Optional[str] = None
        self._failingFix = ""
        self._triedAtStop = False
        self._deployer: Any = None
        self._stopObserving: Optional[Callable[[], None]] = None
        self._deploying: Dict[int, Event] = {}
        self._stopping: Optional[Deferred] = None
        self._directories: Dict[Optional[int], Optional[str]] = {}

    def load(self) -> None:
        """
        Read the deploys of earlier rainbowds.  Lines that are not records
        are skipped with a warning, and the file is rewritten without them
        at the next deploy; a file that cannot be read is logged, the
        history starts empty, and the file is moved aside, to
        C{path}L{UNREADABLE}, at the next deploy.
        """
        try:
            records, skipped, skippedCount, self._lines, begun = self.file.read()
        except (UnsafeStateDir, OSError) as e:
            self.log.error(
                "cannot read the deploy history {path}: {error}; the history "
                "starts empty (deploy numbers start again at 1), and that "
                "file is moved to {aside} at the next deploy",
                path=self.file.path,
                error=_describe(e),
                aside=self.file.path + UNREADABLE,
            )
            self._rewriteNext = self._setAside = True
            return
        self._records.extend(records)
        self.lastDeploy = max([begun] + [r.deploy for r in records])
        if skipped:
            shown = ", ".join(str(n) for n in skipped)
            self.log.warn(
                "the deploy history {path} has {count} line(s) that are not "
                "whole records (line {lines}{more}), from a rainbowd stopped "
                "mid-write or a full disk; they are skipped, and the file "
                "is rewritten without them at the next deploy",
                path=self.file.path,
                count=skippedCount,
                lines=shown,
                more=", ..." if skippedCount > len(skipped) else "",
            )
            self._rewriteNext = True

    def follow(self, deployer: Any) -> None:
        """
        Record the deploys of C{deployer} once started.
        """
        self._deployer = deployer

    def records(self, limit: int = KEPT) -> List[DeployRecord]:
        """
        The last C{limit} deploys, newest first.
        """
        newest: List[DeployRecord] = []
        for record in reversed(self._records):
            if len(newest) >= limit:
                break
            newest.append(record)
        return newest

    def __len__(self) -> int:
        return len(self._records)

    # IService

    def startService(self) -> None:
        Service.startService(self)
        if self._deployer is not None:
            self._stopObserving = self._deployer.observe(self._observe)

    def stopService(self) -> Deferred:
        """
        Stop once every deploy is written: one still under way (the
        deployer, stopping too, gives it an outcome) and those a rewrite
        under way leaves to the next.

        @return: a Deferred that fires then.
        """
        Service.stopService(self)
        stopping = self._stopping = Deferred()
        self._stopIfDone()
        return stopping

    def _stopIfDone(self) -> None:
        if self._stopping is None or self._deploying or self._rewriting is not None:
            return
        if self._rewriteNext and not self._triedAtStop:
            # One more try at what could not be written.
            self._triedAtStop = True
            self._rewrite()
            return
        if self._rewriteNext and self._failing is not None:
            self.log.error(
                "the deploy history {path} lacks deploys kept only in memory "
                "since it could not be written ({error}); they are lost with "
                "this rainbowd, and the next may number deploys again from "
                "the file's last: {fix}",
                path=self.file.path,
                error=self._failing,
                fix=self._failingFix,
            )
        if self._stopObserving is not None:
            self._stopObserving()
            self._stopObserving = None
        stopping, self._stopping = self._stopping, None
        stopping.callback(None)

    # The deployer's events

    def _observe(self, event: Event) -> None:
        details = event.details
        if event.kind == EventKind.deploying:
            self._deploying[details.get("deploy", 0)] = event
            self._begin(details.get("deploy", 0))
        elif event.kind == EventKind.launching:
            self._directories[event.generation] = self._directoryOf(event.generation)
        elif event.kind in OUTCOMES:
            self.add(self._recordOf(event))
            self._stopIfDone()

    def _directoryOf(self, generation: Optional[int]) -> Optional[str]:
        for backend in self._deployer.backends:
            if backend.generation == generation:
                return backend.config.cwd
        return None

    def _recordOf(self, event: Event) -> DeployRecord:
        details = event.details
        number = details.get("deploy", 0)
        began = self._deploying.pop(number, None)
        for earlier in [n for n in self._deploying if n < number]:
            del self._deploying[earlier]  # no outcome came, nor will
        started = event.time if began is None else began.time
        asked = {} if began is None else began.details
        # The deployer gives an outcome's generation as the event's.
        generation = (
            details.get("generation") if event.generation is None else event.generation
        )
        directory = self._directories.get(generation)
        if directory is None and generation is not None:
            directory = self._directoryOf(generation)
        self._directories.clear()
        error = details.get("error")
        return DeployRecord(
            deploy=number,
            cause=asked.get("cause", "unknown"),
            requester=asked.get("requester"),
            message=asked.get("message"),
            started=started,
            # Not below 0 if the clock was set back meanwhile.
            seconds=max(0.0, round(event.time - started, 3)),
            outcome=event.kind,
            error=None if error is None else str(error)[:LONGEST_ERROR],
            generation=generation,
            port=details.get("port"),
            directory=directory,
        )

    # Keeping it

    def add(self, record: DeployRecord) -> None:
        """
        Keep C{record}, and write it to the file: appended, or the file
        rewritten whole when it has grown to L{COMPACT_AT} lines, or when
        it could not be written before.  A failure to write is logged (once
        until a write succeeds again) and otherwise ignored.
        """
        self._records.append(record)
        self.lastDeploy = max(self.lastDeploy, record.deploy)
        if self._rewriting is not None:
            self._rewriteNext = True  # once this one is done, with it
            return
        if self._rewriteNext or self._lines + 1 > COMPACT_AT:
            self._rewrite()
            return
        try:
            self.file.append(record)
        except UnsafeStateDir:
            # Something else is where the file was: the rewrite replaces it.
            self._rewrite()
            return
        except OSError as e:
            # What was written may be a line cut short: rewrite next time.
            self._rewriteNext = True
            self._failed(e)
            return
        self._lines += 1
        self._written()

    def _begin(self, deploy: int) -> None:
        """
        Keep the number of C{deploy}, which begins, in the file: appended,
        or in the rewrite under way or due.
        """
        self.lastDeploy = max(self.lastDeploy, deploy)
        if self._rewriting is not None:
            self._rewriteNext = True  # once this one is done, with it
            return
        if self._rewriteNext:
            self._rewrite()
            return
        try:
            self.file.begin(deploy)
        except (UnsafeStateDir, OSError) as e:
            self._rewriteNext = True
            self._failed(e)
            return
        self._lines += 1

    def _rewrite(self) -> None:
        self._rewriteNext = False
        records = list(self._records)
        begun = max(self._deploying, default=None)
        d = self._rewriting = self._inThread(
            self.file.replace, records, self._setAside, begun
        )
        d.addCallbacks(
            self._rewritten, self._rewriteFailed, callbackArgs=(len(records),)
        )

    def _rewritten(self, result: object, count: int) -> None:
        self._rewriting = None
        self._setAside = False
        self._lines = count
        if self._rewriteNext:
            self._rewrite()
        else:
            self._written()
            self._stopIfDone()

    def _rewriteFailed(self, failure: Failure) -> None:
        self._rewriting = None
        self._rewriteNext = True
        if not failure.check(UnsafeStateDir, OSError):
            self.log.failure("rewriting the deploy history failed", failure)
        else:
            self._failed(failure.value)
        self._stopIfDone()

    def _written(self) -> None:
        if self._failing is not None:
            self._failing = None
            self.log.info(
                "the deploy history {path} is written again, with every "
                "deploy kept meanwhile",
                path=self.file.path,
            )

    def _failed(self, error: Exception) -> None:
        described = _describe(error)
        if self._failing is not None:
            return
        self._failing = described
        path = self.file.path
        directory = os.path.dirname(path)
        code = getattr(error, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT):
            fix = f"free some space on its filesystem (df -h {directory})"
        elif code in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            fix = f"{path} is a directory: move it away (mv {path} {path}.old)"
        elif code == errno.ENOENT and not os.path.isdir(directory):
            fix = (
                f"the state directory {directory} is gone (removed with a "
                f'release it was in?): set "stateDir" outside the releases, '
                f"and restart rainbowd"
            )
        else:
            fix = f"check {directory} is writable by rainbowd's user"
        self._failingFix = fix
        self.log.error(
            "cannot write the deploy history {path}: {error}; deploys go on, "
            "and the history is kept in memory (GET /deploys) until the file "
            "can be written again, at a later deploy: {fix}",
            path=path,
            error=described,
            fix=fix,
        )


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).rstrip(".")


class _BadLimit(Exception):
    pass


def _limit(request: IRequest) -> int:
    values = request.args.get(b"limit")
    if not values:
        return DEFAULT_LIMIT
    text = values[-1].decode("utf-8", "replace")
    if text.isascii() and text.isdigit() and 1 <= int(text) <= KEPT:
        return int(text)
    raise _BadLimit(
        f"limit must be a whole number from 1 to {KEPT}, not {text[:40]!r}"
    )


class DeploysResource(Endpoint):
    """
    C{GET /deploys?limit=N}: the last C{N} deploys (L{DEFAULT_LIMIT} by
    default, L{KEPT} at most), newest first.
    """

    def __init__(self, history: DeployHistory) -> None:
        super().__init__("/deploys", {b"GET": self._get, b"HEAD": self._get})
        self._history = history

    def _get(self, request: IRequest) -> bytes:
        try:
            limit = _limit(request)
        except _BadLimit as e:
            return writeJSON(request, 400, {"error": str(e)})
        records = self._history.records(limit)
        return writeJSON(
            request,
            200,
            {
                "deploys": [record.asJSON() for record in records],
                "kept": len(self._history),
            },
        )
