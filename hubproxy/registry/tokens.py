# -*- test-case-name: hubproxy.test.test_tokens -*-
"""
Upstream registry tokens: parsing token responses, caching them on the
reactor clock, and sharing one fetch between concurrent requests.

Lifetimes follow the distribution token spec: C{expires_in} seconds from
C{issued_at} (or from when we received it), 60 s when the server does not
say.  A token is dropped from the cache I{before} it expires, by a skew of
10 % of its lifetime clamped to [5 s, 60 s], so a request never leaves
with a token that dies on the way.  Docker Hub issues 300 s tokens: we keep
them 270 s.  The Go hubproxy kept them 30 minutes (reference.md 2.4 and
12.8), so every pull after the fifth minute failed with 401s.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "MAX_LIFETIME",
    "SingleFlight",
    "Token",
    "TokenCache",
    "expiry_skew",
    "parse_token_response",
]

T = TypeVar("T")

#: Lifetime of a token whose response has no C{expires_in} (token spec).
DEFAULT_EXPIRES_IN = 60.0
#: Longest we trust a token for, whatever the server claims: a
#: misconfigured server must not pin a token in our cache for years.
MAX_LIFETIME = 24 * 3600.0
#: How far before our clock C{issued_at} may be and still be believed: that
#: much is request latency; more is a server clock we disagree with.
MAX_ISSUED_AT_LAG = 30.0

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@dataclass(frozen=True)
class Token:
    """
    A bearer token and when to stop using it.

    @ivar value: the token, as sent in C{Authorization: Bearer <value>}.
    @ivar expires_at: reactor time after which the token must not be used
        from the cache; already shortened by L{expiry_skew}.
    """

    value: str
    expires_at: float


def expiry_skew(lifetime: float) -> float:
    """
    How long before its real expiry a token of C{lifetime} seconds is
    dropped: 10 % of the lifetime, at least 5 s and at most 60 s.
    """
    return min(max(lifetime * 0.1, 5.0), 60.0)


def _parse_rfc3339(text: str) -> float | None:
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float("0." + m.group(7)) if m.group(7) else 0.0
    try:
        tz = timezone.utc
        if m.group(9):
            offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
            tz = timezone(offset if m.group(9) == "+" else -offset)
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
    except ValueError:
        return None
    return moment.timestamp() + fraction


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def parse_token_response(body: bytes, now: float) -> Token:
    """
    Parse a token server's JSON answer.

    Accepts C{token} or C{access_token} (OAuth2 style; C{token} wins when
    both are present and non-empty).  C{expires_in} defaults to 60 s when
    absent or unusable and is capped at L{MAX_LIFETIME}.  C{issued_at} is
    used as the start of the lifetime only when it is sane: not in our
    future and at most L{MAX_ISSUED_AT_LAG} seconds in our past, because a
    token server whose clock disagrees with ours would otherwise make every
    token look expired on arrival (or valid for too long).

    @param now: the reactor time the response arrived (C{clock.seconds()}).
    @raise ValueError: if the body is not a JSON object with a usable token
        (non-empty, visible ASCII, so it can go in a header as is).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"token response is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("token response is not a JSON object")
    value = data.get("token")
    if not isinstance(value, str) or not value:
        value = data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ValueError("token response has no token")
    if not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise ValueError("token contains characters that cannot be sent in a header")
    lifetime = _number(data.get("expires_in"))
    if lifetime is None or lifetime <= 0:
        lifetime = DEFAULT_EXPIRES_IN
    lifetime = min(lifetime, MAX_LIFETIME)
    base = now
    issued = data.get("issued_at")
    if isinstance(issued, str):
        issued_at = _parse_rfc3339(issued)
        if issued_at is not None and now - MAX_ISSUED_AT_LAG <= issued_at <= now:
            base = issued_at
    return Token(value, base + lifetime - expiry_skew(lifetime))


class TokenCache:
    """
    Tokens by C{(registry, scope, identity)}, bounded, on the reactor clock.

    The identity is C{""} for anonymous tokens and a hash of the
    credentials otherwise, so a token fetched with one set of credentials
    is never handed to a request made with another.  Least recently used
    entries are evicted beyond C{max_entries}; expired ones are dropped on
    sight and by L{sweep}.

    @ivar hits: lookups answered from the cache.
    @ivar misses: lookups that found nothing usable.
    """

    def __init__(self, clock: IReactorTime, max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max(1, max_entries)
        self._entries: OrderedDict[tuple[str, str, str], Token] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str, str]) -> str | None:
        """
        The cached token for C{key}, or L{None} if missing or expired.
        """
        token = self._entries.get(key)
        if token is not None and token.expires_at <= self._clock.seconds():
            del self._entries[key]
            token = None
        if token is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return token.value

    def put(self, key: tuple[str, str, str], token: Token) -> None:
        """
        Remember C{token} for C{key}, replacing any older one.  A token that
        is already past its (skewed) expiry is not stored.
        """
        self._entries.pop(key, None)
        if token.expires_at <= self._clock.seconds():
            return
        self._entries[key] = token
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, key: tuple[str, str, str]) -> bool:
        """
        Forget C{key} (the upstream refused its token).

        @return: whether there was an entry.
        """
        return self._entries.pop(key, None) is not None

    def clear(self) -> int:
        """
        Forget everything.

        @return: how many entries were dropped.
        """
        count = len(self._entries)
        self._entries.clear()
        return count

    def sweep(self) -> int:
        """
        Drop expired entries (for a periodic C{LoopingCall}).

        @return: how many were dropped.
        """
        now = self._clock.seconds()
        expired = [k for k, t in self._entries.items() if t.expires_at <= now]
        for k in expired:
            del self._entries[k]
        return len(expired)


class _Flight(Generic[T]):
    def __init__(self, shared: Deferred[T]) -> None:
        self.shared = shared
        self.waiters: list[Deferred[T]] = []
        self.done = False


class SingleFlight:
    """
    Concurrent requests for the same key share one in-flight operation.

    Ten layers of one image requested at once need one token: the first
    caller starts the fetch, the others wait for its result.  Each caller
    gets its own L{Deferred}: cancelling one (a client that went away)
    only detaches that caller; the shared operation is cancelled only when
    its last waiter has gone.  A failure reaches every waiter.  The key is
    free again as soon as the operation finishes, so a failed fetch is
    retried by the next request rather than remembered.
    """

    def __init__(self) -> None:
        # Any: each key's flight has its own result type.
        self._flights: dict[Hashable, _Flight[Any]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._flights

    def run(self, key: Hashable, fn: Callable[[], Deferred[T]]) -> Deferred[T]:
        """
        Join the operation running for C{key}, or start it with C{fn()}.
        """
        flight = self._flights.get(key)
        if flight is None:
            try:
                shared = fn()
            except BaseException:
                return fail()
            if not isinstance(shared, Deferred):
                return succeed(shared)  # type: ignore[unreachable]
            flight = _Flight(shared)
            self._flights[key] = flight
            waiter = self._join(flight)
            shared.addBoth(self._finished, key, flight)
            return waiter
        return self._join(flight)

    def _join(self, flight: _Flight[T]) -> Deferred[T]:
        def cancel(d: Deferred[T]) -> None:
            if d in flight.waiters:
                flight.waiters.remove(d)
            if not flight.waiters and not flight.done:
                flight.shared.cancel()

        waiter: Deferred[T] = Deferred(cancel)
        flight.waiters.append(waiter)
        return waiter

    def _finished(self, result: T | Failure, key: Hashable, flight: _Flight[T]) -> None:
        flight.done = True
        if self._flights.get(key) is flight:
            del self._flights[key]
        waiters, flight.waiters = flight.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        # Returning None consumes the shared result: every waiter got its
        # own copy, and a failure nobody waits for any more (the last waiter
        # cancelled) is not an unhandled error.
