"""
Tests for L{hubproxy.errors.abort} on a real in-memory HTTP/2 connection
(Twisted's H2Connection on a StringTransport, the h2 library as client).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from hubproxy.errors import abort
from hubproxy.http2 import BoundedH2Connection


class Hang(Resource):
    """Starts every response and never finishes it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> Any:
        request.write(b"partial")
        self.requests.append(request)
        return NOT_DONE_YET


class H2TestCase(SynchronousTestCase):
    """
    hubproxy's HTTP/2 connection serving a resource in memory (L{serve}),
    and an h2 client talking to it.
    """

    def serve(self, resource: Resource) -> None:
        site = Site(resource)
        self.connection = BoundedH2Connection(Clock())
        self.connection.requestFactory = site.requestFactory
        self.connection.site = site
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()

    def request(self, stream_id: int) -> None:
        self.client.send_headers(
            stream_id, [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "h")], end_stream=True
        )
        self.connection.dataReceived(self.client.data_to_send())


class H2AbortTests(H2TestCase):
    def test_abort_resets_one_stream_and_finishes_its_request(self) -> None:
        """
        abort() on an HTTP/2 request sends RST_STREAM for that stream only,
        and the request's notifyFinish() fires (Twisted's own abortRequest
        does not tell the request: the in-flight count would leak).
        """
        resource = Hang()
        self.serve(resource)
        connection, transport, client = self.connection, self.transport, self.client
        self.request(1)
        self.request(3)
        first, second = resource.requests
        finished: list[Any] = []
        first.notifyFinish().addBoth(finished.append)
        second_finished: list[Any] = []
        second.notifyFinish().addBoth(second_finished.append)

        abort(first)

        events = client.receive_data(transport.value())
        resets = [(e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)]
        # not NO_ERROR, which curl takes as a normal end of a body without
        # Content-Length
        self.assertEqual(resets, [(1, h2.errors.ErrorCodes.INTERNAL_ERROR)])
        self.assertFalse([e for e in events if isinstance(e, h2.events.ConnectionTerminated)])
        self.assertEqual(len(finished), 1)
        self.assertIn("stream reset", str(finished[0].value))
        self.assertEqual(second_finished, [])  # the other stream goes on
        self.assertEqual(list(connection.streams), [3])
        abort(first)  # a second abort is harmless
        self.assertEqual(len(finished), 1)


class Producer:
    """A push producer that records what it is told."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.paused = False
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class Streaming(Resource):
    """Registers a push producer and starts a response, like the relay."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []
        self.producers: list[Producer] = []

    def render(self, request: Any) -> Any:
        producer = Producer()
        request.registerProducer(producer, True)
        request.write(b"x" * 1024)
        self.requests.append(request)
        self.producers.append(producer)
        return NOT_DONE_YET


class H2BackpressureTests(H2TestCase):
    def setUp(self) -> None:
        self.resource = Streaming()
        self.serve(self.resource)

    def test_socket_backpressure_pauses_streams(self) -> None:
        """
        A client with a huge window: when the socket is full (the transport
        pauses the connection), a stream that writes is paused; when the
        socket drains, it is resumed.  (twisted.web alone only pauses on an
        exhausted flow-control window, so the queue grew without bound.)
        """
        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.client.increment_flow_control_window(2**30)
        self.connection.dataReceived(self.client.data_to_send())
        self.request(1)
        producer = self.resource.producers[0]
        request = self.resource.requests[0]
        self.assertFalse(producer.paused)
        self.connection.pauseProducing()  # what a full socket does
        request.write(b"y" * 65536)
        self.assertTrue(producer.paused)
        self.assertEqual(producer.calls, ["pause"])
        request.write(b"y" * 65536)  # a write already in flight: queued, no second pause
        self.assertEqual(producer.calls, ["pause"])
        self.connection.resumeProducing()  # the socket drained
        self.assertFalse(producer.paused)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_queue_bounded_without_socket_backpressure(self) -> None:
        """
        Even with a free socket, a stream writing faster than the send loop
        drains (one frame per reactor turn) is paused once its queue passes
        MAX_QUEUED, and resumed when the queue has drained to half.
        """
        from hubproxy.http2 import MAX_QUEUED

        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.client.increment_flow_control_window(2**30)
        self.connection.dataReceived(self.client.data_to_send())
        self.request(1)
        producer = self.resource.producers[0]
        request = self.resource.requests[0]
        for _ in range(MAX_QUEUED // 65536 + 1):
            request.write(b"q" * 65536)
        self.assertTrue(producer.paused)
        clock = self.connection._reactor
        for _ in range(200):  # bounded: the send loop drains a frame per turn
            if not producer.paused:
                break
            clock.advance(0)
        self.assertFalse(producer.paused)
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertLessEqual(self.connection._queued(1), MAX_QUEUED // 2)

    def test_flow_control_pause_survives_resume(self) -> None:
        """
        A stream paused because the client's window is used up stays paused
        when the socket drains: only a WINDOW_UPDATE resumes it.
        """
        self.request(1)  # default 65,535-byte window
        producer = self.resource.producers[0]
        request = self.resource.requests[0]
        request.write(b"z" * 70000)
        self.assertTrue(producer.paused)
        self.connection.pauseProducing()
        self.connection.resumeProducing()
        self.assertTrue(producer.paused)
        self.assertEqual(producer.calls, ["pause"])
