# -*- test-case-name: hubproxy.test.test_metrics -*-
"""
Prometheus metrics, through C{prometheus_client} (its exposition format,
not ours).

Counting happens off the hot path: requests and bytes are counted once per
request from the access-log hook, upstream requests once per response, and
cache hit/miss counters are read from the caches at scrape time by a custom
collector.  Each hubproxy service has its own C{CollectorRegistry}, so tests
(and several services in one process) never share counters.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from twisted.web.server import Request

UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def route_family(path: bytes) -> str:
    """
    A low-cardinality label for a request path.
    """
    if path.startswith(b"/v2/") or path == b"/v2":
        if b"/blobs/" in path:
            return "registry_blob"
        if b"/manifests/" in path:
            return "registry_manifest"
        if path.endswith(b"/tags/list"):
            return "registry_tags"
        return "registry_other"
    for prefix, name in (
        (b"/ready", "ready"),
        (b"/metrics", "metrics"),
        (b"/api/", "api"),
        (b"/download", "download"),
        (b"/search", "search"),
        (b"/token", "token"),
        (b"/assets/", "ui"),
        (b"/images", "ui"),
        (b"/favicon.ico", "ui"),
    ):
        if path.startswith(prefix):
            return name
    if path == b"/":
        return "ui"
    if b"huggingface.co" in path or b"hf.co" in path:
        return "file_hf"
    if b"/git-upload-pack" in path or b"/info/refs" in path:
        return "git"
    return "file_github"


class _CacheCollector:
    """
    Reads hit/miss counters kept by the caches themselves at scrape time.
    """

    def __init__(self, sources: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("hubproxy_cache_lookups", "Cache lookups by cache and result", labels=["cache", "result"])
        for cache, result, value in self._sources():
            family.add_metric([cache, result], value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("hubproxy_requests", "Requests served, by route family and status", ["route", "status"], registry=r)
        self.bytes_sent = Counter("hubproxy_response_bytes", "Response bytes sent to clients, by route family", ["route"], registry=r)
        self.upstream_requests = Counter("hubproxy_upstream_requests", "Upstream requests by upstream and status", ["upstream", "status"], registry=r)
        self.upstream_latency = Histogram(
            "hubproxy_upstream_response_seconds", "Time to upstream response headers", ["upstream"], buckets=UPSTREAM_BUCKETS, registry=r
        )
        self.refusals = Counter("hubproxy_refusals", "Requests refused by the guard rails, by reason", ["reason"], registry=r)
        self.in_flight = Gauge("hubproxy_requests_in_flight", "Requests (transfers) in progress", registry=r)
        self._cache_sources: list[Callable[[], Iterable[tuple[str, str, int]]]] = []
        r.register(_CacheCollector(self._cache_values))

    def _cache_values(self) -> Iterable[tuple[str, str, int]]:
        for source in self._cache_sources:
            yield from source()

    def add_cache_source(self, source: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self._cache_sources.append(source)

    def observe_request(self, request: Request) -> None:
        route = route_family(request.path)
        self.requests.labels(route, str(request.code)).inc()
        self.bytes_sent.labels(route).inc(request.sentLength)

    def observe_upstream(self, upstream: str, method: str, status: int | None, seconds: float) -> None:
        self.upstream_requests.labels(upstream, str(status) if status is not None else "error").inc()
        if status is not None:
            self.upstream_latency.labels(upstream).observe(seconds)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """
    C{GET /metrics}.  The guard decides who may read it (loopback and
    whitelisted clients unless C{[metrics] public = true}).
    """

    isLeaf = True

    def __init__(self, metrics: Metrics, in_flight: Callable[[], int] | None = None) -> None:
        super().__init__()
        self._metrics = metrics
        self._in_flight = in_flight

    def render_GET(self, request: Request) -> bytes:
        if self._in_flight is not None:
            self._metrics.in_flight.set(self._in_flight())
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render()


__all__ = ["Metrics", "MetricsResource", "route_family", "Any"]
