# -*- test-case-name: rainbowd.test.unit.test_control -*-
"""
treq's L{StubTreq}, typed: it sets treq's functions on itself when it is
made, so that mypy sees none of them; L{stubTreq} gives one as the
L{TreqStub} it is.
"""

from typing import Any, Callable, Protocol, cast

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.web.iweb import IResponse
from twisted.web.resource import IResource


class TreqStub(Protocol):
    """
    The functions of treq that rainbowd's tests call, on a resource in
    memory, and C{flush}, which delivers what is pending.

    @ivar _agent: the agent the requests go through, whose connections a
        test may drop.
    """

    _agent: RequestTraversalAgent

    def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[IResponse]":
        ...

    def get(self, url: str, **kwargs: Any) -> "Deferred[IResponse]":
        ...

    def head(self, url: str, **kwargs: Any) -> "Deferred[IResponse]":
        ...

    def post(self, url: str, **kwargs: Any) -> "Deferred[IResponse]":
        ...

    def content(self, response: IResponse) -> "Deferred[bytes]":
        ...

    def collect(
        self, response: IResponse, collector: Callable[[bytes], object]
    ) -> "Deferred[None]":
        ...

    def flush(self) -> None:
        ...


def stubTreq(resource: IResource) -> TreqStub:
    """
    A L{StubTreq} on C{resource}.
    """
    return cast(TreqStub, StubTreq(resource))
