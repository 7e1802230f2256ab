# -*- test-case-name: rainbowd.test.test_ctl -*-
"""
C{rainbowctl}: redeploy, rollback, status and logs from the command line.

It finds the control API the way rainbowd does, from C{rainbow.conf.json}
in the current directory (or C{--config PATH}): C{controlPort} (C{port} +
1 by default) and C{controlTokenFile}.  So in the app's directory::

    rainbowctl redeploy
    rainbowctl rollback
    rainbowctl status
    rainbowctl logs --follow

It is a plain blocking HTTP client (one request, one answer read as it
comes), so it starts fast and needs no reactor; what it prints is made by
L{Progress} and L{statusTable}, which do not touch the network.
"""

import argparse
import http.client
import json
import os
import socket
import sys
from typing import IO, Any, Callable, Dict, Iterable, List, Optional

import attrs

from rainbowd.config import (
    DEFAULT_FILENAME,
    Config,
    ConfigError,
    endpointArguments,
    loadConfig,
    tcpPortNumber,
)
from rainbowd.controlsite import readControlToken
from rainbowd.progress import NDJSON

#: Exit codes: the deploy (or request) failed; rainbowctl could not ask.
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


@attrs.frozen
class ControlAddress:
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.path is not None:
            return _UNIXConnection(self.path, timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _UNIXConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


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


@attrs.frozen
class Target:
    """
    A rainbowd's control API: where it is, its token, and where that was
    read from (for messages).
    """

    address: ControlAddress
    token: Optional[bytes]
    source: str
    tokenFile: Optional[str] = None


def findTarget(configPath: Optional[str], cwd: Optional[str] = None) -> Target:
    """
    Read the config as rainbowd would, for its control port and token.

    @raise CtlError: if there is no config, it does not load, or its token
        file cannot be read.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    if configPath is None and not os.path.exists(os.path.join(cwd, DEFAULT_FILENAME)):
        raise CtlError(
            f"No {DEFAULT_FILENAME} in {cwd}: run rainbowctl in the "
            "directory rainbowd runs in, or pass --config PATH."
        )
    try:
        config: Config = loadConfig(configPath, cwd=cwd)
        token = None
        if config.controlTokenFile is not None:
            token = readControlToken(config.controlTokenFile)[0]
    except ConfigError as e:
        raise CtlError(str(e))
    address = controlAddress(config.controlPort)
    if address.path is not None and not os.path.isabs(address.path):
        # rainbowd resolves it against the directory it was started in,
        # which is the config file's, as a rule.
        home = os.path.dirname(config.source) if config.source else cwd
        address = attrs.evolve(address, path=os.path.join(home, address.path))
    return Target(
        address,
        token,
        config.source or cwd,
        config.controlTokenFile,
    )


class Client:
    """
    Requests to one rainbowd's control API.

    @param connect: makes an L{http.client.HTTPConnection}-like object for
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
    ):
        """
        Send a request and return the response, its headers read.

        @raise CtlError: if rainbowd cannot be reached, or refuses the
            token.
        """
        headers = {"Accept": accept}
        if self._target.token is not None:
            headers["Authorization"] = "Bearer " + self._target.token.decode("ascii")
        connection = self._connect(timeout)
        try:
            connection.request(
                method, path, body=b"" if method == "POST" else None, headers=headers
            )
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
        except (OSError, http.client.HTTPException) as e:
            raise CtlError(
                f"The control API at {self._target.address} did not answer: {e}."
            )
        if response.status == 401:
            raise CtlError(self._unauthorized())
        return response

    def _unauthorized(self) -> str:
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


def _errorOf(response) -> str:
    """
    The C{error} of a JSON error answer, or its status line.
    """
    body = response.read()
    try:
        answer = json.loads(body)
        error = answer["error"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status} {response.reason}"
    if answer.get("generations"):
        running = ", ".join(str(g) for g in answer["generations"])
        error += f" (running: {running})"
    return error


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

    def __init__(self, out: IO[str], tty: bool) -> None:
        self._out = out
        self._tty = tty
        self._transient = False
        self._shown: Dict[Any, Any] = {}
        self._cause: Optional[str] = None
        self.result: Optional[Dict[str, Any]] = None
        self.watched: Optional[Dict[str, Any]] = None

    def event(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        handler = getattr(self, "_" + str(kind), None)
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
            self._say(
                "The connection to rainbowd closed before the deploy's "
                "outcome; see rainbowctl status."
            )
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
        self._cause = event.get("cause")
        what = "rollback" if self._cause == "rollback" else "deploy"
        self._say(f"{what} {event['deploy']} started")

    def _launching(self, event) -> None:
        self._say(f"launching generation {event['generation']} on port {event['port']}")

    def _retrying(self, event) -> None:
        self._say(
            f"generation {event['generation']} lost port {event['port']} to "
            "another process; trying another port"
        )

    def _waiting(self, event) -> None:
        generation = event["generation"]
        self._update(
            ("waiting", generation),
            None,
            f"waiting for generation {generation} to be healthy: "
            f"{event['elapsed']:.0f} s",
            event["elapsed"],
        )

    def _healthy(self, event) -> None:
        self._say(
            f"generation {event['generation']} is healthy after {event['seconds']:g} s"
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

    def _stopped(self, event) -> None:
        how = [event["exit"]] if event.get("exit") else []
        if event.get("state") == "failed":
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
        self._say(f"{'rollback' if rollback else 'deploy'} failed: {event.get('error')}")
        output = event.get("output") or []
        if output:
            self._say(f"last output of generation {event.get('generation')}:")
            for line in output:
                self._say("    " + line)
        serving = event.get("serving")
        if serving is not None and rollback:
            self._say(f"generation {serving} is still serving.")
        elif serving is not None:
            self._say(
                f"generation {serving} is still serving; fix the problem "
                "and run rainbowctl redeploy again."
            )
        else:
            self._say("no generation is serving.")


def redeploy(client: Client, out: IO[str], tty: bool, path: str = "/redeploy") -> int:
    """
    C{POST path} (C{/redeploy} or C{/rollback}), printing its steps.
    """
    response = client.request("POST", path, accept=NDJSON.decode())
    progress = Progress(out, tty)
    if response.getheader("content-type", "").split(";")[0] != NDJSON.decode():
        out.write(response.read().decode("utf-8", "replace"))
        return FAILED
    try:
        for line in iter(response.readline, b""):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            progress.event(event)
    except (OSError, http.client.HTTPException):
        pass  # cut off: Progress.end says so, unless the result came
    return progress.end()


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
        lines.append("a deploy is under way")
    last = status.get("lastDeploy")
    if last is not None:
        if last.get("ok"):
            lines.append(
                f"last deploy: generation {last['generation']} deployed in "
                f"{last['seconds']:g} s"
            )
        else:
            lines.append(f"last deploy failed: {last.get('error')}")
    connections = status.get("connections")
    if connections is not None:
        lines.append(
            f"public connections: {connections['open']} open, "
            f"{connections['max']} at most; {connections['refused']} refused "
            "since startup"
        )
    return "\n".join(lines) + "\n"


def status(client: Client, out: IO[str], asJSON: bool) -> int:
    response = client.request("GET", "/status")
    if response.status != 200:
        raise CtlError(f"GET /status failed: {_errorOf(response)}")
    body = json.loads(response.read())
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
    if response.status != 200:
        raise CtlError(f"GET {path} failed: {_errorOf(response)}")
    for line in iter(response.readline, b""):
        out.write(line.decode("utf-8", "replace"))
        out.flush()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rainbowctl",
        description="Control a running rainbowd: redeploy the app, see its "
        f"status and output.  The control port and token come from "
        f"{DEFAULT_FILENAME} in the current directory, or --config.",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        help=f"rainbowd's config file (default: ./{DEFAULT_FILENAME})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    redeployParser = commands.add_parser(
        "redeploy", help="deploy the code and config as they are now, showing each step"
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
    return parser


def run(
    argv: Iterable[str],
    out: IO[str],
    err: IO[str],
    cwd: Optional[str] = None,
    connect: Optional[Callable[..., Any]] = None,
) -> int:
    """
    Run rainbowctl with arguments C{argv}; return its exit code.
    """
    arguments = _parser().parse_args(list(argv))
    try:
        client = Client(findTarget(arguments.config, cwd), connect)
        if arguments.command == "redeploy":
            path = "/redeploy?watch=1" if arguments.watch else "/redeploy"
            return redeploy(client, out, _isTTY(out), path)
        if arguments.command == "rollback":
            return redeploy(client, out, _isTTY(out), "/rollback")
        if arguments.command == "status":
            return status(client, out, arguments.json)
        return logs(client, out, arguments.generation, arguments.follow)
    except CtlError as e:
        err.write(f"rainbowctl: {e}\n")
        return CANNOT
    except (OSError, http.client.HTTPException) as e:
        err.write(f"rainbowctl: the connection to rainbowd failed: {e}\n")
        return CANNOT


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
