# -*- test-case-name: rainbowd.test.unit.test_config -*-
"""
Tests for L{rainbowd.config}.
"""

import json
import os
from typing import Any, Dict, Mapping, Optional

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.config import (
    Config,
    ConfigError,
    ephemeralPortRange,
    loadConfig,
    portRangeWarning,
    readMaintenancePage,
    settingNames,
    settingUnit,
)

RUN = "gunicorn app:app --bind 127.0.0.1:$1 --pid $2"


class LoadConfigTests(SynchronousTestCase):
    """
    Tests for L{loadConfig}.
    """

    def setUp(self) -> None:
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()

    def write(self, values: Any, name: str = "rainbow.conf.json") -> FilePath:
        """
        Write C{values} as JSON to C{name} in the test's directory.
        """
        path = self.directory.child(name)
        path.setContent(json.dumps(values).encode("utf-8"))
        return path

    def load(
        self,
        values: Optional[Dict[str, Any]] = None,
        overrides: Mapping[str, object] = {},
    ) -> Config:
        """
        Load C{values} written as the default config file (or no file if
        L{None}), with C{overrides}.
        """
        if values is not None:
            self.write(values)
        return loadConfig(None, overrides, cwd=self.directory.path)

    def loadError(
        self,
        values: Optional[Dict[str, Any]] = None,
        overrides: Mapping[str, object] = {},
    ) -> str:
        """
        The message of the L{ConfigError} that loading C{values} raises.
        """
        return str(self.assertRaises(ConfigError, self.load, values, overrides))

    def test_defaults(self) -> None:
        """
        A file with only C{run} gets every documented default, in seconds,
        with the app and the state next to the file.
        """
        config = self.load({"run": RUN})
        here = self.directory.path
        self.assertEqual(
            config,
            Config(
                run=RUN,
                healthCheckPath="/",
                warmupTime=None,
                port="tcp:7000:interface=127.0.0.1",
                controlPort="tcp:7001:interface=127.0.0.1",
                healthCheckInterval=0.1,
                healthCheckTimeout=2.0,
                livenessInterval=2.0,
                livenessFailures=3,
                startTimeout=60.0,
                drainTimeout=30.0,
                killTimeout=10.0,
                queueTimeout=30.0,
                backendTimeout=30.0,
                backendBodyTimeout=300.0,
                maxBackends=10,
                backendPorts=(20000, 29999),
                env={},
                cwd=here,
                stateDir=self.directory.child(".rainbowd").path,
                source=self.directory.child("rainbow.conf.json").path,
            ),
        )

    def test_everyKey(self) -> None:
        """
        Every key of the file is read into L{Config}, times from
        milliseconds to seconds.
        """
        self.directory.child("app").makedirs()
        config = self.load(
            {
                "run": RUN,
                "healthCheckPath": "/healthz",
                "port": 8000,
                "controlPort": "unix:/run/rainbowd.sock:mode=600",
                "healthCheckInterval": 50,
                "healthCheckTimeout": 1500,
                "livenessInterval": 5000,
                "livenessFailures": 5,
                "startTimeout": 120000,
                "drainTimeout": 5000,
                "killTimeout": 2500.5,
                "queueTimeout": 0,
                "backendTimeout": 60000,
                "backendBodyTimeout": 900000,
                "maxBackends": 3,
                "backendPorts": "21000-21999",
                "env": {"APP_ENV": "production"},
                "cwd": "app",
                "stateDir": "/var/lib/rainbowd",
            }
        )
        self.assertEqual(
            config,
            Config(
                run=RUN,
                healthCheckPath="/healthz",
                warmupTime=None,
                port="tcp:8000:interface=127.0.0.1",
                controlPort="unix:/run/rainbowd.sock:mode=600",
                healthCheckInterval=0.05,
                healthCheckTimeout=1.5,
                livenessInterval=5.0,
                livenessFailures=5,
                startTimeout=120.0,
                drainTimeout=5.0,
                killTimeout=2.5005,
                queueTimeout=0.0,
                backendTimeout=60.0,
                backendBodyTimeout=900.0,
                maxBackends=3,
                backendPorts=(21000, 21999),
                env={"APP_ENV": "production"},
                cwd=self.directory.child("app").path,
                stateDir="/var/lib/rainbowd",
                source=self.directory.child("rainbow.conf.json").path,
            ),
        )

    def test_millisecondUnit(self) -> None:
        """
        L{settingUnit} is ms for exactly the time keys, which the file gives
        in ms and L{Config} holds in seconds.
        """
        self.assertEqual(
            {key for key in settingNames() if settingUnit(key) == "ms"},
            {
                "warmupTime",
                "healthCheckInterval",
                "healthCheckTimeout",
                "verifyTimeout",
                "livenessInterval",
                "startTimeout",
                "drainTimeout",
                "rollbackWindow",
                "requestHeaderTimeout",
                "requestBodyTimeout",
                "killTimeout",
                "upgradeTimeout",
                "stopDelay",
                "queueTimeout",
                "backendTimeout",
                "backendBodyTimeout",
            },
        )

    def test_bareIntPort(self) -> None:
        """
        A port number, as an int or an all-digits string, means TCP on
        127.0.0.1, and the control port defaults to the next port there.
        """
        for port in (8000, "8000", 8000.0):
            config = self.load({"run": RUN, "port": port})
            self.assertEqual(config.port, "tcp:8000:interface=127.0.0.1")
            self.assertEqual(config.controlPort, "tcp:8001:interface=127.0.0.1")

    def test_descriptionPortKept(self) -> None:
        """
        An endpoint description is kept as written; a TCP one gets a control
        port one above it, on loopback only.
        """
        config = self.load({"run": RUN, "port": "tcp:8080:interface=0.0.0.0"})
        self.assertEqual(config.port, "tcp:8080:interface=0.0.0.0")
        self.assertEqual(config.controlPort, "tcp:8081:interface=127.0.0.1")

    def test_controlPortRequiredForUnixPort(self) -> None:
        """
        When the port is not TCP, there is no port + 1 and controlPort must
        be given.
        """
        message = self.loadError({"run": RUN, "port": "unix:/run/app.sock"})
        self.assertIn("controlPort", message)
        self.assertIn("must be given", message)
        self.assertIn("'unix:/run/app.sock'", message)

    def test_unixPorts(self) -> None:
        """
        UNIX socket descriptions with options are accepted for both ports.
        """
        config = self.load(
            {
                "run": RUN,
                "port": "unix:/run/app.sock:mode=660",
                "controlPort": "unix:/run/control.sock:mode=600",
            }
        )
        self.assertEqual(config.port, "unix:/run/app.sock:mode=660")
        self.assertEqual(config.controlPort, "unix:/run/control.sock:mode=600")

    def test_badEndpointSyntax(self) -> None:
        """
        A description Twisted cannot parse is an error naming the key, the
        value and what Twisted said.
        """
        message = self.loadError({"run": RUN, "port": "tcp:http"})
        self.assertIn("\"port\" is 'tcp:http'", message)
        self.assertIn("endpoint description", message)
        self.assertIn("invalid literal", message)
        message = self.loadError({"run": RUN, "controlPort": "bogus:1"})
        self.assertIn('"controlPort"', message)
        self.assertIn("Unknown endpoint type", message)

    def test_systemdSocketMissing(self) -> None:
        """
        A systemd: description when systemd passed no socket says so, and
        that controlPort must then be given.
        """
        message = self.loadError(
            {"run": RUN, "port": "systemd:domain=INET:index=0", "controlPort": 7001}
        )
        self.assertIn("systemd passed rainbowd no such socket", message)
        message = self.loadError({"run": RUN, "port": "systemd:domain=INET:index=0"})
        self.assertIn("systemd passed rainbowd no such socket", message)

    def test_accessLogPathResolved(self) -> None:
        """
        A relative accessLog is relative to the config file's directory; "-"
        stays standard output; there is none by default.
        """
        self.assertIsNone(self.load({"run": RUN}).accessLog)
        config = self.load({"run": RUN, "accessLog": "logs/access.log"})
        assert config.source is not None
        self.assertEqual(
            config.accessLog,
            os.path.join(os.path.dirname(config.source), "logs", "access.log"),
        )
        self.assertEqual(self.load({"run": RUN, "accessLog": "-"}).accessLog, "-")

    def test_backendLogsCount(self) -> None:
        """
        backendLogs is a whole number, 0 (the default) or more.
        """
        self.assertEqual(self.load({"run": RUN}).backendLogs, 0)
        self.assertEqual(self.load({"run": RUN, "backendLogs": 5}).backendLogs, 5)
        self.assertIn(
            "0 or more", self.loadError({"run": RUN, "backendLogs": -1})
        )

    def test_verifyKeys(self) -> None:
        """
        verify is a shell command, none by default; verifyTimeout is in ms,
        30 s by default, and must be more than 0.
        """
        config = self.load({"run": RUN})
        self.assertEqual((config.verify, config.verifyTimeout), (None, 30.0))
        config = self.load(
            {"run": RUN, "verify": "curl -fsS http://127.0.0.1:$1/", "verifyTimeout": 5000}
        )
        self.assertEqual(
            (config.verify, config.verifyTimeout), ("curl -fsS http://127.0.0.1:$1/", 5.0)
        )
        message = self.loadError({"run": RUN, "verify": " "})
        self.assertIn('"verify" is \' \', but it must be a shell command', message)
        self.assertIn("greater than 0", self.loadError({"run": RUN, "verifyTimeout": 0}))

    def test_verifyAsksPublicPort(self) -> None:
        """
        A verify that asks the public port, and never the new version's
        ($1 or RAINBOWD_PORT), is refused: it would test the version
        serving, and pass whatever the new one does.  The error shows it
        asking $1 instead.
        """
        message = self.loadError(
            {"run": RUN, "port": 7100, "verify": "curl -fsS http://127.0.0.1:7100/ready"}
        )
        self.assertIn(
            '"verify" asks port 7100, the public port, which the version serving '
            "answers until the verify passes, so it would not test the new one; "
            "ask $1, the new version's port: "
            "\"curl -fsS http://127.0.0.1:$1/ready\".",
            message,
        )
        for verify in [
            "curl -fsS http://127.0.0.1:$1/ready && curl -fsS http://127.0.0.1:7100/",
            "./smoke.sh http://127.0.0.1:$RAINBOWD_PORT :7100",
            "curl -fsS http://127.0.0.1:71000/",
            "./smoke.sh",
        ]:
            config = self.load({"run": RUN, "port": 7100, "verify": verify})
            self.assertEqual(config.verify, verify)

    def test_backendConnectionLimits(self) -> None:
        """
        backendConnections (default 0, no cap) and backendMaxRequests
        (default 1000) are whole numbers, 0 or more.
        """
        config = self.load({"run": RUN})
        self.assertEqual((config.backendConnections, config.backendMaxRequests), (0, 1000))
        config = self.load({"run": RUN, "backendConnections": 8, "backendMaxRequests": 0})
        self.assertEqual((config.backendConnections, config.backendMaxRequests), (8, 0))
        for key in ("backendConnections", "backendMaxRequests"):
            self.assertIn("0 or more", self.loadError({"run": RUN, key: -1}))
            self.assertIn("fraction", self.loadError({"run": RUN, key: 2.5}))

    def test_maxConnections(self) -> None:
        """
        maxConnections is a whole number, 1 or more; by default it is left
        to be derived from the descriptor limit.
        """
        self.assertIsNone(self.load({"run": RUN}).maxConnections)
        self.assertEqual(
            self.load({"run": RUN, "maxConnections": 500}).maxConnections, 500
        )
        for bad in (0, -1, 2.5, "many"):
            self.assertIn(
                "must be a whole number, 1 or more",
                self.loadError({"run": RUN, "maxConnections": bad}),
            )

    def test_portOutOfRange(self) -> None:
        """
        Port numbers outside 1-65535 are errors, bare or in a description.
        """
        for port in (0, 70000, -1, "tcp:70000"):
            message = self.loadError({"run": RUN, "port": port})
            self.assertIn("1 to 65535", message)

    def test_portHasNoNextPort(self) -> None:
        """
        Port 65535 has no port + 1 for the control API.
        """
        self.assertIn("controlPort", self.loadError({"run": RUN, "port": 65535}))

    def test_controlPortSameAsPort(self) -> None:
        """
        The control API cannot share the app's port.
        """
        message = self.loadError({"run": RUN, "port": 8000, "controlPort": 8000})
        self.assertIn('"controlPort"', message)
        self.assertIn("different ports", message)

    def test_missingRun(self) -> None:
        """
        A file without C{run} is an error saying C{run} is required and
        showing what it looks like.
        """
        message = self.loadError({"port": 8000})
        self.assertIn('"run"', message)
        self.assertIn("required", message)
        self.assertIn(self.directory.child("rainbow.conf.json").path, message)
        self.assertIn('"run": "gunicorn myapp:app --bind 127.0.0.1:$1', message)

    def test_blankRun(self) -> None:
        """
        A blank C{run} is an error.
        """
        message = self.loadError({"run": "  "})
        self.assertIn("\"run\" is '  '", message)
        self.assertIn("it is empty", message)

    def test_unknownKeyDidYouMean(self) -> None:
        """
        A misspelt key is an error suggesting the key it resembles and
        listing the known ones.
        """
        message = self.loadError({"run": RUN, "drainTimout": 5})
        self.assertIn('"drainTimout" is not a key', message)
        self.assertIn('Did you mean "drainTimeout"?', message)
        self.assertIn(", ".join(settingNames()), message)

    def test_unknownKeyOtherCase(self) -> None:
        """
        A key in another case, or with underscores or dashes, is guessed
        as the key it spells, however short; a misspelt "run" is named
        rather than reported missing.
        """
        message = self.loadError(
            {"run": RUN, "PORT": 8000, "HEALTHCHECKPATH": "/", "drain_timeout": 5}
        )
        self.assertIn(
            'Did you mean "port" for "PORT", "healthCheckPath" for '
            '"HEALTHCHECKPATH", "drainTimeout" for "drain_timeout"?',
            message,
        )
        message = self.loadError({"RUN": RUN})
        self.assertIn('"RUN" is not a key rainbowd knows. Did you mean "run"?', message)

    def test_unknownKeysAtOnce(self) -> None:
        """
        Every unknown key is named in the one error, each misspelt one with
        its guess, and the known keys are listed once.
        """
        message = self.loadError(
            {"run": RUN, "drainTimout": 5, "colour": "blue", "helthCheckPath": "/"}
        )
        self.assertIn(
            '"drainTimout", "colour" and "helthCheckPath" are not keys rainbowd '
            'knows. Did you mean "drainTimeout" for "drainTimout", '
            '"healthCheckPath" for "helthCheckPath"?',
            message,
        )
        self.assertEqual(message.count("The keys are: "), 1)
        self.assertNotIn("\n", message)

    def test_emptyFile(self) -> None:
        """
        An empty or blank file, or one with only a UTF-8 byte order mark (an
        editor's empty file), is an error saying it is empty, not a JSON
        syntax error.
        """
        path = self.directory.child("rainbow.conf.json")
        for content in [b"", b"  \n\t\n", b"\xef\xbb\xbf\n"]:
            path.setContent(content)
            message = self.loadError()
            self.assertIn(f"{path.path} is empty: write a JSON object", message)
            self.assertNotIn("missing comma", message)

    def test_unknownKeyWithoutGuess(self) -> None:
        """
        An unknown key that resembles nothing is an error without a guess.
        """
        message = self.loadError({"run": RUN, "colour": "blue"})
        self.assertIn('"colour"', message)
        self.assertNotIn("Did you mean", message)

    def test_wrongType(self) -> None:
        """
        A value of the wrong JSON type is an error naming the file, the key,
        the value, its type and what is expected.
        """
        message = self.loadError({"run": RUN, "maxBackends": "3"})
        self.assertEqual(
            message,
            f"In {self.directory.child('rainbow.conf.json').path}, "
            "\"maxBackends\" is '3' (a string), but it must be a whole "
            "number, 2 or more.",
        )

    def test_boolsAreNotNumbers(self) -> None:
        """
        C{true} and C{false} are rejected where numbers are expected.
        """
        for key in ("drainTimeout", "maxBackends", "port"):
            message = self.loadError({"run": RUN, key: True})
            self.assertIn(f'"{key}" is True (true/false)', message)

    def test_fractionalInteger(self) -> None:
        """
        A whole-number key rejects fractions but takes a whole float.
        """
        message = self.loadError({"run": RUN, "maxBackends": 2.5})
        self.assertIn("it has a fraction", message)
        self.assertEqual(self.load({"run": RUN, "maxBackends": 2.0}).maxBackends, 2)

    def test_maxBackendsAtLeastTwo(self) -> None:
        """
        maxBackends below 2 is an error saying why: a redeploy runs the new
        version next to the old one.
        """
        self.assertIn(
            '"maxBackends" is 0', self.loadError({"run": RUN, "maxBackends": 0})
        )
        message = self.loadError({"run": RUN, "maxBackends": 1})
        self.assertIn('"maxBackends" is 1, but it must be a whole number, 2 or more', message)
        self.assertIn("no redeploy could ever start", message)
        self.assertEqual(self.load({"run": RUN, "maxBackends": 2}).maxBackends, 2)

    def test_runWithoutPort(self) -> None:
        """
        A run line that never uses its first argument, the port, is an
        error saying so; any way of reaching it will do.
        """
        message = self.loadError({"run": "twistd -n web --listen tcp:8080 --path ."})
        self.assertIn("it never uses $1, the only way the port is passed", message)
        self.assertIn("'twistd -n web --listen tcp:8080 --path .'", message)
        self.assertIn("never uses $1", self.loadError({"run": "app --port \\$1"}))
        for run in [
            "app --port $1",
            'app --port "${1}" --pid "$2"',
            "app --port ${1:-8000}",
            'exec ./start.sh "$@"',
            "exec ./start.sh $*",
        ]:
            self.assertEqual(self.load({"run": run}).run, run)

    def test_runPortQuoting(self) -> None:
        """
        A $1 counts only where the shell expands it: not in single quotes,
        not after a backslash, and ${10} is another argument; quotes of one
        kind inside the other, and an escaped backslash, do not hide it.
        """
        for run in [
            "app --port '$1'",
            "awk '{print $1}' /etc/hosts; exec app --port 8000",
            "app --port ${10}",
            'app --port "\\$1"',
        ]:
            message = self.loadError({"run": run})
            self.assertIn("never uses $1", message)
            self.assertIn("in single quotes or after a backslash", message)
        for run in [
            "echo \"it's v2\"; exec app --port $1",
            "echo 'say \"hi\"'; exec app --port \"$1\"",
            "app --port \\\\$1",
            "sh -c 'exec app --port \"$0\"' \"$1\"",
            "app --port $10",
        ]:
            self.assertEqual(self.load({"run": run}).run, run)

    def test_livenessOff(self) -> None:
        """
        livenessInterval may be 0, which turns liveness checks off.
        """
        self.assertEqual(
            self.load({"run": RUN, "livenessInterval": 0}).livenessInterval, 0
        )

    def test_livenessFailuresAtLeastOne(self) -> None:
        """
        livenessFailures must be a whole number, 1 or more: 0 would replace
        every version at its first check.
        """
        for value in (0, -1, 1.5):
            message = self.loadError({"run": RUN, "livenessFailures": value})
            self.assertIn(f'"livenessFailures" is {value!r}', message)
            self.assertIn("a whole number, 1 or more", message)
        self.assertEqual(
            self.load({"run": RUN, "livenessFailures": 1}).livenessFailures, 1
        )

    def test_rollbackKeys(self) -> None:
        """
        rollbackWindow is in ms (0 keeps no standby); rollbackErrorRate is a
        number from 0 to 1; rollbackCheckFailures and rollbackMinRequests
        are whole numbers, 1 or more.
        """
        config = self.load(
            {
                "run": RUN,
                "rollbackWindow": 60000,
                "rollbackErrorRate": 0.5,
                "rollbackCheckFailures": 2,
                "rollbackMinRequests": 1,
            }
        )
        self.assertEqual(
            (
                config.rollbackWindow,
                config.rollbackErrorRate,
                config.rollbackCheckFailures,
                config.rollbackMinRequests,
            ),
            (60.0, 0.5, 2, 1),
        )
        self.assertEqual(self.load({"run": RUN, "rollbackWindow": 0}).rollbackWindow, 0)
        defaults = self.load({"run": RUN})
        self.assertEqual(
            (
                defaults.rollbackWindow,
                defaults.rollbackErrorRate,
                defaults.rollbackCheckFailures,
                defaults.rollbackMinRequests,
            ),
            (300.0, 0.25, 3, 20),
        )
        for value in (-0.1, 1.5, "half", True):
            message = self.loadError({"run": RUN, "rollbackErrorRate": value})
            self.assertIn(f'"rollbackErrorRate" is {value!r}', message)
            self.assertIn("a number from 0 to 1", message)
        for key in ("rollbackCheckFailures", "rollbackMinRequests"):
            self.assertIn("a whole number, 1 or more", self.loadError({"run": RUN, key: 0}))
        self.assertIn(
            "milliseconds", self.loadError({"run": RUN, "rollbackWindow": -1})
        )

    def test_requestLimits(self) -> None:
        """
        The request limits are read in their units; a body limit below 1
        byte, or a negative rate, is an error.
        """
        config = self.load(
            {
                "run": RUN,
                "requestHeaderTimeout": 2500,
                "requestBodyTimeout": 4000,
                "requestBodyMinRate": 0,
                "maxRequestBody": 1000,
            }
        )
        self.assertEqual(
            (
                config.requestHeaderTimeout,
                config.requestBodyTimeout,
                config.requestBodyMinRate,
                config.maxRequestBody,
            ),
            (2.5, 4.0, 0, 1000),
        )
        self.assertIn(
            "must be a whole number of bytes, 1 or more",
            self.loadError({"run": RUN, "maxRequestBody": 0}),
        )
        self.assertIn(
            "bytes a second, 0 or more",
            self.loadError({"run": RUN, "requestBodyMinRate": -1}),
        )
        self.assertIn(
            "greater than 0", self.loadError({"run": RUN, "requestHeaderTimeout": 0})
        )

    def test_negativeTime(self) -> None:
        """
        A negative time is an error naming the unit.
        """
        message = self.loadError({"run": RUN, "drainTimeout": -5})
        self.assertIn('"drainTimeout" is -5', message)
        self.assertIn("milliseconds, 0 or more", message)

    def test_zeroTimes(self) -> None:
        """
        Waits may be 0, but the start timeout, the health-check interval and
        timeout, and the backend timeouts must be positive.
        """
        self.assertEqual(self.load({"run": RUN, "killTimeout": 0}).killTimeout, 0)
        for key in (
            "startTimeout",
            "healthCheckInterval",
            "healthCheckTimeout",
            "backendTimeout",
            "backendBodyTimeout",
        ):
            message = self.loadError({"run": RUN, key: 0})
            self.assertIn("greater than 0", message)

    def test_nonFiniteTime(self) -> None:
        """
        JSON's non-standard NaN and Infinity are not times.
        """
        self.directory.child("rainbow.conf.json").setContent(
            b'{"run": "x $1", "drainTimeout": Infinity}'
        )
        message = self.loadError()
        self.assertIn("not a finite number", message)

    def test_warmupTime(self) -> None:
        """
        warmupTime replaces the health check: healthCheckPath becomes None.
        """
        config = self.load({"run": RUN, "warmupTime": 2500})
        self.assertEqual((config.warmupTime, config.healthCheckPath), (2.5, None))

    def test_bothCheckKeys(self) -> None:
        """
        healthCheckPath and warmupTime together in the file are an error.
        """
        message = self.loadError(
            {"run": RUN, "healthCheckPath": "/up", "warmupTime": 1000}
        )
        self.assertIn('"healthCheckPath" and "warmupTime" are both set', message)

    def test_warmupWithinStartTimeout(self) -> None:
        """
        A warmupTime that is not shorter than startTimeout is an error, since
        every deploy would fail.
        """
        message = self.loadError({"run": RUN, "warmupTime": 60000})
        self.assertIn(
            '"warmupTime" is 60000 ms, but a new version must be ready within '
            "startTimeout (60000 ms)",
            message,
        )
        config = self.load({"run": RUN, "warmupTime": 60000, "startTimeout": 90000})
        self.assertEqual(config.warmupTime, 60.0)

    def test_flagCheckBeatsFileCheck(self) -> None:
        """
        A warmupTime override replaces the file's healthCheckPath, and the
        other way round.
        """
        config = self.load({"run": RUN, "healthCheckPath": "/up"}, {"warmupTime": 1000})
        self.assertEqual((config.healthCheckPath, config.warmupTime), (None, 1.0))
        config = self.load({"run": RUN, "warmupTime": 1000}, {"healthCheckPath": "/up"})
        self.assertEqual((config.healthCheckPath, config.warmupTime), ("/up", None))

    def test_healthCheckPathStartsWithSlash(self) -> None:
        """
        A healthCheckPath not starting with "/" is an error.
        """
        message = self.loadError({"run": RUN, "healthCheckPath": "health"})
        self.assertIn('starting with "/"', message)

    def test_lbHealthPath(self) -> None:
        """
        lbHealthPath is off by default; a path is taken as it is, and one
        that does not start with "/", has a query string, or is "/" is an
        error saying why.
        """
        self.assertIsNone(self.load({"run": RUN}).lbHealthPath)
        self.assertEqual(
            self.load({"run": RUN, "lbHealthPath": "/_rainbowd/up"}).lbHealthPath,
            "/_rainbowd/up",
        )
        for path, why in [
            ("up", 'starting with "/"'),
            ("/up?x=1", "a query string or fragment is never part of the path"),
            ("/", "would hide the app's own home page"),
        ]:
            message = self.loadError({"run": RUN, "lbHealthPath": path})
            self.assertIn('"lbHealthPath"', message)
            self.assertIn(why, message)

    def test_stopDelay(self) -> None:
        """
        stopDelay is 0 by default, in ms in the file and seconds in Config.
        """
        self.assertEqual(self.load({"run": RUN}).stopDelay, 0)
        self.assertEqual(self.load({"run": RUN, "stopDelay": 3000}).stopDelay, 3.0)
        self.assertIn("0 or more", self.loadError({"run": RUN, "stopDelay": -1}))

    def test_jsonSyntaxError(self) -> None:
        """
        Invalid JSON is an error naming the file, the line and the column.
        """
        path = self.directory.child("rainbow.conf.json")
        path.setContent(b'{\n  "run": "x"\n  "port": 8000\n}\n')
        message = self.loadError()
        self.assertIn(f"{path.path} is not valid JSON: line 3, column 3:", message)
        self.assertIn("Expecting ',' delimiter", message)

    def test_jsonComment(self) -> None:
        """
        A comment is an error saying that JSON has none, not that a comma
        or a quote is missing.
        """
        path = self.directory.child("rainbow.conf.json")
        for comment in ["// the app", "# the app", "/* the app */"]:
            path.setContent(f'{{\n  {comment}\n  "run": "x $1"\n}}\n'.encode())
            message = self.loadError()
            self.assertIn(f"{path.path} is not valid JSON: line 2, column 3:", message)
            self.assertIn("a comment, which JSON does not have; remove it", message)
            self.assertNotIn("missing comma", message)

    def test_duplicateKey(self) -> None:
        """
        A key given twice is an error rather than the last one silently
        winning.
        """
        self.directory.child("rainbow.conf.json").setContent(
            b'{"run": "x", "port": 8000, "port": 9000}'
        )
        self.assertIn('"port" appears twice', self.loadError())

    def test_topLevelNotObject(self) -> None:
        """
        A file holding anything but an object is an error.
        """
        # Not an object, on purpose.
        message = self.loadError(["run", RUN])  # type: ignore[arg-type]
        self.assertIn("must hold a JSON object", message)
        self.assertIn("a list", message)

    def test_missingExplicitFile(self) -> None:
        """
        An explicit path that does not exist is an error naming it.
        """
        path = self.directory.child("nope.json").path
        error = self.assertRaises(ConfigError, loadConfig, path, {"run": RUN})
        self.assertIn(f"The config file {path} does not exist", str(error))

    def test_missingDefaultFile(self) -> None:
        """
        No default file and no run override is an error saying how to give
        one.
        """
        self.assertEqual(
            self.loadError(),
            f"No rainbow.conf.json in {self.directory.path}: write one with "
            'a "run" key (see README), or pass --config PATH or --run COMMAND.',
        )

    def test_runWithoutFile(self) -> None:
        """
        Without a file, overrides giving C{run} are enough, and paths default
        to C{cwd}.
        """
        config = self.load(None, {"run": RUN, "port": 9000})
        self.assertEqual(config.source, None)
        self.assertEqual(config.port, "tcp:9000:interface=127.0.0.1")
        self.assertEqual(config.cwd, self.directory.path)
        self.assertEqual(config.stateDir, self.directory.child(".rainbowd").path)

    def test_explicitRelativePath(self) -> None:
        """
        A relative config path is relative to C{cwd}, and the app runs and
        keeps its state in the file's directory.
        """
        other = self.directory.child("site")
        other.makedirs()
        other.child("prod.json").setContent(json.dumps({"run": RUN}).encode())
        config = loadConfig("site/prod.json", cwd=self.directory.path)
        self.assertEqual(config.source, other.child("prod.json").path)
        self.assertEqual(config.cwd, other.path)
        self.assertEqual(config.stateDir, other.child(".rainbowd").path)

    def test_overridesBeatFile(self) -> None:
        """
        Overrides replace the file's values and are checked the same way;
        None overrides are ignored.
        """
        config = self.load(
            {"run": RUN, "port": 8000, "drainTimeout": 1000},
            {"port": 9000, "drainTimeout": 5000, "killTimeout": None},
        )
        self.assertEqual(config.port, "tcp:9000:interface=127.0.0.1")
        self.assertEqual(config.drainTimeout, 5.0)
        self.assertEqual(config.killTimeout, 10.0)
        message = self.loadError({"run": RUN}, {"maxBackends": 0})
        self.assertIn("On the command line, --max-backends", message)
        self.assertIn('"maxBackends"', message)

    def test_backendPorts(self) -> None:
        """
        backendPorts "LOW-HIGH" becomes a tuple; spaces are allowed.
        """
        config = self.load({"run": RUN, "backendPorts": " 1024 - 1024 "})
        self.assertEqual(config.backendPorts, (1024, 1024))

    def test_backendPortsErrors(self) -> None:
        """
        backendPorts that are not "LOW-HIGH" with 1024 <= LOW <= HIGH <=
        65535 are errors.
        """
        for ports in ("20000", "30000-20000", "80-1000", "20000-70000", 20000):
            message = self.loadError({"run": RUN, "backendPorts": ports})
            self.assertIn(f'"backendPorts" is {ports!r}', message)
            self.assertIn('"LOW-HIGH"', message)

    def test_env(self) -> None:
        """
        env becomes a read-only mapping that compares equal to a dict.
        """
        config = self.load({"run": RUN, "env": {"A": "1", "B": ""}})
        self.assertEqual(config.env, {"A": "1", "B": ""})

        def change() -> None:
            # A write to the read-only mapping, on purpose.
            config.env["C"] = "3"  # type: ignore[index]

        self.assertRaises(TypeError, change)
        self.assertEqual(hash(config), hash(self.load()))

    def test_envErrors(self) -> None:
        """
        env must be an object of string values with usable names; a number
        value is an error suggesting quotes.
        """
        message = self.loadError({"run": RUN, "env": ["A=1"]})
        self.assertIn("(a list), but it must be an object of strings", message)
        message = self.loadError({"run": RUN, "env": {"WORKERS": 4}})
        self.assertIn('quote it, e.g. "WORKERS": "4"', message)
        message = self.loadError({"run": RUN, "env": {"A=B": "1"}})
        self.assertIn("'A=B' is not a usable variable name", message)

    def test_cwdRelativeToFile(self) -> None:
        """
        A relative cwd in the file is relative to the file's directory.
        """
        self.directory.child("app").child("current").makedirs()
        config = self.load({"run": RUN, "cwd": "app/current"})
        self.assertEqual(config.cwd, self.directory.descendant(["app", "current"]).path)

    def test_cwdMissing(self) -> None:
        """
        A cwd that does not exist, or is a file, is an error naming it.
        """
        message = self.loadError({"run": RUN, "cwd": "missing"})
        self.assertIn(self.directory.child("missing").path, message)
        self.assertIn("not an existing directory", message)
        self.write({}, "file")
        message = self.loadError({"run": RUN, "cwd": "file"})
        self.assertIn("not an existing directory", message)

    def test_stateDir(self) -> None:
        """
        A relative stateDir is relative to the file in the file, and to the
        current directory on the command line; a file in its place is an
        error.
        """
        self.assertEqual(
            self.load({"run": RUN, "stateDir": "state"}).stateDir,
            self.directory.child("state").path,
        )
        elsewhere = self.directory.child("elsewhere")
        elsewhere.makedirs()
        config = loadConfig(
            self.directory.child("rainbow.conf.json").path,
            {"stateDir": "state"},
            cwd=elsewhere.path,
        )
        self.assertEqual(config.stateDir, elsewhere.child("state").path)
        self.write({}, "occupied")
        self.assertIn(
            "not a directory", self.loadError({"run": RUN, "stateDir": "occupied"})
        )

    def test_controlTokenFile(self) -> None:
        """
        controlTokenFile is unset by default; a relative one is relative to
        the file in the file, and to the current directory on the command
        line.
        """
        self.assertIsNone(self.load({"run": RUN}).controlTokenFile)
        self.assertEqual(
            self.load({"run": RUN, "controlTokenFile": "secret/token"}).controlTokenFile,
            self.directory.child("secret").child("token").path,
        )
        elsewhere = self.directory.child("elsewhere")
        elsewhere.makedirs()
        config = loadConfig(
            self.directory.child("rainbow.conf.json").path,
            {"controlTokenFile": "token"},
            cwd=elsewhere.path,
        )
        self.assertEqual(config.controlTokenFile, elsewhere.child("token").path)

    def test_maintenancePage(self) -> None:
        """
        maintenancePage is unset by default; a relative one is relative to
        the config file.  L{loadConfig} does not read it (rainbowctl must
        work whatever the page).
        """
        self.assertIsNone(self.load({"run": RUN}).maintenancePage)
        self.assertEqual(
            self.load({"run": RUN, "maintenancePage": "down.html"}).maintenancePage,
            self.directory.child("down.html").path,
        )

    def test_readMaintenancePage(self) -> None:
        """
        L{readMaintenancePage} returns the file's bytes; one that is
        missing, a directory, not UTF-8 or over 1 MiB is a config error
        naming the file, the key and the fix.
        """
        self.directory.child("down.html").setContent(b"<h1>caf\xc3\xa9</h1>")
        self.assertEqual(
            readMaintenancePage(self.directory.child("down.html").path),
            b"<h1>caf\xc3\xa9</h1>",
        )
        self.directory.child("dir").makedirs()
        self.directory.child("latin1.html").setContent(b"caf\xe9")
        self.directory.child("big.html").setContent(b"x" * (1024 * 1024 + 1))
        for name, problem in [
            ("missing.html", "does not exist: create it, or remove the key"),
            ("dir", "is a directory: name an HTML file"),
            ("latin1.html", "is not UTF-8 text"),
            ("big.html", "is bigger than 1024 KiB"),
        ]:
            path = self.directory.child(name).path
            message = str(self.assertRaises(ConfigError, readMaintenancePage, path))
            self.assertIn(
                f'The maintenance page {path} ("maintenancePage") {problem}',
                message,
            )

    def test_maintenancePageNotAFile(self) -> None:
        """
        A C{maintenancePage} that is a FIFO is a config error, not a read
        that blocks rainbowd until something writes to it.
        """
        fifo = self.directory.child("down.fifo").path
        os.mkfifo(fifo)
        message = str(self.assertRaises(ConfigError, readMaintenancePage, fifo))
        self.assertIn(
            f'The maintenance page {fifo} ("maintenancePage") is not a regular '
            "file: name an HTML file",
            message,
        )

    def test_maintenancePageBadPath(self) -> None:
        """
        A C{maintenancePage} under a file, or a symlink loop, is an error
        that says to fix the path, not to grant read access.
        """
        self.directory.child("down.html").setContent(b"<h1>down</h1>")
        loop = self.directory.child("loop.html").path
        os.symlink(loop, loop)
        for path in [self.directory.child("down.html").child("x").path, loop]:
            message = str(self.assertRaises(ConfigError, readMaintenancePage, path))
            self.assertIn(
                f'The maintenance page {path} ("maintenancePage") cannot be '
                "read: ",
                message,
            )
            self.assertIn("fix the path", message)
            self.assertNotIn("read access", message)

    def test_controlAllowedOrigins(self) -> None:
        """
        controlAllowedOrigins is a list of origins, kept as browsers send
        them (lower case, no default port); a comma-separated string, as
        the flag gives it, is a list too.
        """
        self.assertEqual(self.load({"run": RUN}).controlAllowedOrigins, ())
        config = self.load(
            {
                "run": RUN,
                "controlAllowedOrigins": ["https://Ops.Example.com:443", "null"],
            }
        )
        self.assertEqual(config.controlAllowedOrigins, ("https://ops.example.com", "null"))
        config = self.load(
            {"run": RUN},
            {"controlAllowedOrigins": "http://a.example:8080, http://b.example"},
        )
        self.assertEqual(
            config.controlAllowedOrigins, ("http://a.example:8080", "http://b.example")
        )

    def test_controlAllowedOriginsErrors(self) -> None:
        """
        An origin with a path, or without a scheme, or a value that is not
        a list of strings, is an error naming the key, the entry and the
        form expected.
        """
        for value, detail in [
            (["https://ops.example.com/dash"], "'https://ops.example.com/dash' is not one"),
            (["ops.example.com"], "'ops.example.com' is not one"),
            ([7], "7 is a number, not a string"),
            ({"a": 1}, "(an object)"),
        ]:
            error = self.loadError({"run": RUN, "controlAllowedOrigins": value})
            self.assertIn('"controlAllowedOrigins" is', error)
            self.assertIn('"scheme://host" or "scheme://host:port"', error)
            self.assertIn(detail, error)

    def test_controlAllowedHosts(self) -> None:
        """
        controlAllowedHosts is a list of names or addresses, lower case and
        without a trailing dot; one with a port is an error.
        """
        self.assertEqual(self.load({"run": RUN}).controlAllowedHosts, ())
        config = self.load(
            {"run": RUN, "controlAllowedHosts": ["Rainbowd.Internal.", "10.0.0.5", "[::1]"]}
        )
        self.assertEqual(config.controlAllowedHosts, ("rainbowd.internal", "10.0.0.5", "::1"))
        error = self.loadError({"run": RUN, "controlAllowedHosts": ["rainbowd:7001"]})
        self.assertIn("'rainbowd:7001' is not one", error)
        self.assertIn("without a port", error)

    def test_longValueShortened(self) -> None:
        """
        A long bad value is shortened in the message.
        """
        message = self.loadError({"run": RUN, "healthCheckPath": "x" * 1000})
        self.assertIn(" ... ", message)
        self.assertLess(len(message), 400)


class PortRangeTests(SynchronousTestCase):
    """
    Tests for L{ephemeralPortRange} and L{portRangeWarning}.
    """

    def config(self, low: int, high: int) -> Config:
        return Config(
            run=RUN, backendPorts=(low, high), cwd="/srv", stateDir="/srv/.rainbowd"
        )

    def test_ephemeralPortRange(self) -> None:
        """
        The kernel's range is read as two whole numbers.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"32768\t60999\n")
        self.assertEqual(ephemeralPortRange(path.path), (32768, 60999))

    def test_ephemeralPortRangeUnknown(self) -> None:
        """
        A missing or garbled range file gives None.
        """
        path = FilePath(self.mktemp())
        self.assertIsNone(ephemeralPortRange(path.path))
        path.setContent(b"lots\n")
        self.assertIsNone(ephemeralPortRange(path.path))

    def test_noOverlap(self) -> None:
        """
        No warning when the backend ports are outside the ephemeral range or
        the range is unknown.
        """
        self.assertIsNone(portRangeWarning(self.config(20000, 29999), (32768, 60999)))
        self.assertIsNone(portRangeWarning(self.config(61000, 62000), (32768, 60999)))
        self.assertIsNone(portRangeWarning(self.config(40000, 41000), None))

    def test_overlapWarning(self) -> None:
        """
        Overlapping ranges give a warning explaining the risk and
        suggesting a range below the ephemeral one.
        """
        warning = portRangeWarning(self.config(30000, 40000), (32768, 60999))
        assert warning is not None
        self.assertIn('"30000-40000"', warning)
        self.assertIn("ephemeral port range 32768-60999", warning)
        self.assertIn("outgoing connections", warning)
        self.assertIn('"backendPorts": "20000-29999"', warning)
        warning = portRangeWarning(self.config(20000, 29999), (15000, 60999))
        assert warning is not None
        self.assertIn('"backendPorts": "5000-14999"', warning)
