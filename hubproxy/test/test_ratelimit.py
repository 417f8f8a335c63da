"""
Tests for L{hubproxy.ratelimit}.
"""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.ratelimit import RateLimiter


class ArithmeticTests(SynchronousTestCase):
    def test_three_per_thirty(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 3, 30)
        self.assertEqual([limiter.take("a") for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertEqual(limiter.take("a"), 10.0)
        clock.advance(4)
        self.assertEqual(limiter.take("a"), 6.0)
        clock.advance(6)
        self.assertEqual(limiter.take("a"), 0.0)
        self.assertEqual(limiter.take("a"), 10.0)

    def test_keys_independent(self) -> None:
        limiter = RateLimiter(Clock(), 1, 60)
        self.assertEqual(limiter.take("a"), 0.0)
        self.assertEqual(limiter.take("b"), 0.0)
        self.assertEqual(limiter.take("a"), 60.0)

    def test_go_defaults(self) -> None:
        """
        500 per 3 h: one token per 21.6 s after the burst.
        """
        clock = Clock()
        limiter = RateLimiter(clock, 500, 3 * 3600)
        for _ in range(500):
            self.assertEqual(limiter.take("k"), 0.0)
        self.assertAlmostEqual(limiter.take("k"), 21.6)
        clock.advance(21.6)
        self.assertEqual(limiter.take("k"), 0.0)

    def test_waiting_retry_after_suffices(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 7, 3.3)
        for _ in range(7):
            limiter.take("k")
        for _ in range(50):
            wait = limiter.take("k")
            self.assertGreater(wait, 0)
            clock.advance(wait)
            self.assertEqual(limiter.take("k"), 0.0)

    def test_refill_capped(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 3, 30)
        limiter.take("a")
        clock.advance(10_000)
        self.assertEqual([limiter.take("a") for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertGreater(limiter.take("a"), 0)

    def test_explicit_now(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 1, 10)
        self.assertEqual(limiter.take("a", now=100.0), 0.0)
        self.assertEqual(limiter.take("a", now=105.0), 5.0)
        self.assertEqual(limiter.take("a", now=110.0), 0.0)

    def test_limit_zero(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 0, 3600)
        self.assertEqual(limiter.take("a"), 3600.0)
        clock.advance(10**6)
        self.assertEqual(limiter.take("a"), 3600.0)
        self.assertEqual(len(limiter), 0)

    def test_bad_parameters(self) -> None:
        clock = Clock()
        for args in [(-1, 10), (1, 0), (1, -5)]:
            self.assertRaises(ValueError, RateLimiter, clock, *args)
        self.assertRaises(ValueError, RateLimiter, clock, 1, 1, max_entries=0)
        self.assertRaises(ValueError, RateLimiter, clock, 1, 1, idle_after=0)


class MemoryTests(SynchronousTestCase):
    def test_sweep_drops_full_buckets(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 3, 30)
        limiter.take("a")
        clock.advance(5)
        limiter.take("b")
        limiter.take("b")
        self.assertEqual(len(limiter), 2)
        clock.advance(5)  # a is full again (1 token in 10 s); b is not
        self.assertEqual(limiter.sweep(), 1)
        self.assertEqual(len(limiter), 1)
        clock.advance(15)
        self.assertEqual(limiter.sweep(), 1)
        self.assertEqual(len(limiter), 0)

    def test_sweep_keeps_decisions(self) -> None:
        """
        Sweeping with the default idle_after never hands out extra tokens.
        """
        clock = Clock()
        limiter = RateLimiter(clock, 2, 20)
        limiter.take("a")
        limiter.take("a")
        clock.advance(9)
        limiter.sweep()
        self.assertEqual(limiter.take("a"), 1.0)

    def test_idle_after(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 2, 100, idle_after=10)
        limiter.take("a")
        limiter.take("a")
        clock.advance(10)
        self.assertEqual(limiter.sweep(), 1)
        self.assertEqual(limiter.take("a"), 0.0)

    def test_cap_sweeps_first(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 1, 10, max_entries=2)
        limiter.take("a")
        limiter.take("b")
        clock.advance(10)
        limiter.take("b")  # b refilled and spent again; a is full
        limiter.take("c")
        self.assertEqual(len(limiter), 2)
        self.assertGreater(limiter.take("b"), 0)  # b was kept

    def test_cap_evicts_least_recently_used(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 1, 100, max_entries=3)
        for key in "abc":
            limiter.take(key)
        limiter.take("a")  # refused, but touched: now most recent
        limiter.take("d")
        self.assertEqual(len(limiter), 3)
        self.assertGreater(limiter.take("a"), 0)
        self.assertGreater(limiter.take("d"), 0)
        self.assertEqual(limiter.take("b"), 0.0)  # b was evicted

    def test_flood(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, 10, 60, max_entries=20_000)
        started = time.perf_counter()
        for i in range(100_000):
            self.assertEqual(limiter.take(f"k{i}"), 0.0)
            self.assertLessEqual(len(limiter), 20_000)
        self.assertLess(time.perf_counter() - started, 5.0)
        self.assertGreater(len(limiter), 15_000)

    def test_flood_default_cap(self) -> None:
        limiter = RateLimiter(Clock(), 500, 3 * 3600)
        for i in range(100_000):
            limiter.take(str(i))
        self.assertLessEqual(len(limiter), 50_000)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 40, allow_nan=False)),
        st.tuples(st.just("take"), st.sampled_from(["a", "b"])),
    ),
    max_size=80,
)


class PropertyTests(SynchronousTestCase):
    @given(st.integers(1, 5), st.floats(0.5, 60), operations)
    def test_window_bound(self, limit: int, period: float, ops: list[tuple[str, object]]) -> None:
        """
        In any window the allowed takes of one key never exceed the burst
        plus what the refill rate earns in that window; retry_after is
        positive exactly when refused.
        """
        clock = Clock()
        limiter = RateLimiter(clock, limit, period)
        rate = limit / period
        allowed: dict[str, list[float]] = {"a": [], "b": []}
        for op, arg in ops:
            if op == "advance":
                clock.advance(arg)  # type: ignore[arg-type]
                if arg and int(clock.seconds()) % 3 == 0:  # type: ignore[operator]
                    limiter.sweep()
                continue
            key = arg  # type: ignore[assignment]
            wait = limiter.take(key)  # type: ignore[arg-type]
            self.assertGreaterEqual(wait, 0.0)
            if wait == 0.0:
                allowed[key].append(clock.seconds())  # type: ignore[index]
        for times in allowed.values():
            for i, start in enumerate(times):
                for j in range(i, len(times)):
                    window = times[j] - start
                    self.assertLessEqual(j - i + 1, limit + rate * window + 1e-6)

    @given(st.integers(1, 5), st.floats(0.5, 60), st.lists(st.floats(0, 20, allow_nan=False), max_size=40))
    def test_refused_iff_positive(self, limit: int, period: float, gaps: list[float]) -> None:
        """
        A refusal always comes with a positive wait, and waiting it out
        always succeeds.
        """
        clock = Clock()
        limiter = RateLimiter(clock, limit, period)
        for gap in gaps:
            clock.advance(gap)
            wait = limiter.take("k")
            if wait:
                self.assertGreater(wait, 0.0)
                self.assertLessEqual(wait, period)
                clock.advance(wait)
                self.assertEqual(limiter.take("k"), 0.0)
