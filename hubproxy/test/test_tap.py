"""
Tests for L{hubproxy.tap}: the listener choice (plain, cleartext HTTP/2
by prior knowledge, HTTPS with ALPN) and the certificate loading that
turns a bad C{[server] tls} into a config error before anything is bound.

Real clients (curl --http2, --http2-prior-knowledge, h2load) are in
L{hubproxy.test.integration.test_ops}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from hubproxy.config import load_config
from hubproxy.h2c import H2_PREFACE, H2CFactory
from hubproxy.tap import listener, tls_options


def write_cert(directory: str, name: str = "localhost") -> tuple[str, str]:
    from hubproxy.test.integration.fixtures import make_self_signed_cert

    return make_self_signed_cert(directory, cn=name)


class TLSOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_alpn(self) -> None:
        """
        The options offer h2 before http/1.1.
        """
        cert, key = write_cert(self.dir)
        options = tls_options(cert, key)
        self.assertEqual(options._acceptableProtocols, [b"h2", b"http/1.1"])

    def test_errors(self) -> None:
        cert, key = write_cert(self.dir)
        other_cert, other_key = write_cert(os.path.join(self.dir, "other"))
        empty = os.path.join(self.dir, "empty.pem")
        with open(empty, "w") as f:
            f.write("nothing\n")
        with self.assertRaises(ValueError) as cm:
            tls_options(empty, key)
        self.assertIn("no PEM certificate", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            tls_options(cert, empty)
        self.assertIn("not a valid unencrypted PEM private key", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            tls_options(cert, other_key)
        self.assertIn("do not match", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            tls_options(os.path.join(self.dir, "missing.pem"), key)
        self.assertIn("cannot read", str(cm.exception))

    def test_postoptions(self) -> None:
        """
        A certificate that does not fit its key stops the start with one
        line naming C{server.tls} (exit status 1).
        """
        import io
        import sys

        from hubproxy.tap import Options

        cert, _ = write_cert(self.dir)
        _, other_key = write_cert(os.path.join(self.dir, "other"))
        path = os.path.join(self.dir, "config.toml")
        with open(path, "w") as f:
            f.write(f'[server]\ntls = {{ cert = "{cert}", key = "{other_key}" }}\n')
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as cm:
            Options().parseOptions(["--config", path])
        self.assertEqual(cm.exception.code, 1)
        self.assertRegex(err.getvalue(), r"^.*config\.toml: server\.tls: certificate and key do not match .*\n$")


class ListenerTests(SynchronousTestCase):
    def config(self, text: str) -> Any:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return load_config(path, environ={})[0]

    def test_choice(self) -> None:
        site = Site(Resource())
        plain = listener(self.config("[server]\nport = 5000\n"), site, MemoryReactorClock())
        self.assertIs(plain.factory, site)  # type: ignore[attr-defined]
        h2c = listener(self.config("[server]\nport = 5000\nenableH2C = true\n"), site, MemoryReactorClock())
        self.assertIsInstance(h2c.factory, H2CFactory)  # type: ignore[attr-defined]
        d = os.path.abspath(self.mktemp())
        cert, key = write_cert(d)
        tls = listener(self.config(f'[server]\nport = 5000\ntls = {{ cert = "{cert}", key = "{key}" }}\n'), site, MemoryReactorClock())
        self.assertIsInstance(tls, StreamServerEndpointService)


class Recorder(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"proto=" + request.clientproto


class H2CTests(SynchronousTestCase):
    def connect(self) -> tuple[Any, StringTransport]:
        factory = H2CFactory(Site(Recorder()))
        factory.site.reactor = MemoryReactorClock()  # type: ignore[attr-defined]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_http11(self) -> None:
        """
        Ordinary HTTP/1.1 (also starting with "P", like the preface) is
        untouched.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"HTTP/1.1 501", transport.value())
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"proto=HTTP/1.1", transport.value())

    def test_preface_split(self) -> None:
        """
        The preface, even in pieces, switches the connection to HTTP/2: the
        server answers with its SETTINGS frame.
        """
        protocol, transport = self.connect()
        for i in range(0, len(H2_PREFACE), 5):
            protocol.dataReceived(H2_PREFACE[i : i + 5])
        # empty SETTINGS frame from the client
        protocol.dataReceived(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        out = transport.value()
        self.assertNotIn(b"HTTP/1.1", out)
        self.assertEqual(out[3:4], b"\x04")  # first frame: SETTINGS

    def run_upgrade(self) -> tuple[bytes, list[Any]]:
        """
        An h2 client doing the RFC 7540 upgrade: an HTTP/1.1 request with
        Upgrade: h2c (settings unpadded, as curl sends them), then, after
        the 101, its preface; returns what the server wrote first and the h2
        events the client saw.
        """
        import h2.config
        import h2.connection
        from twisted.web import http

        clock = MemoryReactorClock()
        # the HTTP/2 connection twisted.web creates on the switch: on our clock
        from hubproxy.http2 import BoundedH2Connection

        self.patch(http, "H2Connection", lambda: BoundedH2Connection(clock))
        protocol, transport = self.connect()
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        settings = client.initiate_upgrade_connection().rstrip(b"=")
        protocol.dataReceived(
            b"GET /path?q=1 HTTP/1.1\r\nHost: proxy.example\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
        )
        out = transport.value()
        transport.clear()
        protocol.dataReceived(client.data_to_send())
        for _ in range(5):
            clock.advance(0)
        events = client.receive_data(out.partition(b"\r\n\r\n")[2] + transport.value())
        return out, events

    def test_upgrade_h2c(self) -> None:
        """
        C{Upgrade: h2c} gets a 101, and the request is answered over HTTP/2
        on stream 1 (what C{curl --http2 http://...} does).
        """
        import h2.events

        out, events = self.run_upgrade()
        self.assertTrue(out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), out[:200])
        responses = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        self.assertEqual([e.stream_id for e in responses], [1])
        self.assertEqual(dict(responses[0].headers)[b":status"], b"200")
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        self.assertEqual(body, b"proto=HTTP/2")
        self.assertTrue([e for e in events if isinstance(e, h2.events.StreamEnded) and e.stream_id == 1])

    def test_no_upgrade_with_body_or_bad_settings(self) -> None:
        """
        A request with a body, or with unparseable HTTP2-Settings, is served
        over HTTP/1.1 (the upgrade is optional for the server).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAAA\r\n\r\n"  # 5 bytes: not a whole setting
        )
        self.assertIn(b"HTTP/1.1 200", transport.value())
        self.assertIn(b"proto=HTTP/1.1", transport.value())
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 3\r\n\r\nabc"
        )
        self.assertIn(b"HTTP/1.1 200", transport.value())

    def test_head_in_pieces(self) -> None:
        """
        An HTTP/1.1 head split across reads is reassembled before deciding.
        """
        protocol, transport = self.connect()
        for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            protocol.dataReceived(piece)
        self.assertIn(b"proto=HTTP/1.1", transport.value())
