# -*- test-case-name: rainbowd.test.unit.test_shutdown -*-
"""
What a stopping rainbowd waits for, said in its log: which generations are
still draining or stopping, and what each still holds.
"""

from typing import Any, Callable, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: How often a stopping rainbowd says what it still waits for, in seconds.
REPORT_INTERVAL = 1.0

_log = Logger(namespace="rainbowd.app.shutdown")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def describeWait(backend: Any) -> str:
    """
    A generation a shutdown waits for, with its state and what it holds:
    requests in flight and upgraded connections (WebSockets) open.
    """
    held = []
    if backend.inflight:
        held.append(f"{_plural(backend.inflight, 'request')} in flight")
    if backend.tunnels:
        held.append(f"{_plural(len(backend.tunnels), 'upgraded connection')} open")
    if not held:
        held.append("its processes have not exited yet")
    return f"generation {backend.generation} ({backend.state.value}: {', '.join(held)})"


def reportShutdown(
    clock: IReactorTime,
    backends: Callable[[], Sequence[Any]],
    interval: float = REPORT_INTERVAL,
) -> Callable[[object], object]:
    """
    Log now, and every C{interval} seconds after, the generations in
    C{backends()} that a shutdown still waits for, until the function
    returned is called (with the shutdown's result, which it returns, to
    go in C{addBoth}).
    """

    def report() -> None:
        waiting = backends()
        if waiting:
            _log.info(
                "shutting down: waiting for {waits}",
                waits="; ".join(describeWait(backend) for backend in waiting),
            )

    loop = LoopingCall(report)
    loop.clock = clock
    loop.start(interval, now=True)

    def done(result: object) -> object:
        if loop.running:
            loop.stop()
        return result

    return done
