# -*- test-case-name: rainbowd.test.unit.test_statedir -*-
"""
Tests for L{rainbowd.statedir}: a state directory nobody else can plant
files in, and files in it opened without following links.
"""

import os
import signal
import stat

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.statedir import (
    UnsafeStateDir,
    makeSubdirectory,
    openFile,
    prepare,
    readFile,
    writeAtomically,
)


def victim(testCase: SynchronousTestCase) -> str:
    """
    A file outside the state directory that must not change.
    """
    path = os.path.abspath(testCase.mktemp())
    with open(path, "w") as f:
        f.write("precious\n")
    return path


def unchanged(testCase: SynchronousTestCase, path: str) -> None:
    with open(path) as f:
        testCase.assertEqual(f.read(), "precious\n")



def prepareAs(uid: int, path: str) -> None:
    """
    L{prepare} C{path} as if rainbowd ran as C{uid} and owned it.
    """

    def statPath(p: str) -> os.stat_result:
        info = os.stat(p)
        if p != path:
            return info
        fields = list(info)
        fields[stat.ST_UID] = uid
        return os.stat_result(fields)

    os.makedirs(path, mode=0o700, exist_ok=True)
    prepare(path, uid, statPath)


class PrepareTests(SynchronousTestCase):
    """
    Tests for L{prepare}.
    """

    def test_created(self) -> None:
        """
        A missing state directory is created with mode 0700, parents
        included.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "a", "state")
        prepare(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)

    def test_existing(self) -> None:
        """
        An existing directory of rainbowd's user, 0700 or 0755, is used as
        it is.
        """
        for mode in [0o700, 0o755, 0o1700]:
            path = os.path.abspath(self.mktemp())
            os.mkdir(path)
            os.chmod(path, mode)
            prepare(path)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), mode)

    def test_writableByOthers(self) -> None:
        """
        A directory group or others may write to, sticky or not, is refused
        in one sentence naming the key, the directory, its mode and the
        chmod that fixes it.
        """
        for mode in [0o777, 0o1777, 0o770, 0o702]:
            path = os.path.abspath(self.mktemp())
            os.mkdir(path)
            os.chmod(path, mode)
            error = str(self.assertRaises(UnsafeStateDir, prepare, path))
            self.assertIn(f'The state directory ("stateDir") {path}', error)
            self.assertIn(f"has mode {mode:04o}", error)
            self.assertIn(f"chmod 700 {path}", error)
            self.assertNotIn("\n", error)

    def test_parentWritableByOthers(self) -> None:
        """
        As root, a state directory in a directory others may write to, and
        that is not sticky, is refused naming that directory, whether it is
        there or only linked from there; in a sticky one (C{/tmp}) it is
        used.
        """
        for mode in [0o777, 0o770]:
            parent = os.path.abspath(self.mktemp())
            os.mkdir(parent)
            os.chmod(parent, mode)
            self.addCleanup(os.chmod, parent, 0o700)
            path = os.path.join(parent, "state")
            error = str(self.assertRaises(UnsafeStateDir, prepareAs, 0, path))
            self.assertIn(f"is in {parent}, which has mode {mode:04o}", error)
            self.assertIn(f"chmod go-w {parent}", error)
            self.assertNotIn("\n", error)
            target = os.path.abspath(self.mktemp())
            os.mkdir(target, 0o700)
            os.rmdir(path)
            os.symlink(target, path)
            error = str(self.assertRaises(UnsafeStateDir, prepareAs, 0, path))
            self.assertIn(f"is in {parent}, which has mode", error)
        parent = os.path.abspath(self.mktemp())
        os.mkdir(parent)
        os.chmod(parent, 0o1777)
        self.addCleanup(os.chmod, parent, 0o700)
        prepareAs(0, os.path.join(parent, "state"))

    def test_parentWritableByOthersNotRoot(self) -> None:
        """
        A user other than root may keep its state directory in a directory
        others may write to: swapped for a link, it could only make rainbowd
        write or remove that user's own files.
        """
        parent = os.path.abspath(self.mktemp())
        os.mkdir(parent)
        os.chmod(parent, 0o777)
        self.addCleanup(os.chmod, parent, 0o700)
        prepareAs(4242, os.path.join(parent, "state"))

    def test_ownedByAnother(self) -> None:
        """
        A directory owned by another user is refused, naming both users and
        the chown that fixes it.
        """
        path = os.path.abspath(self.mktemp())
        os.mkdir(path, 0o700)
        real = os.stat(path)

        def statPath(p: str) -> os.stat_result:
            fields = list(real)
            fields[stat.ST_UID] = 4242
            return os.stat_result(fields)

        error = str(self.assertRaises(UnsafeStateDir, prepare, path, 1000, statPath))
        self.assertIn(f"{path} is owned by uid 4242, not by the user", error)
        self.assertIn("(uid 1000", error)
        self.assertIn(f"chown 1000 {path} && chmod 700 {path}", error)
        error = str(self.assertRaises(UnsafeStateDir, prepare, path, os.geteuid() + 1))
        self.assertIn(f"is owned by uid {os.geteuid()}", error)

    def test_notADirectory(self) -> None:
        """
        A file where the directory should be, or a path through a file, is
        refused in one sentence, not a traceback.
        """
        path = victim(self)
        error = str(self.assertRaises(UnsafeStateDir, prepare, path))
        self.assertIn(f"{path} exists but is not a directory", error)
        unchanged(self, path)
        error = str(self.assertRaises(UnsafeStateDir, prepare, path + "/state"))
        self.assertIn(
            f'Cannot create the state directory ("stateDir") {path}/state', error
        )
        self.assertIn("Not a directory", error)
        self.assertIn("mkdir -m 700", error)


class FileTests(SynchronousTestCase):
    """
    Tests for L{openFile}, L{readFile}, L{writeAtomically} and
    L{makeSubdirectory}.
    """

    def setUp(self) -> None:
        self.stateDir = os.path.abspath(self.mktemp())
        prepare(self.stateDir)
        self.victim = victim(self)

    def plant(self, name: str) -> str:
        path = os.path.join(self.stateDir, name)
        os.symlink(self.victim, path)
        return path

    def test_openCreates(self) -> None:
        """
        A file created is 0600.
        """
        path = os.path.join(self.stateDir, "f")
        os.close(openFile(path, os.O_RDWR | os.O_CREAT))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_openLink(self) -> None:
        """
        A symbolic link is refused, naming it and the fix, and its target
        is untouched.
        """
        path = self.plant("f")
        error = str(
            self.assertRaises(UnsafeStateDir, openFile, path, os.O_RDWR | os.O_CREAT)
        )
        self.assertIn(f"{path} is a symbolic link", error)
        self.assertIn(f"rm {path}", error)
        unchanged(self, self.victim)

    def test_openHardLink(self) -> None:
        """
        A hard link to another file, or a file of another user, is refused.
        """
        path = os.path.join(self.stateDir, "f")
        os.link(self.victim, path)
        error = str(self.assertRaises(UnsafeStateDir, openFile, path, os.O_RDWR))
        self.assertIn("has 2 hard links", error)
        other = os.path.join(self.stateDir, "g")
        os.close(openFile(other, os.O_RDWR | os.O_CREAT))
        error = str(
            self.assertRaises(
                UnsafeStateDir, openFile, other, os.O_RDWR, os.geteuid() + 1
            )
        )
        self.assertIn("is owned by", error)

    def test_openFIFO(self) -> None:
        """
        A FIFO (or socket) where a file is written, which no reader holds,
        is refused at once, rather than blocking rainbowd until some
        process opens it for reading.
        """
        path = os.path.join(self.stateDir, "f")
        os.mkfifo(path, 0o600)

        def tooLong(signum, frame):
            raise AssertionError("openFile blocked on a FIFO")

        previous = signal.signal(signal.SIGALRM, tooLong)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        signal.alarm(5)
        self.addCleanup(signal.alarm, 0)
        error = str(
            self.assertRaises(
                UnsafeStateDir, openFile, path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
            )
        )
        self.assertIn(f"{path} is not a plain file", error)
        self.assertIn(f"rm {path}", error)

    def test_openBlocking(self) -> None:
        """
        A file opened is in blocking mode, as rainbowd writes it.
        """
        fd = openFile(os.path.join(self.stateDir, "f"), os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        self.assertTrue(os.get_blocking(fd))

    def test_readLink(self) -> None:
        """
        L{readFile} does not follow a link, nor block on a FIFO.
        """
        self.assertRaises(OSError, readFile, self.plant("pid"))
        fifo = os.path.join(self.stateDir, "fifo")
        os.mkfifo(fifo)
        self.assertRaises(OSError, readFile, fifo)

    def test_writeAtomically(self) -> None:
        """
        A file written is 0600 and holds the data; no temporary is left.
        """
        path = os.path.join(self.stateDir, "r.json")
        writeAtomically(path, b"{}")
        writeAtomically(path, b"[]")
        self.assertEqual(readFile(path), b"[]")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.stateDir), ["r.json"])

    def test_writeSynced(self) -> None:
        """
        With C{sync}, the new file is synced before it is renamed into
        place, then its directory; without, neither is.
        """
        synced = []

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            synced.append(
                ("directory", None) if stat.S_ISDIR(info.st_mode)
                else ("file", info.st_size)
            )

        self.patch(os, "fsync", fsync)
        path = os.path.join(self.stateDir, "r.json")
        writeAtomically(path, b"{}")
        self.assertEqual(synced, [])
        writeAtomically(path, b"[1]", sync=True)
        self.assertEqual(synced, [("file", 3), ("directory", None)])
        self.assertEqual(readFile(path), b"[1]")

    def test_writePlanted(self) -> None:
        """
        A link planted as the temporary file, or as the file itself, is
        replaced, never written through.
        """
        path = os.path.join(self.stateDir, "r.json")
        self.plant("r.json.tmp")
        writeAtomically(path, b"{}")
        unchanged(self, self.victim)
        self.assertEqual(readFile(path), b"{}")
        self.plant("r.json.tmp")
        os.remove(path)
        self.plant("r.json")
        writeAtomically(path, b"[]")
        unchanged(self, self.victim)
        self.assertFalse(os.path.islink(path))
        self.assertEqual(sorted(os.listdir(self.stateDir)), ["r.json"])

    def test_subdirectory(self) -> None:
        """
        A subdirectory is made 0700; a link in its place, or one others may
        write to, is refused.
        """
        path = os.path.join(self.stateDir, "logs")
        makeSubdirectory(path)
        makeSubdirectory(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)
        os.chmod(path, 0o777)
        self.assertIn(
            "has mode 0777",
            str(self.assertRaises(UnsafeStateDir, makeSubdirectory, path)),
        )
        os.rmdir(path)
        os.symlink(os.path.dirname(self.victim), path)
        error = str(self.assertRaises(UnsafeStateDir, makeSubdirectory, path))
        self.assertIn(f"{path} is not a directory (a link", error)
