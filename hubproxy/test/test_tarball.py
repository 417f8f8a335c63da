"""
Tests for the offline image tars (L{hubproxy.tools.tarball},
L{hubproxy.tools.download}), in memory against a fake token-auth registry
serving a multi-arch index, a single-arch image sharing a layer with it,
and blobs behind a CDN redirect.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any
from urllib.parse import parse_qs

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from hubproxy.test.helpers import Harness, Recorder, _result
from hubproxy.tools.download import TokenStore
from hubproxy.tools.tarball import Platform, TarWriter, archive_metadata, parse_platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Images:
    """
    The fake registry's content: blobs by digest, manifests by
    (repository, reference).
    """

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        shared = self.blob(b"shared-layer-" * 5000)
        amd = self.blob(b"amd64-layer-" * 300)
        arm = self.blob(b"arm64-layer-" * 300)
        hello = self.blob(b"hello-layer-" * 100)
        # Configs with odd spacing and an unknown field: must stay byte-exact.
        cfg_amd = self.blob(b'{"architecture":"amd64","os":"linux",  "x-unknown":1,"rootfs":{"type":"layers"}}')
        cfg_arm = self.blob(b'{"architecture":"arm64","variant":"v8","os":"linux","rootfs":{"type":"layers"}}')
        cfg_hello = self.blob(b'{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello"]}}')
        m_amd = self.manifest("library/multi", OCI_MANIFEST, cfg_amd, [shared, amd])
        m_arm = self.manifest("library/multi", OCI_MANIFEST, cfg_arm, [shared, arm])
        attestation = self.manifest("library/multi", OCI_MANIFEST, cfg_amd, [])
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {"mediaType": OCI_MANIFEST, "digest": m_amd[0], "size": m_amd[1], "platform": {"os": "linux", "architecture": "amd64"}},
                    {"mediaType": OCI_MANIFEST, "digest": m_arm[0], "size": m_arm[1], "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                    {"mediaType": OCI_MANIFEST, "digest": attestation[0], "size": attestation[1], "platform": {"os": "unknown", "architecture": "unknown"}},
                ],
            }
        ).encode()
        self.manifests[("library/multi", "1")] = (OCI_INDEX, index)
        self.manifests[("library/multi", sha(index))] = (OCI_INDEX, index)
        self.manifest("library/hello", DOCKER_V2, cfg_hello, [shared, hello], tag="1")
        self.shared, self.amd, self.arm, self.hello = shared, amd, arm, hello
        self.cfg_amd, self.cfg_arm, self.cfg_hello = cfg_amd, cfg_arm, cfg_hello
        self.m_arm = m_arm[0]

    def blob(self, data: bytes) -> str:
        digest = sha(data)
        self.blobs[digest] = data
        return digest

    def manifest(self, repo: str, media_type: str, config: str, layers: list[str], tag: str | None = None) -> tuple[str, int]:
        def desc(d: str, mt: str) -> dict[str, Any]:
            return {"mediaType": mt, "digest": d, "size": len(self.blobs[d])}

        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media_type,
                "config": desc(config, "application/vnd.oci.image.config.v1+json"),
                "layers": [desc(layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers],
            }
        ).encode()
        self.manifests[(repo, sha(body))] = (media_type, body)
        if tag:
            self.manifests[(repo, tag)] = (media_type, body)
        return sha(body), len(body)


class FakeRegistry(Recorder):
    """
    registry.test with bearer tokens from auth.test; blob GETs redirect to
    cdn.test.  C{hang_blob}: the CDN sends half of that blob and stalls;
    C{corrupt_blob}: the CDN sends that blob with one byte changed.
    """

    def __init__(self, images: Images) -> None:
        super().__init__()
        self.images = images
        self.tokens = 0
        self.hang_blob: str | None = None
        self.corrupt_blob: str | None = None
        self.pending: list[Any] = []

    def render(self, request: Any) -> Any:
        seen = self.record(request)
        host = seen["host"].split(":")[0]
        path = seen["path"]
        if host == "auth.test":
            self.tokens += 1
            scope = parse_qs(seen["uri"].partition("?")[2])["scope"][0]
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"token": "tok-" + scope, "expires_in": 300}).encode()
        if host == "cdn.test":
            digest = path.rsplit("/", 1)[1]
            data = self.images.blobs[digest]
            request.setHeader(b"content-type", b"application/octet-stream")
            if digest == self.hang_blob:
                request.setHeader(b"content-length", str(len(data)).encode())
                request.write(data[: len(data) // 2])
                self.pending.append(request)
                return NOT_DONE_YET
            if digest == self.corrupt_blob:
                return bytes([data[0] ^ 1]) + data[1:]
            return data
        parts = path.split("/")
        sep = "manifests" if "/manifests/" in path else "blobs"
        idx = parts.index(sep)
        repo = "/".join(parts[2:idx])
        ref = parts[idx + 1]
        if seen["headers"].get("authorization") != [f"Bearer tok-repository:{repo}:pull"]:
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", f'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:{repo}:pull"'.encode())
            return b'{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}'
        if sep == "manifests":
            found = self.images.manifests.get((repo, ref))
            if found is None:
                request.setResponseCode(404)
                request.setHeader(b"content-type", b"application/json")
                return b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
            request.setHeader(b"content-type", found[0].encode())
            request.setHeader(b"docker-content-digest", sha(found[1]).encode())
            return found[1]
        if ref not in self.images.blobs:
            request.setResponseCode(404)
            return b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'
        request.setResponseCode(307)
        request.setHeader(b"location", f"https://cdn.test/blobs/{ref}".encode())
        return b""


CONFIG = """
[registries."docker.io"]
upstream = "https://registry.test"
[registries."quay.io"]
upstream = "https://quay.test"
enabled = false
[access]
blackList = ["secret/*"]
[download]
maxImages = 3
"""


def members(body: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            out[m.name] = f.read() if f is not None else b""
    return out


def names_in_order(body: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        return [m.name for m in tar.getmembers()]


class TarTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.images = Images()
        self.upstream = FakeRegistry(self.images)
        self.h = Harness(self.upstream, CONFIG)

    def get(self, path: str, **kw: Any) -> tuple[Any, bytes]:
        return self.h.request("GET", path, **kw)

    def hexof(self, digest: str) -> str:
        return digest.split(":")[1]

    def test_single_image(self) -> None:
        """
        One image: configs byte for byte, layers as blobs, manifest.json
        and repositories; a file name from the reference.
        """
        response, body = self.get("/download?images=hello:1")
        self.assertEqual(response.code, 200, body[:300])
        self.assertEqual(response.headers.getRawHeaders("content-disposition"), ['attachment; filename="hello_1.tar"'])
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/x-tar"])
        files = members(body)
        im = self.images
        self.assertEqual(files[f"{self.hexof(im.cfg_hello)}.json"], im.blobs[im.cfg_hello])
        self.assertEqual(files[f"{self.hexof(im.shared)}/layer.tar"], im.blobs[im.shared])
        self.assertEqual(files[f"{self.hexof(im.hello)}/layer.tar"], im.blobs[im.hello])
        manifest = json.loads(files["manifest.json"])
        self.assertEqual(
            manifest,
            [
                {
                    "Config": f"{self.hexof(im.cfg_hello)}.json",
                    "RepoTags": ["hello:1"],
                    "Layers": [f"{self.hexof(im.shared)}/layer.tar", f"{self.hexof(im.hello)}/layer.tar"],
                }
            ],
        )
        self.assertEqual(json.loads(files["repositories"]), {"hello": {"1": self.hexof(im.cfg_hello)}})
        self.assertEqual(names_in_order(body)[-2:], ["manifest.json", "repositories"])
        self.assertEqual(len(body) % 512, 0)
        self.assertEqual(body[-1024:], b"\0" * 1024)

    def test_batch_shared_layer_once(self) -> None:
        """
        Two images sharing a layer: it is written once.
        """
        response, body = self.get("/download?images=hello:1,multi:1&platform=linux/amd64")
        self.assertEqual(response.code, 200, body[:300])
        self.assertEqual(response.headers.getRawHeaders("content-disposition"), ['attachment; filename="batch_2_images.tar"'])
        im = self.images
        names = names_in_order(body)
        self.assertEqual(names.count(f"{self.hexof(im.shared)}/layer.tar"), 1)
        files = members(body)
        self.assertEqual(files[f"{self.hexof(im.cfg_amd)}.json"], im.blobs[im.cfg_amd])
        self.assertNotIn(f"{self.hexof(im.cfg_arm)}.json", files)
        manifest = json.loads(files["manifest.json"])
        self.assertEqual([m["RepoTags"] for m in manifest], [["hello:1"], ["multi:1"]])
        self.assertEqual(manifest[1]["Layers"], [f"{self.hexof(im.shared)}/layer.tar", f"{self.hexof(im.amd)}/layer.tar"])
        # every blob fetched once, through the CDN, without the bearer token
        cdn = [s for s in self.upstream.seen if s["host"].startswith("cdn.test")]
        self.assertEqual(len(cdn), len({s["path"] for s in cdn}))
        self.assertFalse(any("authorization" in s["headers"] for s in cdn))

    def test_arm64_is_v8(self) -> None:
        """
        C{linux/arm64} selects the C{arm64/v8} entry of the index.
        """
        response, body = self.get("/download?images=multi:1&platform=linux/arm64")
        self.assertEqual(response.code, 200, body[:300])
        im = self.images
        files = members(body)
        self.assertEqual(files[f"{self.hexof(im.cfg_arm)}.json"], im.blobs[im.cfg_arm])
        self.assertNotIn(f"{self.hexof(im.cfg_amd)}.json", files)
        self.assertEqual(files[f"{self.hexof(im.arm)}/layer.tar"], im.blobs[im.arm])
        self.assertEqual(response.headers.getRawHeaders("x-hubproxy-platforms"), ["multi:1=linux/arm64/v8"])

    def test_explicit_variant_and_default_platform(self) -> None:
        _, body = self.get("/download?images=multi:1&platform=linux/arm64/v8")
        self.assertIn(f"{self.hexof(self.images.cfg_arm)}.json", members(body))
        _, body = self.get("/download?images=multi:1")
        self.assertIn(f"{self.hexof(self.images.cfg_amd)}.json", members(body))

    def test_missing_platform_lists_available(self) -> None:
        response, body = self.get("/download?images=multi:1&platform=linux/arm/v7")
        self.assertEqual(response.code, 400)
        data = json.loads(body)
        self.assertEqual(data["code"], "PLATFORM_UNKNOWN")
        self.assertEqual(data["detail"]["platforms"], ["linux/amd64", "linux/arm64/v8"])
        self.assertIn("linux/arm64/v8", data["error"])
        self.assertIsNone(response.headers.getRawHeaders("content-disposition"))

    def test_single_arch_image_platform(self) -> None:
        """
        A single-platform image must match a platform asked for (a 400
        listing its platform otherwise, no silent fallback); with no
        platform asked for it is used as it is.  The header says which
        platform each image is.
        """
        response, body = self.get("/download?images=hello:1,multi:1&platform=linux/arm64")
        self.assertEqual(response.code, 400)
        error = json.loads(body)
        self.assertEqual(error["code"], "PLATFORM_UNKNOWN")
        self.assertIn("linux/amd64", error["error"])
        self.assertIsNone(response.headers.getRawHeaders("content-disposition"))
        response, body = self.get("/download?images=hello:1,multi:1&platform=linux/amd64")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("x-hubproxy-platforms"), ["hello:1=linux/amd64, multi:1=linux/amd64"])
        response, body = self.get("/download?images=hello:1")
        self.assertEqual(response.code, 200)

    def test_bad_platform(self) -> None:
        response, body = self.get("/download?images=hello:1&platform=linux")
        self.assertEqual(response.code, 400)
        self.assertEqual(json.loads(body)["code"], "PLATFORM_INVALID")

    def test_unknown_image_is_json_error(self) -> None:
        response, body = self.get("/download?images=nope:1")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertIsNone(response.headers.getRawHeaders("content-disposition"))
        self.assertIn("manifest unknown", json.loads(body)["error"])

    def test_registries_enforced(self) -> None:
        for ref in ("quay.io/org/app:1", "evil.example/org/app:1"):
            response, body = self.get(f"/download?images={ref}")
            self.assertEqual(response.code, 400, ref)
            self.assertEqual(json.loads(body)["code"], "NAME_UNKNOWN")
        self.assertFalse(any("quay" in s["host"] or "evil" in s["host"] for s in self.upstream.seen))

    def test_access_list(self) -> None:
        response, body = self.get("/download?images=secret/app:1")
        self.assertEqual(response.code, 403)
        self.assertEqual(self.upstream.seen, [])

    def test_max_images(self) -> None:
        response, body = self.get("/download?images=a:1,b:1,c:1,d:1")
        self.assertEqual(response.code, 400)
        self.assertEqual(json.loads(body)["code"], "TOO_MANY_IMAGES")

    def test_mid_stream_stall_aborts(self) -> None:
        """
        An upstream that stalls after part of a layer: the client's
        connection is aborted (no end-of-archive, no clean chunked end).
        """
        self.upstream.hang_blob = self.images.shared
        d = self.h.proxy.request("GET", "http://proxy.test/download?images=hello:1")
        self.h.settle()
        response = _result(d)
        self.assertEqual(response.code, 200)
        body_d = response.content()
        self.h.settle()
        self.assertNoResult(body_d)
        self.h.clock.advance(self.h.config.network.idle_timeout + 1)
        self.h.settle()
        self.failureResultOf(body_d)

    def test_digest_mismatch_aborts(self) -> None:
        self.upstream.corrupt_blob = self.images.hello
        d = self.h.proxy.request("GET", "http://proxy.test/download?images=hello:1")
        self.h.settle()
        response = _result(d)
        body_d = response.content()
        self.h.settle()
        self.failureResultOf(body_d)

    def test_corrupt_config_is_an_error_before_the_tar(self) -> None:
        self.upstream.corrupt_blob = self.images.cfg_hello
        response, body = self.get("/download?images=hello:1")
        self.assertEqual(response.code, 502)
        self.assertIn("config", json.loads(body)["error"])

    def test_info(self) -> None:
        response, body = self.get("/api/image/info?image=multi&tag=1")
        self.assertEqual(response.code, 200)
        data = json.loads(body)
        self.assertTrue(data["success"])
        self.assertEqual(data["data"]["platforms"], ["linux/amd64", "linux/arm64/v8"])
        self.assertTrue(data["data"]["multiArch"])
        self.assertEqual(data["data"]["name"], "multi:1")
        _, body = self.get("/api/image/info?image=hello:1")
        data = json.loads(body)["data"]
        self.assertEqual((data["multiArch"], data["platforms"], data["mediaType"]), (False, ["linux/amd64"], DOCKER_V2))
        response, body = self.get("/api/image/info?image=nope:1")
        self.assertEqual(response.code, 404)

    def test_upstream_tokens_reused(self) -> None:
        self.get("/download?images=hello:1")
        self.get("/download?images=hello:1")
        self.assertEqual(self.upstream.tokens, 1)


class TwoStepTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.images = Images()
        self.upstream = FakeRegistry(self.images)
        self.h = Harness(self.upstream, CONFIG)

    def test_single_token_flow(self) -> None:
        ua = {"user-agent": "browser/1"}
        response, body = self.h.request("GET", "/api/image/download?image=multi&tag=1&mode=prepare&platform=linux/arm64", headers=ua)
        self.assertEqual(response.code, 200, body)
        url = json.loads(body)["download_url"]
        self.assertTrue(url.startswith("/api/image/download?image=multi%3A1&token="), url)
        self.assertEqual(self.upstream.seen, [])  # prepare does not touch the registry
        response, body = self.h.request("GET", url, headers=ua)
        self.assertEqual(response.code, 200, body[:200])
        self.assertEqual(response.headers.getRawHeaders("content-disposition"), ['attachment; filename="multi_1.tar"'])
        self.assertIn(f"{self.images.cfg_arm.split(':')[1]}.json", members(body))
        response, body = self.h.request("GET", url, headers=ua)
        self.assertEqual(response.code, 403)
        self.assertEqual(json.loads(body)["code"], "TOKEN_INVALID")

    def test_token_bound_to_user_agent(self) -> None:
        _, body = self.h.request("GET", "/api/image/download?image=hello:1&mode=prepare", headers={"user-agent": "a"})
        url = json.loads(body)["download_url"]
        response, body = self.h.request("GET", url, headers={"user-agent": "b"})
        self.assertEqual(response.code, 403)
        # consumed by the failed attempt
        response, _ = self.h.request("GET", url, headers={"user-agent": "a"})
        self.assertEqual(response.code, 403)

    def test_token_image_must_match(self) -> None:
        _, body = self.h.request("GET", "/api/image/download?image=hello:1&mode=prepare")
        token = json.loads(body)["download_url"].rpartition("token=")[2]
        response, body = self.h.request("GET", f"/api/image/download?image=multi:1&token={token}")
        self.assertEqual(response.code, 400)

    def test_token_expires(self) -> None:
        _, body = self.h.request("GET", "/api/image/download?image=hello:1&mode=prepare")
        self.h.clock.advance(121)
        response, _ = self.h.request("GET", json.loads(body)["download_url"])
        self.assertEqual(response.code, 403)

    def test_batch_flow(self) -> None:
        prepare = json.dumps({"images": ["hello:1", "multi:1"], "platform": "linux/amd64", "useCompressedLayers": True}).encode()
        response, body = self.h.request("POST", "/api/image/batch?mode=prepare", data=prepare, headers={"content-type": "application/json"})
        self.assertEqual(response.code, 200, body)
        url = json.loads(body)["download_url"]
        response, body = self.h.request("GET", url)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-disposition"), ['attachment; filename="batch_2_images.tar"'])
        self.assertEqual(len(json.loads(members(body)["manifest.json"])), 2)

    def test_batch_errors(self) -> None:
        response, _ = self.h.request("POST", "/api/image/batch", data=b"{}")
        self.assertEqual(response.code, 400)
        response, body = self.h.request("POST", "/api/image/batch?mode=prepare", data=json.dumps({"images": ["a", "b", "c", "d"]}).encode())
        self.assertEqual((response.code, json.loads(body)["code"]), (400, "TOO_MANY_IMAGES"))
        response, _ = self.h.request("POST", "/api/image/batch?mode=prepare", data=b"not json")
        self.assertEqual(response.code, 400)
        response, _ = self.h.request("POST", "/api/image/batch?mode=prepare", data=json.dumps({"images": ["secret/x"]}).encode())
        self.assertEqual(response.code, 403)
        response, _ = self.h.request("GET", "/api/image/batch?token=nope")
        self.assertEqual(response.code, 403)


class UnitTests(SynchronousTestCase):
    def test_platform_matching(self) -> None:
        arm64 = Platform("linux", "arm64", "v8")
        self.assertTrue(Platform.parse("linux/arm64").matches(arm64))
        self.assertTrue(Platform.parse("linux/aarch64").matches(arm64))
        self.assertTrue(Platform.parse("linux/arm").matches(Platform("linux", "arm", "v7")))
        self.assertFalse(Platform.parse("linux/arm/v6").matches(Platform("linux", "arm", "v7")))
        self.assertFalse(Platform.parse("linux/amd64").matches(arm64))
        self.assertIsNone(parse_platform(""))
        self.assertEqual(str(Platform.parse("Linux/ARM64/V8")), "linux/arm64/v8")

    def test_token_store_binding(self) -> None:
        from twisted.internet.task import Clock

        clock = Clock()
        store = TokenStore(clock, ttl=120, limit=2)
        t = store.issue({"x": 1}, "1.2.3.4|ua")
        with self.assertRaises(Exception):
            store.consume(t, "5.6.7.8|ua")
        with self.assertRaises(Exception):
            store.consume(t, "1.2.3.4|ua")  # single use, even after a miss
        t = store.issue({"x": 2}, "1.2.3.4|ua")
        self.assertEqual(store.consume(t, "1.2.3.4|ua"), {"x": 2})
        store.issue({}, "c")
        store.issue({}, "c")
        with self.assertRaises(Exception):
            store.issue({}, "c")
        clock.advance(121)
        store.issue({}, "c")  # expired ones were purged
        self.assertEqual(len(store), 1)

    def test_writer_forwards_backpressure(self) -> None:
        """
        Pause/resume from the client reach the upstream body transport,
        also when the pause came before the blob started; writes are
        coalesced to at least 64 KiB.
        """

        class Upstream:
            def __init__(self) -> None:
                self.calls: list[str] = []

            def pauseProducing(self) -> None:
                self.calls.append("pause")

            def resumeProducing(self) -> None:
                self.calls.append("resume")

            def stopProducing(self) -> None:
                self.calls.append("stop")

        class FakeRequest:
            def __init__(self) -> None:
                self.writes: list[int] = []

            def write(self, data: bytes) -> None:
                self.writes.append(len(data))

        req = FakeRequest()
        writer = TarWriter(req)  # type: ignore[arg-type]
        writer.pauseProducing()
        up = Upstream()
        writer.attach(up)
        writer.resumeProducing()
        writer.pauseProducing()
        self.assertEqual(up.calls, ["pause", "resume", "pause"])
        for _ in range(100):
            writer.write(b"x" * 1000)
        writer.flush()
        self.assertTrue(all(n >= 64 * 1024 for n in req.writes[:-1]))
        self.assertEqual(sum(req.writes), 100000)
        writer.stopProducing()
        self.assertEqual(up.calls[-1], "stop")

    def test_archive_metadata_digest_reference(self) -> None:
        from hubproxy.tools.tarball import Blob, ImageSpec, ResolvedImage

        digest = "sha256:" + "a" * 64
        spec = ImageSpec("ghcr.io/o/a@" + digest, "ghcr.io", "o/a", digest)
        image = ResolvedImage(spec, digest, "linux/amd64", Blob("sha256:" + "b" * 64, 2), b"{}", [Blob("sha256:" + "c" * 64, 3)])
        manifest, repositories = archive_metadata([image])
        self.assertEqual(json.loads(manifest)[0]["RepoTags"], [])
        self.assertEqual(json.loads(repositories), {})
        self.assertEqual(spec.file_stem, "ghcr.io_o_a_" + "a" * 64)


