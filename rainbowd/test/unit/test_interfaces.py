# -*- test-case-name: rainbowd.test.unit.test_interfaces -*-
"""
Tests for L{rainbowd.interfaces}: every real object and every fake that
says it provides a contract does, by C{verifyObject}.
"""

import io

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from rainbowd.app.backend import Backend
from rainbowd.app.processgroups import ProcessGroupSignals
from rainbowd.control.metrics import Metrics
from rainbowd.interfaces import (
    IControlledDeployer,
    IProcessSignals,
    IRequestHandler,
    IRequestLog,
    IResponseReceiver,
    IRoutableBackend,
    IRoutingDeployer,
    ISlotWaiter,
)
from rainbowd.test.fakes import FakeProcessReactor, FakeSignals
from rainbowd.test.inmemory import FakeBackend, FakeDeployer, World
from rainbowd.test.unit.test_backendclient import RecordingHandler
from rainbowd.test.unit.test_control import FakeDeployer as ControlFakeDeployer
from rainbowd.test.unit.test_deployer import Harness
from rainbowd.test.unit.test_metrics import ObservableDeployer
from rainbowd.test.unit.test_proxy import RecordingLog
from rainbowd.web.accesslog import AccessLog, Both
from rainbowd.web.proxy import _Forwarding


class DeployerTests(SynchronousTestCase):
    """
    The deployer's contracts with the proxy and with the control API.
    """

    def test_real(self) -> None:
        """
        L{rainbowd.app.deployer.Deployer} provides both.
        """
        deployer = Harness(self).deployer
        self.assertTrue(verifyObject(IRoutingDeployer, deployer))
        self.assertTrue(verifyObject(IControlledDeployer, deployer))

    def test_proxyFake(self) -> None:
        """
        The proxy tests' fake deployer provides L{IRoutingDeployer}.
        """
        self.assertTrue(verifyObject(IRoutingDeployer, FakeDeployer()))

    def test_controlFake(self) -> None:
        """
        The control tests' fake deployer provides L{IControlledDeployer}.
        """
        self.assertTrue(verifyObject(IControlledDeployer, ControlFakeDeployer()))


class BackendTests(SynchronousTestCase):
    """
    A backend's contract with the proxy.
    """

    def test_real(self) -> None:
        """
        L{rainbowd.app.backend.Backend} provides L{IRoutableBackend}.
        """
        harness = Harness(self)
        backend = Backend(
            harness.configs[0],
            1,
            20000,
            harness.reactor,
            harness.health,
            harness.signals,
        )
        self.assertTrue(verifyObject(IRoutableBackend, backend))

    def test_fake(self) -> None:
        """
        The proxy tests' fake backend provides L{IRoutableBackend}.
        """
        self.assertTrue(verifyObject(IRoutableBackend, FakeBackend(1, 20000)))


class RequestLogTests(SynchronousTestCase):
    """
    The public port's request logs.
    """

    def test_accessLog(self) -> None:
        """
        L{rainbowd.web.accesslog.AccessLog} provides L{IRequestLog}.
        """
        log = AccessLog(io.StringIO(), "combined", FakeProcessReactor())
        self.assertTrue(verifyObject(IRequestLog, log))

    def test_both(self) -> None:
        """
        L{rainbowd.web.accesslog.Both} provides L{IRequestLog}.
        """
        self.assertTrue(verifyObject(IRequestLog, Both(RecordingLog(), RecordingLog())))

    def test_metrics(self) -> None:
        """
        L{rainbowd.control.metrics.Metrics} provides L{IRequestLog}.
        """
        metrics = Metrics(ObservableDeployer(), processMetrics=False)
        self.assertTrue(verifyObject(IRequestLog, metrics))

    def test_fake(self) -> None:
        """
        The proxy tests' recording log provides L{IRequestLog}.
        """
        self.assertTrue(verifyObject(IRequestLog, RecordingLog()))


class ProcessSignalsTests(SynchronousTestCase):
    """
    The signals the backends and the leftovers' cleanup send.
    """

    def test_real(self) -> None:
        """
        L{rainbowd.app.processgroups.ProcessGroupSignals} provides L{IProcessSignals}.
        """
        self.assertTrue(verifyObject(IProcessSignals, ProcessGroupSignals()))

    def test_fake(self) -> None:
        """
        L{rainbowd.test.fakes.FakeSignals} provides L{IProcessSignals}.
        """
        signals = FakeSignals(FakeProcessReactor())
        self.assertTrue(verifyObject(IProcessSignals, signals))


class HandlerTests(SynchronousTestCase):
    """
    The handler of a request forwarded to a backend.
    """

    def test_real(self) -> None:
        """
        The proxy's forwarding of a request provides L{IRequestHandler} and
        L{ISlotWaiter}.
        """
        # No request: only the methods the Interfaces name are looked at.
        forwarding = _Forwarding(World().proxy, None, b"", 0, 0.0, False)  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IRequestHandler, forwarding))
        self.assertTrue(verifyObject(ISlotWaiter, forwarding))

    def test_fake(self) -> None:
        """
        The backend client tests' recording handler provides
        L{IResponseReceiver}.
        """
        self.assertTrue(verifyObject(IResponseReceiver, RecordingHandler()))
