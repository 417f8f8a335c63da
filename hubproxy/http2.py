# -*- test-case-name: hubproxy.test.test_errors -*-
"""
Two fixes to twisted.web's HTTP/2 server (L{twisted.web._http2}) that a
streaming proxy needs, in one place:

 - B{backpressure from the socket reaches the streams.}  twisted.web
   pauses a stream's producer only when the I{client's flow-control window}
   is used up.  When the socket's send buffer is full (a client that
   advertises a large window but reads slowly, or not at all), the
   connection pauses its own send loop but not the streams, and even with a
   free socket the send loop drains one 16 KiB frame per reactor turn: every
   stream kept writing into a queue bounded only by the client's window, so
   a single connection could make the proxy hold gigabytes (the upstream
   read at full speed).  L{BoundedH2Connection} bounds each stream's queue
   and pauses its producer while the socket is blocked;
 - B{an aborted stream is reset with an error.}  twisted.web's
   C{abortConnection} on a stream sends RST_STREAM with C{NO_ERROR}, which
   clients (curl among them) take as a normal end after data: a truncated
   body without a Content-Length looked complete.  L{reset_stream} sends
   C{INTERNAL_ERROR} and tells the request (twisted.web's abort never did, so
   its C{notifyFinish} never fired).

L{install} makes twisted.web's HTTP channel use L{BoundedH2Connection} for
HTTP/2 connections, over TLS (ALPN) and cleartext alike.
"""

from __future__ import annotations

from typing import Any

import h2.errors
import h2.exceptions
from twisted.internet import error
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection  # twisted[http2] is a dependency


#: Bytes a stream may have queued for sending before its producer is
#: paused.  twisted.web's send loop sends one DATA frame (16 KiB) per reactor
#: turn, while the relay writes up to 256 KiB per upstream read: without a
#: bound, the queue grows up to the client's flow-control window (curl
#: grants 32 MiB, a hostile client 2 GiB).
MAX_QUEUED = 512 * 1024


class BoundedH2Connection(H2Connection):  # type: ignore[misc]
    """
    twisted.web's H2Connection, with each stream's send queue bounded: a
    stream's producer is paused when its queue passes L{MAX_QUEUED} or the
    socket is full, and resumed when the queue has drained to half of that
    and the socket takes data again (see the module docstring).
    """

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        #: streams whose producer this class paused
        self._held: set[int] = set()

    def _queued(self, streamID: int) -> int:
        return sum(len(chunk) for chunk in self._outboundStreamQueues.get(streamID, ()) if isinstance(chunk, bytes))

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        super().writeDataToStream(streamID, data)
        if self._consumerBlocked is None and self._queued(streamID) <= MAX_QUEUED:
            return
        stream = self.streams.get(streamID)
        if stream is not None and stream.producer is not None and stream._producerProducing:
            stream._producerProducing = False
            stream.producer.pauseProducing()
            self._held.add(streamID)

    def _release_held(self) -> None:
        held = self._held
        if not held or self._consumerBlocked is not None:
            return
        for streamID in list(held):
            stream = self.streams.get(streamID)
            if stream is None:
                held.discard(streamID)
            elif self._queued(streamID) <= MAX_QUEUED // 2:
                held.discard(streamID)
                # resumes the producer only if the client's flow-control
                # window has room: streams it holds back stay paused
                stream.windowUpdated()

    def _sendPrioritisedData(self, *args: Any) -> None:
        super()._sendPrioritisedData(*args)
        self._release_held()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        self._release_held()


def install() -> None:
    """
    Make twisted.web create L{BoundedH2Connection}s for HTTP/2 connections.
    Idempotent.
    """
    from twisted.web import http

    if getattr(http, "H2Connection", None) is not BoundedH2Connection:
        http.H2Connection = BoundedH2Connection  # type: ignore[misc]


def reset_stream(request: Any) -> bool:
    """
    Reset C{request}'s HTTP/2 stream with C{INTERNAL_ERROR} and finish the
    request (its C{notifyFinish} fires with a failure).  Returns L{False} if
    C{request} is not on an HTTP/2 stream.
    """
    stream = getattr(request, "channel", None)
    conn = getattr(stream, "_conn", None)
    stream_id = getattr(stream, "streamID", None)
    if not isinstance(conn, H2Connection) or stream_id is None:
        return False
    if stream_id in conn.streams:
        try:
            conn.conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset or closed it first
        if conn._tryToWriteControlData():
            conn._requestDone(stream_id)
    if stream_id not in conn.streams and not getattr(request, "_disconnected", False):
        request.connectionLost(Failure(error.ConnectionLost("HTTP/2 stream reset by hubproxy")))
    return True
