# -*- test-case-name: hubproxy.test.test_errors -*-
"""
One map from failures to HTTP responses.

Every resource raises (or fails its Deferred with) an exception; this module
is the only place that turns exceptions into status codes and bodies.  Three
body styles exist because three kinds of client read them:

 - ``registry``: docker, containerd and podman parse
   ``{"errors":[{"code","message","detail"}]}`` and show ``message``;
 - ``json``: the web UI and API clients read ``{"error": ..., "code": ...}``;
 - ``text``: curl, wget and git print a plain-text body.

Once a response has started (headers sent), no error body can be written
honestly: the connection is aborted instead, so a truncated download never
looks complete (a chunked ``finish()`` would write the terminating chunk).
And once the client has gone, nothing is written at all.
"""

from __future__ import annotations

import json
from typing import Mapping

from twisted.internet import defer, error as ierror
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import _newclient
from twisted.web.server import Request

from hubproxy.http2 import reset_stream

log = Logger()


class HubproxyError(Exception):
    """
    An error with a defined HTTP answer.

    @ivar status: HTTP status code.
    @ivar code: registry error code (``MANIFEST_UNKNOWN``...), also used as
        the machine-readable ``code`` in JSON bodies.
    @ivar message: one human sentence.
    @ivar detail: optional structured detail for registry clients.
    @ivar headers: extra response headers (``Retry-After``...).
    """

    status = 500
    code = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(HubproxyError):
    status = 400
    code = "BAD_REQUEST"


class Forbidden(HubproxyError):
    status = 403
    code = "DENIED"


class NotFound(HubproxyError):
    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(HubproxyError):
    status = 405
    code = "UNSUPPORTED"


class PayloadTooLarge(HubproxyError):
    status = 413
    code = "SIZE_INVALID"


class TooManyRequests(HubproxyError):
    status = 429
    code = "TOOMANYREQUESTS"


class BadGateway(HubproxyError):
    """
    The upstream refused the connection, broke the protocol, or sent us
    somewhere we may not go.
    """

    status = 502
    code = "UNAVAILABLE"


class GatewayTimeout(HubproxyError):
    """
    The upstream did not answer (connect, headers or body) in time.
    """

    status = 504
    code = "UNAVAILABLE"


class ServiceUnavailable(HubproxyError):
    status = 503
    code = "UNAVAILABLE"


def to_error(failure: Failure) -> HubproxyError:
    """
    Classify any failure as a L{HubproxyError}.

    Connect and protocol failures are 502; anything that ran out of time is
    504.  Unknown exceptions are 500 and are logged by the caller with their
    traceback: a 500 is always our bug.
    """
    exc = failure.value
    if isinstance(exc, HubproxyError):
        return exc
    if isinstance(exc, (defer.TimeoutError, ierror.TimeoutError)):
        return GatewayTimeout("upstream did not answer in time")
    if isinstance(exc, ierror.DNSLookupError):
        return BadGateway("upstream host name could not be resolved")
    if isinstance(exc, ierror.ConnectionRefusedError):
        return BadGateway("upstream refused the connection")
    if isinstance(exc, ierror.ConnectError):
        return BadGateway(f"cannot connect to upstream: {exc.__class__.__name__}")
    reasons = getattr(exc, "reasons", None) or []
    for reason in reasons:
        text = repr(getattr(reason, "value", reason))
        if "VerificationError" in text or "certificate verify failed" in text:
            return BadGateway("upstream TLS certificate could not be verified")
        if "SSL" in text:
            return BadGateway("upstream TLS handshake failed")
    if isinstance(
        exc,
        (
            _newclient.ResponseFailed,
            _newclient.ResponseNeverReceived,
            _newclient.RequestNotSent,
            _newclient.RequestTransmissionFailed,
            ierror.ConnectionLost,
            ierror.ConnectionDone,
        ),
    ):
        return BadGateway("upstream connection failed")
    try:
        from OpenSSL.SSL import Error as SSLError
    except ImportError:  # pragma: no cover
        SSLError = ()  # type: ignore[assignment,misc]
    if SSLError and isinstance(exc, SSLError):  # type: ignore[truthy-function]  # () when pyOpenSSL is missing
        return BadGateway("upstream TLS handshake failed")
    return HubproxyError("internal error", status=500, code="UNKNOWN")


def is_quiet(failure: Failure) -> bool:
    """
    Failures that need no log line: the client went away and we cancelled.
    """
    return failure.check(defer.CancelledError) is not None


def style_for_path(path: bytes) -> str:
    """
    Pick the error body style from the request path.
    """
    if path == b"/v2" or path.startswith(b"/v2/"):
        return "registry"
    if path.startswith((b"/api/", b"/download", b"/search", b"/token", b"/metrics")):
        return "json"
    return "text"


def error_body(err: HubproxyError, style: str) -> tuple[bytes, bytes]:
    """
    Render C{err} as (content-type, body) in the given style.
    """
    if style == "registry":
        entry: dict[str, object] = {"code": err.code, "message": err.message}
        if err.detail is not None:
            entry["detail"] = err.detail
        return b"application/json", json.dumps({"errors": [entry]}).encode() + b"\n"
    if style == "json":
        payload: dict[str, object] = {"error": err.message, "code": err.code}
        if err.detail is not None:
            payload["detail"] = err.detail
        return b"application/json", json.dumps(payload).encode() + b"\n"
    return b"text/plain; charset=utf-8", err.message.encode("utf-8") + b"\n"


def client_gone(request: Request) -> bool:
    """
    True once the client connection is closed (or the request finished).
    """
    return bool(getattr(request, "_disconnected", False)) or bool(
        getattr(request, "finished", False)
    )


def abort(request: Request) -> None:
    """
    Abort the client's connection (HTTP/1.x) or just its stream (HTTP/2).

    Used when a response has already started and cannot be completed: the
    client must see a broken transfer, never a short body that looks whole.
    """
    channel = getattr(request, "channel", None)
    if channel is None:
        return
    # HTTP/2: RST_STREAM (INTERNAL_ERROR) for this stream only.
    if reset_stream(request):
        return
    transport = getattr(channel, "transport", None)
    if transport is not None:
        transport.abortConnection()


def write_error(request: Request, err: HubproxyError, style: str) -> None:
    """
    Send C{err} as a complete response, or abort if that is no longer
    possible.  Does nothing if the client has gone.
    """
    if client_gone(request):
        return
    if request.startedWriting:
        abort(request)
        return
    content_type, body = error_body(err, style)
    request.setResponseCode(err.status)
    # Drop any headers prepared for the response that did not happen.
    for name in (b"content-length", b"content-encoding", b"content-range", b"etag"):
        request.responseHeaders.removeHeader(name)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    for header, value in err.headers.items():
        request.setHeader(header.encode("latin-1"), value.encode("latin-1"))
    request.setHeader(b"content-length", str(len(body)).encode())
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def handle_failure(request: Request, failure: Failure, style: str) -> None:
    """
    The one errback every asynchronous resource ends with.

    Logs what deserves a log line (with the failure attached for 500s),
    then answers or aborts.
    """
    if is_quiet(failure):
        return
    err = to_error(failure)
    if err.status >= 500:
        if err.status == 500:
            log.failure(
                "internal error handling {method} {uri}",
                failure,
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
            )
        else:
            log.warn(
                "upstream failure for {method} {uri}: {status} {reason} ({exc})",
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
                status=err.status,
                reason=err.message,
                exc=repr(failure.value)[:300],
            )
    write_error(request, err, style)
