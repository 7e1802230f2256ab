# -*- test-case-name: rainbowd.test.unit.test_stopdelay -*-
"""
C{stopDelay}: keep serving for a while after a SIGTERM, so that a load
balancer takes the host out of its pool before rainbowd stops accepting.

During the delay, C{lbHealthPath} answers 503 (see L{rainbowd.web.lbhealth})
while every other request is served as usual; the load balancer sees the
check fail C{fall} times in a row, every C{inter}, and stops sending new
requests.  Only then are the ports closed and the versions drained.  This is
Kubernetes' preStop sleep, done by rainbowd.
"""

from typing import Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class StopDelay:
    """
    The wait between the order to stop and the stop itself.

    twistd stops the children of a L{MultiService} all at once, so the
    service holding the listening ports and the deployer waits for
    L{StopDelay.begin} before it stops any of them (see
    C{rainbowd.tap._OrderlyStop}).

    @ivar stopping: L{StopDelay.begin} was called: the host is on its way
        out of the load balancer's pool.
    """

    log = Logger()
    stopping = False

    def __init__(self, delay: float, clock: IReactorTime) -> None:
        """
        @param delay: seconds between L{begin} and the firing of its
            Deferred; 0 for none.
        @param clock: where the delay is timed.
        """
        self._delay = delay
        self._clock = clock
        self._call: Optional[IDelayedCall] = None
        self._waited: Deferred = Deferred()

    def begin(self) -> Deferred:
        """
        Raise C{stopping}, and wait C{delay}.

        @return: a Deferred that fires once the delay is over (at once if it
            is 0) or cut short.
        """
        self.stopping = True
        if self._delay <= 0:
            return succeed(None)
        self.log.info(
            "stopping in {delay:.1f} s (stopDelay): lbHealthPath answers 503 "
            "meanwhile and every other request is served as usual; then the "
            "ports close and the app drains",
            delay=self._delay,
        )
        self._call = self._clock.callLater(self._delay, self._over)
        return self._waited

    def _over(self) -> None:
        self._call = None
        self.log.info("stopDelay is over: closing the ports and draining")
        self._waited.callback(None)

    def cutShort(self, why: str) -> bool:
        """
        End the delay now, if it is under way: a second SIGTERM means the
        operator will not wait.

        @param why: what cut it short, for the log (C{"SIGTERM"}).
        @return: whether there was a delay to end.
        """
        if self._call is None:
            return False
        left = self._call.getTime() - self._clock.seconds()
        self._call.cancel()
        self._call = None
        self.log.warn(
            "{why} during stopDelay: cutting it short by {left:.1f} s; closing "
            "the ports and draining now",
            why=why,
            left=left,
        )
        self._waited.callback(None)
        return True


def stopDelayWarning(stopDelay: float, lbHealthPath: Optional[str]) -> Optional[str]:
    """
    A warning if a C{stopDelay} is set with no C{lbHealthPath} to tell the
    load balancer: the delay then only makes the stop slower.
    """
    if stopDelay <= 0 or lbHealthPath is not None:
        return None
    return (
        '"stopDelay" is set but "lbHealthPath" is not, so no load balancer '
        "can see that rainbowd is stopping: the delay only makes each stop "
        'slower.  Set "lbHealthPath" (e.g. "/_rainbowd/up") and point the '
        'load balancer\'s health check at it, or set "stopDelay" to 0.'
    )
