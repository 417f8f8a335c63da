"""
Fixtures for integration tests: real upstreams and real clients on loopback.

Why this module exists: hubproxy's job is to sit between real clients
(dockerd, containerd, podman, skopeo, git, huggingface_hub, curl) and real
upstreams (Docker Hub, GitHub, Hugging Face).  Unit tests with fakes in the
reactor prove our parsing; only real programs prove that the bytes we relay
are what those programs accept.  These machines have no internet, so every
upstream is replaced by the real server software (CNCF registry, nginx +
git-http-backend) or, where there is none, by a small stdlib server script
(token server, Hugging Face look-alike) that answers what the real clients
were read to ask for.  See /work/shared/docs/fixtures.md.

Design choices, and why:
  - Plain synchronous Python + subprocess.  Tests call these from
    C{setUpClass}/C{setUp}, where blocking is fine; the servers live in their
    own processes so that they never share the reactor with the code under
    test (a blocking bug in hubproxy must not be hidden, or caused, by them).
  - Everything binds 127.0.0.1 on a free port, writes its logs into a
    L{Workdir}, and is stopped by PID (SIGTERM, then SIGKILL to the process
    group we created).  Each L{Process} registers itself so that an
    interpreter exit stops whatever a failing test left running.
  - Every wait is bounded (L{wait_for_port}); nothing sleeps unboundedly.
  - Clients that could fall back to the internet (dockerd falls back to
    Docker Hub when a mirror fails, containerd/podman resolve names) run in a
    private mount namespace where /etc/resolv.conf says C{nameserver
    127.0.0.1}, so such a fallback fails on loopback instead of leaving the
    machine (L{resolv_guard}).
  - Missing software: L{require} makes a test FAIL in CI (CI=true), where
    .ci/install-deps.sh must have installed it, and SKIP elsewhere with the
    apt-get command to run.
  - Seeded images are built here, byte for byte deterministic (fixed tar
    metadata, gzip mtime 0), then pushed with skopeo; the digests recorded
    are the ones the registry serves afterwards, read back over HTTP.
"""

import atexit
import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"

# executable -> Debian package that provides it (for skip/fail messages and
# to keep .ci/install-deps.sh honest).
PACKAGES = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "podman": "podman",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "microsocks": "microsocks",
    "nginx": "nginx-light",
    "fcgiwrap": "fcgiwrap",
    "git": "git",
    "git-http-backend": "git",
    "wrk": "wrk",
    "jq": "jq",
    "tinyproxy": "tinyproxy",
    "curl": "curl",
    "unshare": "util-linux",
    "nghttp": "nghttp2-client",
    "h2load": "nghttp2-client",
    "caddy": "caddy",
}

# Prefer Debian's binaries: a developer machine may have another docker CLI
# earlier in PATH (/usr/local/bin/docker 28.x here), which would talk a
# newer API than the Debian dockerd 20.10 and change behaviour under us.
_FIXED_PATHS = {
    "docker": "/usr/bin/docker",
    "dockerd": "/usr/sbin/dockerd",
    "git-http-backend": "/usr/lib/git-core/git-http-backend",
    "nginx": "/usr/sbin/nginx",
    "fcgiwrap": "/usr/sbin/fcgiwrap",
}

DEFAULT_START_TIMEOUT = 20.0


# ---------------------------------------------------------------- basics

def in_ci():
    return os.environ.get("CI") == "true"


def which(exe):
    """Absolute path of C{exe} or None (Debian locations preferred)."""
    fixed = _FIXED_PATHS.get(exe)
    if fixed and os.access(fixed, os.X_OK):
        return fixed
    if fixed and exe == "git-http-backend":
        return None
    path = shutil.which(exe, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    return path


def require(*executables):
    """
    Make sure the given programs exist.  Missing: in CI (C{CI=true}) raise
    C{AssertionError} (CI must have installed them, so this is a failure);
    elsewhere raise C{SkipTest} telling what to install.
    """
    missing = [e for e in executables if which(e) is None]
    if not missing:
        return
    pkgs = sorted({PACKAGES.get(e, e) for e in missing})
    msg = "install %s: apt-get install --no-install-recommends %s" % (
        ", ".join(missing), " ".join(pkgs))
    if in_ci():
        raise AssertionError("missing in CI (see .ci/install-deps.sh): " + msg)
    from twisted.trial.unittest import SkipTest
    raise SkipTest(msg)


def require_python(*modules):
    """Like L{require} for importable Python modules (pip packages)."""
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    msg = "pip install %s" % " ".join(missing)
    if in_ci():
        raise AssertionError("missing in CI: " + msg)
    from twisted.trial.unittest import SkipTest
    raise SkipTest(msg)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port, host=LOOPBACK):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_socket_open(path):
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def wait_until(predicate, timeout, what="condition", interval=0.05, proc=None):
    """Poll C{predicate} until true, at most C{timeout} seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: process exited with %s while waiting for %s"
                               % (getattr(proc, "args", "?"), proc.returncode, what))
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_for_port(port, timeout=DEFAULT_START_TIMEOUT, host=LOOPBACK, proc=None):
    wait_until(lambda: port_open(port, host), timeout, "%s:%d" % (host, port), proc=proc)


def sha256_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def deterministic_bytes(size, seed):
    """C{size} pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def read_jsonl(path):
    """Parse a JSON-lines log file (missing file -> [])."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        pass
    return out


def run(argv, timeout=120, check=True, env=None, cwd=None, input=None):
    """C{subprocess.run} with captured text output, a timeout, and an error
    message that includes the output (the first thing one needs)."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env, cwd=cwd, input=input, stdin=None if input else subprocess.DEVNULL)
    p.stdout = p.stdout.decode("utf-8", "replace")
    p.stderr = p.stderr.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\nstdout:\n%s\nstderr:\n%s" % (
            p.returncode, " ".join(map(str, argv)), p.stdout[-4000:], p.stderr[-4000:]))
    return p


# ---------------------------------------------------------------- workdir

class Workdir:
    """
    A temporary directory that owns everything a test class starts.

    C{cleanup()} runs the registered cleanups (process stops) in reverse
    order, then removes the directory, unless C{HUBPROXY_KEEP_WORKDIR=1}
    (handy to read logs after a failure).  Use it as::

        cls.work = Workdir("registry")
        cls.registry = Registry(cls.work)
        ...
        cls.work.cleanup()      # in tearDownClass (or addCleanup)
    """

    def __init__(self, name="it", base=None):
        self.path = tempfile.mkdtemp(prefix="hubproxy-%s-" % name, dir=base)
        self._cleanups = []
        self._lock = threading.Lock()

    def sub(self, *names):
        p = os.path.join(self.path, *names)
        os.makedirs(p, exist_ok=True)
        return p

    def join(self, *names):
        return os.path.join(self.path, *names)

    def write(self, name, content, mode=None):
        p = self.join(name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        if mode is not None:
            os.chmod(p, mode)
        return p

    def add_cleanup(self, fn, *args):
        with self._lock:
            self._cleanups.append((fn, args))

    def cleanup(self):
        errors = []
        while True:
            with self._lock:
                if not self._cleanups:
                    break
                fn, args = self._cleanups.pop()
            try:
                fn(*args)
            except Exception as e:  # keep going: stop everything we can
                errors.append(e)
        if os.environ.get("HUBPROXY_KEEP_WORKDIR") != "1":
            shutil.rmtree(self.path, ignore_errors=True)
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


# ---------------------------------------------------------------- processes

_LIVE = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit():
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        try:
            p.stop(timeout=5)
        except Exception:
            pass


atexit.register(_stop_all_at_exit)


class Process:
    """
    One subprocess with its output in C{workdir/logs/NAME.log}.

    It starts in its own session (so C{stop()} can signal the whole process
    group it created, e.g. nginx's workers, and a Ctrl-C on the test run does
    not hit it first), then waits until C{port} accepts TCP connections or
    C{unix_socket} accepts connections or C{ready()} returns true, at most
    C{timeout} seconds; if the process exits early the error carries its log.
    """

    def __init__(self, name, argv, workdir, port=None, unix_socket=None, ready=None,
                 env=None, cwd=None, timeout=DEFAULT_START_TIMEOUT, stop_timeout=10.0):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.workdir = workdir
        self.port = port
        self.unix_socket = unix_socket
        self.log_path = os.path.join(workdir.sub("logs"), name + ".log")
        self.stop_timeout = stop_timeout
        self.popen = None
        self._start(env, cwd, timeout, ready)

    def _start(self, env, cwd, timeout, ready):
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True)
        finally:
            log.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.workdir.add_cleanup(self.stop)
        self.pid = self.popen.pid
        checks = []
        if self.port is not None:
            checks.append(lambda: port_open(self.port))
        if self.unix_socket is not None:
            checks.append(lambda: unix_socket_open(self.unix_socket))
        if ready is not None:
            checks.append(ready)
        try:
            wait_until(lambda: all(c() for c in checks), timeout,
                       "%s to be ready" % self.name, proc=self.popen)
        except Exception as e:
            self.stop()
            raise RuntimeError("%s did not start: %s\n--- %s ---\n%s" % (
                self.name, e, self.log_path, self.log_text()[-4000:])) from None

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout=None):
        """SIGTERM, wait, then SIGKILL; both to the process group we made."""
        timeout = self.stop_timeout if timeout is None else timeout
        p = self.popen
        if p is None:
            return
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # leftovers in the group we created (workers, children), then the
        # leader itself if it ignored SIGTERM
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------- resolv guard

def resolv_guard(workdir, argv):
    """
    Wrap C{argv} so it runs in a private mount namespace whose
    /etc/resolv.conf says C{nameserver 127.0.0.1}: any attempt of the
    program to resolve a public name (Docker Hub fallback, ...) fails fast on
    loopback instead of leaving the machine.
    """
    resolv = workdir.join("resolv.conf")
    if not os.path.exists(resolv):
        workdir.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, resolv] + list(argv)


# ---------------------------------------------------------------- TLS material

def make_self_signed_cert(directory, cn="fake-auth", days=30):
    """Write C{cert.pem} and C{key.pem} (RSA 2048) into C{directory}."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


# ---------------------------------------------------------------- HTTP helpers

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def http_request(url, method="GET", headers=None, data=None, timeout=30):
    """
    One HTTP request, never following redirects, never using an environment
    proxy.  Returns C{(status, headers, body_bytes)}; HTTP errors are
    returned, not raised.
    """
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, e.headers, body


def basic_auth(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def parse_www_authenticate(value):
    """C{'Bearer realm="x",service="y"'} -> ('bearer', {'realm': 'x', ...})."""
    scheme, _, rest = (value or "").partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


# ---------------------------------------------------------------- nginx

class Nginx:
    """
    An nginx with the given C{server {}} blocks, on its own prefix.

    C{servers} is a list of C{(port, body)}; each body is the inside of a
    server block (C{listen} is added).  Access logs are JSON lines in
    C{access.log} (peer, port, method, uri, status, bytes, user agent, range,
    sig query parameter presence), readable with L{requests}.
    nginx runs as root (C{user root}) so it can read the 0700 temporary
    directories the fixtures create.
    """

    LOG_FORMAT = (
        "log_format fixture escape=json '{\"peer\":\"$remote_addr:$remote_port\","
        "\"port\":$server_port,\"method\":\"$request_method\",\"uri\":\"$request_uri\","
        "\"status\":$status,\"bytes\":$body_bytes_sent,\"user_agent\":\"$http_user_agent\","
        "\"range\":\"$http_range\",\"host\":\"$host\",\"time\":$msec}';")

    def __init__(self, workdir, name, servers, http_extra="", timeout=DEFAULT_START_TIMEOUT):
        require("nginx")
        self.workdir = workdir
        self.name = name
        self.prefix = workdir.sub(name)
        for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.prefix, "tmp", t), exist_ok=True)
        self.access_log = os.path.join(self.prefix, "access.log")
        self.error_log = os.path.join(self.prefix, "error.log")
        blocks = []
        for port, body in servers:
            blocks.append("  server {\n    listen %s:%d;\n%s\n  }\n" % (LOOPBACK, port, body))
        p = self.prefix
        conf = """
user root;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 512; }}
http {{
  {fmt}
  access_log {p}/access.log fixture;
  client_body_temp_path {p}/tmp/body;
  proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fastcgi;
  uwsgi_temp_path {p}/tmp/uwsgi;
  scgi_temp_path {p}/tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 30;
  server_tokens off;
  {extra}
{blocks}
}}
""".format(p=p, fmt=self.LOG_FORMAT, extra=http_extra, blocks="".join(blocks))
        self.conf = os.path.join(p, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        ports = self.ports = [port for port, _ in servers]
        # -e: early error log before the config is read (not /var/log/nginx)
        self.process = Process(
            name, [which("nginx"), "-e", self.error_log, "-p", p, "-c", self.conf, "-g", "daemon off;"],
            workdir, ready=lambda: all(port_open(x) for x in ports), timeout=timeout)

    def requests(self):
        return read_jsonl(self.access_log)

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------- token server

class TokenServer:
    """
    Docker-Hub-like token server (L{tokenserver} script in a subprocess).

    @ivar port, url, realm: where it listens; C{realm} is C{url + "/token"}.
    @ivar cert_path, key_path: the self-signed signing certificate (the
        registry's C{rootcertbundle}) and its key.
    @ivar users: C{{user: password}} accepted with Basic auth / OAuth2.
    Anonymous clients get pull-only tokens unless C{anonymous=False}.
    """

    def __init__(self, workdir, users=None, anonymous=True, ttl=300,
                 service="registry.docker.io", issuer="fake-auth", name="tokenserver"):
        self.workdir = workdir
        self.users = dict(users if users is not None else {"admin": "admin"})
        self.anonymous = anonymous
        self.service = service
        self.issuer = issuer
        self.ttl = ttl
        self.cert_path, self.key_path = make_self_signed_cert(workdir.sub(name), cn=issuer)
        self.port = free_port()
        self.url = "http://%s:%d" % (LOOPBACK, self.port)
        self.realm = self.url + "/token"
        self.log_path = os.path.join(workdir.sub(name), "requests.jsonl")
        argv = [PYTHON, os.path.join(HERE, "tokenserver.py"), "--port", self.port,
                "--cert", self.cert_path, "--key", self.key_path, "--issuer", issuer,
                "--service", service, "--ttl", ttl, "--log", self.log_path]
        for u, pw in self.users.items():
            argv += ["--user", "%s:%s" % (u, pw)]
        if not anonymous:
            argv.append("--no-anonymous")
        self.process = Process(name, argv, workdir, port=self.port)

    @property
    def credentials(self):
        """First C{(user, password)} or None."""
        return next(iter(self.users.items()), None)

    def stats(self):
        status, _, body = http_request(self.url + "/stats")
        assert status == 200, status
        return json.loads(body)

    def issued(self):
        """Number of tokens issued since start (or the last L{reset})."""
        return self.stats()["issued"]

    def reset(self):
        http_request(self.url + "/stats/reset", method="POST", data=b"")

    def token(self, scope, user=None, password=None, service=None):
        """Fetch a token directly (counts as issued)."""
        q = urllib.parse.urlencode({"service": service or self.service, "scope": scope})
        headers = {}
        if user is not None:
            headers["Authorization"] = basic_auth(user, password)
        status, _, body = http_request(self.realm + "?" + q, headers=headers)
        if status != 200:
            raise RuntimeError("token server answered %d: %r" % (status, body))
        return json.loads(body)["token"]

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------- registry

class Registry:
    """
    Debian's CNCF distribution registry (C{docker-registry serve cfg.yml}).

    @param token_server: a L{TokenServer} for Docker-Hub-like token auth
        (C{None} = anonymous registry, push/pull for everyone).
    @param cdn: when true, blob GETs answer 307 to an nginx "CDN" that
        serves the registry's storage directory (the redirect middleware
        builds C{http://127.0.0.1:CDNPORT/docker/registry/v2/blobs/sha256/
        XX/DIGEST/data}; its baseurl's path is ignored by registry 2.8).
    @param remoteurl: pull-through cache mode (C{proxy.remoteurl}), with
        optional C{remote_username}/C{remote_password}.  A pull-through
        registry is read-only (no pushes).

    @ivar port, url (C{http://127.0.0.1:P}), host (C{127.0.0.1:P}),
        storage, cdn_port, cdn_url, cdn (the L{Nginx} or None),
        images (filled by L{seed_standard_images}).
    """

    def __init__(self, workdir, token_server=None, cdn=False, remoteurl=None,
                 remote_username=None, remote_password=None, name=None, timeout=DEFAULT_START_TIMEOUT):
        require("docker-registry")
        self.workdir = workdir
        self.token_server = token_server
        self.name = name or ("registry-%d" % free_port())
        self.dir = workdir.sub(self.name)
        self.storage = os.path.join(self.dir, "storage")
        os.makedirs(self.storage, exist_ok=True)
        self.port = free_port()
        self.host = "%s:%d" % (LOOPBACK, self.port)
        self.url = "http://" + self.host
        self.images = {}
        self.cdn = None
        self.cdn_port = None
        self.cdn_url = None
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": self.storage},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "fixture-secret-%d" % self.port,
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "health": {"storagedriver": {"enabled": False}},
        }
        if token_server is not None:
            cfg["auth"] = {"token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": token_server.cert_path,
            }}
        if cdn:
            self.cdn_port = free_port()
            self.cdn_url = "http://%s:%d" % (LOOPBACK, self.cdn_port)
            cfg["middleware"] = {"storage": [{"name": "redirect",
                                              "options": {"baseurl": self.cdn_url}}]}
            # Only blob data is reachable (as on a real CDN), and only GET/HEAD.
            body = """
    root %s;
    location ~ "^/docker/registry/v2/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data$" {
      limit_except GET { deny all; }
      add_header X-Fixture-CDN 1;
    }
    location / { return 404; }
""" % self.storage
            self.cdn = Nginx(workdir, self.name + "-cdn", [(self.cdn_port, body)])
        if remoteurl:
            cfg["proxy"] = {"remoteurl": remoteurl}
            if remote_username:
                cfg["proxy"]["username"] = remote_username
                cfg["proxy"]["password"] = remote_password or ""
        self.config_path = os.path.join(self.dir, "config.yml")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=1)  # JSON is YAML
        self.process = Process(self.name, [which("docker-registry"), "serve", self.config_path],
                               workdir, port=self.port, timeout=timeout)

    @property
    def push_credentials(self):
        """C{"user:password"} for skopeo --dest-creds, or None."""
        if self.token_server is None:
            return None
        c = self.token_server.credentials
        return "%s:%s" % c if c else None

    def get(self, path, accept=None, method="GET", creds=True, headers=None):
        """
        Request C{/v2/...} directly, doing the token dance when the registry
        asks for it (Basic credentials of the token server's first user when
        C{creds}).  Returns C{(status, headers, body)}; redirects are not
        followed.
        """
        hdrs = dict(headers or {})
        if accept:
            hdrs["Accept"] = accept if isinstance(accept, str) else ", ".join(accept)
        status, h, body = http_request(self.url + path, method=method, headers=hdrs)
        if status == 401 and self.token_server is not None:
            scheme, params = parse_www_authenticate(h.get("WWW-Authenticate"))
            if scheme == "bearer":
                q = {"service": params.get("service", "")}
                if "scope" in params:
                    q["scope"] = params["scope"]
                th = {}
                c = self.token_server.credentials
                if creds and c:
                    th["Authorization"] = basic_auth(*c)
                ts, _, tb = http_request(params["realm"] + "?" + urllib.parse.urlencode(q), headers=th)
                if ts != 200:
                    return ts, _, tb
                hdrs["Authorization"] = "Bearer " + json.loads(tb)["token"]
                status, h, body = http_request(self.url + path, method=method, headers=hdrs)
        return status, h, body

    def blob_path(self, digest):
        """Where the registry stores a blob (what the CDN serves)."""
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")

    def stop(self):
        self.process.stop()
        if self.cdn is not None:
            self.cdn.stop()


# ---------------------------------------------------------------- OCI images

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_ACCEPT = [MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST]

FIXED_MTIME = 1700000000
HELLO_TEXT = b"hello from hubproxy fixtures\n"


class _HashWriter:
    """File-like that hashes and counts what passes through to C{raw}."""

    def __init__(self, raw):
        self.raw = raw
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.h.update(b)
        self.size += len(b)
        return self.raw.write(b)

    def flush(self):
        self.raw.flush()

    def digest(self):
        return "sha256:" + self.h.hexdigest()


class _RandomReader:
    """Reads C{size} seeded pseudo-random bytes, generated 1 MiB at a time."""

    def __init__(self, size, seed):
        self.left = size
        self.rng = random.Random(seed)

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = self.left
        n = min(n, 1 << 20)
        self.left -= n
        return self.rng.randbytes(n)


def _tarinfo(name, size=0, mode=0o644, type_=tarfile.REGTYPE):
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = mode
    ti.type = type_
    ti.mtime = FIXED_MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


class OCILayout:
    """
    Writes an OCI image layout directory (C{oci-layout}, C{index.json},
    C{blobs/sha256/...}) that C{skopeo copy oci:DIR:TAG} can push.
    Everything is deterministic: the same inputs give the same digests.
    """

    def __init__(self, path):
        self.path = path
        self.blobs = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs = []

    def add_blob(self, data):
        d = sha256_bytes(data)
        p = os.path.join(self.blobs, d.split(":")[1])
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        return d, len(data)

    def add_json(self, obj, media_type):
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        d, n = self.add_blob(data)
        return {"mediaType": media_type, "digest": d, "size": n}

    def add_layer(self, files, compresslevel=6):
        """
        A gzip tar layer from C{files}: list of C{(name, bytes)} or
        C{(name, (size, seed))} for streamed random content (never held in
        memory).  Returns C{(descriptor, diff_id)}.
        """
        tmp = os.path.join(self.blobs, ".tmp-%d-%d" % (os.getpid(), threading.get_ident()))
        with open(tmp, "wb") as raw:
            comp = _HashWriter(raw)
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=comp, mtime=0,
                               compresslevel=compresslevel)
            uncomp = _HashWriter(gz)
            tf = tarfile.open(fileobj=uncomp, mode="w|", format=tarfile.GNU_FORMAT,
                              bufsize=1 << 16)
            dirs = set()
            for name, content in files:
                parts = name.strip("/").split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        tf.addfile(_tarinfo(d + "/", mode=0o755, type_=tarfile.DIRTYPE))
                if isinstance(content, tuple):
                    size, seed = content
                    tf.addfile(_tarinfo(name.strip("/"), size), _RandomReader(size, seed))
                else:
                    mode = 0o755 if name.endswith(".sh") else 0o644
                    tf.addfile(_tarinfo(name.strip("/"), len(content), mode), io.BytesIO(content))
            tf.close()
            gz.close()
        digest = comp.digest()
        final = os.path.join(self.blobs, digest.split(":")[1])
        os.replace(tmp, final)
        return {"mediaType": MT_OCI_LAYER_GZIP, "digest": digest, "size": comp.size}, uncomp.digest()

    def add_image(self, layers, arch="amd64", variant=None, cmd=("/hello.sh",), labels=None):
        """C{layers}: list of C{(descriptor, diff_id)}.  Returns the manifest descriptor."""
        config = {
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": list(cmd),
                "WorkingDir": "/",
                "Labels": dict(labels or {}),
            },
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "hubproxy fixture layer %d" % i}
                        for i in range(len(layers))],
        }
        if variant:
            config["variant"] = variant
        cdesc = self.add_json(config, MT_OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cdesc,
                    "layers": [d for d, _ in layers]}
        mdesc = self.add_json(manifest, MT_OCI_MANIFEST)
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        mdesc["platform"] = platform
        return mdesc

    def add_index(self, manifests):
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}
        return self.add_json(index, MT_OCI_INDEX)

    def tag(self, desc, ref):
        d = {k: v for k, v in desc.items() if k in ("mediaType", "digest", "size")}
        d["annotations"] = {"org.opencontainers.image.ref.name": ref}
        self.refs.append(d)
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self.refs}, f)


def skopeo(*args, timeout=300, check=True):
    """Run skopeo with a policy that accepts everything (no /etc/containers
    policy surprises) and return the completed process."""
    require("skopeo")
    policy = os.path.join(tempfile.gettempdir(), "hubproxy-skopeo-policy.json")
    if not os.path.exists(policy):
        with open(policy + ".tmp%d" % os.getpid(), "w") as f:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
        os.replace(policy + ".tmp%d" % os.getpid(), policy)
    return run(["skopeo", "--policy", policy] + [str(a) for a in args], timeout=timeout, check=check)


def _push(layout_dir, ref, registry, repo, tag, fmt=None, all_=False):
    argv = ["copy", "--quiet", "--dest-tls-verify=false", "--retry-times", "2"]
    creds = registry.push_credentials
    if creds:
        argv += ["--dest-creds", creds]
    if fmt:
        argv += ["--format", fmt]
    if all_:
        argv.append("--all")
    argv += ["oci:%s:%s" % (layout_dir, ref), "docker://%s/%s:%s" % (registry.host, repo, tag)]
    return argv


def describe_image(registry, repo, tag):
    """
    What the registry serves for C{repo:tag}, read back over HTTP: the
    manifest digest (sha256 of the bytes served), media type, size, config
    and layers; for an index, the same for each platform under
    C{"platforms"} keyed C{"linux/amd64"}, C{"linux/arm64/v8"}.
    """
    def manifest(ref):
        status, h, body = registry.get("/v2/%s/manifests/%s" % (repo, ref), accept=MANIFEST_ACCEPT)
        if status != 200:
            raise RuntimeError("GET manifest %s:%s -> %d %r" % (repo, ref, status, body[:300]))
        digest = sha256_bytes(body)
        hdr = h.get("Docker-Content-Digest")
        assert hdr in (None, digest), (hdr, digest)
        return json.loads(body), digest, len(body), h.get("Content-Type")

    m, digest, size, ctype = manifest(tag)
    info = {"repository": repo, "tag": tag, "reference": "%s/%s:%s" % (registry.host, repo, tag),
            "manifest_digest": digest, "manifest_size": size,
            "media_type": m.get("mediaType") or ctype}
    if info["media_type"] in (MT_OCI_INDEX, MT_DOCKER_LIST):
        info["platforms"] = {}
        for d in m["manifests"]:
            p = d["platform"]
            key = "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)
            sub, sdigest, ssize, _ = manifest(d["digest"])
            assert sdigest == d["digest"], (sdigest, d)
            info["platforms"][key] = {
                "manifest_digest": sdigest, "manifest_size": ssize, "media_type": sub["mediaType"],
                "config_digest": sub["config"]["digest"], "config_size": sub["config"]["size"],
                "layers": [{"digest": l["digest"], "size": l["size"], "media_type": l["mediaType"]}
                           for l in sub["layers"]]}
    else:
        info.update({
            "config_digest": m["config"]["digest"], "config_size": m["config"]["size"],
            "layers": [{"digest": l["digest"], "size": l["size"], "media_type": l["mediaType"]}
                       for l in m["layers"]]})
    return info


def _hello_files(tag):
    script = b"#!/bin/sh\ncat /hello.txt\necho image=" + tag.encode() + b"\n"
    return [("hello.txt", HELLO_TEXT), ("hello.sh", script)]


def build_standard_layouts(base, big_layer_size=None, big_seed=1234):
    """
    Build the OCI layouts of the standard images under C{base}.  Returns
    C{[(layout_dir, ref, repo, tag, format, all)]}.  Separate layouts keep
    the refs apart; deterministic content gives stable digests per run.
    """
    out = []
    # library/hello:1 -- pushed as Docker schema2, single arch, 2 layers
    d = os.path.join(base, "hello")
    lay = OCILayout(d)
    l1 = lay.add_layer(_hello_files("library/hello:1"))
    l2 = lay.add_layer([("etc/hello/release", b"library/hello 1\n")])
    lay.tag(lay.add_image([l1, l2], labels={"fixture": "library/hello:1"}), "1")
    out.append((d, "1", "library/hello", "1", "v2s2", False))

    # library/multi:1 -- OCI index amd64 + arm64/v8, one shared layer
    d = os.path.join(base, "multi")
    lay = OCILayout(d)
    shared = lay.add_layer(_hello_files("library/multi:1"))
    amd = lay.add_layer([("etc/arch", b"amd64\n")])
    arm = lay.add_layer([("etc/arch", b"arm64/v8\n")])
    m_amd = lay.add_image([shared, amd], arch="amd64", labels={"fixture": "library/multi:1"})
    m_arm = lay.add_image([shared, arm], arch="arm64", variant="v8", labels={"fixture": "library/multi:1"})
    lay.tag(lay.add_index([m_amd, m_arm]), "1")
    out.append((d, "1", "library/multi", "1", None, True))

    # oci/single:1 -- single-arch OCI manifest (kept OCI)
    d = os.path.join(base, "oci-single")
    lay = OCILayout(d)
    l1 = lay.add_layer(_hello_files("oci/single:1"))
    lay.tag(lay.add_image([l1], labels={"fixture": "oci/single:1"}), "1")
    out.append((d, "1", "oci/single", "1", None, False))

    # team/app/web:2 -- two-level repository name, schema2
    d = os.path.join(base, "team-app-web")
    lay = OCILayout(d)
    l1 = lay.add_layer(_hello_files("team/app/web:2"))
    l2 = lay.add_layer([("srv/www/index.html", b"<h1>team/app/web 2</h1>\n")])
    lay.tag(lay.add_image([l1, l2], labels={"fixture": "team/app/web:2"}), "2")
    out.append((d, "2", "team/app/web", "2", "v2s2", False))

    if big_layer_size:
        # library/big:1 -- one big streamed random layer.  gzip level 0
        # (stored blocks): random data does not compress, so compressing
        # would only cost build time (256 MiB: ~5 s with level 0 vs ~11 s)
        d = os.path.join(base, "big")
        lay = OCILayout(d)
        l1 = lay.add_layer(_hello_files("library/big:1"))
        l2 = lay.add_layer([("big.bin", (int(big_layer_size), big_seed))], compresslevel=0)
        lay.tag(lay.add_image([l1, l2], labels={"fixture": "library/big:1"}), "1")
        out.append((d, "1", "library/big", "1", "v2s2", False))
    return out


def seed_standard_images(registry, big_layer_size=None, big_seed=1234):
    """
    Build and push the standard images into C{registry}; returns (and stores
    in C{registry.images} and C{<registry dir>/images.json}) a dict keyed
    C{"library/hello:1"}, C{"library/multi:1"}, C{"oci/single:1"},
    C{"team/app/web:2"} (and C{"library/big:1"} if C{big_layer_size}) whose
    values come from L{describe_image}, plus C{"layer_text"}: the content of
    C{/hello.txt} in every image.
    """
    base = os.path.join(registry.dir, "layouts")
    specs = build_standard_layouts(base, big_layer_size, big_seed)
    # push in parallel (2 at a time: 2 cores), each bounded by a timeout
    procs = []
    pending = list(specs)
    failures = []
    while pending or procs:
        while pending and len(procs) < 2:
            d, ref, repo, tag, fmt, all_ = pending.pop(0)
            argv = _push(d, ref, registry, repo, tag, fmt, all_)
            p = subprocess.Popen(["skopeo", "--policy", _skopeo_policy()] + argv,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
            procs.append((p, repo, time.monotonic()))
        p, repo, t0 = procs.pop(0)
        try:
            out, _ = p.communicate(timeout=max(1, 600 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            failures.append("%s: timeout" % repo)
            continue
        if p.returncode != 0:
            failures.append("%s: %s" % (repo, out.decode("utf-8", "replace")[-2000:]))
    if failures:
        raise RuntimeError("skopeo push failed:\n" + "\n".join(failures))
    images = {}
    for d, ref, repo, tag, fmt, all_ in specs:
        images["%s:%s" % (repo, tag)] = describe_image(registry, repo, tag)
    images["layer_text"] = HELLO_TEXT.decode()
    registry.images = images
    with open(os.path.join(registry.dir, "images.json"), "w") as f:
        json.dump(images, f, indent=1, sort_keys=True)
    return images


def _skopeo_policy():
    skopeo("--version")  # writes the policy file
    return os.path.join(tempfile.gettempdir(), "hubproxy-skopeo-policy.json")


# ---------------------------------------------------------------- GitHub

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fixture", "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
    "GIT_COMMITTER_NAME": "Fixture", "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}


def git_env(extra=None):
    env = dict(os.environ)
    env.update(GIT_ENV)
    env["HOME"] = env.get("HUBPROXY_GIT_HOME", tempfile.gettempdir())
    # never let a test's git go through an environment proxy
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def git(*args, cwd=None, timeout=120, check=True, env=None):
    require("git")
    return run(["git", "-c", "init.defaultBranch=main", "-c", "protocol.version=2"] + [str(a) for a in args],
               cwd=cwd, timeout=timeout, check=check, env=git_env(env))


class GitServer:
    """
    GitHub look-alike: one nginx with four server blocks plus fcgiwrap.

      - C{url} ("github.com"): smart HTTP for C{/OWNER/REPO.git} and
        C{/OWNER/REPO} (git-http-backend's non-strict lookup adds C{.git}),
        protocol v2 (C{Git-Protocol} header passed on), with
        C{uploadpack.allowFilter} and C{allowAnySHA1InWant};
        C{/OWNER/REPO/releases/download/TAG/FILE} -> 302 to
        C{cdn_url + /github-production-release-asset/OWNER/REPO/TAG/FILE?sig=...};
        C{/OWNER/REPO/archive/refs/heads/B.tar.gz} (also C{refs/tags/T}
        and C{.zip}) -> 302 to C{codeload_url + /OWNER/REPO/tar.gz/refs/heads/B};
        bare C{/OWNER/REPO/archive/REF.tar.gz} -> C{codeload_url +
        /OWNER/REPO/tar.gz/REF} (as GitHub does);
        C{/OWNER/REPO/raw/REF/PATH} -> 302 to C{raw_url + /OWNER/REPO/REF/PATH}.
      - C{cdn_url}: release assets; 403 without a C{sig} query parameter.
      - C{codeload_url}: archives made with C{git archive}.
      - C{raw_url} (raw.githubusercontent.com): C{/OWNER/REPO/REF/PATH}.

    @ivar owner, repo: C{"owner"}, C{"repo"}.
    @ivar head: commit id of C{main}; C{tag_commit}: of tag C{v1}.
    @ivar files: C{{path: bytes}} of the working tree at C{main}.
    @ivar assets: C{{name: {"size", "sha256", "path", "url"}}} release
        assets of tag C{v1} (C{tool.tar.gz}: a few hundred KiB of seeded
        random bytes).
    @ivar archives: C{{"main.tar.gz": {"sha256", "size", "path"}, ...}}.
    @ivar nginx: the L{Nginx}; C{requests()} returns its JSON access log.
    """

    def __init__(self, workdir, owner="owner", repo="repo", asset_size=300 * 1024):
        require("nginx", "fcgiwrap", "git", "git-http-backend")
        self.workdir = workdir
        self.owner, self.repo = owner, repo
        self.dir = workdir.sub("github")
        self.port, self.cdn_port, self.codeload_port, self.raw_port = (free_port() for _ in range(4))
        self.url = "http://%s:%d" % (LOOPBACK, self.port)
        self.cdn_url = "http://%s:%d" % (LOOPBACK, self.cdn_port)
        self.codeload_url = "http://%s:%d" % (LOOPBACK, self.codeload_port)
        self.raw_url = "http://%s:%d" % (LOOPBACK, self.raw_port)
        self.git_root = os.path.join(self.dir, "git")
        self.bare = os.path.join(self.git_root, owner, repo + ".git")
        self._make_repo()
        self._make_static(asset_size)
        sock = os.path.join(self.dir, "fcgiwrap.sock")
        self.fcgiwrap = Process("fcgiwrap", [which("fcgiwrap"), "-c", "4", "-s", "unix:" + sock],
                                workdir, unix_socket=sock)
        self.nginx = Nginx(workdir, "github-nginx", self._servers(sock))

    # -- content
    def _make_repo(self):
        work = os.path.join(self.dir, "work")
        os.makedirs(work)
        o, r = self.owner, self.repo
        install = (
            "#!/bin/sh\n"
            "# installer fixture: hubproxy rewrites these GitHub URLs\n"
            "set -e\n"
            "curl -fsSL https://github.com/%s/%s/releases/download/v1/tool.tar.gz -o /tmp/tool.tar.gz\n"
            "curl -fsSL https://raw.githubusercontent.com/%s/%s/main/other.sh | sh\n"
            "git clone https://github.com/%s/%s.git\n" % (o, r, o, r, o, r))
        self.files = {
            "README.md": b"# fixture repository\n",
            "install.sh": install.encode(),
            "other.sh": b"#!/bin/sh\necho other\n",
            "src/main.c": b"int main(void) { return 0; }\n",
            "data/blob.bin": deterministic_bytes(64 * 1024, 42),
        }
        git("init", "-q", work)
        dates = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]
        steps = [["README.md", "src/main.c"], ["install.sh", "other.sh"], ["data/blob.bin"]]
        for i, (names, date) in enumerate(zip(steps, dates)):
            for n in names:
                p = os.path.join(work, n)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(self.files[n])
                if n.endswith(".sh"):
                    os.chmod(p, 0o755)
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", "fixture commit %d" % (i + 1), cwd=work,
                env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
            if i == 1:
                git("tag", "v1", cwd=work)
        self.head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
        self.tag_commit = git("rev-parse", "v1^{commit}", cwd=work).stdout.strip()
        os.makedirs(os.path.dirname(self.bare), exist_ok=True)
        git("clone", "-q", "--bare", work, self.bare)
        for k, v in (("uploadpack.allowFilter", "true"), ("uploadpack.allowAnySHA1InWant", "true"),
                     ("uploadpack.allowReachableSHA1InWant", "true"), ("http.uploadpack", "true"),
                     ("http.receivepack", "false"), ("protocol.version", "2")):
            git("config", k, v, cwd=self.bare)
        git("update-server-info", cwd=self.bare)
        self.work = work

    def _make_static(self, asset_size):
        o, r = self.owner, self.repo
        # release assets
        rel = os.path.join(self.dir, "cdn", "github-production-release-asset", o, r, "v1")
        os.makedirs(rel)
        self.assets = {}
        for name, data in (("tool.tar.gz", deterministic_bytes(asset_size, 7)),
                           ("checksums.txt", None)):
            if data is None:
                data = "".join("%s  %s\n" % (a["sha256"], n) for n, a in self.assets.items()).encode()
            p = os.path.join(rel, name)
            with open(p, "wb") as f:
                f.write(data)
            self.assets[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "path": p,
                                 "url": "%s/%s/%s/releases/download/v1/%s" % (self.url, o, r, name)}
        # codeload archives
        self.archives = {}
        for ref, refpath in (("main", "refs/heads/main"), ("v1", "refs/tags/v1"),
                             ("main", "main"), ("v1", "v1")):
            for fmt, ext in (("tar.gz", "tar.gz"), ("zip", "zip")):
                p = os.path.join(self.dir, "codeload", o, r, fmt, refpath)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                git("archive", "--format=" + ext, "--prefix=%s-%s/" % (r, ref), "-o", p, ref, cwd=self.work)
                data = open(p, "rb").read()
                self.archives["%s.%s" % (ref, ext)] = {
                    "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "path": p}
        # raw.githubusercontent.com
        for ref in ("main", self.head):
            for n, data in self.files.items():
                p = os.path.join(self.dir, "raw", o, r, ref, n)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)

    def _servers(self, sock):
        d = self.dir
        github = r"""
    location ~ ^/[^/]+/[^/]+?(\.git)?/(info/refs|git-upload-pack|HEAD|objects/.+)$ {
      client_max_body_size 0;
      fastcgi_pass unix:%(sock)s;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT %(root)s;
      fastcgi_param GIT_HTTP_EXPORT_ALL 1;
      fastcgi_param GIT_PROTOCOL $http_git_protocol;
      fastcgi_param PATH_INFO $uri;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_buffering off;
    }
    location ~ ^/([^/]+)/([^/]+)/releases/download/([^/]+)/([^/]+)$ {
      return 302 %(cdn)s/github-production-release-asset/$1/$2/$3/$4?sig=fixture-signature&X-Amz-Expires=300&response-content-disposition=attachment%%3B%%20filename%%3D$4;
    }
    location ~ ^/([^/]+)/([^/]+)/archive/refs/(heads|tags)/(.+)\.(tar\.gz|zip)$ {
      return 302 %(codeload)s/$1/$2/$5/refs/$3/$4;
    }
    location ~ ^/([^/]+)/([^/]+)/archive/(.+)\.(tar\.gz|zip)$ {
      return 302 %(codeload)s/$1/$2/$4/$3;
    }
    location ~ ^/([^/]+)/([^/]+)/raw/(.+)$ {
      return 302 %(raw)s/$1/$2/$3;
    }
    location = / { return 200 "github look-alike\n"; }
    location / { return 404 "Not Found\n"; }
""" % {"sock": sock, "root": self.git_root, "cdn": self.cdn_url, "codeload": self.codeload_url,
       "raw": self.raw_url}
        cdn = """
    root %s/cdn;
    location /github-production-release-asset/ {
      if ($arg_sig = "") { return 403 "AccessDenied: missing sig\\n"; }
      limit_except GET { deny all; }
    }
    location / { return 403 "AccessDenied\\n"; }
""" % d
        codeload = """
    root %s/codeload;
    location ~ /tar\\.gz/ { default_type application/x-gzip; }
    location ~ /zip/ { default_type application/zip; }
    location / { return 404; }
""" % d
        raw = """
    root %s/raw;
    default_type text/plain;
    location / { }
""" % d
        return [(self.port, github), (self.cdn_port, cdn), (self.codeload_port, codeload),
                (self.raw_port, raw)]

    def requests(self):
        """JSON access log entries of all four server blocks (C{port} tells which)."""
        return self.nginx.requests()

    def clone_url(self, suffix=".git"):
        return "%s/%s/%s%s" % (self.url, self.owner, self.repo, suffix)

    def stop(self):
        self.nginx.stop()
        self.fcgiwrap.stop()


# ---------------------------------------------------------------- Hugging Face

def git_blob_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HFServer:
    """
    Hugging Face Hub look-alike (L{hfserver} script): hub API + resolve on
    C{url}, signed-URL "LFS CDN" on C{cdn_url}.

    @param repos: C{{"org/model": {path: bytes | (size, seed)}}}; an entry
        given as C{(size, seed)} or bigger than C{lfs_threshold} is an LFS
        file (302 to the CDN).  Default: C{org/model} with C{config.json},
        C{README.md}, C{tokenizer/vocab.txt} (small) and C{model.safetensors}
        (LFS, C{lfs_size} seeded random bytes).  Dataset repos: key
        C{"datasets/org/name"}.
    @ivar repos: C{{"org/model": {"sha": commit, "files": {path: {"size",
        "sha256", "oid", "lfs"}}}}}.
    @ivar requests(): the JSON access log (C{server} is C{"hub"} or
        C{"cdn"}; C{peer}, C{user_agent}, C{method}, C{path}, C{status}).
    """

    def __init__(self, workdir, repos=None, lfs_size=3 * 1024 * 1024, lfs_threshold=1 << 20):
        self.workdir = workdir
        self.dir = workdir.sub("hf")
        if repos is None:
            repos = {"org/model": {
                "config.json": b'{"model_type": "fixture", "hidden_size": 8}\n',
                "README.md": b"---\nlicense: mit\n---\n# fixture model\n",
                "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\nworld\n",
                "model.safetensors": (lfs_size, 99),
            }}
        self.repos = {}
        manifest = {}
        for repo_id, files in repos.items():
            key = repo_id if repo_id.startswith("datasets/") else "models/" + repo_id
            entries = {}
            for path, content in sorted(files.items()):
                rel = os.path.join("files", key, path)
                full = os.path.join(self.dir, rel)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                if isinstance(content, tuple):
                    size, seed = content
                    h = hashlib.sha256()
                    rd = _RandomReader(size, seed)
                    with open(full, "wb") as f:
                        for chunk in iter(lambda: rd.read(1 << 20), b""):
                            h.update(chunk)
                            f.write(chunk)
                    sha, lfs = h.hexdigest(), True
                    pointer = ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
                               % (sha, size)).encode()
                    oid = git_blob_oid(pointer)
                else:
                    with open(full, "wb") as f:
                        f.write(content)
                    size, sha = len(content), hashlib.sha256(content).hexdigest()
                    lfs = size > lfs_threshold
                    oid = git_blob_oid(content)
                entries[path] = {"size": size, "sha256": sha, "oid": oid, "lfs": lfs, "file": rel}
            commit = hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()
            manifest[key] = {"sha": commit, "files": entries}
            self.repos[repo_id] = {"sha": commit,
                                   "files": {p: {k: v for k, v in e.items() if k != "file"}
                                             for p, e in entries.items()}}
            for p, e in entries.items():
                self.repos[repo_id]["files"][p]["path"] = os.path.join(self.dir, e["file"])
        with open(os.path.join(self.dir, "repos.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        self.port, self.cdn_port = free_port(), free_port()
        self.url = "http://%s:%d" % (LOOPBACK, self.port)
        self.cdn_url = "http://%s:%d" % (LOOPBACK, self.cdn_port)
        self.log_path = os.path.join(self.dir, "access.jsonl")
        self.process = Process("hfserver", [
            PYTHON, os.path.join(HERE, "hfserver.py"), "--port", self.port, "--cdn-port", self.cdn_port,
            "--data", self.dir, "--log", self.log_path],
            workdir, ready=lambda: port_open(self.port) and port_open(self.cdn_port))

    def requests(self):
        return read_jsonl(self.log_path)

    def client_env(self, hf_home, endpoint=None):
        """Environment for a C{huggingface_hub} client subprocess."""
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("HF_") or k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
                env.pop(k)
        env.update({
            "HF_ENDPOINT": endpoint or self.url,
            "HF_HOME": hf_home,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_ENABLE_HF_TRANSFER": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "30",
            "HF_HUB_DOWNLOAD_TIMEOUT": "60",
            "NO_PROXY": "*",
        })
        return env

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------- proxies

class Socks5Proxy:
    """
    microsocks on 127.0.0.1, outgoing connections bound to 127.0.0.1 (so it
    can only reach loopback).  C{user}/C{password} enable RFC 1929 auth.
    @ivar port, url (C{socks5://[u:p@]127.0.0.1:P}), log_path.
    """

    def __init__(self, workdir, user=None, password=None, name="microsocks"):
        require("microsocks")
        self.port = free_port()
        self.user, self.password = user, password
        argv = [which("microsocks"), "-i", LOOPBACK, "-p", self.port, "-b", LOOPBACK]
        if user is not None:
            argv += ["-u", user, "-P", password or ""]
        auth = "%s:%s@" % (user, password) if user is not None else ""
        self.url = "socks5://%s%s:%d" % (auth, LOOPBACK, self.port)
        self.process = Process(name + "-%d" % self.port, argv, workdir, port=self.port)
        self.log_path = self.process.log_path

    def log_text(self):
        return self.process.log_text()

    def stop(self):
        self.process.stop()


class HttpConnectProxy:
    """
    tinyproxy on 127.0.0.1 allowing CONNECT to any port (no C{ConnectPort}
    line = all ports) and plain HTTP proxying, from 127.0.0.1 only, logging
    every connection at level Connect.
    @ivar port, url (C{http://127.0.0.1:P}), log_path.
    """

    def __init__(self, workdir, name="tinyproxy"):
        require("tinyproxy")
        self.port = free_port()
        self.url = "http://%s:%d" % (LOOPBACK, self.port)
        d = workdir.sub("%s-%d" % (name, self.port))
        self.log_path = os.path.join(d, "tinyproxy.log")
        conf = os.path.join(d, "tinyproxy.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "User root", "Group root",
                "Port %d" % self.port, "Listen %s" % LOOPBACK,
                "Timeout 120", "MaxClients 100",
                "LogFile \"%s\"" % self.log_path, "LogLevel Connect",
                "PidFile \"%s\"" % os.path.join(d, "tinyproxy.pid"),
                "Allow 127.0.0.1", "DisableViaHeader Yes", "",
            ]))
        self.process = Process("%s-%d" % (name, self.port), [which("tinyproxy"), "-d", "-c", conf],
                               workdir, port=self.port)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------- dockerd / containerd / podman

class Dockerd:
    """
    A private dockerd (and the containerd it uses) for pull tests.

    dockerd 20.10 would silently use a system containerd at
    /run/containerd/containerd.sock if one runs; we start our own containerd
    (CRI plugin disabled, own root/state/socket) and pass it with
    C{--containerd} so the test owns everything, and L{ctr} talks to that
    same containerd.  dockerd runs with vfs, no iptables, no bridge, own
    data-root/exec-root/pidfile/socket, inside L{resolv_guard} (its Docker
    Hub fallback must fail on loopback).

    @param mirrors: C{registry-mirrors} (e.g. hubproxy's URL).
    @param insecure: C{insecure-registries} (C{"127.0.0.1:P"} or CIDR).
    @ivar socket, host (C{unix://...}), containerd_socket, data_root.
    """

    def __init__(self, workdir, mirrors=(), insecure=(), debug=False, timeout=60):
        require("dockerd", "docker", "containerd", "ctr", "runc", "unshare")
        self.workdir = workdir
        # short paths: unix sockets are limited to 108 bytes
        self.dir = tempfile.mkdtemp(prefix="hpd-")
        workdir.add_cleanup(shutil.rmtree, self.dir, True)
        d = self.dir
        self.containerd_socket = os.path.join(d, "ctd.sock")
        cconf = os.path.join(d, "containerd.toml")
        with open(cconf, "w") as f:
            f.write('version = 2\nroot = "%s/ctd-root"\nstate = "%s/ctd-state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    '[debug]\n  address = ""\n  level = "%s"\n[metrics]\n  address = ""\n'
                    % (d, d, self.containerd_socket, self.containerd_socket,
                       "debug" if debug else "info"))
        self.containerd = Process("containerd", ["containerd", "--config", cconf], workdir,
                                  unix_socket=self.containerd_socket, timeout=timeout)
        self.socket = os.path.join(d, "docker.sock")
        self.host = "unix://" + self.socket
        self.data_root = os.path.join(d, "data")
        cfg = {
            "storage-driver": "vfs",
            "iptables": False, "ip6tables": False, "ip-forward": False, "ip-masq": False,
            "bridge": "none",
            "data-root": self.data_root,
            "exec-root": os.path.join(d, "exec"),
            "pidfile": os.path.join(d, "docker.pid"),
            "hosts": [self.host],
            "containerd": self.containerd_socket,
            "containerd-namespace": "moby",
            "registry-mirrors": list(mirrors),
            "insecure-registries": list(insecure),
            "debug": bool(debug),
            "log-level": "debug" if debug else "info",
            "max-concurrent-downloads": 3,
            "features": {"buildkit": False},
        }
        self.config_path = os.path.join(d, "daemon.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=1)
        self.docker_config = os.path.join(d, "cli")
        os.makedirs(self.docker_config)
        self.process = Process(
            "dockerd", resolv_guard(workdir, [which("dockerd"), "--config-file", self.config_path]),
            workdir, unix_socket=self.socket,
            ready=lambda: self.docker("version", check=False, timeout=10).returncode == 0,
            timeout=timeout, stop_timeout=20)

    def docker(self, *args, check=True, timeout=300):
        """Run the Debian docker CLI against this daemon."""
        env = dict(os.environ, DOCKER_CONFIG=self.docker_config, DOCKER_HOST=self.host)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(k, None)
        return run([which("docker"), "-H", self.host] + [str(a) for a in args],
                   env=env, check=check, timeout=timeout)

    def ctr(self, *args, namespace="test", check=True, timeout=300):
        """
        Run C{ctr -a <our containerd> -n NAMESPACE ARGS...} in the resolv
        guard (ctr itself resolves and fetches), with the C{native}
        snapshotter (no overlay mounts needed for unpacking).
        """
        env = dict(os.environ, CONTAINERD_SNAPSHOTTER="native")
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(k, None)
        argv = ["ctr", "-a", self.containerd_socket, "-n", namespace] + [str(a) for a in args]
        return run(resolv_guard(self.workdir, argv), env=env, check=check, timeout=timeout)

    def hosts_dir(self, registry_host, server, mirror_url, skip_verify=True):
        """
        Write a containerd C{hosts.toml} for C{registry_host} (e.g.
        C{docker.io}) that sends pulls to C{mirror_url}; returns the directory
        for C{ctr images pull --hosts-dir DIR}.
        """
        d = tempfile.mkdtemp(prefix="hosts-", dir=self.dir)
        os.makedirs(os.path.join(d, registry_host))
        with open(os.path.join(d, registry_host, "hosts.toml"), "w") as f:
            f.write('server = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n'
                    '  skip_verify = %s\n' % (server, mirror_url, "true" if skip_verify else "false"))
        return d

    def stop(self):
        self.process.stop()
        self.containerd.stop()


class Podman:
    """
    podman with per-instance storage: C{--root/--runroot/--tmpdir}, vfs,
    cgroupfs, file events, its own C{registries.conf} (no short-name search,
    optional mirror), run in the L{resolv_guard}.
    @param registries_conf: extra TOML appended to the registries.conf
        (e.g. a C{[[registry]]} with a mirror pointing at hubproxy).
    """

    def __init__(self, workdir, registries_conf=""):
        require("podman", "unshare")
        self.workdir = workdir
        # podman refuses a runroot longer than 50 characters: short tmp dir
        self.dir = tempfile.mkdtemp(prefix="hpp-")
        workdir.add_cleanup(shutil.rmtree, self.dir, True)
        self.root = os.path.join(self.dir, "root")
        self.runroot = os.path.join(self.dir, "runroot")
        self.tmpdir = os.path.join(self.dir, "tmp")
        for p in (self.root, self.runroot, self.tmpdir):
            os.makedirs(p, exist_ok=True)
        self.registries_conf = os.path.join(self.dir, "registries.conf")
        with open(self.registries_conf, "w") as f:
            f.write('unqualified-search-registries = []\nshort-name-mode = "disabled"\n' + registries_conf)
        self.containers_conf = os.path.join(self.dir, "containers.conf")
        with open(self.containers_conf, "w") as f:
            f.write('[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
                    'events_logfile_path = "%s/events.log"\n' % self.dir)
        self.policy = os.path.join(self.dir, "policy.json")
        with open(self.policy, "w") as f:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)

    def podman(self, *args, check=True, timeout=300):
        env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=self.registries_conf,
                   CONTAINERS_CONF=self.containers_conf, TMPDIR=self.tmpdir)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(k, None)
        argv = ["podman", "--root", self.root, "--runroot", self.runroot, "--tmpdir", self.tmpdir,
                "--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs"]
        argv += [str(a) for a in args]
        # signature policy is a per-command flag of pull; set it for pull only
        if args and args[0] == "pull":
            argv.insert(argv.index("pull") + 1, "--signature-policy=" + self.policy)
        return run(resolv_guard(self.workdir, argv), env=env, check=check, timeout=timeout)


# ---------------------------------------------------------------- sharing per class

class SharedFixtures:
    """
    Mixin for trial test cases that share expensive fixtures per class.

    Why: trial ignores C{setUpClass}/C{tearDownClass}, but starting a
    registry or a dockerd per test method would make the suite far too slow
    on 2 cores.  So the first C{setUp} of a class calls the class method
    C{setUpFixtures(work)} with a fresh L{Workdir} (store what you start on
    C{cls}); the C{cleanup} of that workdir runs after the class's last test
    (counted from its C{test*} methods), or at interpreter exit when only
    some of its tests were selected.  A failure (or C{SkipTest}) while
    setting up is remembered and re-raised for every test of the class, so
    a broken fixture is reported once per test without being retried.

    Put the mixin first: C{class T(SharedFixtures, SynchronousTestCase)}.
    """

    @classmethod
    def setUpFixtures(cls, work):
        pass

    @classmethod
    def _shared_state(cls):
        st = cls.__dict__.get("_fixture_state")
        if st is None:
            names = [n for n in dir(cls) if n.startswith("test") and callable(getattr(cls, n))]
            st = {"work": None, "error": None, "left": len(names), "ready": False}
            cls._fixture_state = st
        return st

    @classmethod
    def _shared_done(cls):
        st = cls._shared_state()
        st["left"] -= 1
        if st["left"] <= 0 and st["work"] is not None:
            work, st["work"] = st["work"], None
            work.cleanup()

    def setUp(self):
        cls = type(self)
        st = cls._shared_state()
        self.addCleanup(cls._shared_done)
        if not st["ready"]:
            st["ready"] = True
            work = Workdir(cls.__name__)
            st["work"] = work
            atexit.register(work.cleanup)
            try:
                cls.setUpFixtures(work)
            except BaseException as e:
                st["error"] = e
        if st["error"] is not None:
            raise st["error"]
        self.work = cls._fixture_state["work"]
        return super().setUp()


# ---------------------------------------------------------------- public-name redirects

class PublicNameGitServer(GitServer):
    """
    L{GitServer} whose redirects name the public hosts, as github.com's do
    (C{https://objects.githubusercontent.com/...},
    C{https://codeload.github.com/...}, C{https://raw.githubusercontent.com/...}),
    so that a proxy configured with C{[upstreams]} (L{upstreams}) routes them
    to the fixture's ports.  Why: a redirect to C{http://127.0.0.1:PORT} is an
    address "from outside" that a proxy must refuse unless told otherwise;
    public names exercise the path real users take.

    Extra release tags redirect elsewhere, for refusal tests (each with a
    C{sig}, so the CDN would serve the asset if it were reached):
      - C{loopback}: to the CDN by its address (C{cdn_url}), as L{GitServer};
      - C{localhost}: to C{http://localhost:CDN_PORT/...};
      - C{private}: to C{http://10.255.255.1/...} (nothing listens there);
      - C{linklocal}: to C{http://169.254.169.254/latest/meta-data/}.
    """

    PUBLIC = {
        "cdn_url": "https://objects.githubusercontent.com",
        "codeload_url": "https://codeload.github.com",
        "raw_url": "https://raw.githubusercontent.com",
    }

    def upstreams(self):
        """C{[upstreams]} entries routing the public hosts to this fixture."""
        return {"github.com": self.url,
                "objects.githubusercontent.com": self.cdn_url,
                "codeload.github.com": self.codeload_url,
                "raw.githubusercontent.com": self.raw_url}

    def _servers(self, sock):
        servers = super()._servers(sock)
        port, body = servers[0]
        for attr, public in self.PUBLIC.items():
            body = body.replace("return 302 %s/" % getattr(self, attr), "return 302 %s/" % public)
        asset = "/github-production-release-asset/$1/$2/v1/$3?sig=fixture-signature"
        extra = "".join(
            "    location ~ ^/([^/]+)/([^/]+)/releases/download/%s/([^/]+)$ { return 302 %s; }\n"
            % (tag, target) for tag, target in (
                ("loopback", self.cdn_url + asset),
                ("localhost", "http://localhost:%d%s" % (self.cdn_port, asset)),
                ("private", "http://10.255.255.1" + asset),
                ("linklocal", "http://169.254.169.254/latest/meta-data/$3"),
            ))
        return [(port, extra + body)] + servers[1:]


_HF_PUBLIC_WRAPPER = r'''
import sys
sys.path.insert(0, %(here)r)
import hfserver

PUBLIC = %(public)r
_send = hfserver.Base._send


def _public_send(self, code, body=b"", headers=None, ctype="application/json"):
    prefix = "http://127.0.0.1:%%d/" %% self.cfg.cdn_port
    location = (headers or {}).get("Location")
    if location and location.startswith(prefix):
        headers = dict(headers, Location=PUBLIC + "/" + location[len(prefix):])
    return _send(self, code, body, headers, ctype)


hfserver.Base._send = _public_send
sys.exit(hfserver.main())
'''


class PublicNameHFServer(HFServer):
    """
    L{HFServer} whose LFS redirects name the public CDN host
    (C{https://cdn-lfs.hf.co/repos/...?sig=...}), as the Hub's do; a proxy
    routes it with C{[upstreams]} (L{upstreams}).  The L{hfserver} script
    is run through a small wrapper that rewrites that one C{Location}
    prefix; everything else (log, data, ports) is the same.
    """

    CDN_HOST = "https://cdn-lfs.hf.co"

    def __init__(self, workdir, **kwargs):
        super().__init__(workdir, **kwargs)
        self.process.stop()
        wrapper = os.path.join(self.dir, "hfserver_public.py")
        with open(wrapper, "w") as f:
            f.write(_HF_PUBLIC_WRAPPER % {"here": HERE, "public": self.CDN_HOST})
        self.process = Process("hfserver-public", [
            PYTHON, wrapper, "--port", self.port, "--cdn-port", self.cdn_port,
            "--data", self.dir, "--log", self.log_path],
            workdir, ready=lambda: port_open(self.port) and port_open(self.cdn_port))

    def upstreams(self):
        """C{[upstreams]} entries routing the public hosts to this fixture."""
        return {"huggingface.co": self.url, "cdn-lfs.hf.co": self.cdn_url}
