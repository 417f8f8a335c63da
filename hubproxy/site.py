# -*- test-case-name: hubproxy.test.test_site -*-
"""
Builds the resource tree and the Site around it.

The request's path through the code follows its path through the system:
L{HubproxySite} (access log, in-flight count) -> L{Root} (the guard's choke
point, then routing by first path segment) -> a leaf resource -> the
upstream client -> the relay back.  Everything is built from the config and
injected objects, so tests build the real tree with fakes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Callable, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from hubproxy import __version__
from hubproxy.config import Config
from hubproxy.errors import NotFound, style_for_path
from hubproxy.handler import ErrorLeaf
from hubproxy.http2 import install as install_http2
from hubproxy.logs import AccessLog
from hubproxy.upstream.client import UpstreamClient


@dataclass
class App:
    """
    What every resource may need, built once per service.

    @ivar extras: optional components added by feature modules (caches,
        metrics, rate limiter) keyed by name, so the core does not import
        every feature.
    """

    config: Config
    client: UpstreamClient
    clock: IReactorTime
    started_at: float
    extras: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


SERVER = f"hubproxy/{__version__}".encode()


class InFlight:
    """
    Counts requests in progress, so shutdown can wait for them.
    """

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[defer.Deferred[None]] = []

    def started(self, request: Request) -> None:
        self.count += 1
        request.notifyFinish().addBoth(self._ended)

    def _ended(self, _: Any) -> None:
        self.count -= 1
        if self.count == 0:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def idle(self) -> defer.Deferred[None]:
        """
        Fires when no request is in progress.
        """
        if self.count == 0:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d


class Ready(Resource):
    """
    C{GET /ready}: liveness and version, for load balancers and probes.
    Never rate limited, never touches an upstream.
    """

    isLeaf = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def render_GET(self, request: Request) -> bytes:
        uptime = self._app.clock.seconds() - self._app.started_at
        body = {
            "ready": True,
            "status": "ok",
            "service": "hubproxy",
            "version": __version__,
            "start_time_unix": int(self._app.started_at),
            "uptime_sec": round(uptime, 3),
        }
        if self._app.warnings:
            body["warnings"] = list(self._app.warnings)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode() + b"\n"


class Root(Resource):
    """
    The choke point: every request passes C{guard} first, then is routed by
    its first path segment; whatever no route claims goes to the fallback
    (the URL-prefix file proxy).

    @param guard: C{(request, segment) -> Resource | None}; a resource
        refuses the request, C{None} lets it pass.
    """

    def __init__(
        self,
        routes: dict[bytes, Resource],
        fallback: Resource | None,
        guard: Callable[[Request, bytes], Resource | None] | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        super().__init__()
        self._routes = routes
        self._fallback = fallback
        self._guard = guard
        self.in_flight = in_flight or InFlight()
        self.metrics: Any = None

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        # Say what answers, not which framework version (twisted.web sets
        # "TwistedWeb/<version>" before traversal).
        request.setHeader(b"server", SERVER)
        self.in_flight.started(request)
        if self.metrics is not None:
            metrics = self.metrics
            request.notifyFinish().addBoth(lambda _: metrics.observe_request(request))
        if self._guard is not None:
            refusal = self._guard(request, path)
            if refusal is not None:
                return refusal
        child = self._routes.get(path)
        if child is not None:
            return child
        if self._fallback is not None:
            # The fallback reads the whole URI itself (/https://host/...).
            # Both set by Request.process before traversal.
            assert request.postpath is not None and request.prepath is not None
            request.postpath.insert(0, request.prepath.pop())
            return self._fallback
        return ErrorLeaf(NotFound("not found"), style_for_path(request.path))

    def render(self, request: Request) -> Any:
        # Only reached for a request with an empty path, which HTTP forbids.
        return ErrorLeaf(NotFound("not found"), "text").render(request)


def intercept_first_bytes(channel: Any, decide: Callable[[Any, bytes, Callable[[bytes], None]], bool]) -> Any:
    """
    Route a new connection's incoming bytes through C{decide(transport,
    data, forward)} until it returns C{True}; after that they go straight
    to C{channel}.  C{forward} hands bytes to the channel as it was built.

    For looking at what a client sends first (a TLS ClientHello on the plain
    port, the HTTP/2 preface, an C{Upgrade: h2c} request) before twisted.web
    does.  While C{decide} runs, bytes the channel is fed re-entrantly go
    straight through too (an h2c upgrade switches the channel that way).
    """
    forward, connect = channel.dataReceived, channel.makeConnection
    state: dict[str, Any] = {"transport": None, "decided": False}

    def makeConnection(transport: Any) -> None:
        state["transport"] = transport
        connect(transport)

    def dataReceived(data: bytes) -> None:
        if state["decided"]:
            forward(data)
            return
        state["decided"] = True
        state["decided"] = decide(state["transport"], data, forward)

    channel.makeConnection = makeConnection
    channel.dataReceived = dataReceived
    return channel


class HubproxySite(Site):
    """
    A Site that writes its access lines through L{AccessLog} (batched,
    text or JSON) instead of CLF lines, shows no tracebacks, and exposes the
    in-flight counter.
    """

    displayTracebacks = False

    def __init__(self, root: Root, *, access_log: AccessLog | None = None, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.access_log = access_log
        self.in_flight = root.in_flight
        self.metrics = root.metrics

    def buildProtocol(self, addr: Any) -> Any:
        """
        Answer a TLS ClientHello on a plain-HTTP port at once (as Go's
        net/http does) instead of waiting for a line that never comes:
        skopeo and podman with C{--tls-verify=false} try HTTPS first and
        would otherwise sit out a 10 s handshake timeout on every call.
        """
        channel = super().buildProtocol(addr)
        if channel is None:
            return None

        def decide(transport: Any, data: bytes, forward: Callable[[bytes], None]) -> bool:
            if data[:1] == b"\x16":
                transport.write(
                    b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n"
                    b"Client sent an HTTPS request to a plain HTTP port.\n"
                )
                transport.loseConnection()
            else:
                forward(data)
            return True

        return intercept_first_bytes(channel, decide)

    def log(self, request: Request) -> None:  # type: ignore[override]
        if self.access_log is None:
            return
        resolved = getattr(request, "_hubproxy_client", None)
        self.access_log.record(
            str(resolved) if resolved else getattr(request.getClientAddress(), "host", "-"),
            request.method.decode("latin-1"),
            request.uri.decode("latin-1")[:2048],
            request.clientproto.decode("latin-1"),
            request.code,
            request.sentLength,
            (request.getHeader(b"user-agent") or b"").decode("latin-1")[:256],
        )


def make_site(
    root: Root, config: Config, clock: IReactorTime | None = None, stream: IO[str] | None = None
) -> HubproxySite:
    """
    The Site for C{root}; access lines (C{[log] accessLog}) go to C{stream},
    standard output by default, batched on C{clock}.
    """
    # HTTP/2 connections (TLS ALPN or h2c) with socket backpressure reaching
    # the streams (hubproxy.http2).
    install_http2()
    if clock is None:
        from twisted.internet import reactor as clock  # type: ignore[no-redef]
    access_log = None
    if config.log.access_log:
        # clock is the global reactor here when it was None.
        access_log = AccessLog(stream if stream is not None else sys.stdout, cast(IReactorTime, clock), json_lines=config.log.format == "json")
    return HubproxySite(root, access_log=access_log, reactor=clock)


def make_root(app: App) -> Root:
    """
    Build the resource tree for C{app}.

    Feature modules register their resources here and nowhere else, so the
    whole HTTP surface of hubproxy can be read in this one function.
    """
    from hubproxy.guard import make_guard
    from hubproxy.metrics import Metrics, MetricsResource

    metrics = app.extras.get("metrics")
    if metrics is None:
        metrics = app.extras["metrics"] = Metrics()
    app.client.on_request = metrics.observe_upstream
    in_flight = InFlight()
    routes: dict[bytes, Resource] = {b"ready": Ready(app), b"metrics": MetricsResource(metrics, lambda: in_flight.count)}
    fallback: Resource | None = None
    try:
        from hubproxy.registry.resource import make_registry_resources
    except ImportError:  # pragma: no cover - during staged development
        make_registry_resources = None  # type: ignore[assignment]
    if make_registry_resources is not None:
        routes.update(make_registry_resources(app))
    try:
        from hubproxy.files.resource import FileProxy
    except ImportError:  # pragma: no cover
        FileProxy = None  # type: ignore[assignment,misc]
    if FileProxy is not None:
        fallback = FileProxy(app)
    try:
        from hubproxy.tools.resource import make_tool_resources
    except ImportError:  # pragma: no cover
        make_tool_resources = None  # type: ignore[assignment]
    if make_tool_resources is not None:
        routes.update(make_tool_resources(app))
    root = Root(routes, fallback, guard=make_guard(app), in_flight=in_flight)
    root.metrics = metrics
    return root
