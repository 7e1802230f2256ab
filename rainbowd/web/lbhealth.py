# -*- test-case-name: rainbowd.test.unit.test_lbhealth -*-
"""
The load balancer's health check (C{lbHealthPath}), answered by rainbowd on
the public port.

A load balancer in front of several rainbowd hosts (HAProxy's C{option
httpchk}, nginx Plus's C{health_check}) asks each host this path every few
seconds, and sends traffic only to the hosts that answer 200.  rainbowd
answers it itself, never forwarding it to the app: 200 while a version
serves, 503 while none is ready, traffic is paused or in maintenance (see
L{rainbowd.web.traffic}), or rainbowd is stopping (see L{rainbowd.web.stopdelay}),
so that a host leaves the pool before it stops
accepting connections.

The path is matched on the request's path alone (a query string is
ignored), in origin form or absolute form.  It is the load balancer's, so the
control API's browser checks (Host, Origin) do not apply: it says no more
than whether the host takes traffic.
"""

from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rainbowd.web.traffic import Mode, Traffic

_ANSWERED = (b"GET", b"HEAD")


def whyDown(deployer: Any, stopping: bool, mode: Mode = Mode.SERVING) -> Optional[str]:
    """
    Why this host should get no new requests from the load balancer, or
    L{None} if it should.

    @param deployer: has C{routable}, the backend taking new requests or
        L{None}.
    @param stopping: rainbowd is stopping (within C{stopDelay}, or
        draining).
    @param mode: the traffic mode: paused or in maintenance, new requests
        would wait or get the maintenance page, so the host is down.
    """
    if stopping:
        return "rainbowd is stopping"
    if mode is not Mode.SERVING:
        return f"traffic is {mode.value} (rainbowctl resume serves again)"
    if deployer.routable is None:
        return "no version of the app is ready"
    return None


def _pathOf(target: bytes) -> bytes:
    """
    The path of an absolute-form request target (C{http://host/path}).
    """
    try:
        return urlsplit(target).path or b"/"
    except ValueError:
        return b""


class LBHealthFront(Resource):
    """
    The resource of the public port when C{lbHealthPath} is set: it answers
    that path, and hands every other request to the proxy.

    @ivar path: the path answered, as bytes.
    @ivar proxy: the resource every other request goes to.
    @ivar down: no arguments -> why the host is down, or L{None}; see
        L{whyDown}.
    """

    isLeaf = True

    def __init__(self, path: str, proxy: Resource, down: Callable[[], Optional[str]]):
        Resource.__init__(self)
        self.path = path.encode("ascii")
        self.proxy = proxy
        self.down = down

    def render(self, request: Request) -> object:
        path = request.path
        if path != self.path and (path[:1] == b"/" or _pathOf(path) != self.path):
            return self.proxy.render(request)
        if request.method not in _ANSWERED:
            return _answer(
                request,
                405,
                f"rainbowd: {self.path.decode('ascii')} is the load balancer's "
                "health check; ask it with GET or HEAD",
                allow=True,
            )
        why = self.down()
        if why is None:
            return _answer(request, 200, "rainbowd: up")
        return _answer(request, 503, f"rainbowd: down: {why}")


def _answer(request: Request, code: int, message: str, allow: bool = False) -> object:
    """
    Answer C{request} with C{code} and C{message} in plain text, never to be
    cached (a HEAD request gets the same head, without the body).
    """
    body = (message + "\n").encode("utf-8")
    headers = request.responseHeaders
    request.setResponseCode(code)
    headers.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
    headers.setRawHeaders(b"Cache-Control", [b"no-store"])
    if allow:
        headers.setRawHeaders(b"Allow", [b"GET, HEAD"])
    request.write(body)
    request.finish()
    return NOT_DONE_YET


def publicResource(
    path: Optional[str], proxy: Resource, deployer: Any, stop: Any, traffic: Traffic
) -> Resource:
    """
    The resource of the public port: C{proxy}, behind an L{LBHealthFront}
    if C{path} (C{lbHealthPath}) is set.

    @param stop: has C{stopping}; see L{rainbowd.web.stopdelay.StopDelay}.
    @param traffic: the traffic mode's owner.
    """
    if path is None:
        return proxy
    return LBHealthFront(
        path, proxy, lambda: whyDown(deployer, stop.stopping, traffic.mode)
    )
