# -*- test-case-name: hubproxy.test.test_tools -*-
"""
Routes of the tools: C{/api/...}, C{/download}, C{/search} and the web UI.

Each tool lives in its own module; this one only mounts them.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from hubproxy.errors import NotFound
from hubproxy.handler import ErrorLeaf


class Dispatch(Resource):
    """
    A plain path-segment router whose unknown children are JSON 404s.
    """

    def __init__(self, children: dict[bytes, Resource], style: str = "json") -> None:
        super().__init__()
        self._style = style
        for name, child in children.items():
            self.putChild(name, child)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return ErrorLeaf(NotFound(f"no such endpoint: {request.path.decode('latin-1')}"), self._style)

    def render(self, request: Request) -> Any:
        return ErrorLeaf(NotFound(f"no such endpoint: {request.path.decode('latin-1')}"), self._style).render(request)


def make_tool_resources(app: Any) -> dict[bytes, Resource]:
    api_children: dict[bytes, Resource] = {}
    token_admin = app.extras.get("token_admin")
    if token_admin is not None:
        api_children[b"cache"] = Dispatch({b"tokens": token_admin})
    routes: dict[bytes, Resource] = {b"api": Dispatch(api_children)}
    return routes
