# -*- test-case-name: rainbowd.test.unit.test_configdoc -*-
"""
Tests for L{rainbowd.configdoc}, and for the declarations of the keys it
reads (L{rainbowd.config.settings}).
"""

import io
import os
import sys

import attrs
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import rainbowd
from rainbowd import configdoc
from rainbowd.app.deployer import STARTUP_KEYS
from rainbowd.config import setting, settings, startupKeys
from rainbowd.tap import _FLAGS

#: The configuration page of the checkout this rainbowd was imported from.
PAGE = os.path.join(
    os.path.dirname(os.path.dirname(rainbowd.__file__)), configdoc.PAGE
)


def page() -> str:
    """
    The text of L{PAGE}; the test is skipped where rainbowd was installed
    without it.
    """
    if not os.path.exists(PAGE):
        raise SkipTest(f"no {PAGE}: rainbowd is not imported from a checkout")
    with open(PAGE, encoding="utf-8") as f:
        return f.read()


class PageTableTests(SynchronousTestCase):
    """
    Tests for the configuration table of C{docs/configuration.rst}.
    """

    def test_upToDate(self) -> None:
        """
        The table in docs/configuration.rst is the one the keys'
        declarations make: a key added, or a line changed, without running
        C{python -m rainbowd.configdoc} fails here.
        """
        text = page()
        self.assertEqual(
            configdoc.rewrite(text),
            text,
            "docs/configuration.rst's configuration table is out of date: "
            "run python -m rainbowd.configdoc",
        )

    def test_everyKey(self) -> None:
        """
        The table has a row for every key, in L{rainbowd.config.Config}'s
        order.
        """
        rows = [
            line.split()[0].strip("`")
            for line in configdoc.table().splitlines()[3:-1]
            if line.startswith("``")
        ]
        self.assertEqual(rows, [declared.key for declared in settings()])

    def test_startupKeysSaySo(self) -> None:
        """
        The row of a key only read at startup ends with "read at startup";
        that of any other key does not, unless its own text says it.
        """
        declared = setting("stopDelay")
        self.assertTrue(declared.startup)
        self.assertNotIn("read at startup", declared.doc)
        row = configdoc.table([declared]).splitlines()[3:-1]
        self.assertTrue(" ".join(" ".join(row).split()).endswith("; read at startup"))
        drain = configdoc.table([setting("drainTimeout")])
        self.assertNotIn("read at startup", drain)

    def test_defaults(self) -> None:
        """
        The default column gives a time in ms, a string quoted as JSON, a
        declared C{docDefault} as it is, and "none" for no value.
        """
        self.assertEqual(configdoc._default(setting("drainTimeout")), "30000")
        self.assertEqual(
            configdoc._default(setting("backendPorts")), '``"20000-29999"``'
        )
        self.assertEqual(configdoc._default(setting("run")), "required")
        self.assertEqual(configdoc._default(setting("env")), "none")
        self.assertEqual(configdoc._default(setting("controlAllowedHosts")), "none")
        self.assertEqual(configdoc._default(setting("port")), "7000")

    def test_longCellsWrap(self) -> None:
        """
        A meaning longer than its column goes on in the next lines, whose
        first column is blank, as reStructuredText's simple tables want.
        """
        declared = attrs.evolve(setting("drainTimeout"), doc="word " * 40)
        lines = configdoc.table([declared]).splitlines()[3:-1]
        self.assertGreater(len(lines), 1)
        for line in lines[1:]:
            self.assertTrue(line.startswith(" " * 26), line)

    def test_noMarkers(self) -> None:
        """
        A page without the two comments around the table is an error,
        not a page with a table appended.
        """
        self.assertRaises(ValueError, configdoc.rewrite, "Configuration\n\nnone\n")


class MainTests(SynchronousTestCase):
    """
    Tests for C{python -m rainbowd.configdoc}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.stale = (
            f"Intro\n\n{configdoc.BEGIN}\n\nold table\n\n{configdoc.END}\nEnd\n"
        )
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(self.stale)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.stderr = stderr

    def read(self) -> str:
        with open(self.path, encoding="utf-8") as f:
            return f.read()

    def test_check(self) -> None:
        """
        C{--check} exits 1 on a stale table, saying how to fix it, and
        leaves the file as it is.
        """
        self.assertEqual(configdoc.main(["--check", self.path]), 1)
        self.assertIn("python -m rainbowd.configdoc", self.stderr.getvalue())
        self.assertEqual(self.read(), self.stale)

    def test_rewrite(self) -> None:
        """
        Without C{--check}, the table between the comments is made anew,
        the rest kept; a second run, or C{--check}, then finds it fresh.
        """
        self.assertEqual(configdoc.main([self.path]), 0)
        text = self.read()
        self.assertTrue(text.startswith(f"Intro\n\n{configdoc.BEGIN}\n\n====="))
        self.assertTrue(text.endswith(f"=====\n\n{configdoc.END}\nEnd\n"))
        self.assertIn(configdoc.table(), text)
        self.assertEqual(configdoc.main(["--check", self.path]), 0)
        self.assertEqual(self.read(), text)


class DeclarationTests(SynchronousTestCase):
    """
    Tests for what is derived from the keys' declarations.
    """

    def test_startupKeys(self) -> None:
        """
        L{rainbowd.app.deployer.STARTUP_KEYS} are the keys declared
        C{startup=True}.
        """
        self.assertEqual(STARTUP_KEYS, startupKeys())
        self.assertIn("port", STARTUP_KEYS)
        self.assertNotIn("drainTimeout", STARTUP_KEYS)

    def test_flags(self) -> None:
        """
        Every key but those declared C{fileOnly} has a flag, whose kind its
        L{_Kind} gives: a whole number for times and counts, a port for
        endpoints, text for the rest.
        """
        self.assertEqual(
            [declared.key for declared in settings() if declared.key not in _FLAGS],
            ["env", "cwd"],
        )
        self.assertEqual(_FLAGS["port"], ("p", "port"))
        self.assertEqual(_FLAGS["controlPort"], (None, "port"))
        self.assertEqual(_FLAGS["drainTimeout"], (None, "number"))
        self.assertEqual(_FLAGS["maxBackends"], (None, "number"))
        self.assertEqual(_FLAGS["backendPorts"], (None, "text"))

    def test_unknownKey(self) -> None:
        """
        L{setting} of a name that is no key raises L{KeyError}, C{source}
        (a field of L{Config} that is not a key) included.
        """
        self.assertRaises(KeyError, setting, "drainTimout")
        self.assertRaises(KeyError, setting, "source")
