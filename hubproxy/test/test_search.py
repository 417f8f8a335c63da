"""
Tests for Docker Hub search and tags (L{hubproxy.tools.search}) against a
fake Hub: response shapes, the cache on the reactor clock, and error
mapping.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from hubproxy.test.helpers import Harness, Recorder
from hubproxy.tools.search import TTLCache

SEARCH = {
    "count": 2,
    "next": "https://hub/next",
    "previous": None,
    "results": [
        {"repo_name": "nginx", "short_description": "Official build of Nginx.", "star_count": 20000, "pull_count": 10**9, "repo_owner": "", "is_automated": False, "is_official": True},
        {"repo_name": "bitnami/nginx", "short_description": "Bitnami nginx", "star_count": 100, "pull_count": 5000, "repo_owner": "", "is_automated": True, "is_official": False},
    ],
}
NAMESPACE = {
    "count": 2,
    "next": None,
    "previous": None,
    "results": [
        {"name": "nginx", "namespace": "bitnami", "description": "Bitnami nginx", "star_count": 100, "pull_count": 5000},
        {"name": "redis", "namespace": "bitnami", "description": "Bitnami redis", "star_count": 50, "pull_count": 4000},
    ],
}
TAGS = {
    "count": 1,
    "next": "https://hub/tags?page=2",
    "results": [
        {
            "name": "latest",
            "full_size": 1234,
            "last_updated": "2026-01-01T00:00:00Z",
            "last_pusher": "x",
            "images": [{"architecture": "arm64", "variant": "v8", "os": "linux", "digest": "sha256:" + "a" * 64, "size": 1}],
        }
    ],
}


class FakeHub(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = None
        self.hang = False

    def render(self, request: Any) -> Any:
        seen = self.record(request)
        if self.hang:
            return NOT_DONE_YET
        if self.status is not None:
            request.setResponseCode(self.status)
            if self.status == 429:
                request.setHeader(b"retry-after", b"30")
            return b'{"message":"nope"}'
        path = seen["path"]
        request.setHeader(b"content-type", b"application/json")
        if path == "/v2/search/repositories/":
            return json.dumps(SEARCH).encode()
        if path == "/v2/repositories/bitnami/":
            return json.dumps(NAMESPACE).encode()
        if path == "/v2/repositories/library/nginx/tags":
            return json.dumps(TAGS).encode()
        request.setResponseCode(404)
        return b'{"message":"not found"}'


class SearchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.hub = FakeHub()
        self.h = Harness(self.hub)

    def get(self, path: str, accept: str = "application/json") -> tuple[Any, Any]:
        response, body = self.h.request("GET", path, headers={"accept": accept})
        return response, json.loads(body) if body.startswith((b"{", b"[")) else body

    def test_seed_shape(self) -> None:
        response, data = self.get("/search?q=nginx&limit=10")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            [{k: r[k] for k in ("name", "description", "stars", "official", "automated")} for r in data["results"]],
            [
                {"name": "nginx", "description": "Official build of Nginx.", "stars": 20000, "official": True, "automated": False},
                {"name": "bitnami/nginx", "description": "Bitnami nginx", "stars": 100, "official": False, "automated": True},
            ],
        )
        seen = self.hub.seen[0]
        self.assertEqual(seen["host"], "registry.hub.docker.com")
        self.assertEqual(parse_qs(seen["uri"].partition("?")[2]), {"query": ["nginx"], "page": ["1"], "page_size": ["10"]})

    def test_browser_gets_page(self) -> None:
        response, body = self.get("/search?q=nginx", accept="text/html,application/xhtml+xml")
        self.assertEqual(response.code, 200)
        self.assertIn(b"<!doctype html>", body)
        self.assertEqual(self.hub.seen, [])

    def test_api_search_go_shape(self) -> None:
        response, data = self.get("/api/search?q=nginx&page=2&page_size=5")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["count"], 2)
        self.assertEqual(data["next"], "https://hub/next")
        official, other = data["results"]
        self.assertEqual((official["repo_name"], official["namespace"], official["is_official"]), ("library/nginx", "library", True))
        self.assertEqual((other["repo_name"], other["namespace"]), ("nginx", "bitnami"))
        for key in ("short_description", "star_count", "pull_count", "repo_owner", "last_updated", "status", "affiliation", "pulls_last_week", "is_automated"):
            self.assertIn(key, official)
        self.assertIn("page=2", self.hub.seen[0]["uri"])

    def test_namespace_query(self) -> None:
        _, data = self.get("/api/search?q=bitnami/red")
        self.assertEqual([(r["namespace"], r["repo_name"]) for r in data["results"]], [("bitnami", "redis")])
        self.assertEqual(self.hub.seen[0]["path"], "/v2/repositories/bitnami/")

    def test_namespace_fallback_to_search(self) -> None:
        _, data = self.get("/api/search?q=nobody/nginx")
        self.assertEqual(len(data["results"]), 2)
        self.assertEqual([s["path"] for s in self.hub.seen], ["/v2/repositories/nobody/", "/v2/search/repositories/"])

    def test_tags(self) -> None:
        response, data = self.get("/api/tags/library/nginx?page=1&page_size=50")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["has_more"], True)
        self.assertEqual((data["page"], data["page_size"]), (1, 50))
        self.assertEqual(data["tags"][0]["name"], "latest")
        self.assertEqual(data["tags"][0]["images"][0]["variant"], "v8")
        self.assertIn("ordering=last_updated", self.hub.seen[0]["uri"])
        # without paging parameters: a bare list (Go)
        _, bare = self.get("/api/tags/library/nginx")
        self.assertEqual([t["name"] for t in bare], ["latest"])

    def test_tags_validation(self) -> None:
        response, _ = self.get("/api/tags/library")
        self.assertEqual(response.code, 404)
        response, _ = self.get("/api/tags/Bad!/x")
        self.assertEqual(response.code, 400)
        response, data = self.get("/api/tags/library/unknown")
        self.assertEqual(response.code, 404)
        self.assertIn("error", data)

    def test_cache_ttl(self) -> None:
        self.get("/api/search?q=nginx")
        self.get("/api/search?q=nginx")
        self.get("/search?q=nginx&limit=25")  # same upstream query: shared
        self.assertEqual(len(self.hub.seen), 1)
        self.h.clock.advance(30 * 60 + 1)
        self.get("/api/search?q=nginx")
        self.assertEqual(len(self.hub.seen), 2)

    def test_cache_bounded(self) -> None:
        from twisted.internet.task import Clock

        cache = TTLCache(Clock(), ttl=10, limit=3)
        for i in range(5):
            cache.put(str(i), i)
        self.assertEqual(len(cache), 3)
        self.assertIsNone(cache.get("0"))
        self.assertEqual(cache.get("4"), 4)

    def test_429(self) -> None:
        self.hub.status = 429
        response, data = self.get("/api/search?q=nginx")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["30"])
        self.assertEqual(data["code"], "TOOMANYREQUESTS")
        response, _ = self.get("/search?q=nginx")
        self.assertEqual(response.code, 429)

    def test_upstream_errors(self) -> None:
        self.hub.status = 503
        response, data = self.get("/api/search?q=nginx")
        self.assertEqual(response.code, 502)
        self.assertIn("error", data)
        self.hub.status = None
        self.hub.hang = True
        d = self.h.proxy.request("GET", "http://proxy.test/api/search?q=slow", headers={"accept": "application/json"})
        self.h.settle()
        self.h.clock.advance(self.h.config.network.response_timeout + 1)
        self.h.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)

    def test_empty_query(self) -> None:
        for path in ("/search", "/api/search?q="):
            response, data = self.get(path)
            self.assertEqual(response.code, 400)
            self.assertEqual(data["code"], "QUERY_EMPTY")

    def test_errors_not_cached(self) -> None:
        self.hub.status = 500
        self.get("/api/search?q=nginx")
        self.hub.status = None
        response, _ = self.get("/api/search?q=nginx")
        self.assertEqual(response.code, 200)


class OverrideTests(SynchronousTestCase):
    def test_upstreams_override(self) -> None:
        hub = FakeHub()
        h = Harness(hub, '[upstreams]\n"registry.hub.docker.com" = "https://hub-mirror.test"\n')
        response, _ = h.request("GET", "/api/search?q=nginx")
        self.assertEqual(response.code, 200)
        self.assertEqual(hub.seen[0]["host"], "hub-mirror.test")
