# -*- test-case-name: rainbowd.test.unit.test_handover -*-
"""
What one rainbowd hands to the next when it is upgraded, as bytes: the
versioned JSON description of its state, and the few messages the two
processes exchange over their unix socket.  Sans-IO: the sockets, the
descriptors that go with the state (L{socket.send_fds}) and the processes
are L{rainbowd.upgrade.upgrader}'s.

The state is a JSON object whose C{"format"} is L{FORMAT_VERSION}.  A
rainbowd refuses, with L{HandoverRefused}, a state of a version it does
not know -- a newer one handed down by a downgrade, say -- and the old
process then keeps everything: nothing is half adopted.

Each descriptor sent with the state is named in it by its index in the
list sent, so the state says which one is which.
"""

import json
from typing import Any, Dict, List, Mapping, Optional

import attrs

#: The version of the state's format; a change that an older rainbowd
#: would misread gets a new one.
FORMAT_VERSION = 1

#: The environment variable that tells a new rainbowd the descriptor of
#: its end of the handover socket.
HANDOVER_VARIABLE = "RAINBOWD_HANDOVER_FD"

#: The largest state taken, in bytes: output tails included, a few hundred
#: KiB at most.
MAX_STATE = 16 * 1024 * 1024

#: The keys that may not change across an upgrade: the sockets are handed
#: over, not opened again.
FIXED_KEYS = ("port", "controlPort")


class HandoverRefused(Exception):
    """
    A state that this rainbowd cannot take.  C{str()} of it says why, and
    what to do.
    """


@attrs.frozen
class Generation:
    """
    One live generation, as handed over.

    @ivar fds: the indexes, in the descriptors sent, of its stdout and
        stderr pipes' read ends (L{None} for one already closed).
    """

    generation: int
    pid: int
    pgid: int
    port: int
    state: str
    directory: Optional[str] = None
    startedAt: Optional[float] = None
    output: List[str] = attrs.field(factory=list)
    stdout: Optional[int] = None
    stderr: Optional[int] = None


@attrs.frozen
class State:
    """
    Everything a new rainbowd needs to carry on where the old one stops.

    @ivar listening: config key (C{"port"}, C{"controlPort"}) -> the index
        of its listening socket in the descriptors sent.
    @ivar settings: the old process's values of L{FIXED_KEYS}, as given.
    @ivar active: the generation serving, or L{None}.
    @ivar standby: the standby's generation and the time (the epoch's
        seconds) its window ends, or L{None}.
    @ivar traffic: the traffic mode, as L{rainbowd.web.traffic.Traffic.describe}
        gives it.
    @ivar lock: the index of the state directory's lock, held.
    @ivar socketLocks: config key -> the lock file of its unix socket, for
        the new process to name itself in.
    @ivar generation: the number of the last generation launched.
    @ivar pidfile: twistd's pidfile, or L{None}.
    @ivar deploys: the number of the last deploy.
    @ivar historyFile: the path of the deploy history's file.
    @ivar pid: the old process's pid.
    @ivar startedAt: when the first rainbowd of this chain started.
    """

    pid: int
    listening: Dict[str, int]
    settings: Dict[str, Any]
    lock: Optional[int] = None
    socketLocks: Dict[str, str] = attrs.field(factory=dict)
    generation: int = 0
    pidfile: Optional[str] = None
    generations: List[Generation] = attrs.field(factory=list)
    active: Optional[int] = None
    standby: Optional[Dict[str, Any]] = None
    traffic: Dict[str, Any] = attrs.field(factory=dict)
    deploys: int = 0
    historyFile: Optional[str] = None
    startedAt: Optional[float] = None


def encode(state: State) -> bytes:
    """
    C{state} as the bytes sent to the new process.
    """
    body = attrs.asdict(state)
    return json.dumps({"format": FORMAT_VERSION, **body}).encode("utf-8")


def decode(data: bytes) -> State:
    """
    The L{State} in C{data}.

    @raise HandoverRefused: if it is not JSON, is of another format
        version, or lacks what this version needs.
    """
    try:
        body = json.loads(data)
    except ValueError as e:
        raise HandoverRefused(
            f"rainbowd: the state handed over is not JSON ({e}); the old "
            "rainbowd serves on.  Upgrade to a matching rainbowd."
        )
    if not isinstance(body, dict):
        raise HandoverRefused(
            "rainbowd: the state handed over is not a JSON object; the old "
            "rainbowd serves on.  Upgrade to a matching rainbowd."
        )
    version = body.pop("format", None)
    if version != FORMAT_VERSION:
        raise HandoverRefused(
            f"rainbowd: the state handed over is of format {version!r}, and "
            f"this rainbowd reads only format {FORMAT_VERSION}; the old "
            "rainbowd serves on, with everything it had.  Install a "
            "rainbowd that reads it (the same or a newer version), or stop "
            "rainbowd and start the new one (which restarts the app)."
        )
    try:
        generations = [Generation(**each) for each in body.pop("generations", [])]
        return State(generations=generations, **body)
    except TypeError as e:
        raise HandoverRefused(
            f"rainbowd: the state handed over (format {FORMAT_VERSION}) is "
            f"not one this rainbowd understands: {e}; the old rainbowd "
            "serves on.  Upgrade to a matching rainbowd."
        )


def fixedKeysChanged(handed: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """
    Sentences naming each key of L{FIXED_KEYS} whose value in the config
    read C{now} is not the one C{handed} over, with the fix.
    """
    changed = []
    for key in FIXED_KEYS:
        if handed.get(key) != now.get(key):
            changed.append(
                f'"{key}" changed from {json.dumps(handed.get(key))} to '
                f"{json.dumps(now.get(key))}, but an upgrade hands over the "
                "sockets and cannot listen elsewhere: put it back, or stop "
                "and start rainbowd to move it"
            )
    return changed


#: The messages from the new process to the old, each a line.
READY = b"ready"
REFUSED = b"refused"


def readyLine(pid: int) -> bytes:
    """
    The line by which the new process, pid C{pid}, says it serves.
    """
    return json.dumps({"message": READY.decode(), "pid": pid}).encode() + b"\n"


def refusedLine(error: str) -> bytes:
    """
    The line by which the new process says it will not take the state.
    """
    return json.dumps({"message": REFUSED.decode(), "error": error}).encode() + b"\n"


def parseLine(line: bytes) -> Dict[str, Any]:
    """
    A message of the new process; one that is not understood is a
    refusal saying so.
    """
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("message") not in ("ready", "refused"):
        return {
            "message": "refused",
            "error": f"rainbowd: the new process said {line[:200]!r}, which is "
            "not a handover message",
        }
    return message
