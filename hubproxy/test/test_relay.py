"""
Tests for L{hubproxy.relay}: backpressure, disconnects and honest aborts,
at the producer boundary (style.md P16).

The downstream side is a real twisted.web Site protocol over a
L{StringTransport}; the upstream side is a L{TransportProxyProducer} around
another StringTransport, exactly what an Agent response hands its body
protocol.  StubTreq cannot be used here: iosim never applies backpressure.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseFailed, TransportProxyProducer
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from hubproxy.errors import GatewayTimeout, PayloadTooLarge
from hubproxy.relay import copy_headers, relay_body, set_length


class FakeResponse:
    """
    An IResponse whose body we drive by hand.
    """

    def __init__(self, length: Any = UNKNOWN_LENGTH, headers: Headers | None = None, code: int = 200) -> None:
        self.length = length
        self.headers = headers or Headers()
        self.code = code
        self.upstream = StringTransport()
        self.transport = TransportProxyProducer(self.upstream)
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def end(self, reason: Exception | None = None) -> None:
        self.protocol.connectionLost(Failure(reason or ResponseDone()))


class RelayLeaf(Resource):
    isLeaf = True

    def __init__(self, test: "RelayTests") -> None:
        super().__init__()
        self.test = test

    def render(self, request: Any) -> Any:
        t = self.test
        response = t.response
        request.setResponseCode(response.code)
        copy_headers(response.headers, request)
        set_length(request, response)
        t.done = relay_body(request, response, clock=t.clock, idle_timeout=30, max_bytes=t.max_bytes)
        t.done.addErrback(t.errors.append)
        return NOT_DONE_YET


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.errors: list[Failure] = []
        self.max_bytes: int | None = None
        self.response = FakeResponse()
        self.done: defer.Deferred[int] | None = None

    def connect(self, method: bytes = b"GET") -> None:
        site = Site(RelayLeaf(self), reactor=self.clock)
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        self.client = StringTransport()
        self.channel.makeConnection(self.client)
        self.channel.dataReceived(method + b" /blob HTTP/1.1\r\nHost: proxy\r\n\r\n")

    def body(self) -> bytes:
        raw = self.client.value()
        return raw.split(b"\r\n\r\n", 1)[1]

    def test_exact_bytes_and_length(self) -> None:
        """
        A body with a known length is relayed byte for byte, with the
        upstream's Content-Length, and the request finishes.
        """
        payload = bytes(range(256)) * 1024
        self.response = FakeResponse(length=len(payload), headers=Headers({b"content-type": [b"application/octet-stream"], b"connection": [b"x-private"], b"x-private": [b"1"], b"keep-alive": [b"timeout=5"]}))
        self.connect()
        for i in range(0, len(payload), 10000):
            self.response.send(payload[i : i + 10000])
        self.response.end()
        raw = self.client.value()
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertIn(b"Content-Length: 262144", head)
        self.assertNotIn(b"X-Private", head)
        self.assertNotIn(b"Keep-Alive", head)
        self.assertEqual(body, payload)
        self.assertEqual(self.successResultOf(self.done), len(payload))
        self.assertFalse(self.client.disconnecting)

    def test_pause_resume_reach_upstream(self) -> None:
        """
        When the client's transport pauses us, the upstream transport is
        paused; resuming resumes it.
        """
        self.connect()
        self.response.send(b"x" * 100)
        self.assertEqual(self.response.upstream.producerState, "producing")
        self.client.producer.pauseProducing()
        self.assertEqual(self.response.upstream.producerState, "paused")
        self.client.producer.resumeProducing()
        self.assertEqual(self.response.upstream.producerState, "producing")

    def test_client_disconnect_stops_upstream(self) -> None:
        """
        A client that goes away stops the upstream transfer.
        """
        self.connect()
        self.response.send(b"x" * 100)
        self.channel.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.response.upstream.producerState, "stopped")
        # Late upstream events are harmless.
        self.response.send(b"y")
        self.response.end(ResponseFailed([Failure(Exception("closed"))]))
        self.assertEqual(self.errors, [])

    def test_midbody_failure_aborts_client(self) -> None:
        """
        An upstream failure after bytes were sent aborts the client
        connection instead of finishing a short chunked body.
        """
        self.connect()
        self.response.send(b"a" * 70000)
        self.response.end(ResponseFailed([Failure(Exception("upstream reset"))]))
        self.assertTrue(self.client.disconnecting)
        self.assertTrue(self.client.disconnected)
        self.assertNotIn(b"0\r\n\r\n", self.client.value()[-10:])
        self.assertEqual(len(self.errors), 1)
        self.errors[0].trap(ResponseFailed)

    def test_idle_timeout_aborts(self) -> None:
        """
        An upstream that stops sending mid-body is given up after the idle
        timeout: upstream stopped, client aborted, failure reported.
        """
        self.connect()
        self.response.send(b"a" * 70000)
        self.clock.advance(29)
        self.assertFalse(self.client.disconnecting)
        self.clock.advance(2)
        self.assertEqual(self.response.upstream.producerState, "stopped")
        # Twisted reports the stop as a failed response.
        self.response.end(ResponseFailed([Failure(Exception("stopped"))]))
        self.assertTrue(self.client.disconnected)
        self.errors[0].trap(GatewayTimeout)

    def test_no_idle_timeout_while_client_pauses(self) -> None:
        """
        A slow client pauses the upstream; that silence is ours, not the
        upstream's, so the idle timer does not run meanwhile.
        """
        self.connect()
        self.response.send(b"a" * 100)
        self.client.producer.pauseProducing()
        self.clock.advance(300)
        self.assertEqual(self.response.upstream.producerState, "paused")
        self.client.producer.resumeProducing()
        self.response.send(b"b")
        self.response.end()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(self.done), 101)

    def test_size_cap_without_length(self) -> None:
        """
        With no Content-Length, bytes are counted; past the cap the
        transfer is stopped and the client aborted.
        """
        self.max_bytes = 100_000
        self.connect()
        self.response.send(b"a" * 70000)
        self.response.send(b"a" * 70000)
        self.assertEqual(self.response.upstream.producerState, "stopped")
        self.response.end(ResponseFailed([Failure(Exception("stopped"))]))
        self.assertTrue(self.client.disconnected)
        self.errors[0].trap(PayloadTooLarge)

    def test_small_writes_coalesced(self) -> None:
        """
        Small pieces arriving in one reactor turn become one chunk.
        """
        self.connect()
        for _ in range(10):
            self.response.send(b"z" * 1000)
        self.assertEqual(self.client.value(), b"")
        self.clock.advance(0)
        self.assertEqual(self.body(), b"2710\r\n" + b"z" * 10000 + b"\r\n")
        self.response.end()
        self.assertTrue(self.body().endswith(b"0\r\n\r\n"))

    def test_close_delimited_body_completes(self) -> None:
        """
        A body with no length that ends with the connection is complete.
        """
        self.connect()
        self.response.send(b"hello")
        self.response.end(PotentialDataLoss())
        self.assertEqual(self.successResultOf(self.done), 5)
        self.assertTrue(self.body().endswith(b"0\r\n\r\n"))

    def test_head_keeps_length(self) -> None:
        """
        HEAD keeps the upstream Content-Length header and sends no body.
        """
        self.response = FakeResponse(length=0, headers=Headers({b"content-length": [b"1234"]}))
        self.connect(b"HEAD")
        raw = self.client.value()
        self.assertIn(b"Content-Length: 1234", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\n"))
        self.assertEqual(self.successResultOf(self.done), 0)

    def test_failure_before_any_byte_left_to_caller(self) -> None:
        """
        If the upstream fails before a byte was written, the client is not
        aborted: the caller can still send a proper 502.
        """
        self.connect()
        self.response.end(ResponseFailed([Failure(Exception("reset"))]))
        self.assertFalse(self.client.disconnecting)
        self.assertEqual(len(self.errors), 1)
