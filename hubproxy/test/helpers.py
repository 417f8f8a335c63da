"""
In-memory harness: the real resource tree, driven by one StubTreq, talking
to a fake upstream tree through another (style.md P15).  No sockets, no
sleeps; time is a L{Clock}.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from hubproxy.acl import NetworkSet
from hubproxy.config import Config, load_config
from hubproxy.site import App, Root, make_root
from hubproxy.upstream.client import UpstreamClient
from hubproxy.upstream.policy import AddressPolicy

MINIMAL_TOML = """
[server]
port = 5000
"""


def load_test_config(toml_text: str = MINIMAL_TOML) -> Config:
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as f:
        f.write(toml_text)
    try:
        config, _ = load_config(path, environ={})
    finally:
        os.unlink(path)
    return config


class Harness:
    """
    A proxy built from C{toml_text} whose upstream is C{upstream_root}.
    """

    def __init__(self, upstream_root: Resource, toml_text: str = MINIMAL_TOML, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.config = load_test_config(toml_text)
        self.upstream = StubTreq(upstream_root)
        policy = AddressPolicy(NetworkSet(self.config.network.allow_networks))
        self.client = UpstreamClient(
            clock=self.clock,
            http_trusted=self.upstream,
            policy=policy,
            overrides=self.config.upstreams,
            trusted_bases=[r.upstream for r in self.config.registries.values()],
            response_timeout=self.config.network.response_timeout,
            idle_timeout=self.config.network.idle_timeout,
        )
        self.app = App(config=self.config, client=self.client, clock=self.clock, started_at=self.clock.seconds())
        self.root: Root = make_root(self.app)
        self.proxy = StubTreq(self.root)

    def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            self.upstream.flush()
            self.clock.advance(0)
            self.proxy.flush()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """
        Send a request to the proxy and run everything to completion;
        returns (response, body).
        """
        d = self.proxy.request(method, "http://proxy.test" + path, **kwargs)
        self.settle()
        response = _result(d)
        body_d = response.content()
        self.settle()
        return response, _result(body_d)


def _result(d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has no result yet")
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


class Recorder(Resource):
    """
    Base for fake upstreams: records each request's method, host, path and
    headers so tests can assert what the proxy sent.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def record(self, request: Request) -> dict[str, Any]:
        entry = {
            "method": request.method.decode(),
            "host": (request.getHeader(b"host") or b"").decode(),
            "uri": request.uri.decode(),
            "path": request.path.decode(),
            "headers": {k.decode().lower(): [v.decode("latin-1") for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()},
            "body": request.content.read() if request.content is not None else b"",
        }
        self.seen.append(entry)
        return entry
