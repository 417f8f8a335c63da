"""
Tests for L{hubproxy.files.urls}.
"""

from __future__ import annotations

from hyperlink import URL
from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.files.urls import (
    KINDS,
    REDIRECT_HOSTS,
    RefusedURL,
    Target,
    is_proxyable_host,
    parse_target,
    proxied_url,
    rewrite_location,
)

# (request target, expected upstream URL, kind, owner, repo)
ACCEPTED: list[tuple[str, str, str, str | None, str | None]] = [
    # github.com releases and archives, all the prefix spellings
    ("/https://github.com/o/r/releases/download/v1/x.tar.gz",
     "https://github.com/o/r/releases/download/v1/x.tar.gz", "release", "o", "r"),
    ("/https:/github.com/o/r/releases/download/v1/x.tar.gz",
     "https://github.com/o/r/releases/download/v1/x.tar.gz", "release", "o", "r"),
    ("/http://github.com/o/r/releases/download/v1/x.tar.gz",
     "http://github.com/o/r/releases/download/v1/x.tar.gz", "release", "o", "r"),
    ("/http:/github.com/o/r/releases/download/v1/x.tar.gz",
     "http://github.com/o/r/releases/download/v1/x.tar.gz", "release", "o", "r"),
    ("/github.com/o/r/releases/download/v1/x.tar.gz",
     "https://github.com/o/r/releases/download/v1/x.tar.gz", "release", "o", "r"),
    ("//https://github.com/o/r/releases/latest/download/x.zip",
     "https://github.com/o/r/releases/latest/download/x.zip", "release", "o", "r"),
    ("/HTTPS://GitHub.COM./Owner/Repo/releases/download/v1/x",
     "https://github.com/Owner/Repo/releases/download/v1/x", "release", "owner", "repo"),
    ("/https://github.com:443/o/r/releases/download/v1/x",
     "https://github.com/o/r/releases/download/v1/x", "release", "o", "r"),
    ("/http://github.com:80/o/r/releases/download/v1/x",
     "http://github.com/o/r/releases/download/v1/x", "release", "o", "r"),
    ("/https://github.com/o/r/archive/refs/heads/main.zip",
     "https://github.com/o/r/archive/refs/heads/main.zip", "archive", "o", "r"),
    ("/https://github.com/o/r/archive/v1.0.tar.gz",
     "https://github.com/o/r/archive/v1.0.tar.gz", "archive", "o", "r"),
    ("/https://github.com/o/.github/archive/v1.0.tar.gz",
     "https://github.com/o/.github/archive/v1.0.tar.gz", "archive", "o", ".github"),
    # blob -> raw, only the first
    ("/https://github.com/o/r/blob/main/install.sh",
     "https://github.com/o/r/raw/main/install.sh", "raw", "o", "r"),
    ("/https://github.com/o/r/blob/main/blob/x",
     "https://github.com/o/r/raw/main/blob/x", "raw", "o", "r"),
    ("/github.com/o/r/raw/main/a.sh?x=1",
     "https://github.com/o/r/raw/main/a.sh?x=1", "raw", "o", "r"),
    ("/https://github.com/o/r/raw/refs/heads/main/dir/a%2Fb.txt",
     "https://github.com/o/r/raw/refs/heads/main/dir/a%2Fb.txt", "raw", "o", "r"),
    # git smart HTTP
    ("/https://github.com/o/r.git/info/refs?service=git-upload-pack",
     "https://github.com/o/r.git/info/refs?service=git-upload-pack", "git", "o", "r"),
    ("/https://github.com/o/r/info/refs?service=git-upload-pack",
     "https://github.com/o/r/info/refs?service=git-upload-pack", "git", "o", "r"),
    ("/https://github.com/o/r.git/git-upload-pack",
     "https://github.com/o/r.git/git-upload-pack", "git", "o", "r"),
    ("/https://github.com/o/r/git-upload-pack",
     "https://github.com/o/r/git-upload-pack", "git", "o", "r"),
    ("/https://github.com/o/r.git/info/lfs/objects/batch",
     "https://github.com/o/r.git/info/lfs/objects/batch", "git", "o", "r"),
    # raw hosts
    ("/https://raw.githubusercontent.com/o/r/main/install.sh",
     "https://raw.githubusercontent.com/o/r/main/install.sh", "raw", "o", "r"),
    ("/raw.githubusercontent.com/o/r/refs/heads/main/a/b/c.ps1",
     "https://raw.githubusercontent.com/o/r/refs/heads/main/a/b/c.ps1", "raw", "o", "r"),
    ("/https://raw.github.com/o/r/main/x",
     "https://raw.github.com/o/r/main/x", "raw", "o", "r"),
    ("/https://media.githubusercontent.com/media/o/r/main/big.bin",
     "https://media.githubusercontent.com/media/o/r/main/big.bin", "raw", "o", "r"),
    # gists
    ("/https://gist.githubusercontent.com/u/abc123/raw/f.sh",
     "https://gist.githubusercontent.com/u/abc123/raw/f.sh", "gist", "u", "abc123"),
    ("/https://gist.github.com/u/abc123",
     "https://gist.github.com/u/abc123", "gist", "u", "abc123"),
    ("/https://gist.github.com/u/abc123.git/info/refs?service=git-upload-pack",
     "https://gist.github.com/u/abc123.git/info/refs?service=git-upload-pack",
     "git", "u", "abc123"),
    ("/https://gist.github.com/u/abc123.git/git-upload-pack",
     "https://gist.github.com/u/abc123.git/git-upload-pack", "git", "u", "abc123"),
    ("/https://gist.github.com/abc123.git/info/refs?service=git-upload-pack",
     "https://gist.github.com/abc123.git/info/refs?service=git-upload-pack", "git", None, "abc123"),
    # api.github.com
    ("/https://api.github.com/repos/o/r/releases/latest",
     "https://api.github.com/repos/o/r/releases/latest", "api", "o", "r"),
    ("/https://api.github.com/repos/o/r",
     "https://api.github.com/repos/o/r", "api", "o", "r"),
    ("/https://api.github.com/repos/o/r/releases?per_page=100&page=2",
     "https://api.github.com/repos/o/r/releases?per_page=100&page=2", "api", "o", "r"),
    ("/https://api.github.com/users/someone",
     "https://api.github.com/users/someone", "api", "someone", None),
    ("/https://api.github.com/users/someone/repos?type=owner",
     "https://api.github.com/users/someone/repos?type=owner", "api", "someone", None),
    ("/https://api.github.com/orgs/acme/repos",
     "https://api.github.com/orgs/acme/repos", "api", "acme", None),
    ("/https://api.github.com/gists/abc123",
     "https://api.github.com/gists/abc123", "api", None, "abc123"),
    # codeload and release CDNs
    ("/https://codeload.github.com/o/r/tar.gz/refs/heads/main",
     "https://codeload.github.com/o/r/tar.gz/refs/heads/main", "codeload", "o", "r"),
    ("/https://objects.githubusercontent.com/github-production-release-asset-2e65be/1/x?X-Amz-Signature=a%2Fb",
     "https://objects.githubusercontent.com/github-production-release-asset-2e65be/1/x?X-Amz-Signature=a%2Fb",
     "release", None, None),
    ("/https://release-assets.githubusercontent.com/github-production-release-asset/1/u?sp=r&sv=2018",
     "https://release-assets.githubusercontent.com/github-production-release-asset/1/u?sp=r&sv=2018",
     "release", None, None),
    ("/https://github-releases.githubusercontent.com/1/u",
     "https://github-releases.githubusercontent.com/1/u", "release", None, None),
    # Hugging Face
    ("/https://huggingface.co/openai-community/gpt2/resolve/main/config.json",
     "https://huggingface.co/openai-community/gpt2/resolve/main/config.json",
     "hf", "openai-community", "gpt2"),
    ("/huggingface.co/gpt2/resolve/main/config.json",
     "https://huggingface.co/gpt2/resolve/main/config.json", "hf", None, "gpt2"),
    ("/https://huggingface.co/datasets/org/set/resolve/main/data/train.parquet",
     "https://huggingface.co/datasets/org/set/resolve/main/data/train.parquet",
     "hf", "org", "set"),
    ("/https://huggingface.co/spaces/org/app/resolve/main/app.py",
     "https://huggingface.co/spaces/org/app/resolve/main/app.py", "hf", "org", "app"),
    ("/https://hf.co/org/m/resolve/abc/sub%2Fdir.bin?download=true",
     "https://hf.co/org/m/resolve/abc/sub%2Fdir.bin?download=true", "hf", "org", "m"),
    ("/https://huggingface.co/api/models/org/m",
     "https://huggingface.co/api/models/org/m", "hf", "org", "m"),
    ("/https://huggingface.co/api/models/org/m/tree/main?recursive=true&expand=false",
     "https://huggingface.co/api/models/org/m/tree/main?recursive=true&expand=false",
     "hf", "org", "m"),
    ("/https://huggingface.co/api/models/gpt2/revision/main",
     "https://huggingface.co/api/models/gpt2/revision/main", "hf", None, "gpt2"),
    ("/https://huggingface.co/api/datasets/org/set/paths-info/main",
     "https://huggingface.co/api/datasets/org/set/paths-info/main", "hf", "org", "set"),
    ("/https://huggingface.co/api/models?search=bert&limit=5",
     "https://huggingface.co/api/models?search=bert&limit=5", "hf", None, None),
    ("/https://huggingface.co/api/resolve-cache/models/org/m/0123abc/config.json",
     "https://huggingface.co/api/resolve-cache/models/org/m/0123abc/config.json",
     "hf", "org", "m"),
    ("/https://huggingface.co/org/m.git/info/refs?service=git-upload-pack",
     "https://huggingface.co/org/m.git/info/refs?service=git-upload-pack", "hf", "org", "m"),
    ("/https://huggingface.co/org/m/git-upload-pack",
     "https://huggingface.co/org/m/git-upload-pack", "hf", "org", "m"),
    ("/https://cdn-lfs.hf.co/repos/aa/bb/cc?Expires=1&Signature=x%2By",
     "https://cdn-lfs.hf.co/repos/aa/bb/cc?Expires=1&Signature=x%2By", "hf-cdn", None, None),
    ("/https://cdn-lfs-us-1.hf.co/repos/aa/bb", "https://cdn-lfs-us-1.hf.co/repos/aa/bb",
     "hf-cdn", None, None),
    ("/https://cas-bridge.xethub.hf.co/xet-bridge-us/abc/def?X-Amz-Algorithm=x",
     "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc/def?X-Amz-Algorithm=x",
     "hf-cdn", None, None),
    # assets
    ("/https://github.githubassets.com/assets/app.js",
     "https://github.githubassets.com/assets/app.js", "assets", None, None),
    ("/https://opengraph.githubassets.com/1/o/r",
     "https://opengraph.githubassets.com/1/o/r", "assets", None, None),
    ("/https://avatars.githubusercontent.com/u/1?v=4",
     "https://avatars.githubusercontent.com/u/1?v=4", "assets", None, None),
    # non-ASCII bytes are percent-encoded
    ("/https://github.com/o/r/raw/main/\u6587.sh",
     "https://github.com/o/r/raw/main/%E6%96%87.sh", "raw", "o", "r"),
]

# (request target, a word the reason must contain)
REFUSED: list[tuple[str | bytes, str]] = [
    ("/https://github.com/o/r", "Repository pages"),
    ("/https://github.com/o", "Repository pages"),
    ("/https://github.com/o/r/", "not a download"),
    ("/https://github.com/o/r/issues/1", "not a download"),
    ("/https://github.com/o/r/releases", "not a download"),
    ("/https://github.com/o/r/releases/", "not a download"),
    ("/https://github.com/o/r/blob/main", "not a download"),
    ("/https://github.com/o/r/raw/main/", "not a download"),
    ("/https://github.com/o/r.git", "Repository pages"),
    ("/https://github.com/someone.keys", "Repository pages"),
    ("/https://github.com/o/r/info/refs", "git-upload-pack"),
    ("/https://github.com/o/r/info/refs?service=git-receive-pack", "Pushing"),
    ("/https://github.com/o/r.git/git-receive-pack", "Pushing"),
    ("/https://huggingface.co/o/m.git/git-receive-pack", "Pushing"),
    ("/https://github.com//r/releases/download/v1/x", "owner name is empty"),
    ("/https://github.com/o//releases/download/v1/x", "repository name is empty"),
    ("/https://github.com/b%61duser/r/releases/download/v1/x", "may only contain"),
    ("/https://github.com/o/r/raw/main/../../x", "'.' or '..'"),
    ("/https://github.com/o/r/raw/main/%2e%2E/x", "'.' or '..'"),
    ("/https://github.com/o/r/raw/./main/x", "'.' or '..'"),
    ("/../https://github.com/o/r/raw/main/x", "'.' or '..'"),
    ("/https://github.com/o/r/raw/main\\x/y", "backslash"),
    ("/https://github.com/o/r/raw/main%5cx/y", "backslash"),
    ("/https://user:pw@github.com/o/r/raw/main/x", "user name"),
    ("/https://github.com:8443/o/r/raw/main/x", "default port"),
    ("/http://github.com:443/o/r/raw/main/x", "default port"),
    ("/https://github.com:/o/r/raw/main/x", "valid host"),
    ("/ftp://github.com/o/r/raw/main/x", "http and https"),
    ("/file:///etc/passwd", "http and https"),
    ("/javascript:alert(1)", "valid host"),
    ("/https://example.com/x", "not proxied"),
    ("/https://github.com.evil.com/o/r/raw/main/x", "not proxied"),
    ("/https://github.io/x", "not proxied"),
    ("/https://o.github.io/r/x.sh", "not proxied"),
    ("/https://sourceforge.net/projects/x/files/y", "not proxied"),
    ("/https://127.0.0.1/o/r/raw/main/x", "not proxied"),
    ("/https://[::1]/x", "not proxied"),
    ("//evil.com/x", "not proxied"),
    ("/", "No URL"),
    ("/https://", "No URL"),
    ("", "start with '/'"),
    ("https://github.com/o/r/raw/main/x", "start with '/'"),
    ("*", "start with '/'"),
    ("/https://github.com/o/r/raw/main/a b", "spaces"),
    ("/https://github.com/o/r/raw/main/x#frag", "fragments"),
    ("/https://github.com/o/r/raw/main/x%zz", "percent-escape"),
    ("/https://github.com/o/r/raw/main/x%", "percent-escape"),
    ("/https://raw.githubusercontent.com/o/r/main", "owner/repo/ref/path"),
    ("/https://raw.githubusercontent.com/o/r/main/", "owner/repo/ref/path"),
    ("/https://gist.github.com/u", "gist id"),
    ("/https://api.github.com/", "api.github.com"),
    ("/https://api.github.com/repos/o", "api.github.com"),
    ("/https://api.github.com/user", "api.github.com"),
    ("/https://api.github.com/search/repositories?q=x", "api.github.com"),
    ("/https://api.github.com/orgs/acme/members", "api.github.com"),
    ("/https://api.github.com/repositories/123/releases", "api.github.com"),
    ("/https://huggingface.co/org/m", "resolve"),
    ("/https://huggingface.co/org/m/blob/main/x", "resolve"),
    ("/https://huggingface.co/org/m/tree/main", "resolve"),
    ("/https://huggingface.co/org/m/resolve/main", "resolve"),
    ("/https://huggingface.co/api/whoami-v2", "/api/models"),
    ("/https://huggingface.co/api/models/org/m/commit/main", "'commit'"),
    ("/https://huggingface.co/api/models/org/m/preupload/main", "'preupload'"),
    ("/https://huggingface.co/api/models/org/m/xet-read-token/main", "'xet-read-token'"),
    ("/https://cdn-lfs.hf.co/", "file path"),
    ("/https://codeload.github.com/o/r", "codeload"),
    ("/https://media.githubusercontent.com/o/r/main/x", "/media/"),
    (b"/https://github.com/o/r/raw/main/\x00x", "control"),
]


class ParseTargetTableTests(SynchronousTestCase):
    """
    Table-driven accept and refuse cases for L{parse_target}.
    """

    def test_tablesAreLarge(self) -> None:
        """
        The tables cover at least fifty cases together.
        """
        self.assertGreaterEqual(len(ACCEPTED) + len(REFUSED), 50)

    def test_accepted(self) -> None:
        """
        Every accepted shape gives the expected URL, kind, owner and repo.
        """
        for raw, url, kind, owner, repo in ACCEPTED:
            for given_ in (raw, raw.encode("utf-8")):
                target = parse_target(given_)
                self.assertEqual(
                    (target.text(), target.kind, target.owner, target.repo),
                    (url, kind, owner, repo),
                    raw,
                )
                self.assertIn(target.kind, KINDS)

    def test_refused(self) -> None:
        """
        Every refused target raises L{RefusedURL} with an explanatory reason.
        """
        for raw, word in REFUSED:
            exc = self.assertRaises(RefusedURL, parse_target, raw)
            self.assertIn(word, exc.reason, raw)
            self.assertEqual(str(exc), exc.reason)

    def test_genericReasonNamesWhatIsAllowed(self) -> None:
        """
        An unknown host is refused with a sentence listing what is accepted.
        """
        exc = self.assertRaises(RefusedURL, parse_target, "/https://example.com/x")
        self.assertIn("raw.githubusercontent.com", exc.reason)
        self.assertIn("huggingface.co", exc.reason)


class ParseTargetDetailTests(SynchronousTestCase):
    """
    Specific guarantees of L{parse_target}.
    """

    def test_queryPreserved(self) -> None:
        """
        The query string is carried onto the target byte for byte.
        """
        query = "a=b=c&&x&y=&=z&a+b=%20%2F;k&X-Amz-Signature=ab%2Fcd%3D"
        target = parse_target("/https://github.com/o/r/releases/download/v1/x?" + query)
        self.assertEqual(
            target.text(),
            "https://github.com/o/r/releases/download/v1/x?" + query,
        )

    def test_encodedSlashPreserved(self) -> None:
        """
        C{%2F} inside a segment is neither decoded nor split.
        """
        target = parse_target("/https://github.com/o/r/raw/feature%2Fx/a%2Fb")
        self.assertEqual(target.url.path, ("o", "r", "raw", "feature%2Fx", "a%2Fb"))
        self.assertIn("feature%2Fx/a%2Fb", target.text())

    def test_httpKept(self) -> None:
        """
        C{/http://} (mangled into a 403 by the Go version) keeps http.
        """
        target = parse_target("/http://raw.githubusercontent.com/o/r/main/x")
        self.assertEqual(target.url.scheme, "http")

    def test_collapsedScheme(self) -> None:
        """
        C{/https:/host} left by a slash-merging proxy means C{https://host}.
        """
        self.assertEqual(
            parse_target("/https:/raw.githubusercontent.com/o/r/main/x").text(),
            "https://raw.githubusercontent.com/o/r/main/x",
        )

    def test_ownerRepoLowerCasedAndGitStripped(self) -> None:
        """
        Access lists get the canonical lower-case name without C{.git}.
        """
        target = parse_target("/https://github.com/BadUser/Malicious-Repo.git/git-upload-pack")
        self.assertEqual((target.owner, target.repo), ("baduser", "malicious-repo"))

    def test_targetIsFrozen(self) -> None:
        """
        L{Target} is immutable and compares by value.
        """
        target = parse_target("/github.com/o/r/raw/main/x")
        self.assertEqual(target, parse_target("/https://github.com/o/r/raw/main/x"))
        self.assertRaises(AttributeError, setattr, target, "kind", "api")
        self.assertIsInstance(target, Target)
        self.assertIsInstance(target.url, URL)

    def test_textIsAscii(self) -> None:
        """
        The text handed to the HTTP client is ASCII even for UTF-8 input.
        """
        target = parse_target("/https://huggingface.co/o/m/resolve/main/d\u00e9j\u00e0.txt")
        target.text().encode("ascii")


_SEGMENT = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"]) | st.sampled_from("-_~+=@!$'()*,;:"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
_NAME = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(
    lambda s: s not in (".", "..") and not s.endswith(".git")
)


class ParseTargetPropertyTests(SynchronousTestCase):
    """
    Property tests for L{parse_target}.
    """

    @given(
        owner=_NAME,
        repo=_NAME,
        path=st.lists(_SEGMENT | st.just("a%2Fb"), min_size=1, max_size=6),
    )
    def test_releasePathRoundTrips(self, owner: str, repo: str, path: list[str]) -> None:
        """
        Safe owner, repo and path segments come back exactly.
        """
        tail = "/".join(path)
        target = parse_target(
            "/https://github.com/" + owner + "/" + repo + "/releases/download/" + tail
        )
        self.assertEqual(
            target.text(),
            "https://github.com/" + owner + "/" + repo + "/releases/download/" + tail,
        )
        self.assertEqual((target.owner, target.repo), (owner.lower(), repo.lower()))

    @given(st.text(max_size=120))
    def test_onlyRefusedURLEscapes(self, text: str) -> None:
        """
        Arbitrary text either parses or raises L{RefusedURL}, nothing else.
        """
        for raw in (text, "/" + text, "/https://github.com/" + text,
                    "/https://huggingface.co/" + text, "/https:/api.github.com/" + text):
            try:
                target = parse_target(raw)
            except RefusedURL as e:
                self.assertIsInstance(e.reason, str)
            else:
                self.assertIn(target.kind, KINDS)
                target.text().encode("ascii")

    @given(st.binary(max_size=80))
    def test_onlyRefusedURLEscapesBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes either parse or raise L{RefusedURL}.
        """
        for raw in (data, b"/https://raw.githubusercontent.com/o/r/" + data):
            try:
                parse_target(raw)
            except RefusedURL:
                pass

    @given(st.text(max_size=60))
    def test_acceptedIsStable(self, text: str) -> None:
        """
        Parsing the text of an accepted target gives the same target:
        normalisation is idempotent.
        """
        try:
            target = parse_target("/https://github.com/o/r/raw/" + text)
        except RefusedURL:
            return
        again = parse_target("/" + target.text())
        self.assertEqual(again.text(), target.text())


class HostTests(SynchronousTestCase):
    """
    L{is_proxyable_host} and L{REDIRECT_HOSTS}.
    """

    def test_proxyable(self) -> None:
        """
        Accepted hosts are proxyable, case- and trailing-dot-insensitively.
        """
        for host in ("github.com", "HuggingFace.co", "cdn-lfs.hf.co.",
                     "objects.githubusercontent.com", "codeload.github.com"):
            self.assertTrue(is_proxyable_host(host), host)
        for host in ("example.com", "github.io", "evilgithub.com", ""):
            self.assertFalse(is_proxyable_host(host), host)

    def test_redirectHosts(self) -> None:
        """
        The usual redirect destinations are listed.
        """
        for host in ("codeload.github.com", "objects.githubusercontent.com",
                     "release-assets.githubusercontent.com",
                     "raw.githubusercontent.com", "cas-bridge.xethub.hf.co"):
            self.assertIn(host, REDIRECT_HOSTS)


class RewriteLocationTests(SynchronousTestCase):
    """
    L{proxied_url} and L{rewrite_location}.
    """

    origin = "https://proxy.example"

    def test_proxiedUrl(self) -> None:
        """
        The prefix form is the origin, one slash, and the URL.
        """
        self.assertEqual(
            proxied_url("https://github.com/o/r/raw/main/x", "https://proxy.example/"),
            "https://proxy.example/https://github.com/o/r/raw/main/x",
        )

    def test_relativeHubRedirect(self) -> None:
        """
        A relative Location is resolved against the upstream URL, not the
        proxy's, so the client stays on the prefix form.
        """
        self.assertEqual(
            rewrite_location(
                "/api/resolve-cache/models/o/m/abc/config.json",
                "https://huggingface.co/o/m/resolve/main/config.json",
                self.origin,
            ),
            "https://proxy.example/https://huggingface.co/api/resolve-cache/models/o/m/abc/config.json",
        )

    def test_absoluteCdnRedirect(self) -> None:
        """
        An absolute Location on a proxyable host keeps its signed query.
        """
        location = "https://cdn-lfs.hf.co/repos/a/b/c?Expires=1&Signature=x%2By%3D&Key-Pair-Id=K"
        self.assertEqual(
            rewrite_location(location, "https://huggingface.co/o/m/resolve/main/x", self.origin),
            self.origin + "/" + location,
        )

    def test_githubRenamedRepo(self) -> None:
        """
        A redirect to another accepted GitHub URL is proxied (and will be
        access-checked under its new name).
        """
        self.assertEqual(
            rewrite_location(
                "https://github.com/new/name/releases/download/v1/x",
                "https://github.com/old/name/releases/download/v1/x",
                self.origin,
            ),
            self.origin + "/https://github.com/new/name/releases/download/v1/x",
        )

    def test_relativeDotSegmentsResolved(self) -> None:
        """
        Relative references with dot segments are resolved before checking.
        """
        self.assertEqual(
            rewrite_location("../v2/x", "https://github.com/o/r/releases/download/v1/x",
                             self.origin),
            self.origin + "/https://github.com/o/r/releases/download/v2/x",
        )

    def test_notProxied(self) -> None:
        """
        Other hosts, non-download GitHub pages, other schemes, ports and
        garbage give L{None}: the caller follows them server-side.
        """
        base = "https://github.com/o/r/releases/download/v1/x"
        for location in (
            "https://evil.example/x",
            "https://github.com/login?return_to=x",
            "ftp://github.com/o/r/raw/main/x",
            "https://github.com:8443/o/r/raw/main/x",
            "https://u@github.com/o/r/raw/main/x",
            "http://[::1",
        ):
            self.assertIsNone(rewrite_location(location, base, self.origin), location)

    def test_fragmentDropped(self) -> None:
        """
        A fragment in a Location is not part of the request.
        """
        self.assertEqual(
            rewrite_location("https://raw.githubusercontent.com/o/r/main/x#L1",
                             "https://github.com/o/r/raw/main/x", self.origin),
            self.origin + "/https://raw.githubusercontent.com/o/r/main/x",
        )
