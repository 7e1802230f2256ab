# -*- test-case-name: rainbowd.test.unit.test_leftovers -*-
"""
The app process groups an earlier rainbowd left behind.

rainbowd records every generation it launches in its state directory, as
C{app-PGID.json}, and removes the record once the generation's process group
is empty.  A record still there when rainbowd starts belongs to a rainbowd
that was killed (SIGKILL, a crash, a power cut) and could not stop its app.
Its process group, if it is still alive, is stopped before the first
generation is launched: SIGTERM, then SIGKILL after C{killTimeout}.

It is stopped rather than adopted: the dead rainbowd held the app's stdout
and stderr, so the app may die on its next write; nothing knows its health
or its version any more; and it served no traffic while the proxy was down.
A fresh generation is the only one rainbowd can vouch for.

A group is only signalled if one of its processes has L{APP_VARIABLE} set to
this state directory in its environment, or if its leader is still the
process recorded (by its boot and start time: an app may overwrite its
environment, as Perl's C{$0 = ...} does), so a stranger that got the same
process group id later is never touched.

Then every process still carrying that marker is stopped the same way,
whatever its group: those an app started with C{setsid}, which no record
names, and which a killed rainbowd (or an older one) left running.  The
state directory's lock says no other rainbowd uses this marker, and no
generation of this one runs yet, so every such process is a leftover.
"""

import json
import os
import signal

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger

from rainbowd.app.backend import APP_VARIABLE, REAP_INTERVAL
from rainbowd.statedir import readFile, writeAtomically

#: How long a group may take to empty after SIGKILL, in seconds, before
#: rainbowd gives up on it and says so.
KILL_GRACE = 10.0


class AppGroups:
    """
    The record, in the state directory, of the app process groups alive.

    @param signals: an L{rainbowd.interfaces.IProcessSignals}.
    """

    log = Logger()

    def __init__(self, stateDir: str, signals, clock) -> None:
        self._stateDir = stateDir
        self._signals = signals
        self._clock = clock

    def record(self, backend) -> None:
        """
        Write down C{backend}'s process group, just launched.  A record that
        cannot be written is logged, and the generation runs all the same.
        """
        path = self._path(backend.pgid)
        record = {
            "pgid": backend.pgid,
            "generation": backend.generation,
            "port": backend.port,
            "run": backend.config.run,
            # The group's leader, which the app may exec into.
            "leader": self._signals.identity(backend.pgid),
        }
        try:
            writeAtomically(path, json.dumps(record).encode("utf-8"))
        except OSError as e:
            self.log.warn(
                "cannot record generation {generation}'s process group in "
                "{path} ({error}); if rainbowd is killed, the next one will "
                "not find it",
                generation=backend.generation,
                path=path,
                error=e,
            )

    def forget(self, backend) -> None:
        """
        C{backend}'s process group is gone.
        """
        self._remove(self._path(backend.pgid))

    @inlineCallbacks
    def stopLeftovers(self, killTimeout: float):
        """
        Stop every recorded process group that is still alive and still an
        app's, and forget all the records.

        @return: a Deferred that fires with the list of the records of the
            groups found alive, once they are gone (or, for one that
            outlives SIGKILL by L{KILL_GRACE}, given up on and logged).
        """
        alive = []
        for path, record in self._records():
            if self._ours(record):
                self.log.warn(
                    "generation {generation} of an earlier rainbowd (process "
                    "group {pgid}, port {port}) is still running; stopping "
                    "it before launching the app",
                    generation=record.get("generation"),
                    pgid=record["pgid"],
                    port=record.get("port"),
                )
                alive.append((path, record))
            else:
                self._remove(path)
        if alive:
            yield self._stopGroups(alive, killTimeout)
        yield self._stopStrays(killTimeout)
        return [record for path, record in alive]

    @inlineCallbacks
    def _stopGroups(self, alive, killTimeout: float):
        """
        Stop the recorded process groups C{alive}, and forget them.
        """
        records = {record["pgid"]: record for path, record in alive}
        signalled: set = set()

        def send(pgid: int, signum: int) -> None:
            # Looked at again just before each signal, so that a stranger
            # that got the group id is never signalled.  A group signalled
            # before is still the app's, even if its leader, by which it
            # was known, has exited since: a group id is not reused while
            # the group has a process.
            if pgid in signalled or self._ours(records[pgid]):
                self._signals.signalGroup(pgid, signum)
                signalled.add(pgid)

        yield self._stop(
            "process groups", list(records), send, self._signals.groupAlive, killTimeout
        )
        for path, record in alive:
            self._remove(path)

    @inlineCallbacks
    def _stopStrays(self, killTimeout: float):
        """
        Stop the processes carrying this state directory's marker outside
        any recorded group.
        """
        marker = {APP_VARIABLE: self._stateDir}
        strays = self._signals.marked(marker)
        if not strays:
            return
        self.log.warn(
            "processes {pids} of an earlier rainbowd's app (outside its "
            "recorded process groups) are still running; stopping them "
            "before launching the app",
            pids=", ".join(map(str, strays)),
        )
        yield self._stop(
            "processes",
            strays,
            lambda pid, signum: self._signals.signalMarked(pid, marker, signum),
            lambda pid: self._signals.isMarked(pid, marker),
            killTimeout,
        )

    @inlineCallbacks
    def _stop(self, what: str, ids, send, alive, killTimeout: float):
        """
        SIGTERM to each of C{ids}, then SIGKILL to those still C{alive}
        after C{killTimeout}, and give up on those still alive
        L{KILL_GRACE} after that, logging each step.

        @param what: what C{ids} are, in the log: C{"processes"}.
        @param send: called with an id and a signal number to signal it.
        @param alive: called with an id: is it still there?

        @return: a Deferred firing with the ids given up on.
        """
        for each in ids:
            send(each, signal.SIGTERM)
        left = yield self._waitGone(ids, alive, killTimeout)
        if left:
            self.log.warn(
                "{what} {ids} did not stop within killTimeout ({timeout:g} s) "
                "of SIGTERM; sending SIGKILL",
                what=what,
                ids=", ".join(map(str, left)),
                timeout=killTimeout,
            )
            for each in left:
                send(each, signal.SIGKILL)
            left = yield self._waitGone(left, alive, KILL_GRACE)
        if left:
            self.log.error(
                "{what} {ids} outlived SIGKILL by {grace:g} s; giving up on them",
                what=what,
                ids=", ".join(map(str, left)),
                grace=KILL_GRACE,
            )
        return left

    @inlineCallbacks
    def _waitGone(self, ids, alive, timeout: float):
        """
        Wait until none of C{ids} is C{alive}, for at most C{timeout}
        seconds.

        @return: a Deferred firing with the ids still there.
        """
        deadline = self._clock.seconds() + timeout
        while True:
            left = [each for each in ids if alive(each)]
            if not left or self._clock.seconds() >= deadline:
                return left
            yield deferLater(self._clock, REAP_INTERVAL, lambda: None)

    # Internals

    def _path(self, pgid: int) -> str:
        return os.path.join(self._stateDir, f"app-{pgid}.json")

    def _remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.warn("cannot remove {path}: {error}", path=path, error=e)

    def _records(self):
        """
        The records in the state directory, as C{(path, record)}, oldest
        process group first; an unreadable one is logged and removed.
        """
        found = []
        for name in sorted(os.listdir(self._stateDir)):
            path = os.path.join(self._stateDir, name)
            if not (name.startswith("app-") and name.endswith(".json")):
                if name.startswith("app-") and name.endswith(".tmp"):
                    self._remove(path)
                continue
            try:
                record = json.loads(readFile(path))
                record["pgid"] = int(record["pgid"])
            except (OSError, ValueError, TypeError, KeyError) as e:
                self.log.warn(
                    "ignoring {path}, which is not a record of an app "
                    "process group ({error})",
                    path=path,
                    error=e,
                )
                self._remove(path)
                continue
            found.append((path, record))
        return sorted(found, key=lambda item: item[1]["pgid"])

    def _ours(self, record) -> bool:
        """
        Is the live group C{record} names the one it recorded: has one of
        its processes this state directory's marker, or is its leader
        still the very process recorded (an app that overwrote its
        environment, as C{$0 = ...} in Perl does, carries no marker)?
        """
        pgid = record["pgid"]
        if self._signals.groupHas(pgid, APP_VARIABLE, self._stateDir):
            return True
        leader = record.get("leader")
        return (
            isinstance(leader, str)
            and self._signals.groupOf(pgid) == pgid
            and self._signals.identity(pgid) == leader
        )
