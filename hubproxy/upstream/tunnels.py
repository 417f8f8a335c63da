# -*- test-case-name: hubproxy.test.test_tunnels -*-
"""
Upstream proxies: SOCKS5 (RFC 1928, RFC 1929) and HTTP C{CONNECT} tunnels,
as Twisted client endpoints.

L{hubproxy.upstream.endpoints.EndpointFactory} asks L{Tunnel} for an
endpoint for every new upstream connection.  The endpoint connects to the
proxy, runs the handshake, and only when the proxy says the tunnel is up
does it build the caller's protocol and hand it the I{raw} proxy transport
(bytes that arrived with the proxy's reply are replayed to it).  TLS to the
real upstream is layered on top by the endpoint factory, with the upstream's
host name for SNI and certificate verification, so nothing here sees
plaintext of an https request.  Backpressure is untouched: after the
handshake the wrapped protocol talks to the TCP transport directly.

Choices (documented in the README):

 - The target's I{host name} is sent to the proxy (SOCKS5 domain-name
   addressing, C{CONNECT host:port}): the proxy resolves names, for
   C{socks5://} and C{socks5h://} alike.  So hubproxy's connect-time
   address filter cannot see the address a derived URL resolves to; with a
   proxy the gates are the host-name allowlist and the literal-IP check of
   L{hubproxy.upstream.policy.check_outside_url}, and the proxy is trusted.
 - C{http://} proxies carry everything through C{CONNECT} (plain-http
   upstreams too), with C{Proxy-Authorization: Basic} when the URL has
   credentials: one code path, and the proxy never sees plaintext requests
   it could cache or rewrite.  The proxy must allow C{CONNECT} to the
   upstream's port (squid's default C{SSL_ports} allows only 443).
 - Every proxy failure is a L{ProxyError} (a 502) whose message says what
   the proxy said (authentication refused, host unreachable, ...); a proxy
   that does not set up the tunnel within C{connectTimeout} is a 504.

socksio is sans-I/O and raises on a partial message, so replies are
buffered here until their full length is known.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, cast
from urllib.parse import unquote, urlsplit

from socksio import ProtocolError
from socksio.socks5 import (
    SOCKS5AType,
    SOCKS5AuthMethod,
    SOCKS5AuthMethodsRequest,
    SOCKS5AuthReply,
    SOCKS5Command,
    SOCKS5CommandRequest,
    SOCKS5Connection,
    SOCKS5Reply,
    SOCKS5ReplyCode,
    SOCKS5UsernamePasswordReply,
    SOCKS5UsernamePasswordRequest,
)
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from hubproxy.errors import BadGateway, GatewayTimeout

#: The largest CONNECT reply header block we read before giving up.
MAX_CONNECT_REPLY = 64 * 1024

DEFAULT_PORTS = {"socks5": 1080, "socks5h": 1080, "http": 80}


class _ProxyFailure:
    """
    The client sees the reason without the proxy's address and user name
    (internal details); the log line (which shows C{repr}) gets all of it.
    """

    message: str

    def _init(self, message: str, proxy: "ProxyURL | None") -> str:
        self.full = message
        if proxy is not None:
            message = message.replace(f" {proxy.display}", "")
            if proxy.username is not None:
                message = message.replace(f" for user {proxy.username!r}", "").replace(f" of user {proxy.username!r}", "")
        return message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.full!r})"


class ProxyError(_ProxyFailure, BadGateway):
    """
    The upstream proxy is unreachable, refused us, or could not reach the
    upstream.  C{full} names the proxy and its reason (for the log).
    """

    def __init__(self, message: str, proxy: "ProxyURL | None" = None) -> None:
        BadGateway.__init__(self, self._init(message, proxy))


class ProxyTimeout(_ProxyFailure, GatewayTimeout):
    """
    The upstream proxy did not set up the tunnel in time.
    """

    def __init__(self, message: str, proxy: "ProxyURL | None" = None) -> None:
        GatewayTimeout.__init__(self, self._init(message, proxy))


# ---------------------------------------------------------------------------
# Configuration: the proxy URL and the noProxy list


@dataclass(frozen=True)
class ProxyURL:
    """
    A parsed C{[access] proxy} value.

    @ivar scheme: C{"socks5"} (also for C{socks5h}) or C{"http"}.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """
        The URL with the password hidden, for logs.
        """
        auth = f"{self.username}:***@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}"


def parse_proxy_url(text: str) -> ProxyURL:
    """
    Parse C{socks5://[user:pass@]host[:port]}, C{socks5h://...} or
    C{http://[user:pass@]host[:port]}.  User and password may be
    percent-encoded.

    @raise ValueError: anything else.
    """
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported proxy scheme {scheme!r} (use socks5:// or http://)")
    if not parts.hostname:
        raise ValueError("proxy URL has no host")
    port = parts.port or DEFAULT_PORTS[scheme]
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        password = ""
    if scheme == "socks5h":
        scheme = "socks5"
    if scheme == "socks5" and username is not None:
        if len(username.encode()) > 255 or len(password.encode()) > 255:  # type: ignore[union-attr]
            raise ValueError("SOCKS5 user name and password are limited to 255 bytes each")
    return ProxyURL(scheme, parts.hostname.lower(), port, username, password)


class NoProxy:
    """
    C{[access] noProxy}: which upstream hosts are reached directly.

    Entries (already validated and lower-cased by the config loader), as Go's
    C{NO_PROXY}: C{*} (everything); an IP address or CIDR (matches literal
    IP hosts); C{host} (that host and its subdomains); C{.suffix} (only
    subdomains); C{host:port} (that host on that port only).
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.everything = False
        self._networks: list[Any] = []
        self._names: list[tuple[str, bool, int | None]] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.everything = True
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            port: int | None = None
            name = entry
            if name.startswith("["):  # [v6]:port
                bracket = name.find("]")
                host, rest = name[1:bracket], name[bracket + 1 :]
                if rest.startswith(":") and rest[1:].isdigit():
                    port = int(rest[1:])
                try:
                    network = ipaddress.ip_network(host)
                except ValueError:
                    continue
                self._names.append((str(network.network_address), False, port))
                continue
            if name.count(":") == 1:
                name, _, port_text = name.partition(":")
                port = int(port_text) if port_text.isdigit() else None
            if name.startswith("*."):
                name = name[1:]
            subdomains_only = name.startswith(".")
            self._names.append((name.lstrip(".").rstrip("."), subdomains_only, port))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            if any(address in network for network in self._networks):
                return True
            host = str(address)
        for name, subdomains_only, entry_port in self._names:
            if entry_port is not None and entry_port != port:
                continue
            if host.endswith("." + name):
                return True
            if host == name and not subdomains_only:
                return True
        return False


# ---------------------------------------------------------------------------
# The handshake protocols


class _Handshake(Protocol):
    """
    Runs a proxy handshake on a fresh connection to the proxy, then gives
    the raw transport to the protocol the caller asked for.

    After the handoff this object stays the transport's protocol (a
    transport cannot change its protocol) and forwards C{dataReceived} and
    C{connectionLost}; everything the wrapped protocol does to its
    transport (writes, producers, aborts) goes straight to TCP.
    """

    def __init__(self, endpoint: "_TunnelEndpoint", factory: Any, done: defer.Deferred[Any]) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._done = done
        self._buffer = b""
        self.wrapped: Any = None

    # -- subclass hooks
    def start(self) -> None:
        raise NotImplementedError

    def advance(self) -> bytes | None:
        """
        Consume C{self._buffer}; return the leftover bytes once the tunnel
        is up, C{None} while more bytes are needed.

        @raise ProxyError: the proxy refused.
        """
        raise NotImplementedError

    # -- plumbing
    def connectionMade(self) -> None:
        try:
            self.start()
        except ProxyError as e:
            self._fail(e)

    def dataReceived(self, data: bytes) -> None:
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
            return
        if self._done.called:
            return
        self._buffer += data
        try:
            leftover = self.advance()
        except ProxyError as e:
            self._fail(e)
            return
        if leftover is not None:
            self._established(leftover)

    def _established(self, leftover: bytes) -> None:
        self._buffer = b""
        assert self.transport is not None  # only reached from dataReceived
        wrapped = self._factory.buildProtocol(self.transport.getPeer())
        if wrapped is None:
            self._fail(ProxyError("connection refused by the local protocol factory"))
            return
        self.wrapped = wrapped
        wrapped.makeConnection(self.transport)
        self._done.callback(wrapped)
        if leftover:
            wrapped.dataReceived(leftover)

    def _fail(self, reason: Exception) -> None:
        if not self._done.called:
            self._done.errback(reason)
        if self.transport is not None:
            # The proxy connection is TCP (or TLS over TCP): an ITCPTransport.
            cast(ITCPTransport, self.transport).abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.wrapped is not None:
            wrapped, self.wrapped = self.wrapped, None
            wrapped.connectionLost(reason)
            return
        if not self._done.called:
            self._done.errback(
                ProxyError(
                    f"upstream proxy {self._endpoint.proxy.display} closed the connection during the handshake for {self._endpoint.target}",
                    self._endpoint.proxy,
                )
            )

    def _proxy_error(self, text: str) -> ProxyError:
        return ProxyError(f"upstream proxy {self._endpoint.proxy.display}: {text}", self._endpoint.proxy)


SOCKS5_REPLY_REASONS = {
    SOCKS5ReplyCode.GENERAL_SERVER_FAILURE: "general SOCKS server failure",
    SOCKS5ReplyCode.CONNECTION_NOT_ALLOWED_BY_RULESET: "connection not allowed by ruleset",
    SOCKS5ReplyCode.NETWORK_UNREACHABLE: "network unreachable",
    SOCKS5ReplyCode.HOST_UNREACHABLE: "host unreachable",
    SOCKS5ReplyCode.CONNECTION_REFUSED: "connection refused",
    SOCKS5ReplyCode.TTL_EXPIRED: "TTL expired",
    SOCKS5ReplyCode.COMMAND_NOT_SUPPORTED: "command not supported",
    SOCKS5ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}

_ADDRESS_LENGTHS = {
    SOCKS5AType.IPV4_ADDRESS[0]: 4,
    SOCKS5AType.IPV6_ADDRESS[0]: 16,
}


class Socks5Handshake(_Handshake):
    """
    RFC 1928 CONNECT with domain-name addressing (IP literals are sent as
    addresses), RFC 1929 user name / password when the URL has them.
    """

    def start(self) -> None:
        self._socks = SOCKS5Connection()
        proxy = self._endpoint.proxy
        methods = [SOCKS5AuthMethod.NO_AUTH_REQUIRED]
        if proxy.username is not None:
            methods.append(SOCKS5AuthMethod.USERNAME_PASSWORD)
        self._socks.send(SOCKS5AuthMethodsRequest(methods))
        self._stage = "method"
        self._flush()

    def _flush(self) -> None:
        data = self._socks.data_to_send()
        if data:
            assert self.transport is not None  # only called once connected
            self.transport.write(data)

    def _take(self, n: int) -> bytes:
        head, self._buffer = self._buffer[:n], self._buffer[n:]
        return head

    def _receive(self, data: bytes) -> Any:
        try:
            return self._socks.receive_data(data)
        except ProtocolError:
            raise self._proxy_error(f"malformed SOCKS5 reply {data[:32]!r}") from None

    def _send_connect(self) -> None:
        host, port = self._endpoint.host, self._endpoint.port
        try:
            request = SOCKS5CommandRequest.from_address(SOCKS5Command.CONNECT, (host, port))
        except Exception:
            raise self._proxy_error(f"cannot address {host}:{port} in SOCKS5") from None
        if request.atype == SOCKS5AType.DOMAIN_NAME and len(request.addr) > 255:
            raise self._proxy_error(f"host name {host[:64]}... too long for SOCKS5")
        self._socks.send(request)
        self._stage = "connect"
        self._flush()

    def advance(self) -> bytes | None:
        while True:
            if self._stage == "method":
                if len(self._buffer) < 2:
                    return None
                if self._buffer[0] != 5:
                    raise self._proxy_error(f"not a SOCKS5 proxy (it answered {self._buffer[:16]!r})")
                if self._buffer[1] == 0xFF:
                    offered = "no authentication" + (", username/password" if self._endpoint.proxy.username is not None else "")
                    raise self._proxy_error(f"accepts none of the authentication methods offered ({offered})")
                reply: SOCKS5AuthReply = self._receive(self._take(2))
                if reply.method == SOCKS5AuthMethod.USERNAME_PASSWORD:
                    proxy = self._endpoint.proxy
                    if proxy.username is None:
                        raise self._proxy_error("requires a user name and password (none configured)")
                    self._socks.send(SOCKS5UsernamePasswordRequest(proxy.username.encode(), (proxy.password or "").encode()))
                    self._stage = "auth"
                    self._flush()
                elif reply.method == SOCKS5AuthMethod.NO_AUTH_REQUIRED:
                    self._send_connect()
                else:
                    raise self._proxy_error(f"chose an authentication method we did not offer ({reply.method.name})")
            elif self._stage == "auth":
                if len(self._buffer) < 2:
                    return None
                data = self._take(2)
                auth: SOCKS5UsernamePasswordReply = self._receive(data)
                if not auth.success:
                    raise self._proxy_error(
                        f"authentication refused for user {self._endpoint.proxy.username!r} (RFC 1929 status {data[1]:#04x})"
                    )
                self._send_connect()
            elif self._stage == "connect":
                if len(self._buffer) < 5:
                    return None
                if self._buffer[0] != 5:
                    raise self._proxy_error(f"malformed SOCKS5 reply {self._buffer[:32]!r}")
                code = self._buffer[1]
                atype = self._buffer[3]
                if atype == SOCKS5AType.DOMAIN_NAME[0]:
                    length = 4 + 1 + self._buffer[4] + 2
                elif atype in _ADDRESS_LENGTHS:
                    length = 4 + _ADDRESS_LENGTHS[atype] + 2
                elif code != 0:
                    # Some proxies send a short, bogus address on failure.
                    raise self._refused(code)
                else:
                    raise self._proxy_error(f"malformed SOCKS5 reply (address type {atype})")
                if len(self._buffer) < length:
                    return None
                data = self._take(length)
                if code != 0:
                    raise self._refused(code)
                result: SOCKS5Reply = self._receive(data)
                if result.reply_code != SOCKS5ReplyCode.SUCCEEDED:  # pragma: no cover - code checked above
                    raise self._refused(code)
                self._stage = "open"
                return self._take(len(self._buffer))
            else:  # pragma: no cover
                return None

    def _refused(self, code: int) -> ProxyError:
        try:
            reason = SOCKS5_REPLY_REASONS[SOCKS5ReplyCode(bytes([code]))]
        except (KeyError, ValueError):
            reason = "unknown failure"
        return self._proxy_error(
            f"cannot connect to {self._endpoint.target}: {reason} (SOCKS5 reply {code:#04x})"
        )


class ConnectHandshake(_Handshake):
    """
    C{CONNECT host:port HTTP/1.1} with C{Proxy-Authorization: Basic} when
    the proxy URL has credentials; any 2xx opens the tunnel.
    """

    def start(self) -> None:
        target = self._endpoint.target
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", "User-Agent: hubproxy"]
        proxy = self._endpoint.proxy
        if proxy.username is not None:
            token = base64.b64encode(f"{proxy.username}:{proxy.password or ''}".encode()).decode("ascii")
            lines.append(f"Proxy-Authorization: Basic {token}")
        assert self.transport is not None  # start() runs from connectionMade
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))

    def advance(self) -> bytes | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_REPLY:
                raise self._proxy_error("CONNECT reply headers too large")
            if self._buffer and not b"HTTP/".startswith(self._buffer[:5]):
                raise self._proxy_error(f"not an HTTP proxy (it answered {self._buffer[:16]!r})")
            return None
        head, leftover = self._buffer[:end], self._buffer[end + 4 :]
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise self._proxy_error(f"malformed CONNECT reply {status_line[:80]!r}")
        code = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        if 200 <= code < 300:
            return leftover
        if code == 407:
            if self._endpoint.proxy.username is None:
                raise self._proxy_error("requires authentication (407); put user:password in the proxy URL")
            raise self._proxy_error(f"refused the credentials of user {self._endpoint.proxy.username!r} (407 {reason})")
        raise self._proxy_error(f"answered CONNECT {self._endpoint.target} with {code} {reason}".rstrip())


# ---------------------------------------------------------------------------
# The endpoint


class _HandshakeFactory(Factory):
    noisy = False

    def __init__(self, build: Callable[[], _Handshake]) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> _Handshake:
        return self._build()


@implementer(IStreamClientEndpoint)
class _TunnelEndpoint:
    """
    Connects to C{host:port} through the proxy reached by C{proxy_endpoint}.

    The Deferred of L{connect} fires with the caller's protocol only once
    the proxy reports the tunnel open; it fails with L{ProxyError} (or
    L{ProxyTimeout} after C{timeout} seconds), and cancelling it closes the
    proxy connection.
    """

    handshake: type[_Handshake]

    def __init__(self, clock: Any, proxy_endpoint: Any, host: str, port: int, proxy: ProxyURL, timeout: float) -> None:
        self._clock = clock
        self._proxy_endpoint = proxy_endpoint
        self.host = host
        self.port = port
        self.proxy = proxy
        self._timeout = timeout

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        handshakes: list[_Handshake] = []
        connecting: list[defer.Deferred[Any]] = []

        def cancel(d: defer.Deferred[Any]) -> None:
            if not d.called:
                d.errback(defer.CancelledError())
            for c in connecting:
                c.cancel()
            for h in handshakes:
                if h.transport is not None and h.wrapped is None:
                    cast(ITCPTransport, h.transport).abortConnection()

        done: defer.Deferred[Any] = defer.Deferred(cancel)

        def build() -> _Handshake:
            h = self.handshake(self, protocolFactory, done)
            handshakes.append(h)
            return h

        def timed_out() -> None:
            if done.called:
                return
            done.errback(
                ProxyTimeout(
                    f"upstream proxy {self.proxy.display} did not open a tunnel to {self.target} within {self._timeout:g}s",
                    self.proxy,
                )
            )
            cancel(done)

        timer = self._clock.callLater(self._timeout, timed_out)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        d = self._proxy_endpoint.connect(_HandshakeFactory(build))
        connecting.append(d)

        def connected(protocol: Any) -> None:
            connecting.clear()

        def failed(failure: Failure) -> None:
            connecting.clear()
            if done.called:
                return
            done.errback(self._explain(failure))

        d.addCallbacks(connected, failed)
        return done

    def _explain(self, failure: Failure) -> Exception:
        name, proxy = self.proxy.display, self.proxy
        if failure.check(defer.CancelledError):
            return failure.value  # type: ignore[return-value]
        if failure.check(error.ConnectionRefusedError):
            return ProxyError(f"upstream proxy {name} refused the connection (is it running?)", proxy)
        if failure.check(error.DNSLookupError):
            return ProxyError(f"upstream proxy {name}: its host name could not be resolved", proxy)
        if failure.check(error.TimeoutError, defer.TimeoutError):
            return ProxyTimeout(f"upstream proxy {name} did not accept a connection within {self._timeout:g}s", proxy)
        reason = failure.getErrorMessage() or failure.type.__name__  # type: ignore[union-attr]
        return ProxyError(f"upstream proxy {name}: cannot connect ({reason})", proxy)


class Socks5Endpoint(_TunnelEndpoint):
    handshake = Socks5Handshake


class HttpConnectEndpoint(_TunnelEndpoint):
    handshake = ConnectHandshake


class Tunnel:
    """
    The C{tunnel} hook of L{hubproxy.upstream.endpoints.EndpointFactory}:
    C{tunnel(host, port)} is an endpoint through the proxy, or C{None} for
    hosts in C{noProxy} (connected directly).
    """

    def __init__(self, reactor: Any, proxy: ProxyURL, no_proxy: NoProxy, connect_timeout: float) -> None:
        self._reactor = reactor
        self.proxy = proxy
        self.no_proxy = no_proxy
        self._timeout = connect_timeout
        self._endpoint_class = Socks5Endpoint if proxy.scheme == "socks5" else HttpConnectEndpoint

    def __call__(self, host: str, port: int) -> IStreamClientEndpoint | None:
        if self.no_proxy.matches(host, port):
            return None
        proxy_endpoint = HostnameEndpoint(self._reactor, self.proxy.host, self.proxy.port, timeout=self._timeout)
        return self._endpoint_class(self._reactor, proxy_endpoint, host, port, self.proxy, self._timeout)


def make_tunnel(reactor: Any, proxy_url: str, no_proxy: Iterable[str] = (), connect_timeout: float = 10.0) -> Tunnel | None:
    """
    The tunnel for C{[access] proxy} / C{noProxy}, or C{None} without a proxy.
    """
    if not proxy_url:
        return None
    return Tunnel(reactor, parse_proxy_url(proxy_url), NoProxy(no_proxy), connect_timeout)


__all__ = [
    "ProxyError",
    "ProxyTimeout",
    "ProxyURL",
    "parse_proxy_url",
    "NoProxy",
    "Socks5Endpoint",
    "HttpConnectEndpoint",
    "Socks5Handshake",
    "ConnectHandshake",
    "Tunnel",
    "make_tunnel",
]
