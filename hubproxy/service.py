# -*- test-case-name: hubproxy.test.test_tap -*-
"""
Wiring: config + reactor -> upstream client, resource tree, site, services.

Kept apart from L{hubproxy.tap} (option parsing) so tests and the C{.tac}
build exactly what twistd builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from hubproxy.acl import NetworkSet
from hubproxy.config import Config
from hubproxy.site import App, HubproxySite, make_root, make_site
from hubproxy.tap import DrainService, PoolService
from hubproxy.upstream.client import UpstreamClient, make_client
from hubproxy.upstream.policy import AddressPolicy
from hubproxy.upstream.tls import make_tls_policy
from hubproxy.upstream.tunnels import Tunnel, make_tunnel

log = Logger(namespace="hubproxy")


@dataclass
class Parts:
    app: App
    site: HubproxySite
    factory: Any
    services: list[service.IService] = field(default_factory=list)


def trusted_bases(config: Config) -> list[str]:
    """
    Base URLs written in the configuration: trusted as written.
    """
    return [r.upstream for r in config.registries.values()] + list(config.upstreams.values())


def build_tunnel(config: Config, reactor: Any) -> Tunnel | None:
    """
    The upstream proxy (C{[access] proxy} minus C{noProxy}), or C{None}.

    With a proxy, the proxy resolves upstream names: the connect-time
    address filter cannot see where a derived URL's host name points, so
    the host-name allowlist and the literal-IP check are the gate and the
    proxy is trusted (see L{hubproxy.upstream.tunnels}).
    """
    tunnel = make_tunnel(reactor, config.access.proxy, config.access.no_proxy, config.network.connect_timeout)
    if tunnel is not None:
        log.info(
            "upstream proxy {proxy} for all upstream connections{bypass}",
            proxy=tunnel.proxy.display,
            bypass=f" except noProxy {list(config.access.no_proxy)}" if config.access.no_proxy else "",
        )
    return tunnel


def build_client(config: Config, reactor: Any) -> tuple[UpstreamClient, list[Any]]:
    policy = AddressPolicy(NetworkSet(config.network.allow_networks))
    if config.network.ca_file and not config.skip_tls_verify:
        log.info("upstream TLS: trusting the platform roots plus {ca_file}", ca_file=config.network.ca_file)
    return make_client(
        reactor,
        policy=policy,
        overrides=config.upstreams,
        trusted_bases=trusted_bases(config),
        connect_timeout=config.network.connect_timeout,
        response_timeout=config.network.response_timeout,
        idle_timeout=config.network.idle_timeout,
        https_policy=make_tls_policy(config.network.ca_file, config.skip_tls_verify),
        tunnel=build_tunnel(config, reactor),
    )


def build_services(config: Config, reactor: Any) -> Parts:
    client, pools = build_client(config, reactor)
    app = App(config=config, client=client, clock=reactor, started_at=reactor.seconds())
    if config.skip_tls_verify:
        warning = "SKIP_TLS_VERIFY=true: upstream TLS certificates are NOT verified"
        app.warnings.append(warning)
        log.warn("{warning}", warning=warning)
    root = make_root(app)
    site = make_site(root, config)
    services: list[service.IService] = [PoolService(pools), DrainService(root.in_flight, config.server.shutdown_grace, reactor)]
    services.extend(app.extras.get("services", []))
    return Parts(app=app, site=site, factory=site, services=services)
