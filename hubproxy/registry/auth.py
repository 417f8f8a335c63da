# -*- test-case-name: hubproxy.test.test_registry -*-
"""
Upstream registry authentication, done by the proxy.

Registries answer an anonymous request with C{401} and a
C{WWW-Authenticate: Bearer realm=...,service=...,scope=...} challenge; the
client fetches a token from the realm (anonymously, or with Basic
credentials) and retries.  We do that once per (registry, scope, identity)
and keep the token on the reactor clock until shortly before it expires, so
a C{docker pull} of ten layers costs one token fetch, not ten (the Go
version fetched a fresh token for every request).

We also remember each registry's realm and service, so a new repository's
token is fetched *before* its first request instead of after a wasted 401.
Concurrent requests for the same token share one fetch.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from twisted.logger import Logger
from twisted.web.http_headers import Headers

from hubproxy.config import RegistryConfig
from hubproxy.errors import BadGateway, HubproxyError
from hubproxy.registry.challenge import Challenge, bearer_challenge, parse_www_authenticate, pull_scope, token_url
from hubproxy.registry.tokens import SingleFlight, TokenCache, parse_token_response
from hubproxy.upstream.client import UpstreamClient, UpstreamResponse, discard, read_body

MAX_TOKEN_RESPONSE = 1024 * 1024


class RegistryAuth:
    """
    Sends registry requests with the right credentials.
    """

    log = Logger()

    def __init__(self, client: UpstreamClient, cache: TokenCache | None) -> None:
        self._client = client
        self.cache = cache
        self._flight = SingleFlight()
        self._challenges: dict[str, Challenge] = {}
        self.fetches = 0

    @staticmethod
    def identity(registry: RegistryConfig) -> str:
        if not registry.username:
            return ""
        secret = f"{registry.username}:{registry.password}".encode()
        return hashlib.sha256(secret).hexdigest()[:16]

    def _basic(self, registry: RegistryConfig) -> bytes | None:
        if not registry.username:
            return None
        raw = f"{registry.username}:{registry.password}".encode()
        return b"Basic " + base64.b64encode(raw)

    async def request(
        self,
        registry: RegistryConfig,
        repository: str,
        method: str,
        url: str,
        headers: Headers,
        label: str = "",
    ) -> UpstreamResponse:
        """
        Send a request for C{repository} on C{registry}, authenticating as
        the registry demands; retries once after a 401 with a fresh token.
        """
        scope = pull_scope(repository)
        key = (registry.name, scope, self.identity(registry))
        token = self.cache.get(key) if self.cache is not None else None
        if token is None and registry.name in self._challenges:
            token = await self._token(registry, self._challenges[registry.name], scope, key)
        for attempt in (0, 1):
            hop = headers.copy()
            if token is not None:
                hop.setRawHeaders(b"authorization", [b"Bearer " + token.encode("ascii")])
            else:
                basic = self._basic(registry)
                if basic is not None and attempt == 1:
                    hop.setRawHeaders(b"authorization", [basic])
            response = await self._client.request(method, url, headers=hop, trusted=True, label=label or registry.name)
            if response.code != 401 or attempt == 1:
                return response
            challenges = parse_www_authenticate(response.headers.getRawHeaders(b"www-authenticate", []))
            bearer = bearer_challenge(challenges)
            if bearer is None:
                if self._basic(registry) is None:
                    return response
                discard(response.response)
                token = None
                continue
            discard(response.response)
            self._challenges[registry.name] = bearer
            if self.cache is not None:
                self.cache.invalidate(key)
            token = await self._token(registry, bearer, scope, key, fresh=True)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self, registry: RegistryConfig, challenge: Challenge, scope: str, key: tuple[str, str, str], fresh: bool = False) -> str:
        if not fresh and self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached

        async def fetch() -> str:
            return await self._fetch_token(registry, challenge, scope, key)

        from twisted.internet.defer import Deferred

        return await self._flight.run(key, lambda: Deferred.fromCoroutine(fetch()))

    async def _fetch_token(self, registry: RegistryConfig, challenge: Challenge, scope: str, key: tuple[str, str, str]) -> str:
        url = token_url(challenge, scope)
        headers = Headers()
        basic = self._basic(registry)
        if basic is not None:
            headers.setRawHeaders(b"authorization", [basic])
        self.fetches += 1
        # The realm comes from the upstream's answer: it is checked like any
        # URL from outside unless it is on a configured origin.
        response = await self._client.request("GET", url, headers=headers, trusted=False, label=f"{registry.name}-auth")
        if response.code != 200:
            discard(response.response)
            if response.code in (401, 403):
                raise HubproxyError(
                    f"the token service of {registry.name} refused access ({response.code})",
                    status=401 if response.code == 401 else 403,
                    code="UNAUTHORIZED" if response.code == 401 else "DENIED",
                )
            if response.code == 429:
                raise HubproxyError(f"the token service of {registry.name} is rate limiting us", status=429, code="TOOMANYREQUESTS")
            raise BadGateway(f"the token service of {registry.name} answered {response.code}")
        body = await read_body(response.response, MAX_TOKEN_RESPONSE, self._client.clock, self._client.idle_timeout)
        try:
            token = parse_token_response(body, self._client.clock.seconds())
        except ValueError as e:
            raise BadGateway(f"the token service of {registry.name} sent an unusable answer: {e}") from None
        if self.cache is not None:
            self.cache.put(key, token)
        return token.value

    def clear(self) -> int:
        """
        Forget every cached token (and learnt challenge).
        """
        self._challenges.clear()
        return self.cache.clear() if self.cache is not None else 0


__all__ = ["RegistryAuth", "Any"]
