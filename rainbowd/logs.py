# -*- test-case-name: rainbowd.test.unit.test_logs -*-
"""
Log observers for twistd's C{--logger} option, which takes the fully
qualified name of a function that returns one::

    twistd -n --logger rainbowd.logs.jsonObserver rainbowd
"""

import sys
from typing import IO, Optional

from twisted.logger import FileLogObserver, jsonFileLogObserver


def jsonObserver(outFile: Optional[IO[str]] = None) -> FileLogObserver:
    """
    Write every log event as a JSON object on a line of its own (no record
    separator), to standard output by default: its fields (C{generation},
    C{line}, C{stream}...), C{log_format}, C{log_level}, C{log_namespace},
    C{log_time}, and C{log_failure} for errors.

    twistd calls it before it redirects C{sys.stdout} into the log, so the
    lines go to the real standard output (the journal, under systemd).
    """
    return jsonFileLogObserver(outFile if outFile is not None else sys.stdout, "")
