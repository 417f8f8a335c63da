"""
Tests for L{hubproxy.registry.manifests}.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.registry.manifests import (
    DEFAULT_ACCEPT,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_SCHEMA1,
    DOCKER_MANIFEST_SCHEMA1_SIGNED,
    DOCKER_MANIFEST_SCHEMA2,
    MANIFEST_MEDIA_TYPES,
    OCI_IMAGE_INDEX,
    OCI_IMAGE_MANIFEST,
    CachedManifest,
    ManifestCache,
    digest_of,
    normalise_accept,
    verify_digest,
)

OCI = OCI_IMAGE_MANIFEST
ACCEPT_ALL = normalise_accept([DEFAULT_ACCEPT])
ACCEPT_OCI = normalise_accept([OCI.encode()])


class MediaTypeTests(SynchronousTestCase):
    def test_default_accept(self) -> None:
        """
        The default Accept asks for the four modern types, not schema1.
        """
        self.assertEqual(
            set(DEFAULT_ACCEPT.decode().split(", ")),
            {DOCKER_MANIFEST_SCHEMA2, DOCKER_MANIFEST_LIST, OCI_IMAGE_MANIFEST, OCI_IMAGE_INDEX},
        )
        self.assertIn(DOCKER_MANIFEST_SCHEMA1, MANIFEST_MEDIA_TYPES)
        self.assertIn(DOCKER_MANIFEST_SCHEMA1_SIGNED, MANIFEST_MEDIA_TYPES)
        self.assertNotIn(b"distribution.manifest.v1", DEFAULT_ACCEPT)

    def test_normalise_accept(self) -> None:
        cases: list[tuple[list[bytes], str]] = [
            ([], ""),
            ([b""], ""),
            ([b"B/x, a/y"], "a/y,b/x"),
            ([b"a/y", b"b/x", b"A/Y"], "a/y,b/x"),
            ([b"a/y; q=0.5 ,  b/x;charset=utf-8", b" ,, "], "a/y,b/x"),
            ([b"a/y;q=0, b/x"], "b/x"),
            ([b"a/y;q=0.0, b/x;Q=0"], ""),
            ([b"a/y;q=bad"], "a/y"),
            ([b"*/*"], "*/*"),
        ]
        for values, expected in cases:
            with self.subTest(values):
                self.assertEqual(normalise_accept(values), expected)

    def test_docker_and_containerd_agree(self) -> None:
        """
        The same set in another order and spelling is the same key.
        """
        docker = [
            OCI_IMAGE_INDEX.encode(),
            DOCKER_MANIFEST_LIST.encode(),
            OCI_IMAGE_MANIFEST.encode(),
            DOCKER_MANIFEST_SCHEMA2.encode(),
        ]
        containerd = [b", ".join(reversed(docker)) + b", */*;q=0.8"]
        self.assertEqual(normalise_accept(docker), ACCEPT_ALL)
        self.assertNotEqual(normalise_accept(containerd), ACCEPT_ALL)  # */* is a different set
        self.assertEqual(normalise_accept([b", ".join(reversed(docker)).upper()]), ACCEPT_ALL)

    @given(st.lists(st.binary(max_size=100), max_size=4))
    def test_normalise_idempotent(self, values: list[bytes]) -> None:
        key = normalise_accept(values)
        self.assertEqual(normalise_accept([key.encode("latin-1")]), key)


class DigestTests(SynchronousTestCase):
    def test_digest_of(self) -> None:
        self.assertEqual(digest_of(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

    def test_verify(self) -> None:
        body = b'{"schemaVersion":2}'
        self.assertTrue(verify_digest(body, digest_of(body)))
        self.assertTrue(verify_digest(body, "sha512:" + hashlib.sha512(body).hexdigest()))
        for bad in (
            digest_of(b"other"),
            "sha512:" + hashlib.sha512(b"x").hexdigest(),
            digest_of(body).upper().replace("SHA256", "sha256"),
            "sha256:" + hashlib.sha256(body).hexdigest()[:-1],
            "sha384:" + hashlib.sha384(body).hexdigest(),
            hashlib.sha256(body).hexdigest(),
            "",
        ):
            with self.subTest(bad):
                self.assertFalse(verify_digest(body, bad))

    @given(st.binary(max_size=200))
    def test_round_trip(self, body: bytes) -> None:
        self.assertTrue(verify_digest(body, digest_of(body)))


def manifest(body: bytes, at: float, media_type: str = OCI) -> CachedManifest:
    return CachedManifest(body=body, media_type=media_type, digest=digest_of(body), stored_at=at)


class ManifestCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(10_000)
        self.cache = ManifestCache(self.clock, default_ttl=1200, max_bytes=1000, max_manifest_size=400)

    def key(self, reference: str, accept: str = ACCEPT_ALL, repository: str = "library/nginx") -> tuple[str, str, str, str]:
        return ("docker.io", repository, reference, accept)

    def test_tag_ttl(self) -> None:
        """
        A tag is fresh for the default TTL, then only available stale.
        """
        m = manifest(b"a" * 100, self.clock.seconds())
        self.cache.put(self.key("1.25"), m)
        self.clock.advance(1199)
        self.assertEqual(self.cache.get_fresh(self.key("1.25")), m)
        self.clock.advance(1)
        self.assertIsNone(self.cache.get_fresh(self.key("1.25")))
        self.assertEqual(self.cache.get_stale(self.key("1.25")), m)
        self.clock.advance(10**6)
        self.assertEqual(self.cache.get_stale(self.key("1.25")), m)
        self.assertEqual((self.cache.hits, self.cache.misses, self.cache.stale_hits), (1, 1, 2))

    def test_moving_tags(self) -> None:
        """
        C{latest} and friends get at most 10 minutes; a shorter configured
        TTL still wins.
        """
        self.assertEqual(self.cache.ttl_for("latest"), 600)
        self.assertEqual(self.cache.ttl_for("develop"), 600)
        self.assertEqual(self.cache.ttl_for("v1"), 1200)
        self.assertIsNone(self.cache.ttl_for("sha256:" + "0" * 64))
        self.assertEqual(ManifestCache(self.clock, default_ttl=60).ttl_for("latest"), 60)
        self.cache.put(self.key("latest"), manifest(b"x", self.clock.seconds()))
        self.clock.advance(600)
        self.assertIsNone(self.cache.get_fresh(self.key("latest")))

    def test_digest_forever_and_indexed(self) -> None:
        """
        A manifest fetched by tag is also found by its digest, fresh
        forever, under the same Accept key only.
        """
        m = manifest(b"b" * 100, self.clock.seconds())
        self.cache.put(self.key("v1"), m)
        self.assertEqual(len(self.cache), 2)
        self.clock.advance(10**7)
        self.assertIsNone(self.cache.get_fresh(self.key("v1")))
        self.assertEqual(self.cache.get_fresh(self.key(m.digest)), m)
        self.assertIsNone(self.cache.get_fresh(self.key(m.digest, ACCEPT_OCI)))
        self.assertIsNone(self.cache.get_fresh(self.key(m.digest, repository="library/other")))

    def test_put_by_digest(self) -> None:
        m = manifest(b"c" * 10, self.clock.seconds())
        self.cache.put(self.key(m.digest), m)
        self.assertEqual(len(self.cache), 1)
        self.assertEqual(self.cache.total_bytes, 10)

    def test_accept_separation(self) -> None:
        """
        An index stored for a client that accepts indexes is not served to
        one that accepts only single manifests.
        """
        index = manifest(b"index", self.clock.seconds(), OCI_IMAGE_INDEX)
        single = manifest(b"single", self.clock.seconds(), OCI_IMAGE_MANIFEST)
        self.cache.put(self.key("v1", ACCEPT_ALL), index)
        self.assertIsNone(self.cache.get_fresh(self.key("v1", ACCEPT_OCI)))
        self.assertIsNone(self.cache.get_stale(self.key("v1", ACCEPT_OCI)))
        self.cache.put(self.key("v1", ACCEPT_OCI), single)
        self.assertEqual(self.cache.get_fresh(self.key("v1", ACCEPT_ALL)), index)
        self.assertEqual(self.cache.get_fresh(self.key("v1", ACCEPT_OCI)), single)

    def test_replace(self) -> None:
        self.cache.put(self.key("v1"), manifest(b"old" * 10, self.clock.seconds()))
        new = manifest(b"new", self.clock.seconds())
        self.cache.put(self.key("v1"), new)
        self.assertEqual(self.cache.get_fresh(self.key("v1")), new)
        self.assertEqual(self.cache.total_bytes, 30 + 3 + 3)  # old digest entry stays

    def test_eviction_by_bytes(self) -> None:
        """
        Beyond C{max_bytes}, least recently used entries go first.
        """
        bodies = [bytes([65 + i]) * 200 for i in range(3)]
        for body in bodies:
            # by digest: one entry each
            self.cache.put(self.key(digest_of(body)), manifest(body, self.clock.seconds()))
        self.assertEqual(self.cache.total_bytes, 600)
        self.cache.get_fresh(self.key(digest_of(bodies[0])))  # touch the oldest
        self.cache.put(self.key("v9"), manifest(b"Z" * 300, self.clock.seconds()))  # + 2 * 300
        self.assertEqual(self.cache.total_bytes, 1000)
        self.assertNotIn(self.key(digest_of(bodies[1])), self.cache)
        self.assertIn(self.key(digest_of(bodies[2])), self.cache)
        self.assertIn(self.key(digest_of(bodies[0])), self.cache)
        self.assertIn(self.key("v9"), self.cache)
        self.cache.put(self.key("v8"), manifest(b"Y", self.clock.seconds()))  # + 2: C goes next
        self.assertNotIn(self.key(digest_of(bodies[2])), self.cache)
        self.assertIn(self.key(digest_of(bodies[0])), self.cache)
        self.assertEqual(self.cache.hits + self.cache.misses + self.cache.stale_hits, 1)
        self.assertEqual(self.cache.total_bytes, 802)

    def test_too_big(self) -> None:
        """
        A manifest above C{max_manifest_size} is not cached, and the stale
        entry it replaces goes.
        """
        self.cache.put(self.key("v1"), manifest(b"s", self.clock.seconds()))
        self.cache.put(self.key("v1"), manifest(b"x" * 401, self.clock.seconds()))
        self.assertIsNone(self.cache.get_stale(self.key("v1")))
        self.cache.put(self.key("v2"), manifest(b"x" * 400, self.clock.seconds()))
        self.assertIsNotNone(self.cache.get_fresh(self.key("v2")))

    def test_defaults(self) -> None:
        cache = ManifestCache(self.clock, 1200)
        self.assertEqual((cache.max_bytes, cache.max_manifest_size), (64 * 1024 * 1024, 4 * 1024 * 1024))

    def test_clear_and_discard(self) -> None:
        m = manifest(b"m", self.clock.seconds())
        self.cache.put(self.key("v1"), m)
        self.assertTrue(self.cache.discard(self.key("v1")))
        self.assertFalse(self.cache.discard(self.key("v1")))
        self.assertEqual(self.cache.clear(), 1)
        self.assertEqual((len(self.cache), self.cache.total_bytes), (0, 0))
        self.assertIsNone(self.cache.get_stale(self.key(m.digest)))

    @given(st.lists(st.tuples(st.sampled_from(["v1", "v2", "latest"]), st.integers(0, 500), st.integers(0, 2000)), max_size=30))
    def test_bound_holds(self, ops: list[tuple[str, int, int]]) -> None:
        """
        Whatever is stored, the byte count is exact and within the bound.
        """
        clock = Clock()
        cache = ManifestCache(clock, default_ttl=100, max_bytes=1000, max_manifest_size=400)
        for tag, size, wait in ops:
            clock.advance(wait)
            cache.put(("r", "x", tag, ""), manifest(tag.encode() * size, clock.seconds()))
            self.assertLessEqual(cache.total_bytes, 1000)
            self.assertEqual(cache.total_bytes, sum(len(m.body) for m in cache._entries.values()))
