"""
The offline tar and search tools against real parts, on loopback.

Why: the unit tests parse our tar with Python's tarfile; only the real
C{docker load} and C{skopeo inspect docker-archive:} prove the archive is
what those programs accept (layout, byte-exact configs: Docker's image ID
is the sha256 of the config bytes), and only the real CNCF registry with a
JWT token server proves the tool reuses the mirror's upstream auth.  The
search tool is checked against a loopback look-alike of Docker Hub's
search API (a small stdlib server), reached through C{[upstreams]}.

Stack (started once per class, L{start_tools_stack}): token server +
registry seeded with the standard images (C{library/hello:1} single-arch
schema2, C{library/multi:1} an OCI index amd64 + arm64/v8 sharing a layer),
the Hub look-alike, and C{twistd -n hubproxy} in front of them.
"""

from __future__ import annotations

import io
import json
import tarfile
import urllib.parse

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.integration import fixtures as F
from hubproxy.test.integration.procs import ClassScope, clean_env, HubproxyProcess

# A Docker Hub search/tags look-alike.  Any query finds an official image
# named like it and a user image; "ratelimited" answers 429.
HUB_LOOKALIKE = r'''
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

COUNT = {"requests": 0}
LOCK = threading.Lock()

def repo(name, official, owner=""):
    return {"repo_name": name, "short_description": "The %s image (look-alike)" % name,
            "star_count": 42 if official else 3, "pull_count": 1000000 if official else 10,
            "repo_owner": owner, "is_automated": False, "is_official": official}

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == "/stats":
            return self.send(200, COUNT)
        with LOCK:
            COUNT["requests"] += 1
        if u.path == "/v2/search/repositories/":
            term = q.get("query", "")
            if term == "broken":
                self.close_connection = True
                return
            if term == "ratelimited":
                return self.send(429, {"message": "too many"}, [("Retry-After", "7")])
            results = [repo(term, True), repo("someone/%s-tools" % term, False, "someone")]
            return self.send(200, {"count": 2, "next": None, "previous": None, "results": results})
        parts = [p for p in u.path.split("/") if p]
        if len(parts) == 5 and parts[:2] == ["v2", "repositories"] and parts[4] == "tags":
            imgs = [{"architecture": "amd64", "os": "linux", "digest": "sha256:" + "1" * 64, "size": 1000},
                    {"architecture": "arm64", "variant": "v8", "os": "linux", "digest": "sha256:" + "2" * 64, "size": 1000}]
            tags = [{"name": t, "full_size": 2048, "last_updated": "2026-01-02T03:04:05Z", "last_pusher": "ci",
                     "images": imgs} for t in ("1", "latest")]
            return self.send(200, {"count": 2, "next": None, "previous": None, "results": tags})
        return self.send(404, {"message": "not found"})

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

class Stack:
    pass


def start_tools_stack(work, max_images=3):
    """
    Registry + token server (seeded), Hub look-alike and hubproxy.
    """
    F.require("docker-registry", "skopeo")
    s = Stack()
    s.tokens = F.TokenServer(work)
    s.registry = F.Registry(work, token_server=s.tokens, name="hub")
    s.images = F.seed_standard_images(s.registry)
    s.hub_port = F.free_port()
    script = work.write("hub_lookalike.py", HUB_LOOKALIKE)
    s.hub = F.Process("hub-lookalike", [F.PYTHON, script, s.hub_port], work, port=s.hub_port)
    s.hub_url = "http://127.0.0.1:%d" % s.hub_port
    toml = """
[server]
host = "127.0.0.1"
shutdownGrace = 2

[rateLimit]
requestLimit = 100000

[download]
maxImages = {max_images}

[access]
blackList = ["forbidden/*"]

[registries."docker.io"]
upstream = "{registry}"

[upstreams]
"registry.hub.docker.com" = "{hub}"

[network]
allowNetworks = ["127.0.0.0/8"]
connectTimeout = 5
responseTimeout = 30
idleTimeout = 30
""".format(registry=s.registry.url, hub=s.hub_url, max_images=max_images)
    env = clean_env()
    s.proxy = HubproxyProcess(ClassScope(work), toml, env=env)
    s.proxy.start(timeout=60)
    return s


def tar_members(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


class OfflineTarClientTests(F.SharedFixtures, SynchronousTestCase):
    """
    Tars fetched through a running hubproxy, read by real programs.
    (Layer sharing across images is covered by the unit tests: the
    standard images share no layer across repositories.)
    """

    @classmethod
    def setUpFixtures(cls, work):
        cls.stack = start_tools_stack(work)
        cls.proxy = cls.stack.proxy
        cls.images = cls.stack.images
        cls._tar = None
        cls._arm_tar = None

    def diag(self, extra=""):
        return "%s\n--- hubproxy log (tail) ---\n%s" % (extra, self.proxy.log()[-4000:])

    def fetch(self, path, **kw):
        return F.http_request(self.proxy.url + path, timeout=120, **kw)

    def batch_tar(self):
        """C{hello:1} + C{multi:1} for linux/amd64 in one tar, fetched once per class."""
        cls = type(self)
        if cls._tar is None:
            status, headers, body = self.fetch("/download?images=hello:1,multi:1&platform=linux/amd64")
            self.assertEqual(status, 200, self.diag(body[:500]))
            self.assertEqual(headers.get("Content-Disposition"), 'attachment; filename="batch_2_images.tar"')
            path = self.work.join("batch.tar")
            with open(path, "wb") as f:
                f.write(body)
            cls._tar = (path, body)
        return cls._tar

    def arm_tar(self):
        """C{multi:1} for linux/arm64 (the index's arm64/v8 entry), fetched once per class."""
        cls = type(self)
        if cls._arm_tar is None:
            status, headers, body = self.fetch("/download?images=multi:1&platform=linux/arm64")
            self.assertEqual(status, 200, self.diag(body[:500]))
            self.assertEqual(headers.get("Content-Disposition"), 'attachment; filename="multi_1.tar"')
            path = self.work.join("multi-arm64.tar")
            with open(path, "wb") as f:
                f.write(body)
            cls._arm_tar = path
        return cls._arm_tar

    def test_tar_content(self):
        """
        Configs are the registry's bytes; every entry is in the tar once;
        amd64 was taken from the index for C{linux/amd64}.
        """
        _, body = self.batch_tar()
        files = tar_members(body)
        hello = self.images["library/hello:1"]
        amd = self.images["library/multi:1"]["platforms"]["linux/amd64"]
        for img in (hello, amd):
            hexd = img["config_digest"].split(":")[1]
            with open(self.stack.registry.blob_path(img["config_digest"]), "rb") as f:
                self.assertEqual(files[hexd + ".json"], f.read())
            for layer in img["layers"]:
                data = files[layer["digest"].split(":")[1] + "/layer.tar"]
                self.assertEqual(F.sha256_bytes(data), layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            names = [m.name for m in tar.getmembers()]
        self.assertEqual(len(names), len(set(names)), "every entry once")
        manifest = json.loads(files["manifest.json"])
        self.assertEqual([m["RepoTags"] for m in manifest], [["hello:1"], ["multi:1"]])

    def test_skopeo_inspect_archive(self):
        path, _ = self.batch_tar()
        for ref, arch in (("multi:1", "amd64"), ("hello:1", "amd64")):
            p = F.skopeo("inspect", "--config", "docker-archive:%s:docker.io/library/%s" % (path, ref),
                         check=False, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["architecture"], arch)
        p = F.skopeo("inspect", "docker-archive:%s" % self.arm_tar(), check=False, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        info = json.loads(p.stdout)
        self.assertEqual((info["Os"], info["Architecture"]), ("linux", "arm64"))
        self.assertEqual(info.get("Variant", "v8"), "v8")

    def test_docker_load(self):
        """
        The real C{docker load} accepts the tars; the loaded image IDs are
        the registry's config digests (the config bytes were not rewritten);
        the arm64 tar gives the index's arm64 image.
        """
        path, _ = self.batch_tar()
        dockerd = F.Dockerd(self.work)
        out = dockerd.docker("load", "-i", path, timeout=180, check=False)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("hello:1", out.stdout)
        self.assertIn("multi:1", out.stdout)

        def inspect(ref):
            return json.loads(dockerd.docker("image", "inspect", ref, timeout=60).stdout)[0]

        self.assertEqual(inspect("hello:1")["Id"], self.images["library/hello:1"]["config_digest"])
        amd = self.images["library/multi:1"]["platforms"]["linux/amd64"]
        self.assertEqual(inspect("multi:1")["Id"], amd["config_digest"])
        out = dockerd.docker("load", "-i", self.arm_tar(), timeout=180, check=False)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        arm = self.images["library/multi:1"]["platforms"]["linux/arm64/v8"]
        loaded = inspect("multi:1")
        self.assertEqual(loaded["Id"], arm["config_digest"])
        self.assertEqual(loaded["Architecture"], "arm64")

    def test_single_platform_image_is_exact(self):
        """
        A single-platform amd64 image asked for as arm64: a 400 naming the
        platform it has, not a tar of the wrong architecture.
        """
        status, headers, body = self.fetch("/download?images=hello:1&platform=linux/arm64")
        self.assertEqual(status, 400, body[:300])
        error = json.loads(body)
        self.assertEqual(error["code"], "PLATFORM_UNKNOWN")
        self.assertEqual(error["detail"]["platforms"], ["linux/amd64"])
        self.assertIsNone(headers.get("Content-Disposition"))

    def test_two_step_api_with_curl(self):
        F.require("curl")
        status, _, body = self.fetch("/api/image/download?image=multi&tag=1&mode=prepare&platform=linux/amd64",
                                     headers={"User-Agent": "curl-test"})
        self.assertEqual(status, 200, body)
        url = json.loads(body)["download_url"]
        out = self.work.join("two-step.tar")
        p = F.run(["curl", "-sS", "-f", "-A", "curl-test", "-o", out, "-D", "-", self.proxy.url + url], check=False)
        self.assertEqual(p.returncode, 0, p.stderr + self.diag())
        self.assertIn('filename="multi_1.tar"', p.stdout)
        with open(out, "rb") as f:
            files = tar_members(f.read())
        amd = self.images["library/multi:1"]["platforms"]["linux/amd64"]
        self.assertIn(amd["config_digest"].split(":")[1] + ".json", files)
        # the token was single-use
        p = F.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-A", "curl-test", self.proxy.url + url], check=False)
        self.assertEqual(p.stdout, "403")

    def test_errors_are_not_tars(self):
        for path, code in (
            ("/download?images=nosuch:1", 404),
            ("/download?images=multi:1&platform=linux/s390x", 400),
            ("/download?images=evil.example/x/y:1", 400),
            ("/download?images=forbidden/app:1", 403),
            ("/download?images=a,b,c,d", 400),
        ):
            status, headers, body = self.fetch(path)
            self.assertEqual(status, code, (path, body))
            self.assertEqual(headers.get("Content-Type"), "application/json", path)
            self.assertIsNone(headers.get("Content-Disposition"), path)
            self.assertIn("error", json.loads(body))
        status, _, body = self.fetch("/download?images=multi:1&platform=linux/s390x")
        self.assertEqual(json.loads(body)["detail"]["platforms"], ["linux/amd64", "linux/arm64/v8"])

    def test_info(self):
        status, _, body = self.fetch("/api/image/info?image=multi:1")
        self.assertEqual(status, 200, body)
        data = json.loads(body)["data"]
        self.assertEqual(data["digest"], self.images["library/multi:1"]["manifest_digest"])
        self.assertEqual(data["platforms"], ["linux/amd64", "linux/arm64/v8"])


class SearchClientTests(F.SharedFixtures, SynchronousTestCase):
    """
    Search through a running hubproxy against the Hub look-alike.
    """

    @classmethod
    def setUpFixtures(cls, work):
        cls.hub_port = F.free_port()
        script = work.write("hub_lookalike.py", HUB_LOOKALIKE)
        F.Process("hub-lookalike", [F.PYTHON, script, cls.hub_port], work, port=cls.hub_port)
        toml = """
[server]
host = "127.0.0.1"
[rateLimit]
requestLimit = 100000
[upstreams]
"registry.hub.docker.com" = "http://127.0.0.1:%d"
""" % cls.hub_port
        env = clean_env()
        cls.proxy = HubproxyProcess(ClassScope(work), toml, env=env)
        cls.proxy.start(timeout=60)

    def get(self, path, accept="application/json"):
        status, headers, body = F.http_request(self.proxy.url + path, headers={"Accept": accept})
        return status, headers, body

    def hub_requests(self):
        return json.loads(F.http_request("http://127.0.0.1:%d/stats" % self.hub_port)[2])["requests"]

    def test_search_json_and_cache(self):
        before = self.hub_requests()
        status, _, body = self.get("/search?q=redis&limit=10")
        self.assertEqual(status, 200, body)
        results = json.loads(body)["results"]
        self.assertEqual([(r["name"], r["official"]) for r in results], [("redis", True), ("someone/redis-tools", False)])
        self.assertEqual(set(results[0]) >= {"name", "description", "stars", "official", "automated"}, True)
        status, _, _ = self.get("/search?q=redis&limit=10")
        self.assertEqual(self.hub_requests(), before + 1, "second answer from the cache")

    def test_go_shapes(self):
        status, _, body = self.get("/api/search?q=nginx&page=1&page_size=25")
        data = json.loads(body)
        self.assertEqual(data["results"][0]["repo_name"], "library/nginx")
        self.assertEqual(data["results"][1]["namespace"], "someone")
        status, _, body = self.get("/api/tags/library/nginx?page=1&page_size=100")
        data = json.loads(body)
        self.assertEqual([t["name"] for t in data["tags"]], ["1", "latest"])
        self.assertFalse(data["has_more"])

    def test_browser_gets_page(self):
        status, headers, body = self.get("/search?q=redis", accept="text/html")
        self.assertEqual(status, 200)
        self.assertIn("text/html", headers.get("Content-Type"))

    def test_rate_limit_mapped(self):
        status, headers, body = self.get("/api/search?q=ratelimited")
        self.assertEqual(status, 429)
        self.assertEqual(headers.get("Retry-After"), "7")
        self.assertIn("error", json.loads(body))

    def test_hub_broken_is_502(self):
        status, _, body = self.get("/api/search?q=broken")
        self.assertEqual(status, 502, body)
        self.assertIn("error", json.loads(body))

    def test_namespace_fallback(self):
        status, _, body = self.get("/api/search?q=" + urllib.parse.quote("nobody/redis"))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["results"][0]["repo_name"], "library/redis")
