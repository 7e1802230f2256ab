# -*- test-case-name: rainbowd.test.test_waiters -*-
"""
Handing out Deferreds for something that has not happened yet.
"""

from typing import List

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Waiters:
    """
    Everyone waiting for the next time something happens: each gets a fresh
    Deferred, and all of them fire together with the same result.
    """

    def __init__(self) -> None:
        self._waiting: List[Deferred] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self) -> Deferred:
        """
        A Deferred that fires at the next L{fire}; cancelling it stops the
        wait.
        """
        d = Deferred(canceller=self._waiting.remove)
        self._waiting.append(d)
        return d

    def fire(self, result) -> None:
        """
        Fire every Deferred waiting so far with C{result}, a value or a
        L{Failure}.
        """
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
