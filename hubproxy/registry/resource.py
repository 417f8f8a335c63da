# -*- test-case-name: hubproxy.test.test_registry -*-
"""
The C{/v2/} resource: the Docker Registry HTTP API v2, pull side.

Routing (L{hubproxy.registry.names}): C{nginx} -> docker.io
C{library/nginx}; C{user/app} -> docker.io; C{ghcr.io/owner/app} -> the
C{ghcr.io} registry; containerd's C{?ns=} selects the registry too.  Names,
tags and digests are validated before any upstream call.

C{GET /v2/} answers a plain 200: the proxy authenticates upstream itself
(anonymously, or with the credentials configured for a registry), so
docker, containerd and podman pull with no login and no extra config.

Manifests are served from a bounded cache when fresh (and when stale, if
the upstream is failing); blobs stream through the relay with Range passed
through and CDN redirects followed by the proxy.  Errors are registry JSON
with the upstream's meaning kept (404 MANIFEST_UNKNOWN, 429 with
Retry-After, 401, 403) and 502/504 for a broken or slow upstream.
"""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import parse_qs, quote, urlencode

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hubproxy.config import RegistryConfig
from hubproxy.errors import BadGateway, BadRequest, Forbidden, HubproxyError, to_error
from hubproxy.handler import AsyncLeaf
from hubproxy.registry.auth import RegistryAuth
from hubproxy.registry.manifests import DEFAULT_ACCEPT, CachedManifest, ManifestCache, digest_of, normalise_accept, verify_digest
from hubproxy.registry.names import InvalidName, Route, client_name, parse_route
from hubproxy.registry.tokens import TokenCache
from hubproxy.relay import relay_body, write_body
from hubproxy.upstream.client import discard, read_body

MAX_MANIFEST = 4 * 1024 * 1024
MAX_TAGS_BODY = 16 * 1024 * 1024
API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")
BLOB_REQUEST_HEADERS = (b"range", b"if-range", b"if-none-match", b"if-modified-since")
BLOB_RESPONSE_HEADERS = (
    b"content-type",
    b"content-range",
    b"accept-ranges",
    b"etag",
    b"last-modified",
    b"docker-content-digest",
    b"cache-control",
)
UNKNOWN_CODES = {"manifests": "MANIFEST_UNKNOWN", "blobs": "BLOB_UNKNOWN", "tags": "NAME_UNKNOWN"}


class Registry:
    """
    The registry mirror's state: upstream auth and the manifest cache.
    """

    log = Logger()

    def __init__(self, app: Any) -> None:
        self.app = app
        config = app.config
        tokens = TokenCache(app.clock) if config.token_cache.enabled else None
        self.auth = RegistryAuth(app.client, tokens)
        self.manifests = (
            ManifestCache(app.clock, config.token_cache.default_ttl) if config.token_cache.enabled else None
        )

    def cache_counts(self) -> list[tuple[str, str, int]]:
        counts = []
        tokens = self.auth.cache
        if tokens is not None:
            counts += [("token", "hit", tokens.hits), ("token", "miss", tokens.misses)]
        if self.manifests is not None:
            m = self.manifests
            counts += [("manifest", "hit", m.hits), ("manifest", "miss", m.misses), ("manifest", "stale", m.stale_hits)]
        return counts

    def route(self, path: str, ns: str | None) -> Route:
        config = self.app.config
        return parse_route(path, ns, config.registries, lambda name: config.enabled_registry(name) is not None)

    def registry(self, route: Route) -> RegistryConfig:
        reg = self.app.config.enabled_registry(route.registry)
        if reg is None:  # parse_route already refuses this
            raise HubproxyError(f"registry {route.registry} is not enabled", status=404, code="NAME_UNKNOWN")
        return reg

    def check_access(self, route: Route) -> None:
        access = self.app.extras.get("repo_access")
        if access is None:
            return
        reason = access.check_image(route.registry, route.repository)
        if reason:
            refusals = self.app.extras.get("count_refusal")
            if refusals is not None:
                refusals("repository")
            raise Forbidden(reason)


def upstream_error(response: Any, body: bytes, kind: str) -> HubproxyError:
    """
    Turn an upstream error response into ours, keeping its meaning (and its
    registry error entry when it sent one).
    """
    code = response.code
    message = None
    reg_code = None
    detail = None
    try:
        parsed = json.loads(body)
        entry = parsed["errors"][0]
        reg_code = str(entry.get("code") or "") or None
        message = str(entry.get("message") or "") or None
        detail = entry.get("detail")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    headers = {}
    if code == 404:
        return HubproxyError(message or f"{kind[:-1] if kind != 'tags' else 'repository'} unknown to the upstream registry", status=404, code=reg_code or UNKNOWN_CODES[kind], detail=detail)
    if code == 401:
        return HubproxyError(message or "authentication required by the upstream registry", status=401, code=reg_code or "UNAUTHORIZED", detail=detail)
    if code == 403:
        return HubproxyError(message or "access denied by the upstream registry", status=403, code=reg_code or "DENIED", detail=detail)
    if code == 429:
        retry = response.headers.getRawHeaders(b"retry-after")
        if retry:
            headers["Retry-After"] = retry[-1].decode("latin-1")
        return HubproxyError(message or "the upstream registry is rate limiting requests", status=429, code="TOOMANYREQUESTS", detail=detail, headers=headers)
    if code == 416:
        return HubproxyError(message or "requested range not satisfiable", status=416, code="BLOB_UNKNOWN" if kind == "blobs" else "UNSUPPORTED")
    if 400 <= code < 500:
        return HubproxyError(message or f"upstream registry answered {code}", status=code, code=reg_code or "UNKNOWN", detail=detail)
    return BadGateway(f"upstream registry answered {code}")


class V2(AsyncLeaf):
    """
    Everything under C{/v2/}.
    """

    error_style = "registry"
    log = Logger()

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self._registry = registry
        self._app = registry.app

    def render(self, request: Request) -> Any:
        request.setHeader(*API_VERSION)
        return super().render(request)

    async def handle(self, request: Request) -> None:
        path = request.path[len(b"/v2") :]
        if path in (b"", b"/"):
            request.setHeader(b"content-type", b"application/json")
            write_body(request, b"{}")
            return
        try:
            text = path[1:].decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("repository name must be ASCII", code="NAME_INVALID") from None
        query = parse_qs(request.uri.partition(b"?")[2].decode("latin-1"))
        # The cast lets the [None] default type-check; ns is str or None.
        ns = (cast("list[str | None] | None", query.get("ns")) or [None])[0]
        try:
            route = self._registry.route(text, ns)
        except InvalidName as e:
            status = 404 if e.code == "NAME_UNKNOWN" else 405 if e.code == "UNSUPPORTED" else 400
            raise HubproxyError(e.message, status=status, code=e.code) from None
        self._registry.check_access(route)
        registry = self._registry.registry(route)
        if route.kind == "manifests":
            await self._manifest(request, route, registry)
        elif route.kind == "blobs":
            await self._blob(request, route, registry)
        else:
            await self._tags(request, route, registry, query, client_name(route))

    # -- manifests -------------------------------------------------------

    async def _manifest(self, request: Request, route: Route, registry: RegistryConfig) -> None:
        assert route.reference is not None  # parse_route sets it for manifests
        accept_values = request.requestHeaders.getRawHeaders(b"accept") or [DEFAULT_ACCEPT]
        accept_key = normalise_accept(accept_values)
        cache = self._registry.manifests
        key = (route.registry, route.repository, route.reference, accept_key)
        if cache is not None:
            cached = cache.get_fresh(key)
            if cached is not None:
                self._send_manifest(request, cached)
                return
        url = f"{registry.upstream}/v2/{route.repository}/manifests/{route.reference}"
        headers = Headers({b"accept": [b", ".join(accept_values)]})
        method = request.method.decode("ascii")
        try:
            response = await self._registry.auth.request(registry, route.repository, method, url, headers)
        except HubproxyError as e:
            if e.status >= 500 or e.status == 429:
                if self._serve_stale(request, key, e.message):
                    return
            raise
        except Exception as e:
            from twisted.python.failure import Failure

            err = to_error(Failure(e))
            if err.status >= 500 and self._serve_stale(request, key, err.message):
                return
            raise
        if response.code != 200:
            err = await self._upstream_failure(response, method, "manifests")
            if (err.status >= 500 or err.status == 429) and self._serve_stale(request, key, err.message):
                return
            raise err
        media_type = (response.header(b"content-type") or b"application/octet-stream").decode("latin-1")
        if method == "HEAD":
            discard(response.response)
            request.setHeader(b"content-type", media_type.encode("latin-1"))
            digest = response.header(b"docker-content-digest")
            if digest is None and route.is_digest:
                digest = route.reference.encode("ascii")
            if digest is not None:
                request.setHeader(b"docker-content-digest", digest)
            length = response.header(b"content-length")
            if length is not None:
                request.setHeader(b"content-length", length)
            request.finish()
            return
        body = await read_body(response.response, MAX_MANIFEST, self._app.clock, self._app.config.network.idle_timeout)
        manifest_digest = digest_of(body)
        if route.is_digest and not verify_digest(body, route.reference):
            raise BadGateway(f"upstream manifest does not match digest {route.reference}")
        if route.is_digest:
            manifest_digest = route.reference
        manifest = CachedManifest(body=body, media_type=media_type, digest=manifest_digest, stored_at=self._app.clock.seconds())
        if cache is not None:
            cache.put(key, manifest)
        self._send_manifest(request, manifest)

    async def _upstream_failure(self, response: Any, method: str, kind: str) -> HubproxyError:
        """
        Read (a bounded part of) an upstream error body and classify it.
        """
        body = b""
        if method == "GET":
            try:
                body = await read_body(response.response, 64 * 1024, self._app.clock, self._app.config.network.idle_timeout)
            except HubproxyError:
                body = b""
        else:
            discard(response.response)
        return upstream_error(response.response, body, kind)

    def _serve_stale(self, request: Request, key: tuple[str, str, str, str], reason: str) -> bool:
        cache = self._registry.manifests
        if cache is None:
            return False
        stale = cache.get_stale(key)
        if stale is None:
            return False
        self.log.warn(
            "serving cached manifest {registry}/{repository}:{reference} because the upstream failed: {reason}",
            registry=key[0],
            repository=key[1],
            reference=key[2],
            reason=reason,
        )
        self._send_manifest(request, stale)
        return True

    def _send_manifest(self, request: Request, manifest: CachedManifest) -> None:
        request.setResponseCode(200)
        request.setHeader(b"content-type", manifest.media_type.encode("latin-1"))
        request.setHeader(b"docker-content-digest", manifest.digest.encode("ascii"))
        request.setHeader(b"etag", f'"{manifest.digest}"'.encode("ascii"))
        write_body(request, manifest.body)

    # -- blobs -------------------------------------------------------------

    async def _blob(self, request: Request, route: Route, registry: RegistryConfig) -> None:
        assert route.reference is not None  # parse_route sets it for blobs
        url = f"{registry.upstream}/v2/{route.repository}/blobs/{route.reference}"
        headers = Headers()
        for name in BLOB_REQUEST_HEADERS:
            values = request.requestHeaders.getRawHeaders(name)
            if values:
                headers.setRawHeaders(name, values)
        method = request.method.decode("ascii")
        response = await self._registry.auth.request(registry, route.repository, method, url, headers)
        if response.code not in (200, 206, 304):
            raise await self._upstream_failure(response, method, "blobs")
        request.setResponseCode(response.code)
        for name in BLOB_RESPONSE_HEADERS:
            values = response.headers.getRawHeaders(name)
            if values:
                request.responseHeaders.setRawHeaders(name, values)
        if not request.responseHeaders.hasHeader(b"content-type"):
            request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"docker-content-digest", route.reference.encode("ascii"))
        from hubproxy.relay import set_length

        set_length(request, response.response)
        await relay_body(
            request,
            response.response,
            clock=self._app.clock,
            idle_timeout=self._app.config.network.idle_timeout,
            on_data=self._app.extras.get("count_bytes"),
        )

    # -- tags --------------------------------------------------------------

    async def _tags(self, request: Request, route: Route, registry: RegistryConfig, query: dict[str, list[str]], client_name: str) -> None:
        params = [(k, query[k][0]) for k in ("n", "last") if query.get(k)]
        url = f"{registry.upstream}/v2/{route.repository}/tags/list"
        if params:
            url += "?" + urlencode(params)
        response = await self._registry.auth.request(registry, route.repository, "GET", url, Headers({b"accept": [b"application/json"]}))
        body = await read_body(response.response, MAX_TAGS_BODY, self._app.clock, self._app.config.network.idle_timeout)
        if response.code != 200:
            raise upstream_error(response.response, body, "tags")
        link = response.header(b"link")
        if link is not None:
            rewritten = _rewrite_link(link.decode("latin-1"), route.repository, client_name, route.registry, registry)
            if rewritten:
                request.setHeader(b"link", rewritten.encode("latin-1"))
        request.setHeader(b"content-type", b"application/json")
        if request.method == b"HEAD":
            body_len = str(len(body)).encode()
            request.setHeader(b"content-length", body_len)
            request.finish()
            return
        write_body(request, body)


def _rewrite_link(link: str, upstream_repo: str, client_name: str, registry_key: str, registry: RegistryConfig) -> str | None:
    """
    Point the upstream's pagination C{Link} at the proxy's name for the
    repository, keeping only the query (n, last).
    """
    start = link.find("<")
    end = link.find(">", start + 1)
    if start < 0 or end < 0:
        return None
    target = link[start + 1 : end]
    query = target.partition("?")[2]
    rest = link[end + 1 :]
    new = f"/v2/{quote(client_name, safe='/')}/tags/list"
    if query:
        new += "?" + query
    return f"<{new}>{rest}"


class TokenCacheAdmin(AsyncLeaf):
    """
    C{DELETE /api/cache/tokens}: forget cached upstream tokens.  Loopback
    and whitelisted clients only (the guard decides who is local).
    """

    methods = frozenset({b"DELETE"})
    error_style = "json"

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self._registry = registry

    async def handle(self, request: Request) -> None:
        is_admin = self._registry.app.extras.get("is_admin")
        if is_admin is not None and not is_admin(request):
            raise Forbidden("only loopback or whitelisted clients may clear the token cache")
        dropped = self._registry.auth.clear()
        request.setHeader(b"content-type", b"application/json")
        write_body(request, json.dumps({"cleared": dropped}).encode() + b"\n")


def make_registry_resources(app: Any) -> dict[bytes, Resource]:
    """
    The registry's routes for L{hubproxy.site.make_root}.
    """
    registry = Registry(app)
    app.extras["registry"] = registry
    metrics = app.extras.get("metrics")
    if metrics is not None:
        metrics.add_cache_source(registry.cache_counts)
    app.extras["token_admin"] = TokenCacheAdmin(registry)
    return {b"v2": V2(registry)}


__all__ = ["make_registry_resources", "NOT_DONE_YET"]
