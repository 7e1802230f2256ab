# -*- test-case-name: rainbowd.test.unit.test_lifecycle -*-
"""
What the deployer is doing, as an explicit transition table::

    idle --clean--> cleaning --cleaned--> deploying --done--> idle
    idle --deploy--> deploying --queue--> deploying, queued --done--> deploying
    idle --restart--> restart pending --deploy--> deploying
                      restart pending --calledOff--> idle
    any of them --stop--> stopping

A deploy and the inputs that arrive during it are not lost: a redeploy or a
rollback asked for during a deploy is queued (C{queue}), and the next one
begins as soon as the deploy under way is done.  A restart due while a
deploy is under way is absorbed: that deploy replaces the backend anyway.
Once stopping, the deploy or cleanup under way may still end, and nothing
else begins.

Whether the deployer keeps a standby is a second, independent part of its
state: any of these states can hold one or not (see
L{rainbowd.app.deployer.Deployer.standby}), and the standby's own life is the
backend's (L{rainbowd.app.backend.State.STANDBY}).
"""

from enum import Enum


class Phase(Enum):
    IDLE = "idle"
    CLEANING = "cleaning up leftovers"
    DEPLOYING = "deploying"
    QUEUED = "deploying, with requests queued"
    RESTART_PENDING = "restart pending"
    STOPPING = "stopping"
    ADOPTING = "taking over from the rainbowd it upgrades"
    HANDING_OVER = "handing over to a new rainbowd"


class Input(Enum):
    #: rainbowd starts, and first stops what an earlier one left running.
    CLEAN = "clean"
    #: the leftovers are stopped.
    CLEANED = "cleaned"
    #: a deploy begins: a redeploy, a rollback, a restart, the first one.
    DEPLOY = "deploy"
    #: a redeploy or rollback is asked for while a deploy is under way.
    QUEUE = "queue"
    #: the deploy under way has an outcome.
    DONE = "done"
    #: no backend serves, or the active one is unresponsive: a restart is
    #: due after the backoff delay.
    RESTART = "restart"
    #: the active backend answers again: the pending restart is called off.
    CALLED_OFF = "calledOff"
    #: rainbowd is shutting down.
    STOP = "stop"
    #: rainbowd starts by taking over another's generations (an upgrade).
    ADOPT = "adopt"
    #: the rainbowd upgraded from has exited: nothing is in flight there.
    ADOPTED = "adopted"
    #: an upgrade begins: the state is handed to a new rainbowd.
    HAND_OVER = "handOver"
    #: that upgrade failed: this rainbowd keeps everything.
    KEPT = "kept"


_ALL_BUT_STOPPING = set(Phase) - {Phase.STOPPING}

#: (phase, input) -> the phase it leads to.
TRANSITIONS = {
    (Phase.IDLE, Input.CLEAN): Phase.CLEANING,
    (Phase.IDLE, Input.DEPLOY): Phase.DEPLOYING,
    (Phase.IDLE, Input.RESTART): Phase.RESTART_PENDING,
    (Phase.CLEANING, Input.CLEANED): Phase.DEPLOYING,
    (Phase.CLEANING, Input.QUEUE): Phase.CLEANING,
    (Phase.DEPLOYING, Input.QUEUE): Phase.QUEUED,
    (Phase.DEPLOYING, Input.DONE): Phase.IDLE,
    (Phase.DEPLOYING, Input.RESTART): Phase.DEPLOYING,
    (Phase.QUEUED, Input.QUEUE): Phase.QUEUED,
    (Phase.QUEUED, Input.DONE): Phase.DEPLOYING,
    (Phase.QUEUED, Input.RESTART): Phase.QUEUED,
    (Phase.RESTART_PENDING, Input.DEPLOY): Phase.DEPLOYING,
    (Phase.RESTART_PENDING, Input.RESTART): Phase.RESTART_PENDING,
    (Phase.RESTART_PENDING, Input.CALLED_OFF): Phase.IDLE,
    (Phase.IDLE, Input.ADOPT): Phase.ADOPTING,
    (Phase.ADOPTING, Input.QUEUE): Phase.ADOPTING,
    (Phase.ADOPTING, Input.RESTART): Phase.ADOPTING,
    (Phase.ADOPTING, Input.ADOPTED): Phase.IDLE,
    (Phase.STOPPING, Input.ADOPTED): Phase.STOPPING,
    (Phase.IDLE, Input.HAND_OVER): Phase.HANDING_OVER,
    (Phase.HANDING_OVER, Input.QUEUE): Phase.HANDING_OVER,
    (Phase.HANDING_OVER, Input.RESTART): Phase.HANDING_OVER,
    (Phase.HANDING_OVER, Input.KEPT): Phase.IDLE,
    (Phase.STOPPING, Input.CLEANED): Phase.STOPPING,
    (Phase.STOPPING, Input.DONE): Phase.STOPPING,
    (Phase.STOPPING, Input.RESTART): Phase.STOPPING,
    **{(phase, Input.STOP): Phase.STOPPING for phase in _ALL_BUT_STOPPING},
}

#: The phases in which a deploy (or the cleanup before the first one) is
#: under way, so that a redeploy asked for waits for it.
BUSY = frozenset(
    {Phase.CLEANING, Phase.DEPLOYING, Phase.QUEUED, Phase.ADOPTING, Phase.HANDING_OVER}
)


class InvalidInput(Exception):
    """
    The deployer was given an input its phase does not allow: a bug in
    rainbowd.
    """


class Lifecycle:
    """
    The deployer's phase, moved only through L{TRANSITIONS}.

    @ivar phase: the current L{Phase}.
    """

    def __init__(self, phase: Phase = Phase.IDLE) -> None:
        self.phase = phase

    def feed(self, input: Input) -> Phase:
        """
        Move on with C{input}.

        @return: the new phase.
        @raise InvalidInput: if the current phase does not allow C{input}.
        """
        try:
            self.phase = TRANSITIONS[self.phase, input]
        except KeyError:
            raise InvalidInput(
                f"the deployer cannot take {input.value!r} while "
                f"{self.phase.value}"
            ) from None
        return self.phase

    @property
    def busy(self) -> bool:
        return self.phase in BUSY
