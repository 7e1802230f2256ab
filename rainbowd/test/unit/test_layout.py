# -*- test-case-name: rainbowd.test.unit.test_layout -*-
"""
The parts of the package import only what docs/architecture.rst says they
may: the data path (C{web/}) and the generations (C{app/}) know nothing of
each other or of the operator's side; the upgrade (C{upgrade/}) hands over
the generations; the operator's side (C{control/}) reads both.  Only
C{tap.py}, the composition root, joins them all.
"""

import ast
import os
from typing import Dict, FrozenSet, Iterator, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

import rainbowd

PACKAGE = os.path.dirname(os.path.abspath(rainbowd.__file__))

#: The parts, and the other parts each may import.
ALLOWED: Dict[str, FrozenSet[str]] = {
    "web": frozenset(),
    "app": frozenset(),
    "upgrade": frozenset({"app"}),
    "control": frozenset({"app", "web"}),
}


def importedModules(path: str) -> Iterator[Tuple[int, str]]:
    """
    The rainbowd modules C{path} imports, anywhere in it (inside a function
    too), each with its line.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("rainbowd"):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rainbowd"):
                    yield node.lineno, alias.name


class LayoutTests(SynchronousTestCase):
    def test_partsImportWhatTheyMay(self) -> None:
        """
        No module of a part imports a module of a part it may not.
        """
        wrong: Set[str] = set()
        checked = 0
        for part, allowed in ALLOWED.items():
            directory = os.path.join(PACKAGE, part)
            for name in sorted(os.listdir(directory)):
                if not name.endswith(".py"):
                    continue
                checked += 1
                for line, module in importedModules(os.path.join(directory, name)):
                    names = module.split(".")
                    if len(names) > 1 and names[1] in ALLOWED:
                        other = names[1]
                        if other != part and other not in allowed:
                            wrong.add(f"rainbowd/{part}/{name}:{line} imports {module}")
        self.assertGreater(checked, 30)
        self.assertEqual(sorted(wrong), [])

    def test_finds(self) -> None:
        """
        The check sees imports at the top and inside functions alike.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "import rainbowd.web.proxy\n"
                "from rainbowd.app import backend\n"
                "def f():\n"
                "    from rainbowd.control.api import NDJSON\n"
                "from . import sibling\n"
            )
        self.assertEqual(
            list(importedModules(path)),
            [(1, "rainbowd.web.proxy"), (2, "rainbowd.app"), (4, "rainbowd.control.api")],
        )
