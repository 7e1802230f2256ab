# -*- test-case-name: rainbowd.test.unit.test_interfaces -*-
"""
The contracts rainbowd's parts talk through, as L{zope.interface}
Interfaces: each is declared on the real class and on the tests' fakes,
and L{rainbowd.test.unit.test_interfaces} checks both with C{verifyObject}.
"""

from typing import Any

from zope.interface import Attribute, Interface


class IRoutableBackend(Interface):
    """
    A backend as the proxy (L{rainbowd.web.proxy.ReverseProxy}) sees it.
    """

    port = Attribute("The port on 127.0.0.1 the backend listens on.")
    generation = Attribute("The backend's generation number.")
    tally = Attribute(
        "A L{rainbowd.app.backend.ResponseTally}, whose C{responses} and "
        "C{errors} the proxy counts up."
    )

    def requestStarted() -> None:
        """
        A request is forwarded to the backend.  Called exactly once per
        request, as L{requestFinished} is, so that it can be drained.
        """

    def requestFinished() -> None:
        """
        A request forwarded to the backend is done, however it ended.
        """

    def tunnelOpened(tunnel: Any) -> None:
        """
        An upgraded connection to the backend became C{tunnel}; the backend
        may end it with C{tunnel.close()}.  Once per upgraded connection.
        """

    def tunnelClosed(tunnel: Any) -> None:
        """
        C{tunnel}, opened before, is closed.  Once per upgraded connection.
        """

    def whenDraining() -> Any:
        """
        @return: a new L{Deferred} firing once the backend takes no new
            requests (its idle connections are then closed).
        """

    def whenStopped() -> Any:
        """
        @return: a new L{Deferred} firing once the backend has stopped (its
            connection pool is then forgotten).
        """


class IRoutingDeployer(Interface):
    """
    The deployer as the proxy (L{rainbowd.web.proxy.ReverseProxy}) sees it.
    """

    routable = Attribute(
        "The L{IRoutableBackend} currently receiving new requests, or None; "
        "it is read once per request, which is what makes a swap atomic."
    )

    def whenRoutable() -> Any:
        """
        @return: a new cancellable L{Deferred} firing with the next backend
            to become routable.
        """

    def whyNotRoutable() -> Any:
        """
        @return: L{None}, or a sentence saying why no backend is routable,
            for the 503 of a request that waited for one in vain.
        """


class IControlledDeployer(Interface):
    """
    The deployer as the control API (L{rainbowd.control.resource.ControlResource})
    sees it.
    """

    active = Attribute("The backend serving, or None.")

    def redeploy(requester: Any = None, message: Any = None) -> Any:
        """
        Deploy the code and configuration as they are now.

        @param requester: Who asked, for the events and the history.
        @param message: The operator's note on the deploy.
        @return: a L{Deferred} firing when the deploy is done, or failing
            with why it was not.
        """

    def rollback(requester: Any = None) -> Any:
        """
        Go back to the previous generation.

        @return: a L{Deferred}, as L{redeploy}'s.
        """

    def observe(observer: Any) -> Any:
        """
        Call C{observer} with every event from now on.

        @return: a function that stops it.
        """

    def status() -> Any:
        """
        @return: the JSON-able status the control API's C{/status} gives.
        """


class IRequestLog(Interface):
    """
    What hears of every request the public port's site
    (L{rainbowd.web.proxy.ProxySite}) receives, however it ends: the metrics,
    the access log.
    """

    def finished(request: Any, seconds: float) -> None:
        """
        The response to C{request} is complete, C{seconds} after the request
        was received.
        """

    def unfinished(request: Any, seconds: float) -> None:
        """
        The connection of C{request} closed before its response was
        complete, C{seconds} after the request was received.
        """


class IProcessSignals(Interface):
    """
    Signals to, and questions about, the processes of the operating system,
    as the backends and the leftovers' cleanup send and ask them (see
    L{rainbowd.app.processgroups.ProcessGroupSignals}).
    """

    def signalProcess(pid: int, signum: int) -> None:
        """
        Send C{signum} to the process C{pid}.
        """

    def signalGroup(pgid: int, signum: int) -> None:
        """
        Send C{signum} to every process of the process group C{pgid}.
        """

    def groupAlive(pgid: int) -> bool:
        """
        Does a process of group C{pgid} still run?
        """

    def groupHas(pgid: int, variable: str, value: str) -> bool:
        """
        Does a running process of group C{pgid} have C{variable=value} in
        the environment it was started with?
        """

    def marked(marker: Any) -> Any:
        """
        @return: the pids of the running processes with C{marker} (a mapping
            of environment variables) in their environment.
        """

    def isMarked(pid: int, marker: Any) -> bool:
        """
        Is C{pid} running, with C{marker} in its environment?
        """

    def signalMarked(pid: int, marker: Any, signum: int) -> bool:
        """
        Send C{signum} to C{pid} only if it is running and carries
        C{marker}.

        @return: whether it was sent.
        """

    def identity(pid: int) -> Any:
        """
        @return: a string naming C{pid}'s process and no other, even after
            its pid is reused, or L{None} if it does not run.
        """

    def isStopped(pid: int) -> bool:
        """
        Is C{pid} stopped (by SIGSTOP, say)?
        """

    def groupOf(pid: int) -> Any:
        """
        @return: the process group of C{pid}, or L{None} if it does not run.
        """


class IResponseReceiver(Interface):
    """
    What hears of a backend's response from its
    L{rainbowd.web.backendclient.BackendConnection}.
    """

    upgrade = Attribute(
        "True when the request asks to switch protocols (an answer of 101 "
        "then ends the HTTP exchange)."
    )

    def responseHead(code: int, phrase: bytes, headers: Any) -> None:
        """
        The response's head came.
        """

    def responseData(data: bytes) -> None:
        """
        A piece of the response's body came.
        """

    def responseStreaming(connection: Any) -> None:
        """
        More of the body is to come than has arrived: C{connection} is the
        producer of the rest.  Once per response at most.
        """

    def responseDone() -> None:
        """
        The response is complete.
        """

    def responseBroken(reason: Any) -> None:
        """
        Instead of the rest: the response cannot be relayed, the connection
        failed in the middle of it, or its body stalled for the pool's
        C{bodyTimeout}.
        """


class IRequestHandler(IResponseReceiver):
    """
    The handler of one request forwarded to a backend (the proxy's
    forwarding of it), as L{rainbowd.web.backendclient} sees it.
    """

    def connected(connection: Any) -> None:
        """
        L{rainbowd.web.backendclient.Pool.connect} opened C{connection}.
        """

    def connectionFailed(reason: Any) -> None:
        """
        L{rainbowd.web.backendclient.Pool.connect} could not connect.
        """

    def responseFailed(reason: Any, stale: bool) -> None:
        """
        The connection closed before any of a response came; C{stale} if it
        was a reused one (the request may be sent again).
        """

    def responseTimedOut(timeout: float) -> None:
        """
        The response head has not all come within the pool's C{timeout} of
        the request being sent.
        """

    def upgraded(connection: Any, phrase: bytes, headers: Any,
                 rest: bytes) -> None:
        """
        The backend answered 101: C{connection} is the handler's to take
        over, and C{rest} the bytes that came after the head.
        """


class ISlotWaiter(Interface):
    """
    A request waiting for a slot of a capped
    L{rainbowd.web.backendclient.Pool}; once out of the queue it hears exactly
    one of L{slotGranted}, L{slotTimedOut} and L{slotMoved}.
    """

    deadline = Attribute("When it stops waiting, in the reactor's seconds.")

    def slotGranted() -> Any:
        """
        A slot is its; it may return C{False} to decline it, which then
        goes to the next.
        """

    def slotTimedOut() -> None:
        """
        Its C{deadline} came first.
        """

    def slotMoved() -> None:
        """
        Its backend began draining: it should find another.
        """
