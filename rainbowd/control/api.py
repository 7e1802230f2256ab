# -*- test-case-name: rainbowd.test.unit.test_ctl -*-
"""
What the control API and its clients (rainbowctl, C{--control}) share,
without Twisted, so that rainbowctl starts fast: the streamed media type,
what to say after a failed deploy, the control token file, and how a verify
command's processes are told.
"""

import os
import re
import stat
from typing import Optional, Tuple

from rainbowd.configfile import ConfigError

#: The media type of a streamed redeploy: a JSON object a line.
NDJSON = b"application/x-ndjson"

def failureHint(serving: Optional[int], redeploy: str = "redeploy") -> str:
    """
    What to do after a failed deploy, and what serves meanwhile: for the
    control API's answer, and (with C{redeploy} in its own words) for
    C{rainbowctl}.

    @param serving: the generation serving now, or L{None} if none is (the
        first generation failed, say).
    """
    if serving is None:
        return f"no generation is serving; fix the problem and {redeploy}"
    return f"generation {serving} is still serving; fix the problem and {redeploy}"


#: A control token: one word of printable ASCII.
_TOKEN = re.compile(rb"[\x21-\x7e]+")


def _makeToken(path: str) -> str:
    return f"umask 077 && head -c 32 /dev/urandom | base64 > {path}"


def readControlToken(path: str) -> Tuple[bytes, Optional[str]]:
    """
    Read the control token from C{path}: the file's text without the
    surrounding whitespace.

    @return: the token, and a warning to log if other users may read or
        change the file (or L{None}).
    @raise ConfigError: if the file is missing, unreadable, empty, or holds
        more than one printable word; the message names the file, never
        the token.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(4096)
    except FileNotFoundError:
        raise ConfigError(
            f'The control token file {path} ("controlTokenFile") does not '
            f"exist: create it, e.g. with `{_makeToken(path)}`, or remove "
            '"controlTokenFile" to run without a token.'
        )
    except OSError as e:
        raise ConfigError(
            f'Cannot read the control token file {path} ("controlTokenFile"): '
            f"{e.strerror}.  Run as the user who owns it, or give that user "
            f"read access (chmod 600 {path} as its owner)."
        )
    token = data.strip()
    if not token:
        raise ConfigError(
            f'The control token file {path} ("controlTokenFile") is empty: '
            f"write a token to it, e.g. with `{_makeToken(path)}`."
        )
    if _TOKEN.fullmatch(token) is None or len(data) >= 4096:
        raise ConfigError(
            f'The control token file {path} ("controlTokenFile") must hold '
            "one word of printable ASCII (no spaces, under 4 KiB), which "
            f'clients send as "Authorization: Bearer TOKEN"; write one, e.g. '
            f"with `{_makeToken(path)}`."
        )
    warning = None
    if stat.S_IMODE(mode) & 0o066:
        warning = (
            f'The control token file {path} ("controlTokenFile") has mode '
            f"{stat.S_IMODE(mode):04o}: other users can read or change it, "
            f"and so redeploy.  Fix it with: chmod 600 {path}"
        )
    return token, warning
