"""
Tests for L{hubproxy.files.scripts}.
"""

from __future__ import annotations

from hyperlink import URL
from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.files.scripts import (
    MAX_SCRIPT_SIZE,
    SCRIPT_HOSTS,
    is_script_path,
    proxy_origin,
    rewrite_script,
)

ORIGIN = "https://proxy.example"
P = ORIGIN.encode("ascii") + b"/"


class IsScriptPathTests(SynchronousTestCase):
    """
    L{is_script_path} looks at the last path segment only.
    """

    def test_scripts(self) -> None:
        """
        C{.sh} and C{.ps1}, any case, with or without a query.
        """
        for text in (
            "https://raw.githubusercontent.com/o/r/main/install.sh",
            "https://raw.githubusercontent.com/o/r/main/install.sh?token=abc",
            "https://github.com/o/r/raw/main/INSTALL.SH",
            "https://github.com/o/r/raw/main/setup.ps1?x=1&y=2",
            "https://github.com/o/r/raw/main/Setup.Ps1",
        ):
            self.assertTrue(is_script_path(URL.from_text(text)), text)

    def test_notScripts(self) -> None:
        """
        The query never makes a file a script; directories and other
        extensions are not scripts.
        """
        for text in (
            "https://github.com/o/r/raw/main/x.txt?a=.sh",
            "https://github.com/o/r/raw/main/x.txt?file=install.ps1",
            "https://github.com/o/r/raw/main/x.sh/",
            "https://github.com/o/r/raw/main/x.shx",
            "https://github.com/o/r/raw/main/x.bash",
            "https://github.com/o/r/raw/main.sh/readme.md",
            "https://github.com",
        ):
            self.assertFalse(is_script_path(URL.from_text(text)), text)

    def test_maxSize(self) -> None:
        """
        Scripts are buffered up to 10 MiB.
        """
        self.assertEqual(MAX_SCRIPT_SIZE, 10 * 1024 * 1024)


class RewriteScriptTests(SynchronousTestCase):
    """
    L{rewrite_script}, in the style of the Go tests.
    """

    def check(self, before: bytes, after: bytes) -> None:
        self.assertEqual(rewrite_script(before, ORIGIN), after)
        self.assertEqual(rewrite_script(after, ORIGIN), after)

    def test_curlPipe(self) -> None:
        """
        A URL at the start of an argument, piped to bash.
        """
        self.check(
            b"curl -fsSL https://raw.githubusercontent.com/o/r/main/i.sh|bash\n",
            b"curl -fsSL " + P + b"https://raw.githubusercontent.com/o/r/main/i.sh|bash\n",
        )

    def test_startOfBody(self) -> None:
        """
        A URL at the very start of the body.
        """
        self.check(
            b"https://github.com/o/r/releases/download/v1/x",
            P + b"https://github.com/o/r/releases/download/v1/x",
        )

    def test_quotesAndSeparators(self) -> None:
        """
        Quotes, parentheses, assignment and the other separators.
        """
        for sep in b" \t\n'\"(=,[{;|&<>":
            s = bytes((sep,))
            self.check(
                b"x" + s + b"https://github.com/o/r/raw/main/a",
                b"x" + s + P + b"https://github.com/o/r/raw/main/a",
            )

    def test_allHosts(self) -> None:
        """
        Every listed GitHub host is rewritten.
        """
        for host in SCRIPT_HOSTS:
            url = b"https://" + host.encode("ascii") + b"/o/r/x"
            self.check(b'URL="' + url + b'"', b'URL="' + P + url + b'"')

    def test_httpKept(self) -> None:
        """
        An http URL keeps http behind the proxy.
        """
        self.check(
            b"wget http://github.com/o/r/archive/v1.zip",
            b"wget " + P + b"http://github.com/o/r/archive/v1.zip",
        )

    def test_powershell(self) -> None:
        """
        PowerShell invocation.
        """
        self.check(
            b"iwr -useb 'https://raw.githubusercontent.com/o/r/main/i.ps1' | iex\r\n",
            b"iwr -useb '" + P + b"https://raw.githubusercontent.com/o/r/main/i.ps1' | iex\r\n",
        )

    def test_alreadyPrefixedUntouched(self) -> None:
        """
        URLs already behind this proxy (or any prefix proxy) are untouched.
        """
        for body in (
            b"curl " + P + b"https://github.com/o/r/raw/main/x",
            b"curl https://other-mirror.example/https://github.com/o/r/raw/main/x",
        ):
            self.assertEqual(rewrite_script(body, ORIGIN), body)

    def test_nonGitHubUntouched(self) -> None:
        """
        Other hosts, look-alike hosts and host-less mentions are untouched.
        """
        for body in (
            b"curl https://example.com/x.sh",
            b"curl https://github.com.evil.example/x",
            b"curl https://notgithub.com/x",
            b"echo github.com/o/r",
            b"curl https://github.com",
            b"xhttps://github.com/o/r",
            b"curl https://docs.github.com/en",
        ):
            self.assertEqual(rewrite_script(body, ORIGIN), body)

    def test_notUtf8(self) -> None:
        """
        Bytes that are not UTF-8 pass through untouched around a rewrite.
        """
        self.check(
            b"\xff\xfe echo \x80 https://github.com/o/r/raw/main/x \x81",
            b"\xff\xfe echo \x80 " + P + b"https://github.com/o/r/raw/main/x \x81",
        )

    def test_emptyOriginMeansNoRewrite(self) -> None:
        """
        Without a trustworthy origin the body is returned unchanged.
        """
        body = b"curl https://github.com/o/r/raw/main/x"
        self.assertEqual(rewrite_script(body, ""), body)

    def test_originTrailingSlash(self) -> None:
        """
        A trailing slash on the origin does not double the slash.
        """
        self.assertEqual(
            rewrite_script(b"https://github.com/o/r/raw/m/x", ORIGIN + "/"),
            P + b"https://github.com/o/r/raw/m/x",
        )

    @given(
        st.lists(
            st.sampled_from(
                [
                    b"https://github.com/o/r/raw/main/x",
                    b"http://raw.githubusercontent.com/o/r/m/y.sh",
                    b"https://api.github.com/repos/o/r",
                    P + b"https://github.com/a/b",
                    b" ", b"'", b'"', b"(", b")", b"=", b"|", b"\n", b"/",
                    b"curl -fsSL ", b"github.com", b"\xff", b"x",
                ]
            )
        ),
        st.sampled_from([ORIGIN, "http://127.0.0.1:5000", "https://p.example/mirror"]),
    )
    def test_idempotent(self, parts: list[bytes], origin: str) -> None:
        """
        Rewriting twice is the same as rewriting once.
        """
        body = b"".join(parts)
        once = rewrite_script(body, origin)
        self.assertEqual(rewrite_script(once, origin), once)

    @given(st.binary(max_size=200))
    def test_idempotentArbitrary(self, body: bytes) -> None:
        """
        Idempotent for arbitrary bytes, and non-GitHub bytes are untouched.
        """
        once = rewrite_script(body, ORIGIN)
        self.assertEqual(rewrite_script(once, ORIGIN), once)
        if b"://" not in body:
            self.assertEqual(once, body)

    @given(st.binary(max_size=100))
    def test_onlyInsertions(self, body: bytes) -> None:
        """
        Removing every inserted prefix gives back the input.
        """
        wrapped = b"x https://github.com/o/r/raw/m/f " + body
        once = rewrite_script(wrapped, ORIGIN)
        self.assertEqual(once.replace(P + b"http", b"http"), wrapped.replace(P + b"http", b"http"))


class ProxyOriginTests(SynchronousTestCase):
    """
    L{proxy_origin}: configured, trusted forwarded headers, request.
    """

    def test_publicUrlWins(self) -> None:
        """
        A configured public URL is used as is, whatever the headers say.
        """
        self.assertEqual(
            proxy_origin("https://mirror.example/", b"http", b"evil.example", True,
                         b"internal:5000", False),
            "https://mirror.example",
        )

    def test_trustedForwarded(self) -> None:
        """
        A trusted proxy's X-Forwarded-Proto and -Host are used (first value).
        """
        self.assertEqual(
            proxy_origin("", b"https, http", b"Mirror.Example, internal", True,
                         b"127.0.0.1:5000", False),
            "https://mirror.example",
        )

    def test_trustedPartial(self) -> None:
        """
        Either forwarded header may be missing: the request supplies the rest.
        """
        self.assertEqual(
            proxy_origin("", b"https", None, True, b"mirror.example", False),
            "https://mirror.example",
        )
        self.assertEqual(
            proxy_origin("", None, b"mirror.example:8443", True, b"x", True),
            "https://mirror.example:8443",
        )

    def test_untrustedSpoofIgnored(self) -> None:
        """
        Forwarded headers from an untrusted peer are ignored.
        """
        self.assertEqual(
            proxy_origin("", b"https", b"evil.example", False, b"mirror.example:5000", False),
            "http://mirror.example:5000",
        )

    def test_invalidForwardedIgnored(self) -> None:
        """
        Malformed forwarded values fall back to the request, even when trusted.
        """
        for proto, host in (
            (b"javascript", b"evil.example/path"),
            (b"ftp", b"user@evil.example"),
            (b"https x", b"evil.example bad"),
            (b"\xff", b"\xff"),
            (b"", b""),
            (None, b"evil.example:99999"),
            (None, b"evil.example:"),
            (None, b"[::1"),
            (None, b"a'b"),
        ):
            self.assertEqual(
                proxy_origin("", proto, host, True, b"mirror.example", False),
                "http://mirror.example",
                (proto, host),
            )

    def test_requestHost(self) -> None:
        """
        The Host header and the connection's TLS decide otherwise.
        """
        self.assertEqual(proxy_origin("", None, None, False, b"m.example", True), "https://m.example")
        self.assertEqual(proxy_origin("", None, None, False, b"10.0.0.1:5000", False),
                         "http://10.0.0.1:5000")
        self.assertEqual(proxy_origin("", None, None, False, b"[2001:db8::1]:5000", False),
                         "http://[2001:db8::1]:5000")

    def test_invalidHostMeansNoRewrite(self) -> None:
        """
        No usable host gives C{""}, which L{rewrite_script} treats as "leave
        the script alone" instead of inventing a host.
        """
        for host in (None, b"", b"evil.example/x", b"a b", b"x@y", b"[zz]", b"h:0", b"-.-"):
            self.assertEqual(proxy_origin("", None, None, False, host, False), "", host)
