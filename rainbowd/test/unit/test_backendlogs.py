# -*- test-case-name: rainbowd.test.unit.test_backendlogs -*-
"""
Tests for L{rainbowd.app.backendlogs}.
"""

import os
import stat

import attrs
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.backendlogs import BackendLogs, runId
from rainbowd.test.unit.test_deployer import Harness

RUN = "20261127T021231Z-4242"


class BackendLogsTests(SynchronousTestCase):
    """
    Each generation's output goes to a file of its own, the newest few kept.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.h.configs[0] = attrs.evolve(self.h.configs[0], backendLogs=2)
        self.h.deployer.config = self.h.configs[0]
        self.stateDir = self.h.configs[0].stateDir
        self.directory = os.path.join(self.stateDir, "logs")
        self.logs = BackendLogs(self.h.deployer, self.stateDir, run=RUN)
        self.logs.startService()
        self.addCleanup(lambda: [f.close() for f in self.logs._files.values()])

    def read(self, generation: int) -> str:
        with open(self.logs.fileName(generation)) as f:
            return f.read()

    def redeploy(self, generation: int) -> None:
        self.h.deployer.redeploy()
        self.h.healthy(generation)
        self.h.reactor.advance(0)

    def test_runId(self) -> None:
        """
        A run is named by its UTC start time and pid.
        """
        self.assertEqual(runId(1795745551.9, 4242), RUN)

    def test_outputInFile(self) -> None:
        """
        A generation's stdout and stderr lines go to its file, named by the
        run and the generation.
        """
        self.h.start()
        self.h.process(1).emit(b"one\ntw")
        self.h.process(1).emit(b"o\n")
        self.h.process(1).emit(b"oops\n", 2)
        self.assertEqual(
            self.logs.fileName(1),
            os.path.join(self.directory, f"{RUN}-generation-1.log"),
        )
        self.assertEqual(self.read(1), "one\ntwo\noops\n")

    def test_plantedLinks(self) -> None:
        """
        A link planted as a generation's file, or as the logs directory, is
        not written through: the error is logged, and the output only
        logged.
        """
        victim = os.path.abspath(self.mktemp())
        with open(victim, "w") as f:
            f.write("precious\n")
        os.makedirs(self.directory, 0o700)
        os.symlink(victim, self.logs.fileName(1))
        with capturedLogs() as events:
            self.h.start()
            self.h.process(1).emit(b"one\n")
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("cannot write generation 1's output", text)
        self.assertIn("is a symbolic link", text)
        os.remove(self.logs.fileName(1))
        os.rmdir(self.directory)
        os.symlink(os.path.dirname(victim), self.directory)
        with capturedLogs() as events:
            self.redeploy(2)
        self.assertIn("is not a directory (a link", "\n".join(formatEvent(e) for e in events))
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_filePrivate(self) -> None:
        """
        The files and the logs directory are rainbowd's user's alone.
        """
        self.h.start()
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.logs.fileName(1)).st_mode), 0o600)

    def test_newestKept(self) -> None:
        """
        Only the newest backendLogs files are kept, an earlier run's first;
        other files in the directory are left alone.
        """
        os.makedirs(self.directory)
        for name in ["20200101T000000Z-1-generation-7.log", "notes.txt"]:
            with open(os.path.join(self.directory, name), "w") as f:
                f.write("earlier\n")
        self.h.start()
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            ["20200101T000000Z-1-generation-7.log", f"{RUN}-generation-1.log", "notes.txt"],
        )
        self.redeploy(2)
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            [f"{RUN}-generation-1.log", f"{RUN}-generation-2.log", "notes.txt"],
        )
        self.redeploy(3)
        self.h.process(3).emit(b"three\n")
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            [f"{RUN}-generation-2.log", f"{RUN}-generation-3.log", "notes.txt"],
        )
        self.assertEqual(self.read(3), "three\n")

    def test_oldestUnremovable(self) -> None:
        """
        An old file that cannot be removed (a directory planted under its
        name) is logged and left, and each new generation's output still
        goes to its file.
        """
        planted = os.path.join(self.directory, "20200101T000000Z-1-generation-7.log")
        os.makedirs(planted)
        with capturedLogs() as events:
            self.h.start()
            self.redeploy(2)
            self.redeploy(3)
        self.h.process(3).emit(b"three\n")
        self.assertEqual(self.read(3), "three\n")
        text = "\n".join(formatEvent(e) for e in events)
        self.assertNotIn("cannot write generation", text)
        self.assertIn(f"cannot remove the old output file {planted}", text)

    def test_off(self) -> None:
        """
        With backendLogs 0, a generation gets no file.
        """
        self.h.newConfig(backendLogs=0)
        self.h.start()
        self.redeploy(2)
        self.h.process(2).emit(b"two\n")
        self.assertEqual(os.listdir(self.directory), [f"{RUN}-generation-1.log"])

    def test_adoptedGenerations(self) -> None:
        """
        A generation taken over in an upgrade, running before the service
        starts, has its output written to a file of this run too.
        """
        self.h.start()
        logs = BackendLogs(self.h.deployer, self.stateDir, run="later")
        logs.startService()
        self.addCleanup(lambda: [f.close() for f in logs._files.values()])
        self.h.process(1).emit(b"after the upgrade\n")
        with open(logs.fileName(1)) as f:
            self.assertEqual(f.read(), "after the upgrade\n")
