"""
Tests for the tree and site plumbing (L{hubproxy.site}, L{hubproxy.tap}):
/ready, the access log in both formats, in-flight counting for drains,
and error styles for unknown paths.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.site import InFlight, make_site
from hubproxy.tap import DrainService, listen_description
from hubproxy.test.helpers import Harness, Recorder, load_test_config


class Nothing(Recorder):
    def render(self, request: Any) -> bytes:
        return b""


class SiteTests(SynchronousTestCase):
    def test_ready(self) -> None:
        h = Harness(Nothing())
        h.clock.advance(12.5)
        response, body = h.request("GET", "/ready")
        data = json.loads(body)
        self.assertEqual(response.code, 200)
        self.assertEqual(data["status"], "ok")
        self.assertEqual(data["uptime_sec"], 12.5)
        self.assertIn("version", data)
        self.assertEqual(response.headers.getRawHeaders("server"), [f"hubproxy/{data['version']}"])

    def access_lines(self, toml: str, *requests: bytes) -> tuple[Harness, io.StringIO, bytes]:
        h = Harness(Nothing(), toml)
        stream = io.StringIO()
        site = make_site(h.root, h.config, clock=h.clock, stream=stream)
        peer = IPv4Address("TCP", "127.0.0.1", 1234)
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        for data in requests:
            channel.dataReceived(data)
        return h, stream, transport.value()

    def test_json_access_log(self) -> None:
        """
        With C{[log] format = "json"} each finished request is one JSON line,
        written within the batching interval.
        """
        h, stream, sent = self.access_lines(
            '[log]\nformat = "json"\n', b"GET /ready HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1\r\n\r\n"
        )
        self.assertIn(b"200 OK", sent)
        self.assertEqual(stream.getvalue(), "")  # batched, not yet written
        h.clock.advance(0.1)
        line = json.loads(stream.getvalue().splitlines()[0])
        self.assertEqual((line["method"], line["uri"], line["code"], line["user_agent"]), ("GET", "/ready", 200, "probe/1"))
        self.assertEqual(line["client"], "127.0.0.1")
        self.assertGreater(line["bytes"], 0)

    def test_text_access_log(self) -> None:
        """
        Text lines look like twistd's own log lines; several requests are
        written together.
        """
        h, stream, sent = self.access_lines(
            "",
            b"GET /ready HTTP/1.1\r\nHost: x\r\nUser-Agent: a \"quoted\" agent\r\n\r\n",
            b"GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        h.clock.advance(0.1)
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[hubproxy.access#info\] 127.0.0.1 "GET /ready HTTP/1.1" 200 \d+ "a \\"quoted\\" agent"$')
        self.assertRegex(lines[1], r'"GET /v2/_catalog HTTP/1.1" 405 \d+ ""$')

    def test_access_log_off(self) -> None:
        h, stream, sent = self.access_lines("[log]\naccessLog = false\n", b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", sent)
        h.clock.advance(1)
        self.assertEqual(stream.getvalue(), "")

    def test_access_log_batches(self) -> None:
        """
        Lines are held for at most the interval, written at C{max_lines}, and
        a flush (shutdown) writes the rest; a closed stream is not an error.
        """
        from hubproxy.logs import AccessLog

        clock = Clock()
        stream = io.StringIO()
        log = AccessLog(stream, clock, interval=0.1, max_lines=3)
        for i in range(4):
            log.record("192.0.2.1", "GET", f"/{i}", "HTTP/1.1", 200, i, "ua")
        self.assertEqual(len(stream.getvalue().splitlines()), 3)
        log.flush()
        self.assertEqual(len(stream.getvalue().splitlines()), 4)
        self.assertEqual(clock.getDelayedCalls(), [])
        stream.close()
        log.record("192.0.2.1", "GET", "/late", "HTTP/1.1", 200, 0, "ua")
        clock.advance(0.1)  # writing to the closed stream is swallowed

    def test_tls_hello_on_plain_port(self) -> None:
        """
        A TLS ClientHello on the plain port gets an immediate 400 and close.
        """
        h = Harness(Nothing())
        site = make_site(h.root, h.config, clock=h.clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 400"))
        self.assertTrue(transport.disconnecting)

    def test_unknown_v2_path_is_registry_json(self) -> None:
        h = Harness(Nothing())
        response, body = h.request("GET", "/v2/_catalog")
        self.assertEqual(json.loads(body)["errors"][0]["code"], "UNSUPPORTED")

    def test_listen_description_ipv6(self) -> None:
        self.assertEqual(listen_description("::", 5000), r"tcp:5000:interface=\:\:")


class DrainTests(SynchronousTestCase):
    def test_waits_for_requests_up_to_grace(self) -> None:
        clock = Clock()
        in_flight = InFlight()
        finished: list[defer.Deferred[None]] = []

        class R:
            def notifyFinish(self) -> defer.Deferred[None]:
                d: defer.Deferred[None] = defer.Deferred()
                finished.append(d)
                return d

        in_flight.started(R())  # type: ignore[arg-type]
        in_flight.started(R())  # type: ignore[arg-type]
        drain = DrainService(in_flight, 10, clock)
        drain.startService()
        d = drain.stopService()
        self.assertNoResult(d)
        finished[0].callback(None)
        self.assertNoResult(d)
        finished[1].callback(None)
        self.successResultOf(d)

    def test_grace_expires(self) -> None:
        clock = Clock()
        in_flight = InFlight()

        class R:
            def notifyFinish(self) -> defer.Deferred[None]:
                return defer.Deferred()

        in_flight.started(R())  # type: ignore[arg-type]
        drain = DrainService(in_flight, 10, clock)
        drain.startService()
        d = drain.stopService()
        clock.advance(9)
        self.assertNoResult(d)
        clock.advance(2)
        self.successResultOf(d)
        self.assertEqual(in_flight.count, 1)


__all__ = ["load_test_config"]
