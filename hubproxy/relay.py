# -*- test-case-name: hubproxy.test.test_relay -*-
"""
Upstream response body -> client, with real backpressure.

The recipe (style.md §5): the relay protocol receives the upstream body and
registers itself as the request's *push producer*, forwarding pause, resume
and stop to the upstream body transport.  When the client's socket buffer
fills, twisted.web pauses us, we pause the upstream TCP connection, and the
kernel's flow control slows the upstream down: memory stays at about one
socket buffer per transfer whatever the file size.

Honesty rules:
 - a client that goes away stops the upstream transfer at once;
 - an upstream that fails, stalls or exceeds the size cap *after* the
   headers were sent makes us abort the client connection (or HTTP/2
   stream): a short body must never look complete;
 - nothing is written to a request that is gone.

Writes are coalesced to at least 64 KiB where data arrives in smaller
pieces in the same reactor turn (TLS records are 16 KiB): each
C{request.write} is one HTTP chunk and one transport write, so fewer, larger
writes cost less CPU per byte.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, cast

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.server import Request
from zope.interface import implementer

from hubproxy.errors import GatewayTimeout, PayloadTooLarge, abort, client_gone

WRITE_SIZE = 64 * 1024

# RFC 9110 §7.6.1 plus the de-facto ones: never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def connection_tokens(headers: Headers) -> set[bytes]:
    """
    Header names listed in C{Connection}: hop-by-hop for this message only.
    """
    names: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return names


def copy_headers(
    source: Headers,
    request: Request,
    *,
    drop: Iterable[bytes] = (),
    keep_only: Iterable[bytes] | None = None,
) -> None:
    """
    Copy end-to-end headers from an upstream response onto C{request}.

    Hop-by-hop headers and those named in C{Connection} are dropped, and so
    are C{drop} (lower-case).  Repeated headers keep every value.
    """
    skip = set(HOP_BY_HOP) | connection_tokens(source) | {n.lower() for n in drop}
    skip.add(b"content-length")  # set from response.length by the caller
    only = {n.lower() for n in keep_only} if keep_only is not None else None
    for name, values in source.getAllRawHeaders():
        lname = name.lower()
        if lname in skip or (only is not None and lname not in only):
            continue
        request.responseHeaders.setRawHeaders(lname, list(values))


def set_length(request: Request, response: IResponse) -> None:
    """
    Preserve the upstream length: from C{response.length} on GET, from the
    preserved header on HEAD (Twisted reports length 0 for HEAD responses
    but keeps their C{Content-Length}; docker relies on HEAD lengths).
    """
    if request.method == b"HEAD":
        values = response.headers.getRawHeaders(b"content-length")
        if values:
            request.setHeader(b"content-length", values[-1])
        return
    if response.length is not UNKNOWN_LENGTH:
        request.setHeader(b"content-length", str(response.length).encode())


@implementer(IPushProducer)
class _Relay(Protocol):
    """
    The body protocol; also the push producer registered on the request.
    """

    log = Logger()

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        idle_timeout: float,
        max_bytes: int | None,
        done: defer.Deferred[int],
        on_data: Callable[[int], None] | None,
    ) -> None:
        self._request = request
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._max_bytes = max_bytes
        self._done = done
        self._on_data = on_data
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._flush_call: Any = None
        self._idle_call: Any = None
        self._paused = False
        self._gone = False
        self._failed: Exception | None = None
        self.sent = 0
        request.notifyFinish().addErrback(self._client_lost)

    # -- upstream side -------------------------------------------------
    # self.transport is the response body's TransportProxyProducer (an
    # IPushProducer), not a plain ITransport: hence the casts.

    def connectionMade(self) -> None:
        if self._gone or client_gone(self._request):
            self._gone = True
            cast(IPushProducer, self.transport).stopProducing()
            return
        self._request.registerProducer(self, True)
        self._arm_idle()

    def dataReceived(self, data: bytes) -> None:
        if self._gone:
            return
        self.sent += len(data)
        if self._max_bytes is not None and self.sent > self._max_bytes:
            self._fail(PayloadTooLarge(f"body exceeds the {self._max_bytes} byte limit"))
            return
        if self._idle_call is not None:
            self._idle_call.reset(self._idle_timeout)
        if self._on_data is not None:
            self._on_data(len(data))
        if not self._buffer and len(data) >= WRITE_SIZE:
            self._request.write(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= WRITE_SIZE:
            self._flush()
        elif self._flush_call is None:
            # Coalesce whatever else arrives in this reactor turn.
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._buffer:
            return
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer = []
        self._buffered = 0
        if not self._gone:
            self._request.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._disarm_idle()
        if self._gone:
            self._flush_call_cancel()
            self._settle(None)
            return
        if self._failed is not None:
            self._finish_broken(Failure(self._failed))
            return
        if reason.check(ResponseDone) or (reason.check(PotentialDataLoss) and self._close_delimited_ok()):
            self._flush()
            self._unregister()
            if not client_gone(self._request):
                self._request.finish()
            self._settle(None)
            return
        self._finish_broken(reason)

    def _close_delimited_ok(self) -> bool:
        # An HTTP/1.0-style body ended by close is complete by definition
        # when no length was promised; with chunked or a length it is not.
        return True

    # -- client side (IPushProducer) -----------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm_idle()
        if self.transport is not None:
            cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._gone:
            return
        self._arm_idle()
        if self.transport is not None:
            cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        self._client_lost(None)

    # -- internals -------------------------------------------------------

    def _client_lost(self, reason: Any) -> None:
        if self._gone:
            return
        self._gone = True
        self._buffer = []
        self._flush_call_cancel()
        self._disarm_idle()
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def _flush_call_cancel(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def _arm_idle(self) -> None:
        if self._idle_call is None and not self._paused:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._stalled)

    def _disarm_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _stalled(self) -> None:
        self._idle_call = None
        self._fail(GatewayTimeout(f"upstream sent nothing for {self._idle_timeout:g}s mid-body"))

    def _fail(self, exc: Exception) -> None:
        """
        Stop the upstream; connectionLost then aborts the client.
        """
        if self._failed is None:
            self._failed = exc
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def _unregister(self) -> None:
        if getattr(self._request, "channel", None) is not None and self._request.producer is not None:
            self._request.unregisterProducer()

    def _finish_broken(self, reason: Failure) -> None:
        self._flush_call_cancel()
        self._buffer = []
        if not client_gone(self._request):
            self._unregister()
            if self._request.startedWriting:
                # Logged here: an aborted response never reaches the access
                # log (that runs on finish) nor the error page.
                self.log.warn(
                    "aborted {method} {uri} after {sent} bytes: {reason}",
                    method=self._request.method.decode("latin-1"),
                    uri=self._request.uri.decode("latin-1")[:2048],
                    sent=self.sent,
                    reason=getattr(reason.value, "message", None) or reason.getErrorMessage(),
                )
                abort(self._request)
                self._gone = True
        self._settle(reason)

    def _settle(self, reason: Failure | None) -> None:
        if self._done.called:
            return
        if reason is None:
            self._done.callback(self.sent)
        else:
            self._done.errback(reason)


def relay_body(
    request: Request,
    response: IResponse,
    *,
    clock: IReactorTime,
    idle_timeout: float,
    max_bytes: int | None = None,
    on_data: Callable[[int], None] | None = None,
) -> defer.Deferred[int]:
    """
    Stream C{response}'s body into C{request} and finish it.

    Status and headers must already be set on C{request}.  The Deferred
    fires with the byte count when the body is complete, fires with C{None}
    errors swallowed if the client left, and fails if the upstream broke;
    in that case the client connection has already been aborted (or, if
    nothing was written yet, left for the caller's error page).
    """
    done: defer.Deferred[int] = defer.Deferred()
    if request.method == b"HEAD":
        response.deliverBody(_HeadDiscard())
        if not client_gone(request):
            request.finish()
        done.callback(0)
        return done
    relay = _Relay(request, clock, idle_timeout, max_bytes, done, on_data)
    response.deliverBody(relay)
    return done


class _HeadDiscard(Protocol):
    def connectionMade(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass


def write_body(request: Request, body: bytes) -> None:
    """
    Finish C{request} with an in-memory body (HEAD writes none), unless the
    client has gone.
    """
    if client_gone(request):
        return
    request.setHeader(b"content-length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
