# -*- test-case-name: rainbowd.test.unit.test_outputlines -*-
"""
A process's output cut into lines, with no I/O: the bytes that come on each
of its descriptors in, the lines they complete out.  A line that reaches
L{LONGEST_LINE} bytes without its end is cut there, so that a process
printing without line ends cannot make rainbowd hold its output without
bound.  The app's generations, their verify commands and a new rainbowd of
an upgrade are all read this way.
"""

from typing import Dict, List, Tuple

#: The longest line of output kept whole, in bytes.
LONGEST_LINE = 64 * 1024


class OutputLines:
    """
    The lines of a process's output, per descriptor.
    """

    def __init__(self) -> None:
        self._partial: Dict[int, bytes] = {}

    def received(self, fd: int, data: bytes) -> List[bytes]:
        """
        C{data} came on descriptor C{fd}.

        @return: The lines it completes, without their line ends (a CR
            before the LF is the caller's to strip or keep).
        """
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) >= LONGEST_LINE:
            lines.append(rest)
            rest = b""
        self._partial[fd] = rest
        return lines

    def unended(self) -> List[Tuple[int, bytes]]:
        """
        What came after the last line end of each descriptor, for a process
        whose output has ended; it is then forgotten.
        """
        rest = [(fd, partial) for fd, partial in self._partial.items() if partial]
        self._partial = {}
        return rest

    def pending(self) -> List[bytes]:
        """
        What came after the last line end of each descriptor so far, kept.
        """
        return [partial for partial in self._partial.values() if partial]
