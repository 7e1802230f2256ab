# -*- test-case-name: rainbowd.test.unit.test_outputlines -*-
"""
Tests for L{rainbowd.app.outputlines}.
"""

from twisted.trial.unittest import SynchronousTestCase

from rainbowd.app.outputlines import LONGEST_LINE, OutputLines


class OutputLinesTests(SynchronousTestCase):
    """
    Tests for L{OutputLines}.
    """

    def test_lines(self) -> None:
        """
        Bytes make lines as their line ends come, each descriptor on its
        own; what is not ended yet is pending, and once the output ends,
        unended.
        """
        lines = OutputLines()
        self.assertEqual(lines.received(1, b"one\ntw"), [b"one"])
        self.assertEqual(lines.received(2, b"err"), [])
        self.assertEqual(lines.received(1, b"o\r\nthree"), [b"two\r"])
        self.assertEqual(lines.pending(), [b"three", b"err"])
        self.assertEqual(lines.unended(), [(1, b"three"), (2, b"err")])
        self.assertEqual(lines.unended(), [])

    def test_longLineCut(self) -> None:
        """
        Output with no line end is a line once it reaches L{LONGEST_LINE}
        bytes, so it is never held without bound.
        """
        lines = OutputLines()
        self.assertEqual(lines.received(1, b"x" * (LONGEST_LINE - 1)), [])
        self.assertEqual(lines.received(1, b"yz"), [b"x" * (LONGEST_LINE - 1) + b"yz"])
        self.assertEqual(lines.pending(), [])
