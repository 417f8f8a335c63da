"""
Tests for the upstream client stack: L{hubproxy.upstream.client} (redirect
follower, overrides, trust, timeouts, byte-exactness) and
L{hubproxy.upstream.endpoints} (the connect-time address check).
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from hubproxy.acl import NetworkSet, parse_network
from hubproxy.errors import BadGateway, Forbidden, GatewayTimeout
from hubproxy.test.helpers import Recorder
from hubproxy.upstream.client import IdentityAgent, UpstreamClient
from hubproxy.upstream.endpoints import BlockedAddress, EndpointFactory
from hubproxy.upstream.policy import AddressPolicy
from hubproxy.upstream.tls import make_tls_policy


class Hops(Recorder):
    def render(self, request: Any) -> Any:
        seen = self.record(request)
        path = seen["path"]
        if path.startswith("/loop/"):
            n = int(path.split("/")[2])
            request.setResponseCode(302)
            request.setHeader(b"location", f"/loop/{n + 1}".encode())
            return b""
        if path == "/to-other":
            request.setResponseCode(302)
            request.setHeader(b"location", b"https://other.example/landing")
            return b""
        if path == "/same-origin":
            request.setResponseCode(301)
            request.setHeader(b"location", b"/landing")
            return b""
        if path == "/see-other":
            request.setResponseCode(303)
            request.setHeader(b"location", b"/landing")
            return b""
        if path == "/to-metadata":
            request.setResponseCode(302)
            request.setHeader(b"location", b"http://169.254.169.254/latest/meta-data/")
            return b""
        if path == "/to-ftp":
            request.setResponseCode(302)
            request.setHeader(b"location", b"ftp://files.example/x")
            return b""
        if path == "/hang":
            return NOT_DONE_YET
        return b"landed:" + seen["host"].encode()


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = Hops()
        self.stub = StubTreq(self.fake)
        self.client = UpstreamClient(
            clock=self.clock,
            http_trusted=self.stub,
            policy=AddressPolicy(NetworkSet([])),
            overrides={"github.com": "http://gh-fixture:8080"},
            trusted_bases=["https://registry.example"],
            response_timeout=10,
            max_redirects=5,
        )

    def fetch(self, url: str, **kw: Any) -> Any:
        d = defer.Deferred.fromCoroutine(self.client.request(kw.pop("method", "GET"), url, **kw))
        for _ in range(20):
            self.stub.flush()
        return d

    def body(self, response: Any) -> bytes:
        from treq.content import content

        d = content(response.response)
        self.stub.flush()
        return self.successResultOf(d)

    def test_follows_and_drops_credentials_across_origins(self) -> None:
        r = self.successResultOf(self.fetch("https://start.example/to-other", headers=Headers({b"authorization": [b"Bearer x"], b"cookie": [b"a=1"]})))
        self.assertEqual(r.code, 200)
        self.assertEqual(r.url, "https://other.example/landing")
        self.assertEqual(r.redirects, ["https://start.example/to-other"])
        first, second = self.fake.seen
        self.assertEqual(first["headers"]["authorization"], ["Bearer x"])
        self.assertNotIn("authorization", second["headers"])
        self.assertNotIn("cookie", second["headers"])

    def test_same_origin_keeps_credentials(self) -> None:
        r = self.successResultOf(self.fetch("https://start.example/same-origin", headers=Headers({b"authorization": [b"Bearer x"]})))
        self.assertEqual(r.code, 200)
        self.assertEqual(self.fake.seen[1]["headers"]["authorization"], ["Bearer x"])

    def test_redirects_bounded(self) -> None:
        f = self.failureResultOf(self.fetch("https://start.example/loop/0"), BadGateway)
        self.assertIn("more than 5", f.value.message)
        self.assertEqual(len(self.fake.seen), 6)

    def test_303_turns_post_into_get(self) -> None:
        r = self.successResultOf(self.fetch("https://start.example/see-other", method="POST", body=b"data"))
        self.assertEqual(r.code, 200)
        self.assertEqual(self.fake.seen[1]["method"], "GET")
        self.assertEqual(self.fake.seen[1]["body"], b"")

    def test_redirect_to_blocked_address(self) -> None:
        f = self.failureResultOf(self.fetch("https://start.example/to-metadata"), BadGateway)
        self.assertIn("refused", f.value.message)
        self.assertEqual(len(self.fake.seen), 1)

    def test_redirect_to_other_scheme(self) -> None:
        self.failureResultOf(self.fetch("https://start.example/to-ftp"), BadGateway)

    def test_outside_url_literal_refused(self) -> None:
        self.failureResultOf(self.fetch("http://127.0.0.1/x"), Forbidden)
        self.failureResultOf(self.fetch("http://0x7f000001/x"), Forbidden)
        self.assertEqual(self.fake.seen, [])

    def test_overrides_apply(self) -> None:
        r = self.successResultOf(self.fetch("https://github.com/o/r/info/refs?service=git-upload-pack"))
        self.assertEqual(r.code, 200)
        self.assertEqual(r.url, "https://github.com/o/r/info/refs?service=git-upload-pack")
        self.assertTrue(r.trusted)
        self.assertEqual(self.fake.seen[0]["host"], "gh-fixture:8080")

    def test_config_origin_trusted(self) -> None:
        r = self.successResultOf(self.fetch("https://registry.example/v2/"))
        self.assertTrue(r.trusted)
        r = self.successResultOf(self.fetch("https://elsewhere.example/v2/"))
        self.assertFalse(r.trusted)

    def test_should_follow_false_returns_redirect(self) -> None:
        r = self.successResultOf(self.fetch("https://start.example/to-other", should_follow=lambda current, url: False))
        self.assertEqual(r.code, 302)
        self.assertEqual(len(self.fake.seen), 1)

    def test_response_timeout(self) -> None:
        d = self.fetch("https://start.example/hang")
        self.assertNoResult(d)
        self.clock.advance(11)
        f = self.failureResultOf(d, GatewayTimeout)
        self.assertIn("10s", f.value.message)

    def test_user_agent_default(self) -> None:
        self.successResultOf(self.fetch("https://start.example/x"))
        self.assertTrue(self.fake.seen[0]["headers"]["user-agent"][0].startswith("hubproxy/"))


class FakeResponse:
    def __init__(self, headers: Headers) -> None:
        self.headers = headers


class FakeAgent:
    def __init__(self) -> None:
        self.sent: list[Headers] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None) -> defer.Deferred[Any]:
        assert headers is not None
        self.sent.append(headers)
        return defer.succeed(FakeResponse(Headers({b"content-encoding": [b"gzip"]})))


class IdentityAgentTests(SynchronousTestCase):
    def test_identity_by_default(self) -> None:
        inner = FakeAgent()
        agent = IdentityAgent(inner)
        response = self.successResultOf(agent.request(b"GET", b"http://x/", Headers({b"accept-encoding": [b"gzip"]})))
        self.assertEqual(inner.sent[0].getRawHeaders(b"accept-encoding"), [b"identity"])
        # The decoder above must not see the encoding.
        self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(response.headers.getRawHeaders(b"x-hubproxy-content-encoding"), [b"gzip"])

    def test_client_encoding_forwarded(self) -> None:
        inner = FakeAgent()
        IdentityAgent(inner).request(b"GET", b"http://x/", Headers({b"x-hubproxy-accept-encoding": [b"br, gzip"]}))
        self.assertEqual(inner.sent[0].getRawHeaders(b"accept-encoding"), [b"br, gzip"])
        self.assertIsNone(inner.sent[0].getRawHeaders(b"x-hubproxy-accept-encoding"))


class EndpointTests(SynchronousTestCase):
    """
    The guarded endpoint checks the addresses a name resolves to.
    MemoryReactorClock's resolver answers 127.0.0.1 for every name, which is
    exactly a DNS-rebinding attack.
    """

    def factory(self, allow: list[str]) -> tuple[MemoryReactorClock, EndpointFactory]:
        reactor = MemoryReactorClock()
        policy = AddressPolicy(NetworkSet([parse_network(a) for a in allow]))
        return reactor, EndpointFactory(reactor, make_tls_policy(), 5, allowed=lambda ip: policy.allows(ip))

    def test_rebinding_refused(self) -> None:
        reactor, factory = self.factory([])
        endpoint = factory.endpointForURI(URI.fromBytes(b"http://innocent.example/"))
        f = self.failureResultOf(endpoint.connect(Factory.forProtocol(Protocol)), BlockedAddress)
        self.assertIn("127.0.0.1", f.value.message)
        self.assertEqual(reactor.tcpClients, [])

    def test_allow_networks(self) -> None:
        reactor, factory = self.factory(["127.0.0.0/8"])
        endpoint = factory.endpointForURI(URI.fromBytes(b"http://innocent.example:8080/"))
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 8080))

    def test_trusted_unchecked(self) -> None:
        reactor = MemoryReactorClock()
        factory = EndpointFactory(reactor, make_tls_policy(), 5)
        factory.endpointForURI(URI.fromBytes(b"http://fixture:5000/")).connect(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 5000))

    def test_large_upstream_reads(self) -> None:
        """
        Upstream TCP connections read UPSTREAM_READ_SIZE bytes per recv()
        (tcp.Client's C{bufferSize}); other transports are left alone.
        """
        from twisted.internet.testing import StringTransport

        from hubproxy.upstream.endpoints import UPSTREAM_READ_SIZE

        reactor = MemoryReactorClock()
        factory = EndpointFactory(reactor, make_tls_policy(), 5)
        d = factory.endpointForURI(URI.fromBytes(b"http://fixture:5000/")).connect(Factory.forProtocol(Protocol))
        transport = StringTransport()
        transport.bufferSize = 64 * 1024  # as tcp.Client has
        reactor.tcpClients[0][2].buildProtocol(None).makeConnection(transport)
        protocol = self.successResultOf(d)
        self.assertIs(protocol.transport, transport)
        self.assertEqual(transport.bufferSize, UPSTREAM_READ_SIZE)
        self.assertGreater(UPSTREAM_READ_SIZE, 64 * 1024)
