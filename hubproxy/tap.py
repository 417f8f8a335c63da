# -*- test-case-name: hubproxy.test.test_tap -*-
"""
twistd glue: C{twistd -n hubproxy --config config.toml}.

This is the only module that touches the global reactor.  Options parsing
loads and validates the configuration *before* twistd binds anything, so a
bad config prints one line naming the key and exits with status 1.
"""

from __future__ import annotations

import re
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
            tls = self.config_obj.server.tls
            if tls.enabled:
                # Load the certificate now: a bad one is a config error,
                # reported before anything is bound.
                try:
                    tls_options(tls.cert, tls.key)
                except ValueError as e:
                    raise ConfigError(self.config_obj.source, "server.tls", str(e)) from None
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


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def tls_options(cert_path: str, key_path: str) -> Any:
    """
    Server TLS options from PEM files (the certificate file may hold the
    chain after the leaf), offering HTTP/2 and HTTP/1.1 by ALPN.

    twisted.web's HTTP factory switches a connection to HTTP/2 when ALPN
    chose C{h2}; the C{ssl:} strports description cannot set ALPN, hence
    this.

    @raise ValueError: unreadable files, no certificate, a key that does
        not match the certificate.
    """
    from OpenSSL import SSL, crypto
    from twisted.internet import ssl
    from twisted.web.http import H2_ENABLED

    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {e.filename}: {e.strerror}") from None
    blocks = _PEM_CERT.findall(cert_pem)
    if not blocks:
        raise ValueError(f"{cert_path}: no PEM certificate in the file")
    try:
        certs = [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]
    except crypto.Error as e:
        raise ValueError(f"{cert_path}: not a valid PEM certificate ({e})") from None
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error:
        raise ValueError(f"{key_path}: not a valid unencrypted PEM private key") from None
    protocols = [b"h2", b"http/1.1"] if H2_ENABLED else [b"http/1.1"]
    options = ssl.CertificateOptions(
        privateKey=key,
        certificate=certs[0],
        extraCertChain=certs[1:],
        acceptableProtocols=protocols,
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise ValueError(f"certificate and key do not match or cannot be used ({e})") from None
    return options


def listener(config: Any, factory: Any, reactor: Any) -> service.Service:
    """
    The listening service: HTTPS (HTTP/2 by ALPN) when C{[server] tls} is
    set, else plain HTTP (with cleartext HTTP/2 when C{enableH2C}).
    """
    from twisted.web.http import H2_ENABLED

    server = config.server
    if server.tls.enabled:
        from twisted.application.internet import StreamServerEndpointService
        from twisted.internet.endpoints import SSL4ServerEndpoint

        endpoint = SSL4ServerEndpoint(reactor, server.port, tls_options(server.tls.cert, server.tls.key), interface=server.host)
        return StreamServerEndpointService(endpoint, factory)
    if server.enable_h2c:
        if H2_ENABLED:
            from hubproxy.h2c import H2CFactory

            factory = H2CFactory(factory)
        else:  # pragma: no cover - twisted[http2] is a dependency
            log.warn("enableH2C is set but the h2 package is missing: serving HTTP/1.1 only")
    return strports.service(listen_description(server.host, server.port), factory)


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
    if parts.site.access_log is not None:
        # the last batch of access lines, after the drain
        reactor.addSystemEventTrigger("after", "shutdown", parts.site.access_log.flush)
    for svc in parts.services:
        svc.setServiceParent(top)
    listener(config, parts.factory, reactor).setServiceParent(top)
    if config.server.tls.enabled:
        serving = "HTTPS (HTTP/2 and HTTP/1.1 by ALPN)"
    elif config.server.enable_h2c:
        serving = "HTTP/1.1 and cleartext HTTP/2 (prior knowledge)"
    else:
        serving = "HTTP/1.1"
    log.info(
        "hubproxy {version} listening on {host}:{port}, {serving} (config: {source})",
        version=__version__,
        host=config.server.host,
        port=config.server.port,
        serving=serving,
        source=config.source,
    )
    return top
