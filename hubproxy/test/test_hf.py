"""
Tests for L{hubproxy.files.hf}.

Header and JSON shapes are modelled on real Hub responses (a C{HEAD} of a
Xet-backed C{resolve} URL, a tree listing, a model info document).
"""

from __future__ import annotations

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.files.hf import (
    HUB_METADATA_HEADERS,
    XET_HEADERS_PREFIX,
    carry_hub_metadata,
    follow_server_side,
    rewrite_links,
    strip_xet_headers,
    strip_xet_json,
)

XET_HASH = "3ed0e9fefe788ddd61d1e26eba67057e9740a064b009256fbafadf6bb95785ca"

# A HEAD of https://huggingface.co/org/m/resolve/main/model.safetensors
RESOLVE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"Content-Type", b"text/plain; charset=utf-8"),
    (b"Content-Length", b"1351"),
    (b"Location", b"https://cas-bridge.xethub.hf.co/xet-bridge-us/abc/def?X-Amz-Signature=x"),
    (b"X-Repo-Commit", b"607a30d783dfa663caf39e06633721c8d4cfcd7e"),
    (b"X-Linked-Etag", b'"248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"'),
    (b"X-Linked-Size", b"548105171"),
    (b"X-Xet-Hash", XET_HASH.encode("ascii")),
    (b"X-Xet-Refresh-Route", b"/api/models/org/m/xet-read-token/607a30d7"),
    (
        b"Link",
        b"<https://huggingface.co/api/models/org/m/xet-read-token/607a30d7>; "
        b'rel="xet-auth", <https://cas-server.xethub.hf.co/reconstruction/'
        + XET_HASH.encode("ascii")
        + b'>; rel="xet-reconstruction-info"',
    ),
    (b"ETag", b'W/"547-abc"'),
    (b"Vary", b"Origin, Accept"),
]


class StripXetHeadersTests(SynchronousTestCase):
    """
    L{strip_xet_headers}.
    """

    def test_resolveHead(self) -> None:
        """
        X-Xet-* and the xet Link relations go, everything else stays in order.
        """
        self.assertEqual(XET_HEADERS_PREFIX, b"x-xet-")
        self.assertEqual(
            strip_xet_headers(RESOLVE_HEADERS),
            [h for h in RESOLVE_HEADERS if h[0] not in (b"X-Xet-Hash", b"X-Xet-Refresh-Route", b"Link")],
        )

    def test_caseInsensitive(self) -> None:
        """
        Header names and rel values are matched case-insensitively.
        """
        self.assertEqual(
            strip_xet_headers([(b"x-xet-cas-url", b"u"), (b"X-XET-ACCESS-TOKEN", b"t"),
                               (b"LINK", b"<https://x>; REL=XET-AUTH"), (b"X-Xetish", b"kept")]),
            [(b"X-Xetish", b"kept")],
        )

    def test_otherLinksKept(self) -> None:
        """
        Pagination links survive; an untouched header stays byte-identical.
        """
        nxt = b'<https://huggingface.co/api/models?cursor=a%2Cb&limit=2>; rel="next"'
        self.assertEqual(strip_xet_headers([(b"Link", nxt)]), [(b"Link", nxt)])
        mixed = b'<https://huggingface.co/api/x/xet-read-token/1>; rel="xet-auth",' + nxt
        self.assertEqual(strip_xet_headers([(b"Link", mixed)]), [(b"Link", nxt)])

    def test_commasInsideLinks(self) -> None:
        """
        Commas inside the URL or a quoted parameter do not split entries.
        """
        value = (b'<https://h/a,b>; rel="next"; title="x, y", '
                 b'<https://h/t,1>; rel="xet-auth"')
        self.assertEqual(
            strip_xet_headers([(b"Link", value)]),
            [(b"Link", b'<https://h/a,b>; rel="next"; title="x, y"')],
        )

    def test_multipleRels(self) -> None:
        """
        An entry with a xet relation among others is dropped.
        """
        self.assertEqual(
            strip_xet_headers([(b"Link", b'<https://h/t>; rel="alternate xet-auth"')]), []
        )

    def test_clientSeesNoXet(self) -> None:
        """
        After stripping, the parser of the real client finds no Xet data
        (skipped when huggingface_hub is not installed).
        """
        try:
            import httpx2  # type: ignore[import-not-found]
            from huggingface_hub.utils._xet import parse_xet_file_data_from_response
        except ImportError:
            raise self.skipTest("huggingface_hub not installed")
        request = httpx2.Request("HEAD", "https://huggingface.co/org/m/resolve/main/x")

        def response(headers: list[tuple[bytes, bytes]]) -> object:
            return httpx2.Response(302, headers=headers, request=request)

        self.assertIsNotNone(parse_xet_file_data_from_response(response(RESOLVE_HEADERS)))
        self.assertIsNone(
            parse_xet_file_data_from_response(response(strip_xet_headers(RESOLVE_HEADERS)))
        )


class RewriteLinksTests(SynchronousTestCase):
    """
    L{rewrite_links}.
    """

    def test_nextPage(self) -> None:
        """
        An absolute Hub pagination link goes through the proxy.
        """
        value = (b'<https://huggingface.co/api/models/org/m/tree/main?recursive=true&cursor=ZXl%3D>;'
                 b' rel="next"')
        self.assertEqual(
            rewrite_links([(b"Link", value), (b"Other", b"x")],
                          "https://huggingface.co/api/models/org/m/tree/main",
                          "https://p.example"),
            [(b"Link", b"<https://p.example/https://huggingface.co/api/models/org/m/tree/main"
                       b'?recursive=true&cursor=ZXl%3D>; rel="next"'),
             (b"Other", b"x")],
        )

    def test_githubApiRelative(self) -> None:
        """
        Relative links resolve against the upstream URL; unproxyable ones
        (api.github.com/repositories/<id>) and foreign hosts stay as they are.
        """
        base = "https://api.github.com/repos/o/r/releases"
        value = (b'</repos/o/r/releases?page=2>; rel="next", '
                 b'<https://api.github.com/repositories/1/releases?page=9>; rel="last"')
        self.assertEqual(
            rewrite_links([(b"Link", value)], base, "https://p"),
            [(b"Link", b'<https://p/https://api.github.com/repos/o/r/releases?page=2>; rel="next", '
                       b'<https://api.github.com/repositories/1/releases?page=9>; rel="last"')],
        )
        untouched = b'<https://example.com/x>; rel="next"'
        self.assertEqual(rewrite_links([(b"Link", untouched)], base, "https://p"),
                         [(b"Link", untouched)])


class RedirectTests(SynchronousTestCase):
    """
    L{follow_server_side} and L{carry_hub_metadata}.
    """

    def test_hubToCdnFollowed(self) -> None:
        """
        Hub redirects to the CDN hosts are followed by the proxy.
        """
        base = "https://huggingface.co/org/m/resolve/main/model.safetensors"
        for location in (
            "https://cas-bridge.xethub.hf.co/xet-bridge-us/a/b?X-Amz-Signature=s",
            "https://cdn-lfs.hf.co/repos/aa/bb/cc?Expires=1",
            "https://cdn-lfs-us-1.hf.co/repos/aa/bb/cc",
        ):
            self.assertTrue(follow_server_side(base, location), location)

    def test_othersRewritten(self) -> None:
        """
        Hub-to-Hub redirects, GitHub redirects and garbage are not.
        """
        hub = "https://huggingface.co/org/m/resolve/main/config.json"
        self.assertFalse(follow_server_side(hub, "/api/resolve-cache/models/org/m/abc/config.json"))
        self.assertFalse(follow_server_side(hub, "https://huggingface.co/new/m/resolve/main/config.json"))
        self.assertFalse(follow_server_side(
            "https://github.com/o/r/releases/download/v1/x",
            "https://cdn-lfs.hf.co/repos/x"))
        self.assertFalse(follow_server_side(hub, "http://[::1"))

    def test_carry(self) -> None:
        """
        The Hub hop's commit and linked ETag/size replace or join the CDN's.
        """
        hub = RESOLVE_HEADERS
        cdn = [(b"Content-Length", b"548105171"), (b"ETag", b'"s3-etag"'),
               (b"X-Linked-Size", b"1"), (b"Accept-Ranges", b"bytes")]
        merged = carry_hub_metadata(hub, cdn)
        names = {n.lower(): v for n, v in merged}
        self.assertEqual(names[b"x-repo-commit"], b"607a30d783dfa663caf39e06633721c8d4cfcd7e")
        self.assertEqual(names[b"x-linked-size"], b"548105171")
        self.assertEqual(names[b"etag"], b'"s3-etag"')
        self.assertEqual(names[b"accept-ranges"], b"bytes")
        self.assertEqual(len(merged), 6)
        for header in HUB_METADATA_HEADERS:
            self.assertIn(header, names)


TREE = [
    {"type": "directory", "oid": "0d1d", "size": 0, "path": "onnx"},
    {"type": "file", "oid": "be4d21d9", "size": 665, "path": "config.json"},
    {
        "type": "file",
        "oid": "7c5d3f4b",
        "size": 548105171,
        "lfs": {"oid": "248dfc3911869ec4", "size": 548105171, "pointerSize": 135},
        "xetHash": XET_HASH,
        "path": "model.safetensors",
    },
]

MODEL_INFO = {
    "_id": "621ffdc036468d709f174338",
    "id": "openai-community/gpt2",
    "sha": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
    "xetEnabled": True,
    "cardData": {"language": "en", "tags": ["exbert"]},
    "siblings": [{"rfilename": "model.safetensors", "xetHash": XET_HASH}],
    "downloads": 12345678,
    "likes": 2.5e3,
}


class StripXetJsonTests(SynchronousTestCase):
    """
    L{strip_xet_json}.
    """

    def test_tree(self) -> None:
        """
        C{xetHash} is removed from tree entries; the rest is unchanged.
        """
        body = json.dumps(TREE, indent=1).encode()
        out = json.loads(strip_xet_json(body))
        self.assertNotIn(b"xet", strip_xet_json(body))
        expected = [dict(e) for e in TREE]
        del expected[2]["xetHash"]
        self.assertEqual(out, expected)

    def test_modelInfo(self) -> None:
        """
        Nested C{xetHash} keys go and C{xetEnabled} becomes false.
        """
        out = json.loads(strip_xet_json(json.dumps(MODEL_INFO, ensure_ascii=False).encode()))
        self.assertIs(out["xetEnabled"], False)
        self.assertEqual(out["siblings"], [{"rfilename": "model.safetensors"}])
        self.assertEqual(out["cardData"], MODEL_INFO["cardData"])
        self.assertEqual(out["likes"], 2500.0)

    def test_unchangedIsIdentical(self) -> None:
        """
        JSON without Xet markers, or already neutral, is returned as is.
        """
        for body in (
            b'[ {"path" : "a",   "size": 1.50} ]',
            b'{"xetEnabled": false, "id": "a"}',
            b'{"note": "mentions xetHash only in a value"}',
        ):
            self.assertIs(strip_xet_json(body), body)

    def test_notJson(self) -> None:
        """
        Non-JSON input (HTML error page, truncated JSON, binary) is unchanged.
        """
        for body in (b"<html>xetHash</html>", b'{"xetHash": "a"', b"\xff\xfexetHash", b""):
            self.assertIs(strip_xet_json(body), body)

    def test_unicodeKept(self) -> None:
        """
        Non-ASCII text survives re-serialisation as UTF-8.
        """
        body = json.dumps({"title": "d\u00e9j\u00e0 \u6587", "xetHash": "x"}, ensure_ascii=False).encode()
        self.assertEqual(strip_xet_json(body), '{"title":"d\u00e9j\u00e0 \u6587"}'.encode())

    def test_deepNesting(self) -> None:
        """
        Pathologically deep documents do not crash.
        """
        body = b'{"xetHash":1,"a":' + b"[" * 100000 + b"]" * 100000 + b"}"
        self.assertIs(strip_xet_json(body), body)

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda children: st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "xetHash", "xetEnabled", "path"]), children,
                              max_size=3),
            max_leaves=15,
        )
    )
    def test_property(self, document: object) -> None:
        """
        The result never has C{xetHash} keys or a true C{xetEnabled}, and
        stripping is idempotent.
        """
        once = strip_xet_json(json.dumps(document).encode())
        self.assertEqual(strip_xet_json(once), once)

        def walk(node: object) -> None:
            if isinstance(node, dict):
                self.assertNotIn("xetHash", node)
                if "xetEnabled" in node:
                    self.assertIs(node["xetEnabled"], False)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(json.loads(once))
