"""
Tests for L{rainbowd.app.lifecycle}.
"""

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.lifecycle import (
    BUSY,
    TRANSITIONS,
    Input,
    InvalidInput,
    Lifecycle,
    Phase,
)

#: Every allowed input of every phase, and where it leads: the table the
#: deployer is written against, spelled out once more so that a change to
#: it is a change to this test too.
EXPECTED = {
    Phase.IDLE: {
        Input.CLEAN: Phase.CLEANING,
        Input.DEPLOY: Phase.DEPLOYING,
        Input.RESTART: Phase.RESTART_PENDING,
        Input.STOP: Phase.STOPPING,
        Input.ADOPT: Phase.ADOPTING,
        Input.HAND_OVER: Phase.HANDING_OVER,
    },
    Phase.HANDING_OVER: {
        Input.QUEUE: Phase.HANDING_OVER,
        Input.RESTART: Phase.HANDING_OVER,
        Input.KEPT: Phase.IDLE,
        Input.STOP: Phase.STOPPING,
    },
    Phase.ADOPTING: {
        Input.QUEUE: Phase.ADOPTING,
        Input.RESTART: Phase.ADOPTING,
        Input.ADOPTED: Phase.IDLE,
        Input.STOP: Phase.STOPPING,
    },
    Phase.CLEANING: {
        Input.CLEANED: Phase.DEPLOYING,
        Input.QUEUE: Phase.CLEANING,
        Input.STOP: Phase.STOPPING,
    },
    Phase.DEPLOYING: {
        Input.QUEUE: Phase.QUEUED,
        Input.DONE: Phase.IDLE,
        Input.RESTART: Phase.DEPLOYING,
        Input.STOP: Phase.STOPPING,
    },
    Phase.QUEUED: {
        Input.QUEUE: Phase.QUEUED,
        Input.DONE: Phase.DEPLOYING,
        Input.RESTART: Phase.QUEUED,
        Input.STOP: Phase.STOPPING,
    },
    Phase.RESTART_PENDING: {
        Input.DEPLOY: Phase.DEPLOYING,
        Input.RESTART: Phase.RESTART_PENDING,
        Input.CALLED_OFF: Phase.IDLE,
        Input.STOP: Phase.STOPPING,
    },
    Phase.STOPPING: {
        Input.ADOPTED: Phase.STOPPING,
        Input.CLEANED: Phase.STOPPING,
        Input.DONE: Phase.STOPPING,
        Input.RESTART: Phase.STOPPING,
    },
}


class LifecycleTests(SynchronousTestCase):
    def test_allowed(self) -> None:
        """
        Every phase moves on each input it allows to the phase the table
        names.
        """
        for phase, inputs in EXPECTED.items():
            for input, after in inputs.items():
                lifecycle = Lifecycle(phase)
                self.assertIs(lifecycle.feed(input), after, (phase, input))
                self.assertIs(lifecycle.phase, after)

    def test_notAllowed(self) -> None:
        """
        Every input a phase does not allow raises L{InvalidInput}, naming
        both, and leaves the phase as it was.
        """
        for phase in Phase:
            for input in set(Input) - set(EXPECTED[phase]):
                lifecycle = Lifecycle(phase)
                with self.assertRaises(InvalidInput) as caught:
                    lifecycle.feed(input)
                self.assertIn(repr(input.value), str(caught.exception))
                self.assertIn(phase.value, str(caught.exception))
                self.assertIs(lifecycle.phase, phase)

    def test_tableIsExpected(self) -> None:
        """
        The table holds exactly the transitions listed here, no more.
        """
        self.assertEqual(
            TRANSITIONS,
            {
                (phase, input): after
                for phase, inputs in EXPECTED.items()
                for input, after in inputs.items()
            },
        )

    def test_startsIdle(self) -> None:
        """
        A new lifecycle is idle, and not busy.
        """
        lifecycle = Lifecycle()
        self.assertIs(lifecycle.phase, Phase.IDLE)
        self.assertFalse(lifecycle.busy)

    def test_busy(self) -> None:
        """
        The lifecycle is busy, so that redeploys wait, exactly while
        leftovers are cleaned up or a deploy is under way.
        """
        self.assertEqual(
            BUSY,
            {
                Phase.CLEANING,
                Phase.DEPLOYING,
                Phase.QUEUED,
                Phase.ADOPTING,
                Phase.HANDING_OVER,
            },
        )
        for phase in Phase:
            self.assertEqual(Lifecycle(phase).busy, phase in BUSY)
