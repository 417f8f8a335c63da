# -*- test-case-name: hubproxy.test.test_h2c -*-
"""
Cleartext HTTP/2 (C{[server] enableH2C}) on the plain-HTTP port.

Two ways in, both ending in twisted.web's own HTTP/2 implementation
(L{twisted.web._http2.H2Connection}), exactly as after TLS ALPN:

 - B{prior knowledge} (what Caddy, nginx C{grpc_pass}, Envoy and
   C{curl --http2-prior-knowledge} do): the connection's first bytes are the
   HTTP/2 connection preface;
 - B{C{Upgrade: h2c}} (RFC 7540 section 3.2, what C{curl --http2} sends
   on C{http://} URLs): the first request is an HTTP/1.1 request carrying
   C{Upgrade: h2c} and C{HTTP2-Settings}.  It is answered with C{101
   Switching Protocols}, and then over HTTP/2 as stream 1.  twisted.web has
   no upgrade support, so this module performs it: it hands the client's
   settings to the h2 state machine (C{initiate_upgrade_connection}) and
   delivers the upgraded request to the connection as if it had arrived as
   stream 1.  Requests with a body are not upgraded (they are answered over
   HTTP/1.1, which RFC 7540 allows and is what nginx does too), nor is any
   request but the first on a connection.

Anything else is HTTP/1.x as before.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import protocol
from twisted.logger import Logger

from hubproxy.site import intercept_first_bytes

log = Logger(namespace="hubproxy")

#: The client connection preface of HTTP/2 (RFC 9113 section 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
#: Most bytes buffered while waiting for the first request's head: larger
#: heads are passed to HTTP/1.1 unexamined (twisted.web refuses them anyway).
MAX_HEAD = 64 * 1024
#: Request headers HTTP/2 forbids (RFC 9113 section 8.2.2) or that belong
#: to the upgrade itself; the Host header becomes C{:authority}.
_NOT_FORWARDED = frozenset(
    {b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"host"}
)


class UpgradeRequest:
    """
    The parsed head of an HTTP/1.1 request asking for C{Upgrade: h2c}.
    """

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], settings: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.settings = settings

    def h2_headers(self) -> list[tuple[bytes, bytes]]:
        """
        The request as an HTTP/2 header list (pseudo-headers first).
        """
        host = next((v for k, v in self.headers if k == b"host"), b"")
        out = [(b":method", self.method), (b":path", self.target), (b":scheme", b"http"), (b":authority", host)]
        for name, value in self.headers:
            if name in _NOT_FORWARDED or (name == b"te" and value.strip().lower() != b"trailers"):
                continue
            out.append((name, value))
        return out


def parse_upgrade(head: bytes) -> UpgradeRequest | None:
    """
    The upgrade request in C{head} (a request line and headers, without the
    final blank line), or L{None} if it is not an C{h2c} upgrade this server
    performs: not HTTP/1.1, no C{h2c} in C{Upgrade}, no single
    C{HTTP2-Settings}, C{Connection} not naming both, or a request body.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not parts[1].startswith(b"/"):
        return None
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None
        headers.append((name.lower(), value.strip()))

    def values(name: bytes) -> list[bytes]:
        return [v for k, v in headers if k == name]

    def tokens(name: bytes) -> set[bytes]:
        return {t.strip().lower() for v in values(name) for t in v.split(b",")}

    settings = values(b"http2-settings")
    if b"h2c" not in tokens(b"upgrade") or len(settings) != 1:
        return None
    if not {b"upgrade", b"http2-settings"} <= tokens(b"connection"):
        return None
    if values(b"transfer-encoding") or any(v.strip() not in (b"0", b"") for v in values(b"content-length")):
        return None
    # base64url "with any trailing '=' characters omitted" (RFC 7540 3.2.1);
    # h2 decodes with padding.
    padded = settings[0] + b"=" * (-len(settings[0]) % 4)
    return UpgradeRequest(parts[0], parts[1], headers, padded)


def upgrade(channel: Any, transport: Any, request: UpgradeRequest) -> bool:
    """
    Switch C{channel} (twisted.web's generic HTTP channel, before its first
    byte) to HTTP/2 and start C{request} as stream 1.  Returns L{False}
    (nothing written) if the client's C{HTTP2-Settings} are malformed, so
    the request can be served over HTTP/1.1 instead.
    """
    import h2.events

    from twisted.web._http2 import H2Connection

    # Validate the client's settings on a scratch connection first: once
    # the 101 is written there is no way back to HTTP/1.1.
    import h2.config
    import h2.connection

    probe = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    probe.initiate_connection()
    try:
        probe.initiate_upgrade_connection(request.settings)
    except Exception:  # h2, hyperframe and binascii errors alike: not upgradable
        return False

    transport.write(SWITCHING)
    # What TLS would have set after ALPN: the generic channel replaces its
    # HTTP/1.1 channel with an H2Connection on the next dataReceived, which
    # sends the server's connection preface (SETTINGS).
    transport.negotiatedProtocol = b"h2"
    channel.dataReceived(b"")
    h2conn = channel._channel
    if not isinstance(h2conn, H2Connection):  # pragma: no cover - twisted internals changed
        raise RuntimeError("twisted.web did not switch to HTTP/2")
    # h2 sends its SETTINGS again here (it initiates the connection
    # itself); a second SETTINGS frame is legal and simply acknowledged.
    h2conn.conn.initiate_upgrade_connection(request.settings)
    transport.write(h2conn.conn.data_to_send())
    h2conn._requestReceived(_event(h2.events.RequestReceived, stream_id=1, headers=request.h2_headers()))
    h2conn._requestEnded(_event(h2.events.StreamEnded, stream_id=1))
    return True


def _event(cls: Any, **fields: Any) -> Any:
    """
    An h2 event, on h2 4.2+ (keyword-only dataclass fields) and older
    versions (no constructor arguments) alike.
    """
    try:
        return cls(**fields)
    except TypeError:
        event = cls()
        for name, value in fields.items():
            setattr(event, name, value)
        return event


class H2CFactory(protocol.Factory):
    """
    Wraps the site: looks at each connection's first bytes for the HTTP/2
    preface or an C{Upgrade: h2c} request (see the module docstring).
    """

    def __init__(self, site: Any) -> None:
        self.site = site

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def logPrefix(self) -> str:
        return str(self.site.logPrefix())

    def buildProtocol(self, addr: Any) -> Any:
        channel = self.site.buildProtocol(addr)
        if channel is None:
            return None
        pending = [b""]

        def decide(transport: Any, data: bytes, forward: Callable[[bytes], None]) -> bool:
            buffered = pending[0] + data
            if len(buffered) < len(H2_PREFACE) and H2_PREFACE.startswith(buffered):
                pending[0] = buffered
                return False
            if (
                not buffered.startswith(H2_PREFACE)
                and b"\r\n\r\n" not in buffered
                and len(buffered) < MAX_HEAD
                and buffered[:1] != b"\x16"
            ):
                # an HTTP/1.1 head still arriving: wait for all of it
                pending[0] = buffered
                return False
            pending[0] = b""
            if buffered.startswith(H2_PREFACE) and transport is not None:
                # What TLS would have set after ALPN; the generic channel
                # reads it on its first dataReceived.
                transport.negotiatedProtocol = b"h2"
                forward(buffered)
                return True
            head, sep, rest = buffered.partition(b"\r\n\r\n")
            request = parse_upgrade(head) if sep and transport is not None else None
            if request is not None and upgrade(channel, transport, request):
                if rest:
                    channel.dataReceived(rest)
                return True
            forward(buffered)
            return True

        return intercept_first_bytes(channel, decide)
