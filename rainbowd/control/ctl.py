# -*- test-case-name: rainbowd.test.unit.test_ctl,rainbowd.test.endtoend.test_ctl -*-
"""
C{rainbowctl}: redeploy, rollback, status, history, logs, pause and
maintenance from the command line.

It finds the control API the way rainbowd does, from C{rainbow.conf.json}
in the current directory (or C{--config PATH}): C{controlPort} (C{port} +
1 by default) and C{controlTokenFile}.  So in the app's directory::

    rainbowctl redeploy -m "$(git rev-parse --short HEAD)"
    rainbowctl rollback
    rainbowctl status
    rainbowctl history
    rainbowctl logs --follow
    rainbowctl pause
    rainbowctl maintenance "Back at 14:00 UTC"
    rainbowctl resume

It is a plain blocking HTTP client (L{rainbowd.control.client}: one
request, one answer read as it comes), so it needs no reactor, and it starts
fast: it imports neither Twisted nor, until a command needs the config,
L{rainbowd.config} and attrs (so its own records are L{NamedTuple}s).  What
it prints is made by L{Progress}, L{statusTable} and L{historyTable}, which
do not touch the network.
"""

import argparse
import json
import math
import os
import sys
import time
import unicodedata
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

from rainbowd import versionLine
from rainbowd.configfile import DEFAULT_FILENAME, ConfigError
from rainbowd.control.api import NDJSON, failureHint, readControlToken
from rainbowd.control.client import Connection, tcpConnection, unixConnection
from rainbowd.endpoints import endpointArguments, tcpPortNumber
from rainbowd.environment import VERIFY_VARIABLE
from rainbowd.events import EventKind
from rainbowd.web.http1 import BadResponse

if TYPE_CHECKING:
    from rainbowd.control.remote import RemoteAddress

#: Exit codes: the deploy failed, or rainbowd answered the request with an
#: error; rainbowctl could not ask.
FAILED = 1
CANNOT = 2

#: How long rainbowctl waits for any answer from rainbowd, in seconds; a
#: streamed redeploy sends a line at least every second.
TIMEOUT = 120.0


class CtlError(Exception):
    """
    rainbowctl cannot do what it was asked; C{str()} says why and what to
    do.
    """


class Answered(Exception):
    """
    rainbowd answered the request with an error; C{str()} says it for a
    person, with what to do.
    """


class ControlAddress(NamedTuple):
    """
    Where the control API listens, as a client connects to it: TCP C{host}
    and C{port}, or the unix socket C{path}.
    """

    host: Optional[str] = None
    port: Optional[int] = None
    path: Optional[str] = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"the unix socket {self.path}"
        host = self._host()
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    def connect(self, timeout: Optional[float]) -> Connection:
        if self.path is not None:
            return unixConnection(self.path, timeout)
        assert self.port is not None, "a ControlAddress on TCP needs a port"
        return tcpConnection(self._host(), self.port, timeout)

    def _host(self) -> str:
        # An address is either a path or a host and port.
        assert self.host is not None, "a ControlAddress needs a path or a host"
        return self.host


_ANY = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def controlAddress(description: str) -> ControlAddress:
    """
    The address to reach a control API listening on server endpoint
    C{description}, as L{loadConfig} leaves C{controlPort}.

    @raise CtlError: for a kind of endpoint rainbowctl cannot reach.
    """
    kind, arguments = endpointArguments(description)
    port = tcpPortNumber(description)
    if port is not None:
        interface = arguments.get("interface", "::" if kind == "tcp6" else "")
        return ControlAddress(host=_ANY.get(interface, interface), port=port)
    if kind == "unix":
        path = arguments.get("address", "")
        if path:
            return ControlAddress(path=path)
    raise CtlError(
        f'rainbowctl cannot reach a control API on "{description}": it '
        'knows tcp: and unix: endpoints; give rainbowd a "controlPort" like '
        '7001 or "unix:/run/rainbowd/control.sock:mode=600".'
    )


class Target(NamedTuple):
    """
    A rainbowd's control API: where it is, its token, and where that was
    read from (for messages).
    """

    address: Union[ControlAddress, "RemoteAddress"]
    token: Optional[bytes]
    source: str
    tokenFile: Optional[str] = None
    #: What is wrong with the rest of the config, a sentence each.
    warnings: Tuple[str, ...] = ()
    #: It was given by C{--control}, not read from the config.
    remote: bool = False


def findTarget(configPath: Optional[str], cwd: Optional[str] = None) -> Target:
    """
    Read the keys of the config that say where the control API is and
    its token, as rainbowd would; what is wrong with the rest of it is
    only warned about (see L{loadControlKeys}).

    @raise CtlError: if there is no config, those keys are wrong, or the
        token file cannot be read: without it every request would be
        refused.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    if configPath is None and not os.path.exists(os.path.join(cwd, DEFAULT_FILENAME)):
        raise CtlError(
            f"No {DEFAULT_FILENAME} in {cwd}: run rainbowctl in the "
            "directory rainbowd runs in, or pass --config PATH."
        )
    # Imported only now: loading a config (attrs, every key's field) is
    # most of rainbowctl's start, which --help does without.
    from rainbowd.config import loadControlKeys

    try:
        keys = loadControlKeys(configPath, cwd=cwd)
        token = None
        if keys.controlTokenFile is not None:
            token = readControlToken(keys.controlTokenFile)[0]
    except ConfigError as e:
        raise CtlError(str(e))
    address = controlAddress(keys.controlPort)
    if address.path is not None and not os.path.isabs(address.path):
        # rainbowd resolves it against the directory it was started in,
        # which is the config file's, as a rule.
        home = os.path.dirname(keys.source)
        address = address._replace(path=os.path.join(home, address.path))
    return Target(address, token, keys.source, keys.controlTokenFile, keys.warnings)


class Client:
    """
    Requests to one rainbowd's control API.

    @param connect: makes a L{Connection}-like object for
        a timeout; tests pass a fake.
    """

    def __init__(self, target: Target, connect: Optional[Callable[..., Any]] = None):
        self._target = target
        self._connect = connect or target.address.connect

    def request(
        self,
        method: str,
        path: str,
        accept: str = "application/json",
        timeout: Optional[float] = TIMEOUT,
        body: Optional[Dict[str, Any]] = None,
    ):
        """
        Send a request and return the response, its headers read.  A POST
        without C{body} sends an empty one; C{body} is sent as JSON.

        @param body: sent as JSON; a POST without one sends an empty body.

        @raise CtlError: if rainbowd cannot be reached, or refuses the
            token.
        """
        headers = {"Accept": accept}
        data = b"" if method == "POST" else None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._target.token is not None:
            headers["Authorization"] = "Bearer " + self._target.token.decode("ascii")
        connection = self._connect(timeout)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
        except PermissionError as e:
            raise CtlError(
                f"Cannot connect to rainbowd's control API at "
                f"{self._target.address} ({e.strerror}): run rainbowctl as "
                "the user rainbowd runs as, or widen the socket's mode."
            )
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise CtlError(
                f"Cannot connect to rainbowd's control API at "
                f"{self._target.address} ({e.strerror or e}): rainbowd may "
                f"not be running.  It was looked for as set in "
                f"{self._target.source}."
            )
        except (OSError, BadResponse) as e:
            raise CtlError(
                f"The control API at {self._target.address} did not answer: {e}."
            )
        if response.status == 401:
            response.close()
            raise CtlError(self._unauthorized())
        if response.status == 403:
            # The control site's Host or Origin check: like a refused
            # token, rainbowd would answer no request of this client.
            raise CtlError(f"rainbowd refused to answer (403): {_answerOf(response)['error']}")
        return response

    def _unauthorized(self) -> str:
        if self._target.token is None and self._target.remote:
            return (
                "rainbowd asks for a token (401): pass --token-file with the "
                "file holding the token that rainbowd reads."
            )
        if self._target.token is None:
            return (
                "rainbowd asks for a token (401), and none is configured "
                f'here: set "controlTokenFile" in {self._target.source} to '
                "the file rainbowd reads its token from."
            )
        return (
            f"rainbowd refused the token in {self._target.tokenFile} (401): it "
            "is not the one rainbowd started with.  rainbowd reads its token "
            "file only at startup; restart it after changing the token."
        )


def _answerOf(response) -> Dict[str, Any]:
    """
    The JSON object of an error answer, with its C{error} (the status line
    if it has none).
    """
    try:
        answer = json.loads(response.read())
        if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
            raise ValueError(answer)
    except ValueError:
        return {"error": f"{response.status} {response.reason}"}
    return answer


def _refused(what: str, response) -> Answered:
    """
    rainbowd's error answer to C{what}, as an L{Answered}.
    """
    return Answered(f"{what} failed: {_answerOf(response)['error']}")


def _noLogs(answer: Dict[str, Any], generation: Optional[int]) -> str:
    """
    Why C{GET /logs} found no generation (C{answer} is its 404), and what
    to do.
    """
    running = answer["generations"]
    if running:
        names = ", ".join(str(g) for g in running)
        now = f"running now: generation{'' if len(running) == 1 else 's'} {names}"
    else:
        now = "no generation is running now"
    if generation is None:
        return f"no generation is serving ({now}); choose one with --generation N."
    return (
        f"generation {generation} is not running ({now}).  rainbowctl logs "
        "shows the output of running generations only; rainbowd's own log "
        "has every line the app printed."
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class Progress:
    """
    Print the NDJSON lines of a streamed redeploy as sentences.

    On a terminal, the line saying how long a generation has been starting
    (or draining) is rewritten in place; elsewhere every line is plain, and
    those updates only come every L{PLAIN_EVERY} seconds (or on a change).
    """

    PLAIN_EVERY = 10.0

    def __init__(self, out: IO[str], tty: bool, err: Optional[IO[str]] = None) -> None:
        self._out = out
        self._err = out if err is None else err
        self._tty = tty
        self._transient = False
        self._shown: Dict[Any, Any] = {}
        self._deploy: Optional[int] = None
        self._health: Dict[int, Dict[str, Any]] = {}
        self._shuttingDown = False
        self._cause: Optional[str] = None
        self.result: Optional[Dict[str, Any]] = None
        self.watched: Optional[Dict[str, Any]] = None

    def event(self, event: Dict[str, Any]) -> None:
        try:
            kind = EventKind(event.get("event", ""))
        except ValueError:
            return  # a kind this rainbowctl does not know of
        handler = getattr(self, "_" + kind.value, None)
        if handler is not None:
            handler(event)

    def end(self) -> int:
        """
        The stream is over: the exit code.
        """
        self._clear()
        if self.result is not None and not self.result.get("ok"):
            self._failure(self.result)
        if self.result is None:
            self._out.flush()
            if self._shuttingDown:
                self._err.write(
                    "rainbowctl: rainbowd is shutting down, and closed the "
                    "connection before the deploy's outcome.\n"
                )
            else:
                self._err.write(
                    "rainbowctl: the connection to rainbowd closed before the "
                    "deploy's outcome; see rainbowctl status.\n"
                )
            self._err.flush()
            return FAILED
        if not self.result.get("ok"):
            return FAILED
        if self.watched is not None and self.watched.get("rolledBack"):
            return FAILED
        return 0

    # Output

    def _say(self, text: str) -> None:
        self._clear()
        self._out.write(text + "\n")
        self._out.flush()

    def _update(self, key, value, text: str, elapsed: float) -> None:
        """
        A line that reports a wait: rewritten on a terminal; elsewhere
        printed when C{value} changes or every L{PLAIN_EVERY} seconds.
        """
        if self._tty:
            self._out.write("\r\x1b[K" + text)
            self._out.flush()
            self._transient = True
            return
        last = self._shown.get(key)
        step = int(elapsed // self.PLAIN_EVERY)
        if last is None or last[0] != value or step > last[1]:
            self._say(text)
            self._shown[key] = (value, step)

    def _clear(self) -> None:
        if self._transient:
            self._out.write("\r\x1b[K")
            self._transient = False

    # Events

    def _queued(self, event) -> None:
        self._say("Another deploy is under way; this one starts after it.")

    def _deploying(self, event) -> None:
        self._deploy = event["deploy"]
        self._cause = event.get("cause")
        what = "rollback" if self._cause == "rollback" else "deploy"
        self._say(f"{what} {event['deploy']} started")

    def _launching(self, event) -> None:
        # Deploys and generations are numbered apart (a deploy that fails
        # before it launches, or a rollback, launches no generation): say
        # which number is which.
        self._say(
            f"deploy {event.get('deploy')}: launching generation "
            f"{event['generation']} on port {event['port']}"
        )

    def _unhealthy(self, event) -> None:
        """
        The starting generation's health check keeps failing the same way:
        said once per kind of failure; the count then goes on the waiting
        line.
        """
        generation = event["generation"]
        last = self._health.get(generation)
        self._health[generation] = event
        if last is None or last.get("error") != event.get("error"):
            self._say(
                f"generation {generation}: {event.get('error')} "
                f"({_plural(event['checks'], 'time')} in a row); still "
                "waiting, up to startTimeout"
            )

    def _retrying(self, event) -> None:
        self._say(
            f"generation {event['generation']} lost port {event['port']} to "
            "another process; trying another port"
        )

    def _waiting(self, event) -> None:
        step = event.get("step")
        if step == "queued":
            self._update(
                ("waiting", None, step),
                None,
                f"waiting for the deploy under way: {event['elapsed']:.0f} s",
                event["elapsed"],
            )
            return
        generation = event["generation"]
        health = None if step == "verify" else self._health.get(generation)
        check = (
            ""
            if health is None
            else f"; {health.get('error')} ({_plural(health['checks'], 'time')})"
        )
        self._update(
            ("waiting", generation, step),
            None,
            f"waiting for generation {generation}"
            + ("'s verify" if step == "verify" else " to be healthy")
            + f": {event['elapsed']:.0f} s{check}",
            event["elapsed"],
        )

    def _healthy(self, event) -> None:
        self._say(
            f"generation {event['generation']} is healthy after {event['seconds']:g} s"
        )

    def _verifying(self, event) -> None:
        self._say(
            f"verifying generation {event['generation']} on port {event['port']}: "
            f"{event['command']}"
        )

    def _verifyOutput(self, event) -> None:
        self._say(f"    verify: {_printable(event['line'])}")

    def _verified(self, event) -> None:
        self._say(
            f"generation {event['generation']} passed its verify in "
            f"{event['seconds']:g} s"
        )

    def _switched(self, event) -> None:
        previous = event.get("previous")
        since = f" (was generation {previous})" if previous is not None else ""
        self._say(f"switched: generation {event['generation']} serves traffic{since}")

    def _draining(self, event) -> None:
        generation = event["generation"]
        inflight = event.get("inflight")
        requests = (
            "" if inflight is None else f" ({_plural(inflight, 'request')} in flight)"
        )
        text = f"draining generation {generation}{requests}"
        if "elapsed" not in event:
            self._say(text)
            self._shown[("draining", generation)] = (inflight, 0)
        else:
            self._update(
                ("draining", generation),
                inflight,
                f"{text}: {event['elapsed']:.0f} s",
                event["elapsed"],
            )

    def _standby(self, event) -> None:
        self._say(
            f"generation {event['generation']} is the standby for "
            f"{event['seconds']:.0f} s: rainbowctl rollback moves traffic "
            "back to it"
        )

    def _watching(self, event) -> None:
        left = event.get("secondsLeft", 0)
        self._update(
            ("watching",),
            None,
            f"watching generation {event['generation']}: {left:.0f} s left "
            "in the rollback window",
            event.get("time", 0),
        )

    def _rolledBack(self, event) -> None:
        self._say(
            f"rolled back by rainbowd: generation {event['from']} "
            f"{event.get('reason')}; generation {event['to']} serves again"
        )

    def _watched(self, event) -> None:
        self.watched = event
        if event.get("rolledBack"):
            self._say(
                f"generation {event['generation']} was rolled back within its "
                f"window; generation {event.get('serving')} serves"
            )
        else:
            self._say(
                f"generation {event['generation']} served through its rollback "
                "window"
            )

    def _unresponsive(self, event) -> None:
        self._say(
            f"generation {event['generation']} (pid {event.get('pid')}) does not "
            f"answer: {_plural(event['failures'], 'liveness check')} failed in "
            f"a row, the last: {event.get('error')}; a replacement is due"
            + (", and new requests wait for it" if event.get("stopped") else "")
        )

    def _recovered(self, event) -> None:
        self._say(f"generation {event['generation']} answers its liveness check again")

    def _shutdown(self, event) -> None:
        self._shuttingDown = True
        waits = event.get("generations") or []
        names = ", ".join(str(g) for g in waits)
        self._say(
            "rainbowd is shutting down"
            + (
                f"; it drains and stops generation{'' if len(waits) == 1 else 's'} "
                f"{names}"
                if waits
                else ""
            )
        )

    def _stopped(self, event) -> None:
        exit = event.get("exit")
        failed = event.get("state") == "failed"
        if exit == "stopped by SIGTERM" and not failed:
            self._say(f"generation {event['generation']} stopped by SIGTERM")
            return
        how = [exit] if exit else []
        if failed:
            how.insert(0, "it never became healthy")
        detail = f" ({'; '.join(how)})" if how else ""
        self._say(f"generation {event['generation']} stopped{detail}")

    def _result(self, event) -> None:
        """
        A success is told at once (the old generation may drain for a
        while); a failure at the end, after its generation is gone.
        """
        self.result = event
        if event.get("ok"):
            pid = f", pid {event['pid']}" if event.get("pid") is not None else ""
            done = "rolled back to" if self._cause == "rollback" else "deployed"
            self._say(
                f"{done} generation {event['generation']} (port "
                f"{event['port']}{pid}) in {event['seconds']:g} s"
            )

    def _failure(self, event) -> None:
        rollback = self._cause == "rollback"
        what = "rollback" if rollback else "deploy"
        deploy = what if self._deploy is None else f"{what} {self._deploy}"
        self._say(f"{deploy} failed: {event.get('error')}")
        verify = event.get("verify") or {}
        if verify.get("output"):
            self._say(
                f"last output of its verify ({_plural(verify.get('lines', 0), 'line')} "
                "in all; rainbowd's log has every one):"
            )
            for line in verify["output"]:
                self._say("    " + _printable(line))
        output = event.get("output") or []
        if output:
            self._say(f"last output of generation {event.get('generation')}:")
            for line in output:
                self._say("    " + _printable(line))
        serving = event.get("serving")
        if self._shuttingDown:
            return
        if "hint" in event and not rollback:
            # A failure that a fix and another deploy can mend.
            self._say(failureHint(serving, "run rainbowctl redeploy again") + ".")
        elif serving is not None:
            self._say(f"generation {serving} is still serving.")
        else:
            self._say("no generation is serving.")


def redeploy(
    client: Client,
    out: IO[str],
    tty: bool,
    message: Optional[str] = None,
    err: Optional[IO[str]] = None,
    path: str = "/redeploy",
) -> int:
    """
    C{POST path} (C{/redeploy} or C{/rollback}), printing its steps.
    """
    response = client.request(
        "POST",
        path,
        accept=NDJSON.decode(),
        body=None if message is None else {"message": message},
    )
    progress = Progress(out, tty, err)
    if response.getheader("content-type", "").split(";")[0] != NDJSON.decode():
        if response.status != 200:
            raise _refused("POST /redeploy", response)
        out.write(response.read().decode("utf-8", "replace"))
        return FAILED
    try:
        for line in iter(response.readline, b""):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            progress.event(event)
            if (
                message is not None
                and isinstance(event, dict)
                and event.get("event") == EventKind.deploying
                and "message" not in event
            ):
                # A rainbowd from before messages took the body for none.
                out.write(
                    f"rainbowctl: this rainbowd does not keep deploy messages: "
                    f"{json.dumps(message)} was not recorded; upgrade "
                    f"rainbowd, and restart it\n"
                )
                message = None
    except (OSError, BadResponse):
        pass  # cut off: Progress.end says so, unless the result came
    return progress.end()


def describeTraffic(traffic: Dict[str, Any]) -> str:
    """
    The traffic mode of C{/status} (or of C{POST /pause} and the like) in a
    sentence.
    """
    mode = traffic.get("mode")
    if mode == "serving":
        return "traffic is serving: requests go to the app"
    since = traffic.get("since")
    when = (
        ""
        if since is None
        else time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    )
    who = "" if traffic.get("by") is None else f", asked by {traffic['by']}"
    if mode == "paused":
        return (
            f"traffic is paused{when}{who}: new requests wait in rainbowd, up "
            f"to queueTimeout; {traffic.get('held', 0)} waiting now; "
            "rainbowctl resume lets them through"
        )
    message = traffic.get("message")
    return (
        f"traffic is in maintenance{when}{who}: every request gets 503 and "
        "the maintenance page"
        + ("" if not message else f" saying {json.dumps(message)}")
        + "; rainbowctl resume ends it"
    )


def changeTraffic(
    client: Client,
    out: IO[str],
    err: IO[str],
    path: str,
    body: Optional[Dict[str, Any]] = None,
) -> int:
    """
    C{POST /pause}, C{/maintenance} or C{/resume}, and say what traffic
    does now.
    """
    response = client.request("POST", path, body=body)
    if response.status != 200:
        raise _refused(f"POST {path}", response)
    answer = json.loads(response.read())
    already = "" if answer.get("changed", True) else "nothing changed: "
    out.write(already + describeTraffic(answer) + "\n")
    return 0


def upgrade(client: Client, out: IO[str], err: IO[str]) -> int:
    """
    C{POST /upgrade}: say which rainbowd took over, or why none did, with
    the new process's last lines.
    """
    response = client.request("POST", "/upgrade", timeout=None)
    if response.status not in (200, 502):
        raise _refused("POST /upgrade", response)
    answer = json.loads(response.read())
    if response.status == 200:
        out.write(
            f"rainbowd {answer['pid']} took over from {answer['previousPid']} "
            f"in {answer['seconds']:.1f} s; the app was not restarted\n"
        )
        return 0
    err.write(f"rainbowctl: upgrade failed: {answer.get('error')}\n")
    output = answer.get("output") or []
    if output:
        err.write("the new rainbowd's last lines:\n")
        for line in output:
            err.write(f"  {_printable(line)}\n")
    err.write("rainbowctl: the old rainbowd serves on, with the app as it was\n")
    return FAILED


def statusTable(status: Dict[str, Any]) -> str:
    """
    C{GET /status} as a table, then the deploy under way and the last one.
    """
    rows: List[List[str]] = [["GENERATION", "STATE", "PORT", "PID", "IN FLIGHT"]]
    for backend in status.get("backends", []):
        rows.append(
            [
                str(backend["generation"]),
                backend["state"],
                str(backend["port"]),
                "-" if backend.get("pid") is None else str(backend["pid"]),
                str(backend["inflight"]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no app process is running)")
    for backend in status.get("backends", []):
        liveness = backend.get("liveness") or {}
        if liveness.get("unresponsive"):
            waiting = (
                backend["generation"] == status.get("active")
                and "routable" in status
                and status["routable"] is None
            )
            lines.append(
                f"generation {backend['generation']} does not answer: "
                f"{_plural(liveness['failures'], 'liveness check')} failed in a "
                f"row, the last: {liveness.get('lastError')}"
                + ("; new requests wait for its replacement" if waiting else "")
            )
    for backend in status.get("backends", []):
        if backend.get("standbySecondsLeft") is not None:
            lines.append(
                f"generation {backend['generation']} is the standby for "
                f"{backend['standbySecondsLeft']:.0f} s more: rainbowctl "
                "rollback moves traffic back to it"
            )
    if status.get("deploying"):
        verify = status.get("verify")
        lines.append(
            "a deploy is under way"
            + (
                ""
                if not verify
                else f": generation {verify['generation']}'s verify has run "
                f"{verify['seconds']:.0f} s (process group {verify['pgid']}): "
                + _printable(verify["command"])
            )
        )
    last = status.get("lastDeploy")
    if last is not None:
        if last.get("ok"):
            lines.append(
                f"last deploy: generation {last['generation']} deployed in "
                f"{last['seconds']:g} s"
            )
        else:
            lines.append(f"last deploy failed: {last.get('error')}")
    traffic = status.get("traffic")
    if traffic is not None and traffic.get("mode") != "serving":
        lines.append(describeTraffic(traffic))
    connections = status.get("connections")
    if connections is not None:
        lines.append(
            f"public connections: {connections['open']} open, "
            f"{connections['max']} at most; {connections['refused']} refused "
            "since startup"
        )
    return "\n".join(lines) + "\n"


#: How C{rainbowctl history} shows each cause.
_CAUSES = {"automaticRollback": "auto-rollback"}

#: The widest a line of C{rainbowctl history} is, in columns.
HISTORY_WIDTH = 100


def _printable(text: str) -> str:
    """
    C{text} with its control characters, which a terminal would act on,
    replaced by C{?}.
    """
    return "".join(c if c.isprintable() else "?" for c in text)


def _shown(text: Optional[str], width: int) -> str:
    """
    C{text} in at most C{width} columns, cut with an ellipsis, its control
    characters (which a terminal would act on) replaced.
    """
    if text is None:
        return "-"
    text = _printable(str(text))
    if _columns(text) <= width:
        return text
    used = 0
    for end, c in enumerate(text):
        used += _columns(c)
        if used > width - 1:
            return text[:end] + "\u2026"
    return text


def _columns(text: str) -> int:
    """
    How many columns a terminal shows C{text} in: two for each wide
    character (CJK), none for a combining one.
    """
    return sum(
        0
        if unicodedata.combining(c)
        else 2
        if unicodedata.east_asian_width(c) in ("W", "F")
        else 1
        for c in text
    )


def _padded(text: str, width: int, right: bool = False) -> str:
    """
    C{text} padded with spaces to C{width} columns.
    """
    padding = " " * (width - _columns(text))
    return padding + text if right else text + padding


def _requester(requester: Any) -> str:
    """
    Who asked for a deploy, short: a unix socket's client by its uid.
    """
    if requester is None:
        return "rainbowd"
    requester = _text(requester)
    if requester.startswith("unix:") and "(uid " in requester:
        # The kernel's, which rainbowd puts last: the path before it is the
        # one the client bound its socket to, and may say anything.
        return "unix uid " + requester.rsplit("(uid ", 1)[1].split(",")[0].rstrip(")")
    return requester


def _text(value: Any) -> str:
    """
    A field of a deploy as text: a string as it is, anything else (from a
    newer rainbowd, say) as its JSON.
    """
    return value if isinstance(value, str) else json.dumps(value)


def _number(value: Any) -> Optional[float]:
    """
    A field of a deploy that should be a finite number, or L{None}.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:
        return None


def _took(seconds: Any) -> str:
    seconds = _number(seconds)
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 0.1 else f"{seconds:.1f}s"


def _started(started: Any, localtime: Callable[[float], time.struct_time]) -> str:
    started = _number(started)
    if started is None:
        return "-"
    try:
        return time.strftime("%m-%d %H:%M:%S", localtime(started))
    except (OverflowError, OSError, ValueError):
        return "-"


def historyTable(
    deploys: List[Dict[str, Any]],
    localtime: Callable[[float], time.struct_time] = time.localtime,
) -> str:
    """
    C{GET /deploys} as a table, newest first, at most L{HISTORY_WIDTH}
    columns wide: a line for each deploy, then an indented one with its
    message and its error, if it has either.  RELEASE is the last part of
    the generation's directory, which names the release in a
    C{releases/<id>} layout.
    """
    header = ["DEPLOY", "STARTED", "CAUSE", "BY", "TOOK", "RESULT", "GEN", "RELEASE"]
    caps = [6, 14, 13, 15, 7, 8, 4, 16]
    rows: List[List[Optional[str]]] = [list(header)]
    notes: List[Optional[str]] = []
    for deploy in deploys:
        directory = deploy.get("directory")
        rows.append(
            [
                "-" if deploy.get("deploy") is None else _text(deploy["deploy"]),
                _started(deploy.get("started"), localtime),
                _CAUSES.get(str(deploy.get("cause")), deploy.get("cause")),
                _requester(deploy.get("requester")),
                _took(deploy.get("seconds")),
                deploy.get("outcome"),
                "-" if deploy.get("generation") is None else str(deploy["generation"]),
                None
                if not directory
                else os.path.basename(_text(directory).rstrip("/")),
            ]
        )
        note = [_text(deploy["message"])] if deploy.get("message") else []
        if deploy.get("error"):
            note.append(f"error: {_text(deploy['error'])}")
        notes.append(_shown("; ".join(note), HISTORY_WIDTH - 8) if note else None)
    cells = [[_shown(cell, cap) for cell, cap in zip(row, caps)] for row in rows]
    widths = [max(_columns(row[i]) for row in cells) for i in range(len(header))]
    right = {0, 6}  # numbers
    lines = []
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(
                _padded(cell, width, i in right)
                for i, (cell, width) in enumerate(zip(row, widths))
            ).rstrip()
        )
        below = notes[index - 1] if index else None
        if below is not None:
            lines.append(" " * 8 + below)
    if not deploys:
        lines.append("(no deploy recorded yet)")
    return "\n".join(lines) + "\n"


def history(client: Client, out: IO[str], limit: int, asJSON: bool) -> int:
    response = client.request("GET", f"/deploys?limit={limit}")
    if response.status == 404:
        raise Answered(
            f"this rainbowd keeps no deploy history (GET /deploys: "
            f"{_answerOf(response)['error']}): upgrade rainbowd, and restart it"
        )
    if response.status != 200:
        raise _refused("GET /deploys", response)
    body = json.loads(response.read())
    out.write(
        json.dumps(body, indent=2) + "\n" if asJSON else historyTable(body["deploys"])
    )
    return 0


def status(client: Client, out: IO[str], asJSON: bool) -> int:
    response = client.request("GET", "/status")
    if response.status != 200:
        raise _refused("GET /status", response)
    try:
        body = json.loads(response.read())
        if not isinstance(body, dict):
            raise ValueError(body)
    except ValueError:
        raise Answered(
            "GET /status answered 200, but not with rainbowd's JSON: is "
            "something else listening on rainbowd's control port?"
        )
    out.write(json.dumps(body, indent=2) + "\n" if asJSON else statusTable(body))
    return 0


def logs(client: Client, out: IO[str], generation: Optional[int], follow: bool) -> int:
    query = []
    if generation is not None:
        query.append(f"generation={generation}")
    if follow:
        query.append("follow=1")
    path = "/logs" + ("?" + "&".join(query) if query else "")
    response = client.request(
        "GET", path, accept="text/plain", timeout=None if follow else TIMEOUT
    )
    if response.status == 404:
        answer = _answerOf(response)
        if isinstance(answer.get("generations"), list):
            raise Answered(_noLogs(answer, generation))
        raise Answered(f"GET {path} failed: {answer['error']}")
    if response.status != 200:
        raise _refused(f"GET {path}", response)
    for line in iter(response.readline, b""):
        out.write(line.decode("utf-8", "replace"))
        out.flush()
    return 0


class _Version(argparse.Action):
    """
    C{--version}: print L{versionLine} and exit.  Unlike argparse's own, it
    makes the line only when asked, as that imports Twisted (for its
    version), which rainbowctl otherwise does without.
    """

    def __init__(self, option_strings: List[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(versionLine())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rainbowctl",
        description="Control a running rainbowd: redeploy the app, see its "
        "status, its deploy history and its output, pause traffic or put up "
        "a maintenance page.  The control port and token come from "
        f"{DEFAULT_FILENAME} in the current directory, or --config.",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        help=f"rainbowd's config file (default: ./{DEFAULT_FILENAME})",
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "--control",
        metavar="ENDPOINT",
        help="talk to this control API instead of the config's, e.g. on "
        "another host: tcp:HOST:PORT or ssl:HOST:PORT (plain tcp: to another "
        "host sends the token in clear text; prefer an ssh "
        "tunnel: ssh -L 7001:127.0.0.1:7001 HOST, then tcp:127.0.0.1:7001)",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="with --control: the file holding that rainbowd's control token",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    redeployParser = commands.add_parser(
        "redeploy", help="deploy the code and config as they are now, showing each step"
    )
    redeployParser.add_argument(
        "--message",
        "-m",
        metavar="MESSAGE",
        help="what this deploy is (a git sha, say), kept in the history",
    )
    redeployParser.add_argument(
        "--watch",
        action="store_true",
        help="then wait until the old version's rollback window ends; exit 1 "
        "if the new version was rolled back meanwhile",
    )
    commands.add_parser(
        "rollback",
        help="move traffic back to the version that served before (the "
        "standby), or launch that version again",
    )
    historyParser = commands.add_parser(
        "history", help="the last deploys, newest first"
    )
    historyParser.add_argument(
        "--limit",
        "-n",
        type=int,
        default=20,
        metavar="N",
        help="how many (default: 20, at most 1000)",
    )
    historyParser.add_argument("--json", action="store_true", help="print JSON")
    statusParser = commands.add_parser("status", help="the app's generations")
    statusParser.add_argument("--json", action="store_true", help="print JSON")
    logsParser = commands.add_parser("logs", help="an app generation's output")
    logsParser.add_argument(
        "--generation",
        "-g",
        type=int,
        metavar="N",
        help="which generation (default: the one serving)",
    )
    logsParser.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new lines until it stops",
    )
    commands.add_parser(
        "pause",
        help="hold new requests in rainbowd (up to queueTimeout) until resume",
    )
    maintenanceParser = commands.add_parser(
        "maintenance",
        help="answer every request 503 with the maintenance page until resume",
    )
    maintenanceParser.add_argument(
        "message", nargs="*", metavar="MESSAGE", help="what the page says"
    )
    commands.add_parser(
        "resume", help="send requests to the app again, those held first"
    )
    commands.add_parser(
        "upgrade",
        help="start a new rainbowd (the one installed now) and hand it the "
        "sockets and the running app, without restarting the app",
    )
    return parser


def run(
    argv: Iterable[str],
    out: IO[str],
    err: IO[str],
    cwd: Optional[str] = None,
    connect: Optional[Callable[..., Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """
    Run rainbowctl with arguments C{argv}, in environment C{environ}
    (rainbowctl's own by default); return its exit code.
    """
    arguments = _parser().parse_args(list(argv))
    environ = os.environ if environ is None else environ
    if arguments.command == "redeploy" and environ.get(VERIFY_VARIABLE):
        err.write(
            "rainbowctl: refused: this is a verify command (RAINBOWD_VERIFY "
            "is set), and a redeploy asked for here would wait for the "
            "deploy this verify holds up, until verifyTimeout killed it; "
            "take rainbowctl redeploy out of verify.\n"
        )
        return CANNOT
    try:
        target = _target(arguments, cwd, err)
        for warning in target.warnings:
            err.write(f"rainbowctl: warning: {warning}\n")
        if target.warnings:
            err.write(
                "rainbowctl: warning: rainbowd reads this config again to "
                "redeploy, and refuses it until it is fixed.\n"
            )
        client = Client(target, connect)
        if arguments.command == "redeploy":
            path = "/redeploy?watch=1" if arguments.watch else "/redeploy"
            return redeploy(client, out, _isTTY(out), arguments.message, err, path)
        if arguments.command == "rollback":
            return redeploy(client, out, _isTTY(out), None, err, "/rollback")
        if arguments.command == "status":
            return status(client, out, arguments.json)
        if arguments.command in ("pause", "resume"):
            return changeTraffic(client, out, err, "/" + arguments.command)
        if arguments.command == "maintenance":
            message = " ".join(arguments.message)
            body = {"message": message} if message else None
            return changeTraffic(client, out, err, "/maintenance", body)
        if arguments.command == "history":
            return history(client, out, arguments.limit, arguments.json)
        if arguments.command == "upgrade":
            return upgrade(client, out, err)
        return logs(client, out, arguments.generation, arguments.follow)
    except Answered as e:
        err.write(f"rainbowctl: {e}\n")
        return FAILED
    except CtlError as e:
        err.write(f"rainbowctl: {e}\n")
        return CANNOT
    except (OSError, BadResponse) as e:
        err.write(f"rainbowctl: the connection to rainbowd failed: {e}\n")
        return CANNOT


def _target(arguments: argparse.Namespace, cwd: Optional[str], err: IO[str]) -> Target:
    """
    The control API given by C{--control} and C{--token-file}, or else the
    one of the config.
    """
    if arguments.control is None:
        if arguments.token_file is not None:
            raise CtlError(
                "--token-file goes with --control; without it the token comes "
                'from the config\'s "controlTokenFile".'
            )
        return findTarget(arguments.config, cwd)
    if arguments.config is not None:
        raise CtlError(
            "Give --control or --config, not both: with --control no config "
            "is read."
        )
    # Imported only now, as findTarget imports the config.
    from rainbowd.control.remote import (
        RemoteError,
        clearTextWarning,
        readTokenFile,
        remoteAddress,
    )

    try:
        address = remoteAddress(arguments.control)
        if address.tls:
            address.tlsContext()
        token = None
        if arguments.token_file is not None:
            token = readTokenFile(arguments.token_file)
    except RemoteError as e:
        raise CtlError(str(e))
    warning = clearTextWarning(address, token)
    if warning is not None:
        err.write(f"rainbowctl: {warning}\n")
    return Target(
        address, token, f"--control {arguments.control}", arguments.token_file, remote=True
    )


def _isTTY(out: IO[str]) -> bool:
    try:
        return out.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def main() -> None:
    """
    The C{rainbowctl} console script.
    """
    try:
        sys.exit(run(sys.argv[1:], sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        sys.stderr.write(
            "\nrainbowctl: interrupted; a deploy under way goes on in "
            "rainbowd (see rainbowctl status)\n"
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
