# -*- test-case-name: rainbowd.test.unit.test_events -*-
"""
Tests for L{rainbowd.events}, the kinds of event.
"""

import io
import json
from typing import List

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app import deployer
from rainbowd.app.deployer import Event
from rainbowd.control.ctl import Progress
from rainbowd.events import EVENT_KINDS, OUTCOMES, EventKind
from rainbowd.test.unit.test_deployer import Harness


class EventKindTests(SynchronousTestCase):
    """
    An L{EventKind} is its string wherever it goes.
    """

    def test_json(self) -> None:
        """
        JSON writes a kind as its plain string, as a value and as a key.
        """
        self.assertEqual(
            json.dumps({"event": EventKind.verifyOutput, EventKind.switched: 1}),
            '{"event": "verifyOutput", "switched": 1}',
        )

    def test_formatted(self) -> None:
        """
        C{str}, C{format} and C{%} give a kind's string, so that log lines
        and metric labels read as before.
        """
        kind = EventKind.rolledBack
        self.assertEqual(
            (str(kind), f"{kind}", "{}".format(kind), "%s" % (kind,)),
            ("rolledBack",) * 4,
        )

    def test_equalToItsString(self) -> None:
        """
        A kind equals, and hashes as, its string: an event read back from
        JSON matches it.
        """
        self.assertEqual(EventKind.switched, "switched")
        self.assertIn("switched", {EventKind.switched})
        self.assertIs(EventKind("switched"), EventKind.switched)

    def test_everyKindDescribed(self) -> None:
        """
        L{EVENT_KINDS} has every kind, the deployer's and the streamed
        redeploy's own, each with its description.
        """
        self.assertEqual(list(EVENT_KINDS), [kind.value for kind in EventKind])
        for name in ("queued", "waiting", "result", "watching", "watched"):
            self.assertTrue(EventKind(name).streamedOnly, name)
        for kind in EventKind:
            self.assertTrue(EVENT_KINDS[kind].strip(), kind)

    def test_deployerSharesThem(self) -> None:
        """
        L{rainbowd.app.deployer.EVENT_KINDS} is the same table.
        """
        self.assertIs(deployer.EVENT_KINDS, EVENT_KINDS)

    def test_outcomes(self) -> None:
        """
        The kinds that end a deploy are C{deployed}, C{failed} and
        C{refused}.
        """
        self.assertEqual(OUTCOMES, ("deployed", "failed", "refused"))


class EmitTests(SynchronousTestCase):
    """
    The deployer's events carry an L{EventKind}.
    """

    def test_kindIsEventKind(self) -> None:
        """
        An event the deployer emits has an L{EventKind} for its kind.
        """
        h = Harness(self)
        events: List[Event] = []
        h.deployer.observe(events.append)
        h.deployer.startService()
        self.addCleanup(h.deployer.stopService)
        self.assertTrue(events)
        for event in events:
            self.assertIsInstance(event.kind, EventKind)

    def test_unknownKind(self) -> None:
        """
        The deployer refuses to emit an event of a kind that is not an
        L{EventKind}, rather than send observers a misspelt one.
        """
        h = Harness(self)
        self.assertRaises(ValueError, h.deployer._emit, "switchd", 3)


class RainbowctlTests(SynchronousTestCase):
    """
    rainbowctl reads the kinds.
    """

    def test_unknownKindIgnored(self) -> None:
        """
        A line of a kind rainbowctl does not know (from a newer rainbowd)
        is passed over, whatever its name.
        """
        out = io.StringIO()
        progress = Progress(out, False)
        progress.event({"event": "failure", "error": "x"})
        progress.event({"event": ["x"]})
        self.assertEqual(out.getvalue(), "")
