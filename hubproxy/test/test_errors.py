"""
Tests for L{hubproxy.errors.abort} on a real in-memory HTTP/2 connection
(Twisted's H2Connection on a StringTransport, the h2 library as client).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._http2 import H2Connection
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from hubproxy.errors import abort


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


class H2AbortTests(SynchronousTestCase):
    def test_abort_resets_one_stream_and_finishes_its_request(self) -> None:
        """
        abort() on an HTTP/2 request sends RST_STREAM for that stream only,
        and the request's notifyFinish() fires (Twisted's own abortRequest
        does not tell the request: the in-flight count would leak).
        """
        resource = Hang()
        site = Site(resource)
        connection = H2Connection(Clock())
        connection.requestFactory = site.requestFactory
        connection.site = site
        transport = StringTransport()
        connection.makeConnection(transport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        for stream_id in (1, 3):
            client.send_headers(
                stream_id, [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "h")], end_stream=True
            )
        connection.dataReceived(client.data_to_send())
        first, second = resource.requests
        finished: list[Any] = []
        first.notifyFinish().addBoth(finished.append)
        second_finished: list[Any] = []
        second.notifyFinish().addBoth(second_finished.append)

        abort(first)

        events = client.receive_data(transport.value())
        resets = [e.stream_id for e in events if isinstance(e, h2.events.StreamReset)]
        self.assertEqual(resets, [1])
        self.assertFalse([e for e in events if isinstance(e, h2.events.ConnectionTerminated)])
        self.assertEqual(len(finished), 1)
        self.assertIn("stream reset", str(finished[0].value))
        self.assertEqual(second_finished, [])  # the other stream goes on
        self.assertEqual(list(connection.streams), [3])
        abort(first)  # a second abort is harmless
        self.assertEqual(len(finished), 1)
