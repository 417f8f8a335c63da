"""
The GitHub / git / Hugging Face file proxy against real servers and real
clients, on loopback.

Why: unit tests (L{hubproxy.test.test_fileproxy}) prove the URL rules and
header handling against fakes; only real programs prove that what hubproxy
relays is what C{git} (smart HTTP, protocol v2, shallow and partial clones),
C{curl}/C{wget} (redirects, ranges, resume) and the real C{huggingface_hub}
client accept, and only a real nginx + git-http-backend proves we speak the
upstream side (chunked pack streams, 302s to signed CDN URLs) correctly.

Layout (fixtures started once per class, L{fixtures.SharedFixtures}):

  - a GitHub look-alike (L{fixtures.PublicNameGitServer}) whose redirects
    name the public hosts (C{objects.githubusercontent.com},
    C{codeload.github.com}, C{raw.githubusercontent.com}); hubproxy's
    C{[upstreams]} routes those names to the fixture's ports, so no
    C{allowNetworks} is needed and redirects to unconfigured loopback or
    private addresses must be refused;
  - a Hugging Face look-alike (L{fixtures.PublicNameHFServer}) whose LFS
    redirects name C{cdn-lfs.hf.co};
  - hubproxy itself (C{twistd -n hubproxy --config ...}, a subprocess, as
    users run it), in a few configurations: the main one, a strict one
    (small C{fileSize}, no trusted proxies), one with C{publicUrl}.

Every client is run with a timeout and without environment proxies.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.integration import fixtures as F
from hubproxy.test.integration.procs import ClassScope, clean_env, HubproxyProcess

# Environment variables that would change what the proxy subprocess does.
#: C{[server] fileSize} of the strict proxy: above the 64 KiB raw blob and
#: the ~66 KiB (chunked) pack of a full clone, below nothing else we fetch
#: from it.
SMALL_LIMIT = 40000

PUBLIC_URL = "https://mirror.example.org"


def start_proxy(work, upstreams, server="", extra=""):
    """
    Start one hubproxy on 127.0.0.1 with C{[upstreams]} and the given
    extra C{[server]} lines and sections; it lives until the class ends.
    """
    lines = "\n".join('"%s" = "%s"' % kv for kv in sorted(upstreams.items()))
    toml = """
[server]
host = "127.0.0.1"
shutdownGrace = 1
{server}

[rateLimit]
requestLimit = 100000

[upstreams]
{lines}

[network]
connectTimeout = 5
responseTimeout = 30
idleTimeout = 30
{extra}
""".format(server=server, lines=lines, extra=extra)
    env = clean_env()
    proxy = HubproxyProcess(ClassScope(work), toml, env=env)
    proxy.start(timeout=60)
    return proxy


def curl(*args, timeout=60):
    """curl without environment proxies, bounded; never raises on failure."""
    return F.run(["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)] + [str(a) for a in args],
                 check=False, timeout=timeout + 15)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


class GitHubFileTests(F.SharedFixtures, SynchronousTestCase):
    """
    git, curl and wget through hubproxy to the GitHub look-alike.
    """

    @classmethod
    def setUpFixtures(cls, work):
        F.require("nginx", "fcgiwrap", "git", "git-http-backend", "curl")
        cls.gh = F.PublicNameGitServer(work)
        cls.proxy = start_proxy(work, cls.gh.upstreams())
        # Strict: tiny file limit, nobody may set X-Forwarded-*, and the
        # release CDN is not configured (its loopback address is "outside").
        cls.strict = start_proxy(
            work, {"github.com": cls.gh.url, "raw.githubusercontent.com": cls.gh.raw_url},
            server="fileSize = %d" % SMALL_LIMIT, extra="\n[security]\ntrustedProxies = []\n")
        cls.public = start_proxy(
            work, {"github.com": cls.gh.url, "raw.githubusercontent.com": cls.gh.raw_url},
            server='publicUrl = "%s"' % PUBLIC_URL)

    # -- helpers -----------------------------------------------------------

    def diag(self, proxy=None, extra=""):
        """What one needs to read when an assertion fails."""
        proxy = proxy or self.proxy
        return "%s\n--- hubproxy log (tail) %s ---\n%s" % (extra, proxy.log_path, proxy.log()[-4000:])

    def url(self, path, proxy=None):
        """C{http://127.0.0.1:P/https://github.com/owner/repo/PATH}-style URLs."""
        return "%s/%s" % ((proxy or self.proxy).url, path)

    def gh_url(self, rest, host="github.com", proxy=None):
        return self.url("https://%s/%s/%s/%s" % (host, self.gh.owner, self.gh.repo, rest), proxy)

    def clone(self, *args, url=None, config=()):
        """Clone through the proxy with packet tracing; check v2 and HEAD."""
        dest = os.path.join(self.work.sub("clones"), "c%d" % time.monotonic_ns())
        argv = []
        for c in config:
            argv += ["-c", c]
        url = url or self.url("https://github.com/%s/%s.git" % (self.gh.owner, self.gh.repo))
        p = F.git(*(argv + ["clone", "-q"] + list(args) + [url, dest]),
                  env={"GIT_TRACE_PACKET": "1", "GIT_TERMINAL_PROMPT": "0"}, timeout=90, check=False)
        self.assertEqual(p.returncode, 0, self.diag(extra=p.stderr[-3000:]))
        self.assertIn("version 2", p.stderr, "protocol v2 was used")
        head = F.git("rev-parse", "HEAD", cwd=dest).stdout.strip()
        self.assertEqual(head, self.gh.head)
        return dest

    def cdn_requests(self, needle):
        return [r for r in self.gh.requests() if r["port"] == self.gh.cdn_port and needle in r["uri"]]

    # -- git -----------------------------------------------------------------

    def test_clone_full(self):
        """A full clone, with and without C{.git}: every file, every tag,
        byte for byte (scripts inside a pack are never rewritten)."""
        for suffix in (".git", ""):
            url = self.url("https://github.com/%s/%s%s" % (self.gh.owner, self.gh.repo, suffix))
            dest = self.clone(url=url)
            for name, data in self.gh.files.items():
                with open(os.path.join(dest, name), "rb") as f:
                    self.assertEqual(f.read(), data, name)
            self.assertIn("v1", F.git("tag", cwd=dest).stdout.split())
            self.assertEqual(F.git("rev-list", "--count", "HEAD", cwd=dest).stdout.strip(), "3")
            # a later fetch goes through the proxy again
            F.git("fetch", "-q", "origin", cwd=dest, timeout=60)

    def test_clone_shallow(self):
        dest = self.clone("--depth", "1")
        self.assertEqual(F.git("rev-list", "--count", "HEAD", cwd=dest).stdout.strip(), "1")
        self.assertEqual(F.git("rev-parse", "--is-shallow-repository", cwd=dest).stdout.strip(), "true")

    def test_clone_partial(self):
        """C{--filter=blob:none}: no blobs at first, then fetched lazily
        (another upload-pack POST through the proxy) on checkout."""
        dest = self.clone("--filter=blob:none", "--no-checkout")
        missing = F.git("rev-list", "--objects", "--all", "--missing=print", cwd=dest).stdout
        self.assertIn("?", missing, "blobs were filtered out")
        p = F.git("checkout", "-q", "main", cwd=dest, check=False, timeout=60)
        self.assertEqual(p.returncode, 0, self.diag(extra=p.stderr))
        with open(os.path.join(dest, "data", "blob.bin"), "rb") as f:
            self.assertEqual(f.read(), self.gh.files["data/blob.bin"])

    def test_clone_gist(self):
        """
        A gist clone with the URL GitHub shows (C{gist.github.com/<user>/
        <id>.git}): discovery, then the upload-pack POST, through the
        proxy.  The id-only clone URL names no owner, so with an access
        list set it is refused (git fails, the proxy says why).
        """
        proxy = start_proxy(self.work, {"gist.github.com": self.gh.url})
        dest = self.clone(url=self.url("https://gist.github.com/%s/%s.git" % (self.gh.owner, self.gh.repo), proxy))
        for name, data in self.gh.files.items():
            with open(os.path.join(dest, name), "rb") as f:
                self.assertEqual(f.read(), data, name)
        self.assertRegex(proxy.log(), r'"POST /https://gist\.github\.com/owner/repo\.git/git-upload-pack HTTP/1\.1" 200')
        listed = start_proxy(self.work, {"gist.github.com": self.gh.url}, extra='\n[access]\nblackList = ["evil"]\n')
        p = F.git("clone", "-q", self.url("https://gist.github.com/%s.git" % self.gh.repo, listed),
                  os.path.join(self.work.sub("clones"), "refused"),
                  env={"GIT_TERMINAL_PROMPT": "0"}, timeout=60, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("403", p.stderr)
        self.assertRegex(listed.log(), r'"GET /https://gist\.github\.com/repo\.git/info/refs\?service=git-upload-pack HTTP/1\.1" 403')

    def test_clone_insteadof(self):
        """The README's usage: C{url.<proxy>/https://github.com/.insteadOf}."""
        rule = "url.%s/https://github.com/.insteadOf=https://github.com/" % self.proxy.url
        dest = self.clone(url="https://github.com/%s/%s.git" % (self.gh.owner, self.gh.repo), config=[rule])
        self.assertEqual(F.git("config", "remote.origin.url", cwd=dest).stdout.strip(),
                         "https://github.com/owner/repo.git")
        log = self.proxy.log()
        self.assertIn("/https://github.com/owner/repo.git/info/refs", log)
        self.assertIn("/https://github.com/owner/repo.git/git-upload-pack", log)

    # -- releases ------------------------------------------------------------

    def test_release_asset(self):
        """curl -L sees no redirect: the proxy followed the 302 to the
        signed CDN URL itself, and the CDN served the proxy."""
        asset = self.gh.assets["tool.tar.gz"]
        dest = self.work.join("tool-%d.tar.gz" % time.monotonic_ns())
        ua = "release-probe/%d" % time.monotonic_ns()
        p = curl("-fL", "-A", ua, "-o", dest, "-w", "%{http_code} %{num_redirects} %{remote_port}",
                 self.gh_url("releases/download/v1/tool.tar.gz"))
        self.assertEqual(p.returncode, 0, self.diag(extra=p.stderr))
        self.assertEqual(p.stdout.split(), ["200", "0", str(self.proxy.port)])
        self.assertEqual(F.sha256_file(dest), "sha256:" + asset["sha256"])
        # The CDN got exactly one signed request carrying the client's
        # User-Agent; curl made no request but the one to the proxy, so it
        # came from the proxy.
        hits = [r for r in self.cdn_requests("/v1/tool.tar.gz") if r["user_agent"] == ua]
        self.assertEqual(len(hits), 1, hits)
        self.assertIn("sig=fixture-signature", hits[0]["uri"])
        self.assertEqual((hits[0]["status"], hits[0]["bytes"]), (200, asset["size"]))
        self.assertTrue(hits[0]["peer"].startswith("127.0.0.1:"))
        # github.com answered the proxy's request with the 302
        self.assertTrue(any(r["port"] == self.gh.port and r["user_agent"] == ua and r["status"] == 302
                            for r in self.gh.requests()))

    def test_release_range(self):
        """C{curl -r}: 206 with the right bytes and Content-Range."""
        with open(self.gh.assets["tool.tar.gz"]["path"], "rb") as f:
            data = f.read()
        for rng, start, end in (("0-99", 0, 99), ("1000-1099", 1000, 1099),
                                ("%d-" % (len(data) - 10), len(data) - 10, len(data) - 1)):
            dest = self.work.join("range-%d" % time.monotonic_ns())
            headers = dest + ".h"
            p = curl("-r", rng, "-D", headers, "-o", dest, "-w", "%{http_code}",
                     self.gh_url("releases/download/v1/tool.tar.gz"))
            self.assertEqual((p.returncode, p.stdout), (0, "206"), self.diag(extra=p.stderr))
            with open(dest, "rb") as f:
                self.assertEqual(f.read(), data[start:end + 1], rng)
            with open(headers, newline="") as f:
                h = f.read().lower()
            self.assertIn("content-range: bytes %d-%d/%d\r\n" % (start, end, len(data)), h)
            self.assertIn("content-length: %d\r\n" % (end - start + 1), h)

    def test_release_resume_wget(self):
        """C{wget -c} resumes a partial download through the proxy."""
        F.require("wget")
        asset = self.gh.assets["tool.tar.gz"]
        with open(asset["path"], "rb") as f:
            data = f.read()
        d = self.work.sub("wget-%d" % time.monotonic_ns())
        dest = os.path.join(d, "tool.tar.gz")
        with open(dest, "wb") as f:
            f.write(data[:12345])
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
        p = F.run(["wget", "-q", "-c", "--no-proxy", "--tries=1", "--timeout=30", "-O", dest,
                   self.gh_url("releases/download/v1/tool.tar.gz")], check=False, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, self.diag(extra=p.stderr))
        self.assertEqual(F.sha256_file(dest), "sha256:" + asset["sha256"])
        self.assertTrue(any(r["range"] == "bytes=12345-" and r["status"] == 206
                            for r in self.cdn_requests("/v1/tool.tar.gz")),
                        "the CDN saw the resumed range request")

    def test_release_checksums(self):
        """A second asset of the release, as the fixture lists it."""
        status, _, body = F.http_request(self.gh_url("releases/download/v1/checksums.txt"))
        self.assertEqual(status, 200, self.diag())
        self.assertEqual(sha256_hex(body), self.gh.assets["checksums.txt"]["sha256"])
        self.assertIn(self.gh.assets["tool.tar.gz"]["sha256"], body.decode())

    def test_no_empty_content_encoding(self):
        """Relayed responses carry the upstream's Content-Encoding, or none:
        never an empty one that the upstream did not send."""
        for url in (self.gh_url("releases/download/v1/tool.tar.gz"),
                    self.url("https://raw.githubusercontent.com/owner/repo/main/data/blob.bin")):
            p = curl("-D", "-", "-o", os.devnull, url)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.startswith("HTTP/1.1 200"), p.stdout)
            encodings = [line for line in p.stdout.split("\r\n") if line.lower().startswith("content-encoding:")]
            self.assertEqual(encodings, [], url)

    # -- archives ------------------------------------------------------------

    def test_archive(self):
        """archive/refs/heads/main.tar.gz (302 to codeload, followed):
        the exact tarball, which tarfile opens; the zip of a tag too."""
        dest = self.work.join("main-%d.tar.gz" % time.monotonic_ns())
        p = curl("-fL", "-o", dest, "-w", "%{num_redirects}", self.gh_url("archive/refs/heads/main.tar.gz"))
        self.assertEqual((p.returncode, p.stdout), (0, "0"), self.diag(extra=p.stderr))
        self.assertEqual(F.sha256_file(dest), "sha256:" + self.gh.archives["main.tar.gz"]["sha256"])
        with tarfile.open(dest, mode="r:gz") as tf:
            names = tf.getnames()
            self.assertIn("repo-main/install.sh", names)
            self.assertIn("repo-main/data/blob.bin", names)
            self.assertEqual(tf.extractfile("repo-main/data/blob.bin").read(), self.gh.files["data/blob.bin"])
        status, _, body = F.http_request(self.gh_url("archive/refs/tags/v1.zip"))
        self.assertEqual(status, 200, self.diag())
        self.assertEqual(sha256_hex(body), self.gh.archives["v1.zip"]["sha256"])
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            self.assertIn("repo-v1/install.sh", z.namelist())
        self.assertTrue(any(r["port"] == self.gh.codeload_port and r["uri"] == "/owner/repo/tar.gz/refs/heads/main"
                            and r["status"] == 200 for r in self.gh.requests()))

    # -- raw files and scripts -----------------------------------------------

    def test_raw_byte_exact(self):
        blob = self.gh.files["data/blob.bin"]
        for url in (self.url("https://raw.githubusercontent.com/owner/repo/main/data/blob.bin"),
                    self.url("https://raw.githubusercontent.com/owner/repo/%s/data/blob.bin" % self.gh.head),
                    self.gh_url("blob/main/data/blob.bin"),   # blob -> raw -> 302 to raw host
                    self.gh_url("raw/main/data/blob.bin")):
            status, headers, body = F.http_request(url)
            self.assertEqual(status, 200, self.diag(extra=url))
            self.assertEqual(body, blob, url)
            self.assertEqual(headers["Content-Length"], str(len(blob)))
        status, _, body = F.http_request(self.url("https://raw.githubusercontent.com/owner/repo/main/README.md"))
        self.assertEqual((status, body), (200, self.gh.files["README.md"]))

    def expected_script(self, origin, name="install.sh"):
        text = self.gh.files[name].decode()
        for host in ("https://github.com/", "https://raw.githubusercontent.com/"):
            text = text.replace(host, origin + "/" + host)
        return text.encode()

    def test_install_script_rewritten(self):
        """install.sh: every GitHub URL now starts with the proxy origin;
        the same from github.com/.../raw/... and blob/... URLs."""
        origin = self.proxy.url
        expected = self.expected_script(origin)
        self.assertIn(b"curl -fsSL %s/https://github.com/owner/repo/releases/download/v1/tool.tar.gz"
                      % origin.encode(), expected)
        self.assertIn(b"%s/https://raw.githubusercontent.com/owner/repo/main/other.sh" % origin.encode(), expected)
        self.assertIn(b"git clone %s/https://github.com/owner/repo.git" % origin.encode(), expected)
        for url in (self.url("https://raw.githubusercontent.com/owner/repo/main/install.sh"),
                    self.gh_url("raw/main/install.sh"),
                    self.gh_url("blob/main/install.sh")):
            status, headers, body = F.http_request(url)
            self.assertEqual(status, 200, self.diag(extra=url))
            self.assertEqual(body, expected, url)
            self.assertEqual(headers["Content-Length"], str(len(expected)))
        # A script without GitHub URLs is served as it is.
        status, _, body = F.http_request(self.url("https://raw.githubusercontent.com/owner/repo/main/other.sh"))
        self.assertEqual((status, body), (200, self.gh.files["other.sh"]))

    def test_rewritten_script_urls_work(self):
        """The URLs in the rewritten script are usable as they are: the
        release download and the raw script come through the proxy."""
        _, _, body = F.http_request(self.url("https://raw.githubusercontent.com/owner/repo/main/install.sh"))
        urls = re.findall(r"(%s/https://\S+)" % re.escape(self.proxy.url), body.decode())
        self.assertEqual(len(urls), 3, urls)
        status, _, data = F.http_request(urls[0])
        self.assertEqual((status, sha256_hex(data)), (200, self.gh.assets["tool.tar.gz"]["sha256"]))
        status, _, data = F.http_request(urls[1])
        self.assertEqual((status, data), (200, self.gh.files["other.sh"]))

    def test_forwarded_host_from_trusted_proxy(self):
        """Loopback is a trusted proxy by default: its X-Forwarded-Proto
        and X-Forwarded-Host name the origin of rewritten scripts."""
        status, _, body = F.http_request(
            self.url("https://raw.githubusercontent.com/owner/repo/main/install.sh"),
            headers={"X-Forwarded-Host": "mirror.example", "X-Forwarded-Proto": "https"})
        self.assertEqual(status, 200, self.diag())
        self.assertEqual(body, self.expected_script("https://mirror.example"))

    def test_forwarded_host_ignored_when_untrusted(self):
        """With C{trustedProxies = []}, X-Forwarded-Host from the client is
        ignored: the script points at the Host the client used."""
        status, _, body = F.http_request(
            self.url("https://raw.githubusercontent.com/owner/repo/main/install.sh", self.strict),
            headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
        self.assertEqual(status, 200, self.diag(self.strict))
        self.assertNotIn(b"evil.example", body)
        self.assertEqual(body, self.expected_script(self.strict.url))

    def test_public_url_wins(self):
        """C{[server] publicUrl} beats forwarding headers, even from a
        trusted proxy."""
        status, _, body = F.http_request(
            self.url("https://raw.githubusercontent.com/owner/repo/main/install.sh", self.public),
            headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"})
        self.assertEqual(status, 200, self.diag(self.public))
        self.assertEqual(body, self.expected_script(PUBLIC_URL))

    # -- refusals --------------------------------------------------------------

    def test_refused_urls(self):
        """Not GitHub, not a download, or a push: 403 with a plain-text
        reason, and nothing reaches the upstream."""
        before = len(self.gh.requests())
        for path in ("https://example.com/x",
                     "https://github.com/owner/repo",
                     "https://github.com/owner/repo.git/info/refs?service=git-receive-pack",
                     "https://github.com/owner/repo.git/git-receive-pack"):
            method = "POST" if path.endswith("receive-pack") else "GET"
            status, headers, body = F.http_request(self.url(path), method=method,
                                                   data=b"0000" if method == "POST" else None)
            self.assertEqual(status, 403, path)
            self.assertTrue(headers["Content-Type"].startswith("text/plain"), (path, headers["Content-Type"]))
            self.assertTrue(body.strip(), path)
        status, _, body = F.http_request(self.url("https://example.com/x"))
        self.assertIn(b"example.com", body)
        self.assertEqual(len(self.gh.requests()), before, "nothing reached the GitHub look-alike")
        # git itself reports the refusal and does not push
        p = F.git("push", self.url("https://github.com/owner/repo.git"), "HEAD:refs/heads/x",
                  cwd=self.gh.work, check=False, timeout=60)
        self.assertNotEqual(p.returncode, 0)

    def test_redirect_to_loopback_refused(self):
        """A 302 to a loopback address that the configuration does not name
        is refused with 502 before connecting: the CDN sees nothing (it
        would serve the signed URL)."""
        for proxy, tag in ((self.proxy, "localhost"), (self.strict, "loopback")):
            marker = "/owner/repo/v1/refusal-%s-%d" % (tag, time.monotonic_ns())
            name = marker.rsplit("/", 1)[1]
            status, headers, body = F.http_request(self.gh_url("releases/download/%s/%s" % (tag, name), proxy=proxy))
            self.assertEqual(status, 502, self.diag(proxy, "%s: %s" % (tag, body)))
            self.assertTrue(headers["Content-Type"].startswith("text/plain"), headers["Content-Type"])
            # nginx logs once it has sent the 302: give it a moment
            F.wait_until(lambda: any(r["port"] == self.gh.port and name in r["uri"] and r["status"] == 302
                                     for r in self.gh.requests()), 5, "github.com to log the 302")
            self.assertEqual(self.cdn_requests(name), [], tag)

    def test_redirect_to_private_refused(self):
        """302s to a private or link-local address: 502, quickly (no
        connection attempt to wait for)."""
        for tag in ("private", "linklocal"):
            t0 = time.monotonic()
            status, _, body = F.http_request(self.gh_url("releases/download/%s/tool.tar.gz" % tag))
            self.assertEqual(status, 502, self.diag(extra="%s: %s" % (tag, body)))
            self.assertLess(time.monotonic() - t0, 5, tag)

    def test_size_limit_with_length(self):
        """A response whose Content-Length exceeds C{fileSize}: 413 before
        any of it is sent; smaller files still pass."""
        url = self.url("https://raw.githubusercontent.com/owner/repo/main/data/blob.bin", self.strict)
        dest = self.work.join("big-%d" % time.monotonic_ns())
        p = curl("-o", dest, "-w", "%{http_code}", url)
        self.assertEqual((p.returncode, p.stdout), (0, "413"), self.diag(self.strict, p.stderr))
        with open(dest, "rb") as f:
            self.assertNotIn(self.gh.files["data/blob.bin"][:1000], f.read())
        p = curl("-f", "-o", dest, url)
        self.assertEqual(p.returncode, 22, "curl -f fails on 413")
        status, _, body = F.http_request(self.url(
            "https://raw.githubusercontent.com/owner/repo/main/README.md", self.strict))
        self.assertEqual((status, body), (200, self.gh.files["README.md"]))

    def _upload_pack_request(self):
        want = "want %s\n" % self.gh.head
        body = ("%04x%s" % (len(want) + 4, want) + "0000" + "0009done\n").encode()
        return self.work.write("upload-pack-%d.req" % time.monotonic_ns(), body)

    def test_size_limit_chunked(self):
        """A chunked response (a git pack: no Content-Length) that grows past
        C{fileSize} is cut off: the client sees a broken transfer (curl 18
        or 56) or a 413 if nothing was sent yet, never a short body that
        looks complete."""
        req = self._upload_pack_request()
        path = "https://github.com/owner/repo.git/git-upload-pack"
        args = ["-X", "POST", "--data-binary", "@" + req,
                "-H", "Content-Type: application/x-git-upload-pack-request"]
        # Without a limit: the whole pack, chunked, bigger than the limit.
        full, headers = self.work.join("pack-full"), self.work.join("pack-full.h")
        p = curl(*(args + ["-f", "-D", headers, "-o", full, self.url(path)]))
        self.assertEqual(p.returncode, 0, self.diag(extra=p.stderr))
        with open(full, "rb") as f:
            pack = f.read()
        with open(headers) as f:
            self.assertIn("transfer-encoding: chunked", f.read().lower())
        self.assertTrue(pack.startswith(b"0008NAK\n"), pack[:20])
        self.assertIn(b"PACK", pack[:20])
        self.assertGreater(len(pack), SMALL_LIMIT)
        # With the limit.
        cut = self.work.join("pack-cut")
        p = curl(*(args + ["-o", cut, "-w", "%{http_code}", self.url(path, self.strict)]))
        got = b""
        if os.path.exists(cut):  # curl creates it only once a body byte arrived
            with open(cut, "rb") as f:
                got = f.read()
        if p.returncode == 0:
            self.assertEqual(p.stdout, "413", "a complete-looking response must be the 413 page")
            self.assertFalse(got.startswith(b"0008NAK"))
        else:
            # how much arrived before the reset varies (often nothing)
            self.assertIn(p.returncode, (18, 56), self.diag(self.strict, p.stderr))
            self.assertLessEqual(len(got), SMALL_LIMIT)
            self.assertTrue(b"0008NAK\n".startswith(got[:8]), got[:20])
        # and git notices
        dest = os.path.join(self.work.sub("clones"), "cut-%d" % time.monotonic_ns())
        g = F.git("clone", "-q", self.url("https://github.com/owner/repo.git", self.strict), dest,
                  check=False, timeout=60)
        self.assertNotEqual(g.returncode, 0, g.stderr)


HF_CLIENT = r"""
import hashlib, json, os, socket, sys

# Record every address this process connects to: the proof that the client
# never talked to the Hub or the CDN directly.
CONNECTS = []
_connect = socket.socket.connect
def _recording_connect(self, address):
    CONNECTS.append(list(address[:2]) if isinstance(address, tuple) else str(address))
    return _connect(self, address)
socket.socket.connect = _recording_connect

from huggingface_hub import hf_hub_download, snapshot_download

def digest(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

out = {"files": {}}
mode = sys.argv[1]
if mode in ("files", "all"):
    for name in ("config.json", "model.safetensors"):
        out["files"][name] = digest(hf_hub_download("org/model", name))
if mode in ("snapshot", "all"):
    d = snapshot_download("org/model", cache_dir=os.path.join(os.environ["HF_HOME"], "snapshot-cache"))
    out["snapshot"] = {os.path.relpath(os.path.join(r, n), d).replace(os.sep, "/"): digest(os.path.join(r, n))
                       for r, _, ns in os.walk(d) for n in ns}
out["connects"] = CONNECTS
print(json.dumps(out))
"""


class _HFClientTests:
    """
    The real C{huggingface_hub} client with C{HF_ENDPOINT} on hubproxy.
    Subclasses start C{cls.hf} (an L{F.HFServer}) and C{cls.proxy}.
    """

    @classmethod
    def start(cls, work, hf, upstreams, extra=""):
        cls.hf = hf
        cls.proxy = start_proxy(work, upstreams, extra=extra)
        cls.endpoint = cls.proxy.url + "/https://huggingface.co"

    def diag(self, extra="", proxy=None):
        proxy = proxy or self.proxy
        return "%s\n--- hubproxy log (tail) %s ---\n%s" % (extra, proxy.log_path, proxy.log()[-6000:])

    def run_client(self, mode):
        env = self.hf.client_env(self.work.sub("hf-home-%d" % time.monotonic_ns()), endpoint=self.endpoint)
        mark = len(self.hf.requests())
        p = F.run([F.PYTHON, "-c", HF_CLIENT, mode], env=env, timeout=120, check=False)
        self.assertEqual(p.returncode, 0, self.diag(p.stderr[-4000:]))
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return out, self.hf.requests()[mark:]

    def check_only_proxy(self, out, log):
        """The client connected to the proxy only; the look-alike saw the
        requests (so they came from the proxy)."""
        self.assertTrue(out["connects"])
        self.assertEqual({tuple(c) if isinstance(c, list) else c for c in out["connects"]},
                         {("127.0.0.1", self.proxy.port)})
        self.assertTrue(log)
        # Every hub request is a client request the proxy logged with the
        # same method and path (the proxy log shows the prefixed form); the
        # CDN requests are the proxy following the Hub's redirects.
        proxy_log = self.proxy.log()
        for r in log:
            if r["server"] == "hub":
                self.assertIn('"%s /https://huggingface.co%s ' % (r["method"], r["path"]), proxy_log, r)
        self.assertNotIn("/repos/", "".join(line for line in proxy_log.splitlines() if '"HEAD /' in line
                                             or '"GET /' in line),
                         "no client request named a CDN URL")

    def test_hf_hub_download(self):
        """config.json (served by the Hub) and model.safetensors (302 to the
        LFS CDN, followed by the proxy with the Hub's metadata carried)."""
        repo = self.hf.repos["org/model"]
        out, log = self.run_client("files")
        for name, digest in out["files"].items():
            self.assertEqual(digest, repo["files"][name]["sha256"], name)
        self.check_only_proxy(out, log)
        lfs = repo["files"]["model.safetensors"]["sha256"]
        cdn = [r for r in log if r["server"] == "cdn"]
        self.assertTrue(any(r["method"] == "GET" and r["status"] == 200 and lfs in r["path"] and "sig=" in r["path"]
                            for r in cdn), cdn)
        self.assertTrue(all(r["status"] in (200, 206) for r in cdn), cdn)

    def test_hf_head_metadata(self):
        """What C{get_hf_file_metadata} reads, as the proxy answers it: the
        CDN's response with the Hub's X-Repo-Commit/X-Linked-* carried."""
        repo = self.hf.repos["org/model"]
        info = repo["files"]["model.safetensors"]
        status, h, _ = F.http_request(self.endpoint + "/org/model/resolve/main/model.safetensors", method="HEAD")
        self.assertEqual(status, 200, self.diag())
        self.assertEqual(h["X-Repo-Commit"], repo["sha"])
        self.assertEqual(h["X-Linked-Etag"], '"%s"' % info["sha256"])
        self.assertEqual(h["X-Linked-Size"], str(info["size"]))
        self.assertEqual(h["Content-Length"], str(info["size"]))
        status, h, body = F.http_request(self.endpoint + "/org/model/resolve/main/model.safetensors",
                                         headers={"Range": "bytes=0-99"})
        self.assertEqual(status, 206, self.diag())
        with open(info["path"], "rb") as f:
            self.assertEqual(body, f.read(100))
        status, h, body = F.http_request(self.endpoint + "/org/model/resolve/main/config.json")
        self.assertEqual(status, 200)
        self.assertEqual(h["X-Repo-Commit"], repo["sha"])
        self.assertEqual(sha256_hex(body), repo["files"]["config.json"]["sha256"])
        status, h, _ = F.http_request(self.endpoint + "/org/model/resolve/main/nope.bin", method="HEAD")
        self.assertEqual(status, 404)
        self.assertEqual(h["X-Error-Code"], "EntryNotFound")

    def test_snapshot_download(self):
        """snapshot_download: every file, sha256-checked, via the proxy."""
        repo = self.hf.repos["org/model"]
        out, log = self.run_client("snapshot")
        self.assertEqual(out["snapshot"], {n: f["sha256"] for n, f in repo["files"].items()})
        self.check_only_proxy(out, log)
        self.assertTrue(any(r["path"].startswith("/api/models/org/model/tree/" + repo["sha"]) for r in log))
        self.assertTrue(any(r["server"] == "cdn" and r["status"] == 200 for r in log), "LFS came from the CDN")

    def test_hf_refusals(self):
        """Write APIs, web pages and other hosts are not proxied."""
        for url in (self.proxy.url + "/https://huggingface.co/org/model",
                    self.proxy.url + "/https://huggingface.co/api/whoami-v2",
                    self.proxy.url + "/https://hf.example.com/org/model/resolve/main/config.json"):
            status, headers, _ = F.http_request(url)
            self.assertEqual(status, 403, url)
            self.assertTrue(headers["Content-Type"].startswith("text/plain"))


class HuggingFaceTests(F.SharedFixtures, _HFClientTests, SynchronousTestCase):
    """
    As on the real Hub: LFS files redirect to C{https://cdn-lfs.hf.co/...};
    C{[upstreams]} routes both C{huggingface.co} and C{cdn-lfs.hf.co} to
    the look-alike, no C{allowNetworks}.
    """

    @classmethod
    def setUpFixtures(cls, work):
        F.require_python("huggingface_hub")
        hf = F.PublicNameHFServer(work)
        cls.start(work, hf, hf.upstreams())


class HuggingFaceAllowNetworksTests(F.SharedFixtures, _HFClientTests, SynchronousTestCase):
    """
    The look-alike's LFS redirects name the CDN by its loopback address
    (C{http://127.0.0.1:PORT/...}): an address "from outside", followed
    only because C{allowNetworks} contains 127.0.0.0/8; without it the
    proxy refuses it (L{test_cdn_redirect_refused}).
    """

    @classmethod
    def setUpFixtures(cls, work):
        F.require_python("huggingface_hub")
        hf = F.HFServer(work)
        cls.start(work, hf, {"huggingface.co": hf.url}, extra='allowNetworks = ["127.0.0.0/8"]')
        cls.strict = start_proxy(work, {"huggingface.co": hf.url})

    def test_cdn_redirect_refused(self):
        """Without C{allowNetworks}, the Hub's redirect to a loopback CDN is
        refused (502) before connecting: the CDN sees nothing."""
        mark = len(self.hf.requests())
        url = self.strict.url + "/https://huggingface.co/org/model/resolve/main/model.safetensors"
        for method in ("HEAD", "GET"):
            status, _, body = F.http_request(url, method=method)
            self.assertEqual(status, 502, self.diag(body, self.strict))
        log = self.hf.requests()[mark:]
        self.assertEqual([r for r in log if r["server"] == "cdn"], [])
        self.assertEqual([(r["method"], r["status"]) for r in log], [("HEAD", 302), ("GET", 302)])
        # small files from the Hub itself still work
        status, _, body = F.http_request(self.strict.url + "/https://huggingface.co/org/model/resolve/main/config.json")
        self.assertEqual(status, 200)
        self.assertEqual(sha256_hex(body), self.hf.repos["org/model"]["files"]["config.json"]["sha256"])
