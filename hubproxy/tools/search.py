# -*- test-case-name: hubproxy.test.test_search -*-
"""
Docker Hub search and tag listing.

 - C{GET /search?q=nginx&limit=10}: C{{"results":[{"name","description",
   "stars","official","automated"}]}} (the shape of C{docker search}'s
   data) for API clients; a browser (C{Accept: text/html}) gets the search
   page of the web UI instead;
 - C{GET /api/search?q=&page=&page_size=} and
   C{GET /api/tags/<ns>/<name>?page=&page_size=}: the Go version's shapes
   (reference.md 5), which its web UI and scripts read.

Upstream is C{https://registry.hub.docker.com} (reached through the one
upstream client, so C{[upstreams]} can point it elsewhere, and the upstream
proxy applies).  Answers are cached for 30 minutes on the reactor clock in
a bounded LRU map (Go's could grow without bound and left the page size out
of the tag cache key).  Upstream failures keep their meaning, as JSON:
429 stays 429 (with C{Retry-After}), a 404 is a 404, a broken or refusing
Hub is 502, a slow one 504 (Go answered 400 to all of them).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from hubproxy.errors import BadGateway, BadRequest, HubproxyError, NotFound
from hubproxy.handler import AsyncLeaf
from hubproxy.tools.download import arg, query_args, send_json
from hubproxy.upstream.client import read_body

HUB = "https://registry.hub.docker.com"
CACHE_TTL = 30 * 60.0
CACHE_ENTRIES = 1000
MAX_HUB_BODY = 8 * 1024 * 1024
_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


class TTLCache:
    """
    Bounded LRU with a per-entry TTL on the reactor clock.
    """

    def __init__(self, clock: IReactorTime, ttl: float = CACHE_TTL, limit: int = CACHE_ENTRIES) -> None:
        self._clock = clock
        self.ttl = ttl
        self.limit = limit
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any:
        entry = self._data.get(key)
        if entry is None or entry[0] <= self._clock.seconds():
            if entry is not None:
                del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: str, value: Any) -> None:
        self._data[key] = (self._clock.seconds() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.limit:
            self._data.popitem(last=False)


def _int(value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value.strip() == "":
        return default
    try:
        n = int(value.strip())
    except ValueError:
        raise BadRequest(f"not a number: {value!r}") from None
    return max(low, min(high, n))


def normalise_repository(repo: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    """
    The Go version's C{Repository} shape and normalisation: official
    images get namespace C{library} and C{repo_name} C{library/<name>};
    others keep the namespace and the last path segment as C{repo_name}.
    """
    name = str(repo.get("repo_name") or repo.get("name") or "")
    official = bool(repo.get("is_official"))
    ns = namespace or str(repo.get("namespace") or "")
    owner = str(repo.get("repo_owner") or "")
    if official:
        ns = "library"
        if "/" not in name:
            name = "library/" + name
    else:
        if not ns and owner:
            ns = owner
        if "/" in name:
            first, _, _ = name.partition("/")
            ns = ns or first
            name = name.rsplit("/", 1)[1]
    return {
        "repo_name": name,
        "short_description": str(repo.get("short_description") or repo.get("description") or ""),
        "is_official": official,
        "is_automated": bool(repo.get("is_automated")),
        "star_count": int(repo.get("star_count") or 0),
        "pull_count": int(repo.get("pull_count") or 0),
        "repo_owner": owner,
        "last_updated": str(repo.get("last_updated") or ""),
        "status": int(repo.get("status") or 0),
        "affiliation": str(repo.get("affiliation") or ""),
        "pulls_last_week": int(repo.get("pulls_last_week") or 0),
        "namespace": ns,
    }


class DockerHub:
    """
    The cached Hub client behind every search endpoint.
    """

    log = Logger()

    def __init__(self, app: Any, base: str = HUB) -> None:
        self._app = app
        self.base = base.rstrip("/")
        self.cache = TTLCache(app.clock)
        self.requests = 0

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.base}{path}?{urlencode(params)}"
        key = "GET " + url
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        self.requests += 1
        client = self._app.client
        response = await client.request("GET", url, headers=Headers({b"accept": [b"application/json"]}), trusted=True, label="hub-search")
        clock, idle = self._app.clock, self._app.config.network.idle_timeout
        if response.code != 200:
            try:
                body = await read_body(response.response, 64 * 1024, clock, idle)
            except HubproxyError:
                body = b""
            raise self._error(response, body)
        body = await read_body(response.response, MAX_HUB_BODY, clock, idle)
        try:
            data = json.loads(body)
        except ValueError:
            raise BadGateway("Docker Hub sent an unparsable answer") from None
        if not isinstance(data, dict):
            raise BadGateway("Docker Hub sent an unexpected answer")
        self.cache.put(key, data)
        return data

    @staticmethod
    def _error(response: Any, body: bytes) -> HubproxyError:
        code = response.code
        if code == 429:
            headers = {}
            retry = response.header(b"retry-after")
            if retry:
                headers["Retry-After"] = retry.decode("latin-1")
            return HubproxyError("Docker Hub is rate limiting searches; try again later", status=429, code="TOOMANYREQUESTS", headers=headers)
        if code == 404:
            return NotFound("not found on Docker Hub")
        if 400 <= code < 500:
            message = ""
            try:
                parsed = json.loads(body)
                message = str(parsed.get("message") or parsed.get("detail") or "")
            except (ValueError, AttributeError):
                pass
            return HubproxyError(f"Docker Hub refused the query ({code}){': ' + message if message else ''}", status=400, code="BAD_REQUEST")
        return BadGateway(f"Docker Hub answered {code}")

    async def search(self, query: str, page: int, page_size: int, depth: int = 0) -> dict[str, Any]:
        """
        The Go C{/api/search} result for C{query}.
        """
        namespace, slash, name = query.partition("/")
        if slash and namespace and "/" not in name and _NAME.fullmatch(namespace.lower()):
            try:
                data = await self._get(f"/v2/repositories/{quote(namespace.lower())}/", {"page": page, "page_size": page_size})
            except NotFound:
                data = None
            if data is not None:
                results = [
                    normalise_repository(r, namespace)
                    for r in data.get("results") or []
                    if isinstance(r, dict) and (not name or name.lower() in str(r.get("name") or r.get("repo_name") or "").lower())
                ]
                if results:
                    return {"count": len(results), "next": data.get("next") or "", "previous": data.get("previous") or "", "results": results}
            if depth == 0 and name:
                return await self.search(name, page, page_size, depth + 1)
            return {"count": 0, "next": "", "previous": "", "results": []}
        data = await self._get("/v2/search/repositories/", {"query": query, "page": page, "page_size": page_size})
        results = [normalise_repository(r) for r in data.get("results") or [] if isinstance(r, dict)]
        return {"count": int(data.get("count") or len(results)), "next": data.get("next") or "", "previous": data.get("previous") or "", "results": results}

    async def tags(self, namespace: str, name: str, page: int, page_size: int) -> tuple[list[dict[str, Any]], bool]:
        path = f"/v2/repositories/{quote(namespace)}/{quote(name)}/tags"
        data = await self._get(path, {"page": page, "page_size": page_size, "ordering": "last_updated"})
        tags = [t for t in data.get("results") or [] if isinstance(t, dict)]
        return tags, bool(data.get("next"))


def wants_html(request: Request) -> bool:
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"text/html" in accept


class SearchPage(AsyncLeaf):
    """
    C{GET /search}: JSON for API clients, the UI page for browsers.
    """

    error_style = "json"
    methods = frozenset({b"GET"})

    def __init__(self, hub: DockerHub, page: Resource | None) -> None:
        super().__init__()
        self._hub = hub
        self._page = page

    def render(self, request: Request) -> Any:
        if self._page is not None and request.method in (b"GET", b"HEAD") and wants_html(request):
            return self._page.render(request)
        return super().render(request)

    async def handle(self, request: Request) -> None:
        args = query_args(request)
        query = (arg(args, "q") or arg(args, "term") or "").strip()
        if not query:
            raise BadRequest("missing search query: /search?q=nginx", code="QUERY_EMPTY")
        if len(query) > 256:
            raise BadRequest("search query too long", code="QUERY_INVALID")
        limit = _int(arg(args, "limit") or arg(args, "n"), 25, 1, 100)
        data = await self._hub.search(query, 1, limit)
        results = []
        for r in data["results"][:limit]:
            name = r["repo_name"]
            if r["is_official"]:
                name = name[len("library/") :] if name.startswith("library/") else name
            elif r["namespace"] and "/" not in name:
                name = f"{r['namespace']}/{name}"
            results.append(
                {
                    "name": name,
                    "description": r["short_description"],
                    "stars": r["star_count"],
                    "official": r["is_official"],
                    "automated": r["is_automated"],
                    "pulls": r["pull_count"],
                }
            )
        send_json(request, {"query": query, "count": data["count"], "results": results})


class ApiSearch(AsyncLeaf):
    """
    C{GET /api/search?q=&page=&page_size=} (Go shape).
    """

    error_style = "json"
    methods = frozenset({b"GET"})

    def __init__(self, hub: DockerHub) -> None:
        super().__init__()
        self._hub = hub

    async def handle(self, request: Request) -> None:
        args = query_args(request)
        query = (arg(args, "q") or "").strip()
        if not query:
            raise BadRequest("missing search query (q)", code="QUERY_EMPTY")
        if len(query) > 256:
            raise BadRequest("search query too long", code="QUERY_INVALID")
        page = _int(arg(args, "page"), 1, 1, 1000)
        page_size = _int(arg(args, "page_size"), 25, 1, 100)
        send_json(request, await self._hub.search(query, page, page_size))


class ApiTags(AsyncLeaf):
    """
    C{GET /api/tags/<namespace>/<name>?page=&page_size=} (Go shape: a bare
    list without paging parameters, else C{{tags, has_more, page,
    page_size}}).
    """

    error_style = "json"
    methods = frozenset({b"GET"})

    def __init__(self, hub: DockerHub) -> None:
        super().__init__()
        self._hub = hub

    async def handle(self, request: Request) -> None:
        parts = [p for p in request.path.decode("utf-8", "replace").split("/")[3:] if p != ""]
        if len(parts) != 2:
            raise NotFound("use /api/tags/<namespace>/<name> (official images: namespace library)")
        namespace, name = (p.lower() for p in parts)
        if not _NAME.fullmatch(namespace) or not _NAME.fullmatch(name):
            raise BadRequest("invalid repository name", code="NAME_INVALID")
        args = query_args(request)
        page = _int(arg(args, "page"), 1, 1, 10000)
        page_size = _int(arg(args, "page_size"), 100, 1, 100)
        tags, has_more = await self._hub.tags(namespace, name, page, page_size)
        if arg(args, "page") is not None or arg(args, "page_size") is not None:
            send_json(request, {"tags": tags, "has_more": has_more, "page": page, "page_size": page_size})
        else:
            send_json(request, tags)
