# -*- test-case-name: rainbowd.test.unit.test_statedir -*-
"""
The state directory, kept rainbowd's own.

rainbowd writes its lock, its records of the app's process groups (which
hold the C{run} line), the app's pidfiles and the app's output files in
C{stateDir}.  When rainbowd runs as root, anyone who could plant a file
there -- a symbolic link to C{/etc/shadow}, say -- could make rainbowd
truncate or write that file.  So, as ssh's C{StrictModes} does for
C{~/.ssh}:

  - L{prepare} creates C{stateDir} with mode 0700, and refuses one that is
    not owned by rainbowd's user or that group or others may write to, or,
    when rainbowd runs as root, that is in a directory where they may
    replace it (not sticky);
  - L{openFile} opens a file in it without following a symbolic link, and
    refuses one that is not a plain file of rainbowd's own with one link;
  - L{writeAtomically} writes a file (mode 0600) through a temporary file
    created with C{O_EXCL}, so nothing planted is written through;
  - L{makeSubdirectory} makes a subdirectory (C{logs/}) the same way.
"""

import errno
import os
import pwd
import stat
from typing import Callable, Optional

#: The flags every file in the state directory is opened with.
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeStateDir(Exception):
    """
    The state directory, or a file in it, cannot be trusted or used.
    C{str()} of it is one sentence naming the path, what is wrong and the
    fix.
    """


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _check(path: str, info: os.stat_result, uid: int, what: str) -> None:
    """
    Refuse C{path} unless C{info} says it is owned by C{uid} and not
    writable by group or others.
    """
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != uid:
        raise UnsafeStateDir(
            f"{what} {path} is owned by {_user(info.st_uid)}, not by the user "
            f"rainbowd runs as ({_user(uid)}), who could then not trust what "
            f"is in it: chown {uid} {path} && chmod 700 {path}, or set "
            f'another "stateDir" (--state-dir).'
        )
    if mode & 0o022:
        raise UnsafeStateDir(
            f"{what} {path} has mode {mode:04o}: other users may create files "
            f"in it, such as links that make rainbowd overwrite other files: "
            f'chmod 700 {path}, or set another "stateDir" (--state-dir).'
        )


def prepare(
    path: str,
    uid: Optional[int] = None,
    statPath: Callable[[str], os.stat_result] = os.stat,
) -> None:
    """
    Create the state directory C{path} (mode 0700) if it is missing, and
    check it is rainbowd's own.

    @param uid: rainbowd's user; the effective uid by default.
    @param statPath: L{os.stat}, or a test's fake.
    @raise UnsafeStateDir: if it cannot be created, or is not a directory
        of C{uid}'s that only C{uid} may write to.
    """
    uid = os.geteuid() if uid is None else uid
    what = 'The state directory ("stateDir")'
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = statPath(path)
    except FileExistsError:
        raise UnsafeStateDir(
            f"{what} {path} exists but is not a directory: move it away, or "
            'set another "stateDir" (--state-dir).'
        )
    except OSError as e:
        raise UnsafeStateDir(
            f"Cannot create {what[0].lower() + what[1:]} {path}: "
            f"{e.strerror or e}.  Create it as the user rainbowd runs as "
            f'(mkdir -m 700 {path}), or set another "stateDir" (--state-dir).'
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeStateDir(
            f"{what} {path} exists but is not a directory: move it away, or "
            'set another "stateDir" (--state-dir).'
        )
    _check(path, info, uid, what)
    if uid == 0:
        # As root, what a swapped state directory makes rainbowd write or
        # remove can be any file; as another user, only that user's.
        _checkParents(path, statPath)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UnsafeStateDir(
            f"{what} {path} is not writable by rainbowd: chmod 700 {path}, "
            'or set another "stateDir" (--state-dir).'
        )


def _checkParents(
    path: str, statPath: Callable[[str], os.stat_result]
) -> None:
    """
    Refuse C{path} if a directory above it -- where it is configured, or
    where it really is, through links -- lets group or others rename or
    replace the entries in it: they could put a directory or a link of
    theirs in the state directory's place once rainbowd has checked it.  A
    sticky directory such as C{/tmp} lets only an entry's owner do that.
    """
    parents = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        parent = os.path.dirname(start)
        while True:
            parents.add(parent)
            above = os.path.dirname(parent)
            if above == parent:
                break
            parent = above
    for parent in sorted(parents):
        try:
            mode = statPath(parent).st_mode
        except OSError:
            continue
        if stat.S_IMODE(mode) & 0o022 and not mode & stat.S_ISVTX:
            raise UnsafeStateDir(
                f'The state directory ("stateDir") {path} is in {parent}, '
                f"which has mode {stat.S_IMODE(mode):04o}: other users may "
                f"replace the state directory with a link of theirs there: "
                f"chmod go-w {parent} (or chmod +t {parent}), or set another "
                f'"stateDir" (--state-dir).'
            )


def makeSubdirectory(path: str, uid: Optional[int] = None) -> None:
    """
    Create C{path}, a directory in the state directory, with mode 0700 if
    it is missing; refuse it if it is a symbolic link, or not rainbowd's
    own.

    @raise OSError: if it cannot be created.
    @raise UnsafeStateDir: if it cannot be trusted.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeStateDir(
            f"{path} is not a directory (a link, or a file): rainbowd does "
            f"not follow links in its state directory; remove it (rm {path})."
        )
    _check(path, info, uid, "The directory")


def openFile(path: str, flags: int, uid: Optional[int] = None) -> int:
    """
    Open C{path}, in the state directory, with C{flags} (and mode 0600 if
    it is created), without following a symbolic link.

    @return: the file descriptor.
    @raise UnsafeStateDir: if C{path} is a symbolic link, or not a plain
        file of rainbowd's user with a single link (a hard link to another
        file would be written through).
    @raise OSError: if it cannot be opened otherwise.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        # O_NONBLOCK: a FIFO planted where a file is written would
        # otherwise block rainbowd until some process reads it.
        fd = os.open(path, flags | _SAFE | os.O_NONBLOCK, 0o600)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafeStateDir(
                f"{path} is a symbolic link: rainbowd does not follow links "
                f"in its state directory; remove it (rm {path})."
            )
        if e.errno == errno.ENXIO:
            # A FIFO with no reader, or a socket.
            raise UnsafeStateDir(
                f"{path} is not a plain file: it is not a file rainbowd "
                f"made, and rainbowd does not write through it; remove it "
                f"(rm {path})."
            )
        raise e
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a plain file"
    elif info.st_nlink != 1:
        problem = f"has {info.st_nlink} hard links"
    elif info.st_uid != uid:
        problem = f"is owned by {_user(info.st_uid)}"
    if problem is not None:
        os.close(fd)
        raise UnsafeStateDir(
            f"{path} {problem}: it is not a file rainbowd made, and rainbowd "
            f"does not write through it; remove it (rm {path})."
        )
    os.set_blocking(fd, True)
    return fd


def writeAtomically(path: str, data: bytes, sync: bool = False) -> None:
    """
    Replace C{path} with a file (mode 0600) holding C{data}: written to
    C{path.tmp}, created afresh with C{O_EXCL} (a leftover or planted one is
    removed first), then renamed over C{path}, which replaces a link rather
    than writing through it.

    @param sync: also make the new file and its name reach the disk before
        returning (C{fsync} of the file, then of the directory), so that a
        machine that loses power just after still finds one whole file.
    @raise OSError: if it cannot be written.
    """
    temporary = f"{path}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE
    try:
        fd = os.open(temporary, flags, 0o600)
    except FileExistsError:
        os.remove(temporary)
        fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    if sync:
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | _SAFE)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def readFile(path: str, limit: int = 1024 * 1024) -> bytes:
    """
    The first C{limit} bytes of C{path}, in the state directory, opened
    without following a symbolic link.

    @raise OSError: if it cannot be read (C{ELOOP} for a link).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _SAFE)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path} is not a plain file")
        return f.read(limit)
