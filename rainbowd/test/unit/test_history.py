# -*- test-case-name: rainbowd.test.unit.test_history -*-
"""
Tests for L{rainbowd.control.history}.
"""

import errno
import json
import os
import shutil
from typing import Any, Dict, List

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import Resource

from rainbowd.app.deployer import Deployer, Event
from rainbowd.app.ports import PortPicker
from rainbowd.control import history as history_module
from rainbowd.control.history import (
    COMPACT_AT,
    DEFAULT_LIMIT,
    FILENAME,
    KEPT,
    LONGEST_LINE,
    DeployHistory,
    DeployRecord,
    DeploysResource,
    HistoryFile,
)
from rainbowd.test.stubtreq import stubTreq
from rainbowd.test.unit.test_deployer import Harness


def record(deploy: int, **changes) -> DeployRecord:
    """
    A deploy record, numbered C{deploy}.
    """
    values: Dict[str, Any] = dict(
        deploy=deploy,
        cause="redeploy",
        requester="127.0.0.1:5000",
        message=f"sha{deploy}",
        started=1000.0 + deploy,
        seconds=1.5,
        outcome="deployed",
        error=None,
        generation=deploy,
        port=20000 + deploy,
        directory="/srv/app/releases/1",
    )
    values.update(changes)
    return DeployRecord(**values)


def line(r: DeployRecord) -> bytes:
    return json.dumps(r.asJSON()).encode() + b"\n"


class FullDisk:
    """
    An L{os.write} that fails with C{ENOSPC}, or writes only C{short}
    bytes, until C{full} is set to C{False}.
    """

    def __init__(self, short=None) -> None:
        self.full = True
        self.short = short
        self.calls = 0

    def __call__(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if not self.full:
            return os.write(fd, data)
        if self.short is not None:
            return os.write(fd, data[: self.short])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class HistoryTests(SynchronousTestCase):
    """
    The history is kept in a file, and read again by a later rainbowd.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory, mode=0o700)
        self.path = os.path.join(self.directory, FILENAME)

    def history(self, **kwargs) -> DeployHistory:
        history = DeployHistory(HistoryFile(self.path, **kwargs))
        history.load()
        return history

    def lines(self):
        with open(self.path, "rb") as f:
            return f.read().splitlines(keepends=True)

    def test_persistsAcrossRestart(self) -> None:
        """
        The deploys a history recorded are read back, oldest first, by a
        new history on the same file, which knows the last deploy number.
        """
        first = self.history()
        first.add(record(1))
        first.add(record(2, outcome="failed", error="boom"))
        second = self.history()
        self.assertEqual(second.records(), [record(2, outcome="failed", error="boom"), record(1)])
        self.assertEqual(second.lastDeploy, 2)
        second.add(record(3))
        self.assertEqual([r.deploy for r in self.history().records()], [3, 2, 1])

    def test_undecodableNames(self) -> None:
        """
        A deploy whose strings hold bytes that are not UTF-8, as names from
        the filesystem and the kernel do (a release directory, a unix
        socket client's address), is written and read back as it was, and
        spoils no later write.
        """
        odd = record(
            1,
            requester="unix:/tmp/\udcff (uid 1000, pid 7)",
            directory="/srv/app/releases/\udcfe",
            error="generation 1 could not be started: /srv/\udcfe",
        )
        history = self.history()
        history.add(odd)
        history.add(record(2))
        self.assertEqual(self.history().records(), [record(2), odd])

    def test_oneLineEach(self) -> None:
        """
        Each deploy is one JSON line, appended as soon as it is added.
        """
        history = self.history()
        history.add(record(1))
        history.add(record(2))
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2]
        )

    def test_fileMode(self) -> None:
        """
        The file is created with mode 0600.
        """
        self.history().add(record(1))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_tornLastLine(self) -> None:
        """
        A last line cut short is skipped with a warning naming it, and the
        next deploy rewrites the file whole, without it.
        """
        with open(self.path, "wb") as f:
            f.write(line(record(1)) + line(record(2)) + line(record(3))[:20])
        with capturedLogs() as events:
            history = self.history()
        self.assertEqual([r.deploy for r in history.records()], [2, 1])
        [warning] = [formatEvent(e) for e in events]
        self.assertIn("1 line(s) that are not whole records (line 3)", warning)
        self.assertIn(self.path, warning)
        history.add(record(3))
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2, 3]
        )

    def test_garbageSkipped(self) -> None:
        """
        Lines that are not records -- not JSON, not an object, missing a
        field, too long -- are skipped, and the others read.
        """
        with open(self.path, "wb") as f:
            f.write(b"{nope\n[1]\n{\"deploy\": 9}\n")
            f.write(b"x" * (LONGEST_LINE * 2) + b"\n")
            f.write(line(record(4)))
            f.write(line(record(5, outcome="exploded")))
        with capturedLogs() as events:
            history = self.history()
        self.assertEqual(history.records(), [record(4)])
        self.assertIn("(line 1, 2, 3, 4, 6)", formatEvent(events[0]))

    def test_wrongShapeSkipped(self) -> None:
        """
        A line that is a JSON object with every field, but a field of the
        wrong type, a number that is not finite, or a deploy number that is
        not a whole number from 1 to 2**53, is skipped rather than served.
        """
        wrong: List[Dict[str, object]] = [
            {"requester": ["127.0.0.1"]},
            {"message": 5},
            {"error": {"no": "pe"}},
            {"directory": 7},
            {"generation": "3"},
            {"port": 1.5},
            {"port": True},
            {"started": float("nan")},
            {"seconds": float("inf")},
            {"started": 10**400},
            {"deploy": "9"},
            {"deploy": 0},
            {"deploy": 2**53 + 1},
        ]
        with open(self.path, "wb") as f:
            for changes in wrong:
                values = {**record(1).asJSON(), **changes}
                f.write(json.dumps(values).encode() + b"\n")
            nothing = dict.fromkeys(
                ["requester", "message", "generation", "port", "directory"]
            )
            f.write(line(record(2, **nothing)))
        with capturedLogs() as events:
            history = self.history()
        self.assertEqual([r.deploy for r in history.records()], [2])
        self.assertEqual(history.lastDeploy, 2)
        self.assertIn(f"{len(wrong)} line(s)", formatEvent(events[0]))

    def test_hugeFile(self) -> None:
        """
        Of a file too big to be one rainbowd wrote, only the end is read:
        its newest records.
        """
        self.patch(history_module, "LONGEST_FILE", 1000)
        with open(self.path, "wb") as f:
            f.write(b"".join(line(record(n)) for n in range(1, 101)))
        history = self.history()
        self.assertEqual(history.lastDeploy, 100)
        self.assertLess(len(history), 10)
        self.assertEqual(history.records(1), [record(100)])

    def test_manyLinesRead(self) -> None:
        """
        Of a file of more lines than rainbowd writes, only the last
        L{COMPACT_AT} are read (so that a file of millions of empty lines
        does not hold rainbowd's start up), the last L{KEPT} records kept,
        and the first few lines skipped named; the file is rewritten at
        the next deploy.
        """
        empty = 100000
        with open(self.path, "wb") as f:
            f.write(b"\n" * empty)
            f.write(b"".join(line(record(n)) for n in range(1, KEPT + 6)))
        records, skipped, skippedCount, lines, begun = HistoryFile(self.path).read()
        self.assertEqual(records, [record(n) for n in range(6, KEPT + 6)])
        first = empty + KEPT + 5 - COMPACT_AT + 1
        self.assertEqual(skipped, list(range(first, first + 10)))
        self.assertEqual(
            (skippedCount, lines), (COMPACT_AT - KEPT - 5, empty + KEPT + 5)
        )
        with capturedLogs():
            history = self.history()
        self.assertEqual(history.lastDeploy, KEPT + 5)
        history.add(record(KEPT + 6))
        self.assertEqual(len(self.lines()), KEPT)

    def test_lastLines(self) -> None:
        """
        L{history_module._lastLines} finds where the last lines begin, and
        counts those before, with or without a last newline, across blocks
        and within one.
        """
        self.patch(history_module, "_BLOCK", 7)
        path = self.mktemp()
        for data in (b"a\nbb\nccc\ndddd\n", b"a\nbb\nccc\ndddd", b"\n" * 30):
            with open(path, "wb") as f:
                f.write(data)
            lines = data.split(b"\n")
            if data.endswith(b"\n"):
                lines.pop()
            for wanted in range(1, len(lines) + 2):
                with open(path, "rb") as f:
                    begin, before = history_module._lastLines(f, 0, len(data), wanted)
                kept = lines[max(0, len(lines) - wanted) :]
                self.assertEqual(
                    (data[begin:].split(b"\n")[: len(kept)], before),
                    (kept, len(lines) - len(kept)),
                    (data, wanted),
                )

    def test_compaction(self) -> None:
        """
        Once the file would hold more than L{COMPACT_AT} lines, it is
        rewritten with the last L{KEPT} deploys, and then appended to again.
        """
        with open(self.path, "wb") as f:
            f.write(b"".join(line(record(n)) for n in range(1, COMPACT_AT + 1)))
        history = self.history()
        self.assertEqual(len(history), KEPT)
        history.add(record(COMPACT_AT + 1))
        numbers = [json.loads(text)["deploy"] for text in self.lines()]
        self.assertEqual(numbers, list(range(COMPACT_AT + 2 - KEPT, COMPACT_AT + 2)))
        history.add(record(COMPACT_AT + 2))
        self.assertEqual(len(self.lines()), KEPT + 1)
        self.assertFalse(os.path.exists(self.path + ".tmp"))

    def test_staysBounded(self) -> None:
        """
        However many deploys there are, the file never holds more than
        L{COMPACT_AT} lines, nor the history more than L{KEPT} deploys.
        """
        history = self.history()
        for n in range(1, COMPACT_AT + KEPT + 2):
            history.add(record(n))
            if n % 500 == 0:
                self.assertLessEqual(len(self.lines()), COMPACT_AT)
        self.assertLessEqual(len(self.lines()), COMPACT_AT)
        self.assertEqual(len(history), KEPT)
        self.assertEqual(history.records(1)[0].deploy, COMPACT_AT + KEPT + 1)

    def test_fullDisk(self) -> None:
        """
        A write that fails for a full disk loses no deploy and raises
        nothing: it is logged once, with the fix, the history kept in
        memory, and the whole of it written once the disk has room.
        """
        disk = FullDisk()
        history = self.history(write=disk, rewrite=self.rewriteOn(disk))
        with capturedLogs() as events:
            history.add(record(1))
            history.add(record(2))
        self.assertEqual([r.deploy for r in history.records()], [2, 1])
        self.assertEqual(disk.calls, 2)
        [error] = [formatEvent(e) for e in events]
        self.assertIn(f"cannot write the deploy history {self.path}", error)
        self.assertIn("No space left on device", error)
        self.assertIn(f"df -h {self.directory}", error)
        disk.full = False
        with capturedLogs() as events:
            history.add(record(3))
        self.assertIn("written again", formatEvent(events[0]))
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2, 3]
        )
        history.add(record(4))
        self.assertEqual(len(self.lines()), 4)

    def test_writtenAtStop(self) -> None:
        """
        Deploys kept only in memory, the file not writable, get one more
        try at the stop, so that a disk with room again by then loses
        none of them.
        """
        disk = FullDisk()
        history = self.history(write=disk, rewrite=self.rewriteOn(disk))
        history.startService()
        with capturedLogs():
            history.add(record(1))
        disk.full = False
        with capturedLogs():
            self.successResultOf(history.stopService())
        self.assertEqual([json.loads(text)["deploy"] for text in self.lines()], [1])

    def test_lostAtStop(self) -> None:
        """
        Deploys kept only in memory that cannot be written at the stop
        either are said to be lost with this rainbowd, with the fix.
        """
        disk = FullDisk()
        history = self.history(write=disk, rewrite=self.rewriteOn(disk))
        history.startService()
        with capturedLogs():
            history.add(record(1))
        with capturedLogs() as events:
            self.successResultOf(history.stopService())
        [error] = [formatEvent(e) for e in events]
        self.assertIn(f"the deploy history {self.path} lacks deploys", error)
        self.assertIn("they are lost with this rainbowd", error)
        self.assertIn(f"df -h {self.directory}", error)

    def rewriteOn(self, disk: FullDisk):
        """
        A C{rewrite} for L{HistoryFile} that fails while C{disk} is full.
        """

        def rewrite(path: str, data: bytes) -> None:
            if disk.full:
                disk.calls += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            with open(path, "wb") as f:
                f.write(data)

        return rewrite

    def test_shortWrite(self) -> None:
        """
        A write cut short by a full disk leaves a torn line; the next write
        replaces the file, so no record is glued to it.
        """
        disk = FullDisk(short=10)
        history = self.history(write=disk)
        history.add(record(1))
        disk.full = False
        history.add(record(2))
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2]
        )

    def test_compactionFails(self) -> None:
        """
        A rewrite that fails leaves the old file as it was, and the
        deploys in memory.
        """
        disk = FullDisk()
        with open(self.path, "wb") as f:
            f.write(line(record(1)) + b"torn")
        self.history()
        history = self.history(write=disk, rewrite=self.rewriteOn(disk))
        history.add(record(2))
        self.assertEqual(self.lines(), [line(record(1)), b"torn"])
        self.assertEqual([r.deploy for r in history.records()], [2, 1])

    def test_rewriteInThread(self) -> None:
        """
        A rewrite runs with C{inThread}, off the reactor's thread; deploys
        added meanwhile are not appended (the file is being replaced) but
        written by another rewrite as soon as it is done.
        """
        calls = []

        def inThread(f, *args):
            d = Deferred()
            calls.append((f, args, d))
            return d

        with open(self.path, "wb") as f:
            f.write(line(record(1)) + b"torn")
        history = DeployHistory(HistoryFile(self.path), inThread)
        history.load()
        history.add(record(2))
        history.add(record(3))
        self.assertEqual(len(calls), 1)
        f, args, d = calls[0]
        self.assertEqual(args, ([record(1), record(2)], False, None))
        f(*args)
        d.callback(None)
        self.assertEqual(len(calls), 2)
        f, args, d = calls[1]
        self.assertEqual(args, ([record(1), record(2), record(3)], False, None))
        f(*args)
        d.callback(None)
        history.add(record(4))
        self.assertEqual(len(calls), 2)
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2, 3, 4]
        )

    def test_unreadableKept(self) -> None:
        """
        A history that cannot be read (here, another user's) is not
        overwritten: the next deploy moves it aside, whole, to
        C{deploys.jsonl.unreadable}, says so, and starts a new file.
        """
        if os.geteuid() != 0:
            raise SkipTest("changing a file's owner takes root")
        old = line(record(1)) + line(record(2))
        with open(self.path, "wb") as f:
            f.write(old)
        os.chown(self.path, 12345, 12345)
        with capturedLogs() as events:
            history = self.history()
        aside = self.path + ".unreadable"
        self.assertIn(f"moved to {aside} at the next deploy", formatEvent(events[0]))
        history.add(record(1))
        with open(aside, "rb") as f:
            self.assertEqual(f.read(), old)
        self.assertEqual(len(self.lines()), 1)
        history.add(record(2))
        with open(aside, "rb") as f:
            self.assertEqual(f.read(), old)
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2]
        )

    def test_removedWhileRunning(self) -> None:
        """
        A history file removed while rainbowd runs is made again at the
        next deploy, rather than that deploy written to the removed file.
        """
        history = self.history()
        history.add(record(1))
        os.unlink(self.path)
        history.add(record(2))
        self.assertEqual([json.loads(text)["deploy"] for text in self.lines()], [2])

    def test_linkPlantedWhileRunning(self) -> None:
        """
        A history file replaced by a symbolic link while rainbowd runs is
        not written through: the same deploy replaces the link with the
        whole history.
        """
        target = os.path.join(self.directory, "elsewhere")
        with open(target, "wb") as f:
            f.write(b"keep\n")
        history = self.history()
        history.add(record(1))
        link = self.path + ".link"
        os.symlink(target, link)
        os.replace(link, self.path)
        with capturedLogs():
            history.add(record(2))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"keep\n")
        self.assertFalse(os.path.islink(self.path))
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2]
        )

    def test_begunDuringRewrite(self) -> None:
        """
        A deploy that begins while the file is being rewritten has its
        number kept by the rewrite after; one that begins when the file is
        due a rewrite (a torn line) is kept by that rewrite, at once.
        """
        calls = []

        def inThread(f, *args):
            d = Deferred()
            calls.append((f, args, d))
            return d

        with open(self.path, "wb") as f:
            f.write(line(record(1)) + b"torn")
        history = DeployHistory(HistoryFile(self.path), inThread)
        with capturedLogs():
            history.load()
        history._observe(Event("deploying", 5.0, None, {"deploy": 2}))
        [(f, args, d)] = calls
        self.assertEqual(args, ([record(1)], False, 2))
        history._observe(Event("deploying", 6.0, None, {"deploy": 3}))
        f(*args)
        d.callback(None)
        f, args, d = calls[1]
        self.assertEqual(args, ([record(1)], False, 3))
        f(*args)
        d.callback(None)
        later = DeployHistory(HistoryFile(self.path))
        later.load()
        self.assertEqual((later.lastDeploy, later.records()), (3, [record(1)]))

    def test_hardLinkPlantedWhileRunning(self) -> None:
        """
        A history file replaced by a hard link to another file while
        rainbowd runs is not written through: the same deploy replaces the
        name, and the other file is left as it was.
        """
        target = os.path.join(self.directory, "passwd")
        with open(target, "wb") as f:
            f.write(b"root:x:0:0::/root:/bin/sh\n")
        history = self.history()
        history.add(record(1))
        os.unlink(self.path)
        os.link(target, self.path)
        with capturedLogs():
            history.add(record(2))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"root:x:0:0::/root:/bin/sh\n")
        self.assertEqual(
            [json.loads(text)["deploy"] for text in self.lines()], [1, 2]
        )

    def test_plantedLink(self) -> None:
        """
        A history file that is a symbolic link is not read through, nor
        written through: the rewrite replaces the link.
        """
        target = os.path.join(self.directory, "elsewhere")
        with open(target, "wb") as f:
            f.write(line(record(7)))
        os.symlink(target, self.path)
        with capturedLogs() as events:
            history = self.history()
        self.assertEqual(history.records(), [])
        self.assertIn("is a symbolic link", formatEvent(events[0]))
        history.add(record(1))
        self.assertFalse(os.path.islink(self.path))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), line(record(7)))
        self.assertEqual([r.deploy for r in self.history().records()], [1])


class ReplacedByDirectoryTests(SynchronousTestCase):
    """
    A history file that is a directory is reported with the fix that
    works.
    """

    def test_directory(self) -> None:
        """
        When the history's path is a directory, the error on writing says
        so and to move it away, rather than to check permissions.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, FILENAME)
        os.makedirs(os.path.join(path, "inside"))
        # Where it would be moved aside is taken too.
        os.makedirs(os.path.join(path + ".unreadable", "inside"))
        history = DeployHistory(HistoryFile(path))
        with capturedLogs():
            history.load()
        with capturedLogs() as events:
            history.add(record(1))
        [error] = [formatEvent(e) for e in events]
        self.assertIn(f"cannot write the deploy history {path}", error)
        self.assertIn(f"{path} is a directory: move it away (mv {path} ", error)
        self.assertNotIn("writable", error)
        self.assertTrue(os.path.isdir(os.path.join(path, "inside")))

    def test_stateDirGone(self) -> None:
        """
        When the state directory itself is gone (removed with a release
        it was in), the error on writing says so, and that the fix is a
        state directory outside the releases.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        history = DeployHistory(HistoryFile(os.path.join(directory, FILENAME)))
        history.load()
        history.add(record(1))
        shutil.rmtree(directory)
        with capturedLogs() as events:
            history.add(record(2))
        [error] = [formatEvent(e) for e in events]
        self.assertIn(f"the state directory {directory} is gone", error)
        self.assertIn('set "stateDir" outside the releases', error)
        self.assertNotIn("writable", error)

    def test_directoryMovedAside(self) -> None:
        """
        A history path that is a directory is moved aside, whole, at the
        next deploy, and a new file started.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, FILENAME)
        os.makedirs(os.path.join(path, "inside"))
        history = DeployHistory(HistoryFile(path))
        with capturedLogs():
            history.load()
        with capturedLogs() as events:
            history.add(record(1))
        self.assertEqual(list(events), [])
        self.assertTrue(os.path.isdir(os.path.join(path + ".unreadable", "inside")))
        self.assertTrue(os.path.isfile(path))


class ObservedDeploysTests(SynchronousTestCase):
    """
    The history records the deploys of a real L{Deployer} on fakes.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.path = os.path.join(self.h.configs[0].stateDir, FILENAME)
        self.history = self.follow(self.h.deployer)

    def follow(self, deployer) -> DeployHistory:
        history = DeployHistory(HistoryFile(self.path))
        history.load()
        history.follow(deployer)
        history.startService()
        self.addCleanup(history.stopService)
        return history

    def test_deployed(self) -> None:
        """
        A successful redeploy is recorded with its number, cause, requester,
        message, start, duration, generation, port and directory.
        """
        self.h.start()
        self.h.reactor.advance(10)
        self.h.deployer.redeploy(requester="127.0.0.1:5000", message="abc")
        self.h.reactor.advance(2.5)
        self.h.healthy(2)
        [redeploy, startup] = self.history.records()
        self.assertEqual(
            redeploy,
            DeployRecord(
                deploy=2,
                cause="redeploy",
                requester="127.0.0.1:5000",
                message="abc",
                started=10.0,
                seconds=2.5,
                outcome="deployed",
                error=None,
                generation=2,
                port=20001,
                directory=self.h.configs[0].cwd,
            ),
        )
        self.assertEqual(
            (startup.deploy, startup.cause, startup.requester, startup.generation),
            (1, "startup", None, 1),
        )

    def test_failed(self) -> None:
        """
        A failed deploy is recorded with its error, and the generation, port
        and directory it tried.
        """
        self.h.start()
        d = self.h.deployer.redeploy()
        self.h.process(2).exit(3)
        self.h.reactor.advance(0)
        self.failureResultOf(d)
        latest = self.history.records(1)[0]
        self.assertEqual(
            (latest.outcome, latest.generation, latest.port, latest.directory),
            ("failed", 2, 20001, self.h.configs[0].cwd),
        )
        self.assertIn("exited with code 3", latest.error)

    def test_refused(self) -> None:
        """
        A refused deploy is recorded with its reason and no generation.
        """
        self.h.start()
        self.h.newConfig(maxBackends=1)
        self.failureResultOf(self.h.deployer.redeploy())
        latest = self.history.records(1)[0]
        self.assertEqual((latest.outcome, latest.generation), ("refused", None))
        self.assertIn("maxBackends", latest.error)

    def test_killedMidDeploy(self) -> None:
        """
        A deploy under way when rainbowd is killed (no outcome, ever) has
        its number kept as it begins: a later rainbowd numbers after it,
        without warning of the line that keeps it.
        """
        self.h.start()
        self.h.deployer.redeploy()
        # rainbowd is killed: no stop, no outcome.
        later = DeployHistory(HistoryFile(self.path))
        with capturedLogs() as events:
            later.load()
        self.assertEqual(list(events), [])
        self.assertEqual(later.lastDeploy, 2)
        self.assertEqual([r.deploy for r in later.records()], [1])

    def test_clockBackwards(self) -> None:
        """
        A deploy during which the clock was set back is recorded as taking
        no time, not a negative one.
        """
        self.h.start()
        self.h.reactor.advance(100)
        self.h.deployer.redeploy()
        self.h.reactor.rightNow -= 60
        self.h.healthy(2)
        latest = self.history.records(1)[0]
        self.assertEqual((latest.deploy, latest.seconds), (2, 0.0))

    def test_restart(self) -> None:
        """
        The replacement of a crashed generation is recorded as a restart.
        """
        self.h.start()
        self.h.process(1).exit(1)
        self.h.reactor.advance(1)
        self.h.healthy(2)
        self.assertEqual(self.history.records(1)[0].cause, "restart")

    def test_numbersGoOnAfterRestart(self) -> None:
        """
        A deployer started after another, numbering its deploys after the
        history's last, gives no two deploys the same number.
        """
        self.h.start()
        self.h.deployer.redeploy()
        self.h.healthy(2)
        self.history.stopService()
        later = Harness(self)
        history = DeployHistory(HistoryFile(self.path))
        history.load()
        later.deployer = Deployer(
            later.configs[0],
            later._loadConfig,
            later._newBackend,
            later.reactor,
            PortPicker(isFree=lambda port: True, cursor=20000),
            deploys=history.lastDeploy,
        )
        history.follow(later.deployer)
        history.startService()
        self.addCleanup(history.stopService)
        later.start()
        self.assertEqual([r.deploy for r in history.records()], [3, 2, 1])
        self.assertEqual(history.records(1)[0].cause, "startup")


class DeploysResourceTests(SynchronousTestCase):
    """
    C{GET /deploys} serves the history, newest first.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.history = DeployHistory(HistoryFile(os.path.join(directory, FILENAME)))
        for n in range(1, 31):
            self.history.add(record(n))
        root = Resource()
        root.putChild(b"deploys", DeploysResource(self.history))
        self.treq = stubTreq(root)

    def get(self, query: str = ""):
        d = self.treq.get("http://127.0.0.1:7001/deploys" + query)
        self.treq.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(self.treq.content(response)))

    def test_default(self) -> None:
        """
        Without a limit, the last L{DEFAULT_LIMIT} deploys, newest first, and
        how many are kept.
        """
        code, body = self.get()
        self.assertEqual(code, 200)
        self.assertEqual(
            [d["deploy"] for d in body["deploys"]], list(range(30, 30 - DEFAULT_LIMIT, -1))
        )
        self.assertEqual(body["kept"], 30)
        self.assertEqual(body["deploys"][0], record(30).asJSON())

    def test_limit(self) -> None:
        """
        C{?limit=N} gives the last N.
        """
        code, body = self.get("?limit=2")
        self.assertEqual((code, [d["deploy"] for d in body["deploys"]]), (200, [30, 29]))
        code, body = self.get(f"?limit={KEPT}")
        self.assertEqual(len(body["deploys"]), 30)

    def test_badLimit(self) -> None:
        """
        A limit that is not a whole number from 1 to L{KEPT} gets a 400 that
        says so.
        """
        for bad in ("0", "-1", "abc", "1.5", str(KEPT + 1), ""):
            code, body = self.get("?limit=" + bad)
            self.assertEqual(code, 400, bad)
            self.assertEqual(
                body["error"], f"limit must be a whole number from 1 to {KEPT}, not {bad!r}"
            )

    def test_post(self) -> None:
        """
        Anything but GET or HEAD is a 405.
        """
        d = self.treq.post("http://127.0.0.1:7001/deploys", data=b"")
        self.treq.flush()
        self.assertEqual(self.successResultOf(d).code, 405)


class StopTests(SynchronousTestCase):
    """
    Stopping the history loses no deploy: not one still under way, nor
    one added while the file is being rewritten.
    """

    def test_deployUnderWayAtStop(self) -> None:
        """
        A deploy still under way when rainbowd stops is recorded once it
        has its outcome, and the history's stop waits for that, so that a
        later rainbowd does not give its number to another deploy.
        """
        h = Harness(self)
        path = os.path.join(h.configs[0].stateDir, FILENAME)
        history = DeployHistory(HistoryFile(path))
        history.load()
        history.follow(h.deployer)
        history.startService()
        h.start()
        deploying = h.deployer.redeploy()
        # As MultiService does: the deployer, then the history, at once.
        deployerStopped = h.deployer.stopService()
        historyStopped = history.stopService()
        self.assertNoResult(historyStopped)
        h.reactor.advance(100)
        self.successResultOf(deployerStopped)
        self.successResultOf(historyStopped)
        self.failureResultOf(deploying)
        later = DeployHistory(HistoryFile(path))
        later.load()
        self.assertEqual(later.lastDeploy, 2)
        self.assertEqual(later.records(1)[0].outcome, "refused")

    def test_rewriteUnderWayAtStop(self) -> None:
        """
        The history's stop waits for a rewrite under way, and for the
        deploys added meanwhile to be written.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, FILENAME)
        calls = []

        def inThread(f, *args):
            d = Deferred()
            calls.append((f, args, d))
            return d

        with open(path, "wb") as f:
            f.write(line(record(1)) + b"torn")
        history = DeployHistory(HistoryFile(path), inThread)
        history.load()
        history.startService()
        history.add(record(2))
        history.add(record(3))
        stopped = history.stopService()
        self.assertNoResult(stopped)
        f, args, d = calls.pop(0)
        f(*args)
        d.callback(None)
        self.assertNoResult(stopped)
        f, args, d = calls.pop(0)
        f(*args)
        d.callback(None)
        self.successResultOf(stopped)
        later = DeployHistory(HistoryFile(path))
        later.load()
        self.assertEqual([r.deploy for r in later.records()], [3, 2, 1])
