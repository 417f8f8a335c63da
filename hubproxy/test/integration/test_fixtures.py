"""
Tests of the integration fixtures themselves, without hubproxy.

Why: when an integration test of hubproxy fails, we must be able to trust
that the upstream and the client it used work on their own.  Each class
here talks to one fixture directly, with the same real clients the hubproxy
tests use (skopeo, docker, ctr, podman, git, huggingface_hub, curl).  The
fixtures are shared per class (L{fixtures.SharedFixtures}) to keep the run
short on 2 cores.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
import zipfile

import jwt

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.integration import fixtures as F

STANDARD = ("library/hello:1", "library/multi:1", "oci/single:1", "team/app/web:2")


class TokenRegistryTests(F.SharedFixtures, SynchronousTestCase):
    """A Docker-Hub-like registry: token auth + blob redirects to a CDN."""

    @classmethod
    def setUpFixtures(cls, work):
        F.require("docker-registry", "skopeo", "nginx", "curl")
        cls.tokens = F.TokenServer(work, users={"admin": "admin"})
        cls.registry = F.Registry(work, token_server=cls.tokens, cdn=True)
        cls.images = F.seed_standard_images(cls.registry)

    def test_images_recorded(self):
        """The seeded images are described in a dict and a JSON file."""
        with open(os.path.join(self.registry.dir, "images.json")) as f:
            on_disk = json.load(f)
        self.assertEqual(on_disk, self.images)
        for name in STANDARD:
            self.assertIn(name, self.images)
        hello = self.images["library/hello:1"]
        self.assertEqual(hello["media_type"], F.MT_DOCKER_MANIFEST)
        self.assertEqual(len(hello["layers"]), 2)
        self.assertEqual(self.images["oci/single:1"]["media_type"], F.MT_OCI_MANIFEST)
        self.assertEqual(self.images["team/app/web:2"]["repository"], "team/app/web")
        multi = self.images["library/multi:1"]
        self.assertEqual(multi["media_type"], F.MT_OCI_INDEX)
        self.assertEqual(sorted(multi["platforms"]), ["linux/amd64", "linux/arm64/v8"])
        amd = [l["digest"] for l in multi["platforms"]["linux/amd64"]["layers"]]
        arm = [l["digest"] for l in multi["platforms"]["linux/arm64/v8"]["layers"]]
        self.assertEqual(amd[0], arm[0], "first layer is shared")
        self.assertNotEqual(amd[1], arm[1], "second layer is per arch")

    def test_skopeo_inspect_anonymous(self):
        """skopeo (anonymous, pull-only tokens) reads every seeded manifest;
        the token server counts what it issued."""
        before = self.tokens.issued()
        for name in STANDARD:
            raw = F.skopeo("inspect", "--raw", "--tls-verify=false",
                           "docker://%s/%s" % (self.registry.host, name)).stdout.encode()
            self.assertEqual(F.sha256_bytes(raw), self.images[name]["manifest_digest"], name)
        out = json.loads(F.skopeo("inspect", "--tls-verify=false",
                                  "docker://%s/library/hello:1" % self.registry.host).stdout)
        self.assertEqual(out["Digest"], self.images["library/hello:1"]["manifest_digest"])
        self.assertEqual(out["Layers"], [l["digest"] for l in self.images["library/hello:1"]["layers"]])
        self.assertGreater(self.tokens.issued(), before)
        reqs = self.tokens.stats()["requests"]
        self.assertTrue(any(r.get("user") is None and r.get("issued") for r in reqs))

    def test_skopeo_credentials(self):
        """Right credentials work, wrong ones are refused by the token server."""
        ref = "docker://%s/oci/single:1" % self.registry.host
        F.skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "admin:admin", ref)
        bad = F.skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "admin:wrong", ref,
                       check=False, timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertTrue(any(r.get("status") == 401 for r in self.tokens.stats()["requests"]))

    def test_registry_requires_token(self):
        status, headers, _ = F.http_request(self.registry.url + "/v2/")
        self.assertEqual(status, 401)
        scheme, params = F.parse_www_authenticate(headers["WWW-Authenticate"])
        self.assertEqual(scheme, "bearer")
        self.assertEqual(params["realm"], self.tokens.realm)
        self.assertEqual(params["service"], "registry.docker.io")

    def test_token_claims(self):
        """The JWT looks like Docker Hub's and verifies with the cert."""
        token = self.tokens.token("repository:library/hello:pull,push", "admin", "admin")
        header = jwt.get_unverified_header(token)
        self.assertEqual(header["alg"], "RS256")
        self.assertEqual(len(header["x5c"]), 1)
        from cryptography import x509
        with open(self.tokens.cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        claims = jwt.decode(token, cert.public_key(), algorithms=["RS256"], audience="registry.docker.io")
        for k in ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"):
            self.assertIn(k, claims)
        self.assertEqual(claims["access"], [{"type": "repository", "name": "library/hello",
                                             "actions": ["pull", "push"]}])
        anon = jwt.decode(self.tokens.token("repository:library/hello:pull,push"),
                          options={"verify_signature": False})
        self.assertEqual(anon["access"][0]["actions"], ["pull"], "anonymous gets pull only")

    def test_token_oauth_post(self):
        """containerd-style POST /token (OAuth2 password and refresh grants)."""
        before = self.tokens.issued()
        form = "grant_type=password&username=admin&password=admin&service=registry.docker.io" \
               "&scope=repository%3Alibrary%2Fhello%3Apull&client_id=test&access_type=offline"
        status, _, body = F.http_request(self.tokens.realm, method="POST", data=form.encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 200, body)
        data = json.loads(body)
        for k in ("token", "access_token", "expires_in", "issued_at", "refresh_token"):
            self.assertIn(k, data)
        form2 = "grant_type=refresh_token&refresh_token=%s&service=registry.docker.io" \
                "&scope=repository%%3Alibrary%%2Fhello%%3Apull" % data["refresh_token"]
        status, _, body = F.http_request(self.tokens.realm, method="POST", data=form2.encode())
        self.assertEqual(status, 200, body)
        status, _, _ = F.http_request(self.tokens.realm, method="POST",
                                      data=b"grant_type=password&username=admin&password=no")
        self.assertEqual(status, 401)
        self.assertEqual(self.tokens.issued(), before + 2)

    def test_blob_redirects_to_cdn(self):
        """Blob GETs answer 307 to the CDN, which serves the exact bytes."""
        layer = self.images["library/hello:1"]["layers"][0]
        status, headers, _ = self.registry.get("/v2/library/hello/blobs/" + layer["digest"])
        self.assertEqual(status, 307)
        loc = headers["Location"]
        hexd = layer["digest"].split(":")[1]
        self.assertEqual(loc, "%s/docker/registry/v2/blobs/sha256/%s/%s/data"
                         % (self.registry.cdn_url, hexd[:2], hexd))
        status, _, body = F.http_request(loc)
        self.assertEqual(status, 200)
        self.assertEqual(F.sha256_bytes(body), layer["digest"])
        self.assertEqual(len(body), layer["size"])
        # curl follows the redirect end to end, as a client would
        token = self.tokens.token("repository:library/hello:pull")
        dest = self.work.join("blob-via-curl")
        F.run(["curl", "-fsSL", "--noproxy", "*", "-o", dest, "-H", "Authorization: Bearer " + token,
               self.registry.url + "/v2/library/hello/blobs/" + layer["digest"]], timeout=30)
        self.assertEqual(F.sha256_file(dest), layer["digest"])
        self.assertTrue(any(r["uri"].endswith(hexd + "/data") and r["status"] == 200
                            for r in self.registry.cdn.requests()))
        # anything but blob data is not on the CDN
        status, _, _ = F.http_request(self.registry.cdn_url + "/docker/registry/v2/repositories/")
        self.assertEqual(status, 404)

    def test_layer_is_a_real_tar(self):
        """The layers unpack: /hello.txt has the known text."""
        layer = self.images["library/hello:1"]["layers"][0]
        with open(self.registry.blob_path(layer["digest"]), "rb") as f:
            data = f.read()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tf:
            self.assertEqual(tf.extractfile("hello.txt").read().decode(), self.images["layer_text"])


class PullThroughTests(F.SharedFixtures, SynchronousTestCase):
    """A CNCF pull-through cache (proxy.remoteurl) in front of the token
    registry, as a baseline for later benchmarks."""

    @classmethod
    def setUpFixtures(cls, work):
        F.require("docker-registry", "skopeo", "nginx")
        cls.tokens = F.TokenServer(work)
        cls.upstream = F.Registry(work, token_server=cls.tokens, cdn=True)
        cls.images = F.seed_standard_images(cls.upstream)
        cls.cache = F.Registry(work, remoteurl=cls.upstream.url,
                               remote_username="admin", remote_password="admin")

    def test_pull_through(self):
        for name in ("library/hello:1", "team/app/web:2"):
            raw = F.skopeo("inspect", "--raw", "--tls-verify=false",
                           "docker://%s/%s" % (self.cache.host, name)).stdout.encode()
            self.assertEqual(F.sha256_bytes(raw), self.images[name]["manifest_digest"])
        layer = self.images["library/hello:1"]["layers"][1]
        status, _, body = self.cache.get("/v2/library/hello/blobs/" + layer["digest"])
        self.assertEqual(status, 200)
        self.assertEqual(F.sha256_bytes(body), layer["digest"])
        self.assertTrue(any(r["status"] == 200 for r in self.upstream.cdn.requests()),
                        "the cache followed the upstream's CDN redirect")


class RequireTests(SynchronousTestCase):
    """Missing software fails in CI and skips elsewhere."""

    def test_missing_in_ci_fails(self):
        self.patch(os, "environ", dict(os.environ, CI="true"))
        self.assertRaises(AssertionError, F.require, "no-such-program-hubproxy")

    def test_missing_elsewhere_skips(self):
        from twisted.trial.unittest import SkipTest
        env = dict(os.environ)
        env.pop("CI", None)
        self.patch(os, "environ", env)
        e = self.assertRaises(SkipTest, F.require, "no-such-program-hubproxy", "microsocks")
        self.assertIn("apt-get install", str(e))
        self.assertIn("no-such-program-hubproxy", str(e))

    def test_present(self):
        F.require("git")


class GitServerTests(F.SharedFixtures, SynchronousTestCase):
    """The GitHub look-alike: smart HTTP, releases, archives, raw."""

    @classmethod
    def setUpFixtures(cls, work):
        F.require("nginx", "fcgiwrap", "git", "git-http-backend", "curl")
        cls.gh = F.GitServer(work)

    def _clone(self, *args, suffix=".git"):
        dest = os.path.join(self.work.sub("clones"), "c%d" % time.monotonic_ns())
        p = F.git("clone", "-q", *args, self.gh.clone_url(suffix), dest, env={"GIT_TRACE_PACKET": "1"})
        self.assertIn("version 2", p.stderr, "protocol v2 was used")
        head = F.git("rev-parse", "HEAD", cwd=dest).stdout.strip()
        self.assertEqual(head, self.gh.head)
        return dest

    def test_clone_full(self):
        for suffix in (".git", ""):
            dest = self._clone(suffix=suffix)
            with open(os.path.join(dest, "install.sh"), "rb") as f:
                self.assertEqual(f.read(), self.gh.files["install.sh"])
            self.assertIn("v1", F.git("tag", cwd=dest).stdout)

    def test_clone_shallow(self):
        dest = self._clone("--depth", "1", suffix="")
        self.assertEqual(F.git("rev-list", "--count", "HEAD", cwd=dest).stdout.strip(), "1")

    def test_clone_partial(self):
        dest = self._clone("--filter=blob:none", "--no-checkout")
        missing = F.git("rev-list", "--objects", "--all", "--missing=print", cwd=dest).stdout
        self.assertIn("?", missing, "blobs were filtered out")
        # lazily fetching them works too
        F.git("checkout", "-q", "main", cwd=dest)
        with open(os.path.join(dest, "data", "blob.bin"), "rb") as f:
            self.assertEqual(f.read(), self.gh.files["data/blob.bin"])

    def test_release_redirect_and_signed_cdn(self):
        asset = self.gh.assets["tool.tar.gz"]
        status, headers, _ = F.http_request(asset["url"])
        self.assertEqual(status, 302)
        loc = headers["Location"]
        self.assertTrue(loc.startswith(self.gh.cdn_url + "/github-production-release-asset/owner/repo/v1/tool.tar.gz?"))
        self.assertIn("sig=", loc)
        status, _, body = F.http_request(loc)
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), asset["sha256"])
        self.assertGreater(asset["size"], 100 * 1024)
        status, _, _ = F.http_request(loc.split("?")[0])
        self.assertEqual(status, 403, "CDN refuses unsigned requests")
        # curl -L follows it like a user would
        out = F.run(["curl", "-fsSL", "--noproxy", "*", "-o", self.work.join("tool.tar.gz"), asset["url"]])
        self.assertEqual(F.sha256_file(self.work.join("tool.tar.gz")), "sha256:" + asset["sha256"], out.stderr)

    def test_archive_redirect_to_codeload(self):
        for path, key, target in (
                ("archive/refs/heads/main.tar.gz", "main.tar.gz", "/owner/repo/tar.gz/refs/heads/main"),
                ("archive/main.tar.gz", "main.tar.gz", "/owner/repo/tar.gz/main"),
                ("archive/refs/tags/v1.zip", "v1.zip", "/owner/repo/zip/refs/tags/v1")):
            status, headers, _ = F.http_request("%s/owner/repo/%s" % (self.gh.url, path))
            self.assertEqual(status, 302, path)
            self.assertEqual(headers["Location"], self.gh.codeload_url + target)
            status, _, body = F.http_request(headers["Location"])
            self.assertEqual(status, 200, target)
            self.assertEqual(hashlib.sha256(body).hexdigest(), self.gh.archives[key]["sha256"])
        with open(self.gh.archives["main.tar.gz"]["path"], "rb") as f:
            with tarfile.open(fileobj=f, mode="r:gz") as tf:
                self.assertIn("repo-main/install.sh", tf.getnames())
        with zipfile.ZipFile(self.gh.archives["v1.zip"]["path"]) as z:
            self.assertIn("repo-v1/install.sh", z.namelist())

    def test_raw(self):
        status, _, body = F.http_request(self.gh.raw_url + "/owner/repo/main/install.sh")
        self.assertEqual(status, 200)
        text = body.decode()
        self.assertIn("https://github.com/owner/repo/releases/download/v1/tool.tar.gz", text)
        self.assertIn("https://raw.githubusercontent.com/owner/repo/main/other.sh", text)
        status, _, body = F.http_request(self.gh.raw_url + "/owner/repo/%s/data/blob.bin" % self.gh.head)
        self.assertEqual(body, self.gh.files["data/blob.bin"])
        status, headers, _ = F.http_request(self.gh.url + "/owner/repo/raw/main/other.sh")
        self.assertEqual((status, headers["Location"]), (302, self.gh.raw_url + "/owner/repo/main/other.sh"))

    def test_access_log(self):
        F.http_request(self.gh.raw_url + "/owner/repo/main/README.md", headers={"User-Agent": "ua-probe/1"})
        entries = [r for r in self.gh.requests() if r["user_agent"] == "ua-probe/1"]
        self.assertEqual(len(entries), 1)
        self.assertEqual(entries[0]["port"], self.gh.raw_port)
        self.assertTrue(entries[0]["peer"].startswith("127.0.0.1:"))


HF_CLIENT = r"""
import hashlib, json, os, sys
from huggingface_hub import hf_hub_download, snapshot_download
def digest(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
out = {"files": {}}
for name in sys.argv[1:]:
    out["files"][name] = digest(hf_hub_download("org/model", name))
d = snapshot_download("org/model", cache_dir=os.path.join(os.environ["HF_HOME"], "snapshot-cache"))
out["snapshot"] = {os.path.relpath(os.path.join(r, n), d).replace(os.sep, "/"): digest(os.path.join(r, n))
                   for r, _, ns in os.walk(d) for n in ns}
print(json.dumps(out))
"""


class HFServerTests(F.SharedFixtures, SynchronousTestCase):
    """The Hugging Face look-alike answers the real huggingface_hub client."""

    @classmethod
    def setUpFixtures(cls, work):
        F.require_python("huggingface_hub")
        cls.hf = F.HFServer(work)

    def test_client_downloads(self):
        repo = self.hf.repos["org/model"]
        env = self.hf.client_env(self.work.sub("hf-home-%d" % time.monotonic_ns()))
        p = F.run([F.PYTHON, "-c", HF_CLIENT, "config.json", "model.safetensors", "tokenizer/vocab.txt"],
                  env=env, timeout=120)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        for name, digest in out["files"].items():
            self.assertEqual(digest, repo["files"][name]["sha256"], name)
        self.assertEqual(out["snapshot"], {n: f["sha256"] for n, f in repo["files"].items()})
        log = self.hf.requests()
        heads = [r for r in log if r["method"] == "HEAD" and "/resolve/" in r["path"]]
        self.assertTrue(heads)
        self.assertTrue(all("hf_hub/" in r["user_agent"] and r["peer"].startswith("127.0.0.1:") for r in heads))
        self.assertTrue(any(r["server"] == "cdn" and r["status"] == 200 for r in log), "LFS went to the CDN")
        self.assertTrue(any(r["path"].startswith("/api/models/org/model/tree/" + repo["sha"]) for r in log))

    def test_headers(self):
        repo = self.hf.repos["org/model"]
        status, h, _ = F.http_request(self.hf.url + "/org/model/resolve/main/model.safetensors", method="HEAD")
        self.assertEqual(status, 302)
        self.assertEqual(h["X-Repo-Commit"], repo["sha"])
        self.assertEqual(h["X-Linked-Size"], str(repo["files"]["model.safetensors"]["size"]))
        self.assertEqual(h["X-Linked-Etag"], '"%s"' % repo["files"]["model.safetensors"]["sha256"])
        self.assertTrue(h["Location"].startswith(self.hf.cdn_url + "/repos/"))
        status, _, _ = F.http_request(h["Location"].split("?")[0])
        self.assertEqual(status, 403, "LFS CDN refuses unsigned URLs")
        status, h, body = F.http_request(self.hf.url + "/org/model/resolve/main/config.json")
        self.assertEqual(status, 200)
        self.assertEqual(h["ETag"], '"%s"' % repo["files"]["config.json"]["oid"])
        self.assertEqual(hashlib.sha256(body).hexdigest(), repo["files"]["config.json"]["sha256"])
        status, h, _ = F.http_request(self.hf.url + "/org/model/resolve/main/nope.bin", method="HEAD")
        self.assertEqual((status, h["X-Error-Code"]), (404, "EntryNotFound"))
        status, _, body = F.http_request(self.hf.url + "/api/models/org/model")
        info = json.loads(body)
        self.assertEqual(info["sha"], repo["sha"])
        self.assertIn({"rfilename": "tokenizer/vocab.txt"}, info["siblings"])
        status, _, body = F.http_request(self.hf.url + "/api/models/org/model/tree/main")
        self.assertEqual(sorted(e["path"] for e in json.loads(body)),
                         ["README.md", "config.json", "model.safetensors", "tokenizer"])


class ProxyTests(F.SharedFixtures, SynchronousTestCase):
    """SOCKS5 (microsocks) and HTTP CONNECT (tinyproxy) upstream proxies."""

    @classmethod
    def setUpFixtures(cls, work):
        F.require("microsocks", "tinyproxy", "curl", "nginx")
        cls.target = F.Nginx(work, "target", [(F.free_port(), "    location / { return 200 'target ok\\n'; }")])
        cls.target_url = "http://127.0.0.1:%d/" % cls.target.ports[0]
        cls.socks_auth = F.Socks5Proxy(work, user="u", password="p")
        cls.socks_open = F.Socks5Proxy(work)
        cls.http = F.HttpConnectProxy(work)

    def curl(self, *args):
        return F.run(["curl", "-sS", "--max-time", "10"] + list(args), check=False, timeout=30)

    def test_socks5_with_auth(self):
        p = self.curl("--socks5-hostname", "u:p@127.0.0.1:%d" % self.socks_auth.port, self.target_url)
        self.assertEqual((p.returncode, p.stdout), (0, "target ok\n"), p.stderr)
        bad = self.curl("--socks5-hostname", "u:wrong@127.0.0.1:%d" % self.socks_auth.port, self.target_url)
        self.assertNotEqual(bad.returncode, 0)
        none = self.curl("--socks5-hostname", "127.0.0.1:%d" % self.socks_auth.port, self.target_url)
        self.assertNotEqual(none.returncode, 0)
        self.assertIn("connected to 127.0.0.1", self.socks_auth.log_text())

    def test_socks5_without_auth(self):
        p = self.curl("--socks5-hostname", "127.0.0.1:%d" % self.socks_open.port, self.target_url)
        self.assertEqual((p.returncode, p.stdout), (0, "target ok\n"), p.stderr)

    def test_http_connect(self):
        p = self.curl("-p", "-x", self.http.url, self.target_url)
        self.assertEqual((p.returncode, p.stdout), (0, "target ok\n"), p.stderr)
        p = self.curl("-x", self.http.url, self.target_url)
        self.assertEqual((p.returncode, p.stdout), (0, "target ok\n"), p.stderr)
        self.assertIn("CONNECT 127.0.0.1:", self.http.log_text())


class ContainerClientTests(F.SharedFixtures, SynchronousTestCase):
    """dockerd, ctr and podman pull directly from an anonymous registry."""

    BIG = 8 * 1024 * 1024

    @classmethod
    def setUpFixtures(cls, work):
        F.require("docker-registry", "skopeo", "dockerd", "docker", "containerd", "ctr", "podman", "unshare")
        cls.registry = F.Registry(work)
        cls.images = F.seed_standard_images(cls.registry, big_layer_size=cls.BIG)
        cls.dockerd = F.Dockerd(work, insecure=[cls.registry.host])

    def test_big_image(self):
        """The streamed big layer is what the registry stores."""
        big = self.images["library/big:1"]
        layer = big["layers"][1]
        self.assertGreater(layer["size"], self.BIG)
        self.assertEqual(F.sha256_file(self.registry.blob_path(layer["digest"])), layer["digest"])

    def test_docker_pull(self):
        img = self.images["library/hello:1"]
        ref = img["reference"]
        self.dockerd.docker("pull", ref, timeout=120)
        out = self.dockerd.docker("image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", ref).stdout
        digests, image_id = out.split()
        self.assertEqual(json.loads(digests), ["%s/library/hello@%s" % (self.registry.host, img["manifest_digest"])])
        self.assertEqual(image_id, img["config_digest"])

    def test_docker_pull_multiarch(self):
        img = self.images["library/multi:1"]
        self.dockerd.docker("pull", img["reference"], timeout=120)
        image_id = self.dockerd.docker("image", "inspect", "--format", "{{.Id}}", img["reference"]).stdout.strip()
        self.assertEqual(image_id, img["platforms"]["linux/amd64"]["config_digest"])

    def test_docker_hub_fallback_stays_local(self):
        """Without a reachable mirror, dockerd's Docker Hub lookup fails on
        loopback DNS (the resolv guard) instead of leaving the machine."""
        t0 = time.monotonic()
        p = self.dockerd.docker("pull", "library/hello:1", check=False, timeout=120)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("127.0.0.1:53", p.stderr)
        self.assertLess(time.monotonic() - t0, 60)

    def test_ctr_pull(self):
        img = self.images["library/multi:1"]
        self.dockerd.ctr("images", "pull", "--plain-http", img["reference"], timeout=120)
        out = self.dockerd.ctr("images", "ls").stdout
        self.assertIn(img["manifest_digest"], out)

    def test_ctr_pull_hosts_dir(self):
        """containerd's hosts.toml mirror form (how tests point it at hubproxy)."""
        img = self.images["oci/single:1"]
        hosts = self.dockerd.hosts_dir("docker.io", "https://registry-1.docker.io", self.registry.url)
        self.dockerd.ctr("images", "pull", "--hosts-dir", hosts, "docker.io/oci/single:1", timeout=120)
        out = self.dockerd.ctr("images", "ls").stdout
        self.assertIn(img["manifest_digest"], out)
        log = self.registry.process.log_text()
        self.assertIn("ns=docker.io", log, "containerd adds ?ns= to mirror requests")

    def test_podman_pull(self):
        pm = F.Podman(self.work)
        img = self.images["team/app/web:2"]
        pm.podman("pull", "--tls-verify=false", img["reference"], timeout=120)
        out = pm.podman("images", "--digests", "--format", "{{.Digest}} {{.ID}}").stdout.split()
        self.assertEqual(out[0], img["manifest_digest"])
        self.assertTrue(img["config_digest"].split(":")[1].startswith(out[1]))
