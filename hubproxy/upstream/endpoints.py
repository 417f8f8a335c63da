# -*- test-case-name: hubproxy.test.test_client -*-
"""
Where upstream connections go: one endpoint per request URI.

The agent asks L{EndpointFactory.endpointForURI} for every new connection.
Two things happen here rather than in the agent:

 - the address check for URLs derived from outside (client paths, redirect
   targets, auth realms).  It runs on the addresses the name actually
   resolved to, at connect time, so a host name that resolves to a private
   address (or flips to one: DNS rebinding) is refused even though the name
   itself looked harmless;
 - TLS, layered on the TCP or tunnel endpoint with the *host name* for SNI
   and certificate verification.

With an upstream proxy (C{[access] proxy}, L{hubproxy.upstream.tunnels})
the tunnel endpoint replaces the TCP one for every host not in C{noProxy},
for both agents.  The proxy resolves the name, so the connect-time address
check above cannot see where a derived URL's host name points: behind a
proxy the gate is the host-name allowlist plus the literal-IP check of
L{hubproxy.upstream.policy.check_outside_url} (which still runs), and the
upstream proxy itself is trusted not to reach what it must not.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer, providedBy, directlyProvides

from hubproxy.errors import BadGateway

AddressFilter = Callable[[str], bool]

#: Bytes asked of the kernel per C{recv()} on upstream TCP connections.
#: Twisted reads 64 KiB at a time; reading 256 KiB per call measured +16 %
#: single-stream blob throughput and -15 % CPU per GB relayed (bench/run,
#: "hubproxy+reads256k", bench/results/latest.md).  The relay still hands
#: the client 64 KiB or more per write and pauses the upstream the same way.
#: Only client-side (upstream) sockets: for server-side sockets Twisted uses
#: the same attribute as the write buffer's high-water mark, and raising it
#: there made the relay slower.
UPSTREAM_READ_SIZE = 256 * 1024


class BlockedAddress(BadGateway):
    """
    Every address a host name resolved to is outside the allowed networks.
    """


@implementer(IResolutionReceiver)
class _FilteringReceiver:
    def __init__(self, inner: IResolutionReceiver, allowed: AddressFilter, blocked: list[str]) -> None:
        self._inner = inner
        self._allowed = allowed
        self._blocked = blocked

    def resolutionBegan(self, resolution: Any) -> None:
        self._inner.resolutionBegan(resolution)

    def addressResolved(self, address: Any) -> None:
        host = getattr(address, "host", None)
        if host is not None and self._allowed(host):
            self._inner.addressResolved(address)
        else:
            self._blocked.append(str(host))

    def resolutionComplete(self) -> None:
        self._inner.resolutionComplete()


@implementer(IHostnameResolver)
class _FilteringResolver:
    def __init__(self, inner: IHostnameResolver, allowed: AddressFilter) -> None:
        self._inner = inner
        self._allowed = allowed
        self.blocked: list[str] = []

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.resolveHostName(
            _FilteringReceiver(resolutionReceiver, self._allowed, self.blocked), hostName, *args, **kwargs
        )


class _FilteringReactor:
    """
    A reactor proxy whose name resolver drops addresses the policy refuses.

    HostnameEndpoint resolves through C{reactor.nameResolver}; everything
    else (connectTCP, callLater) goes to the real reactor.
    """

    def __init__(self, reactor: Any, resolver: _FilteringResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver
        directlyProvides(self, *list(providedBy(reactor)), IReactorPluggableNameResolver)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IStreamClientEndpoint)
class _GuardedEndpoint:
    """
    Connects through a filtering resolver and explains refusals.
    """

    def __init__(self, reactor: Any, host: str, port: int, allowed: AddressFilter, timeout: float) -> None:
        self._host = host
        self._resolver = _FilteringResolver(reactor.nameResolver, allowed)
        self._endpoint = HostnameEndpoint(_FilteringReactor(reactor, self._resolver), host, port, timeout=timeout)

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        d = self._endpoint.connect(protocolFactory)

        def explain(failure: Any) -> Any:
            if failure.check(error.DNSLookupError) and self._resolver.blocked:
                raise BlockedAddress(
                    f"upstream host {self._host} resolves only to addresses this proxy may not reach"
                    f" ({', '.join(sorted(set(self._resolver.blocked)))})"
                )
            return failure

        return d.addErrback(explain)


@implementer(IStreamClientEndpoint)
class _LargeReads:
    """
    A TCP endpoint whose connections read L{UPSTREAM_READ_SIZE} bytes per
    C{recv()}: fewer system calls and fewer trips through the protocol stack
    (TLS, HTTP parser, relay) per megabyte of blob.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        def enlarge(protocol: Any) -> Any:
            transport = getattr(protocol, "transport", None)
            # tcp.Client reads self.bufferSize per recv(); other transports
            # (a tunnel's, a test's) are left alone.
            if transport is not None and isinstance(getattr(transport, "bufferSize", None), int):
                transport.bufferSize = UPSTREAM_READ_SIZE
            return protocol

        return self._endpoint.connect(protocolFactory).addCallback(enlarge)


@implementer(IAgentEndpointFactory)
class EndpointFactory:
    """
    Builds the endpoint for each upstream URI.

    @param allowed: if given, a predicate over resolved IP address strings;
        connections to anything it refuses fail with L{BlockedAddress}.
        C{None} means the URIs are trusted (written in the configuration).
    @param tunnel: optional callable C{(host, port) -> endpoint | None}
        that routes the connection through an upstream proxy (SOCKS5 or
        HTTP CONNECT); see L{hubproxy.upstream.tunnels}.
    """

    def __init__(
        self,
        reactor: Any,
        tls_policy: IPolicyForHTTPS,
        connect_timeout: float,
        allowed: AddressFilter | None = None,
        tunnel: Callable[[str, int], IStreamClientEndpoint | None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._timeout = connect_timeout
        self._allowed = allowed
        self._tunnel = tunnel

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = uri.port
        endpoint: IStreamClientEndpoint | None = None
        if self._tunnel is not None:
            endpoint = self._tunnel(host, port)
        if endpoint is None:
            if self._allowed is not None:
                endpoint = _GuardedEndpoint(self._reactor, host, port, self._allowed, self._timeout)
            else:
                endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._timeout)
            endpoint = _LargeReads(endpoint)
        if uri.scheme == b"https":
            creator = self._tls_policy.creatorForNetloc(uri.host, port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint
