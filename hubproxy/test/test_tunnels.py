"""
Tests for L{hubproxy.upstream.tunnels}: the SOCKS5 and HTTP CONNECT
endpoints against an in-memory transport (every byte the proxy would see,
replies split at every position), the proxy URL parser and C{noProxy}.

The real proxies (microsocks, tinyproxy) are exercised by
L{hubproxy.test.integration.test_ops}.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI
from zope.interface import implementer
from twisted.internet.interfaces import IStreamClientEndpoint

from hubproxy.errors import BadGateway, GatewayTimeout, to_error
from hubproxy.upstream.endpoints import EndpointFactory
from hubproxy.upstream.tls import make_tls_policy
from hubproxy.upstream.tunnels import (
    HttpConnectEndpoint,
    NoProxy,
    ProxyError,
    ProxyTimeout,
    Socks5Endpoint,
    Tunnel,
    make_tunnel,
    parse_proxy_url,
)


class Recording(Protocol):
    """
    The protocol the caller asked for: records what reaches it.
    """

    def __init__(self) -> None:
        self.received = b""
        self.made = 0
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


class Transport(StringTransport):
    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 1080))
        self.aborted = False
        self.protocol: Any = None

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()
        if self.protocol is not None:
            protocol, self.protocol = self.protocol, None
            protocol.connectionLost(Failure(error.ConnectionAborted()))


@implementer(IStreamClientEndpoint)
class FakeProxyEndpoint:
    """
    Stands for the TCP endpoint of the proxy: connects at once (or fails,
    or never answers) over a L{Transport}.
    """

    def __init__(self, fail: Exception | None = None, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.transport = Transport()
        self.protocol: Any = None
        self.pending: defer.Deferred[Any] | None = None

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if self.fail is not None:
            return defer.fail(self.fail)
        if self.hang:
            self.pending = defer.Deferred()
            return self.pending
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)


def socks(url: str = "socks5://127.0.0.1:1080", host: str = "registry.example", port: int = 443, **kw: Any) -> tuple[Socks5Endpoint, FakeProxyEndpoint, Clock]:
    clock = Clock()
    proxy = FakeProxyEndpoint(**kw)
    return Socks5Endpoint(clock, proxy, host, port, parse_proxy_url(url), 10), proxy, clock


def connect(endpoint: Any) -> tuple[defer.Deferred[Any], list[Recording]]:
    built: list[Recording] = []

    def build() -> Recording:
        p = Recording()
        built.append(p)
        return p

    return endpoint.connect(Factory.forProtocol(build)), built


GREETING_NOAUTH = b"\x05\x01\x00"
GREETING_AUTH = b"\x05\x02\x00\x02"
CONNECT_DOMAIN = b"\x05\x01\x00\x03\x10registry.example\x01\xbb"
SUCCESS_V4 = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"


class Socks5Tests(SynchronousTestCase):
    def test_no_auth(self) -> None:
        """
        Without credentials only "no authentication" is offered, the host
        name is sent (domain-name addressing), and the caller's protocol is
        built only after the success reply, on the raw transport, with the
        bytes that came along with the reply replayed to it.
        """
        endpoint, proxy, _ = socks()
        d, built = connect(endpoint)
        self.assertEqual(proxy.transport.value(), GREETING_NOAUTH)
        proxy.transport.clear()
        proxy.protocol.dataReceived(b"\x05\x00")
        self.assertEqual(proxy.transport.value(), CONNECT_DOMAIN)
        self.assertNoResult(d)
        self.assertEqual(built, [])
        proxy.protocol.dataReceived(SUCCESS_V4 + b"HTTP/1.1 200 OK\r\n")
        wrapped = self.successResultOf(d)
        self.assertEqual(built, [wrapped])
        self.assertIs(wrapped.transport, proxy.transport)
        self.assertEqual((wrapped.made, wrapped.received), (1, b"HTTP/1.1 200 OK\r\n"))
        proxy.protocol.dataReceived(b"more")
        self.assertEqual(wrapped.received, b"HTTP/1.1 200 OK\r\nmore")
        proxy.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNotNone(wrapped.lost)

    def test_username_password(self) -> None:
        """
        With credentials (percent-decoded) both methods are offered and
        RFC 1929 user/password is sent when the proxy picks it.
        """
        endpoint, proxy, _ = socks("socks5h://us%40er:p%3Ass@127.0.0.1:1080")
        d, _ = connect(endpoint)
        self.assertEqual(proxy.transport.value(), GREETING_AUTH)
        proxy.transport.clear()
        proxy.protocol.dataReceived(b"\x05\x02")
        self.assertEqual(proxy.transport.value(), b"\x01\x05us@er\x04p:ss")
        proxy.transport.clear()
        proxy.protocol.dataReceived(b"\x01\x00")
        self.assertEqual(proxy.transport.value(), CONNECT_DOMAIN)
        proxy.protocol.dataReceived(SUCCESS_V4)
        self.successResultOf(d)

    def test_every_split(self) -> None:
        """
        Replies arriving in pieces, split at every byte, are buffered until
        complete (socksio refuses partial messages).
        """
        replies = b"\x05\x02" + b"\x01\x00" + b"\x05\x00\x00\x03\x09proxy.lan\x00\x50" + b"DATA"
        for size in (1, 2, 3, 5, 7, len(replies)):
            endpoint, proxy, _ = socks("socks5://u:p@127.0.0.1:1080")
            d, _ = connect(endpoint)
            for i in range(0, len(replies), size):
                proxy.protocol.dataReceived(replies[i : i + size])
            self.assertEqual(self.successResultOf(d).received, b"DATA", size)

    def test_ipv6_reply_and_ip_target(self) -> None:
        """
        An IP literal target is sent as an address; a reply with an IPv6
        bound address is parsed to its full length.
        """
        endpoint, proxy, _ = socks(host="2001:db8::1", port=5000)
        d, _ = connect(endpoint)
        proxy.transport.clear()
        proxy.protocol.dataReceived(b"\x05\x00")
        self.assertEqual(proxy.transport.value(), b"\x05\x01\x00\x04" + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01" + b"\x13\x88")
        proxy.protocol.dataReceived(b"\x05\x00\x00\x04" + b"\x00" * 16 + b"\x00\x00" + b"X")
        self.assertEqual(self.successResultOf(d).received, b"X")

    def failure(self, d: defer.Deferred[Any]) -> str:
        """
        The full reason (as logged); clients see it without the proxy's
        address and user name.
        """
        f = self.failureResultOf(d, ProxyError)
        self.assertEqual(to_error(f).status, 502)
        self.assertNotIn("127.0.0.1:1080", f.value.message)
        self.assertIn(f.value.full, repr(f.value))
        return str(f.value.full)

    def test_auth_refused(self) -> None:
        """
        A refused password is a 502 naming the user (never the password).
        """
        endpoint, proxy, _ = socks("socks5://bob:wrong@127.0.0.1:1080")
        d, built = connect(endpoint)
        proxy.protocol.dataReceived(b"\x05\x02\x01\x01")
        f = self.failureResultOf(d, ProxyError)
        d.addErrback(lambda _: None)
        self.assertEqual(f.value.full, "upstream proxy socks5://bob:***@127.0.0.1:1080: authentication refused for user 'bob' (RFC 1929 status 0x01)")
        self.assertEqual(f.value.message, "upstream proxy: authentication refused (RFC 1929 status 0x01)")
        self.assertNotIn("wrong", repr(f.value))
        self.assertTrue(proxy.transport.aborted)
        self.assertEqual(built, [])

    def test_auth_required_without_credentials(self) -> None:
        endpoint, proxy, _ = socks()
        d, _ = connect(endpoint)
        proxy.protocol.dataReceived(b"\x05\x02")
        self.assertIn("requires a user name and password (none configured)", self.failure(d))

    def test_no_acceptable_method(self) -> None:
        endpoint, proxy, _ = socks("socks5://u:p@127.0.0.1:1080")
        d, _ = connect(endpoint)
        proxy.protocol.dataReceived(b"\x05\xff")
        self.assertIn("accepts none of the authentication methods offered (no authentication, username/password)", self.failure(d))

    def test_reply_codes(self) -> None:
        """
        Each RFC 1928 failure code becomes a clear 502 naming the target.
        """
        reasons = {
            1: "general SOCKS server failure",
            2: "connection not allowed by ruleset",
            3: "network unreachable",
            4: "host unreachable",
            5: "connection refused",
            6: "TTL expired",
            7: "command not supported",
            8: "address type not supported",
            9: "unknown failure",
        }
        for code, reason in reasons.items():
            endpoint, proxy, _ = socks()
            d, built = connect(endpoint)
            proxy.protocol.dataReceived(b"\x05\x00" + bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
            self.assertEqual(
                self.failure(d),
                f"upstream proxy socks5://127.0.0.1:1080: cannot connect to registry.example:443: {reason} (SOCKS5 reply {code:#04x})",
            )
            self.assertEqual(built, [])

    def test_not_socks(self) -> None:
        """
        An HTTP proxy configured as SOCKS is named as such.
        """
        endpoint, proxy, _ = socks()
        d, _ = connect(endpoint)
        proxy.protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
        self.assertIn("not a SOCKS5 proxy", self.failure(d))

    def test_malformed_reply(self) -> None:
        endpoint, proxy, _ = socks()
        d, _ = connect(endpoint)
        proxy.protocol.dataReceived(b"\x05\x00\x05\x00\x00\x07\x00\x00")
        self.assertIn("malformed SOCKS5 reply (address type 7)", self.failure(d))

    def test_closed_during_handshake(self) -> None:
        endpoint, proxy, _ = socks()
        d, _ = connect(endpoint)
        proxy.protocol.dataReceived(b"\x05\x00\x05")
        proxy.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(
            self.failure(d), "upstream proxy socks5://127.0.0.1:1080 closed the connection during the handshake for registry.example:443"
        )

    def test_proxy_down(self) -> None:
        """
        A proxy that refuses the TCP connection, or whose name does not
        resolve, is a 502 that says so.
        """
        endpoint, _, _ = socks(fail=error.ConnectionRefusedError())
        d, _ = connect(endpoint)
        self.assertEqual(self.failure(d), "upstream proxy socks5://127.0.0.1:1080 refused the connection (is it running?)")
        endpoint, _, _ = socks(fail=error.DNSLookupError("proxy.invalid"))
        d, _ = connect(endpoint)
        self.assertIn("could not be resolved", self.failure(d))

    def test_timeout(self) -> None:
        """
        A proxy that never finishes the handshake is a 504 after the
        connect timeout, and its connection is closed.
        """
        endpoint, proxy, clock = socks()
        d, _ = connect(endpoint)
        clock.advance(9.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        f = self.failureResultOf(d, ProxyTimeout)
        self.assertEqual(to_error(f).status, 504)
        self.assertTrue(proxy.transport.aborted)

    def test_cancel(self) -> None:
        """
        Cancelling (the client went away) closes the proxy connection and
        fails with CancelledError, also while connecting to the proxy.
        """
        endpoint, proxy, clock = socks()
        d, _ = connect(endpoint)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(proxy.transport.aborted)
        self.assertEqual(clock.getDelayedCalls(), [])
        endpoint, proxy, _ = socks(hang=True)
        d, _ = connect(endpoint)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(proxy.pending is not None and proxy.pending.called)


def http(url: str = "http://127.0.0.1:3128", host: str = "ghcr.io", port: int = 443) -> tuple[HttpConnectEndpoint, FakeProxyEndpoint]:
    proxy = FakeProxyEndpoint()
    return HttpConnectEndpoint(Clock(), proxy, host, port, parse_proxy_url(url), 10), proxy


class ConnectTests(SynchronousTestCase):
    def test_tunnel(self) -> None:
        """
        C{CONNECT host:port}; a 2xx opens the tunnel (split replies are
        buffered) and trailing bytes are replayed.
        """
        endpoint, proxy = http()
        d, built = connect(endpoint)
        self.assertEqual(proxy.transport.value(), b"CONNECT ghcr.io:443 HTTP/1.1\r\nHost: ghcr.io:443\r\nUser-Agent: hubproxy\r\n\r\n")
        for piece in (b"HTTP/1.1 200 Conn", b"ection established\r\nProxy-Agent: x\r", b"\n\r\n\x16\x03"):
            self.assertNoResult(d)
            proxy.protocol.dataReceived(piece)
        wrapped = self.successResultOf(d)
        self.assertEqual(wrapped.received, b"\x16\x03")
        self.assertIs(wrapped.transport, proxy.transport)

    def test_credentials_and_ipv6(self) -> None:
        endpoint, proxy = http("http://alice:s%20cret@proxy.corp:3128", host="::1", port=5000)
        connect(endpoint)
        token = base64.b64encode(b"alice:s cret").decode()
        self.assertEqual(
            proxy.transport.value(),
            f"CONNECT [::1]:5000 HTTP/1.1\r\nHost: [::1]:5000\r\nUser-Agent: hubproxy\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode(),
        )

    def test_refusals(self) -> None:
        cases = [
            ("http://127.0.0.1:3128", b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "requires authentication (407); put user:password in the proxy URL"),
            ("http://a:b@127.0.0.1:3128", b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n", "refused the credentials of user 'a' (407 Proxy Authentication Required)"),
            ("http://127.0.0.1:3128", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "answered CONNECT ghcr.io:443 with 403 Forbidden"),
            ("http://127.0.0.1:3128", b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "answered CONNECT ghcr.io:443 with 502 Bad Gateway"),
            ("http://127.0.0.1:3128", b"\x05\x00", "not an HTTP proxy"),
        ]
        for url, reply, expected in cases:
            endpoint, proxy = http(url)
            d, built = connect(endpoint)
            proxy.protocol.dataReceived(reply)
            f = self.failureResultOf(d, ProxyError)
            self.assertIn(expected, f.value.full)
            self.assertEqual(built, [])
            self.assertTrue(proxy.transport.aborted)

    def test_huge_reply(self) -> None:
        endpoint, proxy = http()
        d, _ = connect(endpoint)
        proxy.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)
        self.assertIn("too large", self.failureResultOf(d, ProxyError).value.full)


class ParseTests(SynchronousTestCase):
    def test_urls(self) -> None:
        p = parse_proxy_url("socks5h://u:p@Proxy.Example")
        self.assertEqual((p.scheme, p.host, p.port, p.username, p.password), ("socks5", "proxy.example", 1080, "u", "p"))
        self.assertEqual(p.display, "socks5://u:***@proxy.example:1080")
        self.assertNotIn("'p'", repr(p))
        p = parse_proxy_url("http://[::1]:3128")
        self.assertEqual((p.scheme, p.host, p.port, p.username), ("http", "::1", 3128, None))
        self.assertEqual(p.display, "http://[::1]:3128")
        self.assertEqual(parse_proxy_url("http://u@h:1").password, "")
        self.assertEqual(parse_proxy_url("http://h").port, 80)
        for bad in ("ftp://h:1", "socks5://", "socks5://" + "u" * 256 + ":p@h:1"):
            self.assertRaises(ValueError, parse_proxy_url, bad)

    def test_no_proxy(self) -> None:
        """
        Go's NO_PROXY rules: a name covers its subdomains, a leading dot
        only the subdomains, IPs and CIDRs match literal IP hosts,
        C{host:port} only that port, C{*} everything.
        """
        n = NoProxy(["internal.example", ".corp.example", "10.0.0.0/8", "::1", "mirror.example:8080", "[fd00::5]:443", "192.0.2.9:80"])
        yes = [
            ("internal.example", 443),
            ("a.internal.example", 443),
            ("x.corp.example", 80),
            ("10.1.2.3", 443),
            ("::1", 5000),
            ("[::1]", 5000),
            ("mirror.example", 8080),
            ("fd00::5", 443),
            ("192.0.2.9", 80),
            ("INTERNAL.example.", 1),
        ]
        no = [
            ("corp.example", 80),
            ("notinternal.example", 443),
            ("11.0.0.1", 443),
            ("mirror.example", 443),
            ("fd00::5", 80),
            ("192.0.2.9", 443),
            ("github.com", 443),
        ]
        for host, port in yes:
            self.assertTrue(n.matches(host, port), (host, port))
        for host, port in no:
            self.assertFalse(n.matches(host, port), (host, port))
        self.assertTrue(NoProxy(["*"]).matches("anything", 1))


class TunnelWiringTests(SynchronousTestCase):
    def test_make_tunnel(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        self.assertIsNone(make_tunnel(reactor, "", ["x"]))
        tunnel = make_tunnel(reactor, "socks5://127.0.0.1:1080", ["localhost"], 3)
        assert isinstance(tunnel, Tunnel)
        self.assertIsNone(tunnel("localhost", 80))
        self.assertIsInstance(tunnel("ghcr.io", 443), Socks5Endpoint)
        http_tunnel = make_tunnel(reactor, "http://127.0.0.1:3128")
        assert http_tunnel is not None
        self.assertIsInstance(http_tunnel("ghcr.io", 443), HttpConnectEndpoint)

    def test_endpoint_factory(self) -> None:
        """
        The endpoint factory puts TLS (with the upstream's host name) on
        top of the tunnel, and connects noProxy hosts directly.
        """
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        tunnel = make_tunnel(reactor, "socks5://127.0.0.1:1080", ["direct.example"], 3)
        factory = EndpointFactory(reactor, make_tls_policy(), 3, allowed=lambda ip: False, tunnel=tunnel)
        https = factory.endpointForURI(URI.fromBytes(b"https://ghcr.io/v2/"))
        self.assertIsInstance(https._wrappedEndpoint, Socks5Endpoint)  # type: ignore[attr-defined]
        plain = factory.endpointForURI(URI.fromBytes(b"http://ghcr.io:5000/v2/"))
        self.assertIsInstance(plain, Socks5Endpoint)
        self.assertEqual((plain.host, plain.port), ("ghcr.io", 5000))  # type: ignore[attr-defined]
        direct = factory.endpointForURI(URI.fromBytes(b"http://direct.example/"))
        self.assertNotIsInstance(direct, Socks5Endpoint)


class ErrorMappingTests(SynchronousTestCase):
    def test_statuses(self) -> None:
        self.assertEqual(to_error(Failure(ProxyError("x"))).status, 502)
        self.assertIsInstance(ProxyError("x"), BadGateway)
        self.assertIsInstance(ProxyTimeout("x"), GatewayTimeout)
