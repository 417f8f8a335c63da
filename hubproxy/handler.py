# -*- test-case-name: hubproxy.test.test_site -*-
"""
The shape of every asynchronous leaf resource.

C{render} starts C{handle(request)} (an C{async def}) as a Deferred and
returns C{NOT_DONE_YET}.  If the client hangs up, the Deferred is cancelled,
which cancels whatever it awaits (an upstream request still waiting for
headers, a token fetch).  Whatever goes wrong ends in
L{hubproxy.errors.handle_failure}: one place, one error style per resource.
"""

from __future__ import annotations

from typing import Any, ClassVar, Coroutine

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hubproxy.errors import HubproxyError, MethodNotAllowed, client_gone, handle_failure, write_error


class AsyncLeaf(Resource):
    """
    Base class: subclasses implement C{async def handle(request)}.

    @cvar error_style: C{"registry"}, C{"json"} or C{"text"}.
    @cvar methods: methods accepted; others get 405.
    """

    isLeaf = True
    error_style: ClassVar[str] = "text"
    methods: ClassVar[frozenset[bytes]] = frozenset({b"GET", b"HEAD"})
    log = Logger()

    def handle(self, request: Request) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def render(self, request: Request) -> Any:
        if request.method not in self.methods:
            allowed = b", ".join(sorted(self.methods))
            err = MethodNotAllowed(f"method {request.method.decode('latin-1')} not allowed here", headers={"Allow": allowed.decode()})
            write_error(request, err, self.error_style)
            return NOT_DONE_YET
        d = defer.Deferred.fromCoroutine(self.handle(request))
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        handle_failure(request, failure, self.error_style)


class ErrorLeaf(Resource):
    """
    A leaf that answers every request with one fixed error (refusals made
    while routing: the guard, unknown paths).
    """

    isLeaf = True

    def __init__(self, error: HubproxyError, style: str) -> None:
        super().__init__()
        self.error = error
        self.style = style

    def render(self, request: Request) -> Any:
        write_error(request, self.error, self.style)
        return NOT_DONE_YET

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self


def finished(request: Request) -> bool:
    """
    Whether nothing more may be written (client gone or response done).
    """
    return client_gone(request)
