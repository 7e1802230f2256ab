# -*- test-case-name: rainbowd.test.unit.test_systemd,rainbowd.test.endtoend.test_systemd -*-
"""
Running under systemd (or any supervisor): readiness notification
(C{Type=notify}) and C{SIGHUP} as a redeploy (C{systemctl reload}).
"""

import os
import signal
import socket
import time
from typing import Any, Callable, Mapping, Optional

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python.failure import Failure

from rainbowd.app.deployer import Event
from rainbowd.events import EventKind

_log = Logger()


def notifyAddress(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """
    Where systemd wants notifications: C{$NOTIFY_SOCKET}, a path or, when it
    starts with C{@}, an abstract socket name; L{None} if not set.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


class Notifier:
    """
    Sends C{sd_notify(3)} messages, such as C{READY=1}, to C{address}: one
    C{AF_UNIX} datagram each.  Without an address it sends nothing.
    """

    def __init__(self, address: Optional[str]) -> None:
        self.address = address

    def notify(self, *lines: str) -> None:
        if self.address is None:
            return
        message = "\n".join(lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message, self.address)
        except OSError as e:
            _log.warn(
                "cannot notify systemd at {address} ({message}): {error}",
                address=self.address.replace("\0", "@"),
                message=message.decode("utf-8"),
                error=e.strerror or str(e),
            )


def _monotonicUsec() -> str:
    return f"MONOTONIC_USEC={time.monotonic_ns() // 1000}"


class Readiness(Service):
    """
    Tell systemd that rainbowd is ready (C{READY=1}) once the first
    generation is serving, keep its C{STATUS=} current, and say
    C{STOPPING=1} when stopping.

    @param deployer: whose events say what is serving.
    @param notifier: a L{Notifier}.
    @param port: the proxy's endpoint, for C{STATUS=}.
    """

    def __init__(self, deployer: Any, notifier: Notifier, port: str) -> None:
        self._deployer = deployer
        self._notifier = notifier
        self._port = port
        self._ready = False
        self._reloads = 0
        self._stopObserving: Optional[Callable[[], None]] = None

    def startService(self) -> None:
        Service.startService(self)
        self._stopObserving = self._deployer.observe(self._observe)

    def stopService(self) -> None:
        Service.stopService(self)
        self._notifier.notify("STOPPING=1", "STATUS=draining and stopping the app")
        if self._stopObserving is not None:
            self._stopObserving()
            self._stopObserving = None

    def _observe(self, event: Event) -> None:
        if event.kind == EventKind.switched:
            status = self._serving(event.generation)
            if self._ready:
                self._notifier.notify(status)
            else:
                self._ready = True
                self._notifier.notify("READY=1", status)
        elif event.kind == EventKind.crashed:
            self._notifier.notify(
                f"STATUS=generation {event.generation} {event.details['exit']}; "
                "starting a replacement"
            )
        elif event.kind == EventKind.unresponsive:
            self._notifier.notify(
                f"STATUS=generation {event.generation} does not answer "
                f"({event.details['error']}); starting a replacement"
            )
        elif event.kind == EventKind.recovered:
            self._notifier.notify(self._serving(event.generation))
        elif event.kind == EventKind.rolledBack:
            self._notifier.notify(
                f"{self._serving(event.generation)}, rolled back by itself from "
                f"generation {event.details['from']}, which "
                f"{event.details['reason']}"
            )

    def reloading(self) -> None:
        """
        A redeploy asked for with SIGHUP has begun.  (Before rainbowd is
        ready, systemd is still waiting for READY=1 and is told nothing.)
        """
        if not self._ready:
            return
        self._reloads += 1
        if self._reloads == 1:
            self._notifier.notify(
                "RELOADING=1", _monotonicUsec(), "STATUS=redeploying"
            )

    def reloaded(self) -> None:
        """
        That redeploy has an outcome, whatever it is.  READY=1 ends the
        reload systemd was told of, once every SIGHUP since has its
        outcome; one it was not told of (rainbowd was not ready yet) ends
        nothing.
        """
        if self._reloads == 0:
            return
        self._reloads -= 1
        if self._reloads:
            return
        active = self._deployer.active
        self._notifier.notify(
            "READY=1", self._serving(None if active is None else active.generation)
        )

    def _serving(self, generation: Optional[int]) -> str:
        if generation is None:
            return "STATUS=no generation is serving"
        return f"STATUS=serving generation {generation} on {self._port}"


class RedeployOnHangup(Service):
    """
    Redeploy on C{SIGHUP}, so that C{systemctl reload} (with
    C{ExecReload=/bin/kill -HUP $MAINPID}) deploys; log the outcome.

    The handler is installed once the reactor runs (twistd's own handlers
    are installed then too), with C{installSignal}.

    @param reactor: provides C{callWhenRunning} and C{callFromThread}.
    @param redeploy: L{rainbowd.app.deployer.Deployer.redeploy}, asked in the
        name of C{SIGHUP}.
    @param readiness: a L{Readiness} to tell of the reload, or L{None}.
    @param installSignal: L{signal.signal}, or a test's fake.
    """

    def __init__(
        self,
        reactor: Any,
        redeploy: Callable[..., Any],
        readiness: Optional[Readiness] = None,
        installSignal: Callable[..., Any] = signal.signal,
    ) -> None:
        self._reactor = reactor
        self._redeploy = redeploy
        self._readiness = readiness
        self._installSignal = installSignal

    def startService(self) -> None:
        Service.startService(self)
        self._reactor.callWhenRunning(
            self._installSignal, signal.SIGHUP, self._hangup
        )

    def _hangup(self, signum: int, frame: object) -> None:
        # A signal handler may run in the middle of anything: do the work in
        # the reactor.
        self._reactor.callFromThread(self.redeploy)

    def redeploy(self) -> None:
        if not self.running:
            _log.info("SIGHUP while stopping: no redeploy")
            return
        _log.info("SIGHUP: redeploying", event="sighup")
        if self._readiness is not None:
            self._readiness.reloading()
        d = self._redeploy(requester="SIGHUP")
        d.addBoth(self._outcome)

    def _outcome(self, outcome: Any) -> None:
        if isinstance(outcome, Failure):
            _log.error(
                "redeploy on SIGHUP failed: {reason}; the current version "
                "serves on",
                reason=str(outcome.value),
                event="sighup",
                ok=False,
            )
        else:
            _log.info(
                "redeploy on SIGHUP done: generation {generation} serves on "
                "port {port} ({seconds} s)",
                generation=outcome.generation,
                port=outcome.port,
                seconds=outcome.seconds,
                event="sighup",
                ok=True,
            )
        if self._readiness is not None:
            self._readiness.reloaded()
