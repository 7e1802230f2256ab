# -*- test-case-name: rainbowd.test.unit.test_traffic -*-
"""
Whether new requests on the public port go to the app: the traffic mode,
one of::

    serving       requests go to the routable backend (the usual mode)
    paused        new requests are held in rainbowd, without failing, until
                  traffic resumes or their C{queueTimeout} runs out
    maintenance   every new request is answered 503 with a small HTML page

The control API changes it (C{POST /pause}, C{/maintenance}, C{/resume});
the proxy reads L{Traffic.mode} once per request, and holds requests with
L{Traffic.hold}.  Deploys do not look at it, and do not change it: a deploy
while paused leaves traffic paused, and the held requests go to the new
version on resume.  It lives as long as rainbowd does, so it survives
redeploys but not restarts.

Requests already sent to a backend when traffic pauses, or goes into
maintenance, finish there: only those not yet sent are held or answered.
"""

import enum
import html
from typing import Callable, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from rainbowd.config import readMaintenancePage
from rainbowd.waiters import Waiters

_log = Logger()


class Mode(enum.Enum):
    SERVING = "serving"
    PAUSED = "paused"
    MAINTENANCE = "maintenance"


#: What each input leads to, from any mode.  Every input is allowed in
#: every mode, as in HAProxy's runtime API and kamal-proxy, so that a
#: script may repeat one safely: asking for the mode traffic is already in
#: changes nothing (but a new maintenance message, or page), and says so.
TRANSITIONS = {
    "pause": Mode.PAUSED,
    "maintenance": Mode.MAINTENANCE,
    "resume": Mode.SERVING,
}

_AS_WORDS = {
    Mode.SERVING: "serving",
    Mode.PAUSED: "paused",
    Mode.MAINTENANCE: "in maintenance",
}

#: The I{Retry-After} of a maintenance answer, in seconds.
RETRY_AFTER = 60

#: The message of the default maintenance page when none is given.
DEFAULT_MESSAGE = "This site is down for maintenance, and will be back shortly."

#: In a C{maintenancePage} file, replaced by the message, escaped.
MESSAGE_PLACEHOLDER = b"{{message}}"

_DEFAULT_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Down for maintenance</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;\
padding:0 1em;color:#222}}</style>
</head>
<body>
<h1>Down for maintenance</h1>
<p>{message}</p>
</body>
</html>
"""


class TrafficStopped(Exception):
    """
    rainbowd is shutting down: a held request will not be sent to the app.
    """


def maintenancePage(message: Optional[str], template: Optional[bytes]) -> bytes:
    """
    The page every request gets in maintenance: C{template} (the
    C{maintenancePage} file) with its L{MESSAGE_PLACEHOLDER}s replaced, or
    the default page; the message, HTML-escaped, or L{DEFAULT_MESSAGE}.
    """
    escaped = html.escape(message or DEFAULT_MESSAGE)
    if template is None:
        return _DEFAULT_PAGE.format(message=escaped).encode("utf-8")
    return template.replace(MESSAGE_PLACEHOLDER, escaped.encode("utf-8"))


class Traffic(Service):
    """
    The traffic mode, and the requests held while traffic is paused.

    Other parts read it without calling anything: C{mode} is a plain
    attribute (a health path for a load balancer answers 503 while
    C{traffic.mode is not Mode.SERVING}).

    @ivar mode: the current L{Mode}.
    @ivar since: when C{mode} began, in the clock's seconds; L{None} while
        serving since startup.
    @ivar by: who asked for C{mode} (the control client's address), or
        L{None} while serving since startup.
    @ivar message: the maintenance message asked for, or L{None}.
    @ivar page: the body of the maintenance answer, while in maintenance.
    """

    name = "traffic"  # type: ignore[assignment]  # Service.name is typed None

    def __init__(
        self,
        clock,
        queueTimeout: float,
        pagePath: Callable[[], Optional[str]] = lambda: None,
    ) -> None:
        """
        @param clock: Provides C{seconds()}.
        @param queueTimeout: How long a held request waits, for messages.
        @param pagePath: The C{maintenancePage} of the configuration in
            use (which a redeploy may change), or L{None}; read at each
            maintenance start.
        """
        self._clock = clock
        self._queueTimeout = queueTimeout
        self._pagePath = pagePath
        self._held = Waiters()
        self.mode = Mode.SERVING
        self.since: Optional[float] = None
        self.by: Optional[str] = None
        self.message: Optional[str] = None
        self.page: Optional[bytes] = None

    @property
    def held(self) -> int:
        """
        How many requests are held.
        """
        return len(self._held)

    # What the control API asks

    def pause(self, by: str) -> dict:
        """
        Hold new requests until L{resume}.
        """
        return self._change("pause", by)

    def maintenance(self, by: str, message: Optional[str] = None) -> dict:
        """
        Answer every new request, and those held, with the maintenance
        page until L{resume}.

        @raise rainbowd.config.ConfigError: if the C{maintenancePage} file
            cannot be read now; the mode is then unchanged.
        """
        path = self._pagePath()
        template = None if path is None else readMaintenancePage(path)
        page = maintenancePage(message, template)
        return self._change("maintenance", by, message, page)

    def resume(self, by: str) -> dict:
        """
        Send new requests, and those held, to the app again.
        """
        return self._change("resume", by)

    def _change(
        self,
        input: str,
        by: str,
        message: Optional[str] = None,
        page: Optional[bytes] = None,
    ) -> dict:
        """
        Apply C{input}, log it, and release the held requests if traffic is
        no longer paused; each then goes where the new mode says.

        @return: L{describe}, with C{changed}.
        """
        old, new = self.mode, TRANSITIONS[input]
        changed = old is not new or (message, page) != (self.message, self.page)
        if not changed:
            _log.info(
                "{by} asked to {input}; traffic is already {mode}, so "
                "nothing changes",
                by=by,
                input=input,
                mode=new.value,
            )
            return {**self.describe(), "changed": False}
        held = self.held
        now = self._clock.seconds()
        lasted = None if self.since is None else now - self.since
        if old is not new:
            self.since, self.by = now, by
        self.mode, self.message, self.page = new, message, page
        _log.info(
            "{by} asked to {input}: traffic is now {mode}{was}; {what}",
            by=by,
            input=input,
            mode=new.value,
            was="" if old is new or lasted is None
            else f" after {lasted:.1f} s {_AS_WORDS[old]}",
            what=self._sayWhat(held),
        )
        if old is Mode.PAUSED and new is not Mode.PAUSED:
            self._held.fire(None)
        return {**self.describe(), "changed": True}

    def _sayWhat(self, held: int) -> str:
        """
        What the new mode means for requests, in a sentence for the log.
        """
        if self.mode is Mode.PAUSED:
            return (
                "new requests wait (up to queueTimeout, {:g} s) until POST "
                "/resume".format(self._queueTimeout)
            )
        released = "" if not held else f" ({held} held requests are released)"
        if self.mode is Mode.MAINTENANCE:
            return (
                "every new request gets 503 and the maintenance page until "
                f"POST /resume{released}"
            )
        return f"new requests go to the app{released}"

    def describe(self) -> dict:
        """
        The mode, as JSON, for C{/status} and the control API's answers.
        """
        return {
            "mode": self.mode.value,
            "since": self.since,
            "by": self.by,
            "held": self.held,
            "message": self.message,
        }

    # What the proxy uses

    def hold(self) -> Deferred:
        """
        A Deferred that fires with L{None} once traffic is no longer paused
        (the request should then be routed again), or fails with
        L{TrafficStopped} once rainbowd is stopping; cancelling it stops
        the wait.
        """
        if not self.running:
            return fail(TrafficStopped("rainbowd is shutting down"))
        return self._held.wait()

    def whyHeld(self) -> str:
        """
        Why a request is held, and how to let it through, for its 503
        (which does not name who paused: clients of the public port need
        not know the operators' addresses).
        """
        return (
            "traffic is paused (POST /pause), so requests wait in rainbowd, "
            "and this one waited queueTimeout ({:g} s); POST /resume to the "
            "control port (rainbowctl resume) lets requests through"
        ).format(self._queueTimeout)

    # IService

    def stopService(self) -> None:
        """
        rainbowd is stopping: the held requests are answered, not sent.
        """
        Service.stopService(self)
        self._held.fire(Failure(TrafficStopped("rainbowd is shutting down")))
