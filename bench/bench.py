"""
hubproxy benchmarks (issue #8): hubproxy next to what users would run
instead, on the same machine, in the same run, on loopback.

Run it through C{bench/run} (which picks a Python that has Twisted and
hubproxy).  It starts the integration tests' own fixtures
(L{hubproxy.test.integration.fixtures}: a CNCF registry behind a
Docker-Hub-like token server, nginx, git smart HTTP) plus hubproxy as users
run it (C{twistd -n hubproxy --config ...}), measures, writes
C{bench/results/latest.md}, C{latest.json} and C{single-stream.png}, and
stops everything it started (by PID, on every exit path).

What is measured (medians; runs of different targets alternate so that a
burst of load from elsewhere on the machine hits all of them alike):

 1. single-stream blob throughput: hubproxy vs nginx C{proxy_pass}
    (C{proxy_buffering off}, C{proxy_buffer_size 64k}) vs the registry
    itself, curl to /dev/null;
 2. hubproxy RSS idle, and its growth while the big blob streams to a curl
    throttled to 25 MiB/s (RSS and bytes sampled for the chart);
 3. 200 clients at once (small blobs and a 64 MiB blob): errors, digests,
    aggregate MB/s, time-to-first-byte percentiles;
 4. manifest HEAD/GET by tag with wrk: hubproxy (access log on and off) vs
    the CNCF registry in pull-through mode vs the registry itself;
 5. C{git clone} of the fixture repository through hubproxy vs direct;
 6. start-up: C{twistd -n hubproxy} to a 200 on C{/ready}.

C{--quick} is a short report mode for CI: smaller blob, one run each, 20
clients, 5 s of wrk; it never fails on a number (exit status 0 unless
something could not be set up or measured at all).  C{--profile} also runs
py-spy on the hubproxy process during a relay and under wrk and writes
flame graphs and a top-functions table next to the report.

Units: MB = 10^6 bytes, MiB = 2^20 bytes.  curl's C{--limit-rate 25M} is
25 MiB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from hubproxy.test.integration import fixtures as F  # noqa: E402
from hubproxy.test.integration.procs import HubproxyProcess, rss_kib  # noqa: E402

# The speed-ups made after profiling, each undone by one variant
# (bench/variant_twistd.py) so every run measures its before and after.
CHANGES = {
    "before:reads64k": "upstream reads 256 KiB per recv() (was 64 KiB)",
    "before:eventlog": "batched access log (was one twisted.logger event per request)",
}

MiB = 1 << 20
MB = 1e6

FULL = dict(big=512 * MiB, mid=64 * MiB, runs=3, clients=200, big_every=10, wrk_seconds=8,
            wrk_connections=16, git_runs=5, startup_runs=5, throttle="25M")
QUICK = dict(big=64 * MiB, mid=None, runs=1, clients=20, big_every=10, wrk_seconds=5,
             wrk_connections=16, git_runs=3, startup_runs=3, throttle="25M")

TARGETS = {
    "throughput_ratio_nginx": 0.6,
    "idle_rss_mib": 60,
    "rss_growth_mib": 16,
    "small_vs_pullthrough": 1.0,
    "small_vs_direct": 0.5,
}

_PROXY_ENV_DROP = (
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy",
    "HUBPROXY_CONFIG", "SERVER_HOST", "SERVER_PORT", "ENABLE_H2C", "ENABLE_FRONTEND",
    "MAX_FILE_SIZE", "RATE_LIMIT", "RATE_PERIOD_HOURS", "IP_WHITELIST", "IP_BLACKLIST",
    "ACCESS_PROXY", "MAX_IMAGES", "SKIP_TLS_VERIFY", "HUBPROXY_PUBLIC_URL",
)


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_ENV_DROP}
    env["NO_PROXY"] = "*"
    return env


class _Scope:
    """Lets L{HubproxyProcess} register its cleanups on a L{F.Workdir}."""

    def __init__(self, work):
        self.work = work

    def addCleanup(self, fn, *args, **kwargs):
        self.work.add_cleanup(lambda: fn(*args, **kwargs))


# ---------------------------------------------------------------- sampling

def proc_io_wchar(pid):
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid):
    """
    CPU time (s) of C{pid}'s threads and of its direct children's threads
    (nginx workers; the Go registry's threads), from C{schedstat}
    (nanoseconds; C{/proc/PID/stat} counts 10 ms ticks, too coarse for a
    transfer of a fraction of a second).
    """
    total = 0
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/schedstat" % (p, t)) as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


class Sampler:
    """
    Samples, every C{interval} seconds (bounded by C{max_seconds}), the RSS
    of C{pids} and the bytes a client has received (C{bytes_fn}).
    """

    def __init__(self, pids, bytes_fn, interval=0.1, max_seconds=600):
        self.pids = pids
        self.bytes_fn = bytes_fn
        self.interval = interval
        self.max_seconds = max_seconds
        self.samples = []  # (t, bytes, {pid: rss_kib})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - t0 < self.max_seconds:
            rss = {}
            for pid in self.pids:
                try:
                    rss[pid] = rss_kib(pid)
                except (OSError, AssertionError):
                    pass
            b = self.bytes_fn()
            self.samples.append((time.monotonic() - t0, b, rss))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def peak_rss_kib(self, pid):
        vals = [s[2][pid] for s in self.samples if pid in s[2]]
        return max(vals) if vals else None


# ---------------------------------------------------------------- curl

def curl_fetch(url, headers=(), limit_rate=None, expect_size=None, expect_digest=None,
               sample_pids=(), timeout=300, cpu_pids=(), sample_interval=0.1, curl_args=()):
    """
    One GET with curl.  Without C{expect_digest} the body goes to /dev/null
    (nothing on the client side competes for CPU) and bytes received are
    read from curl's C{/proc/PID/io}; with it, the body is piped through
    sha256 here (only for throttled runs: hashing would cost CPU).
    Returns a dict with status, size, seconds, MB/s, ttfb and the samples.
    """
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout),
            "-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"]
    for h in headers:
        argv += ["-H", h]
    if limit_rate:
        argv += ["--limit-rate", limit_rate]
    argv += list(curl_args)
    hashing = expect_digest is not None
    if hashing:
        # the -w line goes to stderr so that stdout carries only the body
        argv[argv.index("-w") + 1] = "%{stderr}" + argv[argv.index("-w") + 1]
        argv += ["-o", "-", url]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    else:
        argv += ["-o", "/dev/null", url]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = {"bytes": 0}
    h = hashlib.sha256()
    cpu0 = {pid: proc_cpu_seconds(pid) for pid in cpu_pids}

    def bytes_fn():
        if hashing:
            return state["bytes"]
        return proc_io_wchar(p.pid)

    with Sampler(list(sample_pids), bytes_fn, interval=sample_interval) as sampler:
        if hashing:
            deadline = time.monotonic() + timeout + 10
            while time.monotonic() < deadline:
                chunk = p.stdout.read1(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                state["bytes"] += len(chunk)
            out = b""
            err = p.stderr.read()
        else:
            out, err = p.communicate(timeout=timeout + 10)
        try:
            p.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    cpu = {pid: proc_cpu_seconds(pid) - c for pid, c in cpu0.items()}
    text = (err if hashing else out).decode("utf-8", "replace").strip().splitlines()
    fields = text[-1].split() if text else []
    if len(fields) != 4 or p.returncode != 0:
        raise RuntimeError("curl %s failed (rc %s): %r" % (url, p.returncode, (out + err)[-2000:]))
    code, size, ttfb, total = int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3])
    ok = code == 200 and (expect_size is None or size == expect_size)
    digest = "sha256:" + h.hexdigest() if hashing else None
    if hashing:
        ok = ok and digest == expect_digest
    return {"code": code, "size": size, "ttfb": ttfb, "seconds": total,
            "mbps": size / total / MB if total > 0 else None, "ok": ok, "digest": digest,
            "samples": sampler.samples, "cpu": cpu}


# ---------------------------------------------------------------- many clients

class _Fetch(asyncio.Protocol):
    """
    One HTTP/1.1 GET (Connection: close); hashes the body as it arrives.
    Content-Length bodies are streamed; a chunked body (not expected for
    blobs) is decoded at the end.
    """

    def __init__(self, request, t0, done, hasher):
        self.hasher = hasher
        self.pending = []
        self.pending_len = 0
        self.request = request
        self.t0 = t0
        self.done = done
        self.ttfb = None
        self.head = b""
        self.headers_done = False
        self.status = None
        self.length = None
        self.chunked = False
        self.body_parts = []
        self.received = 0
        self.h = hashlib.sha256()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        if self.ttfb is None:
            self.ttfb = time.perf_counter() - self.t0
        if not self.headers_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            self.headers_done = True
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
        if not data:
            return
        self.received += len(data)
        if self.chunked:
            self.body_parts.append(data)
        else:
            # hashed on a thread (hashlib releases the GIL): hashing 64 MiB
            # bodies on the event loop would delay noticing other answers'
            # first bytes and inflate their TTFB
            self.pending.append(data)
            self.pending_len += len(data)
            if self.pending_len >= 4 * MiB:
                self._submit()
            if self.length is not None and self.received >= self.length:
                self.transport.close()

    def _submit(self):
        if self.pending:
            self.hasher.submit(self.h.update, b"".join(self.pending))
            self.pending, self.pending_len = [], 0

    def connection_lost(self, exc):
        if self.chunked:
            raw = b"".join(self.body_parts)
            body, pos = b"", 0
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                n = int(raw[pos:eol].split(b";")[0], 16)
                if n == 0:
                    break
                body += raw[eol + 2:eol + 2 + n]
                pos = eol + 2 + n + 2
            self.pending = [body]
            self.received = len(body)
        self._submit()
        if not self.done.done():
            self.done.set_result(exc)


async def _one(port, path, want_digest, want_size, timeout, extra="", hasher=None):
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    done = loop.create_future()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: hubproxy-bench\r\n%s"
           "Connection: close\r\n\r\n" % (path, port, extra)).encode()
    result = {"path": path, "ok": False, "error": None, "ttfb": None, "bytes": 0, "seconds": None}
    transport = None
    try:
        transport, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _Fetch(req, t0, done, hasher), "127.0.0.1", port), timeout)
        exc = await asyncio.wait_for(done, timeout)
        result["seconds"] = time.perf_counter() - t0
        # wait for this body's queued hash updates (FIFO, one thread)
        await asyncio.wrap_future(hasher.submit(lambda: None))
        result["ttfb"] = proto.ttfb
        result["bytes"] = proto.received
        digest = "sha256:" + proto.h.hexdigest()
        if exc is not None:
            result["error"] = "connection lost: %s" % exc
        elif proto.status != 200:
            result["error"] = "status %s" % proto.status
        elif proto.received != want_size or digest != want_digest:
            result["error"] = "wrong body: %d bytes, %s" % (proto.received, digest)
        else:
            result["ok"] = True
    except (asyncio.TimeoutError, OSError) as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
        if transport is not None:
            transport.abort()
    return result


def many_clients(port, jobs, timeout=180, auth=None):
    """
    Start all C{jobs} (C{(path, digest, size)}) at once; returns per-request
    results and the wall time.  C{auth}: C{{path: Authorization value}}.
    """
    auth = auth or {}

    import concurrent.futures
    hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def main():
        t0 = time.perf_counter()
        results = await asyncio.gather(*[
            _one(port, p, d, s, timeout, ("Authorization: %s\r\n" % auth[p]) if p in auth else "", hasher)
            for p, d, s in jobs])
        return results, time.perf_counter() - t0
    try:
        return asyncio.run(main())
    finally:
        hasher.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- wrk

def run_wrk(url, method, auth, seconds, connections):
    env = dict(clean_env(), BENCH_METHOD=method, BENCH_AUTH=auth or "")
    argv = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--timeout", "5s", "--latency",
            "-s", os.path.join(HERE, "manifest.lua"), url]
    p = F.run(argv, timeout=seconds + 30, env=env, check=False)
    out = p.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode != 0 or not m:
        raise RuntimeError("wrk failed: %s %s" % (out[-2000:], p.stderr[-2000:]))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {}
    for pct in ("50%", "99%"):
        lm = re.search(r"\s%s\s+([\d.]+)(us|ms|s)\b" % re.escape(pct), out)
        if lm:
            lat[pct] = float(lm.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[lm.group(2)]
    reqs = re.search(r"(\d+) requests in", out)
    return {"rps": float(m.group(1)), "requests": int(reqs.group(1)) if reqs else None,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
            "p50_ms": lat.get("50%"), "p99_ms": lat.get("99%")}


def run_curl_parallel(url, method, headers, seconds, connections, max_requests=100000):
    """
    HEAD load: wrk 4.1 (Debian) and h2load both wait for a body after a
    HEAD response that carries a Content-Length, so they hang.  curl knows
    HEAD; in C{--parallel} mode it keeps C{connections} keep-alive
    connections busy.  Time-bounded: curl is stopped after C{seconds};
    the completed requests are counted from its per-transfer write-out
    lines (status and time), from the first one on.
    """
    cfg = "/tmp/hubproxy-bench-curl-%d.cfg" % os.getpid()
    with open(cfg, "w") as f:
        f.write('silent\nshow-error\nnoproxy = "*"\nmax-time = 10\n')
        f.write('write-out = "%{http_code} %{time_total}\\n"\n')
        if method == "HEAD":
            f.write("head\n")
        for h in headers:
            f.write('header = "%s"\n' % h)
        entry = 'url = "%s"\noutput = "/dev/null"\n' % url
        f.write(entry * max_requests)
    p = subprocess.Popen(["curl", "-Z", "--parallel-immediate", "--parallel-max", str(connections), "-K", cfg],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = []
    first = [None]

    def reader():
        for line in p.stdout:
            if first[0] is None:
                first[0] = time.perf_counter()
            lines.append((time.perf_counter(), line))
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + seconds + 15
    while time.monotonic() < deadline and p.poll() is None:
        if first[0] is not None and time.perf_counter() - first[0] >= seconds:
            break
        time.sleep(0.05)
    end = time.perf_counter()
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    t.join(5)
    os.unlink(cfg)
    done = [(ts, l.decode("ascii", "replace").split()) for ts, l in lines if ts <= end]
    if not done or first[0] is None:
        raise RuntimeError("curl --parallel %s %s: no answers" % (method, url))
    codes = [fields[0] for _, fields in done if fields]
    times = sorted(float(fields[1]) * 1000 for _, fields in done if len(fields) > 1)
    elapsed = max(end - first[0], 1e-3)
    return {"rps": len(done) / elapsed, "requests": len(done),
            "non2xx": sum(1 for c in codes if not c.startswith("2")), "socket_errors": 0,
            "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.p = dict(QUICK if args.quick else FULL)
        if args.big_mib:
            self.p["big"] = args.big_mib * MiB
        if args.runs:
            self.p["runs"] = args.runs
        self.results = {"mode": "quick" if args.quick else "full", "params": dict(self.p),
                        "load": {}, "notes": []}
        self.work = None
        self.out_dir = args.out

    # -- setup ---------------------------------------------------------

    def setup(self):
        F.require("docker-registry", "skopeo", "nginx", "fcgiwrap", "git", "git-http-backend", "curl", "wrk")
        self.work = F.Workdir("bench")
        w = self.work
        self.results["load"]["start"] = loadavg()
        log("starting token server, registries, nginx, git server (work dir %s)" % w.path)
        self.tokens = F.TokenServer(w, ttl=7200)
        self.hub = F.Registry(w, token_server=self.tokens, name="hub")
        t0 = time.monotonic()
        log("seeding images (big layer %d MiB)" % (self.p["big"] // MiB))
        images = F.seed_standard_images(self.hub, big_layer_size=self.p["big"])
        self.images = images
        big = images["library/big:1"]["layers"][1]
        self.big = {"repo": "library/big", "digest": big["digest"], "size": big["size"]}
        if self.p["mid"]:
            self.mid = self._push_mid(self.p["mid"])
        else:
            self.mid = dict(self.big)
        log("seeded in %.0fs: big %s (%d bytes), mid %s (%d bytes)" % (
            time.monotonic() - t0, self.big["digest"][:19], self.big["size"],
            self.mid["digest"][:19], self.mid["size"]))
        self.small = []
        for ref in ("library/hello:1", "oci/single:1", "team/app/web:2"):
            info = images[ref]
            repo = ref.split(":")[0]
            for l in info["layers"]:
                self.small.append({"repo": repo, "digest": l["digest"], "size": l["size"]})
            self.small.append({"repo": repo, "digest": info["config_digest"], "size": info["config_size"]})
        self.small_manifest = {"repo": "library/hello", "tag": "1",
                               "digest": images["library/hello:1"]["manifest_digest"]}
        # a Bearer token for the registry itself (nginx passes it through)
        self.direct_auth = {}
        for repo in {"library/big", self.mid["repo"]} | {b["repo"] for b in self.small}:
            self.direct_auth[repo] = "Bearer " + self.tokens.token("repository:%s:pull" % repo)
        # nginx proxy_pass in front of the registry, as the issue asks
        self.nginx_port = F.free_port()
        body = """
    location / {
      proxy_pass %s;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 64k;
      # only so that nginx accepts proxy_buffer_size 64k (unused when
      # proxy_buffering is off): busy must stay below proxy_buffers
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
    }
""" % self.hub.url
        self.nginx = F.Nginx(w, "nginx-proxy", [(self.nginx_port, body)])
        # CNCF registry in pull-through mode in front of the token-auth one
        self.pullthrough = F.Registry(w, remoteurl=self.hub.url, remote_username="admin",
                                      remote_password="admin", name="pullthrough")
        # git smart HTTP (GitHub look-alike)
        self.gh = F.GitServer(w)
        # hubproxy as users run it, and a variant without the access log
        self.proxy = self._hubproxy()
        self.idle_rss_start_kib = rss_kib(self.proxy.pid)
        self.proxy_nolog = self._hubproxy(access_log=False)
        # proposed changes, patched in at start (bench/variant_twistd.py)
        self.variants = {}
        if self.args.variants:
            for name, patch in (("before:reads64k", "upstream-reads-64k"),
                                ("before:eventlog", "per-event-access-log")):
                self.variants[name] = self._hubproxy(variant=patch)
        self.versions = self._versions()

    def _push_mid(self, size):
        d = os.path.join(self.hub.dir, "layouts", "mid")
        lay = F.OCILayout(d)
        l1 = lay.add_layer([("mid.bin", (int(size), 4321))], compresslevel=0)
        lay.tag(lay.add_image([l1], labels={"fixture": "library/mid:1"}), "1")
        argv = F._push(d, "1", self.hub, "library/mid", "1", "v2s2", False)
        F.skopeo(*argv, timeout=600)
        info = F.describe_image(self.hub, "library/mid", "1")
        layer = info["layers"][0]
        return {"repo": "library/mid", "digest": layer["digest"], "size": layer["size"]}

    def hubproxy_toml(self, access_log=True):
        return """
[server]
host = "127.0.0.1"
shutdownGrace = 2
enableH2C = true

[rateLimit]
requestLimit = 100000000

[security]
whiteList = ["127.0.0.1"]

[tokenCache]
enabled = true
defaultTTL = "1h"

[registries."docker.io"]
upstream = "{hub}"

[upstreams]
"github.com" = "{gh}"

[network]
allowNetworks = ["127.0.0.0/8"]
connectTimeout = 5
responseTimeout = 60
idleTimeout = 60

[log]
accessLog = {log}
""".format(hub=self.hub.url, gh=self.gh.url, log="true" if access_log else "false")

    def _hubproxy(self, access_log=True, variant=None):
        env = clean_env()
        argv = None
        if variant:
            env["HUBPROXY_BENCH_VARIANT"] = variant
            argv = [sys.executable, os.path.join(HERE, "variant_twistd.py"), "-n", "--pidfile=", "hubproxy",
                    "--config", None]
        proc = HubproxyProcess(_Scope(self.work), self.hubproxy_toml(access_log), env=env, argv=argv)
        if argv:
            proc.argv[-1] = proc.config_path
        proc.start(timeout=60)
        return proc

    def _versions(self):
        def first_line(argv, stream="stdout"):
            try:
                p = F.run(argv, check=False, timeout=20)
                text = (p.stdout + p.stderr).strip()
                return text.splitlines()[0] if text else "?"
            except Exception as e:  # report, do not fail
                return "? (%s)" % e
        import twisted
        cpu = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        try:
            commit = F.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
            dirty = F.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                          check=False).stdout.strip()
            commit += " (with uncommitted changes)" if dirty else ""
        except Exception:
            commit = "?"
        hubproxy_version = F.run([sys.executable, "-c", "import hubproxy; print(hubproxy.__version__)"],
                                 check=False, cwd="/").stdout.strip() or "?"
        return {
            "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "twisted": twisted.__version__,
            "hubproxy": "%s, checkout %s" % (hubproxy_version, commit),
            "nginx": first_line(["nginx", "-v"]), "registry": first_line(["docker-registry", "--version"]),
            "curl": first_line(["curl", "--version"]), "wrk": first_line(["wrk", "-v"]),
            "git": first_line(["git", "--version"]),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        }

    # -- URLs ----------------------------------------------------------

    def target_pid(self, name):
        if name in ("hubproxy", "hubproxy-h2"):
            return self.proxy.pid
        if name in self.variants:
            return self.variants[name].pid
        if name == "nginx":
            return self.nginx.process.pid
        if name == "direct":
            return self.hub.process.pid
        raise KeyError(name)

    def blob_target(self, name, blob):
        path = "/v2/%s/blobs/%s" % (blob["repo"], blob["digest"])
        if name in ("hubproxy", "hubproxy-h2"):
            return self.proxy.url + path, []
        if name in self.variants:
            return self.variants[name].url + path, []
        if name == "nginx":
            return "http://127.0.0.1:%d%s" % (self.nginx_port, path), ["Authorization: " + self.direct_auth[blob["repo"]]]
        if name == "direct":
            return self.hub.url + path, ["Authorization: " + self.direct_auth[blob["repo"]]]
        raise KeyError(name)

    # -- 1. single-stream throughput ----------------------------------

    def bench_throughput(self):
        log("1. single-stream throughput, %d MiB blob, %d run(s) each" % (self.big["size"] // MiB, self.p["runs"]))
        # hubproxy-h2: the same hubproxy, over cleartext HTTP/2 (prior knowledge)
        names = ["hubproxy", "nginx", "direct", "hubproxy-h2"] + [n for n in self.variants if n.endswith("reads64k")]
        extra = {"hubproxy-h2": ["--http2-prior-knowledge"]}
        runs = {n: [] for n in names}
        cpu = {n: [] for n in names}
        reg_cpu = []
        peaks = []
        # warm-up: token cache, connection pools, page cache of the blob
        for n in names:
            url, hdrs = self.blob_target(n, self.big)
            curl_fetch(url, hdrs, expect_size=self.big["size"], curl_args=extra.get(n, ()))
        for i in range(self.p["runs"]):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                url, hdrs = self.blob_target(n, self.big)
                server_pid = self.target_pid(n)
                pids = [server_pid] if n.startswith("hubproxy") else []
                r = curl_fetch(url, hdrs, expect_size=self.big["size"], sample_pids=pids, sample_interval=0.02,
                               cpu_pids=[server_pid, self.hub.process.pid] if n != "direct" else [server_pid],
                               curl_args=extra.get(n, ()))
                if not r["ok"]:
                    raise RuntimeError("%s: bad answer %s" % (n, {k: v for k, v in r.items() if k != "samples"}))
                runs[n].append(r["mbps"])
                gb = r["size"] / 1e9
                cpu[n].append(r["cpu"][server_pid] / gb)
                if n == "direct":
                    reg_cpu.append(r["cpu"][server_pid] / gb)
                if n == "hubproxy":
                    pid = self.proxy.pid
                    peaks.append(max((rss.get(pid, 0) for _, _, rss in r["samples"]), default=None))
                    self.results["unthrottled_samples"] = [(t, b, rss.get(pid)) for t, b, rss in r["samples"]]
                log("   %-20s %7.0f MB/s  %.2f CPU s/GB" % (n, r["mbps"], cpu[n][-1]))
        med = {n: median(v) for n, v in runs.items()}
        self.results["throughput"] = {
            "size": self.big["size"], "runs": runs, "median_mbps": med,
            "cpu_s_per_gb": {n: median(v) for n, v in cpu.items()},
            "ratio_nginx": med["hubproxy"] / med["nginx"], "ratio_direct": med["hubproxy"] / med["direct"],
            "nginx_vs_direct": med["nginx"] / med["direct"],
            "hubproxy_peak_rss_kib": max(p for p in peaks if p) if any(peaks) else None,
        }
        self.results["load"]["throughput"] = loadavg()

    # -- 2. memory ------------------------------------------------------

    def bench_memory(self):
        log("2. memory: %d MiB blob to a reader throttled to %s/s" % (self.big["size"] // MiB, self.p["throttle"]))
        pid = self.proxy.pid
        # idle after the warm-up: let the reactor settle first
        time.sleep(1.0)
        before = rss_kib(pid)
        url, hdrs = self.blob_target("hubproxy", self.big)
        r = curl_fetch(url, hdrs, limit_rate=self.p["throttle"], expect_size=self.big["size"],
                       expect_digest=self.big["digest"], sample_pids=[pid], timeout=900)
        time.sleep(1.0)
        after = rss_kib(pid)
        peak = max(s[2].get(pid, 0) for s in r["samples"])
        self.results["memory"] = {
            "idle_start_kib": self.idle_rss_start_kib, "idle_before_kib": before, "peak_kib": peak,
            "after_kib": after, "growth_kib": peak - before, "throttled_mbps": r["mbps"],
            "digest_ok": r["ok"], "samples": [(t, b, rss.get(pid)) for t, b, rss in r["samples"]],
        }
        self.results["load"]["memory"] = loadavg()
        log("   idle %.1f MiB (at start %.1f), peak %.1f MiB, growth %.1f MiB, digest %s" % (
            before / 1024, self.idle_rss_start_kib / 1024, peak / 1024, (peak - before) / 1024,
            "ok" if r["ok"] else "WRONG"))

    # -- 3. concurrency -------------------------------------------------

    def concurrency_jobs(self):
        jobs = []
        for i in range(self.p["clients"]):
            blob = self.mid if i % self.p["big_every"] == 0 else self.small[i % len(self.small)]
            jobs.append(("/v2/%s/blobs/%s" % (blob["repo"], blob["digest"]), blob["digest"], blob["size"]))
        return jobs

    def bench_concurrency(self):
        n = self.p["clients"]
        jobs = self.concurrency_jobs()
        n_big = sum(1 for j in jobs if j[1] == self.mid["digest"])
        log("3. concurrency: %d clients at once (%d x %d MiB, %d small)" % (n, n_big, self.mid["size"] // MiB, n - n_big))
        # warm the page cache and the proxy's token for every repository
        # (not measured: the token path is not what this measures)
        for blob in [self.mid] + self.small:
            url, hdrs = self.blob_target("hubproxy", blob)
            curl_fetch(url, hdrs, expect_size=blob["size"])
        auth = {p: self.direct_auth[p.split("/blobs/")[0][len("/v2/"):]] for p, _, _ in jobs}
        out = {}
        # nginx and the registry itself run the same load for reference
        for name, port in (("hubproxy", self.proxy.port), ("nginx", self.nginx_port), ("direct", self.hub.port)):
            pid = self.proxy.pid
            before = rss_kib(pid)
            with Sampler([pid], lambda: None) as s:
                results, wall = many_clients(port, jobs, auth=None if name == "hubproxy" else auth)
            ok = [r for r in results if r["ok"]]
            errors = [r for r in results if not r["ok"]]
            ttfbs = [r["ttfb"] for r in results if r["ttfb"] is not None]
            big_path = "/v2/%s/blobs/%s" % (self.mid["repo"], self.mid["digest"])
            ttfb_small = [r["ttfb"] for r in results if r["ttfb"] is not None and r["path"] != big_path]
            ttfb_big = [r["ttfb"] for r in results if r["ttfb"] is not None and r["path"] == big_path]
            secs_small = [r["seconds"] for r in results if r["seconds"] is not None and r["path"] != big_path]
            total = sum(r["bytes"] for r in ok)
            out[name] = {
                "clients": n, "big_clients": n_big, "big_size": self.mid["size"], "errors": len(errors),
                "error_samples": sorted({r["error"] for r in errors})[:5], "digests_ok": len(ok),
                "wall_s": wall, "aggregate_mbps": total / wall / MB,
                "ttfb_p50_ms": percentile(ttfbs, 50) * 1000 if ttfbs else None,
                "ttfb_p99_ms": percentile(ttfbs, 99) * 1000 if ttfbs else None,
                "ttfb_max_ms": max(ttfbs) * 1000 if ttfbs else None,
                "ttfb_small_p50_ms": percentile(ttfb_small, 50) * 1000 if ttfb_small else None,
                "ttfb_small_p99_ms": percentile(ttfb_small, 99) * 1000 if ttfb_small else None,
                "ttfb_big_p50_ms": percentile(ttfb_big, 50) * 1000 if ttfb_big else None,
                "ttfb_big_p99_ms": percentile(ttfb_big, 99) * 1000 if ttfb_big else None,
                "small_total_p50_ms": percentile(secs_small, 50) * 1000 if secs_small else None,
                "small_total_p99_ms": percentile(secs_small, 99) * 1000 if secs_small else None,
                "rss_before_kib": before, "rss_peak_kib": s.peak_rss_kib(pid),
            }
            log("   %s: %d errors, %d/%d digests right, %.0f MB/s aggregate, ttfb p50 %.1f ms p99 %.1f ms, "
                "hubproxy RSS peak %.1f MiB" % (name, len(errors), len(ok), n, out[name]["aggregate_mbps"],
                                                 out[name]["ttfb_p50_ms"] or -1, out[name]["ttfb_p99_ms"] or -1,
                                                 (out[name]["rss_peak_kib"] or 0) / 1024))
        self.results["concurrency"] = out["hubproxy"]
        self.results["concurrency_reference"] = {k: v for k, v in out.items() if k != "hubproxy"}
        self.results["load"]["concurrency"] = loadavg()

    # -- 4. small requests ---------------------------------------------

    def bench_small(self):
        secs, conns = self.p["wrk_seconds"], self.p["wrk_connections"]
        path = "/v2/%s/manifests/%s" % (self.small_manifest["repo"], self.small_manifest["tag"])
        targets = [
            ("hubproxy", self.proxy.url + path, None),
            ("hubproxy-nolog", self.proxy_nolog.url + path, None),
        ] + [(n, v.url + path, None) for n, v in self.variants.items() if n.endswith("eventlog")] + [
            ("pullthrough", self.pullthrough.url + path, None),
            ("direct", self.hub.url + path, self.direct_auth["library/hello"]),
        ]
        log("4. small requests: wrk -c%d %ds, HEAD and GET, %d run(s)" % (conns, secs, self.p["runs"]))
        accept = ("application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
                  "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        # warm: token and manifest caches; check the answer once with curl
        for name, url, auth in targets:
            for method in ("GET", "HEAD"):
                argv = ["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-D", "-", "-X", method,
                        "-H", "Accept: " + accept, "--max-time", "30"]
                if method == "HEAD":
                    argv[argv.index("-X"):argv.index("-X") + 2] = ["-I"]
                if auth:
                    argv += ["-H", "Authorization: " + auth]
                p = F.run(argv + [url], check=False, timeout=45)
                status = re.match(r"HTTP/\S+ (\d+)", p.stdout or "")
                digest = re.search(r"(?im)^docker-content-digest:\s*(\S+)", p.stdout or "")
                if not status or status.group(1) != "200" or not digest or digest.group(1) != self.small_manifest["digest"]:
                    raise RuntimeError("%s %s %s: unexpected answer:\n%s%s" % (name, method, url, p.stdout, p.stderr))
            run_wrk(url, "GET", auth, 1, conns)  # warm-up second
        res = {name: {"HEAD": [], "GET": []} for name, _, _ in targets}
        details = {name: {"HEAD": [], "GET": []} for name, _, _ in targets}
        for i in range(self.p["runs"]):
            for method in ("HEAD", "GET"):
                order = targets[i % len(targets):] + targets[:i % len(targets)]
                for name, url, auth in order:
                    if method == "GET":
                        r = run_wrk(url, method, auth, secs, conns)
                    else:
                        hdrs = ["Accept: " + accept, "User-Agent: hubproxy-bench/curl"]
                        if auth:
                            hdrs.append("Authorization: " + auth)
                        r = run_curl_parallel(url, method, hdrs, secs, conns)
                    if r["non2xx"] or r["socket_errors"]:
                        self.results["notes"].append("wrk %s %s: %d non-2xx, %d socket errors" % (
                            name, method, r["non2xx"], r["socket_errors"]))
                    res[name][method].append(r["rps"])
                    details[name][method].append(r)
                    log("   %-15s %-4s %8.0f req/s  p50 %.2f ms  p99 %.2f ms" % (
                        name, method, r["rps"], r["p50_ms"] or -1, r["p99_ms"] or -1))
        med = {name: {m: median(v) for m, v in d.items()} for name, d in res.items()}
        self.results["small"] = {"connections": conns, "seconds": secs, "runs": res, "median_rps": med,
                                 "details": details}
        self.results["load"]["small"] = loadavg()

    # -- 5. git ----------------------------------------------------------

    def bench_git(self):
        n = self.p["git_runs"]
        log("5. git clone, %d run(s) each" % n)
        via = "%s/https://github.com/%s/%s.git" % (self.proxy.url, self.gh.owner, self.gh.repo)
        direct = self.gh.clone_url()
        times = {"hubproxy": [], "direct": []}
        base = self.work.sub("clones")
        for i in range(n + 1):  # the first round warms up and is not counted
            order = [("hubproxy", via), ("direct", direct)]
            if i % 2:
                order.reverse()
            for name, url in order:
                dest = os.path.join(base, "%s-%d" % (name, i))
                t0 = time.perf_counter()
                p = F.git("clone", "-q", url, dest, timeout=120, check=False)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    raise RuntimeError("git clone %s failed: %s" % (url, p.stderr[-2000:]))
                head = F.git("rev-parse", "HEAD", cwd=dest).stdout.strip()
                if head != self.gh.head:
                    raise RuntimeError("git clone %s: HEAD %s, expected %s" % (url, head, self.gh.head))
                shutil.rmtree(dest, ignore_errors=True)
                if i:
                    times[name].append(dt)
        med = {k: median(v) for k, v in times.items()}
        self.results["git"] = {"runs": times, "median_s": med, "ratio": med["hubproxy"] / med["direct"]}
        log("   hubproxy %.0f ms, direct %.0f ms" % (med["hubproxy"] * 1000, med["direct"] * 1000))

    # -- 6. start-up ----------------------------------------------------

    def bench_startup(self):
        n = self.p["startup_runs"]
        log("6. start-up, %d run(s)" % n)
        times = []
        for i in range(n):
            proc = HubproxyProcess(_Scope(self.work), self.hubproxy_toml(), env=clean_env())
            logf = open(proc.log_path, "wb")
            t0 = time.perf_counter()
            p = subprocess.Popen(proc.argv, cwd=proc.cwd, env=proc.env, stdout=logf, stderr=subprocess.STDOUT)
            proc.proc, proc._log = p, logf
            deadline = time.monotonic() + 60
            ready = None
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(proc.url + "/ready", timeout=2) as r:
                        if r.status == 200:
                            ready = time.perf_counter() - t0
                            break
                except OSError:
                    time.sleep(0.01)
            proc.stop()
            if ready is None:
                raise RuntimeError("hubproxy did not become ready:\n" + proc.log()[-3000:])
            times.append(ready)
            log("   %.0f ms" % (ready * 1000))
        self.results["startup"] = {"runs": times, "median_s": median(times)}

    # -- profiling --------------------------------------------------------

    def profile(self):
        pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(pyspy):
            self.results["notes"].append("profile skipped: py-spy not installed (pip install py-spy)")
            return
        out = {}
        pid = self.proxy.pid
        for what in ("relay", "manifest", "concurrency"):
            svg = os.path.join(self.out_dir, "profile-%s.svg" % what)
            raw = os.path.join(self.work.path, "profile-%s.txt" % what)
            seconds = 12
            argv_base = [pyspy, "record", "--pid", str(pid), "--rate", "250", "--duration", str(seconds),
                         "--nonblocking"]
            # two passes: a flame graph, then raw (collapsed) stacks for the tables
            for fmt_, path_ in (("flamegraph", svg), ("raw", raw)):
                rec = subprocess.Popen(argv_base + ["--format", fmt_, "-o", path_],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                self._profile_load(what, time.monotonic(), seconds)
                rec.wait(seconds + 30)
            out[what] = {"svg": os.path.basename(svg), "top": top_functions(raw)}
            shutil.copy(raw, os.path.join(self.out_dir, "profile-%s.collapsed" % what))
        self.results["profile"] = out

    def _profile_load(self, what, t0, seconds):
        """The load py-spy watches: one big blob at a time, wrk on a
        manifest, or rounds of the concurrency mix (bounded by time)."""
        if what == "relay":
            while time.monotonic() - t0 < seconds - 2:
                url, hdrs = self.blob_target("hubproxy", self.big)
                curl_fetch(url, hdrs, expect_size=self.big["size"])
        elif what == "manifest":
            path = "/v2/library/hello/manifests/1"
            run_wrk(self.proxy.url + path, "GET", None, seconds - 2, self.p["wrk_connections"])
        else:
            jobs = self.concurrency_jobs()
            for _ in range(20):
                if time.monotonic() - t0 >= seconds - 2:
                    break
                many_clients(self.proxy.port, jobs, auth=None)

    def hold(self, seconds):
        """Keep the fixtures up for by-hand measurements (bounded)."""
        info = {
            "hubproxy": self.proxy.url, "hubproxy_pid": self.proxy.pid,
            "hubproxy_nolog": self.proxy_nolog.url, "hubproxy_nolog_pid": self.proxy_nolog.pid,
            "nginx": "http://127.0.0.1:%d" % self.nginx_port, "registry": self.hub.url,
            "pullthrough": self.pullthrough.url, "git": self.gh.clone_url(),
            "big": self.big, "mid": self.mid, "small": self.small, "auth": self.direct_auth,
            "config": self.proxy.config_path,
        }
        path = os.path.join(self.work.path, "hold.json")
        with open(path, "w") as f:
            json.dump(info, f, indent=1)
        log("fixtures up for %ds; details in %s" % (seconds, path))
        print(json.dumps(info, indent=1), flush=True)
        time.sleep(seconds)

    # -- driver ---------------------------------------------------------

    def run(self):
        os.makedirs(self.out_dir, exist_ok=True)
        try:
            self.setup()
            if self.args.hold:
                self.hold(self.args.hold)
                return 0
            for step in (self.bench_throughput, self.bench_memory, self.bench_concurrency,
                         self.bench_small, self.bench_git, self.bench_startup):
                if self.args.only and step.__name__.replace("bench_", "") not in self.args.only:
                    continue
                try:
                    step()
                except Exception as e:
                    log("%s FAILED: %s" % (step.__name__, e))
                    self.results.setdefault("failures", []).append("%s: %s" % (step.__name__, e))
            if self.args.profile:
                self.profile()
            self.results["hubproxy_rss_end_kib"] = rss_kib(self.proxy.pid)
            self.results["load"]["end"] = loadavg()
            self.results["versions"] = self.versions
        finally:
            if self.work is not None:
                log("stopping fixtures")
                self.work.cleanup()
        write_outputs(self.results, self.out_dir)
        return 1 if self.results.get("failures") else 0


def top_functions(raw_path, n=15):
    """Self and inclusive sample counts per function from py-spy's raw
    (collapsed-stack) output."""
    self_c, incl, total = {}, {}, 0
    try:
        with open(raw_path) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                try:
                    c = int(count)
                except ValueError:
                    continue
                frames = stack.split(";")
                total += c
                leaf = frames[-1]
                self_c[leaf] = self_c.get(leaf, 0) + c
                for fr in set(frames):
                    incl[fr] = incl.get(fr, 0) + c
    except FileNotFoundError:
        return {"total": 0, "self": [], "inclusive": []}
    top_self = sorted(self_c.items(), key=lambda kv: -kv[1])[:n]
    top_incl = sorted(incl.items(), key=lambda kv: -kv[1])[:n * 4]
    return {"total": total, "self": top_self, "inclusive": top_incl}


# ---------------------------------------------------------------- report

def fmt(x, spec="%.0f"):
    return "n/a" if x is None else spec % x


def verdict(value, target, higher_better=True):
    if value is None:
        return "not measured"
    if higher_better:
        if value >= target:
            return "**met** (+%.0f %%)" % ((value / target - 1) * 100)
        return "**missed** by %.0f %%" % ((1 - value / target) * 100)
    if value <= target:
        return "**met** (%.1f below)" % (target - value)
    return "**missed** by %.1f (%.0f %%)" % (value - target, (value / target - 1) * 100)


def write_outputs(res, out_dir):
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    try:
        chart(res, os.path.join(out_dir, "single-stream.png"))
    except Exception as e:  # the report is still worth having
        res["notes"].append("chart failed: %s" % e)
    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write(report(res))
    log("wrote %s" % os.path.join(out_dir, "latest.md"))


def chart(res, path):
    mem = res.get("memory")
    if not mem:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rate_series(samples):
        span = samples[-1][0] - samples[0][0] if len(samples) > 1 else 1.0
        window = min(0.5, max(0.05, span / 25))
        ts, rates = [], []
        j = 0
        for i, (t, b, _) in enumerate(samples):
            if b is None:
                continue
            while j < i and (samples[j][1] is None or t - samples[j][0] > window):
                j += 1
            if j < i and samples[j][1] is not None and t > samples[j][0]:
                ts.append(t)
                rates.append((b - samples[j][1]) / (t - samples[j][0]) / MB)
        return ts, rates

    panels = [("throttled reader (curl --limit-rate %s)" % res["params"]["throttle"], mem["samples"])]
    un = res.get("unthrottled_samples")
    if un:
        panels.append(("unthrottled reader (curl -o /dev/null)", un))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.6 * len(panels)), squeeze=False)
    for ax, (title, samples) in zip(axes[:, 0], panels):
        ts, rates = rate_series(samples)
        ax.plot(ts, rates, color="tab:blue", label="throughput to the client (MB/s, moving window)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MB/s", color="tab:blue")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        rt = [s[0] for s in samples if s[2]]
        rv = [s[2] / 1024 for s in samples if s[2]]
        ax2.plot(rt, rv, color="tab:red", label="hubproxy RSS (MiB)")
        ax2.set_ylabel("RSS MiB", color="tab:red")
        ax2.set_ylim(0, max(80, max(rv) * 1.2 if rv else 80))
        ax2.axhline(60, color="tab:red", linestyle=":", linewidth=0.8)
        ax.set_title("hubproxy, %d MiB blob, %s" % (res["params"]["big"] // MiB, title))
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res):
    v = res.get("versions", {})
    p = res["params"]
    L = []
    L.append("# hubproxy benchmarks (%s mode)\n" % res["mode"])
    L.append("Produced by `bench/run%s` — do not edit by hand; see `bench/README.md`.\n"
             % (" --quick" if res["mode"] == "quick" else ""))
    L.append("| | |\n|---|---|")
    for k, label in (("date", "Date"), ("cpu", "CPU"), ("cores", "Cores"), ("kernel", "Kernel"),
                     ("python", "Python"), ("twisted", "Twisted"), ("hubproxy", "hubproxy"),
                     ("nginx", "nginx"), ("registry", "Registry"), ("curl", "curl"), ("wrk", "wrk"),
                     ("git", "git")):
        L.append("| %s | %s |" % (label, v.get(k, "?")))
    load = res.get("load", {})
    L.append("| Load average (1/5/15 min) | start %s · end %s |" % (load.get("start", "?"), load.get("end", "?")))
    L.append("")
    busy = any(float(x.split()[0]) > 0.5 for x in load.values() if x)
    if busy:
        L.append("> The load average was above 0.5 during this run (the benchmark's own servers and "
                 "clients share the %s cores, and so does anything else running on the machine), so "
                 "absolute numbers are noisy (±30 %% is normal here); ratios within one run are more "
                 "trustworthy than absolute values.\n" % v.get("cores", "?"))
    L.append("All servers on 127.0.0.1; MB = 10^6 bytes, MiB = 2^20 bytes; medians of %d run(s), "
             "targets alternating.\n" % p["runs"])

    L.append("## Summary\n")
    L.append("| # | Measure | hubproxy | reference | ratio | target | verdict |")
    L.append("|---|---|---|---|---|---|---|")
    t = res.get("throughput")
    if t:
        m = t["median_mbps"]
        L.append("| 1 | single-stream %d MiB blob | %s MB/s | nginx %s MB/s · direct %s MB/s | %.2f× nginx · %.2f× direct | ≥ 0.6× nginx | %s |" % (
            t["size"] // MiB, fmt(m["hubproxy"]), fmt(m["nginx"]), fmt(m["direct"]), t["ratio_nginx"],
            t["ratio_direct"], verdict(t["ratio_nginx"], TARGETS["throughput_ratio_nginx"])))
    mem = res.get("memory")
    if mem:
        L.append("| 2a | RSS idle (after warm-up; fresh start %.1f MiB) | %.1f MiB | | | ≤ 60 MiB | %s |" % (
            mem["idle_start_kib"] / 1024, mem["idle_before_kib"] / 1024,
            verdict(max(mem["idle_before_kib"], mem["idle_start_kib"]) / 1024, TARGETS["idle_rss_mib"], False)))
        L.append("| 2b | RSS growth streaming to a %s/s reader | %.1f MiB (peak %.1f MiB) | | | ≤ 16 MiB | %s |" % (
            p["throttle"], mem["growth_kib"] / 1024, mem["peak_kib"] / 1024,
            verdict(mem["growth_kib"] / 1024, TARGETS["rss_growth_mib"], False)))
    c = res.get("concurrency")
    if c:
        L.append("| 3 | %d clients at once (%d × %d MiB + small) | %d errors, %d/%d digests right, %.0f MB/s, TTFB p50 %s ms / p99 %s ms | | | 0 errors | %s |" % (
            c["clients"], c["big_clients"], c["big_size"] // MiB, c["errors"], c["digests_ok"], c["clients"],
            c["aggregate_mbps"], fmt(c["ttfb_p50_ms"], "%.1f"), fmt(c["ttfb_p99_ms"], "%.1f"),
            "**met**" if c["errors"] == 0 else "**missed** (%d errors)" % c["errors"]))
    s = res.get("small")
    if s:
        m = s["median_rps"]
        for meth in ("HEAD", "GET"):
            hp, pt, di = m["hubproxy"][meth], m["pullthrough"][meth], m["direct"][meth]
            if not (hp and pt and di):
                L.append("| 4 | manifest %s by tag | not measured | | | | |" % meth)
                continue
            L.append("| 4 | manifest %s by tag (wrk -c%d) | %s req/s (no access log: %s) | pull-through %s · direct %s | %.2f× pull-through · %.2f× direct | ≥ 1× pull-through, ≥ 0.5× direct | %s; %s |" % (
                meth, s["connections"], fmt(hp), fmt(m["hubproxy-nolog"][meth]), fmt(pt), fmt(di), hp / pt, hp / di,
                "pull-through " + verdict(hp / pt, 1.0), "direct " + verdict(hp / di, 0.5)))
    g = res.get("git")
    if g:
        L.append("| 5 | `git clone` fixture repo | %.0f ms | direct %.0f ms | %.2f× the time | — | — |" % (
            g["median_s"]["hubproxy"] * 1000, g["median_s"]["direct"] * 1000, g["ratio"]))
    st = res.get("startup")
    if st:
        L.append("| 6 | start-up to 200 on /ready | %.0f ms | | | — | — |" % (st["median_s"] * 1000))
    L.append("")

    if t:
        L.append("## 1. Single-stream throughput\n")
        L.append("curl to /dev/null, one connection; every run checked for status 200 and the exact size.\n")
        L.append("CPU s/GB: CPU time (user+system, from /proc/PID/stat) the server process(es) used per GB "
                 "relayed — for nginx its master and worker, for `direct` the registry; the registry's own "
                 "cost is the same behind every proxy. On a busy machine this is steadier than MB/s.\n")
        L.append("| target | runs (MB/s) | median | ratio to nginx | CPU s/GB |\n|---|---|---|---|---|")
        for n in t["runs"]:
            L.append("| %s | %s | %s | %.2f | %s |" % (n, ", ".join("%.0f" % x for x in t["runs"][n]),
                                                  fmt(t["median_mbps"][n]), t["median_mbps"][n] / t["median_mbps"]["nginx"],
                                                  fmt(t.get("cpu_s_per_gb", {}).get(n), "%.2f")))
        if t.get("hubproxy_peak_rss_kib"):
            L.append("\nhubproxy peak RSS during the unthrottled runs: %.1f MiB." % (t["hubproxy_peak_rss_kib"] / 1024))
        L.append("")
    if mem:
        L.append("## 2. Memory\n")
        L.append("RSS from /proc/PID/status (VmRSS), sampled every 0.1 s while the %d MiB blob streamed "
                 "to `curl --limit-rate %s` (%.1f MB/s achieved), body hashed: digest %s.\n" % (
                     p["big"] // MiB, p["throttle"], mem["throttled_mbps"] or 0,
                     "right" if mem["digest_ok"] else "**WRONG**"))
        L.append("| idle at start | idle after warm-up | peak while streaming | growth | after |\n|---|---|---|---|---|")
        L.append("| %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB |\n" % (
            mem["idle_start_kib"] / 1024, mem["idle_before_kib"] / 1024, mem["peak_kib"] / 1024,
            mem["growth_kib"] / 1024, mem["after_kib"] / 1024))
        L.append("![throughput and RSS over time](single-stream.png)\n")
    if c:
        L.append("## 3. Concurrency\n")
        L.append("One asyncio client process opens all %d connections at once (HTTP/1.1, "
                 "`Connection: close`), hashes every body and compares it with the digest. "
                 "TTFB is measured from before `connect()` to the first response byte. "
                 "The client shares the %s cores with hubproxy, the registry and whatever else "
                 "runs, so the aggregate is a lower bound.\n" % (c["clients"], v.get("cores", "?")))
        L.append("| target | clients | errors | digests right | wall | aggregate | TTFB p50 | TTFB p99 | TTFB max | "
                 "small blobs: TTFB p50 / p99 | %d MiB blob: TTFB p50 |" % (c["big_size"] // MiB))
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        rows = [("hubproxy", c)] + sorted(res.get("concurrency_reference", {}).items())
        for name, r in rows:
            L.append("| %s | %d | %d | %d | %.2f s | %.0f MB/s | %s ms | %s ms | %s ms | %s / %s ms | %s ms |" % (
                name, r["clients"], r["errors"], r["digests_ok"], r["wall_s"], r["aggregate_mbps"],
                fmt(r["ttfb_p50_ms"], "%.1f"), fmt(r["ttfb_p99_ms"], "%.1f"), fmt(r["ttfb_max_ms"], "%.1f"),
                fmt(r.get("ttfb_small_p50_ms"), "%.1f"), fmt(r.get("ttfb_small_p99_ms"), "%.1f"),
                fmt(r.get("ttfb_big_p50_ms"), "%.1f")))
        L.append("\nhubproxy RSS %.1f MiB before, %.1f MiB peak during its run.\n" % (
            (c["rss_before_kib"] or 0) / 1024, (c["rss_peak_kib"] or 0) / 1024))
        if c["error_samples"]:
            L.append("Errors: %s\n" % "; ".join(c["error_samples"]))
    if s:
        L.append("## 4. Small requests (manifest by tag)\n")
        L.append("GET: `wrk -t1 -c%d -d%ds --latency -s bench/manifest.lua`; HEAD: `curl -Z --parallel-max %d -K cfg` "
                 "with `head` (wrk 4.1 and h2load hang on HEAD answers that carry a Content-Length: they wait "
                 "for a body), stopped after %d s, so HEAD and GET numbers compare across targets, not with "
                 "each other. Accept: the four manifest types. Token and manifest caches warm; each target "
                 "checked once with curl for 200 and the right `Docker-Content-Digest` first. `hubproxy-nolog` "
                 "is the same config with `[log] accessLog = false`. `direct` is sent a Bearer token; the "
                 "pull-through registry (`proxy.remoteurl` = the token-auth registry) re-checks the tag "
                 "upstream on every request.\n" % (s["connections"], s["seconds"], s["connections"], s["seconds"]))
        L.append("| target | HEAD req/s (runs) | HEAD p50/p99 ms | GET req/s (runs) | GET p50/p99 ms |")
        L.append("|---|---|---|---|---|")
        for name in s["runs"]:
            cells = []
            for meth in ("HEAD", "GET"):
                runs = s["runs"][name][meth]
                det = s["details"][name][meth]
                cells.append("%s (%s)" % (fmt(s["median_rps"][name][meth]), ", ".join("%.0f" % x for x in runs)))
                cells.append("%s / %s" % (fmt(median([d["p50_ms"] for d in det]), "%.2f"),
                                          fmt(median([d["p99_ms"] for d in det]), "%.2f")))
            L.append("| %s | %s |" % (name, " | ".join(cells)))
        L.append("")
    if g:
        L.append("## 5. git clone\n")
        L.append("`git clone -q` (protocol v2) of the GitServer fixture repository (3 commits, ~66 KiB pack) "
                 "from nginx + git-http-backend, directly and through hubproxy "
                 "(`/https://github.com/owner/repo.git` with `[upstreams]`); first round not counted.\n")
        L.append("| | runs (ms) | median |\n|---|---|---|")
        for n in ("hubproxy", "direct"):
            L.append("| %s | %s | %.0f ms |" % (n, ", ".join("%.0f" % (x * 1000) for x in g["runs"][n]),
                                              g["median_s"][n] * 1000))
        L.append("")
    if st:
        L.append("## 6. Start-up\n")
        L.append("From `Popen(twistd -n hubproxy --config ...)` to the first 200 on `/ready` (polled every 10 ms): "
                 "%s ms; median %.0f ms.\n" % (", ".join("%.0f" % (x * 1000) for x in st["runs"]), st["median_s"] * 1000))
    prof = res.get("profile")
    if prof:
        L.append("## Profile (py-spy)\n")
        for what, d in prof.items():
            L.append("### %s — flame graph `%s`, %d samples\n" % (what, d["svg"], d["top"]["total"]))
            tot = max(1, d["top"]["total"])
            L.append("Self time (where the samples were):\n")
            L.append("| self % | function |\n|---|---|")
            for fn, cnt in d["top"]["self"]:
                L.append("| %.1f | `%s` |" % (100.0 * cnt / tot, fn.replace("|", "\\|")))
            L.append("\nInclusive time (below the reactor's own frames):\n")
            L.append("| incl. % | function |\n|---|---|")
            shown = 0
            for fn, cnt in d["top"]["inclusive"]:
                if cnt / tot > 0.5 or shown >= 15:
                    continue
                shown += 1
                L.append("| %.1f | `%s` |" % (100.0 * cnt / tot, fn.replace("|", "\\|")))
            L.append("")
    rows = []
    if t:
        for n in t["runs"]:
            if n.startswith("before:"):
                rows.append("| %s | single-stream MB/s (median) | %s | %s | %+.0f %% |" % (
                    CHANGES[n], fmt(t["median_mbps"][n]), fmt(t["median_mbps"]["hubproxy"]),
                    (t["median_mbps"]["hubproxy"] / t["median_mbps"][n] - 1) * 100))
                cg = t.get("cpu_s_per_gb", {})
                if cg.get(n) and cg.get("hubproxy"):
                    rows.append("| %s | CPU s per GB relayed (median) | %.2f | %.2f | %+.0f %% |" % (
                        CHANGES[n], cg[n], cg["hubproxy"], (cg["hubproxy"] / cg[n] - 1) * 100))
    if s:
        m = s["median_rps"]
        for n in m:
            if n.startswith("before:"):
                for meth in ("HEAD", "GET"):
                    if m[n][meth] and m["hubproxy"][meth]:
                        rows.append("| %s | manifest %s req/s (median) | %s | %s | %+.0f %% |" % (
                            CHANGES[n], meth, fmt(m[n][meth]), fmt(m["hubproxy"][meth]),
                            (m["hubproxy"][meth] / m[n][meth] - 1) * 100))
        for meth in ("HEAD", "GET"):
            if m.get("hubproxy-nolog", {}).get(meth) and m["hubproxy"][meth]:
                rows.append("| (reference) no access log at all | manifest %s req/s (median) | %s | %s | %+.0f %% |" % (
                    meth, fmt(m["hubproxy"][meth]), fmt(m["hubproxy-nolog"][meth]),
                    (m["hubproxy-nolog"][meth] / m["hubproxy"][meth] - 1) * 100))
    if rows:
        L.append("## Speed-ups made, before and after, measured in this run\n")
        L.append("Each `before:` variant is today's hubproxy with one change undone at start by "
                 "`bench/variant_twistd.py` (see its docstring), run on the same fixtures, alternating with "
                 "the others; \"after\" is hubproxy as shipped. The last rows compare hubproxy with "
                 "`[log] accessLog = false` (what the access log still costs).\n")
        L.append("| change | measure | before | after | change |\n|---|---|---|---|---|")
        L.extend(rows)
        L.append("")
    analysis = res.get("analysis")
    if analysis:
        L.append("## Why, and what would close the gaps\n")
        L.append(analysis.strip() + "\n")
    if res.get("notes"):
        L.append("## Notes\n")
        for n in res["notes"]:
            L.append("- %s" % n)
        L.append("")
    if res.get("failures"):
        L.append("## Failures\n")
        for n in res["failures"]:
            L.append("- %s" % n)
        L.append("")
    L.append("## Load average per section\n")
    L.append(", ".join("%s: %s" % kv for kv in load.items()) + "\n")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short CI report mode; never fails on a number")
    ap.add_argument("--profile", action="store_true", help="also py-spy the relay and the manifest path")
    ap.add_argument("--only", nargs="*", help="run only these sections: throughput memory concurrency small git startup")
    ap.add_argument("--variants", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure proposed changes patched in at start (bench/variant_twistd.py); "
                         "default: on in full mode, off with --quick")
    ap.add_argument("--big-mib", type=int, help="size of the big layer in MiB")
    ap.add_argument("--runs", type=int, help="runs per target (median)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    ap.add_argument("--hold", type=int, metavar="SECONDS",
                    help="start the fixtures, print their URLs, keep them up this long, stop (no measuring)")
    ap.add_argument("--analysis", help="markdown file whose text is put in the report's analysis section")
    args = ap.parse_args(argv)
    if args.variants is None:
        args.variants = not args.quick

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    b = Bench(args)
    if args.analysis is None and os.path.exists(os.path.join(HERE, "analysis.md")):
        args.analysis = os.path.join(HERE, "analysis.md")
    if args.analysis:
        with open(args.analysis) as f:
            b.results["analysis"] = f.read()
    rc = b.run()
    if args.quick:
        return 0 if "versions" in b.results else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
