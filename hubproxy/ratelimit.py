# -*- test-case-name: hubproxy.test.test_ratelimit -*-
"""
Per-client token buckets on an injected clock.

The Go hubproxy uses C{golang.org/x/time/rate}: bucket size
C{requestLimit}, refilled at C{requestLimit / period} tokens per second,
starting full (reference.md 6.2).  This is the same bucket, stored the way
GCRA ("generic cell rate algorithm") stores it: per key only the
I{theoretical arrival time} C{tat}, the moment the bucket will be full
again.  That is one float per client, exact for the common arithmetic
(C{3 per 30 s} refuses the fourth request for exactly C{10.0} s), and "the
bucket is full" is simply C{tat <= now}, which makes expiry trivial.

Differences from Go, on purpose (reference.md 12.7):

 - L{RateLimiter.take} returns how long to wait, so the guard can send
   C{Retry-After}.
 - Memory is capped by evicting the least recently used clients instead of
   resetting the whole map (which handed every abusive client a fresh
   bucket at once).
 - Time comes from an C{IReactorTime}, so tests run on
   L{twisted.internet.task.Clock} and never sleep.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

__all__ = ["RateLimiter"]

# Float slack when comparing times: a client that waits exactly the
# Retry-After it was given must get through despite rounding.
_EPSILON = 1e-9


class RateLimiter:
    """
    Token buckets keyed by client (see L{hubproxy.acl.client_key}).

    @ivar limit: bucket capacity (requests allowed in a burst).
    @ivar period: seconds to refill an empty bucket completely.
    @ivar max_entries: hard cap on the number of tracked keys.
    @ivar idle_after: keys untouched this long are forgotten by L{sweep}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        limit: int,
        period: float,
        max_entries: int = 50_000,
        idle_after: float | None = None,
    ) -> None:
        """
        @param limit: requests per C{period}; C{0} refuses everyone (the
            "whitelist-only" mode, where the caller exempts white-listed
            clients before asking).
        @param period: seconds, > 0.
        @param max_entries: at least 1.
        @param idle_after: defaults to C{period}, after which any bucket
            is full anyway, so forgetting it changes nothing.  A smaller
            value trades precision for memory: a forgotten client starts
            over with a full bucket.
        @raise ValueError: for out-of-range parameters (configuration
            errors should surface at start-up, not as odd behaviour).
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if not period > 0:
            raise ValueError("period must be > 0")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if idle_after is None:
            idle_after = period
        if not idle_after > 0:
            raise ValueError("idle_after must be > 0")
        self._clock = clock
        self.limit = limit
        self.period = float(period)
        self.max_entries = max_entries
        self.idle_after = float(idle_after)
        # Seconds per token, and how far ahead of now tat may run while a
        # token is still available.
        self._interval = self.period / limit if limit else self.period
        self._tolerance = self.period - self._interval
        # key -> [tat, last touched]; ordered by last touch (oldest first).
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float | None = None) -> float:
        """
        Spend one token of C{key}'s bucket.

        @param now: the current time, if the caller already read the clock.
        @return: C{0.0} if the request may proceed; otherwise the seconds
            (> 0) until a token will be available, for C{Retry-After}
            (the caller rounds up).
        """
        if now is None:
            now = self._clock.seconds()
        if self.limit == 0:
            return self.period
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_entries:
                self._make_room(now)
            # A new key has a full bucket: tat = now.
            tat = now
        else:
            tat = max(bucket[0], now)
        wait = tat - now - self._tolerance
        if wait > _EPSILON:
            if bucket is not None:
                bucket[1] = now
                self._buckets.move_to_end(key)
            # A refused new key stores nothing: it is as full as before.
            return wait
        if bucket is None:
            self._buckets[key] = [tat + self._interval, now]
        else:
            bucket[0] = tat + self._interval
            bucket[1] = now
            self._buckets.move_to_end(key)
        return 0.0

    def sweep(self, now: float | None = None) -> int:
        """
        Forget buckets that are full again, or idle for C{idle_after}.

        A full bucket is indistinguishable from an absent one, so this
        never changes a decision (with the default C{idle_after}).  Meant
        to run from a C{TimerService}; it is O(number of keys).

        @return: how many keys were dropped.
        """
        if now is None:
            now = self._clock.seconds()
        idle_before = now - self.idle_after
        dead = [key for key, (tat, touched) in self._buckets.items() if tat <= now or touched <= idle_before]
        for key in dead:
            del self._buckets[key]
        return len(dead)

    def _make_room(self, now: float) -> None:
        """
        Free at least one slot before adding a key at the cap.

        Sweep first (expired buckets cost nothing to forget).  If that was
        not enough, evict the least recently touched keys down to 15/16 of
        the cap, so that under a flood of distinct keys the O(n) sweep runs
        once per C{max_entries / 16} new keys rather than once per key.
        Evicted clients start over with a full bucket: the price of a hard
        memory bound.
        """
        self.sweep(now)
        if len(self._buckets) < self.max_entries:
            return
        low_water = min(self.max_entries - 1, self.max_entries - self.max_entries // 16)
        buckets = self._buckets
        while len(buckets) > low_water:
            buckets.popitem(last=False)
