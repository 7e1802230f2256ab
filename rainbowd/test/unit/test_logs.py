# -*- test-case-name: rainbowd.test.unit.test_logs -*-
"""
Tests for L{rainbowd.logs}, and for the fields of rainbowd's own log events.
"""

import io
import json
from typing import List, cast

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogPublisher,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.trial.unittest import SynchronousTestCase

from rainbowd.logs import jsonObserver
from rainbowd.test.unit.test_deployer import Harness


class JSONObserverTests(SynchronousTestCase):
    """
    L{jsonObserver} writes rainbowd's events as JSON lines.
    """

    def test_backendLine(self) -> None:
        """
        A line of the app's output becomes one JSON object on a line of its
        own, with its generation, stream and text as fields; the text form
        shows the generation too.
        """
        out = io.StringIO()
        observer = jsonObserver(out)
        texts: List[LogEvent] = []
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        # Any callable of an event observes; mypy-zope knows only those
        # declared to provide ILogObserver.
        observeText = cast(ILogObserver, texts.append)
        globalLogPublisher.addObserver(observeText)
        self.addCleanup(globalLogPublisher.removeObserver, observeText)
        h = Harness(self)
        h.deployer.startService()
        h.process(1).emit(b"listening\n", 2)
        lines = out.getvalue().splitlines()
        events = [json.loads(line) for line in lines]
        [event] = [e for e in events if e.get("line") == "listening"]
        self.assertEqual(
            (event["generation"], event["stream"], event["log_level"]["name"]),
            (1, "stderr", "info"),
        )
        self.assertEqual(event["log_namespace"], "rainbowd.app.backend.Backend")
        self.assertIn(
            "[generation 1] listening",
            [formatEventAsClassicLogText(e) for e in texts if e.get("line")][0],
        )

    def test_noRecordSeparator(self) -> None:
        """
        Lines start with the JSON object, not an RS character, so that
        journald and log shippers read them as JSON lines.
        """
        out = io.StringIO()
        publisher = LogPublisher(jsonObserver(out))
        publisher({"log_format": "hello {who}", "who": "world", "log_time": 1.0})
        self.assertEqual(json.loads(out.getvalue())["who"], "world")
        self.assertTrue(out.getvalue().startswith("{"))
