"""
Tests for L{hubproxy.registry.tokens}.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hypothesis import given, strategies as st
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.registry.tokens import (
    DEFAULT_EXPIRES_IN,
    MAX_LIFETIME,
    SingleFlight,
    Token,
    TokenCache,
    expiry_skew,
    parse_token_response,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


class ParseTokenResponseTests(SynchronousTestCase):
    def test_docker_hub(self) -> None:
        """
        Docker Hub's 300 s token is kept 270 s (10 % skew), not 30 minutes
        as in the Go version.
        """
        token = parse_token_response(
            body(token="abc", access_token="abc", expires_in=300, issued_at="2024-05-01T11:59:58.123456789Z"), NOW
        )
        self.assertEqual(token.value, "abc")
        self.assertAlmostEqual(token.expires_at, NOW - 2 + 0.123456789 + 270, places=3)

    def test_access_token(self) -> None:
        self.assertEqual(parse_token_response(body(access_token="xyz", expires_in=120), NOW), Token("xyz", NOW + 108))

    def test_token_wins(self) -> None:
        self.assertEqual(parse_token_response(body(token="a", access_token="b"), NOW).value, "a")
        self.assertEqual(parse_token_response(body(token="", access_token="b"), NOW).value, "b")

    def test_default_lifetime(self) -> None:
        """
        Without C{expires_in}, the token spec says 60 s; the skew is then
        the 6 s of 10 %.
        """
        self.assertEqual(DEFAULT_EXPIRES_IN, 60)
        for extra in ({}, {"expires_in": None}, {"expires_in": "300"}, {"expires_in": -5}, {"expires_in": 0}, {"expires_in": True}):
            with self.subTest(extra):
                self.assertEqual(parse_token_response(body(token="t", **extra), NOW).expires_at, NOW + 54)

    def test_lifetime_capped(self) -> None:
        token = parse_token_response(body(token="t", expires_in=10**12), NOW)
        self.assertEqual(token.expires_at, NOW + MAX_LIFETIME - 60)
        self.assertEqual(parse_token_response(b'{"token": "t", "expires_in": 1e999}', NOW).expires_at, NOW + 54)

    def test_skew_clamped(self) -> None:
        self.assertEqual(expiry_skew(10), 5)
        self.assertEqual(expiry_skew(60), 6)
        self.assertEqual(expiry_skew(300), 30)
        self.assertEqual(expiry_skew(3600), 60)
        # A very short token expires on arrival (used once, never cached).
        self.assertLessEqual(parse_token_response(body(token="t", expires_in=3), NOW).expires_at, NOW)

    def test_issued_at(self) -> None:
        """
        C{issued_at} is the base only when it is slightly in our past:
        request latency, not a clock we disagree with.
        """
        cases = [
            ("2024-05-01T11:59:50Z", NOW - 10),
            ("2024-05-01T13:59:50+02:00", NOW - 10),
            ("2024-05-01t11:59:50.5z", NOW - 9.5),
            ("2024-05-01T12:00:10Z", NOW),  # future: our clock wins
            ("2024-05-01T11:00:00Z", NOW),  # an hour behind: our clock wins
            ("yesterday", NOW),
            ("2024-13-45T99:00:00Z", NOW),
            ("2024-05-01T11:59:50", NOW),  # no zone
        ]
        for issued, base in cases:
            with self.subTest(issued):
                token = parse_token_response(body(token="t", expires_in=100, issued_at=issued), NOW)
                self.assertAlmostEqual(token.expires_at, base + 90)
        self.assertEqual(parse_token_response(body(token="t", issued_at=12), NOW).expires_at, NOW + 54)

    def test_garbage(self) -> None:
        for raw in (
            b"",
            b"not json",
            b"\xff\xfe",
            b"[]",
            b'"token"',
            b"{}",
            body(token=None),
            body(token=5),
            body(token=""),
            body(token="has space"),
            body(token="caf\u00e9"),
            body(token="a\nb"),
        ):
            with self.subTest(raw):
                self.assertRaises(ValueError, parse_token_response, raw, NOW)

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        try:
            parse_token_response(raw, NOW)
        except ValueError:
            pass

    @given(
        st.dictionaries(
            st.sampled_from(["token", "access_token", "expires_in", "issued_at", "x"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40)),
        )
    )
    def test_arbitrary_json(self, fields: dict[str, object]) -> None:
        try:
            token = parse_token_response(json.dumps(fields).encode(), NOW)
        except ValueError:
            return
        self.assertTrue(token.value)
        self.assertLessEqual(token.expires_at, NOW + MAX_LIFETIME)


KEY = ("docker.io", "repository:library/nginx:pull", "")


class TokenCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.cache = TokenCache(self.clock, max_entries=3)

    def test_get_put(self) -> None:
        self.assertIsNone(self.cache.get(KEY))
        self.cache.put(KEY, Token("t", 1270))
        self.assertEqual(self.cache.get(KEY), "t")
        self.assertEqual((self.cache.hits, self.cache.misses, len(self.cache)), (1, 1, 1))

    def test_expiry(self) -> None:
        self.cache.put(KEY, Token("t", 1100))
        self.clock.advance(99.9)
        self.assertEqual(self.cache.get(KEY), "t")
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.get(KEY))
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(self.cache.misses, 1)

    def test_docker_hub_token_on_clock(self) -> None:
        """
        A Docker Hub token fetched now is served for 270 s, then refetched.
        """
        self.cache.put(KEY, parse_token_response(body(token="t", expires_in=300), self.clock.seconds()))
        self.clock.advance(269)
        self.assertEqual(self.cache.get(KEY), "t")
        self.clock.advance(1)
        self.assertIsNone(self.cache.get(KEY))

    def test_expired_not_stored(self) -> None:
        self.cache.put(KEY, Token("old", 1500))
        self.cache.put(KEY, Token("t", 1000))
        self.assertEqual(len(self.cache), 0)

    def test_identity_separates(self) -> None:
        self.cache.put(KEY, Token("anon", 2000))
        other = KEY[:2] + ("a1b2",)
        self.assertIsNone(self.cache.get(other))
        self.cache.put(other, Token("mine", 2000))
        self.assertEqual((self.cache.get(KEY), self.cache.get(other)), ("anon", "mine"))

    def test_lru_eviction(self) -> None:
        keys = [("r", f"s{i}", "") for i in range(4)]
        for k in keys[:3]:
            self.cache.put(k, Token(k[1], 2000))
        self.cache.get(keys[0])  # now the most recently used
        self.cache.put(keys[3], Token("s3", 2000))
        self.assertEqual(len(self.cache), 3)
        self.assertIsNone(self.cache.get(keys[1]))
        self.assertEqual([self.cache.get(k) for k in (keys[0], keys[2], keys[3])], ["s0", "s2", "s3"])

    def test_invalidate_clear_sweep(self) -> None:
        self.cache.put(KEY, Token("t", 2000))
        self.assertTrue(self.cache.invalidate(KEY))
        self.assertFalse(self.cache.invalidate(KEY))
        self.cache.put(("a", "", ""), Token("a", 1010))
        self.cache.put(("b", "", ""), Token("b", 1020))
        self.cache.put(("c", "", ""), Token("c", 2000))
        self.clock.advance(15)
        self.assertEqual(self.cache.sweep(), 1)
        self.assertEqual(len(self.cache), 2)
        self.assertEqual(self.cache.clear(), 2)
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(self.cache.clear(), 0)


class SingleFlightTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.flight = SingleFlight()
        self.calls: list[Deferred[str]] = []
        self.cancelled: list[Deferred[str]] = []

    def fetch(self) -> Deferred[str]:
        d: Deferred[str] = Deferred(self.cancelled.append)
        self.calls.append(d)
        return d

    def test_shared(self) -> None:
        """
        Concurrent callers share one fetch and each get the result.
        """
        a = self.flight.run("k", self.fetch)
        b = self.flight.run("k", self.fetch)
        other = self.flight.run("other", self.fetch)
        self.assertEqual(len(self.calls), 2)
        self.assertIsNot(a, b)
        self.assertIn("k", self.flight)
        self.calls[0].callback("tok")
        self.assertEqual((self.successResultOf(a), self.successResultOf(b)), ("tok", "tok"))
        self.assertNoResult(other)
        self.assertNotIn("k", self.flight)
        self.assertEqual(len(self.flight), 1)

    def test_errors_reach_everyone(self) -> None:
        a = self.flight.run("k", self.fetch)
        b = self.flight.run("k", self.fetch)
        self.calls[0].errback(ValueError("nope"))
        self.failureResultOf(a, ValueError)
        self.failureResultOf(b, ValueError)
        self.assertEqual(len(self.flight), 0)
        # The next call starts afresh: failures are not remembered.
        c = self.flight.run("k", self.fetch)
        self.assertEqual(len(self.calls), 2)
        self.calls[1].callback("ok")
        self.assertEqual(self.successResultOf(c), "ok")

    def test_cancel_one_waiter(self) -> None:
        """
        Cancelling one caller leaves the shared fetch running for others.
        """
        a = self.flight.run("k", self.fetch)
        b = self.flight.run("k", self.fetch)
        a.cancel()
        self.failureResultOf(a, CancelledError)
        self.assertEqual(self.cancelled, [])
        self.calls[0].callback("tok")
        self.assertEqual(self.successResultOf(b), "tok")

    def test_cancel_last_waiter(self) -> None:
        """
        When every caller has gone, the shared fetch is cancelled and the
        key is free.
        """
        a = self.flight.run("k", self.fetch)
        b = self.flight.run("k", self.fetch)
        a.cancel()
        b.cancel()
        self.failureResultOf(a, CancelledError)
        self.failureResultOf(b, CancelledError)
        self.assertEqual(self.cancelled, [self.calls[0]])
        self.assertEqual(len(self.flight), 0)
        self.flight.run("k", self.fetch)
        self.assertEqual(len(self.calls), 2)

    def test_synchronous_result(self) -> None:
        self.assertEqual(self.successResultOf(self.flight.run("k", lambda: succeed("now"))), "now")
        self.assertEqual(len(self.flight), 0)

    def test_synchronous_raise(self) -> None:
        def boom() -> Deferred[str]:
            raise RuntimeError("boom")

        self.failureResultOf(self.flight.run("k", boom), RuntimeError)
        self.assertEqual(len(self.flight), 0)

    def test_cancel_after_result(self) -> None:
        a = self.flight.run("k", self.fetch)
        self.calls[0].callback("x")
        a.cancel()  # no effect on a fired Deferred
        self.assertEqual(self.successResultOf(a), "x")

    def test_coroutine(self) -> None:
        """
        The way L{hubproxy.registry.auth} uses it: a coroutine per fetch.
        """
        gate: Deferred[str] = Deferred()
        runs = []

        async def fetch() -> str:
            runs.append(1)
            return (await gate) + "!"

        a = self.flight.run("k", lambda: Deferred.fromCoroutine(fetch()))
        b = self.flight.run("k", lambda: Deferred.fromCoroutine(fetch()))
        gate.callback("t")
        self.assertEqual((self.successResultOf(a), self.successResultOf(b), runs), ("t!", "t!", [1]))
