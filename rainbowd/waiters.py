# -*- test-case-name: rainbowd.test.unit.test_waiters -*-
"""
Handing out Deferreds for something that has not happened yet.
"""

from typing import Dict

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Waiters:
    """
    Everyone waiting for the next time something happens: each gets a fresh
    Deferred, and all of them fire together with the same result.
    """

    def __init__(self) -> None:
        # A dict, in the order they came, so that a cancel finds its
        # Deferred without a search: thousands of held requests may hang up.
        self._waiting: Dict[Deferred, None] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self) -> Deferred:
        """
        A Deferred that fires at the next L{fire}; cancelling it stops the
        wait.
        """
        d: Deferred[None] = Deferred(canceller=self._forget)
        self._waiting[d] = None
        return d

    def _forget(self, d: Deferred) -> None:
        self._waiting.pop(d, None)

    def fire(self, result) -> None:
        """
        Fire every Deferred waiting so far with C{result}, a value or a
        L{Failure}.
        """
        waiting, self._waiting = self._waiting, {}
        for d in waiting:
            if d.called:
                # Cancelled by the callback of one fired before it.
                continue
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
