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
    """
    The tools' routes for L{hubproxy.site.make_root}: the JSON APIs, the
    offline tars, search and (unless C{enableFrontend = false}) the web UI.
    """
    from hubproxy.tools.download import DownloadResource, Downloads, ImageBatch, ImageDownload, ImageInfo
    from hubproxy.tools.search import ApiSearch, ApiTags, DockerHub, SearchPage
    from hubproxy.tools.ui import Page, make_ui_resources

    api_children: dict[bytes, Resource] = {}
    token_admin = app.extras.get("token_admin")
    if token_admin is not None:
        api_children[b"cache"] = Dispatch({b"tokens": token_admin})
    routes: dict[bytes, Resource] = {}
    if "registry" in app.extras:
        downloads = Downloads(app)
        app.extras["downloads"] = downloads
        api_children[b"image"] = Dispatch(
            {b"download": ImageDownload(downloads), b"batch": ImageBatch(downloads), b"info": ImageInfo(downloads)}
        )
        routes[b"download"] = DownloadResource(downloads)
    hub = DockerHub(app)
    app.extras["docker_hub"] = hub
    api_children[b"search"] = ApiSearch(hub)
    api_children[b"tags"] = ApiTags(hub)
    routes[b"api"] = Dispatch(api_children)
    routes.update(make_ui_resources(app))
    page = Page("search.html") if app.config.server.enable_frontend else None
    routes[b"search"] = SearchPage(hub, page)
    return routes
