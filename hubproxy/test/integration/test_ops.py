"""
Operations against real software on loopback: upstream proxies (microsocks
with and without authentication, tinyproxy as a CONNECT proxy), upstream
TLS with a private CA, serving HTTPS with HTTP/2 and cleartext HTTP/2,
Prometheus metrics after a real pull, and the deployment files in deploy/
(nginx in front of hubproxy, the Dockerfile's health check, the systemd
unit, the Kubernetes manifests).

Why: the SOCKS5 / CONNECT endpoints are unit-tested against a fake
transport (L{hubproxy.test.test_tunnels}); only real proxies prove we speak
their protocol, and only real clients (skopeo, curl, h2load) prove the
HTTP/2 listener.  The deployment examples are documentation users copy:
each is exercised as far as this machine allows (no Docker engine here).

Fixtures (started once for the class): a token-auth CNCF registry seeded
with the standard images, its TLS twin on the same storage (certificate
from a test CA for C{localhost} only), the GitHub look-alike, three proxies
and four hubproxy processes (see L{OpsTests.setUpFixtures}).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.integration import fixtures as F
from hubproxy.test.integration.procs import ClassScope, clean_env, HubproxyProcess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEPLOY = os.path.join(REPO, "deploy")

HELLO = "library/hello:1"
BIG = "library/big:1"
BIG_SIZE = 6 * 1024 * 1024

def make_pki(directory):
    """
    A test CA and a server certificate signed by it for C{localhost} only
    (no IP address), so C{https://127.0.0.1:PORT} is a host-name mismatch.
    Returns C{(ca_pem, cert_pem, key_pem)} paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubproxy test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


def curl(*args, timeout=60):
    return F.run(["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout)] + [str(a) for a in args],
                 check=False, timeout=timeout + 15)


def get(url, timeout=30):
    """C{(status, body)} of a GET without environment proxies."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class OpsTests(F.SharedFixtures, SynchronousTestCase):
    """
    Hubproxies (C{twistd -n hubproxy}, subprocesses):

      - C{socks}: through microsocks without auth; C{enableH2C}; C{caFile}
        = the test CA;
      - C{auth}: through microsocks with user/password; C{[server] tls}
        (HTTPS with HTTP/2 by ALPN); C{caFile} = the test CA;
      - C{badpass}: microsocks with the wrong password;
      - C{tiny}: through tinyproxy (HTTP CONNECT); no C{caFile}.

    Each knows the registries C{docker.io} (the token registry, plain
    http), C{tls.example} (its TLS twin as C{https://localhost:P}) and
    C{badname.example} (the TLS twin as C{https://127.0.0.1:P}: the
    certificate does not name that host).
    """

    @classmethod
    def setUpFixtures(cls, work):
        F.require("docker-registry", "skopeo", "nginx", "fcgiwrap", "git", "curl", "microsocks",
                  "tinyproxy", "h2load")
        F.require_python("cryptography", "yaml", "prometheus_client")
        cls.ca, cls.cert, cls.key = make_pki(work.sub("pki"))
        cls.tokens = F.TokenServer(work)
        cls.hub = F.Registry(work, token_server=cls.tokens, name="hub")
        F.seed_standard_images(cls.hub, big_layer_size=BIG_SIZE)
        cls.tls_port = F.free_port()
        with open(cls.hub.config_path) as f:
            cfg = json.load(f)
        cfg["http"]["addr"] = "127.0.0.1:%d" % cls.tls_port
        cfg["http"]["tls"] = {"certificate": cls.cert, "key": cls.key}
        tls_cfg = work.join("hub-tls.yml")
        with open(tls_cfg, "w") as f:
            json.dump(cfg, f)
        F.Process("hub-tls", [F.which("docker-registry"), "serve", tls_cfg], work, port=cls.tls_port)
        cls.git = F.PublicNameGitServer(work)
        cls.socks = F.Socks5Proxy(work)
        cls.socks_auth = F.Socks5Proxy(work, user="hub", password="s3cret", name="microsocks-auth")
        cls.tiny = F.HttpConnectProxy(work)
        bad_url = "socks5://hub:wrong@127.0.0.1:%d" % cls.socks_auth.port
        cls.hp = {}
        for name, proxy, server, network in (
            ("socks", cls.socks.url, "enableH2C = true", 'caFile = "%s"' % cls.ca),
            ("auth", cls.socks_auth.url, 'tls = { cert = "%s", key = "%s" }' % (cls.cert, cls.key),
             'caFile = "%s"' % cls.ca),
            ("badpass", bad_url, "", 'caFile = "%s"' % cls.ca),
            ("tiny", cls.tiny.url, "", ""),
        ):
            cls.hp[name] = cls._start(work, proxy, server, network)

    @classmethod
    def _start(cls, work, proxy, server, network):
        upstreams = "\n".join('"%s" = "%s"' % kv for kv in sorted(cls.git.upstreams().items()))
        toml = """
[server]
host = "127.0.0.1"
shutdownGrace = 2
{server}

[rateLimit]
requestLimit = 100000

[registries."docker.io"]
upstream = "{hub}"

[registries."tls.example"]
upstream = "https://localhost:{tls}"

[registries."badname.example"]
upstream = "https://127.0.0.1:{tls}"

[upstreams]
{upstreams}

[access]
proxy = "{proxy}"

[network]
allowNetworks = ["127.0.0.0/8"]
connectTimeout = 5
responseTimeout = 30
idleTimeout = 30
{network}
""".format(server=server, hub=cls.hub.url, tls=cls.tls_port, upstreams=upstreams, proxy=proxy,
           network=network)
        env = clean_env()
        hp = HubproxyProcess(ClassScope(work), toml, env=env)
        if "tls = {" in server:
            # HubproxyProcess polls http://.../ready; wait for the TLS port instead.
            hp._log = open(hp.log_path, "wb")
            hp.proc = subprocess.Popen(hp.argv, cwd=hp.cwd, env=hp.env, stdout=hp._log, stderr=subprocess.STDOUT)
            F.wait_until(lambda: curl("-k", "-o", "/dev/null", "-w", "%{http_code}",
                                      "https://127.0.0.1:%d/ready" % hp.port, timeout=2).stdout == "200",
                         30, "hubproxy TLS listener", proc=hp.proc)
        else:
            hp.start(timeout=60)
        return hp

    # -- helpers
    def skopeo_pull(self, hp, name, scheme_tls=False):
        target = os.path.join(tempfile.mkdtemp(dir=self.work.sub("pulls")), "img")
        r = F.run(["skopeo", "--policy", F._skopeo_policy(), "copy", "--retry-times", "0",
                   "--src-tls-verify=false", "docker://127.0.0.1:%d/%s" % (hp.port, name), "dir:" + target],
                  check=False, timeout=120, env=dict(os.environ, NO_PROXY="*", no_proxy="*"))
        return r, target

    def assertPulled(self, hp, name, image):
        r, target = self.skopeo_pull(hp, name)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + "\n--- hubproxy log ---\n" + hp.log()[-3000:])
        for layer in image["layers"]:
            path = os.path.join(target, layer["digest"].split(":", 1)[1])
            self.assertEqual(F.sha256_file(path), layer["digest"])

    def assertRelease(self, hp, base=None):
        asset = self.git.assets["tool.tar.gz"]
        url = "%s/https://github.com/%s/%s/releases/download/v1/tool.tar.gz" % (
            base or hp.url, self.git.owner, self.git.repo)
        status, body = get(url)
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(hashlib.sha256(body).hexdigest(), asset["sha256"])

    def log_lines(self, hp, needle):
        return [line for line in hp.log().splitlines() if needle in line]

    # -- upstream proxies
    def test_socks5_no_auth(self):
        """
        A registry pull (token dance included) and a release download (two
        redirect hops) work through microsocks, whose log shows the
        connections to the registry and token server.
        """
        self.assertPulled(self.hp["socks"], HELLO, self.hub.images[HELLO])
        self.assertRelease(self.hp["socks"])
        log = self.socks.log_text()
        self.assertIn("connected to 127.0.0.1:%d" % self.hub.port, log)
        self.assertIn("connected to 127.0.0.1:%d" % self.tokens.port, log)
        self.assertIn("connected to 127.0.0.1:%d" % self.git.cdn_port, log)

    def test_socks5_auth(self):
        """
        With RFC 1929 credentials; the hubproxy here serves HTTPS.
        """
        self.assertPulled(self.hp["auth"], HELLO, self.hub.images[HELLO])
        self.assertIn("connected to 127.0.0.1:%d" % self.hub.port, self.socks_auth.log_text())

    def test_socks5_wrong_password(self):
        """
        A refused password: 502 for the client, the reason in the log.
        """
        hp = self.hp["badpass"]
        status, body = get(hp.url + "/v2/library/hello/manifests/1")
        self.assertEqual(status, 502, body)
        self.assertIn(b"upstream proxy: authentication refused", body)
        self.assertNotIn(b"wrong", body)
        lines = self.log_lines(hp, "authentication refused for user 'hub'")
        self.assertTrue(lines, hp.log()[-3000:])
        self.assertIn("socks5://hub:***@127.0.0.1:%d" % self.socks_auth.port, lines[0])
        self.assertNotIn("wrong", hp.log())

    def test_http_connect(self):
        """
        Through tinyproxy's CONNECT: pull and release download; its log
        shows the CONNECTs.
        """
        hp = self.hp["tiny"]
        self.assertPulled(hp, HELLO, self.hub.images[HELLO])
        self.assertRelease(hp)
        log = self.tiny.log_text()
        self.assertIn("CONNECT", log)
        self.assertRegex(log, r"Established connection to host \"?127\.0\.0\.1\"? using file descriptor")

    def test_proxy_down(self):
        """
        A proxy that is not running: 502 with a reason that says so.
        """
        port = F.free_port()
        hp = self._start(self.work, "socks5://127.0.0.1:%d" % port, "", "")
        status, body = get(hp.url + "/v2/library/hello/manifests/1")
        self.assertEqual(status, 502, body)
        self.assertTrue(self.log_lines(hp, "refused the connection (is it running?)"), hp.log()[-2000:])

    # -- upstream TLS
    def test_tls_upstream_right_ca(self):
        """
        An HTTPS registry signed by the test CA, trusted through caFile,
        reached through the SOCKS tunnel (TLS over the tunnel).
        """
        self.assertPulled(self.hp["socks"], "tls.example/" + HELLO, self.hub.images[HELLO])
        self.assertIn("connected to localhost:%d" % self.tls_port, self.socks.log_text())

    def test_tls_upstream_wrong_name(self):
        """
        The same server by a name its certificate does not carry: 502, and
        the log says why.
        """
        hp = self.hp["socks"]
        status, body = get(hp.url + "/v2/badname.example/library/hello/manifests/1")
        self.assertEqual(status, 502, body)
        lines = self.log_lines(hp, "/v2/badname.example/library/hello/manifests/1: 502")
        self.assertTrue(lines, hp.log()[-3000:])
        self.assertIn("VerificationError", lines[-1])

    def test_tls_upstream_unknown_ca(self):
        """
        Without caFile the test CA is unknown: 502 with the reason logged.
        """
        hp = self.hp["tiny"]
        status, body = get(hp.url + "/v2/tls.example/library/hello/manifests/1")
        self.assertEqual(status, 502, body)
        lines = self.log_lines(hp, "/v2/tls.example/library/hello/manifests/1: 502")
        self.assertTrue(lines, hp.log()[-3000:])
        self.assertIn("certificate verify failed", lines[-1])

    # -- serving HTTP/2
    def big_blob(self):
        layer = self.hub.images[BIG]["layers"][-1]
        self.assertGreater(layer["size"], BIG_SIZE // 2)
        return layer

    def test_https_http2(self):
        """
        curl negotiates h2 by ALPN on the TLS listener and downloads a
        multi-megabyte blob whose digest matches.
        """
        layer = self.big_blob()
        hp = self.hp["auth"]
        out = self.work.join("h2-blob")
        r = curl("--http2", "-k", "-o", out, "-w", "%{http_version} %{http_code}",
                 "https://127.0.0.1:%d/v2/library/big/blobs/%s" % (hp.port, layer["digest"]))
        self.assertEqual(r.stdout, "2 200", r.stderr)
        self.assertEqual(F.sha256_file(out), layer["digest"])

    def test_h2c_prior_knowledge(self):
        layer = self.big_blob()
        hp = self.hp["socks"]
        out = self.work.join("h2c-blob")
        r = curl("--http2-prior-knowledge", "-o", out, "-w", "%{http_version} %{http_code}",
                 "%s/v2/library/big/blobs/%s" % (hp.url, layer["digest"]))
        self.assertEqual(r.stdout, "2 200", r.stderr)
        self.assertEqual(F.sha256_file(out), layer["digest"])
        # HTTP/1.1 still works on the same port
        r = curl("--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", hp.url + "/ready")
        self.assertEqual(r.stdout, "1.1 200", r.stderr)

    def test_h2c_upgrade(self):
        """
        C{curl --http2} on an http:// URL sends C{Upgrade: h2c}: the blob
        comes back over HTTP/2 (stream 1 after the 101), digest right.  A
        POST with a body is not upgraded and still works over HTTP/1.1.
        """
        layer = self.big_blob()
        hp = self.hp["socks"]
        out = self.work.join("h2c-upgrade-blob")
        r = curl("--http2", "-v", "-o", out, "-w", "%{http_version} %{http_code}",
                 "%s/v2/library/big/blobs/%s" % (hp.url, layer["digest"]))
        self.assertEqual(r.stdout, "2 200", r.stderr)
        self.assertIn("101 Switching Protocols", r.stderr)
        self.assertEqual(F.sha256_file(out), layer["digest"])
        r = curl("--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-d", "x=1",
                 hp.url + "/ready")
        self.assertEqual(r.stdout, "1.1 405", r.stderr)

    def h2load(self, *args):
        r = F.run(["h2load", "-n", "200", "-c", "2", "-m", "20", "-t", "1"] + list(args),
                  check=False, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Application protocol: h2", r.stdout)
        self.assertIn("200 succeeded, 0 failed, 0 errored, 0 timeout", r.stdout)
        self.assertIn("status codes: 200 2xx", r.stdout)

    def test_h2load_tls(self):
        """
        200 requests as 20 concurrent streams on each of 2 connections.
        """
        digest = self.hub.images[HELLO]["config_digest"]
        self.h2load("https://127.0.0.1:%d/v2/library/hello/blobs/%s" % (self.hp["auth"].port, digest))

    def test_h2load_h2c(self):
        digest = self.hub.images[HELLO]["layers"][0]["digest"]
        self.h2load("%s/v2/library/hello/blobs/%s" % (self.hp["socks"].url, digest))

    # -- metrics
    def test_metrics_after_pull(self):
        """
        /metrics (parsed by prometheus_client's own parser) counts a pull:
        manifest and blob requests by status, the bytes sent, upstream
        requests to the registry.
        """
        from prometheus_client.parser import text_string_to_metric_families

        hp = self._start(self.work, self.socks.url, "", "")
        image = self.hub.images[HELLO]
        self.assertPulled(hp, HELLO, image)

        status, body = get(hp.url + "/metrics")
        self.assertEqual(status, 200)
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

        def total(name, **labels):
            return sum(v for (n, ls), v in samples.items()
                       if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))

        blobs = len(image["layers"]) + 1
        self.assertEqual(total("hubproxy_requests_total", route="registry_blob", status="200"), blobs, samples)
        self.assertGreaterEqual(total("hubproxy_requests_total", route="registry_manifest", status="200"), 1)
        blob_bytes = sum(layer["size"] for layer in image["layers"]) + image["config_size"]
        self.assertGreaterEqual(total("hubproxy_response_bytes_total", route="registry_blob"), blob_bytes)
        self.assertGreaterEqual(total("hubproxy_upstream_requests_total", status="200"), blobs + 1)
        self.assertGreaterEqual(total("hubproxy_upstream_response_seconds_count"), blobs + 1)
        self.assertEqual(total("hubproxy_requests_in_flight"), 1)  # the scrape itself

    # -- deployment files
    def test_nginx_example(self):
        """
        deploy/nginx/hubproxy.conf, as written (only the listen port and
        hubproxy's port changed): C{nginx -t} passes, and a
        C{/https://github.com/...} download goes through nginx to hubproxy
        with the path intact (the Go version's #62).
        """
        with open(os.path.join(DEPLOY, "nginx", "hubproxy.conf")) as f:
            example = f.read()
        self.assertIn("merge_slashes off;", example)
        self.assertRegex(example, r"proxy_pass http://127\.0\.0\.1:5000;")
        hp = self.hp["tiny"]
        port = F.free_port()
        server = example.replace("listen 80;", "listen 127.0.0.1:%d;" % port).replace(
            "127.0.0.1:5000", "127.0.0.1:%d" % hp.port)
        prefix = self.work.sub("nginx-example")
        for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(prefix, "tmp", t), exist_ok=True)
        with open(os.path.join(prefix, "hubproxy.conf"), "w") as f:
            f.write(server)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
user root;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {p}/access.log;
  client_body_temp_path {p}/tmp/body;
  proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fastcgi;
  uwsgi_temp_path {p}/tmp/uwsgi;
  scgi_temp_path {p}/tmp/scgi;
  include {p}/hubproxy.conf;
}}
""".format(p=prefix))
        argv = [F.which("nginx"), "-e", os.path.join(prefix, "error.log"), "-p", prefix, "-c", conf]
        r = F.run(argv + ["-t"], check=False, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        F.Process("nginx-example", argv + ["-g", "daemon off;"], self.work, port=port)
        self.assertRelease(hp, base="http://127.0.0.1:%d" % port)
        path = "/https://github.com/%s/%s/releases/download/v1/tool.tar.gz" % (self.git.owner, self.git.repo)
        self.assertTrue(self.log_lines(hp, '"GET %s HTTP/1.1" 200' % path), hp.log()[-3000:])
        # and the registry API through the same nginx
        status, body = get("http://127.0.0.1:%d/v2/library/hello/manifests/1" % port)
        self.assertEqual(status, 200, body[:300])
        # the client's own address reaches hubproxy's log through nginx
        r = curl("--interface", "127.0.0.2", "-o", "/dev/null", "-w", "%{http_code}",
                 "http://127.0.0.1:%d/ready?via=nginx" % port)
        self.assertEqual(r.stdout, "200", r.stderr)
        self.assertTrue(self.log_lines(hp, '127.0.0.2 "GET /ready?via=nginx HTTP/1.1" 200'), hp.log()[-3000:])

    def test_dockerfile(self):
        """
        The Dockerfile's essentials, and its HEALTHCHECK command run against
        a live hubproxy (what Docker would run inside the container).
        """
        with open(os.path.join(REPO, "Dockerfile")) as f:
            text = f.read()
        instructions = [line.split(None, 1)[0] for line in re.sub(r"\\\n", " ", text).splitlines()
                        if line.strip() and not line.lstrip().startswith("#")]
        self.assertEqual(instructions[0], "FROM")
        self.assertIn("FROM python:3.11-slim", text)
        self.assertRegex(text, r"(?m)^USER 10001")
        self.assertIn("EXPOSE 5000", text)
        self.assertIn('ENTRYPOINT ["twistd", "-n", "--pidfile=", "hubproxy"]', text)
        self.assertIn('CMD ["--config", "/etc/hubproxy/config.toml"]', text)
        for source in re.findall(r"(?m)^COPY (\S+)", text):
            self.assertTrue(os.path.exists(os.path.join(REPO, source)), source)
        health = re.search(r'HEALTHCHECK .*?CMD \["python", "-c", "(.*)"\]', re.sub(r"\\\n", " ", text))
        self.assertIsNotNone(health)
        code = health.group(1).replace('\\"', '"')
        env = dict(os.environ, SERVER_PORT=str(self.hp["socks"].port))
        ok = F.run([F.PYTHON, "-c", code], check=False, timeout=30, env=env)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        env["SERVER_PORT"] = str(F.free_port())
        down = F.run([F.PYTHON, "-c", code], check=False, timeout=30, env=env)
        self.assertNotEqual(down.returncode, 0)

    def test_systemd_unit(self):
        path = os.path.join(DEPLOY, "systemd", "hubproxy.service")
        with open(path) as f:
            text = f.read()
        self.assertIn("ExecStart=/opt/hubproxy/bin/twistd -n --pidfile= hubproxy --config /etc/hubproxy/config.toml", text)
        self.assertIn("Restart=on-failure", text)
        self.assertIn("KillSignal=SIGTERM", text)
        stop = int(re.search(r"(?m)^TimeoutStopSec=(\d+)s?$", text).group(1))
        self.assertGreater(stop, 30)  # the default shutdownGrace
        analyze = F.which("systemd-analyze")
        if analyze is None:
            return  # the content checks above still ran
        unit = os.path.join(self.work.sub("systemd"), "hubproxy.service")
        twistd = os.path.join(os.path.dirname(F.PYTHON), "twistd")
        with open(unit, "w") as f:
            f.write(text.replace("/opt/hubproxy/bin/twistd", twistd))
        r = F.run([analyze, "verify", unit], check=False, timeout=60)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    def test_kubernetes(self):
        """
        The manifests parse; the ConfigMap's config.toml loads without a
        warning; probes, ports and the grace period fit together.
        """
        import yaml

        from hubproxy.config import load_config

        with open(os.path.join(DEPLOY, "kubernetes", "hubproxy.yaml")) as f:
            docs = {d["kind"]: d for d in yaml.safe_load_all(f) if d}
        self.assertEqual(set(docs), {"ConfigMap", "Deployment", "Service"})
        toml_text = docs["ConfigMap"]["data"]["config.toml"]
        cfg_path = os.path.join(self.work.sub("k8s"), "config.toml")
        with open(cfg_path, "w") as f:
            f.write(toml_text)
        config, warnings = load_config(cfg_path, environ={})
        self.assertEqual(warnings, [])
        self.assertEqual(config.server.port, 5000)
        spec = docs["Deployment"]["spec"]["template"]["spec"]
        container = spec["containers"][0]
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertEqual(container[probe]["httpGet"]["path"], "/ready")
            self.assertEqual(container[probe]["httpGet"]["port"], "http")
        self.assertEqual(container["ports"][0], {"name": "http", "containerPort": 5000, "protocol": "TCP"})
        self.assertGreater(spec["terminationGracePeriodSeconds"], config.server.shutdown_grace + 5)
        mount = container["volumeMounts"][0]
        self.assertEqual(mount["mountPath"], "/etc/hubproxy")
        self.assertEqual(container["args"], ["--config", "/etc/hubproxy/config.toml"])
        self.assertEqual(docs["Service"]["spec"]["selector"], docs["Deployment"]["spec"]["selector"]["matchLabels"])

    def test_caddyfile(self):
        """
        deploy/caddy/Caddyfile, as written (only the site address and
        hubproxy's port changed, automatic HTTPS and the admin API off for
        the test): a C{/https://github.com/...} download goes through Caddy
        with the path intact, the registry API too, and hubproxy logs the
        real client address Caddy passes (a client on 127.0.0.2, while
        Caddy itself connects from 127.0.0.1).
        """
        F.require("caddy")
        with open(os.path.join(DEPLOY, "caddy", "Caddyfile")) as f:
            example = f.read()
        self.assertIn("reverse_proxy 127.0.0.1:5000", example)
        self.assertIn("flush_interval -1", example)
        hp = self.hp["tiny"]
        port = F.free_port()
        site = example.replace("hub.example.com {", "http://127.0.0.1:%d {" % port).replace(
            "127.0.0.1:5000", "127.0.0.1:%d" % hp.port)
        self.assertNotEqual(site, example)
        prefix = self.work.sub("caddy-example")
        path = os.path.join(prefix, "Caddyfile")
        with open(path, "w") as f:
            f.write("{\n\tadmin off\n\tauto_https off\n}\n" + site)
        env = dict(os.environ, HOME=prefix, XDG_DATA_HOME=prefix, XDG_CONFIG_HOME=prefix)
        caddy = F.which("caddy")
        r = F.run([caddy, "validate", "--config", path, "--adapter", "caddyfile"], check=False, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        F.Process("caddy-example", [caddy, "run", "--config", path, "--adapter", "caddyfile"], self.work,
                  port=port, env=env)
        base = "http://127.0.0.1:%d" % port
        self.assertRelease(hp, base=base)
        release = "/https://github.com/%s/%s/releases/download/v1/tool.tar.gz" % (self.git.owner, self.git.repo)
        self.assertTrue(self.log_lines(hp, '"GET %s HTTP/1.1" 200' % release), hp.log()[-3000:])
        status, body = get(base + "/v2/library/hello/manifests/1")
        self.assertEqual(status, 200, body[:300])
        # the client's own address reaches hubproxy's log through Caddy
        r = curl("--interface", "127.0.0.2", "-o", "/dev/null", "-w", "%{http_code}", base + "/ready?via=caddy")
        self.assertEqual(r.stdout, "200", r.stderr)
        self.assertTrue(self.log_lines(hp, '127.0.0.2 "GET /ready?via=caddy HTTP/1.1" 200'), hp.log()[-3000:])
