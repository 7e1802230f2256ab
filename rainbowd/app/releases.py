# -*- test-case-name: rainbowd.test.unit.test_releases -*-
"""
Release directories: an app kept as C{releases/<id>/}, one directory a
release, with a C{current} link to the one to run (as Capistrano and many
deploy scripts lay it out).

The config file is read through the link at every redeploy, so a redeploy
after the link moved reads the new release's config.  The app's directory
(C{cwd}, by default the config file's) is resolved once, as the config is
read: each generation then runs in the release directory it was deployed
from for its whole life, whatever the link points at later, and C{/status}
and the deploy history show that directory.
"""

import errno
import os
from typing import Callable, Mapping, Optional, Tuple


def danglingLink(path: str) -> Optional[Tuple[str, str]]:
    """
    The first symbolic link on the way to C{path} (C{path} itself
    included) that points at nothing, and its target as written; or
    L{None} if there is none.
    """
    path = os.path.abspath(path)
    walked = os.sep
    for part in path.split(os.sep):
        if not part:
            continue
        walked = os.path.join(walked, part)
        if os.path.islink(walked) and not os.path.exists(walked):
            return walked, os.readlink(walked)
        if not os.path.lexists(walked):
            return None
    return None


def danglingLinkProblem(path: str) -> Optional[str]:
    """
    A sentence saying which link on the way to C{path} points at nothing,
    and the fix; or L{None} if none does.
    """
    dangling = danglingLink(path)
    if dangling is None:
        return None
    link, target = dangling
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    shown = repr(target) if target == resolved else f"{target!r} ({resolved})"
    fix = f"(ln -sfn releases/ID {link}.new && mv -T {link}.new {link})"
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return (
                f"{link} is a symbolic link to {shown}, which leads back to "
                f"itself: point it at a release directory {fix}"
            )
    return (
        f"{link} is a symbolic link to {shown}, which does not exist: point "
        f"it at a release directory that does {fix}"
    )


def resolveRelease(directory: str, home: str, resolvedHome: str) -> str:
    """
    C{directory}, absolute, with its symbolic links resolved; the part of
    it in C{home} (the config file's directory) as C{home} was when the
    config file was read, C{resolvedHome}, so that the config and the
    directory are those of the same release even if the link moves
    between the two.
    """
    if directory == home or directory.startswith(home.rstrip(os.sep) + os.sep):
        directory = resolvedHome + directory[len(home.rstrip(os.sep)) :]
    return os.path.realpath(directory)


def workingDirectory(
    environ: Mapping[str, str] = os.environ,
    getcwd: Callable[[], str] = os.getcwd,
) -> str:
    """
    The current directory as the shell that started rainbowd names it
    (C{$PWD}, as C{pwd -L} does), when that is the current directory: so
    that rainbowd started with C{cd /srv/app/current} reads
    C{/srv/app/current/rainbow.conf.json} at every redeploy, through the
    link, rather than the file of the release the link pointed at then.
    """
    physical = getcwd()
    logical = environ.get("PWD")
    if not logical or not os.path.isabs(logical):
        return physical
    try:
        if os.path.samefile(logical, physical):
            return os.path.normpath(logical)
    except OSError:
        pass
    return physical


def stateDirWarning(stateDir: str, source: Optional[str]) -> Optional[str]:
    """
    A warning if C{stateDir} is in the config file's directory and that
    directory is a symbolic link: the state directory would then be
    another one with each release, and go when the release is removed.
    """
    if source is None:
        return None
    home = os.path.dirname(source)
    link = _releaseLink(home)
    if link is None:
        return None
    inside = stateDir == link or stateDir.startswith(link.rstrip(os.sep) + os.sep)
    if not inside:
        return None
    shared = os.path.join(os.path.dirname(link), "shared", "rainbowd")
    return (
        f'"stateDir" is {stateDir}, inside {link}, which is a symbolic link '
        f"to a release directory: each release would have a state directory "
        f"of its own (rainbowd's lock, its records of the app's processes and "
        f"the deploy history), and removing a release would remove it.  Set "
        f'"stateDir" outside the releases, e.g. "{shared}" '
        f'("{os.path.relpath(shared, home)}" in {os.path.basename(source)}).'
    )


def _releaseLink(directory: str) -> Optional[str]:
    """
    The deepest symbolic link on the way to C{directory} (C{directory}
    included), such as C{/srv/app/current} of
    C{/srv/app/current/config}; or L{None}.  One directly in C{/} (C{/bin}
    to C{usr/bin}, C{/home} to C{var/home}) moves the whole system, not a
    release, and is not one.
    """
    directory = os.path.abspath(directory)
    while os.path.dirname(os.path.dirname(directory)) != os.path.dirname(directory):
        if os.path.islink(directory):
            return directory
        directory = os.path.dirname(directory)
    return None
