# -*- test-case-name: hubproxy.test.test_tools -*-
"""
The web UI: three hand-written pages and their static assets, committed in
C{hubproxy/tools/web/} (no build step; plain JavaScript, no CDN).

 - C{/}: turn a GitHub / Hugging Face link into this proxy's link; docker,
   containerd and git usage for this host (taken from
   C{window.location.origin} in the browser, so it is right behind any
   reverse proxy, scheme included);
 - C{/images}: offline tars, single and batch, with a platform picker;
 - C{/search}: Docker Hub search, a tag view and copyable C{docker pull}
   lines (the copy falls back to C{execCommand} where the Clipboard API is
   unavailable, i.e. on plain-http origins).

Pages are sent with a strict Content-Security-Policy (same-origin scripts
and styles only).  C{[server] enableFrontend = false} makes these routes
404; the JSON APIs (C{/search} for non-browsers included) stay.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hubproxy.errors import MethodNotAllowed, NotFound, write_error
from hubproxy.handler import ErrorLeaf

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}


def _security_headers(request: Request) -> None:
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


class Page(Resource):
    """
    One HTML page, read once at start.
    """

    isLeaf = True

    def __init__(self, filename: str) -> None:
        super().__init__()
        with open(os.path.join(WEB_DIR, filename), "rb") as f:
            self._body = f.read()

    def render(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]):
            return ErrorLeaf(NotFound("not found"), "text").render(request)
        if request.method not in (b"GET", b"HEAD"):
            write_error(request, MethodNotAllowed("GET only", headers={"Allow": "GET, HEAD"}), "text")
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"x-frame-options", b"DENY")
        _security_headers(request)
        request.setHeader(b"content-length", str(len(self._body)).encode())
        return b"" if request.method == b"HEAD" else self._body


class Assets(Resource):
    """
    C{/assets/<name>}: the committed files, read into memory at start (they
    are a few kilobytes), so no request path ever reaches the filesystem.
    Content types come from the extension; directories are not listed.
    """

    isLeaf = True

    def __init__(self, directory: str) -> None:
        super().__init__()
        self._files: dict[bytes, tuple[bytes, bytes]] = {}
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                continue
            ext = os.path.splitext(name)[1].lower()
            with open(path, "rb") as f:
                body = f.read()
            self._files[name.encode()] = (CONTENT_TYPES.get(ext, "application/octet-stream").encode(), body)

    def names(self) -> list[str]:
        return [n.decode() for n in self._files]

    def render(self, request: Request) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            write_error(request, MethodNotAllowed("GET only", headers={"Allow": "GET, HEAD"}), "text")
            return NOT_DONE_YET
        assert request.postpath is not None  # set by Request.process before rendering
        found = self._files.get(b"/".join(request.postpath)) if len(request.postpath) == 1 else None
        if found is None:
            return ErrorLeaf(NotFound("not found"), "text").render(request)
        return _send_file(request, *found)


class SingleFile(Resource):
    """
    One asset at a fixed path (C{/favicon.ico}).
    """

    isLeaf = True

    def __init__(self, path: str, content_type: str) -> None:
        super().__init__()
        with open(path, "rb") as f:
            self._body = f.read()
        self._type = content_type.encode()

    def render(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]) or request.method not in (b"GET", b"HEAD"):
            return ErrorLeaf(NotFound("not found"), "text").render(request)
        return _send_file(request, self._type, self._body)


def _send_file(request: Request, content_type: bytes, body: bytes) -> bytes:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"public, max-age=300")
    _security_headers(request)
    request.setHeader(b"content-length", str(len(body)).encode())
    return b"" if request.method == b"HEAD" else body


def make_ui_resources(app: Any) -> dict[bytes, Resource]:
    """
    The UI routes: pages and assets, or 404s when the frontend is off.
    """
    if not app.config.server.enable_frontend:
        off = ErrorLeaf(NotFound("the web UI is disabled on this server (enableFrontend = false)"), "text")
        return {b"": off, b"images": off, b"assets": off, b"favicon.ico": off}
    assets = Assets(os.path.join(WEB_DIR, "assets"))
    favicon = SingleFile(os.path.join(WEB_DIR, "assets", "favicon.svg"), CONTENT_TYPES[".svg"])
    return {
        b"": Page("index.html"),
        b"images": Page("images.html"),
        b"assets": assets,
        b"favicon.ico": favicon,
    }
