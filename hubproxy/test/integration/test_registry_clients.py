"""
The registry mirror against real registries and real clients, on loopback.

Why: unit tests prove our parsing against fakes; only the real programs
prove that what hubproxy relays is what skopeo, podman, dockerd and
containerd accept, and only the real CNCF registry (with a Docker-Hub-like
JWT token server and a blob CDN) proves that we speak its side correctly.

One hubproxy (C{twistd -n hubproxy --config ...}, a subprocess, as users run
it) sits in front of three upstreams started once for the whole class
(L{fixtures.SharedFixtures}):

  - C{docker.io}: a token-auth registry (the Docker Hub look-alike);
  - C{ghcr.io}: an anonymous registry (two-level names);
  - C{cdn.example}: a token-auth registry whose blob GETs answer 307 to a
    "CDN" nginx that logs the C{Authorization} header it receives, so we can
    see that the proxy does not carry the registry token to another origin.

The token realm and the CDN live on 127.0.0.1 but are "from outside" (they
come from upstream answers), so the config allows 127.0.0.0/8 explicitly.
dockerd/containerd are started lazily (only the tests that need them pay
for them), always inside the fixtures' resolv.conf guard so that a failing
mirror never makes them try the internet.
"""

from __future__ import annotations

import json
import os
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.integration import fixtures as F
from hubproxy.test.integration.procs import ClassScope, clean_env, HubproxyProcess

HELLO = "library/hello:1"
MULTI = "library/multi:1"
WEB = "team/app/web:2"

# The CDN's access log, with the Authorization header it received.
_CDN_LOG_FORMAT = (
    "log_format cdnauth escape=json '{\"method\":\"$request_method\",\"uri\":\"$request_uri\","
    "\"status\":$status,\"bytes\":$body_bytes_sent,\"range\":\"$http_range\","
    "\"authorization\":\"$http_authorization\",\"user_agent\":\"$http_user_agent\"}';")


class RegistryClientTests(F.SharedFixtures, SynchronousTestCase):
    """
    Real clients pull through hubproxy from real registries.
    """

    @classmethod
    def setUpFixtures(cls, work):
        F.require("docker-registry", "skopeo", "nginx", "curl")
        cls.tokens = F.TokenServer(work)
        cls.hub = F.Registry(work, token_server=cls.tokens, name="hub")
        cls.ghcr = F.Registry(work, name="ghcr")
        cls.cdnreg = F.Registry(work, token_server=cls.tokens, cdn=True, name="cdnreg")
        cls._replace_cdn(work)
        cls._seed()
        cls.disabled_port = F.free_port()  # nothing listens: must never be reached
        toml = """
[server]
host = "127.0.0.1"
shutdownGrace = 2

[rateLimit]
requestLimit = 100000

[tokenCache]
enabled = true

[registries."docker.io"]
upstream = "{hub}"

[registries."ghcr.io"]
upstream = "{ghcr}"

[registries."cdn.example"]
upstream = "{cdn}"

[registries."disabled.example"]
upstream = "http://127.0.0.1:{disabled}"
enabled = false

[network]
allowNetworks = ["127.0.0.0/8"]
connectTimeout = 5
responseTimeout = 30
idleTimeout = 30
""".format(hub=cls.hub.url, ghcr=cls.ghcr.url, cdn=cls.cdnreg.url, disabled=cls.disabled_port)
        env = clean_env()
        cls.proxy = HubproxyProcess(ClassScope(work), toml, env=env)
        cls.proxy.start(timeout=60)
        cls.host = "127.0.0.1:%d" % cls.proxy.port
        cls._dockerd = None
        cls._dockerd_error = None

    @classmethod
    def _replace_cdn(cls, work):
        """
        Restart the CDN-redirect registry's nginx on the same port with an
        access log that records the Authorization header (the fixture's log
        format does not), serving exactly what the fixture's nginx served.
        """
        reg = cls.cdnreg
        reg.cdn.stop()
        cls.cdn_log = work.join("cdn-auth.jsonl")
        body = """
    root %s;
    access_log %s cdnauth;
    location ~ "^/docker/registry/v2/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data$" {
      limit_except GET { deny all; }
      add_header X-Fixture-CDN 1;
    }
    location / { return 404; }
""" % (reg.storage, cls.cdn_log)
        reg.cdn = F.Nginx(work, "cdnreg-cdn-auth", [(reg.cdn_port, body)], http_extra=_CDN_LOG_FORMAT)

    @classmethod
    def _seed(cls):
        """Seed the three registries (in parallel: they are independent)."""
        results, errors = {}, []

        def seed(key, reg):
            try:
                results[key] = F.seed_standard_images(reg)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=seed, args=(k, r))
                   for k, r in (("hub", cls.hub), ("ghcr", cls.ghcr), ("cdn", cls.cdnreg))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        if errors:
            raise errors[0]
        if len(results) != 3:
            raise RuntimeError("seeding timed out")
        cls.images = results["hub"]
        cls.ghcr_images = results["ghcr"]
        cls.cdn_images = results["cdn"]

    # -- helpers -----------------------------------------------------------

    def get(self, path, headers=None, method="GET"):
        return F.http_request(self.proxy.url + path, method=method, headers=headers or {})

    def diag(self, extra=""):
        """What one needs to read when an assertion fails."""
        log = self.proxy.log()
        return "%s\n--- hubproxy log (tail) %s ---\n%s" % (extra, self.proxy.log_path, log[-4000:])

    def log_mark(self):
        return len(self.proxy.log())

    def log_since(self, mark):
        return self.proxy.log()[mark:]

    def eventually(self, predicate, what, timeout=5.0):
        """Wait (bounded) for another server's log to show something: they
        write their access log after the response, so it may lag a little."""
        try:
            F.wait_until(predicate, timeout, what)
        except TimeoutError as e:
            self.fail(self.diag(str(e)))

    def cdn_requests(self, hexd, range_):
        """The proxy's GETs of blob C{hexd} on the CDN with this Range."""
        def matching():
            return [e for e in F.read_jsonl(self.cdn_log)
                    if e["uri"].endswith(hexd + "/data") and e["method"] == "GET"
                    and e["user_agent"].startswith("hubproxy/") and e["range"] == range_]
        self.eventually(lambda: matching(), "a CDN GET of %s (range %r) in %s" % (hexd, range_, self.cdn_log))
        return matching()

    def dockerd(self):
        """One dockerd (+ its containerd) per class, with hubproxy as mirror."""
        cls = type(self)
        if cls._dockerd_error is not None:
            raise cls._dockerd_error
        if cls._dockerd is None:
            try:
                cls._dockerd = F.Dockerd(self.work, mirrors=[self.proxy.url], insecure=[self.host])
            except BaseException as e:
                cls._dockerd_error = e
                raise
        return cls._dockerd

    def checked(self, p, what):
        """A client's completed process, failing with its output and the proxy log."""
        self.assertEqual(p.returncode, 0, self.diag("%s failed (%d):\nstdout: %s\nstderr: %s" % (
            what, p.returncode, p.stdout[-3000:], p.stderr[-3000:])))
        return p

    def skopeo_copy(self, src, dest, *extra):
        p = F.skopeo("copy", "--quiet", "--src-tls-verify=false", *extra,
                     "docker://%s/%s" % (self.host, src), dest, timeout=120, check=False)
        return self.checked(p, "skopeo copy " + src)

    def skopeo_inspect_raw(self, src):
        p = F.skopeo("inspect", "--raw", "--tls-verify=false", "docker://%s/%s" % (self.host, src),
                     timeout=60, check=False)
        return self.checked(p, "skopeo inspect " + src).stdout.encode()

    def read_layout(self, layout):
        """index.json of an OCI layout, and a blob reader that checks digests."""
        with open(os.path.join(layout, "index.json")) as f:
            index = json.load(f)

        def blob(digest):
            algo, hexd = digest.split(":", 1)
            with open(os.path.join(layout, "blobs", algo, hexd), "rb") as f:
                data = f.read()
            self.assertEqual(F.sha256_bytes(data), digest, "blob file content matches its name")
            return data

        return index, blob

    def assert_converted_layout(self, layout, img, registry, name):
        """
        An OCI layout that skopeo converted from a schema2 image: the layers
        are byte-identical; the config is re-serialised by the conversion,
        so its content is compared, and the original bytes are checked
        with a plain GET of the config blob through the proxy.
        """
        index, blob = self.read_layout(layout)
        self.assertEqual(len(index["manifests"]), 1, index)
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        self.assertEqual([l["digest"] for l in manifest["layers"]], [l["digest"] for l in img["layers"]])
        for layer in manifest["layers"]:
            self.assertEqual(len(blob(layer["digest"])), layer["size"])
        with open(registry.blob_path(img["config_digest"]), "rb") as f:
            seeded = json.load(f)
        converted = json.loads(blob(manifest["config"]["digest"]))
        self.assertEqual(converted["rootfs"], seeded["rootfs"])
        self.assertEqual(converted["config"]["Labels"], seeded["config"]["Labels"])
        status, _, raw = self.get("/v2/%s/blobs/%s" % (name, img["config_digest"]))
        self.assertEqual(status, 200, self.diag())
        self.assertEqual(F.sha256_bytes(raw), img["config_digest"], self.diag())

    def assert_registry_error(self, status, headers, body, want_status, want_code, what):
        self.assertEqual(status, want_status, self.diag("%s: %r" % (what, body[:500])))
        try:
            doc = json.loads(body)
        except ValueError:
            self.fail(self.diag("%s: not JSON: %r" % (what, body[:500])))
        self.assertEqual(doc["errors"][0]["code"], want_code, self.diag("%s: %r" % (what, doc)))
        self.assertTrue(doc["errors"][0].get("message"), doc)
        self.assertIn("application/json", headers.get("Content-Type", ""), what)

    # -- skopeo --------------------------------------------------------------

    def test_skopeo_copy_library_name(self):
        """
        C{127.0.0.1:P/hello:1} is docker.io C{library/hello}: skopeo copies
        it to an OCI layout with the seeded layers (skopeo converts the
        schema2 manifest and config to OCI, so their original digests are
        checked with C{inspect --raw}, which keeps the bytes).
        """
        img = self.images[HELLO]
        mark = self.log_mark()
        raw = self.skopeo_inspect_raw("hello:1")
        self.assertEqual(F.sha256_bytes(raw), img["manifest_digest"], self.diag())
        layout = self.work.sub("oci-hello")
        self.skopeo_copy("hello:1", "oci:%s:1" % layout)
        self.assert_converted_layout(layout, img, self.hub, "hello")
        log = self.log_since(mark)
        self.assertIn("/v2/hello/manifests/1", log, self.diag())
        self.assertIn("/v2/hello/blobs/" + img["layers"][1]["digest"], log, self.diag())

    def test_skopeo_copy_two_level_name(self):
        """C{127.0.0.1:P/ghcr.io/team/app/web:2} selects the ghcr.io registry."""
        img = self.ghcr_images[WEB]
        raw = self.skopeo_inspect_raw("ghcr.io/team/app/web:2")
        self.assertEqual(F.sha256_bytes(raw), img["manifest_digest"], self.diag())
        layout = self.work.sub("oci-web")
        self.skopeo_copy("ghcr.io/team/app/web:2", "oci:%s:2" % layout)
        self.assert_converted_layout(layout, img, self.ghcr, "ghcr.io/team/app/web")
        # it really came from the anonymous ghcr-like registry
        self.eventually(lambda: ("/v2/team/app/web/blobs/" + img["layers"][1]["digest"])
                        in self.ghcr.process.log_text(), "the ghcr-like registry served the layer")

    def test_skopeo_copy_multiarch_all(self):
        """
        C{--all} copies the OCI index and every platform; the index keeps
        its digest (no conversion is needed for an OCI index).
        """
        img = self.images[MULTI]
        layout = self.work.sub("oci-multi")
        self.skopeo_copy("library/multi:1", "oci:%s:1" % layout, "--all")
        index, blob = self.read_layout(layout)
        self.assertEqual(index["manifests"][0]["digest"], img["manifest_digest"], self.diag(json.dumps(index)))
        top = json.loads(blob(img["manifest_digest"]))
        self.assertEqual(sorted(m["digest"] for m in top["manifests"]),
                         sorted(p["manifest_digest"] for p in img["platforms"].values()))
        for key, plat in img["platforms"].items():
            sub = json.loads(blob(plat["manifest_digest"]))
            self.assertEqual(sub["config"]["digest"], plat["config_digest"], key)
            blob(plat["config_digest"])
            for layer in plat["layers"]:
                self.assertEqual(len(blob(layer["digest"])), layer["size"], key)

    # -- podman --------------------------------------------------------------

    def test_podman_pull(self):
        """podman pulls C{127.0.0.1:P/hello:1} (insecure) through the proxy."""
        img = self.images[HELLO]
        pm = F.Podman(self.work)
        ref = "%s/hello:1" % self.host
        mark = self.log_mark()
        self.checked(pm.podman("pull", "--tls-verify=false", ref, timeout=120, check=False), "podman pull")
        out = pm.podman("image", "inspect", "--format", "{{.Id}} {{.Digest}}", ref).stdout.split()
        self.assertEqual(out[0], img["config_digest"].split(":", 1)[1], out)
        self.assertEqual(out[1], img["manifest_digest"], out)
        log = self.log_since(mark)
        self.assertIn("/v2/hello/manifests/1", log, self.diag())

    # -- dockerd -------------------------------------------------------------

    def test_docker_pull_via_mirror(self):
        """
        dockerd with C{registry-mirrors} pulls C{hello:1} as
        C{/v2/library/hello/...} through hubproxy (Docker Hub itself is
        unreachable in the resolv guard, so success means the mirror).
        """
        img = self.images[HELLO]
        dockerd = self.dockerd()
        mark = self.log_mark()
        self.get("/api/cache/tokens", method="DELETE")
        before = len(self.tokens.stats()["requests"])
        self.checked(dockerd.docker("pull", "hello:1", check=False, timeout=120), "docker pull")
        out = dockerd.docker("image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", "hello:1").stdout
        digests, image_id = out.split()
        self.assertEqual(json.loads(digests), ["hello@" + img["manifest_digest"]])
        self.assertEqual(image_id, img["config_digest"])
        log = self.log_since(mark)
        self.assertIn("/v2/library/hello/manifests/1", log, self.diag())
        for layer in img["layers"]:
            self.assertIn("/v2/library/hello/blobs/" + layer["digest"], log, self.diag())
        # the token for library/hello was fetched by hubproxy, not by dockerd
        new = self.tokens.stats()["requests"][before:]
        fetched = [r for r in new if "repository:library/hello:pull" in (r.get("scopes") or [])]
        self.assertTrue(fetched, new)
        self.assertTrue(all(r["user_agent"].startswith("hubproxy/") for r in fetched), fetched)

    # -- containerd ----------------------------------------------------------

    def test_ctr_pull_docker_io_ns(self):
        """ctr with a hosts.toml for docker.io naming the proxy: C{?ns=docker.io}."""
        img = self.images[HELLO]
        dockerd = self.dockerd()
        hosts = dockerd.hosts_dir("docker.io", "https://registry-1.docker.io", self.proxy.url)
        mark = self.log_mark()
        self.checked(dockerd.ctr("images", "pull", "--hosts-dir", hosts, "docker.io/library/hello:1",
                                 check=False, timeout=120), "ctr pull")
        out = dockerd.ctr("images", "ls").stdout
        self.assertIn("docker.io/library/hello:1", out)
        self.assertIn(img["manifest_digest"], out)
        log = self.log_since(mark)
        self.assertIn("/v2/library/hello/manifests/1?ns=docker.io", log, self.diag())

    def test_ctr_pull_ghcr_ns(self):
        """ctr for ghcr.io via the proxy: C{?ns=ghcr.io} selects that registry."""
        img = self.ghcr_images[WEB]
        dockerd = self.dockerd()
        hosts = dockerd.hosts_dir("ghcr.io", "https://ghcr.io", self.proxy.url)
        mark = self.log_mark()
        self.checked(dockerd.ctr("images", "pull", "--hosts-dir", hosts, "ghcr.io/team/app/web:2",
                                 check=False, timeout=120), "ctr pull")
        out = dockerd.ctr("images", "ls").stdout
        self.assertIn("ghcr.io/team/app/web:2", out)
        self.assertIn(img["manifest_digest"], out)
        log = self.log_since(mark)
        self.assertIn("/v2/team/app/web/manifests/2?ns=ghcr.io", log, self.diag())
        self.assertIn("/v2/team/app/web/blobs/" + img["layers"][0]["digest"], log, self.diag())

    # -- blobs ---------------------------------------------------------------

    def test_blob_range(self):
        """A Range GET is passed through: 206 with exactly those bytes."""
        layer = self.images[HELLO]["layers"][0]
        with open(self.hub.blob_path(layer["digest"]), "rb") as f:
            data = f.read()
        status, headers, body = self.get("/v2/hello/blobs/" + layer["digest"], {"Range": "bytes=10-99"})
        self.assertEqual(status, 206, self.diag(repr(body[:300])))
        self.assertEqual(body, data[10:100])
        self.assertEqual(headers.get("Content-Range"), "bytes 10-99/%d" % len(data))
        # the whole blob, for comparison
        status, headers, body = self.get("/v2/hello/blobs/" + layer["digest"])
        self.assertEqual(status, 200, self.diag())
        self.assertEqual(F.sha256_bytes(body), layer["digest"])
        self.assertEqual(headers.get("Docker-Content-Digest"), layer["digest"])
        # curl, as a user would, with an open-ended range
        dest = self.work.join("range-tail.bin")
        p = F.run(["curl", "-sS", "--noproxy", "*", "--max-time", "30", "-o", dest, "-w", "%{http_code}",
                   "-r", "100-", self.proxy.url + "/v2/library/hello/blobs/" + layer["digest"]], timeout=60)
        self.assertEqual(p.stdout, "206", self.diag(p.stderr))
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), data[100:])

    def test_blob_via_cdn_redirect(self):
        """
        A blob of the CDN-redirect registry: the proxy follows the 307 to
        the CDN, without the registry's token, and relays the exact bytes
        (also for a Range request, which must survive the redirect).
        """
        img = self.cdn_images[HELLO]
        layer = img["layers"][1]
        hexd = layer["digest"].split(":", 1)[1]
        mark = self.log_mark()
        status, headers, body = self.get("/v2/cdn.example/library/hello/blobs/" + layer["digest"])
        self.assertEqual(status, 200, self.diag(repr(body[:300])))
        self.assertEqual(F.sha256_bytes(body), layer["digest"])
        self.assertEqual(len(body), layer["size"])
        entries = self.cdn_requests(hexd, "")
        self.assertEqual(entries[-1]["status"], 200, entries)
        self.assertEqual(entries[-1]["authorization"], "", "the registry token must not reach the CDN")
        # the registry itself was asked (with a token: it requires one) and
        # redirected the proxy to the CDN
        self.eventually(lambda: ("/v2/library/hello/blobs/" + layer["digest"]) in self.cdnreg.process.log_text(),
                        "the CDN-redirect registry saw the blob request")
        self.assertIn("/v2/cdn.example/library/hello/blobs/", self.log_since(mark), self.diag())
        # a range through the redirect
        status, headers, body = self.get("/v2/cdn.example/library/hello/blobs/" + layer["digest"],
                                         {"Range": "bytes=0-9"})
        with open(self.cdnreg.blob_path(layer["digest"]), "rb") as f:
            data = f.read()
        self.assertEqual((status, body), (206, data[:10]), self.diag())
        entries = self.cdn_requests(hexd, "bytes=0-9")
        self.assertEqual((entries[-1]["status"], entries[-1]["authorization"]), (206, ""), entries)

    # -- errors --------------------------------------------------------------

    def test_ping(self):
        """C{/v2/} is a plain 200 (the proxy authenticates upstream itself)."""
        status, headers, body = self.get("/v2/")
        self.assertEqual(status, 200, self.diag(repr(body)))
        self.assertEqual(headers.get("Docker-Distribution-Api-Version"), "registry/2.0")
        self.assertIsNone(headers.get("WWW-Authenticate"))
        # the test config itself is clean: no unknown-key warnings at start
        startup = self.proxy.log().partition(" listening on ")[0]
        self.assertNotIn("#warn]", startup, self.diag())

    def test_tls_hello_on_plain_port_answered_at_once(self):
        """
        skopeo and podman with C{--tls-verify=false} try HTTPS first and fall
        back to HTTP when the handshake fails.  Go's net/http answers a TLS
        ClientHello on a plain port at once (400); twisted.web waits for a
        line end that never comes, so each such client invocation waits
        for its 10 s TLS handshake timeout before falling back.
        """
        import socket
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5) as sock:
            sock.settimeout(3)
            try:
                ctx.wrap_socket(sock, server_hostname="127.0.0.1").close()
            except socket.timeout:
                self.fail("no answer to a TLS ClientHello within 3 s")
            except (ssl.SSLError, OSError):
                pass  # refused at once: what we want
        self.assertLess(time.monotonic() - t0, 2)


    def test_missing_tag(self):
        """A tag the upstream does not have: 404 MANIFEST_UNKNOWN, for HEAD too."""
        status, headers, body = self.get("/v2/hello/manifests/nope")
        self.assert_registry_error(status, headers, body, 404, "MANIFEST_UNKNOWN", "missing tag")
        status, headers, body = self.get("/v2/ghcr.io/team/app/web/manifests/nope")
        self.assert_registry_error(status, headers, body, 404, "MANIFEST_UNKNOWN", "missing ghcr tag")
        status, _, _ = self.get("/v2/hello/manifests/nope", method="HEAD")
        self.assertEqual(status, 404, self.diag())
        missing = "sha256:" + "0" * 64
        status, headers, body = self.get("/v2/hello/blobs/" + missing)
        self.assert_registry_error(status, headers, body, 404, "BLOB_UNKNOWN", "missing blob")

    def test_unknown_and_disabled_registry(self):
        """A registry prefix (or ns) that is not configured or not enabled: 404 NAME_UNKNOWN."""
        for path in ("/v2/unknown.example/team/app/manifests/1",
                     "/v2/disabled.example/team/app/manifests/1",
                     "/v2/team/app/manifests/1?ns=unknown.example",
                     "/v2/team/app/manifests/1?ns=disabled.example"):
            status, headers, body = self.get(path)
            self.assert_registry_error(status, headers, body, 404, "NAME_UNKNOWN", path)

    def test_invalid_name(self):
        """A name outside the distribution grammar: 400 NAME_INVALID, never sent upstream."""
        for path in ("/v2/Hello/manifests/1", "/v2/team/Ap..p/manifests/1", "/v2/ghcr.io/team%2Fapp/manifests/1"):
            status, headers, body = self.get(path)
            self.assert_registry_error(status, headers, body, 400, "NAME_INVALID", path)

    # -- tokens --------------------------------------------------------------

    def test_token_reused_for_a_whole_pull(self):
        """
        After the token cache is cleared, a whole pull of hello:1 (manifest,
        config, 2 layers; skopeo fetches blobs in parallel) costs one token.
        """
        status, _, body = self.get("/api/cache/tokens", method="DELETE")
        self.assertEqual(status, 200, self.diag(repr(body)))
        self.tokens.reset()
        mark = self.log_mark()
        out = self.work.sub("dir-hello-%d" % time.monotonic_ns())
        self.skopeo_copy("hello:1", "dir:" + out)
        img = self.images[HELLO]
        with open(os.path.join(out, "manifest.json"), "rb") as f:
            self.assertEqual(F.sha256_bytes(f.read()), img["manifest_digest"])
        log = self.log_since(mark)
        blob_requests = log.count("/v2/hello/blobs/sha256:")
        self.assertGreaterEqual(blob_requests, 3, self.diag())
        stats = self.tokens.stats()
        scoped = [r for r in stats["requests"]
                  if r.get("issued") and "repository:library/hello:pull" in (r.get("scopes") or [])]
        self.assertEqual(len(scoped), 1, self.diag(json.dumps(stats["requests"], indent=1)))
        self.assertEqual(stats["issued"], 1, self.diag(json.dumps(stats["requests"], indent=1)))
