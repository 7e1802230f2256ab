# -*- test-case-name: rainbowd.test.unit.test_events -*-
"""
The kinds of event rainbowd reports: the deployer's (see
L{rainbowd.app.deployer.Event}), and those only a streamed redeploy (see
L{rainbowd.control.progress}) writes.  Without Twisted, so that rainbowctl, which
reads them, starts fast.
"""

from enum import Enum
from typing import Dict

#: How many health checks of a starting generation in a row must fail the
#: same way before its deploy says so.
REPORT_EVERY = 10


class EventKind(str, Enum):
    """
    A kind of event.  Each is the string it is written as in JSON (the
    C{event} of a streamed line), and compares equal to it, so that
    C{EventKind.switched == "switched"} and C{json.dumps} writes
    C{"switched"}.

    @ivar description: what it means, and the details it carries.
    @ivar streamedOnly: written by a streamed redeploy only, never by the
        deployer.
    """

    description: str
    streamedOnly: bool

    def __new__(
        cls, value: str, description: str = "", streamedOnly: bool = False
    ) -> "EventKind":
        kind = str.__new__(cls, value)
        kind._value_ = value
        kind.description = description
        kind.streamedOnly = streamedOnly
        return kind

    # Written as its value, as a plain string is, wherever it is formatted.
    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    deploying = (
        "deploying",
        "a deploy began: deploy (its number), cause (startup, "
        "redeploy, restart, rollback or automaticRollback), requester (who "
        "asked: the control client's address, SIGHUP, or null for rainbowd "
        "itself), message (the one the redeploy was asked with, or null)",
    )
    launching = ("launching", "a generation was started: deploy, port")
    unhealthy = (
        "unhealthy",
        "a starting generation's health check failed the same way "
        f"{REPORT_EVERY} times in a row, or goes on failing so (at most once a "
        "second); it is waited for on, up to startTimeout: deploy, port, error "
        "(of the latest check), checks (how many in a row)",
    )
    shutdown = (
        "shutdown",
        "rainbowd is stopping: it drains and stops every generation, "
        "and refuses deploys: generations (those it waits for)",
    )
    retrying = (
        "retrying",
        "a generation lost its port and another is tried: deploy, port",
    )
    healthy = (
        "healthy",
        "a generation passed its health check: deploy, port, seconds "
        "(since its launch)",
    )
    verifying = (
        "verifying",
        "a healthy generation's verify command started: deploy, "
        "port, command, timeout (seconds)",
    )
    verifyOutput = (
        "verifyOutput",
        "a line the verify command printed (only its first "
        "lines are events; all are logged): deploy, line, stream",
    )
    verified = (
        "verified",
        "a generation's verify command exited 0: deploy, seconds",
    )
    switched = (
        "switched",
        "traffic moved to a generation: deploy, previous (generation "
        "or null)",
    )
    rolledBack = (
        "rolledBack",
        "rainbowd rolled back by itself to the standby: cause "
        "(exited, unhealthy or errorRate), from and to (generations), reason, "
        "deploy (the rollback's number)",
    )
    standby = (
        "standby",
        "the generation traffic moved from is drained and kept as the "
        "standby to roll back to: seconds (left in its rollbackWindow)",
    )
    draining = (
        "draining",
        "a generation no longer gets new requests: inflight",
    )
    stopped = (
        "stopped",
        "every process of a generation is gone: state (stopped or "
        "failed), exit (how its process ended)",
    )
    crashed = ("crashed", "the active generation exited by itself: exit")
    unresponsive = (
        "unresponsive",
        "the active generation failed livenessFailures liveness "
        "checks in a row, and a replacement is due: port, pid, failures, error "
        "(of the last check), stopped (whether its process is stopped, so that "
        "new requests wait for the replacement; otherwise it serves on until "
        "that is healthy)",
    )
    recovered = (
        "recovered",
        "the active generation passed a liveness check again after "
        "it was unresponsive (and gets new requests again if it was stopped): "
        "port, pid",
    )
    restarting = ("restarting", "a replacement deploy is due: delay (seconds)")
    deployed = ("deployed", "a deploy is done: deploy, and the outcome's JSON")
    failed = ("failed", "a deploy failed: deploy, and the outcome's JSON")
    refused = ("refused", "a deploy was refused: deploy, and the outcome's JSON")

    # A streamed redeploy's own lines:
    queued = (
        "queued",
        "the redeploy waits for the deploy under way to finish first",
        True,
    )
    waiting = (
        "waiting",
        "a step is still under way (every few seconds): elapsed (seconds), "
        "step (queued or verify; none while a generation starts), and "
        "generation and deploy once the deploy began",
        True,
    )
    result = (
        "result",
        "the redeploy's outcome: the control API's answer to it, and "
        "serving (the generation serving now, or null)",
        True,
    )
    watching = (
        "watching",
        "after the result, while a generation's rollbackWindow lasts: "
        "generation, standby, secondsLeft",
        True,
    )
    watched = (
        "watched",
        "the rollbackWindow is over, or the deploy was rolled back: "
        "generation, rolledBack, serving",
        True,
    )


#: The kinds of event, with the details each one carries.
EVENT_KINDS: Dict[str, str] = {kind.value: kind.description for kind in EventKind}

#: The kinds that end a deploy, with its outcome.
OUTCOMES = (EventKind.deployed, EventKind.failed, EventKind.refused)
