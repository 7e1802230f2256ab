# -*- test-case-name: rainbowd.test.endtoend.test_ctl -*-
"""
Tests for L{rainbowd.control.ctl} in a new Python: what C{rainbowctl}
imports as it starts.  The others, with fake connections, are in
L{rainbowd.test.unit.test_ctl}.
"""

import ast
import json
import os
import subprocess
import sys
from typing import List, Tuple

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import rainbowd
from rainbowd.test.unit.test_ctl import RUN

#: Code that runs C{rainbowctl --help}.
HELP = (
    "import io\n"
    "from rainbowd.control.ctl import run\n"
    "try:\n"
    "    run(['--help'], io.StringIO(), io.StringIO())\n"
    "except SystemExit:\n"
    "    pass\n"
)


class StartupTests(SynchronousTestCase):
    """
    rainbowctl starts without Twisted: it makes one HTTP request, and
    importing Twisted's reactor, web and endpoints took it most of its
    startup time.
    """

    def modulesLoaded(self, code: str, roots: Tuple[str, ...] = ("twisted",)) -> List[str]:
        """
        The Twisted modules (or those of the packages C{roots}) loaded once
        a new Python, with this checkout of rainbowd first on its path, has
        run C{code}.
        """
        root = os.path.dirname(os.path.dirname(rainbowd.__file__))
        env = {**os.environ, "PYTHONPATH": root}
        script = (
            f"{code}\nimport sys\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r}))"
        )
        output = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(output.returncode, 0, output.stderr)
        return ast.literal_eval(output.stdout.splitlines()[-1])

    def test_importsNoTwisted(self) -> None:
        """
        Importing L{rainbowd.control.ctl} imports no Twisted module at all.
        """
        self.assertEqual(self.modulesLoaded("import rainbowd.control.ctl"), [])

    def statusCode(self) -> str:
        """
        Code that runs C{rainbowctl status} with a config file in a new
        directory (no rainbowd runs there: it is not reached).
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        config = directory.child("rainbow.conf.json")
        config.setContent(json.dumps({"run": RUN, "port": 1}).encode())
        return (
            "import io\n"
            "from rainbowd.control.ctl import run\n"
            f"run(['--config', {config.path!r}, 'status'], io.StringIO(), io.StringIO())\n"
        )

    def test_helpAndStatusImportNoTwisted(self) -> None:
        """
        C{rainbowctl --help}, and C{rainbowctl status} as far as finding
        rainbowd from a config file and not reaching it, import no Twisted
        module either.
        """
        self.assertEqual(self.modulesLoaded(HELP + self.statusCode()), [])

    def test_helpLoadsNoConfig(self) -> None:
        """
        C{rainbowctl --help} does not load L{rainbowd.config} or attrs,
        which took a third of its start, and no command imports
        L{http.client}, which imports L{email}'s parsers and took a quarter.
        """
        heavy = ("attr", "attrs", "email", "http", "rainbowd")
        loaded = self.modulesLoaded(HELP, heavy)
        self.assertEqual([m for m in loaded if not m.startswith("rainbowd")], [])
        self.assertNotIn("rainbowd.config", loaded)
        loaded = self.modulesLoaded(self.statusCode(), heavy)
        self.assertIn("rainbowd.config", loaded)
        self.assertEqual([m for m in loaded if m.split(".")[0] in ("email", "http")], [])
