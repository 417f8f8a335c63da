# -*- test-case-name: hubproxy.test.test_tap -*-
"""
twistd glue: C{twistd -n hubproxy --config config.toml}.

This is the only module that touches the global reactor.  Options parsing
loads and validates the configuration *before* twistd binds anything, so a
bad config prints one line naming the key and exits with status 1.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from hubproxy import __version__
from hubproxy.config import Config, ConfigError, load_config

log = Logger(namespace="hubproxy")


class Options(usage.Options):
    synopsis = "[--config config.toml]"
    longdesc = (
        "Run hubproxy: a registry mirror and GitHub / Hugging Face download "
        "proxy.  Without --config, $HUBPROXY_CONFIG, else ./config.toml, "
        "else built-in defaults are used."
    )
    optParameters = [
        ["config", "c", None, "Path to the TOML configuration file."],
    ]

    config_obj: Config
    warnings: list[str]

    def postOptions(self) -> None:
        try:
            self.config_obj, self.warnings = load_config(self["config"])
        except ConfigError as e:
            # One clear line and exit 1; twistd's usage dump would bury it.
            sys.stderr.write(f"{e}\n")
            sys.stderr.flush()
            raise SystemExit(1)


def listen_description(host: str, port: int) -> str:
    """
    A strports description for the plain listener (IPv6 colons escaped).
    """
    interface = host.replace(":", r"\:")
    return f"tcp:{port}:interface={interface}"


class DrainService(service.Service):
    """
    On stop (SIGTERM), waits for requests in flight, at most C{grace}
    seconds.  The listening ports stop at the same time, so no new work
    arrives while we wait.
    """

    def __init__(self, in_flight: Any, grace: float, clock: Any) -> None:
        self._in_flight = in_flight
        self._grace = grace
        self._clock = clock

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._in_flight.count:
            log.info("draining {count} request(s), up to {grace}s", count=self._in_flight.count, grace=self._grace)
        d = self._in_flight.idle()
        if self._grace > 0:
            d.addTimeout(self._grace, self._clock)
        else:
            d.cancel()

        def done(result: Any) -> None:
            if self._in_flight.count:
                log.warn("shutdown grace over with {count} request(s) still running", count=self._in_flight.count)

        return d.addBoth(done)


class PoolService(service.Service):
    """
    Closes pooled upstream connections on stop.
    """

    def __init__(self, pools: list[Any]) -> None:
        self._pools = pools

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        return defer.DeferredList([p.closeCachedConnections() for p in self._pools])


def _clean_exit_on_sigterm(reactor: Any) -> None:
    import signal

    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    """
    Build the whole service from validated options.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    from hubproxy.service import build_services

    config = options.config_obj
    for warning in options.warnings:
        log.warn("{warning}", warning=warning)
    top = service.MultiService()
    # twistd re-raises SIGTERM after shutdown, so the exit status would be
    # -15; a drained SIGTERM is a clean stop, and the contract says exit 0.
    reactor.addSystemEventTrigger("after", "shutdown", _clean_exit_on_sigterm, reactor)
    parts = build_services(config, reactor)
    for svc in parts.services:
        svc.setServiceParent(top)
    listener = strports.service(listen_description(config.server.host, config.server.port), parts.factory)
    listener.setServiceParent(top)
    log.info(
        "hubproxy {version} listening on {host}:{port} (config: {source})",
        version=__version__,
        host=config.server.host,
        port=config.server.port,
        source=config.source,
    )
    return top
