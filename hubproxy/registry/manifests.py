# -*- test-case-name: hubproxy.test.test_manifests -*-
"""
Manifest media types, digests and the manifest cache.

Why the cache looks like this (reference.md 2.3, 12.3):

 - The key includes the client's C{Accept} set.  A registry answers the same
   tag with an index to a client that accepts one and with a single-platform
   manifest (or an error) to one that does not; Go's cache ignored Accept and
   served indexes to clients that never asked for them.
 - Digest references are content-addressed: a manifest fetched by digest
   (verified by the caller) never changes, so it stays until evicted.  A
   manifest fetched by tag is also indexed under its digest, because the
   next request of a pull is that digest.
 - Tags are fresh for the configured C{defaultTTL}.  The Go version gave
   C{latest}, C{main}, C{master}, C{dev} and C{develop} 10 minutes because
   they move often; we keep that as C{min(defaultTTL, 600)} so a shorter
   configured TTL still wins.
 - Entries outlive their freshness: L{ManifestCache.get_stale} hands out any
   age when the upstream is failing (stale-if-error), so an outage or a
   Docker Hub rate limit does not break pulls of images already seen.
 - Go's cache was unbounded; this one is bounded by bytes with LRU eviction,
   and refuses single manifests above C{max_manifest_size}.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "CachedManifest",
    "DEFAULT_ACCEPT",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_SCHEMA1",
    "DOCKER_MANIFEST_SCHEMA1_SIGNED",
    "DOCKER_MANIFEST_SCHEMA2",
    "MANIFEST_MEDIA_TYPES",
    "ManifestCache",
    "ManifestKey",
    "MODERN_MEDIA_TYPES",
    "MOVING_TAGS",
    "MOVING_TAG_TTL",
    "OCI_IMAGE_INDEX",
    "OCI_IMAGE_MANIFEST",
    "digest_of",
    "normalise_accept",
    "verify_digest",
]

DOCKER_MANIFEST_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: The four types every current client and registry speak.
MODERN_MEDIA_TYPES: tuple[str, ...] = (
    DOCKER_MANIFEST_SCHEMA2,
    DOCKER_MANIFEST_LIST,
    OCI_IMAGE_MANIFEST,
    OCI_IMAGE_INDEX,
)
#: Every manifest type we know.  Schema1 is known (an old client may still
#: ask for it, and we pass it through) but never requested on a client's
#: behalf: registries convert to it on the fly, slowly, and Docker Hub has
#: stopped serving it.
MANIFEST_MEDIA_TYPES: tuple[str, ...] = MODERN_MEDIA_TYPES + (
    DOCKER_MANIFEST_SCHEMA1,
    DOCKER_MANIFEST_SCHEMA1_SIGNED,
)
#: The C{Accept} sent upstream when the client sent none.
DEFAULT_ACCEPT: bytes = ", ".join(MODERN_MEDIA_TYPES).encode("ascii")

#: Tags that usually move often, and their TTL cap (the Go special case).
MOVING_TAGS = frozenset({"latest", "main", "master", "dev", "develop"})
MOVING_TAG_TTL = 600.0

#: C{(registry, repository, reference, accept_key)}.
ManifestKey = tuple[str, str, str, str]


def normalise_accept(values: Sequence[bytes]) -> str:
    """
    The canonical form of a client's C{Accept} headers, for cache keys:
    media types split on commas, parameters dropped, lower-cased,
    de-duplicated and sorted, joined by C{,}.

    Quality values only order preferences, which a registry does not
    honour anyway, except C{q=0}: that means "not acceptable", so such a
    type is left out rather than turned into an acceptable one.
    """
    types: set[str] = set()
    for value in values:
        text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        for item in text.split(","):
            media_type, *params = item.split(";")
            media_type = media_type.strip().lower()
            if not media_type or _refused(params):
                continue
            types.add(media_type)
    return ",".join(sorted(types))


def _refused(params: list[str]) -> bool:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip().strip('"')) == 0.0
            except ValueError:
                return False
    return False


def digest_of(body: bytes) -> str:
    """
    The canonical (sha256) digest of C{body}, as in C{Docker-Content-Digest}.
    """
    return "sha256:" + hashlib.sha256(body).hexdigest()


_HASHES = {"sha256": (hashlib.sha256, 64), "sha512": (hashlib.sha512, 128)}


def verify_digest(body: bytes, expected: str) -> bool:
    """
    Whether C{body} has the digest C{expected} (C{sha256:} or C{sha512:}).
    Malformed or unsupported digests never verify.
    """
    algorithm, sep, encoded = expected.partition(":")
    known = _HASHES.get(algorithm)
    if not sep or known is None or len(encoded) != known[1]:
        return False
    return known[0](body).hexdigest() == encoded


def _is_digest(reference: str) -> bool:
    return ":" in reference


@dataclass(frozen=True)
class CachedManifest:
    """
    A manifest as we serve it.

    @ivar body: the exact bytes from the upstream (the digest covers them).
    @ivar media_type: the upstream's C{Content-Type}.
    @ivar digest: the C{Docker-Content-Digest} to send.
    @ivar stored_at: reactor time it was fetched; freshness counts from it.
    """

    body: bytes
    media_type: str
    digest: str
    stored_at: float


class ManifestCache:
    """
    Manifests by C{(registry, repository, reference, accept_key)}, bounded
    by total body bytes, least recently used evicted first.

    A manifest stored under a tag and indexed under its digest is counted
    twice against C{max_bytes} although the bytes are shared: a small
    overestimate that keeps the accounting simple and the bound safe.

    @ivar hits: fresh answers.
    @ivar misses: lookups with no fresh entry.
    @ivar stale_hits: stale answers handed out because the upstream failed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        default_ttl: float,
        max_bytes: int = 64 * 1024 * 1024,
        max_manifest_size: int = 4 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self.default_ttl = float(default_ttl)
        self.max_bytes = max_bytes
        self.max_manifest_size = min(max_manifest_size, max_bytes)
        self._entries: OrderedDict[ManifestKey, CachedManifest] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.stale_hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """
        Whether C{key} has an entry of any age (without touching its LRU
        position or the counters).
        """
        return key in self._entries

    @property
    def total_bytes(self) -> int:
        """
        Body bytes held, as counted against C{max_bytes}.
        """
        return self._bytes

    def ttl_for(self, reference: str) -> float | None:
        """
        How long a manifest fetched by C{reference} is fresh; L{None} for a
        digest (forever).
        """
        if _is_digest(reference):
            return None
        if reference in MOVING_TAGS:
            return min(self.default_ttl, MOVING_TAG_TTL)
        return self.default_ttl

    def _fresh(self, key: ManifestKey, manifest: CachedManifest) -> bool:
        ttl = self.ttl_for(key[2])
        return ttl is None or self._clock.seconds() - manifest.stored_at < ttl

    def get_fresh(self, key: ManifestKey) -> CachedManifest | None:
        """
        The manifest for C{key} if it may be served without asking upstream.
        """
        manifest = self._entries.get(key)
        if manifest is None or not self._fresh(key, manifest):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return manifest

    def get_stale(self, key: ManifestKey) -> CachedManifest | None:
        """
        The manifest for C{key} whatever its age: for when the upstream
        fails (5xx, 429, network) and an old answer beats none.
        """
        manifest = self._entries.get(key)
        if manifest is None:
            return None
        self._entries.move_to_end(key)
        self.stale_hits += 1
        return manifest

    def put(self, key: ManifestKey, manifest: CachedManifest) -> None:
        """
        Store C{manifest} under C{key} and under its digest (same registry,
        repository and Accept key).  Manifests above C{max_manifest_size}
        are not stored, and any older entry under C{key} is dropped since
        it is no longer what the upstream says.
        """
        if len(manifest.body) > self.max_manifest_size:
            self.discard(key)
            return
        registry, repository, reference, accept_key = key
        if manifest.digest and manifest.digest != reference:
            self._store((registry, repository, manifest.digest, accept_key), manifest)
        self._store(key, manifest)  # last: the most recently used
        while self._bytes > self.max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.body)

    def _store(self, key: ManifestKey, manifest: CachedManifest) -> None:
        self.discard(key)
        self._entries[key] = manifest
        self._bytes += len(manifest.body)

    def discard(self, key: ManifestKey) -> bool:
        """
        Drop the entry for C{key}, if any.

        @return: whether there was one.
        """
        old = self._entries.pop(key, None)
        if old is None:
            return False
        self._bytes -= len(old.body)
        return True

    def clear(self) -> int:
        """
        Drop everything.

        @return: how many entries were dropped.
        """
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        return count
