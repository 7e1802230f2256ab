# -*- test-case-name: rainbowd.test.unit.test_configdoc -*-
"""
The configuration reference table of the docs, made from the declarations
of the keys (L{rainbowd.config.settings}).

C{python -m rainbowd.configdoc} rewrites the table in
C{docs/configuration.rst} (L{PAGE}), between
the L{BEGIN} and L{END} comments, and C{python -m rainbowd.configdoc
--check} exits 1 if it is out of date.
"""

import json
import os
import sys
import textwrap
from typing import List, Optional, Sequence

import attrs

from rainbowd.config import Config, Setting, settings

BEGIN = ".. The configuration table: python -m rainbowd.configdoc writes it."
END = ".. The end of the configuration table."

#: The page that holds the table, relative to the checkout's root.
PAGE = os.path.join("docs", "configuration.rst")

#: The widths of the columns but the first; the last may run past its.
_WIDTHS = (8, 30, 53)

#: The class of a field's C{factory=} default (which attrs' typing hides).
_FACTORY: type = type(attrs.Factory(dict))

#: What the table says of a key only read at startup.
_STARTUP = "read at startup"


def _default(declared: Setting) -> str:
    """
    The default of C{declared} as the table gives it: its C{docDefault}, or
    the field's default in file units, or "none".
    """
    if declared.docDefault is not None:
        return declared.docDefault
    default = attrs.fields_dict(Config)[declared.key].default
    if default in (None, attrs.NOTHING) or isinstance(default, _FACTORY):
        return "none"
    shown = declared.kind.unparse(default)
    if shown in ((), []):
        return "none"
    if isinstance(shown, str):
        return f"``{json.dumps(shown)}``"
    return str(shown)


def _meaning(declared: Setting) -> str:
    if declared.startup:
        return f"{declared.doc}; {_STARTUP}"
    return declared.doc


def _wrap(text: str, width: int) -> List[str]:
    return textwrap.wrap(
        text, width, break_long_words=False, break_on_hyphens=False
    ) or [""]


def table(declared: Optional[Sequence[Setting]] = None) -> str:
    """
    The reStructuredText table of the keys C{declared} (every key by
    default): key, type, default and meaning, a key a row.
    """
    if declared is None:
        declared = settings()
    rows = [
        [f"``{one.key}``", one.kind.type, _default(one), _meaning(one)]
        for one in declared
    ]
    widths = [max(len("key"), *(len(row[0]) for row in rows)), *_WIDTHS]
    rule = " ".join("=" * width for width in widths)

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            cell.ljust(width) for cell, width in zip(cells, widths)
        ).rstrip()

    lines = [rule, line(["key", "type", "default", "meaning"]), rule]
    for row in rows:
        columns = [_wrap(cell, width) for cell, width in zip(row, widths)]
        for i in range(max(len(column) for column in columns)):
            lines.append(
                line([column[i] if i < len(column) else "" for column in columns])
            )
    lines.append(rule)
    return "\n".join(lines) + "\n"


def rewrite(text: str) -> str:
    """
    C{text}, the configuration page, with the table between L{BEGIN} and L{END}
    made anew.

    @raise ValueError: if either comment is missing.
    """
    head, begin, rest = text.partition(BEGIN + "\n")
    old, end, tail = rest.partition(END + "\n")
    if not begin or not end:
        raise ValueError(f"the page has no {BEGIN!r} ... {END!r} comments")
    return f"{head}{begin}\n{table()}\n{end}{tail}"


def main(argv: Optional[List[str]] = None) -> int:
    """
    Rewrite the configuration page's table, or with C{--check} say whether
    it is up to date; the page is L{PAGE} under the current directory
    (the checkout's root), or the path given.
    """
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [arg for arg in args if arg != "--check"]
    path = paths[0] if paths else PAGE
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = rewrite(text)
    if new == text:
        return 0
    if check:
        print(
            f"{path}: the configuration table is out of date: run "
            "python -m rainbowd.configdoc",
            file=sys.stderr,
        )
        return 1
    with open(path + ".new", "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(path + ".new", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
