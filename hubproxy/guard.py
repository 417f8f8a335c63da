# -*- test-case-name: hubproxy.test.test_guard -*-
"""
The choke point in front of the resource tree.

Every request, whatever its path (registry, file and git proxy, offline
tars, search, UI), passes L{Guard.check} before it is routed
(L{hubproxy.site.Root.getChildWithDefault}); rules are written once here,
not copied into each resource:

 1. input hygiene: oversized URIs and query strings are refused (Twisted
    already bounds header lines and counts);
 2. client identity: the socket peer, or the client named by
    C{X-Forwarded-For}/C{X-Real-IP} when the peer is a trusted proxy;
 3. the IP blacklist: 403 everywhere;
 4. the per-client token bucket (IPv4 address or IPv6 /64), except for the
    whitelisted, and for C{/ready}, C{/metrics} and the static UI;
 5. who may read C{/metrics} and clear caches (loopback and whitelisted).

Repository allow/deny lists need the parsed image or repository, so the
resources apply them, through the L{RepoAccess} object published here.
"""

from __future__ import annotations

import math
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.application.internet import TimerService
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from hubproxy.acl import NetworkSet, RepoAccess, client_ip, client_key, parse_ip
from hubproxy.errors import BadRequest, Forbidden, HubproxyError, TooManyRequests, style_for_path
from hubproxy.handler import ErrorLeaf
from hubproxy.ratelimit import RateLimiter

MAX_URI = 8192
MAX_QUERY = 4096
# First path segments never charged against the rate limit.
FREE_SEGMENTS = frozenset({b"ready", b"metrics", b"assets", b"favicon.ico"})
FREE_PAGES = frozenset({b"", b"images"})


class Guard:
    log = Logger()

    def __init__(self, app: Any) -> None:
        config = app.config
        self._app = app
        self.white = NetworkSet(config.security.white_list)
        self.black = NetworkSet(config.security.black_list)
        self.trusted = NetworkSet(config.security.trusted_proxies)
        self.limiter = RateLimiter(app.clock, config.rate_limit.request_limit, config.rate_limit.period_hours * 3600.0)
        self.repo_access = RepoAccess(config.access.white_list, config.access.black_list)
        self._metrics_public = config.metrics.public
        app.extras["repo_access"] = self.repo_access
        app.extras["trusted_proxies"] = self.trusted
        app.extras["is_admin"] = self.is_admin
        app.extras["client_ip"] = self.client
        sweeper = TimerService(300, self._sweep)
        sweeper.clock = app.clock
        app.extras.setdefault("services", []).append(sweeper)

    def _sweep(self) -> None:
        try:
            self.limiter.sweep()
        except Exception:
            self.log.failure("rate-limit sweep failed")

    def client(self, request: Request) -> IPv4Address | IPv6Address | None:
        """
        The client's address as hubproxy believes it (cached per request).
        """
        cached = getattr(request, "_hubproxy_client", False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        peer = getattr(request.getClientAddress(), "host", "") or ""
        ip = client_ip(peer, request.getHeader, self.trusted)
        request._hubproxy_client = ip  # type: ignore[attr-defined]
        return ip

    def is_admin(self, request: Request) -> bool:
        """
        Loopback or whitelisted clients: may clear caches and read metrics.
        """
        ip = self.client(request)
        if ip is None:
            return False
        return ip.is_loopback or self.white.contains(ip)

    def _refuse(self, request: Request, err: HubproxyError, reason: str, style: str | None = None) -> Resource:
        metrics = self._app.extras.get("metrics")
        if metrics is not None:
            metrics.refused(reason)
        return ErrorLeaf(err, style or style_for_path(request.path))

    def check(self, request: Request, segment: bytes) -> Resource | None:
        """
        C{None} to let the request through, or an error leaf refusing it.
        """
        if len(request.uri) > MAX_URI:
            return self._refuse(request, HubproxyError("request URI too long", status=414, code="BAD_REQUEST"), "input")
        if len(request.uri.partition(b"?")[2]) > MAX_QUERY:
            return self._refuse(request, BadRequest("query string too long"), "input")
        ip = self.client(request)
        if ip is None:
            peer = getattr(request.getClientAddress(), "host", None)
            ip = parse_ip(peer) if isinstance(peer, str) else None
        if ip is not None and self.black.contains(ip):
            return self._refuse(request, Forbidden("your address is not allowed to use this proxy"), "ip_blacklist")
        if segment == b"metrics" and not self._metrics_public and not self.is_admin(request):
            return self._refuse(request, Forbidden("metrics are only served to loopback and whitelisted clients"), "metrics")
        if segment in FREE_SEGMENTS or (segment in FREE_PAGES and request.method in (b"GET", b"HEAD")):
            return None
        if ip is None or self.white.contains(ip):
            return None
        wait = self.limiter.take(client_key(ip))
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            if self._app.config.rate_limit.request_limit == 0:
                err: HubproxyError = Forbidden("this proxy is whitelist-only")
                return self._refuse(request, err, "whitelist_only")
            err = TooManyRequests(
                f"rate limit exceeded: {self._app.config.rate_limit.request_limit} requests per "
                f"{self._app.config.rate_limit.period_hours:g} h; retry in {retry} s",
                headers={"Retry-After": retry},
            )
            # Machine-readable everywhere: registry JSON on /v2/, JSON elsewhere.
            style = "registry" if style_for_path(request.path) == "registry" else "json"
            return self._refuse(request, err, "rate_limit", style)
        return None


def make_guard(app: Any) -> Any:
    guard = Guard(app)
    app.extras["guard"] = guard
    return guard.check
