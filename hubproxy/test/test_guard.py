"""
Tests for the guard rails at the choke point (L{hubproxy.guard}): client
identity behind trusted proxies, rate limits with Retry-After, IP and
repository lists, metrics access and input limits, on every path.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from hubproxy.test.helpers import Harness, Recorder
from hubproxy.test.test_registry import CONFIG as REGISTRY_CONFIG, FakeRegistry


class Anything(Recorder):
    def render(self, request: Any) -> bytes:
        self.record(request)
        request.setHeader(b"content-type", b"application/octet-stream")
        return b"ok"


class GuardTests(SynchronousTestCase):
    def make(self, toml: str) -> Harness:
        self.upstream = FakeRegistry()
        return Harness(self.upstream, REGISTRY_CONFIG + toml)

    def get(self, h: Harness, path: str, client: str | None = None, method: str = "GET") -> tuple[Any, bytes]:
        headers = {"X-Forwarded-For": client} if client else {}
        return h.request(method, path, headers=headers)

    def test_rate_limit_with_retry_after(self) -> None:
        h = self.make("[rateLimit]\nrequestLimit = 3\nperiodHours = 1.0\n")
        for _ in range(3):
            self.assertEqual(self.get(h, "/v2/", "198.51.100.7")[0].code, 200)
        response, body = self.get(h, "/v2/", "198.51.100.7")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1200"])
        self.assertEqual(json.loads(body)["errors"][0]["code"], "TOOMANYREQUESTS")
        response, body = self.get(h, "/https://github.com/o/r/releases/download/v1/x", "198.51.100.7")
        self.assertEqual(response.code, 429)
        self.assertEqual(json.loads(body)["code"], "TOOMANYREQUESTS")
        # Another client is unaffected; time refills the bucket.
        self.assertEqual(self.get(h, "/v2/", "198.51.100.8")[0].code, 200)
        h.clock.advance(1200)
        self.assertEqual(self.get(h, "/v2/", "198.51.100.7")[0].code, 200)

    def test_ready_and_metrics_not_charged(self) -> None:
        h = self.make("[rateLimit]\nrequestLimit = 1\n")
        for _ in range(5):
            self.assertEqual(self.get(h, "/ready")[0].code, 200)
            self.assertEqual(self.get(h, "/metrics")[0].code, 200)
        self.assertEqual(self.get(h, "/v2/")[0].code, 200)
        self.assertEqual(self.get(h, "/v2/")[0].code, 429)

    def test_whitelist_never_limited(self) -> None:
        h = self.make('[rateLimit]\nrequestLimit = 1\n[security]\nwhiteList = ["198.51.100.0/24"]\n')
        for _ in range(5):
            self.assertEqual(self.get(h, "/v2/", "198.51.100.9")[0].code, 200)

    def test_whitelist_only_mode(self) -> None:
        h = self.make('[rateLimit]\nrequestLimit = 0\n[security]\nwhiteList = ["2001:db8::1"]\n')
        self.assertEqual(self.get(h, "/v2/", "2001:db8::1")[0].code, 200)
        self.assertEqual(self.get(h, "/v2/", "2001:db8::2")[0].code, 403)

    def test_blacklist_every_path(self) -> None:
        h = self.make('[security]\nblackList = ["203.0.113.0/24"]\n')
        for path in ("/ready", "/v2/", "/", "/metrics", "/https://github.com/o/r/releases/download/v1/x"):
            response, body = self.get(h, path, "203.0.113.50")
            self.assertEqual(response.code, 403, path)
        self.assertEqual(self.upstream.seen, [])
        self.assertEqual(self.get(h, "/ready", "198.51.100.1")[0].code, 200)

    def test_xff_ignored_from_untrusted_peer(self) -> None:
        h = self.make('[security]\ntrustedProxies = []\nblackList = ["203.0.113.50"]\n')
        # The peer (127.0.0.1) is not trusted: the header is not believed.
        self.assertEqual(self.get(h, "/ready", "203.0.113.50")[0].code, 200)

    def test_ipv6_clients_share_a_64(self) -> None:
        h = self.make("[rateLimit]\nrequestLimit = 2\n")
        self.assertEqual(self.get(h, "/v2/", "2001:db8:1:2::1")[0].code, 200)
        self.assertEqual(self.get(h, "/v2/", "2001:db8:1:2::ffff")[0].code, 200)
        self.assertEqual(self.get(h, "/v2/", "2001:db8:1:2:aaaa::1")[0].code, 429)
        self.assertEqual(self.get(h, "/v2/", "2001:db8:1:3::1")[0].code, 200)

    def test_metrics_only_for_local(self) -> None:
        h = self.make("")
        self.get(h, "/v2/hello/manifests/1")
        self.assertEqual(self.get(h, "/metrics", "198.51.100.1")[0].code, 403)
        response, body = self.get(h, "/metrics")
        self.assertEqual(response.code, 200)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        manifest_requests = [s for s in families["hubproxy_requests"].samples if s.labels.get("route") == "registry_manifest"]
        self.assertEqual([s.value for s in manifest_requests if s.name.endswith("_total")], [1.0])
        upstream = [s for s in families["hubproxy_upstream_requests"].samples if s.name.endswith("_total")]
        self.assertTrue(any(s.labels["status"] == "401" for s in upstream))
        self.assertTrue(any(s.labels["status"] == "200" for s in upstream))
        refusals = families.get("hubproxy_refusals")
        self.assertTrue(any(s.labels["reason"] == "metrics" for s in refusals.samples))
        h2 = self.make("[metrics]\npublic = true\n")
        self.assertEqual(self.get(h2, "/metrics", "198.51.100.1")[0].code, 200)

    def test_repository_lists(self) -> None:
        h = self.make('[access]\nblackList = ["library/hello", "baduser/*"]\n')
        response, body = self.get(h, "/v2/hello/manifests/1")
        self.assertEqual(response.code, 403)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "DENIED")
        response, body = self.get(h, "/https://github.com/baduser/tool/releases/download/v1/x")
        self.assertEqual(response.code, 403)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        self.assertEqual(self.upstream.seen, [])

    def test_owner_only_urls_checked(self) -> None:
        """
        API URLs naming only an owner, and owner-less Hugging Face names,
        are checked as a bare namespace.
        """
        h = self.make('[access]\nblackList = ["baduser/*", "gpt2"]\n')
        for path in ("/https://api.github.com/users/baduser", "/https://api.github.com/orgs/baduser/repos",
                     "/https://huggingface.co/gpt2/resolve/main/config.json"):
            response, body = self.get(h, path)
            self.assertEqual(response.code, 403, path)
            self.assertIn(b"blacklisted", body)
        h = self.make('[access]\nwhiteList = ["gooduser/tool"]\n')
        self.assertEqual(self.get(h, "/https://api.github.com/users/gooduser")[0].code, 403)
        self.assertEqual(self.upstream.seen, [])

    def test_gists_by_id_refused_while_lists_are_set(self) -> None:
        """
        Gist URLs that name no owner (the API by id, the id-only clone URL)
        cannot be checked against the lists: refused while any list is set,
        proxied when none is.
        """
        by_id = ("/https://api.github.com/gists/0123abcd",
                 "/https://gist.github.com/0123abcd.git/info/refs?service=git-upload-pack")
        for toml in ('[access]\nwhiteList = ["good/repo"]\n', '[access]\nblackList = ["evil"]\n'):
            h = self.make(toml)
            for path in by_id:
                response, body = self.get(h, path)
                self.assertEqual(response.code, 403, (toml, path))
                self.assertIn(b"owner cannot be checked", body)
            self.assertEqual(self.upstream.seen, [])
        h = self.make('[access]\nblackList = ["evil"]\n')
        self.assertEqual(self.get(h, "/https://gist.github.com/evil/0123abcd")[0].code, 403)
        h = self.make("")
        for path in by_id:
            self.assertNotEqual(self.get(h, path)[0].code, 403, path)

    def test_whitelist_of_repositories(self) -> None:
        h = self.make('[access]\nwhiteList = ["ghcr.io/owner/*"]\n')
        self.assertEqual(self.get(h, "/v2/ghcr.io/owner/app/manifests/1")[0].code, 200)
        self.assertEqual(self.get(h, "/v2/hello/manifests/1")[0].code, 403)

    def test_token_cache_admin(self) -> None:
        h = self.make("")
        self.get(h, "/v2/hello/manifests/1")
        response, body = self.get(h, "/api/cache/tokens", method="DELETE")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["cleared"], 1)
        self.assertEqual(self.get(h, "/api/cache/tokens", "198.51.100.1", method="DELETE")[0].code, 403)

    def test_long_uri(self) -> None:
        h = self.make("")
        self.assertEqual(self.get(h, "/v2/" + "a" * 9000)[0].code, 414)
        self.assertEqual(self.get(h, "/https://github.com/o/r/raw/main/x?" + "q" * 5000)[0].code, 400)

    def test_flood_of_addresses_bounded(self) -> None:
        """
        10,000 distinct client addresses (through a trusted proxy header)
        leave the limiter bounded by its cap and memory growth small.
        """
        h = self.make("")
        guard = h.app.extras["guard"]
        guard.limiter.max_entries = 2000
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(10_000):
                request = DummyRequest([b"v2", b""])
                request.uri = request.path = b"/v2/"
                request.requestHeaders.setRawHeaders(b"x-forwarded-for", [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}".encode()])
                request.client = None
                request.getClientAddress = lambda: type("A", (), {"host": "127.0.0.1"})()  # type: ignore[method-assign]
                self.assertIsNone(guard.check(request, b"v2"))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertLessEqual(len(guard.limiter), 2000)
        self.assertLess(grown, 4 * 1024 * 1024)
