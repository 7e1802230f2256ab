# -*- test-case-name: rainbowd.test.unit.test_releases -*-
"""
Tests for L{rainbowd.app.releases}, and for release directories as the config
and the deployer use them.
"""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.releases import (
    danglingLink,
    danglingLinkProblem,
    resolveRelease,
    stateDirWarning,
    workingDirectory,
)
from rainbowd.config import ConfigError, loadConfig
from rainbowd.control.history import FILENAME, DeployHistory, HistoryFile
from rainbowd.test.unit.test_deployer import Harness


class Layout:
    """
    An app deployed as C{releases/<id>/}, with a C{current} link, and a
    C{shared/} directory for rainbowd's state.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.root = os.path.realpath(testCase.mktemp())
        os.makedirs(os.path.join(self.root, "releases"))
        os.makedirs(os.path.join(self.root, "shared"))
        self.current = os.path.join(self.root, "current")
        self.config = os.path.join(self.current, "rainbow.conf.json")

    def release(self, name: str, **settings) -> str:
        """
        Make release C{name}, whose config runs C{app NAME} with C{settings}.
        """
        directory = os.path.join(self.root, "releases", name)
        os.makedirs(os.path.join(directory, "web"))
        values = {"run": f"app {name} $1 $2", "stateDir": "../shared/rainbowd"}
        values.update(settings)
        with open(os.path.join(directory, "rainbow.conf.json"), "w") as f:
            json.dump(values, f)
        return directory

    def point(self, name: str) -> None:
        """
        Point C{current} at release C{name}, atomically, with a relative
        link, as C{ln -sfn} and C{mv -T} do.
        """
        new = self.current + ".new"
        os.symlink(os.path.join("releases", name), new)
        os.replace(new, self.current)

    def load(self):
        return loadConfig(self.config, cwd=self.root)


class DanglingLinkTests(SynchronousTestCase):
    """
    Tests for L{danglingLink} and L{danglingLinkProblem}.
    """

    def setUp(self) -> None:
        self.layout = Layout(self)

    def test_none(self) -> None:
        """
        A path whose links all point at something, or one that merely does
        not exist, has no dangling link.
        """
        self.layout.release("1")
        self.layout.point("1")
        self.assertIsNone(danglingLink(self.layout.config))
        self.assertIsNone(danglingLink(os.path.join(self.layout.root, "nope", "x")))

    def test_dangling(self) -> None:
        """
        A link to nothing, on the way or at the end, is found with its
        target as written, and the problem names both and the fix.
        """
        self.layout.point("9")
        self.assertEqual(
            danglingLink(self.layout.config), (self.layout.current, "releases/9")
        )
        self.assertEqual(
            danglingLink(self.layout.current), (self.layout.current, "releases/9")
        )
        current = self.layout.current
        self.assertEqual(
            danglingLinkProblem(self.layout.config),
            f"{current} is a symbolic link to 'releases/9' "
            f"({self.layout.root}/releases/9), which does not exist: point it "
            f"at a release directory that does (ln -sfn releases/ID "
            f"{current}.new && mv -T {current}.new {current})",
        )


class LinkLoopTests(SynchronousTestCase):
    """
    A C{current} link that leads back to itself.
    """

    def test_loop(self) -> None:
        """
        A link that points at itself is named as a loop, not as a link to
        something missing, with the same fix.
        """
        layout = Layout(self)
        os.symlink("current", layout.current)
        problem = danglingLinkProblem(layout.config)
        self.assertEqual(
            problem,
            f"{layout.current} is a symbolic link to 'current' "
            f"({layout.current}), which leads back to itself: point it at a "
            f"release directory (ln -sfn releases/ID {layout.current}.new && "
            f"mv -T {layout.current}.new {layout.current})",
        )
        error = self.assertRaises(ConfigError, layout.load)
        self.assertIn("leads back to itself", str(error))


class ResolveTests(SynchronousTestCase):
    """
    Tests for L{resolveRelease}, L{workingDirectory} and
    L{stateDirWarning}.
    """

    def setUp(self) -> None:
        self.layout = Layout(self)
        self.one = self.layout.release("1")
        self.two = self.layout.release("2")

    def test_throughTheHomeAsRead(self) -> None:
        """
        A directory in the config file's directory is resolved through
        that directory as it was when the file was read, even if the link
        has moved since.
        """
        self.layout.point("2")
        current = self.layout.current
        self.assertEqual(resolveRelease(current, current, self.one), self.one)
        self.assertEqual(
            resolveRelease(os.path.join(current, "web"), current, self.one),
            os.path.join(self.one, "web"),
        )
        self.assertEqual(
            resolveRelease(current + "-other", current, self.one),
            os.path.realpath(current + "-other"),
        )

    def test_workingDirectory(self) -> None:
        """
        The current directory is C{$PWD} when that names it, through links;
        otherwise, the one the kernel gives.
        """
        self.layout.point("1")
        current = self.layout.current
        self.assertEqual(
            workingDirectory({"PWD": current + "/"}, lambda: self.one), current
        )
        for environ in [{}, {"PWD": "releases"}, {"PWD": self.two}, {"PWD": "/nope"}]:
            self.assertEqual(workingDirectory(environ, lambda: self.one), self.one)

    def test_stateDirWarning(self) -> None:
        """
        A state directory in the config file's directory, when that is a
        link, is warned of, with a place outside the releases to put it.
        """
        self.layout.point("1")
        current = self.layout.current
        warning = stateDirWarning(os.path.join(current, ".rainbowd"), self.layout.config)
        self.assertIn(f'"stateDir" is {current}/.rainbowd, inside {current}', warning)
        self.assertIn(
            f'e.g. "{self.layout.root}/shared/rainbowd" ("../shared/rainbowd" in '
            "rainbow.conf.json)",
            warning,
        )
        for stateDir, source in [
            (os.path.join(self.layout.root, "shared", "rainbowd"), self.layout.config),
            (os.path.join(self.one, ".rainbowd"), os.path.join(self.one, "x.json")),
            (os.path.join(current, ".rainbowd"), None),
        ]:
            self.assertIsNone(stateDirWarning(stateDir, source))


class StateDirBelowTheLinkTests(SynchronousTestCase):
    """
    L{stateDirWarning} for a config file deeper in a release than its top.
    """

    def test_configInASubdirectory(self) -> None:
        """
        A state directory in a config file's directory that is inside a
        release reached through a link (C{current/config/}) is warned of,
        naming the link, with a place outside the releases relative to
        the config file; one outside the link is not, nor is a link
        directly under C{/}.
        """
        layout = Layout(self)
        one = layout.release("1")
        os.makedirs(os.path.join(one, "config"))
        layout.point("1")
        current = layout.current
        source = os.path.join(current, "config", "rainbow.conf.json")
        warning = stateDirWarning(os.path.join(current, "config", ".rainbowd"), source)
        self.assertIsNotNone(warning)
        self.assertIn(f"inside {current}, which is a symbolic link", warning)
        self.assertIn(
            f'e.g. "{layout.root}/shared/rainbowd" ("../../shared/rainbowd" in '
            "rainbow.conf.json)",
            warning,
        )
        shared = os.path.join(layout.root, "shared", "rainbowd")
        self.assertIsNone(stateDirWarning(shared, source))
        if os.path.islink("/bin"):  # as in a merged /usr
            self.assertIsNone(
                stateDirWarning("/bin/x/.rainbowd", "/bin/x/rainbow.conf.json")
            )


class ConfigTests(SynchronousTestCase):
    """
    A config read through a C{current} link is that release's, and so is
    the directory its app runs in.
    """

    def setUp(self) -> None:
        self.layout = Layout(self)
        self.one = self.layout.release("1")
        self.two = self.layout.release("2")

    def test_resolved(self) -> None:
        """
        The app's directory is the release C{current} points at, while the
        config file's path, the state directory and other paths stay as
        given, so the next read goes through the link again.
        """
        self.layout.point("1")
        config = self.layout.load()
        self.assertEqual(
            (config.cwd, config.run, config.source, config.stateDir),
            (
                self.one,
                "app 1 $1 $2",
                self.layout.config,
                os.path.join(self.layout.root, "shared", "rainbowd"),
            ),
        )
        self.layout.point("2")
        config = self.layout.load()
        self.assertEqual((config.cwd, config.run), (self.two, "app 2 $1 $2"))

    def test_cwdInRelease(self) -> None:
        """
        A C{cwd} relative to the config file is in the same release.
        """
        self.layout.release("3", cwd="web")
        self.layout.point("3")
        config = self.layout.load()
        self.assertEqual(config.cwd, os.path.join(self.layout.root, "releases", "3", "web"))

    def test_cwdIsTheLink(self) -> None:
        """
        A C{cwd} that is itself a link (the config file elsewhere) is
        resolved too.
        """
        self.layout.point("1")
        elsewhere = os.path.join(self.layout.root, "rainbow.conf.json")
        with open(elsewhere, "w") as f:
            json.dump({"run": "app $1 $2", "cwd": "current"}, f)
        self.assertEqual(loadConfig(elsewhere).cwd, self.one)

    def test_danglingConfigLink(self) -> None:
        """
        A config file behind a link to nothing is an error naming the link
        and what it points at.
        """
        self.layout.point("9")
        error = self.assertRaises(ConfigError, self.layout.load)
        self.assertIn(
            f"Cannot read the config file {self.layout.config}: "
            f"{self.layout.current} is a symbolic link to 'releases/9'",
            str(error),
        )

    def test_danglingCwdLink(self) -> None:
        """
        A C{cwd} behind a link to nothing is an error naming the link.
        """
        elsewhere = os.path.join(self.layout.root, "rainbow.conf.json")
        with open(elsewhere, "w") as f:
            json.dump({"run": "app $1 $2", "cwd": "current/web"}, f)
        self.layout.point("9")
        error = self.assertRaises(ConfigError, loadConfig, elsewhere)
        self.assertIn(
            f"\"cwd\" is '{self.layout.current}/web', but {self.layout.current} "
            "is a symbolic link to 'releases/9'",
            str(error),
        )


class DeployedReleasesTests(SynchronousTestCase):
    """
    Each generation runs in the release it was deployed from for its whole
    life, whatever C{current} points at later.
    """

    def setUp(self) -> None:
        self.layout = Layout(self)
        # Without a standby, so that a crash is followed by a replacement
        # (with one, by a rollback: see test_deployer).
        self.one = self.layout.release("1", rollbackWindow=0)
        self.two = self.layout.release("2", rollbackWindow=0)
        self.three = self.layout.release("3", rollbackWindow=0)
        self.layout.point("1")
        self.h = Harness(self)
        self.h.configs[0] = self.layout.load()
        self.h.deployer.config = self.h.configs[0]
        self.h._loadConfig = self.layout.load
        self.h.deployer._loadConfig = self.layout.load
        os.makedirs(self.h.configs[0].stateDir)
        self.history = DeployHistory(
            HistoryFile(os.path.join(self.h.configs[0].stateDir, FILENAME))
        )
        self.history.follow(self.h.deployer)
        self.history.startService()
        self.addCleanup(self.history.stopService)

    def directories(self):
        return {
            b["generation"]: b["directory"] for b in self.h.deployer.status()["backends"]
        }

    def test_swapped(self) -> None:
        """
        After C{current} is swapped, a redeploy runs the new release in its
        own directory, with its config, while the old generation keeps its
        directory; C{/status} and the history show both.
        """
        self.h.start()
        self.h.backend(1).requestStarted()
        self.layout.point("2")
        self.h.deployer.redeploy()
        self.assertEqual(self.h.process(1).path, self.one)
        self.assertEqual(self.h.process(2).path, self.two)
        self.assertEqual(self.h.process(2).args[3], "app 2 $1 $2")
        self.assertEqual(self.h.process(2).env["PWD"], self.two)
        self.h.healthy(2)
        self.assertEqual(self.directories(), {1: self.one, 2: self.two})
        self.assertEqual(
            [(r.deploy, r.directory) for r in self.history.records()],
            [(2, self.two), (1, self.one)],
        )

    def test_movedDuringStart(self) -> None:
        """
        A generation whose C{current} moves while it starts runs on in the
        release it started from, and so does its replacement after a crash;
        the next redeploy takes the new release.
        """
        self.h.start()
        self.layout.point("2")
        self.h.deployer.redeploy()
        self.layout.point("3")
        self.h.healthy(2)
        self.assertEqual(self.directories()[2], self.two)
        self.h.process(2).exit(1)
        self.h.reactor.advance(1)
        self.assertEqual(self.h.process(3).path, self.two)
        self.h.healthy(3)
        self.h.deployer.redeploy()
        self.assertEqual(self.h.process(4).path, self.three)

    def test_danglingOnRedeploy(self) -> None:
        """
        A redeploy with C{current} pointing at nothing fails with an error
        naming the link, and the old generation serves on.
        """
        self.h.start()
        self.layout.point("9")
        failure = self.failureResultOf(self.h.deployer.redeploy(), ConfigError)
        self.assertIn(f"{self.layout.current} is a symbolic link to 'releases/9'", str(failure.value))
        self.assertIs(self.h.deployer.active, self.h.backend(1))
        latest = self.history.records(1)[0]
        self.assertEqual(latest.outcome, "failed")
        self.assertIn("releases/9", latest.error)

    def test_releaseRemoved(self) -> None:
        """
        A crashed generation whose release directory was removed is not
        restarted in nothing: the restart fails saying the directory is
        gone and to redeploy.
        """
        self.h.start()
        os.rename(self.one, self.one + ".old")
        self.h.process(1).exit(1)
        self.h.reactor.advance(1)
        latest = self.history.records(1)[0]
        self.assertEqual((latest.cause, latest.outcome), ("restart", "failed"))
        self.assertIn(f"its directory {self.one} (\"cwd\") is gone", latest.error)
