"""
Tests for the tools' routing and the web UI resources
(L{hubproxy.tools.resource}, L{hubproxy.tools.ui}).
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.helpers import Harness, Recorder
from hubproxy.tools.ui import WEB_DIR


class Upstream(Recorder):
    def render(self, request: Any) -> bytes:
        self.record(request)
        request.setResponseCode(404)
        return b"{}"


class UITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.up = Upstream()
        self.h = Harness(self.up)

    def test_pages(self) -> None:
        for path, page in (("/", "home"), ("/images", "images"), ("/search", "search")):
            response, body = self.h.request("GET", path, headers={"accept": "text/html"})
            self.assertEqual(response.code, 200, path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
            self.assertIn(f'data-page="{page}"'.encode(), body)
            csp = response.headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("script-src 'self'", csp)
        self.assertEqual(self.up.seen, [])

    def test_pages_reference_only_local_assets(self) -> None:
        """
        No CDN, no inline script: every src/href of the pages is local and
        exists.
        """
        for name in ("index.html", "images.html", "search.html"):
            with open(os.path.join(WEB_DIR, name)) as f:
                html = f.read()
            self.assertNotIn("<script>", html)
            self.assertNotIn("onclick", html)
            for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
                self.assertFalse(ref.startswith(("http:", "https:", "//")), ref)
                if ref.startswith("/assets/"):
                    response, _ = self.h.request("GET", ref)
                    self.assertEqual(response.code, 200, ref)

    def test_assets(self) -> None:
        expected = {"/assets/app.js": "text/javascript; charset=utf-8", "/assets/app.css": "text/css; charset=utf-8", "/assets/favicon.svg": "image/svg+xml", "/favicon.ico": "image/svg+xml"}
        for path, ctype in expected.items():
            response, body = self.h.request("GET", path)
            self.assertEqual(response.code, 200, path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), [ctype])
            self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])
            self.assertTrue(body)

    def test_asset_404s(self) -> None:
        for path in ("/assets/", "/assets/nope.js", "/assets/../site.py", "/assets/%2e%2e/resource.py", "/assets/a/b", "/images/x"):
            response, _ = self.h.request("GET", path)
            self.assertEqual(response.code, 404, path)
        self.assertEqual(self.up.seen, [])

    def test_unknown_api_is_json_404(self) -> None:
        response, body = self.h.request("GET", "/api/nothing")
        self.assertEqual(response.code, 404)
        self.assertIn(b'"error"', body)

    def test_method_not_allowed(self) -> None:
        response, _ = self.h.request("POST", "/download?images=x")
        self.assertEqual(response.code, 405)
        response, _ = self.h.request("DELETE", "/api/search?q=x")
        self.assertEqual(response.code, 405)
        for method, path in (("OPTIONS", "/"), ("POST", "/images"), ("PUT", "/assets/app.js")):
            response, _ = self.h.request(method, path)
            self.assertIn(response.code, (404, 405), (method, path))

    def test_token_admin_still_mounted(self) -> None:
        response, body = self.h.request("DELETE", "/api/cache/tokens")
        self.assertIn(response.code, (200, 403))
        self.assertIn(b"cleared" if response.code == 200 else b"error", body)


class FrontendOffTests(SynchronousTestCase):
    def test_pages_404_apis_stay(self) -> None:
        up = Upstream()
        h = Harness(up, "[server]\nenableFrontend = false\n")
        for path in ("/", "/images", "/assets/app.js", "/favicon.ico"):
            response, _ = h.request("GET", path, headers={"accept": "text/html"})
            self.assertEqual(response.code, 404, path)
        # /search stays an API, for browsers too
        response, body = h.request("GET", "/search", headers={"accept": "text/html"})
        self.assertEqual(response.code, 400)
        self.assertIn(b"QUERY_EMPTY", body)
        response, _ = h.request("GET", "/api/image/info")
        self.assertEqual(response.code, 400)
        self.assertEqual(up.seen, [])
