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

    def test_json_access_log(self) -> None:
        """
        With C{[log] format = "json"} each finished request is one JSON line.
        """
        h = Harness(Nothing(), '[log]\nformat = "json"\n')
        stream = io.StringIO()
        site = make_site(h.root, h.config, clock=h.clock)
        site.json_stream = stream
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /ready HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        line = json.loads(stream.getvalue().splitlines()[0])
        self.assertEqual((line["method"], line["uri"], line["code"], line["user_agent"]), ("GET", "/ready", 200, "probe/1"))
        self.assertGreater(line["bytes"], 0)

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
