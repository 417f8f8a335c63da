"""
Tests for the /v2/ resource, in memory against a fake registry with token
auth and a CDN (L{hubproxy.registry.resource}, L{hubproxy.registry.auth}).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from hubproxy.test.helpers import Harness, Recorder

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB = b"layer-bytes-" * 1000
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
OCI = "application/vnd.oci.image.manifest.v1+json"

CONFIG = """
[registries."docker.io"]
upstream = "https://registry.test"
[registries."ghcr.io"]
upstream = "https://ghcr.test"
[registries."quay.io"]
enabled = false
"""


class FakeRegistry(Recorder):
    """
    A Docker-Hub-like registry on host registry.test (bearer tokens from
    auth.test, blobs redirected to cdn.test) and an anonymous one on
    ghcr.test.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tokens_issued = 0
        self.fail_with: int | None = None
        self.hang = False
        self.pending: list[Any] = []

    def render(self, request: Any) -> Any:
        seen = self.record(request)
        host = seen["host"].split(":")[0]
        if host == "auth.test":
            return self.token(request)
        if host == "cdn.test":
            if "authorization" in seen["headers"]:
                request.setResponseCode(400)
                return b"bearer token leaked to the CDN"
            return self.blob_bytes(request)
        if self.hang:
            self.pending.append(request)
            return NOT_DONE_YET
        if self.fail_with is not None:
            request.setResponseCode(self.fail_with)
            if self.fail_with == 429:
                request.setHeader(b"retry-after", b"42")
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode()
        path = seen["path"]
        if host == "registry.test":
            repo = path.split("/")[2] + "/" + path.split("/")[3]
            want = f"Bearer tok-repository:{repo}:pull"
            if seen["headers"].get("authorization") != [want]:
                request.setResponseCode(401)
                request.setHeader(
                    b"www-authenticate",
                    f'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:{repo}:pull"'.encode(),
                )
                request.setHeader(b"content-type", b"application/json")
                return b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        if "/manifests/" in path:
            ref = path.rsplit("/", 1)[1]
            if ref not in ("1", MANIFEST_DIGEST):
                request.setResponseCode(404)
                request.setHeader(b"content-type", b"application/json")
                return b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"' + ref.encode() + b'"}}]}'
            request.setHeader(b"content-type", OCI.encode())
            request.setHeader(b"docker-content-digest", MANIFEST_DIGEST.encode())
            if request.method == b"HEAD":
                request.setHeader(b"content-length", str(len(MANIFEST)).encode())
                return b""
            return MANIFEST
        if "/blobs/" in path:
            if not path.endswith(BLOB_DIGEST):
                request.setResponseCode(404)
                return b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'
            if host == "registry.test":
                request.setResponseCode(307)
                request.setHeader(b"location", b"https://cdn.test/data/" + BLOB_DIGEST.encode() + b"?sig=1")
                return b"<a>redirect</a>"
            return self.blob_bytes(request)
        if path.endswith("/tags/list"):
            request.setHeader(b"content-type", b"application/json")
            q = parse_qs(seen["uri"].partition("?")[2])
            if "last" not in q:
                repo = "/".join(path.split("/")[2:-2])
                request.setHeader(b"link", f'</v2/{repo}/tags/list?last=b&n=2>; rel="next"'.encode())
                return json.dumps({"name": repo, "tags": ["a", "b"]}).encode()
            return json.dumps({"name": "x", "tags": ["c"]}).encode()
        request.setResponseCode(404)
        return b"{}"

    def token(self, request: Any) -> bytes:
        args = parse_qs(request.uri.decode().partition("?")[2])
        self.tokens_issued += 1
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"token": "tok-" + args["scope"][0], "expires_in": 300}).encode()

    def blob_bytes(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/octet-stream")
        rng = request.getHeader(b"range")
        if rng:
            start, _, end = rng.decode().split("=")[1].partition("-")
            s, e = int(start), int(end)
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {s}-{e}/{len(BLOB)}".encode())
            return BLOB[s : e + 1]
        return BLOB


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.upstream = FakeRegistry()
        self.h = Harness(self.upstream, CONFIG)

    def get(self, path: str, method: str = "GET", **kw: Any) -> tuple[Any, bytes]:
        return self.h.request(method, path, **kw)

    def test_ping(self) -> None:
        response, body = self.get("/v2/")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"{}")
        self.assertEqual(response.headers.getRawHeaders("docker-distribution-api-version"), ["registry/2.0"])

    def test_manifest_library_rule_and_token(self) -> None:
        """
        C{/v2/hello/manifests/1} fetches C{library/hello} from docker.io's
        upstream with a bearer token from the realm.
        """
        response, body = self.get("/v2/hello/manifests/1", headers={"Accept": OCI})
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body, MANIFEST)
        self.assertEqual(response.headers.getRawHeaders("docker-content-digest"), [MANIFEST_DIGEST])
        self.assertEqual(response.headers.getRawHeaders("content-type"), [OCI])
        paths = [s["path"] for s in self.upstream.seen if s["host"] == "registry.test"]
        self.assertIn("/v2/library/hello/manifests/1", paths)
        self.assertEqual(self.upstream.tokens_issued, 1)
        accept = [s["headers"].get("accept") for s in self.upstream.seen if s["host"] == "registry.test"]
        self.assertEqual(accept[-1], [OCI])

    def test_token_reused(self) -> None:
        """
        Tokens are cached per scope: many requests, one token fetch; and a
        new scope on a known registry needs no 401 round trip.
        """
        for _ in range(3):
            self.assertEqual(self.get("/v2/hello/blobs/" + BLOB_DIGEST)[0].code, 200)
        self.assertEqual(self.upstream.tokens_issued, 1)
        unauthorized = [s for s in self.upstream.seen if s["host"] == "registry.test" and "authorization" not in s["headers"]]
        self.assertEqual(len(unauthorized), 1)
        self.get("/v2/other/manifests/1")
        self.assertEqual(self.upstream.tokens_issued, 2)
        unauthorized = [s for s in self.upstream.seen if s["host"] == "registry.test" and "authorization" not in s["headers"]]
        self.assertEqual(len(unauthorized), 1)

    def test_token_expiry(self) -> None:
        self.get("/v2/hello/blobs/" + BLOB_DIGEST)
        self.h.clock.advance(301)
        self.get("/v2/hello/blobs/" + BLOB_DIGEST)
        self.assertEqual(self.upstream.tokens_issued, 2)

    def test_blob_redirect_to_cdn_without_token(self) -> None:
        """
        The blob's 307 to the CDN is followed by the proxy, and the bearer
        token is not sent to the CDN host.
        """
        response, body = self.get("/v2/hello/blobs/" + BLOB_DIGEST)
        self.assertEqual(response.code, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), BLOB_DIGEST.split(":")[1])
        self.assertEqual(response.headers.getRawHeaders("docker-content-digest"), [BLOB_DIGEST])
        self.assertEqual(response.length, len(BLOB))
        cdn = [s for s in self.upstream.seen if s["host"] == "cdn.test"]
        self.assertEqual(len(cdn), 1)
        self.assertNotIn("authorization", cdn[0]["headers"])

    def test_blob_range(self) -> None:
        response, body = self.get("/v2/hello/blobs/" + BLOB_DIGEST, headers={"Range": "bytes=10-19"})
        self.assertEqual(response.code, 206)
        self.assertEqual(body, BLOB[10:20])
        self.assertEqual(response.headers.getRawHeaders("content-range"), [f"bytes 10-19/{len(BLOB)}"])

    def test_head_manifest(self) -> None:
        response, body = self.get("/v2/hello/manifests/1", method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(response.headers.getRawHeaders("content-length"), [str(len(MANIFEST))])
        self.assertEqual(response.headers.getRawHeaders("docker-content-digest"), [MANIFEST_DIGEST])

    def test_missing_tag_is_manifest_unknown(self) -> None:
        response, body = self.get("/v2/hello/manifests/nope")
        self.assertEqual(response.code, 404)
        error = json.loads(body)["errors"][0]
        self.assertEqual(error["code"], "MANIFEST_UNKNOWN")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])

    def test_other_registry_prefix(self) -> None:
        response, body = self.get("/v2/ghcr.io/owner/app/manifests/1")
        self.assertEqual(response.code, 200, body)
        self.assertEqual([s["path"] for s in self.upstream.seen if s["host"] == "ghcr.test"], ["/v2/owner/app/manifests/1"])

    def test_containerd_ns(self) -> None:
        response, body = self.get("/v2/owner/app/manifests/1?ns=ghcr.io")
        self.assertEqual(response.code, 200, body)
        self.assertEqual([s["path"] for s in self.upstream.seen if s["host"] == "ghcr.test"], ["/v2/owner/app/manifests/1"])

    def test_disabled_registry(self) -> None:
        response, body = self.get("/v2/quay.io/owner/app/manifests/1")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "NAME_UNKNOWN")
        self.assertEqual(self.upstream.seen, [])

    def test_invalid_names(self) -> None:
        for path, code in [
            ("/v2/UPPER/manifests/1", "NAME_INVALID"),
            ("/v2/hello/manifests/bad%20tag", "TAG_INVALID"),
            ("/v2/hello/blobs/sha256:1234", "DIGEST_INVALID"),
        ]:
            response, body = self.get(path)
            self.assertEqual(response.code, 400, path)
            self.assertEqual(json.loads(body)["errors"][0]["code"], code, path)
        self.assertEqual(self.upstream.seen, [])

    def test_rate_limited_upstream(self) -> None:
        self.upstream.fail_with = 429
        response, body = self.get("/v2/ghcr.io/owner/app/manifests/1")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["42"])
        self.assertEqual(json.loads(body)["errors"][0]["code"], "TOOMANYREQUESTS")

    def test_stale_manifest_on_upstream_error(self) -> None:
        """
        A cached manifest is served when the upstream answers 5xx.
        """
        self.assertEqual(self.get("/v2/ghcr.io/owner/app/manifests/1")[0].code, 200)
        self.h.clock.advance(3600)
        self.upstream.fail_with = 503
        response, body = self.get("/v2/ghcr.io/owner/app/manifests/1")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, MANIFEST)

    def test_manifest_cache_hit(self) -> None:
        self.get("/v2/ghcr.io/owner/app/manifests/1")
        before = len(self.upstream.seen)
        response, body = self.get("/v2/ghcr.io/owner/app/manifests/1")
        self.assertEqual(body, MANIFEST)
        self.assertEqual(len(self.upstream.seen), before)

    def test_upstream_timeout_is_504(self) -> None:
        self.upstream.hang = True
        d = self.h.proxy.get("http://proxy.test/v2/ghcr.io/owner/app/manifests/1")
        self.h.settle()
        self.h.clock.advance(61)
        self.h.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)
        body = self.successResultOf(response.content())
        self.assertEqual(json.loads(body)["errors"][0]["code"], "UNAVAILABLE")

    def test_tags_list_link_rewritten(self) -> None:
        response, body = self.get("/v2/hello/tags/list?n=2")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["tags"], ["a", "b"])
        self.assertEqual(response.headers.getRawHeaders("link"), ['</v2/hello/tags/list?last=b&n=2>; rel="next"'])
        sent = [s["uri"] for s in self.upstream.seen if s["host"] == "registry.test" and "tags" in s["uri"]]
        self.assertEqual(sent[-1], "/v2/library/hello/tags/list?n=2")
