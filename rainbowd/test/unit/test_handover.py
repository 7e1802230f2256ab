"""
Tests for L{rainbowd.upgrade.handover}.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.upgrade import handover
from rainbowd.upgrade.handover import (
    FORMAT_VERSION,
    Generation,
    HandoverRefused,
    State,
    decode,
    encode,
)


def aState() -> State:
    return State(
        pid=41,
        listening={"port": 0, "controlPort": 1},
        settings={"port": 7000, "controlPort": "unix:/run/rainbowd.sock"},
        lock=2,
        generation=4,
        pidfile="/run/twistd.pid",
        generations=[
            Generation(
                generation=3,
                pid=100,
                pgid=100,
                port=20001,
                state="standby",
                directory="/srv/releases/3",
                output=["booted", "GET / 200"],
                stdout=3,
                stderr=4,
            ),
            Generation(generation=4, pid=200, pgid=200, port=20002, state="active"),
        ],
        active=4,
        standby={"generation": 3, "secondsLeft": 12.5},
        traffic={"mode": "paused", "by": "unix:/run/rainbowd.sock", "message": None},
        deploys=17,
        historyFile="/srv/.rainbowd/deploys.jsonl",
        startedAt=1700000000.0,
    )


class RoundTripTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A state encoded and decoded is the state it was, every field kept.
        """
        state = aState()
        self.assertEqual(decode(encode(state)), state)

    def test_versioned(self) -> None:
        """
        The encoded state is a JSON object carrying the format version.
        """
        self.assertEqual(json.loads(encode(aState()))["format"], FORMAT_VERSION)

    def test_emptyState(self) -> None:
        """
        A rainbowd with no generation (its app failed to start) hands over
        too.
        """
        state = State(pid=1, listening={"port": 0, "controlPort": 1}, settings={})
        self.assertEqual(decode(encode(state)), state)


class RefusalTests(SynchronousTestCase):
    def test_unknownVersion(self) -> None:
        """
        A state of another format version -- a newer rainbowd handing down
        to an older one -- is refused, saying which versions and that the
        old rainbowd serves on.
        """
        body = json.loads(encode(aState()))
        body["format"] = FORMAT_VERSION + 1
        with self.assertRaises(HandoverRefused) as caught:
            decode(json.dumps(body).encode())
        message = str(caught.exception)
        self.assertIn(f"format {FORMAT_VERSION + 1}", message)
        self.assertIn(f"only format {FORMAT_VERSION}", message)
        self.assertIn("serves on", message)

    def test_noVersion(self) -> None:
        """
        A state without a format version is refused.
        """
        body = json.loads(encode(aState()))
        del body["format"]
        with self.assertRaises(HandoverRefused) as caught:
            decode(json.dumps(body).encode())
        self.assertIn("format None", str(caught.exception))

    def test_notJSON(self) -> None:
        """
        Bytes that are not JSON are refused, not raised as a ValueError.
        """
        with self.assertRaises(HandoverRefused) as caught:
            decode(b"\x00garbage")
        self.assertIn("not JSON", str(caught.exception))

    def test_notAnObject(self) -> None:
        """
        JSON that is not an object is refused.
        """
        with self.assertRaises(HandoverRefused) as caught:
            decode(b"[1, 2]")
        self.assertIn("not a JSON object", str(caught.exception))

    def test_unknownField(self) -> None:
        """
        A state of the right version with a field this rainbowd does not
        know is refused rather than half read.
        """
        body = json.loads(encode(aState()))
        body["generations"][0]["surprise"] = 1
        with self.assertRaises(HandoverRefused) as caught:
            decode(json.dumps(body).encode())
        self.assertIn("surprise", str(caught.exception))

    def test_missingField(self) -> None:
        """
        A state lacking what this version needs (the listening sockets) is
        refused.
        """
        body = json.loads(encode(aState()))
        del body["listening"]
        with self.assertRaises(HandoverRefused):
            decode(json.dumps(body).encode())


class FixedKeysTests(SynchronousTestCase):
    def test_unchanged(self) -> None:
        """
        The same port and control port: nothing to say.
        """
        same = {"port": 7000, "controlPort": 7001}
        self.assertEqual(handover.fixedKeysChanged(same, dict(same)), [])

    def test_changed(self) -> None:
        """
        A changed port is named, with its old and new values and the fix.
        """
        [problem] = handover.fixedKeysChanged(
            {"port": 7000, "controlPort": 7001}, {"port": 8000, "controlPort": 7001}
        )
        self.assertIn('"port" changed from 7000 to 8000', problem)
        self.assertIn("put it back", problem)


class MessageTests(SynchronousTestCase):
    def test_ready(self) -> None:
        """
        The ready line parses back to the message and the new pid.
        """
        self.assertEqual(
            handover.parseLine(handover.readyLine(99).rstrip(b"\n")),
            {"message": "ready", "pid": 99},
        )

    def test_refused(self) -> None:
        """
        The refusal line parses back to its error.
        """
        self.assertEqual(
            handover.parseLine(handover.refusedLine("no").rstrip(b"\n")),
            {"message": "refused", "error": "no"},
        )

    def test_garbage(self) -> None:
        """
        A line that is no message is a refusal that quotes it.
        """
        message = handover.parseLine(b"Traceback (most recent call last):")
        self.assertEqual(message["message"], "refused")
        self.assertIn("Traceback", message["error"])
