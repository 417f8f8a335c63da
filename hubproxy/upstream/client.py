# -*- test-case-name: hubproxy.test.test_client -*-
"""
The one HTTP client every resource uses to reach upstreams.

Built once per service and injected (tests inject L{treq.testing.StubTreq}).
It wraps treq so that a proxy gets what a proxy needs and treq's browser-ish
defaults do not apply:

 - responses are unbuffered (streamed by L{hubproxy.relay});
 - bytes are exact: C{Accept-Encoding} is C{identity} unless the caller
   forwards the client's own, and treq's gzip decoder never sees an encoded
   response (see L{IdentityAgent});
 - no cookie is ever stored or replayed between users;
 - redirects are followed here, not by treq: hops are bounded, 3xx bodies
   are discarded so the connection can be reused, credentials are dropped
   when the origin changes, and every hop is checked again;
 - the response-header timeout runs on the injected clock.

Trust: base URLs written in the configuration (registry upstreams and
C{[upstreams]} overrides) are used as written.  Any other URL, i.e. one a
client put in its path, a redirect C{Location}, or an auth realm, must pass
L{hubproxy.upstream.policy.check_outside_url} and is fetched through the
I{guarded} agent, whose endpoints refuse private addresses at connect time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Callable, Iterable, Mapping, cast

import hyperlink
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from hubproxy import __version__
from hubproxy.errors import BadGateway, Forbidden, GatewayTimeout, PayloadTooLarge
from hubproxy.upstream.policy import AddressPolicy, DisallowedURL, check_outside_url

USER_AGENT = f"hubproxy/{__version__}".encode()
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# Headers that identify the caller to one origin only.
CREDENTIAL_HEADERS = (b"authorization", b"cookie", b"proxy-authorization")
_HIDDEN_ENCODING = b"x-hubproxy-content-encoding"


def _origin(url: hyperlink.URL) -> str:
    return f"{url.scheme}://{url.host.lower()}:{url.port}"


def origin_of(text: str) -> str:
    """
    C{scheme://host:port} of a URL, the unit of trust and credential scope.
    """
    return _origin(hyperlink.URL.from_text(text))


@implementer(IAgent)
class IdentityAgent:
    """
    Sits under treq's C{ContentDecoderAgent} and keeps responses byte-exact.

    treq always stacks a gzip decoder on top of the agent it is given.  This
    inner agent replaces the C{Accept-Encoding} it adds with the caller's own
    value (or C{identity}), and hides any C{Content-Encoding} of the response
    from the decoder; L{UpstreamClient} restores it.  The encoded bytes then
    reach the client exactly as the upstream sent them.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: IBodyProducer | None = None) -> defer.Deferred[IResponse]:
        headers = headers.copy() if headers is not None else Headers()
        wanted = headers.getRawHeaders(b"x-hubproxy-accept-encoding")
        headers.removeHeader(b"x-hubproxy-accept-encoding")
        headers.setRawHeaders(b"accept-encoding", wanted or [b"identity"])
        d = self._agent.request(method, uri, headers, bodyProducer)

        def hide(response: IResponse) -> IResponse:
            enc = response.headers.getRawHeaders(b"content-encoding")
            if enc:
                response.headers.removeHeader(b"content-encoding")
                response.headers.setRawHeaders(_HIDDEN_ENCODING, enc)
            return response

        return d.addCallback(hide)


class _Discard(Protocol):
    """
    Reads and drops a small body (a 3xx page) so the pooled connection is
    released; gives up on the connection if the body is large.
    """

    # Body protocols get Twisted's TransportProxyProducer (an IPushProducer)
    # as their transport, hence the casts here and in _Collector.

    def __init__(self, limit: int = 64 * 1024) -> None:
        self._left = limit

    def dataReceived(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass


def discard(response: IResponse) -> None:
    """
    Consume and drop a response body we will not use.

    An unread body pins its connection forever (the transport stays paused
    until C{deliverBody}); this releases it.
    """
    response.deliverBody(_Discard())


class _Collector(Protocol):
    def __init__(self, limit: int, done: defer.Deferred[bytes], clock: IReactorTime, idle: float) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._done = done
        self._clock = clock
        self._idle = idle
        self._timer: Any = None

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._idle, self._stalled)

    def _stalled(self) -> None:
        self._timer = None
        if not self._done.called:
            self._done.errback(GatewayTimeout("upstream stalled while sending a body"))
        cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done.errback(PayloadTooLarge(f"upstream body larger than {self._limit} bytes"))
            cast(IPushProducer, self.transport).stopProducing()
            return
        self._chunks.append(data)
        if self._timer is not None:
            self._timer.reset(self._idle)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


def read_body(response: IResponse, limit: int, clock: IReactorTime, idle_timeout: float) -> defer.Deferred[bytes]:
    """
    Read a small body (token JSON, a manifest, a script) into memory,
    bounded in size and in idle time.  Cancelling stops the transfer.
    """
    length = response.length
    if length is not UNKNOWN_LENGTH and length > limit:
        discard(response)
        return defer.fail(PayloadTooLarge(f"upstream body of {length} bytes exceeds {limit}"))
    collector: _Collector

    def cancel(d: defer.Deferred[bytes]) -> None:
        transport = getattr(collector, "transport", None)
        if transport is not None:
            transport.stopProducing()

    done: defer.Deferred[bytes] = defer.Deferred(cancel)
    collector = _Collector(limit, done, clock, idle_timeout)
    response.deliverBody(collector)
    return done


@dataclass
class UpstreamResponse:
    """
    The final (non-redirect, or unfollowed redirect) upstream response.

    @ivar url: the URL that produced it, after redirects, as the world
        names it (before C{[upstreams]} overrides).
    @ivar redirects: the URLs we were redirected through, in order.
    """

    response: IResponse
    url: str
    trusted: bool
    redirects: list[str] = field(default_factory=list)
    redirect_headers: list[Headers] = field(default_factory=list)

    @property
    def code(self) -> int:
        return self.response.code

    @property
    def headers(self) -> Headers:
        return self.response.headers

    @property
    def length(self) -> Any:
        return self.response.length

    def header(self, name: bytes) -> bytes | None:
        values = self.response.headers.getRawHeaders(name)
        return values[-1] if values else None


class UpstreamClient:
    """
    See the module docstring.

    @param http_trusted: a treq-like client for configuration-written URLs.
    @param http_guarded: a treq-like client whose connections are checked
        against the address policy (defaults to C{http_trusted}, which is
        what tests with a single L{StubTreq} want).
    @param overrides: host -> base URL (C{[upstreams]}), applied to every
        outgoing request, redirects included.
    @param trusted_bases: further base URLs written in the configuration
        (registry upstreams): requests to their origins are trusted.
    """

    log = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        http_trusted: Any,
        http_guarded: Any = None,
        policy: AddressPolicy,
        overrides: Mapping[str, str] | None = None,
        trusted_bases: Iterable[str] = (),
        response_timeout: float = 60.0,
        idle_timeout: float = 120.0,
        max_redirects: int = 10,
        on_request: Callable[[str, str, int | None, float], None] | None = None,
    ) -> None:
        self.clock = clock
        self._trusted = http_trusted
        self._guarded = http_guarded if http_guarded is not None else http_trusted
        self.policy = policy
        self._overrides = {k.lower(): hyperlink.URL.from_text(v) for k, v in (overrides or {}).items()}
        origins = {origin_of(v) for v in (overrides or {}).values()}
        origins.update(origin_of(b) for b in trusted_bases)
        self._trusted_origins = frozenset(origins)
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.max_redirects = max_redirects
        self.on_request = on_request

    def resolve(self, url: str, trusted: bool) -> tuple[str, bool]:
        """
        Apply C{[upstreams]} overrides and decide whether C{url} is trusted.

        @raise DisallowedURL: an untrusted URL the policy refuses.
        """
        parsed = hyperlink.URL.from_text(url)
        if not trusted and parsed.userinfo:
            # Checked before the override: "evil%2f@github.com" must not
            # become a trusted github.com request with odd user-info.
            raise DisallowedURL("URLs with user-info (user@host) are not allowed")
        base = self._overrides.get(parsed.host.lower().rstrip("."))
        if base is not None:
            parsed = parsed.replace(scheme=base.scheme, host=base.host, port=base.port)
            return parsed.to_text(), True
        if trusted or _origin(parsed) in self._trusted_origins:
            return parsed.to_text(), True
        checked = check_outside_url(url, self.policy)
        return checked.to_text(), False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers | None = None,
        body: bytes | IBodyProducer | None = None,
        trusted: bool = False,
        follow_redirects: bool = True,
        should_follow: Callable[[str, str], bool] | None = None,
        accept_encoding: bytes | None = None,
        label: str = "",
    ) -> UpstreamResponse:
        """
        Send one request, following redirects as described above.

        @param should_follow: called with the current URL and each absolute
            redirect target;
            returning C{False} stops and returns the 3xx response (unread)
            so the caller can hand the C{Location} to the client instead.
        @param accept_encoding: the client's C{Accept-Encoding} to forward
            (the encoded body is then relayed untouched); default identity.
        @param label: a metric / log label (registry name, host family).
        @raise Forbidden: the first URL is not allowed.
        @raise BadGateway: a redirect leads somewhere not allowed, too many
            redirects, or the upstream connection failed.
        @raise GatewayTimeout: no response headers in time.
        """
        # ``logical`` is the URL as the world names it (github.com...);
        # ``current`` is where it is fetched from after [upstreams]
        # overrides.  Redirects resolve against the logical URL, so a
        # relative Location from an overridden host stays on that host.
        logical = url
        try:
            current, is_trusted = self.resolve(logical, trusted)
        except DisallowedURL as e:
            raise Forbidden(f"refused: {e.reason}") from None
        base_headers = headers.copy() if headers is not None else Headers()
        if not base_headers.hasHeader(b"user-agent"):
            base_headers.setRawHeaders(b"user-agent", [USER_AGENT])
        first_origin = origin_of(logical)
        hops: list[str] = []
        hop_headers_seen: list[Headers] = []
        while True:
            hop_headers = base_headers.copy()
            if origin_of(logical) != first_origin:
                for name in CREDENTIAL_HEADERS:
                    hop_headers.removeHeader(name)
            if accept_encoding:
                hop_headers.setRawHeaders(b"x-hubproxy-accept-encoding", [accept_encoding])
            response = await self._send(method, current, hop_headers, body, is_trusted, label)
            done = UpstreamResponse(response, logical, is_trusted, hops, hop_headers_seen)
            if not follow_redirects or response.code not in REDIRECT_CODES:
                return done
            location = response.headers.getRawHeaders(b"location")
            if not location:
                return done
            try:
                target = hyperlink.URL.from_text(logical).click(location[0].decode("latin-1").strip()).to_text()
            except (ValueError, UnicodeDecodeError):
                discard(response)
                raise BadGateway("upstream sent an unusable redirect Location") from None
            if should_follow is not None and not should_follow(logical, target):
                return done
            if response.code in (307, 308) and body is not None and not isinstance(body, bytes):
                # The body was streamed and cannot be replayed.
                return done
            discard(response)
            if len(hops) >= self.max_redirects:
                raise BadGateway(f"upstream redirected more than {self.max_redirects} times")
            if response.code in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", None
                base_headers.removeHeader(b"content-type")
                base_headers.removeHeader(b"content-length")
            hops.append(logical)
            hop_headers_seen.append(response.headers)
            logical = target
            try:
                current, is_trusted = self.resolve(target, False)
            except DisallowedURL as e:
                raise BadGateway(f"upstream redirected to a refused URL: {e.reason}") from None

    async def _send(self, method: str, url: str, headers: Headers, body: Any, trusted: bool, label: str) -> IResponse:
        http = self._trusted if trusted else self._guarded
        started = self.clock.seconds()
        d = http.request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            unbuffered=True,
        )
        timed_out: list[bool] = []

        def give_up() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.response_timeout, give_up)
        status: int | None = None
        try:
            response = await d
            status = response.code
        except ValueError as e:
            # Twisted refuses some host spellings only when connecting.
            raise BadGateway(f"unusable upstream URL: {e}") from None
        except Exception:
            if timed_out:
                raise GatewayTimeout(
                    f"upstream {hyperlink.URL.from_text(url).host} did not answer within {self.response_timeout:g}s"
                ) from None
            raise
        finally:
            if timer.active():
                timer.cancel()
            if self.on_request is not None:
                try:
                    self.on_request(label or hyperlink.URL.from_text(url).host, method, status, self.clock.seconds() - started)
                except Exception:
                    self.log.failure("metrics hook failed")
        original = getattr(response, "original", response)
        # treq's decoder leaves an empty Content-Encoding behind when there
        # was none; then restore what IdentityAgent hid from it.
        encoding = [v for v in original.headers.getRawHeaders(b"content-encoding", []) if v.strip()]
        original.headers.removeHeader(b"content-encoding")
        hidden = original.headers.getRawHeaders(_HIDDEN_ENCODING)
        if hidden:
            original.headers.removeHeader(_HIDDEN_ENCODING)
            encoding = hidden
        if encoding:
            original.headers.setRawHeaders(b"content-encoding", encoding)
        return original


def tls_policy(ca_file: str = "", skip_verify: bool = False) -> Any:
    """
    The HTTPS policy for upstream connections.

    @param ca_file: extra PEM bundle trusted besides the platform's roots
        (a corporate TLS-inspecting proxy, a test CA).
    @param skip_verify: no certificate checks at all (C{SKIP_TLS_VERIFY}).
    """
    from hubproxy.upstream.tls import make_tls_policy

    return make_tls_policy(ca_file, skip_verify)


def make_client(
    reactor: Any,
    *,
    policy: AddressPolicy,
    overrides: Mapping[str, str],
    trusted_bases: Iterable[str],
    connect_timeout: float,
    response_timeout: float,
    idle_timeout: float,
    https_policy: Any = None,
    tunnel: Any = None,
    on_request: Callable[[str, str, int | None, float], None] | None = None,
) -> tuple[UpstreamClient, list[HTTPConnectionPool]]:
    """
    Build the production client: two pooled agents (trusted and guarded)
    over real endpoints.  Returns the pools so the service can close them.
    """
    import treq

    from hubproxy.upstream.endpoints import EndpointFactory

    if https_policy is None:
        https_policy = BrowserLikePolicyForHTTPS()
    pools = []
    clients = []
    for allowed in (None, policy.allows_text):
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 16
        pool.cachedConnectionTimeout = 90
        pool.retryAutomatically = True
        pools.append(pool)
        factory = EndpointFactory(reactor, https_policy, connect_timeout, allowed=allowed, tunnel=tunnel)
        agent = Agent.usingEndpointFactory(reactor, factory, pool=pool)
        jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        # treq annotates IndexableCookieJar but only iterates the jar and calls
        # set_cookie, which any CookieJar supports.
        clients.append(treq.client.HTTPClient(IdentityAgent(agent), cookiejar=jar))  # type: ignore[arg-type]
    client = UpstreamClient(
        clock=reactor,
        http_trusted=clients[0],
        http_guarded=clients[1],
        policy=policy,
        overrides=overrides,
        trusted_bases=trusted_bases,
        response_timeout=response_timeout,
        idle_timeout=idle_timeout,
        on_request=on_request,
    )
    return client, pools
