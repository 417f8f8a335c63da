"""
Security integration tests (issue #5): a running hubproxy under attack.

 - L{SSRFProbeTests}: dozens of server-side request forgery probes (client
   paths, redirects, auth realms, registry names, odd request lines) that
   all aim at a I{recording listener} on loopback; none may reach it.
 - L{FuzzTests}: Hypothesis over raw request bytes: no 500, no traceback,
   the reactor stays up.
 - L{FloodTests}: 10,000 distinct client addresses via X-Forwarded-For
   leave the process's memory bounded; the rate limit still works.

Nothing here sends a packet to a non-loopback address.  hubproxy runs in a
private mount namespace whose C{/etc/resolv.conf} names a tiny DNS server of
ours on C{127.53.0.1} (L{FakeDNS}): it answers names under C{rebind.test}
(and C{raw.githubusercontent.com}) with loopback addresses, to prove that
the connect-time address check works, and NXDOMAIN for everything else, so
no DNS query leaves the machine either.  Non-loopback private addresses are
only ever I{named} in client paths that the proxy refuses from the text.
"""

from __future__ import annotations

import atexit
import os
import re
import socket
import struct
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from hubproxy.test.integration.procs import HubproxyProcess, in_ci, require_tools, rss_kib

LOOPBACK = "127.0.0.1"
DNS_ADDRESS = "127.53.0.1"
LEAK_MARKER = b"LEAKED-SECRET-FROM-LISTENER"
BLOB_DIGEST = "sha256:" + "ab" * 32
# Names our DNS server answers with loopback addresses.
REBIND_SUFFIX = "rebind.test"
REBIND_EXTRA = frozenset({"raw.githubusercontent.com"})
GUARD_SCRIPT = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


# ---------------------------------------------------------------- helpers


class RecordingListener:
    """
    A plain TCP server on 127.0.0.1:P (and [::1]:P when IPv6 loopback
    works) that records every accepted connection and answers with a
    marker, so a leak would be visible both here and in the response.
    """

    def __init__(self) -> None:
        self.accepted: list[tuple[Any, bytes]] = []
        self._socks: list[socket.socket] = []
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind((LOOPBACK, 0))
        v4.listen(64)
        self.port = v4.getsockname()[1]
        self._socks.append(v4)
        self.ipv6 = False
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", self.port))
            v6.listen(64)
            self._socks.append(v6)
            self.ipv6 = True
        except OSError:
            pass
        self._stop = False
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self._socks]
        for t in self._threads:
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, addr = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            first = b""
            try:
                conn.settimeout(1)
                first = conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(LEAK_MARKER) + LEAK_MARKER)
            except OSError:
                pass
            finally:
                conn.close()
            with self._lock:
                self.accepted.append((addr, first))

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            s.close()


class FakeDNS:
    """
    A UDP DNS server on 127.53.0.1:53: loopback answers for the rebinding
    names (A 127.0.0.1, AAAA ::1), NXDOMAIN for every other name; records
    the names asked.  Needs root (port 53); L{start} returns False without.
    """

    def __init__(self) -> None:
        self.queries: list[tuple[str, int]] = []
        self._sock: socket.socket | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((DNS_ADDRESS, 53))
        except OSError:
            return False
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return True

    @staticmethod
    def _question(packet: bytes) -> tuple[str, int, int]:
        labels = []
        i = 12
        while packet[i]:
            n = packet[i]
            labels.append(packet[i + 1 : i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        qtype = struct.unpack("!H", packet[i + 1 : i + 3])[0]
        return ".".join(labels).lower(), qtype, i + 5

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop:
            try:
                packet, addr = self._sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                name, qtype, end = self._question(packet)
            except (IndexError, struct.error):
                continue
            self.queries.append((name, qtype))
            known = name == REBIND_SUFFIX or name.endswith("." + REBIND_SUFFIX) or name in REBIND_EXTRA
            answers = b""
            count = 0
            if known and qtype == 1:
                answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton(LOOPBACK)
                count = 1
            elif known and qtype == 28:
                answers = b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 0, 16) + socket.inet_pton(socket.AF_INET6, "::1")
                count = 1
            flags = 0x8180 if known else 0x8183
            header = packet[:2] + struct.pack("!HHHHH", flags, 1, count, 0, 0)
            try:
                self._sock.sendto(header + packet[12:end] + answers, addr)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()


def start_dns(test: SynchronousTestCase) -> FakeDNS | None:
    """
    Our DNS server, shared by every test in this module (one port 53).
    """
    dns = _SHARED.get("dns")
    if dns is None and "dns" not in _SHARED:
        dns = FakeDNS()
        if dns.start():
            atexit.register(dns.close)
        else:
            dns = None
        _SHARED["dns"] = dns
    return dns


_SHARED: dict[str, Any] = {}


def guarded_hubproxy(test: SynchronousTestCase, toml_text: str) -> HubproxyProcess:
    """
    A started hubproxy whose resolver is our L{FakeDNS} (or, without root,
    C{nameserver 127.0.0.1}, where nothing answers): it never asks the
    machine's real DNS server, which is not on loopback.
    """
    require_tools("unshare", "mount", package="util-linux mount")
    if os.geteuid() != 0:
        message = "the security integration tests need root (mount namespace, port 53)"
        if in_ci():
            raise AssertionError(message)
        raise SkipTest(message)
    dns = start_dns(test)
    proc = HubproxyProcess(test, toml_text)
    resolv = os.path.join(proc.dir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver %s\noptions timeout:1 attempts:1\n" % (DNS_ADDRESS if dns else LOOPBACK))
    proc.argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", GUARD_SCRIPT, resolv, *proc.argv]
    proc.start()
    return proc


def raw_exchange(port: int, data: bytes, timeout: float = 20.0, idle: float | None = None, source: str | None = None) -> bytes:
    """
    Send C{data} to 127.0.0.1:C{port} and read until the server closes,
    C{timeout} passes, or (with C{idle}) nothing arrives for C{idle} s.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((LOOPBACK, port))
        try:
            sock.sendall(data)
        except OSError:
            pass
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, min(idle or timeout, deadline - time.monotonic())))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        sock.close()


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def status_of(response: bytes) -> int | None:
    match = _STATUS.match(response)
    return int(match.group(1)) if match else None


def get(port: int, target: str | bytes, headers: dict[str, str] | None = None, method: bytes = b"GET") -> bytes:
    if isinstance(target, str):
        target = target.encode("utf-8")
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1:%d" % port, b"Connection: close"]
    for name, value in (headers or {}).items():
        if name.lower() == "host":
            lines[1] = b"Host: " + value.encode("latin-1")
        else:
            lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    return raw_exchange(port, b"\r\n".join(lines) + b"\r\n\r\n")


def ready(proc: HubproxyProcess) -> int:
    with urllib.request.urlopen(proc.url + "/ready", timeout=10) as r:
        return r.status


def loopback_hostname() -> str | None:
    """
    A host name (not C{localhost}) that /etc/hosts maps to 127.0.0.1, e.g.
    the machine's own name: passes every text check, caught at connect time.
    """
    for name in (socket.gethostname(), "vm", "runsc"):
        if not name or "localhost" in name:
            continue
        try:
            if socket.gethostbyname(name) == LOOPBACK:
                return name
        except OSError:
            continue
    return None


class EvilUpstream:
    """
    A loopback upstream the configuration trusts (as github.com,
    huggingface.co and two registries) that tries to send the proxy to the
    recording listener: paths containing C{loc<N>} are redirected to
    C{locations[N]}; registry repositories C{realm/realm<N>} answer 401 with
    a Bearer realm C{realms[N]}.
    """

    def __init__(self) -> None:
        self.locations: list[str] = []
        self.realms: list[str] = []
        self.requests: list[str] = []
        evil = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                evil.requests.append(self.path)
                realm = re.search(r"realm(\d+)", self.path)
                loc = re.search(r"loc(\d+)", self.path)
                if self.path == "/v2/":
                    self._send(200, b"{}", {"Content-Type": "application/json"})
                elif realm:
                    challenge = 'Bearer realm="%s",service="evil",scope="repository:realm/realm%s:pull"' % (
                        evil.realms[int(realm.group(1))],
                        realm.group(1),
                    )
                    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}'
                    self._send(401, body, {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
                elif loc:
                    code = 307 if "/blobs/" in self.path else 302
                    self._send(code, b"", {"Location": evil.locations[int(loc.group(1))]})
                else:
                    self._send(404, b"not here\n", {"Content-Type": "text/plain"})

            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response_only(code)
                    for name, value in headers.items():
                        # raw bytes: Locations may hold odd characters on purpose
                        self._headers_buffer.append(f"{name}: ".encode() + value.encode("utf-8") + b"\r\n")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except OSError:
                    # the proxy may drop a redirect's connection early
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = _answer

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- SSRF


class SSRFProbeTests(SynchronousTestCase):
    """
    Every probe aims at the recording listener; none may reach it.
    """

    def setUp(self) -> None:
        self.listener = RecordingListener()
        self.addCleanup(self.listener.close)
        self.evil = EvilUpstream()
        self.addCleanup(self.evil.close)
        P = self.listener.port
        self.P = P
        host_alias = loopback_hostname()
        spellings = [
            f"http://127.0.0.1:{P}/leak",
            f"http://2130706433:{P}/leak",
            f"http://0x7f000001:{P}/leak",
            f"http://0x7f.1:{P}/leak",
            f"http://0177.0.0.1:{P}/leak",
            f"http://127.1:{P}/leak",
            f"http://127.0.0.1.:{P}/leak",
            f"http://0:{P}/leak",
            f"http://0.0.0.0:{P}/leak",
            f"http://[::ffff:127.0.0.1]:{P}/leak",
            f"http://[::ffff:7f00:1]:{P}/leak",
            f"http://[0:0:0:0:0:ffff:127.0.0.1]:{P}/leak",
            f"http://[::127.0.0.1]:{P}/leak",
            f"http://[::1]:{P}/leak",
            f"http://localhost:{P}/leak",
            f"http://LocalHost.:{P}/leak",
            f"http://a.localhost:{P}/leak",
            f"//127.0.0.1:{P}/leak",
            f"https://127.0.0.1:{P}/leak",
            f"http://github.com@127.0.0.1:{P}/leak",
            f"http://github.com:443@127.0.0.1:{P}/leak",
            f"http://127.0.0.1:{P}#@github.com/leak",
            f"http://127.0.0.1:{P}\\@github.com/leak",
            f"http://%31%32%37.0.0.1:{P}/leak",
            f"http://127.0.0.1%2f@github.com:{P}/leak",
            f"http:/127.0.0.1:{P}/leak",
            f"  http://127.0.0.1:{P}/leak",
            f"gopher://127.0.0.1:{P}/_leak",
            f"http://leak.{REBIND_SUFFIX}:{P}/leak",
            f"https://leak.{REBIND_SUFFIX}:{P}/leak",
        ]
        if host_alias:
            spellings.append(f"http://{host_alias}:{P}/leak")
        # A two-hop chain: first back to the trusted upstream (on-host, fine),
        # which then redirects to the listener: every hop is checked.
        chain_to = len(spellings)
        spellings.append("https://github.com/o/r/releases/download/loc0/f.bin")
        spellings.append(f"/o/r/releases/download/loc{chain_to}/f.bin")
        self.evil.locations = spellings
        self.evil.realms = [
            f"http://127.0.0.1:{P}/token",
            f"http://localhost:{P}/token",
            f"http://[::1]:{P}/token",
            f"http://2130706433:{P}/token",
            f"http://0x7f.0.0.1:{P}/token",
            f"http://{self.evil.url[7:]}@127.0.0.1:{P}/token",
            f"http://realm.{REBIND_SUFFIX}:{P}/token",
            f"//127.0.0.1:{P}/token",
            "file:///etc/passwd",
        ]
        if host_alias:
            self.evil.realms.append(f"http://{host_alias}:{P}/token")
        toml = (
            '[server]\nhost = "127.0.0.1"\n'
            "[network]\nconnectTimeout = 3\nresponseTimeout = 10\n"
            "[rateLimit]\nrequestLimit = 100000\n"
            "[upstreams]\n"
            f'"github.com" = "{self.evil.url}"\n'
            f'"huggingface.co" = "{self.evil.url}"\n'
            f'[registries."docker.io"]\nupstream = "{self.evil.url}"\n'
            f'[registries."realm.example"]\nupstream = "{self.evil.url}"\n'
        )
        self.assertNotIn("allowNetworks", toml)
        self.proc = guarded_hubproxy(self, toml)
        self.dns = _SHARED.get("dns")

    def probe(self, results: list[Any], label: str, response: bytes) -> None:
        results.append((label, status_of(response), response[:300]))

    def test_no_probe_reaches_the_listener(self) -> None:
        port, P = self.proc.port, self.P
        results: list[Any] = []
        started = time.monotonic()

        # 1. URLs in the client's path, in every spelling.
        paths = [
            f"/http://127.0.0.1:{P}/",
            f"/http://2130706433:{P}/",
            f"/http://0x7f000001:{P}/",
            f"/http://0177.0.0.1:{P}/",
            f"/http://127.1:{P}/",
            f"/http://[::ffff:127.0.0.1]:{P}/",
            f"/http://[::1]:{P}/",
            f"/http://localhost:{P}/",
            f"/https://github.com@127.0.0.1:{P}/",
            "/http://127.0.0.1%2f@github.com/",
            f"/http:/127.0.0.1:{P}/",
            f"/127.0.0.1:{P}/x",
            f"//127.0.0.1:{P}/x",
            f"/http:%2f%2f127.0.0.1:{P}/",
            f"/http%3a%2f%2f127.0.0.1:{P}/",
            f"/http://127%2e0%2e0%2e1:{P}/",
            f"/http://127.0.0.1:{P}%2f.github.com/o/r/releases/download/v/x",
            f"/https://github.com%2f@127.0.0.1:{P}/",
            f"/https://github.com\\@127.0.0.1:{P}/",
            f"/https://github.com:{P}/o/r/releases/download/v/x",
            f"/https://github.com/../127.0.0.1:{P}/",
            f"/https://github.com/o/r/%2e%2e/%2e%2e/127.0.0.1:{P}/x",
            f"/http://127.0.0.1:{P}/https://github.com/o/r/releases/download/v/x",
            f"/https://github.com/o/r/releases/download/v/x?@127.0.0.1:{P}",
            f"/https://github.com#@127.0.0.1:{P}/o/r/releases/download/v/x",
            f"/https://leak.{REBIND_SUFFIX}:{P}/o/r/releases/download/v/x",
            f"/https://127\u30020\u30020\u30021:{P}/",
            "/http://169.254.169.254/latest/meta-data/",
            "/http://10.0.0.1/",
            "/http://[fd00::1]/",
            f"/https://objects.githubusercontent.com:{P}/x",
        ]
        for path in paths:
            self.probe(results, path, get(port, path))
        # A name that passes every text check but resolves (via our DNS) to
        # loopback: refused at connect time, before the TCP handshake.
        response = get(port, "/https://raw.githubusercontent.com/o/r/main/install.sh")
        self.probe(results, "raw.githubusercontent.com -> 127.0.0.1 by DNS", response)
        if self.dns is not None:
            self.assertEqual(status_of(response), 502, response)
            self.assertIn(b"may not reach", response)

        # 2. Registry names and containerd's ?ns=.
        for path in (
            f"/v2/127.0.0.1:{P}/x/manifests/1",
            f"/v2/localhost:{P}/x/manifests/1",
            f"/v2/[::1]:{P}/x/manifests/1",
            f"/v2/x/manifests/1?ns=127.0.0.1:{P}",
            f"/v2/x/manifests/1?ns=localhost:{P}",
            f"/v2/x/manifests/1?ns=http://127.0.0.1:{P}",
            f"/v2/x/blobs/{BLOB_DIGEST}?ns=127.0.0.1:{P}",
            f"/v2/127.0.0.1%3a{P}/x/manifests/1",
            f"/v2/x/tags/list?last=../../127.0.0.1:{P}&n=1",
        ):
            self.probe(results, path, get(port, path))

        # 3. Host / X-Forwarded-Host / X-Forwarded-For tricks.
        for headers in (
            {"Host": f"127.0.0.1:{P}"},
            {"X-Forwarded-Host": f"127.0.0.1:{P}", "X-Forwarded-Proto": "http"},
            {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": f"127.0.0.1:{P}"},
        ):
            self.probe(results, f"/v2/x/manifests/1 {headers}", get(port, f"/v2/127.0.0.1:{P}/x/manifests/1", headers))
            self.probe(results, f"/ {headers}", get(port, f"/http://127.0.0.1:{P}/", headers))

        # 4. Odd request lines, sent raw.
        for raw in (
            f"CONNECT 127.0.0.1:{P} HTTP/1.1\r\nHost: 127.0.0.1:{P}\r\n\r\n",
            f"GET http://127.0.0.1:{P}/ HTTP/1.1\r\nHost: 127.0.0.1:{P}\r\nConnection: close\r\n\r\n",
            f"GET https://github.com@127.0.0.1:{P}/ HTTP/1.1\r\nHost: github.com\r\nConnection: close\r\n\r\n",
            f"GET 127.0.0.1:{P} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            f"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1:{P}\r\nConnection: close\r\n\r\n",
            f"GET /http://127.0.0.1:{P}/ HTTP/1.0\r\n\r\n",
        ):
            self.probe(results, raw.split("\r\n")[0], raw_exchange(port, raw.encode(), timeout=10))

        # 5. Redirects from a trusted upstream, on every path that follows
        #    them: release downloads, Hugging Face, registry blobs and
        #    manifests.
        for i, location in enumerate(self.evil.locations):
            self.probe(results, f"github redirect -> {location}", get(port, f"/https://github.com/o/r/releases/download/loc{i}/f.bin"))
            self.probe(results, f"hf redirect -> {location}", get(port, f"/https://huggingface.co/org/m/resolve/main/loc{i}.bin"))
            self.probe(results, f"blob redirect -> {location}", get(port, f"/v2/redir/loc{i}/blobs/{BLOB_DIGEST}"))
        for i in (0, 1, 13):
            self.probe(results, f"manifest redirect -> {self.evil.locations[i]}", get(port, f"/v2/redir/loc{i}/manifests/latest"))

        # 6. Auth realms from a trusted registry's 401.  The proxy remembers
        #    a registry's challenge, so forget it between probes.
        for i, realm in enumerate(self.evil.realms):
            forget = get(port, "/api/cache/tokens", method=b"DELETE")
            self.assertEqual(status_of(forget), 200, forget)
            self.probe(results, f"auth realm {realm}", get(port, f"/v2/realm.example/realm/realm{i}/manifests/latest"))

        elapsed = time.monotonic() - started
        if os.environ.get("HUBPROXY_SECURITY_DEBUG"):
            for r in results:
                print(r[0], r[1], r[2][-160:])
            print(self.proc.log()[-20000:])
        self.assertGreaterEqual(len(results), 30)
        # Twisted itself answers "OPTIONS *" with an empty 200 (RFC 7231
        # 4.3.7) before any resource is consulted: nothing is fetched.
        twisted_options = [r for r in results if r[0].startswith("OPTIONS *")]
        self.assertEqual([r[1] for r in twisted_options], [200])
        self.assertTrue(twisted_options[0][2].endswith(b"Content-Length: 0\r\n\r\n"), twisted_options)
        def low(label: str) -> int:
            # A Hugging Face Hub redirect to a host the proxy serves is
            # handed to the client (as the Hub would), not fetched: a 3xx
            # is no leak.  Every other probe must be refused.
            return 300 if label.startswith("hf redirect") else 400

        bad = [
            r
            for r in results
            if r not in twisted_options and (r[1] is None or not low(r[0]) <= r[1] < 600 or r[1] == 500 or LEAK_MARKER in r[2])
        ]
        self.assertEqual(
            [(label, code, body[-200:]) for label, code, body in bad], [], "probes that did not get a clean 4xx/5xx"
        )
        # Give a straggling connection (if any) time to be recorded.
        time.sleep(0.3)
        self.assertEqual(
            self.listener.accepted, [], f"the recording listener on port {P} was reached ({len(results)} probes)"
        )
        # The rebinding names were really resolved (the text checks let
        # them through), so the connect-time check is what stopped them.
        if self.dns is not None:
            asked = {name for name, _ in self.dns.queries}
            self.assertIn(f"leak.{REBIND_SUFFIX}", asked)
            self.assertIn(f"realm.{REBIND_SUFFIX}", asked)
        # The trusted upstream was asked (the probes did what they meant).
        self.assertTrue(any("loc" in p for p in self.evil.requests))
        self.assertTrue(any("realm" in p for p in self.evil.requests))
        log = self.proc.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled Error", log)
        self.assertEqual(ready(self.proc), 200)
        self.assertLess(elapsed, 60, f"{len(results)} probes took {elapsed:.1f}s")


# ---------------------------------------------------------------- fuzz

_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"TRACE", b"PATCH", b"get", b"G\x00T", b"", b"GET GET"]
_SEGMENTS = [
    "", "v2", "ready", "metrics", "api", "cache", "tokens", "https:", "http:", "ftp:", "github.com",
    "huggingface.co", "raw.githubusercontent.com", "o", "r", "r.git", "releases", "download", "archive",
    "raw", "blob", "info", "refs", "git-upload-pack", "resolve", "main", "manifests", "blobs", "tags",
    "list", "library", "nginx", "latest", BLOB_DIGEST, "..", ".", "%2e%2e", "%2f", "%2F", "%00", "%",
    "%zz", "%c0%ae", "\x00", "\xff", "\u00fcn\u00efc\u00f6de", "127.0.0.1:1", "[::1]", "@", "\\",
    "?x=1", "?ns=127.0.0.1:1", "?service=git-upload-pack", "#frag", "a" * 300, "*",
]
_HEADER_NAMES = [
    b"Host", b"Content-Length", b"Transfer-Encoding", b"X-Forwarded-For", b"X-Real-IP", b"X-Forwarded-Host",
    b"X-Forwarded-Proto", b"Range", b"Accept", b"Authorization", b"Connection", b"Expect", b"Accept-Encoding",
    b"Cookie", b"Content-Type", b"Upgrade", b"HTTP2-Settings", b"Git-Protocol", b"If-None-Match",
]
_HEADER_VALUES = [
    b"0", b"-1", b"5", b"1e3", b" 5", b"99999999999999999999", b"chunked", b"gzip, chunked", b"chunked, identity",
    b"1.2.3.4, 127.0.0.1", b"::1", b"2001:db8::1", b"garbage, , ,", b"unknown", b"bytes=0-", b"bytes=-1,0-0,5-2",
    b"100-continue", b"close", b"keep-alive, Upgrade", b"h2c", b"\x00", b"\xff\xfe", b"a" * 9000, b"Bearer x",
    b"127.0.0.1:1", b"http://127.0.0.1:1/", b"",
]
_BODIES = [
    b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\nxx\r\n0\r\n\r\n", b"ffffffffffffffffffff\r\n",
    b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n", b"0\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\n\r\n",
    b"-1\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n",
]


def _target(draw: Any) -> bytes:
    parts = draw(st.lists(st.sampled_from(_SEGMENTS), max_size=9))
    target = ("/" + "/".join(parts)).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        target += draw(st.binary(max_size=30)).replace(b" ", b"%20")
    return target


@st.composite
def well_formed_requests(draw: Any) -> bytes:
    """
    Syntactically valid HTTP/1.1 (so routing, the guard and the resources
    are exercised), with fuzzed paths, header values and bodies; the
    connection closes after the answer.
    """
    method = draw(st.sampled_from([b"GET"] * 5 + [b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]))
    target = _target(draw)
    headers = [b"Host: " + draw(st.sampled_from([b"127.0.0.1", b"github.com", b"127.0.0.1:1", b"[::1]", b"x" * 300]))]
    for name, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(_HEADER_NAMES[1:]),
                st.sampled_from(_HEADER_VALUES) | st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v),
            ),
            max_size=6,
        )
    ):
        if name not in (b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect"):
            headers.append(name + b": " + value)
    body = b""
    if method in (b"POST", b"PUT", b"PATCH"):
        body = draw(st.sampled_from(_BODIES) | st.binary(max_size=300))
        if draw(st.booleans()):
            headers.append(b"Content-Length: %d" % len(body))
        else:
            headers.append(b"Transfer-Encoding: chunked")
            body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    headers.append(b"Connection: close")
    return method + b" " + target + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def raw_requests(draw: Any) -> bytes:
    """
    Raw bytes for one connection: mostly HTTP-shaped, often broken.
    """
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=600))
    if kind == 1:
        return b"\x16\x03\x01" + draw(st.binary(max_size=100))
    if kind < 12:
        return draw(well_formed_requests())
    method = draw(st.sampled_from(_METHODS) | st.binary(max_size=8))
    shape = draw(st.integers(0, 5))
    if shape == 0:
        target = draw(st.binary(max_size=120))
    elif shape == 1:
        target = b"/" + b"a" * draw(st.integers(7000, 70000))
    else:
        target = _target(draw)
        if draw(st.booleans()):
            target += b"?" + b"q=" * draw(st.integers(0, 3000))
    version = draw(
        st.sampled_from(
            [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 x", b"", b"HTTP/9.9", b"http/1.1", b"HTTP/1.1\x00", b"HTTP/1.10"]
        )
    )
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    first = draw(st.sampled_from([b" ", b"  ", b"\t"])).join(p for p in (method, target, version) if p or draw(st.booleans()))
    lines = [first]
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_HEADER_NAMES) | st.binary(max_size=20),
                st.sampled_from(_HEADER_VALUES) | st.binary(max_size=40),
                st.sampled_from([b": ", b":", b" : ", b"", b":\t"]),
            ),
            max_size=12,
        )
    )
    for name, value, colon in headers:
        lines.append(name + colon + value)
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from([b" folded", b"\tcontinued: x", b" "])))
    if draw(st.integers(0, 19)) == 0:
        # many headers, or one huge one
        if draw(st.booleans()):
            lines.extend(b"X-Many-%d: v" % i for i in range(draw(st.integers(90, 600))))
        else:
            lines.append(b"X-Huge: " + b"h" * draw(st.integers(16000, 70000)))
    body = draw(st.sampled_from(_BODIES) | st.binary(max_size=200))
    if draw(st.booleans()):
        lines.append(b"Content-Length: %d" % len(body))
    return eol.join(lines) + eol + eol + body


class FuzzTests(SynchronousTestCase):
    """
    Raw request bytes against a running proxy: never a 500 from our code,
    never a traceback, and the reactor keeps serving.
    """

    EXAMPLES = 300
    WALL_CLOCK = 45.0

    def test_raw_request_fuzz(self) -> None:
        proc = guarded_hubproxy(self, '[server]\nhost = "127.0.0.1"\n[network]\nconnectTimeout = 2\nresponseTimeout = 5\n')
        deadline = time.monotonic() + self.WALL_CLOCK
        seen: dict[Any, int] = {}
        failures: list[Any] = []

        @settings(
            max_examples=self.EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(raw_requests())
        def one(data: bytes) -> None:
            if time.monotonic() > deadline:
                return
            response = raw_exchange(proc.port, data, timeout=3.0, idle=0.4)
            code = status_of(response)
            seen[code] = seen.get(code, 0) + 1
            # Every response on the connection (pipelining), not just the first.
            codes = [int(c) for c in re.findall(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ", response)]
            if 500 in codes or any(c >= 600 or c < 100 for c in codes):
                failures.append((data[:200], response[:300]))
            assert 500 not in codes, (data[:300], response[:300])
            assert b"Traceback" not in response, response[:500]

        one()
        if os.environ.get("HUBPROXY_SECURITY_DEBUG"):
            print("fuzz status codes:", seen, "in", round(self.WALL_CLOCK - (deadline - time.monotonic()), 1), "s")
        self.assertEqual(failures, [])
        self.assertIsNone(proc.proc.poll(), "hubproxy died during the fuzz")
        self.assertEqual(ready(proc), 200)
        log = proc.log()
        for needle in ("Unhandled Error", "Traceback", "internal error handling"):
            at = log.find(needle)
            self.assertEqual(at, -1, f"{needle!r} in the hubproxy log:\n{log[max(0, at - 1500) : at + 3000]}")
        # The fuzz did reach the server: some answers were HTTP responses.
        self.assertTrue(any(isinstance(k, int) for k in seen), seen)


# ---------------------------------------------------------------- flood


def _read_responses(sock: socket.socket, count: int, buffer: bytearray) -> list[tuple[int, dict[bytes, bytes]]]:
    """
    Read C{count} HTTP/1.1 responses with Content-Length bodies.
    """
    out = []
    while len(out) < count:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(262144)
            if not chunk:
                raise AssertionError(f"connection closed after {len(out)} of {count} responses")
            buffer += chunk
            continue
        head = bytes(buffer[:end]).split(b"\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(buffer) < end + 4 + length:
            chunk = sock.recv(262144)
            if not chunk:
                raise AssertionError("connection closed mid-body")
            buffer += chunk
        del buffer[: end + 4 + length]
        out.append((int(head[0].split()[1]), headers))
    return out


def _pipeline(port: int, forwarded_for: list[str | None], batch: int = 100, source: str | None = None) -> list[tuple[int, dict[bytes, bytes]]]:
    """
    C{GET /v2/} once per entry over one keep-alive connection, pipelined in
    batches; each request names its client in X-Forwarded-For.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect((LOOPBACK, port))
    results: list[tuple[int, dict[bytes, bytes]]] = []
    buffer = bytearray()
    try:
        for start in range(0, len(forwarded_for), batch):
            chunk = forwarded_for[start : start + batch]
            data = b"".join(
                b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + (b"X-Forwarded-For: " + xff.encode() + b"\r\n" if xff else b"")
                + b"\r\n"
                for xff in chunk
            )
            sock.sendall(data)
            results.extend(_read_responses(sock, len(chunk), buffer))
    finally:
        sock.close()
    return results


def _peer_seen_as(source: str) -> bool:
    """
    Whether a connection bound to C{source} reaches a loopback server from
    that address (some sandboxes rewrite the source to 127.0.0.1).
    """
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind((LOOPBACK, 0))
        server.listen(1)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            client.bind((source, 0))
            client.connect(server.getsockname())
            conn, addr = server.accept()
            conn.close()
            return addr[0] == source
        except OSError:
            return False
        finally:
            client.close()
    finally:
        server.close()


class FloodTests(SynchronousTestCase):
    """
    10,000 distinct client addresses named by a trusted proxy (loopback)
    leave memory bounded; the limiter still limits afterwards.
    """

    CONNECTIONS = 10
    PER_CONNECTION = 1000
    LIMIT = 20

    def test_distinct_address_flood_memory_bounded(self) -> None:
        proc = guarded_hubproxy(
            self, f'[server]\nhost = "127.0.0.1"\n[log]\naccessLog = false\n[rateLimit]\nrequestLimit = {self.LIMIT}\n'
        )
        port = proc.port
        # Warm up (allocator, code paths) with a few addresses, then measure.
        warm = _pipeline(port, [f"203.0.113.{i}" for i in range(1, 200)])
        self.assertEqual({c for c, _ in warm}, {200})
        before = rss_kib(proc.pid)
        started = time.monotonic()
        codes: dict[int, int] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(t: int) -> None:
            if t % 2:
                addresses = [f"2001:db8:{t:x}:{i:x}::1" for i in range(self.PER_CONNECTION)]
            else:
                addresses = [f"11.{t}.{i >> 8}.{i & 255}" for i in range(self.PER_CONNECTION)]
            try:
                for code, _ in _pipeline(port, addresses):
                    with lock:
                        codes[code] = codes.get(code, 0) + 1
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(self.CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        elapsed = time.monotonic() - started
        self.assertEqual(errors, [])
        self.assertEqual(codes, {200: self.CONNECTIONS * self.PER_CONNECTION})
        after = rss_kib(proc.pid)
        grown = (after - before) / 1024
        if os.environ.get("HUBPROXY_SECURITY_DEBUG"):
            print(f"flood: {elapsed:.1f}s, RSS {before} -> {after} KiB")
        self.assertLess(grown, 20, f"RSS grew by {grown:.1f} MiB ({before} -> {after} KiB) over 10,000 clients")
        self.assertEqual(ready(proc), 200)

        # The limiter still works, per named client, with Retry-After.
        limited = _pipeline(port, ["198.18.7.7"] * (self.LIMIT + 1), batch=self.LIMIT + 1)
        self.assertEqual([c for c, _ in limited[:-1]], [200] * self.LIMIT)
        self.assertEqual(limited[-1][0], 429)
        self.assertTrue(int(limited[-1][1][b"retry-after"]) >= 1)
        # An untrusted peer cannot buy fresh buckets by naming clients.
        if _peer_seen_as("127.0.0.2"):
            spoofed = _pipeline(port, [f"9.9.9.{i}" for i in range(self.LIMIT + 1)], source="127.0.0.2")
            self.assertEqual(spoofed[-1][0], 429)
        self.assertLess(elapsed, 60, f"flood took {elapsed:.1f}s")
