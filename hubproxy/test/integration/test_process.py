"""
The real process: the installed twistd plugin and .tac, config errors as a
new user meets them, graceful shutdown, and flat memory while a large file
streams to a slow reader.

These run hubproxy as a subprocess (as users run it) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial.unittest import TestCase

from hubproxy.test.integration.procs import (
    REPO_ROOT,
    HubproxyProcess,
    free_port,
    require_tools,
    rss_kib,
    start_python_server,
    twistd_path,
)

BIG_SERVER = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
SIZE = int(sys.argv[2])
CHUNK = bytes(range(256)) * 256
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        left = SIZE
        try:
            while left > 0:
                n = min(left, len(CHUNK))
                self.wfile.write(CHUNK[:n])
                left -= n
        except (BrokenPipeError, ConnectionResetError):
            pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


class PluginTests(TestCase):
    """
    The plugin is found after a regular install, and both entry points serve.
    """

    def test_plugin_listed_after_install(self) -> None:
        twistd = twistd_path()
        with tempfile.TemporaryDirectory() as cwd:
            # Not the checkout: prove the *installed* dropin is found.
            out = subprocess.run([twistd, "--help"], cwd=cwd, capture_output=True, text=True, timeout=60)
        self.assertIn("hubproxy", out.stdout, out.stdout + out.stderr)

    def test_plugin_serves_ready_and_drains_on_sigterm(self) -> None:
        proc = HubproxyProcess(self, "[server]\nhost = \"127.0.0.1\"\nshutdownGrace = 5\n")
        proc.start()
        with urllib.request.urlopen(proc.url + "/ready", timeout=10) as r:
            body = json.loads(r.read())
        self.assertEqual(body["status"], "ok")
        self.assertIn("version", body)
        rc = proc.stop()
        self.assertEqual(rc, 0, proc.log())
        # the access line, batched, was written at shutdown at the latest
        self.assertRegex(proc.log(), r'\[hubproxy.access#info\] 127.0.0.1 "GET /ready HTTP/1.1" 200 \d+ "Python-urllib/')

    def test_tac_serves(self) -> None:
        port = free_port()
        with tempfile.TemporaryDirectory() as d:
            cfg = os.path.join(d, "c.toml")
            with open(cfg, "w") as f:
                f.write(f'[server]\nhost = "127.0.0.1"\nport = {port}\n')
            env = dict(os.environ, HUBPROXY_CONFIG=cfg)
            proc = HubproxyProcess(self, None, argv=[twistd_path(), "-n", "--pidfile=", "-y", os.path.join(REPO_ROOT, "hubproxy.tac")], env=env, port=port, cwd=d)
            proc.start()
            with urllib.request.urlopen(proc.url + "/ready", timeout=10) as r:
                self.assertEqual(json.loads(r.read())["status"], "ok")
            self.assertEqual(proc.stop(), 0)


class ConfigErrorTests(TestCase):
    """
    Bad configs as a new user writes them: one clear line, exit status 1,
    nothing bound.
    """

    def run_twistd(self, toml_text: str | None, config_arg: str | None = None) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory() as d:
            path = config_arg
            if toml_text is not None:
                path = os.path.join(d, "config.toml")
                with open(path, "w") as f:
                    f.write(toml_text)
            argv = [twistd_path(), "-n", "--pidfile=", "hubproxy"]
            if path is not None:
                argv += ["--config", path]
            return subprocess.run(argv, cwd=d, capture_output=True, text=True, timeout=60)

    def assertOneLine(self, result: subprocess.CompletedProcess[str], *fragments: str) -> None:
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    def test_wrong_type(self) -> None:
        self.assertOneLine(self.run_twistd('[server]\nport = "abc"\n'), "server.port", "abc")

    def test_bad_cidr(self) -> None:
        self.assertOneLine(self.run_twistd('[security]\nblackList = ["10.0.0.300/8"]\n'), "security.blackList", "10.0.0.300")

    def test_bad_duration(self) -> None:
        self.assertOneLine(self.run_twistd('[tokenCache]\ndefaultTTL = "20 minutes"\n'), "tokenCache.defaultTTL")

    def test_missing_file(self) -> None:
        self.assertOneLine(self.run_twistd(None, "/nonexistent/hubproxy.toml"), "/nonexistent/hubproxy.toml")

    def test_syntax_error(self) -> None:
        self.assertOneLine(self.run_twistd("[server\nport = 1\n"), "config.toml")

    def test_unknown_key_warns_but_runs(self) -> None:
        port = free_port()
        proc = HubproxyProcess(self, f'[server]\nhost = "127.0.0.1"\nport = {port}\nprot = 1\n', port=port)
        proc.start()
        proc.stop()
        self.assertIn("server.prot", proc.log())


class MemoryTests(TestCase):
    """
    Backpressure for real: 256 MiB through the proxy to a reader limited to
    10 MB/s; the proxy's RSS must stay flat.
    """

    timeout = 180

    def test_rss_flat_while_streaming(self) -> None:
        require_tools("curl")
        size = 256 * 1024 * 1024
        up_port = free_port()
        start_python_server(self, BIG_SERVER, [str(up_port), str(size)], up_port)
        proc = HubproxyProcess(
            self,
            f'[server]\nhost = "127.0.0.1"\n[upstreams]\n"github.com" = "http://127.0.0.1:{up_port}"\n',
        )
        proc.start()
        url = proc.url + "/https://github.com/o/r/releases/download/v1/big.bin"
        # Warm up (imports, pools) before the baseline.
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-r", "0-1023", proc.url + "/ready"], timeout=30)
        baseline = rss_kib(proc.pid)
        reader = subprocess.Popen(
            ["curl", "-s", "-S", "--limit-rate", "10M", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = baseline
        deadline = time.monotonic() + 150
        while reader.poll() is None and time.monotonic() < deadline:
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.25)
        if reader.poll() is None:
            reader.kill()
            self.fail("download did not finish within 150 s")
        out, err = reader.communicate()
        self.assertEqual(out.strip(), f"200 {size}", err)
        growth_mib = (peak - baseline) / 1024
        sys.stderr.write(f"\nproxy RSS baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, growth {growth_mib:.1f} MiB\n")
        self.assertLessEqual(growth_mib, 16, f"RSS grew {growth_mib:.1f} MiB")
        proc.stop()
