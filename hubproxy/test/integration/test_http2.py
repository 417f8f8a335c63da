"""
HTTP/2 failure isolation, with a real hubproxy (cleartext HTTP/2, prior
knowledge) and the C{h2} library as the client on a plain socket.

When an upstream breaks after the response has started, hubproxy must make
the client see a broken transfer, never a short body that looks whole.  On
HTTP/1.1 that means aborting the connection; on HTTP/2 it must reset only
that stream (RST_STREAM): the other transfers multiplexed on the same
connection carry on, and the connection stays usable.

The upstream is a small in-process HTTP/1.1 server on 127.0.0.1 (a real
socket server in a thread) that serves one complete file and one whose
connection it closes after a quarter of the promised C{Content-Length}.
"""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import subprocess
import threading
import time

from twisted.trial.unittest import TestCase

from hubproxy.test.integration.procs import HubproxyProcess, rss_kib

SIZE = 4 * 1024 * 1024
GOOD = os.urandom(SIZE)


BIG = 64 * 1024 * 1024
_CHUNK = hashlib.sha256(b"hubproxy").digest() * 2048  # 64 KiB, deterministic
BIG_SHA256 = hashlib.sha256(_CHUNK * (BIG // len(_CHUNK))).hexdigest()
#: bytes the upstream has handed to its socket for /big.bin (the test reads it)
big_sent = [0]


class _Upstream(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % SIZE
        if path.endswith(b"/big.bin"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % BIG
            self.request.sendall(head)
            big_sent[0] = 0
            try:
                for _ in range(BIG // len(_CHUNK)):
                    self.request.sendall(_CHUNK)  # blocks while nobody reads
                    big_sent[0] += len(_CHUNK)
            except OSError:
                pass
            return
        if path.endswith(b"/broken-chunked.bin"):
            # no Content-Length: only the transport can say the body is cut
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n" + b"%x\r\n" % (SIZE // 4) + GOOD[: SIZE // 4] + b"\r\n"
            )
            return  # and the upstream dies mid-body
        if path.endswith(b"/broken.bin"):
            self.request.sendall(head + GOOD[: SIZE // 4])
            # then the upstream dies mid-body
        else:
            self.request.sendall(head + GOOD)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class H2Client:
    """
    A minimal HTTP/2 client: sends requests, collects events until a
    condition holds (bounded by time), acknowledges data for flow control.
    """

    def __init__(self, port: int) -> None:
        import h2.config
        import h2.connection

        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.status: dict[int, str] = {}
        self.body: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.terminated = False
        self.unacknowledged: list[tuple[int, int]] = []
        self.reset_codes: dict[int, int] = {}

    def acknowledge_all(self) -> None:
        for size, stream_id in self.unacknowledged:
            self.conn.acknowledge_received_data(size, stream_id)
        self.unacknowledged = []
        self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()

    def get(self, path: str) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{self.port}")],
            end_stream=True,
        )
        self.sock.sendall(self.conn.data_to_send())
        self.body[stream_id] = bytearray()
        return stream_id

    def run_until(self, done, timeout: float = 30, acknowledge: bool = True) -> None:
        import h2.events

        deadline = time.monotonic() + timeout
        while not done() and not self.terminated:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"HTTP/2 exchange not done in {timeout}s: ended={self.ended} reset={self.reset} "
                    f"bytes={ {k: len(v) for k, v in self.body.items()} }"
                )
            try:
                data = self.sock.recv(262144)
            except socket.timeout:
                continue
            if not data:
                self.terminated = True
                break
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.status[event.stream_id] = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    self.body[event.stream_id] += event.data
                    if acknowledge:
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    else:
                        self.unacknowledged.append((event.flow_controlled_length, event.stream_id))
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended.add(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self.reset.add(event.stream_id)
                    self.reset_codes[event.stream_id] = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.terminated = True
            self.sock.sendall(self.conn.data_to_send())


class _ProxyTestCase(TestCase):
    """A hubproxy with cleartext HTTP/2 whose github.com is the in-process upstream."""

    def setUp(self) -> None:
        self.upstream = _Server(("127.0.0.1", 0), _Upstream)
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        self.addCleanup(self.upstream.server_close)
        self.addCleanup(self.upstream.shutdown)
        port = self.upstream.server_address[1]
        self.proxy = HubproxyProcess(
            self,
            '[server]\nhost = "127.0.0.1"\nenableH2C = true\nshutdownGrace = 30\n'
            f'[upstreams]\n"github.com" = "http://127.0.0.1:{port}"\n',
        )
        self.proxy.start()


class StreamResetTests(_ProxyTestCase):
    def test_broken_upstream_resets_only_its_stream(self) -> None:
        """
        Two downloads on one HTTP/2 connection; the upstream of the first
        dies after 1 MiB of 4 MiB.  The first stream is reset (not ended:
        no short body that looks whole), the second completes with the right
        bytes, and the connection still serves a third request.
        """
        client = H2Client(self.proxy.port)
        self.addCleanup(client.close)
        base = "/https://github.com/owner/repo/releases/download/v1/"
        broken = client.get(base + "broken.bin")
        good = client.get(base + "good.bin")
        client.run_until(lambda: (broken in client.reset or broken in client.ended) and good in client.ended)
        log = self.proxy.log()
        self.assertFalse(client.terminated, log[-3000:])
        self.assertEqual(client.status.get(broken), "200")
        self.assertIn(broken, client.reset, log[-3000:])
        self.assertNotEqual(client.reset_codes[broken], 0, "RST_STREAM must not say NO_ERROR")
        self.assertNotIn(broken, client.ended)
        self.assertLess(len(client.body[broken]), SIZE)
        self.assertEqual(client.status.get(good), "200")
        self.assertEqual(hashlib.sha256(client.body[good]).hexdigest(), hashlib.sha256(GOOD).hexdigest())
        # the same connection still works
        ready = client.get("/ready")
        client.run_until(lambda: ready in client.ended)
        self.assertEqual(client.status.get(ready), "200")
        self.assertIn(b'"status": "ok"', bytes(client.body[ready]))
        # and the abort was logged with what had been sent
        self.assertIn("broken.bin", log)
        # the reset request is finished for hubproxy too: nothing left in
        # flight (else a SIGTERM drain would wait out its grace period)
        in_flight = [line for line in self.metrics().splitlines() if line.startswith("hubproxy_requests_in_flight ")]
        self.assertEqual(in_flight, ["hubproxy_requests_in_flight 1.0"])  # the /metrics request itself
        started = time.monotonic()
        self.assertEqual(self.proxy.stop(), 0, self.proxy.log()[-2000:])
        self.assertLess(time.monotonic() - started, 10)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.proxy.url + "/metrics", timeout=10) as r:
            return r.read().decode()

    def test_backpressure_on_a_stream(self) -> None:
        """
        An HTTP/2 client that stops granting flow-control window: hubproxy
        pauses the upstream (which then cannot send much more than socket
        buffers hold) and its memory stays flat; once the client reads on,
        the whole 64 MiB arrives with the right digest.
        """
        client = H2Client(self.proxy.port)
        self.addCleanup(client.close)
        stream = client.get("/https://github.com/owner/repo/releases/download/v1/big.bin")
        # read what the initial 64 KiB window allows, grant nothing more
        client.run_until(lambda: len(client.body[stream]) >= 65535 - 16384, acknowledge=False)
        rss_before = rss_kib(self.proxy.pid)
        deadline = time.monotonic() + 3
        settled = None
        while time.monotonic() < deadline:  # bounded: wait for the upstream to stall
            sent = big_sent[0]
            time.sleep(0.25)
            if big_sent[0] == sent:
                settled = sent
                break
        self.assertIsNotNone(settled, "the upstream never stalled: no backpressure")
        self.assertLess(settled, 24 * 1024 * 1024, "the upstream could send %d bytes" % settled)
        growth = rss_kib(self.proxy.pid) - rss_before
        self.assertLess(growth, 16 * 1024, "hubproxy grew by %d KiB" % growth)
        # now read on: everything arrives, in order
        client.acknowledge_all()
        client.run_until(lambda: stream in client.ended or stream in client.reset, timeout=120)
        self.assertIn(stream, client.ended)
        self.assertEqual(len(client.body[stream]), BIG)
        self.assertEqual(hashlib.sha256(client.body[stream]).hexdigest(), BIG_SHA256)


class RealClientTests(_ProxyTestCase):
    """
    The same failures as real clients see them.
    """

    def test_curl_sees_a_cut_body_without_length_as_an_error(self) -> None:
        """
        An upstream body without Content-Length that breaks midway: over
        HTTP/2 curl must fail (twisted.web's own stream abort says NO_ERROR,
        and curl then saved the truncated file and exited 0), as it does
        over HTTP/1.1.
        """
        url = self.proxy.url + "/https://github.com/owner/repo/releases/download/v1/broken-chunked.bin"
        for flag in ("--http2-prior-knowledge", "--http1.1"):
            r = subprocess.run(
                ["curl", "-sS", "--noproxy", "*", "--max-time", "30", flag, "-o", "/dev/null", "-w", "%{http_code}", url],
                capture_output=True, text=True, timeout=60,
            )
            self.assertEqual(r.stdout, "200", (flag, r.stderr))
            self.assertNotEqual(r.returncode, 0, (flag, "curl took a cut body for a whole one", r.stderr))

    def test_client_that_never_reads_cannot_fill_memory(self) -> None:
        """
        A client that grants a 1 GiB window and then reads nothing: the
        socket fills, hubproxy pauses the stream and the upstream (RSS
        flat, the upstream stalls) instead of queueing the file in memory.
        """
        import h2.settings

        client = H2Client(self.proxy.port)
        self.addCleanup(client.close)
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.conn.increment_flow_control_window(2**30)
        client.sock.sendall(client.conn.data_to_send())
        rss_before = rss_kib(self.proxy.pid)
        client.get("/https://github.com/owner/repo/releases/download/v1/big.bin")
        deadline = time.monotonic() + 10
        settled = None
        while time.monotonic() < deadline:  # bounded: wait for the upstream to stall
            sent = big_sent[0]
            time.sleep(0.5)
            if big_sent[0] == sent and sent > 0:
                settled = sent
                break
        growth = rss_kib(self.proxy.pid) - rss_before
        self.assertIsNotNone(settled, "the upstream never stalled (sent %d bytes)" % big_sent[0])
        self.assertLess(settled, 32 * 1024 * 1024, "the upstream could send %d bytes" % settled)
        self.assertLess(growth, 32 * 1024, "hubproxy grew by %d KiB" % growth)
