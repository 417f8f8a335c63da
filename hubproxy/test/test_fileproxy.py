"""
Tests for the URL-prefix file and git proxy (L{hubproxy.files.resource}),
in memory against fake GitHub, CDN and Hugging Face hosts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET

from hubproxy.test.helpers import Harness, Recorder

ASSET = bytes(range(256)) * 400
SCRIPT = (
    b"#!/bin/sh\n"
    b"curl -fsSL https://github.com/o/r/releases/download/v1/tool.tar.gz -o t.tgz\n"
    b'URL="https://raw.githubusercontent.com/o/r/main/other.sh"\n'
    b"echo https://example.com/keep\n"
)


class FakeHosts(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.chunked_size = 0

    def render(self, request: Any) -> Any:
        seen = self.record(request)
        host = seen["host"].split(":")[0]
        path = seen["path"]
        if host == "github.com":
            if path == "/o/r/releases/download/v1/tool.tar.gz":
                request.setResponseCode(302)
                request.setHeader(b"location", b"https://objects.githubusercontent.com/asset/1?sig=abc")
                request.setHeader(b"set-cookie", b"logged_in=no")
                return b"redirect"
            if path == "/o/r/releases/download/v1/evil":
                request.setResponseCode(302)
                request.setHeader(b"location", b"http://127.0.0.1:8080/admin")
                return b""
            if path == "/o/r/releases/download/v1/huge":
                request.setHeader(b"content-type", b"application/octet-stream")
                request.setHeader(b"content-length", b"999999999999")
                request.write(b"x")
                return NOT_DONE_YET
            if path == "/o/r/releases/download/v1/stream":
                request.setHeader(b"content-type", b"application/octet-stream")
                request.write(b"x" * 70000)
                request.write(b"x" * 70000)
                request.finish()
                return NOT_DONE_YET
            if path == "/o/r/info/refs":
                request.setHeader(b"content-type", b"application/x-git-upload-pack-advertisement")
                return b"001e# service=git-upload-pack\n0000"
            if path == "/o/r.git/git-upload-pack":
                request.setHeader(b"content-type", b"application/x-git-upload-pack-result")
                return b"PACK" + seen["body"]
            if path == "/o/r/wiki":
                request.setHeader(b"content-type", b"text/html")
                return b"<html>page</html>"
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return b"<html>Not Found</html>"
        if host == "gist.github.com" and path == "/u/abc123.git/git-upload-pack":
            request.setHeader(b"content-type", b"application/x-git-upload-pack-result")
            return b"PACK" + seen["body"]
        if host == "objects.githubusercontent.com":
            if "sig" not in seen["uri"]:
                request.setResponseCode(403)
                return b"unsigned"
            request.setHeader(b"content-type", b"application/octet-stream")
            return ASSET
        if host == "raw.githubusercontent.com":
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"etag", b'"abc"')
            return SCRIPT
        if host == "cdn-lfs.hf.co":
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"123456")
            return b""
        if host == "huggingface.co":
            if "/resolve/" in path:
                request.setHeader(b"x-repo-commit", b"0123abcd")
                request.setHeader(b"x-linked-etag", b'"sha-big"')
                request.setHeader(b"x-linked-size", b"123456")
                request.setHeader(b"etag", b'"small"')
                request.setHeader(b"x-xet-hash", b"deadbeef")
                request.setHeader(b"link", b'<https://cas.hf.co/auth>; rel="xet-auth", <https://huggingface.co/x?p=2>; rel="next"')
                request.setResponseCode(302)
                request.setHeader(b"location", b"https://cdn-lfs.hf.co/repos/aa/bb/file?X-Amz=1")
                return b""
            if path.startswith("/api/models"):
                request.setHeader(b"content-type", b"application/json")
                return json.dumps([{"type": "file", "path": "model.bin", "size": 5, "oid": "x", "lfs": {"oid": "y", "size": 5}, "xetHash": "zz"}]).encode()
        request.setResponseCode(404)
        return b"no such host"


class FileProxyTests(SynchronousTestCase):
    toml = ""

    def setUp(self) -> None:
        self.upstream = FakeHosts()
        self.h = Harness(self.upstream, self.toml or "[server]\nfileSize = 1000000\n")

    def get(self, path: str, method: str = "GET", **kw: Any) -> tuple[Any, bytes]:
        return self.h.request(method, path, **kw)

    def test_release_follows_redirect_to_cdn(self) -> None:
        response, body = self.get(
            "/https://github.com/o/r/releases/download/v1/tool.tar.gz",
            headers={"Authorization": "token secret", "Cookie": "a=b"},
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(ASSET).hexdigest())
        self.assertEqual(response.length, len(ASSET))
        gh, cdn = self.upstream.seen
        self.assertEqual(gh["headers"]["authorization"], ["token secret"])
        self.assertNotIn("cookie", gh["headers"])
        self.assertNotIn("authorization", cdn["headers"])
        self.assertIsNone(response.headers.getRawHeaders("set-cookie"))

    def test_collapsed_and_schemeless_prefixes(self) -> None:
        for prefix in ("/https:/github.com", "/github.com", "/https://github.com"):
            response, body = self.get(prefix + "/o/r/releases/download/v1/tool.tar.gz")
            self.assertEqual(response.code, 200, prefix)
            self.assertEqual(body, ASSET)

    def test_not_github_is_403_text(self) -> None:
        response, body = self.get("/https://example.com/file.bin")
        self.assertEqual(response.code, 403)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        self.assertTrue(body)
        self.assertEqual(self.upstream.seen, [])

    def test_redirect_to_private_address_refused(self) -> None:
        response, body = self.get("/https://github.com/o/r/releases/download/v1/evil")
        self.assertEqual(response.code, 502)
        self.assertEqual(len(self.upstream.seen), 1)

    def test_size_limit_from_content_length(self) -> None:
        response, body = self.get("/https://github.com/o/r/releases/download/v1/huge")
        self.assertEqual(response.code, 413)

    def test_size_limit_counted_when_no_length(self) -> None:
        """
        A chunked body is counted; past fileSize the client connection is
        aborted (a short body must not look complete).
        """
        self.h = Harness(self.upstream, "[server]\nfileSize = 100000\n")
        d = self.h.proxy.get("http://proxy.test/https://github.com/o/r/releases/download/v1/stream")
        self.h.settle()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body_d = response.content()
        self.h.settle()
        self.failureResultOf(body_d)

    def test_git_info_refs_and_upload_pack(self) -> None:
        response, body = self.get(
            "/https://github.com/o/r/info/refs?service=git-upload-pack",
            headers={"Git-Protocol": "version=2"},
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(self.upstream.seen[-1]["uri"], "/o/r/info/refs?service=git-upload-pack")
        self.assertEqual(self.upstream.seen[-1]["headers"]["git-protocol"], ["version=2"])
        response, body = self.get(
            "/https://github.com/o/r.git/git-upload-pack",
            method="POST",
            data=b"0032want abc\n0000",
            headers={"Content-Type": "application/x-git-upload-pack-request"},
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"PACK0032want abc\n0000")
        self.assertEqual(self.upstream.seen[-1]["headers"]["content-type"], ["application/x-git-upload-pack-request"])

    def test_gist_clone_posts_upload_pack(self) -> None:
        """
        Cloning a gist POSTs to git-upload-pack like any repository.
        """
        response, body = self.get(
            "/https://gist.github.com/u/abc123.git/git-upload-pack",
            method="POST",
            data=b"0032want abc\n0000",
            headers={"Content-Type": "application/x-git-upload-pack-request"},
        )
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body, b"PACK0032want abc\n0000")

    def test_push_refused(self) -> None:
        response, _ = self.get("/https://github.com/o/r/info/refs?service=git-receive-pack")
        self.assertEqual(response.code, 403)

    def test_script_rewritten(self) -> None:
        response, body = self.get("/https://raw.githubusercontent.com/o/r/main/install.sh?token=1")
        self.assertEqual(response.code, 200)
        self.assertIn(b"http://proxy.test/https://github.com/o/r/releases/download/v1/tool.tar.gz", body)
        self.assertIn(b'"http://proxy.test/https://raw.githubusercontent.com/o/r/main/other.sh"', body)
        self.assertIn(b"echo https://example.com/keep", body)
        self.assertEqual(response.length, len(body))
        self.assertIsNone(response.headers.getRawHeaders("etag"))

    def test_script_origin_from_public_url(self) -> None:
        self.h = Harness(self.upstream, '[server]\npublicUrl = "https://mirror.example"\n')
        _, body = self.get("/https://raw.githubusercontent.com/o/r/main/install.sh", headers={"X-Forwarded-Host": "evil.example"})
        self.assertIn(b"https://mirror.example/https://github.com/o/r/", body)
        self.assertNotIn(b"evil.example", body)

    def test_script_rewrite_off(self) -> None:
        self.h = Harness(self.upstream, "[github]\nrewriteScripts = false\n")
        _, body = self.get("/https://raw.githubusercontent.com/o/r/main/install.sh")
        self.assertEqual(body, SCRIPT)

    def test_html_not_proxied(self) -> None:
        response, body = self.get("/https://github.com/o/r/releases/download/v1/missing")
        self.assertEqual(response.code, 404)
        self.assertNotIn(b"<html>", body)

    def test_hf_cdn_redirect_followed_with_hub_metadata(self) -> None:
        """
        A Hub resolve redirect to the LFS CDN is followed by the proxy, and
        the Hub's metadata headers are carried onto the CDN's answer (the
        huggingface_hub client reads them from its HEAD); Xet headers are
        removed.
        """
        response, body = self.get("/https://huggingface.co/org/model/resolve/main/model.bin", method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual([s["host"] for s in self.upstream.seen], ["huggingface.co", "cdn-lfs.hf.co"])
        self.assertEqual(response.headers.getRawHeaders("x-repo-commit"), ["0123abcd"])
        self.assertEqual(response.headers.getRawHeaders("x-linked-size"), ["123456"])
        self.assertIsNone(response.headers.getRawHeaders("x-xet-hash"))
        link = " ".join(response.headers.getRawHeaders("link") or [])
        self.assertNotIn("xet", link)

    def test_hf_tree_json_without_xet(self) -> None:
        response, body = self.get("/https://huggingface.co/api/models/org/model/tree/main")
        self.assertEqual(response.code, 200)
        self.assertNotIn(b"xetHash", body)
        self.assertEqual(json.loads(body)[0]["path"], "model.bin")
