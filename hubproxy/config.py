# -*- test-case-name: hubproxy.test.test_config -*-
"""
The configuration: one TOML file, environment overrides, one immutable value.

Why it looks like this:

 - B{Immutable objects.}  Every section is a frozen, slotted dataclass holding
   only tuples, strings, numbers, networks and read-only mappings
   (L{types.MappingProxyType}).  The whole tree is built once at start-up and
   then handed to every resource, the rate limiter and the upstream client;
   since nobody can change it, they can share it without copies or locks, and
   a test can build one and be sure it stays what it built.
 - B{Everything is checked here, before anything starts.}  A bad value is a
   L{ConfigError} whose text is exactly one line, C{<file>: <dotted.key>:
   <reason>}.  twistd's option parsing prints that line and exits with status
   1 I{before any port is bound} (the Go version printed a message and exited
   0, or silently skipped bad entries).  Nothing later has to re-validate.
 - B{Unknown keys are warnings, not errors.}  A typo (C{prot = 5000}) must be
   visible, so every unknown key produces a warning (with a "did you mean"
   suggestion); it does not stop the service, as old configs carry keys we
   no longer read.  Keys differing only in case are accepted, because the Go
   TOML decoder matched struct fields case-insensitively, but with a warning.
 - B{Compatible with the Go hubproxy.}  Every key of its C{config.toml} loads
   unchanged (camelCase names, C{defaultTTL = "20m"}, a top-level C{proxy}),
   the same environment variables override the file, and C{[registries]} are
   merged into the built-in defaults key by key.  Differences, on purpose: a
   single IPv6 address in an address list is a /128 (Go made it a /32); bad
   list entries are errors rather than skipped; a registry table that does
   not say C{enabled} is enabled (Go's zero value silently disabled it).

No global state: L{load_config} reads what it is given (a path, a mapping of
environment variables) and returns the configuration plus the warnings; the
caller decides how to report them.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
import types
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

__all__ = [
    "AccessConfig",
    "Config",
    "ConfigError",
    "DownloadConfig",
    "GithubConfig",
    "IPNetwork",
    "LogConfig",
    "MetricsConfig",
    "NetworkConfig",
    "RateLimitConfig",
    "RegistryConfig",
    "SecurityConfig",
    "ServerConfig",
    "TLSConfig",
    "TokenCacheConfig",
    "default_config",
    "load_config",
    "parse_duration",
]

IPNetwork = IPv4Network | IPv6Network

DEFAULTS_SOURCE = "<defaults>"
ENVIRONMENT_SOURCE = "environment"
DEFAULT_PATH = "config.toml"
CONFIG_ENV = "HUBPROXY_CONFIG"


class ConfigError(Exception):
    """
    The configuration cannot be used.

    C{str(e)} is one line, C{'<file>: <dotted.key>: <reason>'}, e.g.
    C{'config.toml: server.port: expected an integer 1-65535, got "abc"'};
    for errors about the file itself there is no key
    (C{'conf.toml: file not found'}).  For environment overrides the file is
    C{environment} and the key is the variable name.

    @ivar source: the file (or C{environment}).
    @ivar key: the dotted key or variable name, or L{None}.
    @ivar reason: what is wrong, one sentence.
    """

    def __init__(self, source: str, key: str | None, reason: str) -> None:
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        parts = [self.source] if self.key is None else [self.source, self.key]
        return ": ".join([*parts, self.reason])


# ---------------------------------------------------------------------------
# The configuration objects


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """
    Serve HTTPS directly (C{[server] tls = { cert, key }}): PEM file paths.
    """

    cert: str = ""
    key: str = ""

    @property
    def enabled(self) -> bool:
        """
        Both files given (the loader refuses one without the other).
        """
        return bool(self.cert and self.key)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """
    C{[server]}: the listener and limits of one response.

    @ivar file_size: max bytes of one file-proxy (GitHub/HF) response.
    @ivar shutdown_grace: seconds transfers in flight may take after SIGTERM.
    @ivar public_url: origin (C{https://proxy.example}, no trailing slash)
        used when rewriting scripts and Locations; empty means "derive it
        from the request".
    """

    host: str = "0.0.0.0"
    port: int = 5000
    file_size: int = 2147483648
    enable_h2c: bool = False
    enable_frontend: bool = True
    tls: TLSConfig = field(default_factory=TLSConfig)
    shutdown_grace: float = 30.0
    public_url: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """
    C{[rateLimit]}: a token bucket of C{request_limit} per client, refilled
    over C{period_hours}.  C{request_limit == 0} means whitelist-only.
    """

    request_limit: int = 500
    period_hours: float = 3.0


_LOOPBACK_PROXIES: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """
    C{[security]}: client address lists.

    @ivar white_list: never rate limited.
    @ivar black_list: refused with 403.
    @ivar trusted_proxies: peers allowed to set X-Forwarded-For / X-Real-IP.
    """

    white_list: tuple[IPNetwork, ...] = ()
    black_list: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = _LOOPBACK_PROXIES


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """
    C{[access]}: which images / repositories may be fetched, and how.

    @ivar white_list: patterns (trimmed, lower-case); empty allows all.
    @ivar black_list: patterns refused (wins over the white list).
    @ivar proxy: upstream proxy URL (C{socks5://...}, C{http://...}) or C{""}.
    @ivar no_proxy: hosts (C{host[:port]}), C{.suffix}es (C{*.suffix} is
        stored as C{.suffix}), IPs, CIDRs or C{*} reached directly
        (lower-case).
    """

    white_list: tuple[str, ...] = ()
    black_list: tuple[str, ...] = ()
    proxy: str = ""
    no_proxy: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    """
    C{[download]}: offline image tars.
    """

    max_images: int = 10


@dataclass(frozen=True, slots=True)
class TokenCacheConfig:
    """
    C{[tokenCache]}: upstream token and manifest caching.

    @ivar default_ttl: manifest TTL for ordinary tags, in seconds.
    """

    enabled: bool = True
    default_ttl: float = 1200.0


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """
    One C{[registries."<name>"]} table.

    @ivar name: the table key, the name clients put in paths (lower-case).
    @ivar upstream: normalised base URL (C{https://ghcr.io},
        C{http://127.0.0.1:5001}): scheme and host lower-case, no default
        port, no trailing slash.
    @ivar auth_host: kept for compatibility; the upstream's challenge decides.
    @ivar auth_type: a label (C{docker}, C{github}, C{anonymous}...).
    @ivar username: optional upstream credentials (both or neither).
    """

    name: str
    upstream: str
    auth_host: str = ""
    auth_type: str = "anonymous"
    enabled: bool = True
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        """
        The C{host[:port]} of L{upstream}.
        """
        return urlsplit(self.upstream).netloc


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """
    C{[network]}: where upstream connections may go and how long they may take.

    @ivar allow_networks: private ranges that derived URLs may still reach.
    @ivar connect_timeout: seconds to establish a connection.
    @ivar response_timeout: seconds from request to response headers.
    @ivar idle_timeout: seconds without a byte mid-body.
    @ivar ca_file: extra PEM bundle of CA certificates trusted for upstream
        TLS besides the platform's roots (a corporate TLS-inspecting proxy,
        an internal registry's CA); C{""} for none.
    """

    allow_networks: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    idle_timeout: float = 120.0
    ca_file: str = ""


@dataclass(frozen=True, slots=True)
class GithubConfig:
    """
    C{[github]}: C{rewrite_scripts} makes proxied C{.sh}/C{.ps1} files point
    their GitHub URLs back at this proxy.
    """

    rewrite_scripts: bool = True


@dataclass(frozen=True, slots=True)
class LogConfig:
    """
    C{[log]}: C{access_log} on/off; C{format} is C{"text"} or C{"json"}.
    """

    access_log: bool = True
    format: str = "text"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """
    C{[metrics]}: C{public} exposes C{/metrics} to every client, not only
    loopback and whitelisted ones.
    """

    public: bool = False


def _registry(name: str, upstream_host: str, auth_host: str, auth_type: str) -> RegistryConfig:
    return RegistryConfig(name=name, upstream=f"https://{upstream_host}", auth_host=auth_host, auth_type=auth_type, enabled=True)


def _default_registries() -> tuple[RegistryConfig, ...]:
    return (
        _registry("docker.io", "registry-1.docker.io", "auth.docker.io/token", "docker"),
        _registry("ghcr.io", "ghcr.io", "ghcr.io/token", "github"),
        _registry("gcr.io", "gcr.io", "gcr.io/v2/token", "google"),
        _registry("quay.io", "quay.io", "quay.io/v2/auth", "quay"),
        _registry("registry.k8s.io", "registry.k8s.io", "registry.k8s.io", "anonymous"),
        _registry("mcr.microsoft.com", "mcr.microsoft.com", "mcr.microsoft.com", "anonymous"),
        _registry("nvcr.io", "nvcr.io", "nvcr.io", "anonymous"),
        _registry("docker.elastic.co", "docker.elastic.co", "docker.elastic.co", "anonymous"),
        _registry("public.ecr.aws", "public.ecr.aws", "public.ecr.aws", "anonymous"),
    )


def _default_registry_map() -> Mapping[str, RegistryConfig]:
    return types.MappingProxyType({r.name: r for r in _default_registries()})


def _empty_map() -> Mapping[str, str]:
    return types.MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """
    The whole configuration.

    @ivar source: the file it came from, or C{"<defaults>"}.
    @ivar registries: by name (lower-case), built-in defaults merged with the
        file, in that order.
    @ivar upstreams: public host (lower-case) -> normalised base URL to use
        instead.
    @ivar skip_tls_verify: upstream certificate checks off
        (C{SKIP_TLS_VERIFY=true}).
    """

    source: str = DEFAULTS_SOURCE
    server: ServerConfig = field(default_factory=ServerConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    token_cache: TokenCacheConfig = field(default_factory=TokenCacheConfig)
    registries: Mapping[str, RegistryConfig] = field(default_factory=_default_registry_map)
    upstreams: Mapping[str, str] = field(default_factory=_empty_map)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    github: GithubConfig = field(default_factory=GithubConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    skip_tls_verify: bool = False

    def enabled_registry(self, name: str) -> RegistryConfig | None:
        """
        The registry called C{name} (any case), if configured and enabled.
        """
        registry = self.registries.get(name.lower())
        if registry is None or not registry.enabled:
            return None
        return registry


def default_config() -> Config:
    """
    The built-in defaults (what runs when there is no file).
    """
    return Config()


# ---------------------------------------------------------------------------
# Durations

_DURATION_UNITS: Mapping[str, float] = types.MappingProxyType(
    {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
)
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """
    Parse a Go C{time.ParseDuration} string into seconds.

    Accepts an optional sign, then one or more C{<number><unit>} parts with
    units C{ns us µs ms s m h} and decimal numbers (C{"90s"}, C{"20m"},
    C{"1h30m"}, C{"1.5h"}, C{"500ms"}), or a bare C{"0"}.  No spaces, no
    exponents.

    @raise ValueError: anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r}")
    body = text
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not math.isfinite(total):
        raise ValueError(f"duration out of range: {text!r}")
    return sign * total


# ---------------------------------------------------------------------------
# Key paths and value descriptions

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: Sequence[str | int]) -> str:
    """
    C{("registries", "ghcr.io", "upstream")} -> C{registries."ghcr.io".upstream};
    integers are list indexes (C{security.whiteList[2]}).
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
        out = f"{out}.{text}" if out else text
    return out


def _quoted_key(dotted: str) -> str:
    """
    A dotted key in quotes for a warning: C{"server.prot"}, or single quotes
    when it holds double ones (C{'registries."ghcr.io".uptream'}).
    """
    return f"'{dotted}'" if '"' in dotted else f'"{dotted}"'


def _describe(value: object) -> str:
    """
    A short rendering of a TOML value for "got ..." in messages.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------------------
# The schema: known keys per table, for unknown-key warnings

_SECTIONS: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {
        "server": ("host", "port", "fileSize", "enableH2C", "enableFrontend", "tls", "shutdownGrace", "publicUrl"),
        "rateLimit": ("requestLimit", "periodHours"),
        "security": ("whiteList", "blackList", "trustedProxies"),
        "access": ("whiteList", "blackList", "proxy", "noProxy"),
        "download": ("maxImages",),
        "tokenCache": ("enabled", "defaultTTL"),
        "registries": (),
        "upstreams": (),
        "network": ("allowNetworks", "connectTimeout", "responseTimeout", "idleTimeout", "caFile"),
        "github": ("rewriteScripts",),
        "log": ("accessLog", "format"),
        "metrics": ("public",),
    }
)
_TOP_LEVEL_KEYS: tuple[str, ...] = tuple(_SECTIONS) + ("proxy",)
_TLS_KEYS: tuple[str, ...] = ("cert", "key")
_REGISTRY_KEYS: tuple[str, ...] = ("upstream", "authHost", "authType", "enabled", "username", "password")
_ALL_DOTTED: tuple[tuple[str, ...], ...] = tuple(
    [(section, key) for section, keys in _SECTIONS.items() for key in keys]
    + [("server", "tls", key) for key in _TLS_KEYS]
    + [("registries", "<name>", key) for key in _REGISTRY_KEYS]
    + [("proxy",)]
)

_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_PROXY_SCHEMES = ("http", "socks5", "socks5h")
_BOOL_WORDS: Mapping[str, bool] = types.MappingProxyType(
    {"true": True, "t": True, "1": True, "yes": True, "on": True, "false": False, "f": False, "0": False, "no": False, "off": False}
)
_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _int_range(minimum: int, maximum: int | None) -> str:
    if maximum is None:
        return f"an integer >= {minimum}"
    return f"an integer {minimum}-{maximum}"


def _split_host_port(text: str) -> tuple[str, int | None] | None:
    """
    C{host}, C{host:port}, C{[v6]} or C{[v6]:port} -> (host, port), or
    L{None} if it is not one of those.
    """
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or parts.username is not None or parts.password is not None:
        return None
    if parts.path or parts.query or parts.fragment or "?" in text or "#" in text:
        return None
    if text.endswith(":"):
        return None
    if port is not None and not 1 <= port <= 65535:
        return None
    return host, port


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.fullmatch(host) is not None


def _host_port_text(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _normalise_base_url(text: str, what: str = "a base URL") -> str:
    """
    Normalise a trusted base URL: a bare C{host[:port]} means https; a full
    URL must be http(s) with no credentials, no path (other than C{/}), no
    query or fragment.  Returns C{scheme://host[:port]}, lower-case, without
    the scheme's default port.

    @raise ValueError: with the reason, for L{ConfigError}.
    """
    value = text.strip()
    if not value:
        raise ValueError(f"expected {what}, got an empty string")
    if "://" not in value:
        value = f"https://{value}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{json.dumps(text)} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {json.dumps(parts.scheme)} (use https://host or http://host:port)")
    if "@" in parts.netloc:
        raise ValueError("credentials in the URL are not allowed")
    if parts.path not in ("", "/"):
        raise ValueError(f"path {json.dumps(parts.path)} not allowed (give only scheme://host[:port])")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("query or fragment not allowed (give only scheme://host[:port])")
    host = (parts.hostname or "").lower()
    if not host or not _valid_host(host):
        raise ValueError(f"{json.dumps(text)} has no valid host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    return f"{scheme}://{_host_port_text(host, port)}"


def _can_listen_on(host: str) -> bool:
    """
    Whether C{host} is an IP address, or a name that resolves (checked at
    load time, so a typo is one config error line, not a traceback after
    "listening on").
    """
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    try:
        return bool(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, UnicodeError):
        return False


def _check_proxy_url(text: str) -> str:
    """
    Validate an upstream proxy URL; C{""} means none.

    @raise ValueError: with the reason.
    """
    value = text.strip()
    if not value:
        return ""
    if "://" not in value:
        raise ValueError(f"{json.dumps(text)} is not a URL (use socks5://host:port or http://host:port)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{json.dumps(text)} is not a valid URL") from None
    if parts.scheme.lower() not in _PROXY_SCHEMES:
        raise ValueError(f"unsupported scheme {json.dumps(parts.scheme)} (use socks5:// or http://)")
    if not parts.hostname or not _valid_host(parts.hostname.lower()):
        raise ValueError(f"{json.dumps(text)} has no valid host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{json.dumps(text)} must be only scheme://[user:pass@]host:port")
    # what the tunnel itself will refuse at start (SOCKS5 credential sizes...)
    from hubproxy.upstream.tunnels import parse_proxy_url

    parse_proxy_url(value)
    return value


def _parse_network(text: str) -> IPNetwork:
    """
    An IP address or CIDR; a single address is a /32 (IPv4) or /128 (IPv6);
    host bits may be set (C{10.1.2.3/8} is C{10.0.0.0/8}).

    @raise ValueError: not one of those.
    """
    value = text.strip()
    if not value or "%" in value:
        raise ValueError(value)
    return ipaddress.ip_network(value, strict=False)


def _check_no_proxy(text: str) -> str:
    value = text.strip().lower()
    if value == "*":
        return value
    try:
        _parse_network(value)
        return value
    except ValueError:
        pass
    if value.startswith("*."):
        value = value[1:]  # Go's NO_PROXY spelling of ".suffix"
    suffix = value.startswith(".")
    name = value[1:] if suffix else value
    parsed = _split_host_port(name) if name else None
    if parsed is not None and (parsed[1] is None or not suffix) and _valid_host(parsed[0]):
        return value
    raise ValueError(f"{json.dumps(text)} is not a host name, .suffix, IP address, CIDR or \"*\"")


def _check_host_key(text: str) -> str:
    """
    A registry name or an C{[upstreams]} key: C{host[:port]}, lower-cased.
    """
    value = text.strip().lower()
    parsed = _split_host_port(value)
    if parsed is None or not _valid_host(parsed[0]):
        raise ValueError(f"{json.dumps(text)} is not a host name")
    return _host_port_text(*parsed)


def _normalise_public_url(text: str) -> str:
    value = text.strip()
    if not value:
        return ""
    if "://" not in value:
        raise ValueError(f"{json.dumps(text)} is not an http(s) URL (use https://proxy.example)")
    return _normalise_base_url(value, "an http(s) URL")


# ---------------------------------------------------------------------------
# Reading the file


class _Reader:
    """
    Typed access to the parsed TOML, turning every problem into a
    L{ConfigError} (or, for unknown keys, a warning) that names the key.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def error(self, path: Sequence[str | int], reason: str) -> ConfigError:
        return ConfigError(self.source, _dotted(path), reason)

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.source}: {message}")

    def _suggest(self, path: Sequence[str | int], key: str, known: Sequence[str]) -> str | None:
        by_lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.75)
        if close:
            return _dotted([*path, by_lower[close[0]]])
        # The right key in the wrong table ([server] requestLimit).
        for dotted in _ALL_DOTTED:
            if dotted[-1].lower() == key.lower() and "<name>" not in dotted and tuple(dotted[:-1]) != tuple(path):
                return _dotted(dotted)
        return None

    def table(self, data: Mapping[str, Any], path: Sequence[str | int], known: Sequence[str]) -> dict[str, Any]:
        """
        The keys of C{data} that are in C{known} (matched case-insensitively,
        as Go's decoder did, with a warning), by their canonical spelling.
        Unknown keys are warned about and dropped.
        """
        by_lower = {k.lower(): k for k in known}
        out: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in data.items():
            canonical = by_lower.get(key.lower())
            if canonical is None:
                shown = _dotted([*path, key])
                suggestion = self._suggest(path, key, known)
                hint = f"; did you mean {suggestion}?" if suggestion else ""
                self.warn(f"unknown key {_quoted_key(shown)} (ignored){hint}")
                continue
            if canonical in out:
                raise self.error([*path, key], f"given twice (as {json.dumps(spelled[canonical])} and {json.dumps(key)})")
            if key != canonical:
                self.warn(f"key {_quoted_key(_dotted([*path, key]))} taken as {_dotted([*path, canonical])} (spell it that way)")
            out[canonical] = value
            spelled[canonical] = key
        return out

    def sub_table(self, value: object, path: Sequence[str | int]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a table, got {_describe(value)}")
        return value

    def string(self, value: object, path: Sequence[str | int]) -> str:
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {_describe(value)}")
        return value

    def boolean(self, value: object, path: Sequence[str | int]) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {_describe(value)}")
        return value

    def integer(self, value: object, path: Sequence[str | int], minimum: int, maximum: int | None = None) -> int:
        expected = _int_range(minimum, maximum)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected {expected}, got {_describe(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            raise self.error(path, f"expected {expected}, got {_describe(value)}")
        return value

    def number(self, value: object, path: Sequence[str | int], expected: str, accept: Callable[[float], bool]) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(path, f"expected {expected}, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:  # TOML integers are unbounded
            raise self.error(path, f"expected {expected}, got {_describe(value)}") from None
        if not math.isfinite(number) or not accept(number):
            raise self.error(path, f"expected {expected}, got {_describe(value)}")
        return number

    def strings(self, value: object, path: Sequence[str | int]) -> list[tuple[int, str]]:
        if not isinstance(value, list):
            raise self.error(path, f"expected an array of strings, got {_describe(value)}")
        out = []
        for index, item in enumerate(value):
            out.append((index, self.string(item, [*path, index])))
        return out

    def networks(self, value: object, path: Sequence[str | int]) -> tuple[IPNetwork, ...]:
        out = []
        for index, item in self.strings(value, path):
            try:
                out.append(_parse_network(item))
            except ValueError:
                raise self.error([*path, index], f"{json.dumps(item)} is not an IP address or CIDR") from None
        return tuple(out)

    def checked(self, value: str, path: Sequence[str | int], check: Callable[[str], str]) -> str:
        try:
            return check(value)
        except ValueError as e:
            raise self.error(path, str(e)) from None


def _positive(x: float) -> bool:
    return x > 0


def _non_negative(x: float) -> bool:
    return x >= 0


def _build(data: Mapping[str, Any], r: _Reader) -> Config:
    """
    Turn parsed TOML into a L{Config} (source C{r.source}).
    """
    top = r.table(data, [], _TOP_LEVEL_KEYS)

    def section(name: str) -> dict[str, Any]:
        if name not in top:
            return {}
        return r.table(r.sub_table(top[name], [name]), [name], _SECTIONS[name])

    return Config(
        source=r.source,
        server=_build_server(section("server"), r),
        rate_limit=_build_rate_limit(section("rateLimit"), r),
        security=_build_security(section("security"), r),
        access=_build_access(section("access"), top, r),
        download=_build_download(section("download"), r),
        token_cache=_build_token_cache(section("tokenCache"), r),
        registries=_build_registries(r.sub_table(top["registries"], ["registries"]) if "registries" in top else {}, r),
        upstreams=_build_upstreams(r.sub_table(top["upstreams"], ["upstreams"]) if "upstreams" in top else {}, r),
        network=_build_network(section("network"), r),
        github=_build_github(section("github"), r),
        log=_build_log(section("log"), r),
        metrics=_build_metrics(section("metrics"), r),
    )


def _build_server(s: Mapping[str, Any], r: _Reader) -> ServerConfig:
    d = ServerConfig()
    p = "server"
    host = d.host
    if "host" in s:
        host = r.string(s["host"], [p, "host"]).strip()
        if not host or any(c.isspace() for c in host) or not _can_listen_on(host):
            raise r.error([p, "host"], f"expected an address to listen on (such as \"0.0.0.0\" or \"::\"), got {_describe(s['host'])}")
    public_url = d.public_url
    if "publicUrl" in s:
        public_url = r.checked(r.string(s["publicUrl"], [p, "publicUrl"]), [p, "publicUrl"], _normalise_public_url)
    return ServerConfig(
        host=host,
        port=r.integer(s["port"], [p, "port"], 1, 65535) if "port" in s else d.port,
        file_size=r.integer(s["fileSize"], [p, "fileSize"], 1) if "fileSize" in s else d.file_size,
        enable_h2c=r.boolean(s["enableH2C"], [p, "enableH2C"]) if "enableH2C" in s else d.enable_h2c,
        enable_frontend=r.boolean(s["enableFrontend"], [p, "enableFrontend"]) if "enableFrontend" in s else d.enable_frontend,
        tls=_build_tls(s["tls"], r) if "tls" in s else d.tls,
        shutdown_grace=(
            r.number(s["shutdownGrace"], [p, "shutdownGrace"], "a number of seconds >= 0", _non_negative)
            if "shutdownGrace" in s
            else d.shutdown_grace
        ),
        public_url=public_url,
    )


def _build_tls(value: object, r: _Reader) -> TLSConfig:
    path = ["server", "tls"]
    t = r.table(r.sub_table(value, path), path, _TLS_KEYS)
    cert = r.string(t["cert"], [*path, "cert"]).strip() if "cert" in t else ""
    key = r.string(t["key"], [*path, "key"]).strip() if "key" in t else ""
    if bool(cert) != bool(key):
        missing, given = ("key", "cert") if cert else ("cert", "key")
        raise r.error([*path, missing], f"missing (server.tls.{given} is set; give both or neither)")
    for name, file_path in (("cert", cert), ("key", key)):
        if not file_path:
            continue
        if not os.path.isfile(file_path):
            raise r.error([*path, name], f"{json.dumps(file_path)}: file not found")
        if not os.access(file_path, os.R_OK):
            raise r.error([*path, name], f"{json.dumps(file_path)}: cannot read: permission denied")
    return TLSConfig(cert=cert, key=key)


def _build_rate_limit(s: Mapping[str, Any], r: _Reader) -> RateLimitConfig:
    d = RateLimitConfig()
    p = "rateLimit"
    return RateLimitConfig(
        request_limit=r.integer(s["requestLimit"], [p, "requestLimit"], 0) if "requestLimit" in s else d.request_limit,
        period_hours=r.number(s["periodHours"], [p, "periodHours"], "a number > 0", _positive) if "periodHours" in s else d.period_hours,
    )


def _build_security(s: Mapping[str, Any], r: _Reader) -> SecurityConfig:
    d = SecurityConfig()
    p = "security"
    return SecurityConfig(
        white_list=r.networks(s["whiteList"], [p, "whiteList"]) if "whiteList" in s else d.white_list,
        black_list=r.networks(s["blackList"], [p, "blackList"]) if "blackList" in s else d.black_list,
        trusted_proxies=r.networks(s["trustedProxies"], [p, "trustedProxies"]) if "trustedProxies" in s else d.trusted_proxies,
    )


def _patterns(value: object, path: list[str | int], r: _Reader) -> tuple[str, ...]:
    out = []
    for index, item in r.strings(value, path):
        pattern = item.strip().lower()
        if not pattern:
            raise r.error([*path, index], "empty entry")
        out.append(pattern)
    return tuple(out)


def _build_access(s: Mapping[str, Any], top: Mapping[str, Any], r: _Reader) -> AccessConfig:
    d = AccessConfig()
    p = "access"
    proxy = d.proxy
    if "proxy" in s:
        proxy = r.checked(r.string(s["proxy"], [p, "proxy"]), [p, "proxy"], _check_proxy_url)
        if "proxy" in top:
            r.warn('key "proxy" ignored: access.proxy is also set (and wins)')
    elif "proxy" in top:
        proxy = r.checked(r.string(top["proxy"], ["proxy"]), ["proxy"], _check_proxy_url)
    no_proxy = d.no_proxy
    if "noProxy" in s:
        no_proxy = tuple(r.checked(item, [p, "noProxy", i], _check_no_proxy) for i, item in r.strings(s["noProxy"], [p, "noProxy"]))
    return AccessConfig(
        white_list=_patterns(s["whiteList"], [p, "whiteList"], r) if "whiteList" in s else d.white_list,
        black_list=_patterns(s["blackList"], [p, "blackList"], r) if "blackList" in s else d.black_list,
        proxy=proxy,
        no_proxy=no_proxy,
    )


def _build_download(s: Mapping[str, Any], r: _Reader) -> DownloadConfig:
    if "maxImages" not in s:
        return DownloadConfig()
    return DownloadConfig(max_images=r.integer(s["maxImages"], ["download", "maxImages"], 1))


def _build_token_cache(s: Mapping[str, Any], r: _Reader) -> TokenCacheConfig:
    d = TokenCacheConfig()
    p = "tokenCache"
    ttl = d.default_ttl
    if "defaultTTL" in s:
        path: list[str | int] = [p, "defaultTTL"]
        raw = s["defaultTTL"]
        if not isinstance(raw, str):
            raise r.error(path, f'expected a duration such as "20m", got {_describe(raw)}')
        try:
            ttl = parse_duration(raw.strip())
        except ValueError:
            raise r.error(path, f"{json.dumps(raw)} is not a duration (use 90s, 20m, 1h)") from None
        if ttl <= 0:
            raise r.error(path, f"expected a duration > 0, got {json.dumps(raw)}")
    return TokenCacheConfig(
        enabled=r.boolean(s["enabled"], [p, "enabled"]) if "enabled" in s else d.enabled,
        default_ttl=ttl,
    )


def _build_registries(tables: Mapping[str, Any], r: _Reader) -> Mapping[str, RegistryConfig]:
    merged: dict[str, RegistryConfig] = {reg.name: reg for reg in _default_registries()}
    seen: dict[str, str] = {}
    for raw_name, value in tables.items():
        name_path: list[str | int] = ["registries", raw_name]
        name = r.checked(raw_name, name_path, _check_host_key)
        if name in seen:
            raise r.error(name_path, f"given twice (as {json.dumps(seen[name])} and {json.dumps(raw_name)})")
        seen[name] = raw_name
        t = r.table(r.sub_table(value, name_path), name_path, _REGISTRY_KEYS)
        base = merged.get(name) or RegistryConfig(name=name, upstream=_normalise_base_url(name))
        upstream = base.upstream
        if "upstream" in t:
            upstream = r.checked(r.string(t["upstream"], [*name_path, "upstream"]), [*name_path, "upstream"], _normalise_base_url)
        registry = RegistryConfig(
            name=name,
            upstream=upstream,
            auth_host=r.string(t["authHost"], [*name_path, "authHost"]).strip() if "authHost" in t else base.auth_host,
            auth_type=r.string(t["authType"], [*name_path, "authType"]).strip() if "authType" in t else base.auth_type,
            enabled=r.boolean(t["enabled"], [*name_path, "enabled"]) if "enabled" in t else base.enabled,
            username=r.string(t["username"], [*name_path, "username"]) if "username" in t else base.username,
            password=r.string(t["password"], [*name_path, "password"]) if "password" in t else base.password,
        )
        if bool(registry.username) != bool(registry.password):
            missing, given = ("password", "username") if registry.username else ("username", "password")
            raise r.error([*name_path, missing], f"missing ({given} is set; give both or neither)")
        merged[name] = registry
    return types.MappingProxyType(merged)


def _build_upstreams(tables: Mapping[str, Any], r: _Reader) -> Mapping[str, str]:
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for raw_host, value in tables.items():
        path: list[str | int] = ["upstreams", raw_host]
        host = r.checked(raw_host, path, _check_host_key)
        if host in seen:
            raise r.error(path, f"given twice (as {json.dumps(seen[host])} and {json.dumps(raw_host)})")
        seen[host] = raw_host
        out[host] = r.checked(r.string(value, path), path, _normalise_base_url)
    return types.MappingProxyType(out)


def _build_network(s: Mapping[str, Any], r: _Reader) -> NetworkConfig:
    d = NetworkConfig()
    p = "network"

    def seconds(key: str, default: float) -> float:
        if key not in s:
            return default
        return r.number(s[key], [p, key], "a number of seconds > 0", _positive)

    return NetworkConfig(
        allow_networks=r.networks(s["allowNetworks"], [p, "allowNetworks"]) if "allowNetworks" in s else d.allow_networks,
        connect_timeout=seconds("connectTimeout", d.connect_timeout),
        response_timeout=seconds("responseTimeout", d.response_timeout),
        idle_timeout=seconds("idleTimeout", d.idle_timeout),
        ca_file=_ca_file(s["caFile"], r) if "caFile" in s else d.ca_file,
    )


def _ca_file(value: object, r: _Reader) -> str:
    """
    C{[network] caFile}: a readable PEM file with at least one certificate.
    """
    path = ["network", "caFile"]
    file_path = r.string(value, path).strip()
    if not file_path:
        return ""
    if not os.path.isfile(file_path):
        raise r.error(path, f"{json.dumps(file_path)}: file not found")
    try:
        with open(file_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise r.error(path, f"{json.dumps(file_path)}: cannot read: {e.strerror or e}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise r.error(path, f"{json.dumps(file_path)}: no PEM certificate in the file")
    return file_path


def _build_github(s: Mapping[str, Any], r: _Reader) -> GithubConfig:
    if "rewriteScripts" not in s:
        return GithubConfig()
    return GithubConfig(rewrite_scripts=r.boolean(s["rewriteScripts"], ["github", "rewriteScripts"]))


def _build_metrics(s: Mapping[str, Any], r: _Reader) -> MetricsConfig:
    if "public" not in s:
        return MetricsConfig()
    return MetricsConfig(public=r.boolean(s["public"], ["metrics", "public"]))


def _build_log(s: Mapping[str, Any], r: _Reader) -> LogConfig:
    d = LogConfig()
    fmt = d.format
    if "format" in s:
        fmt = r.string(s["format"], ["log", "format"])
        if fmt not in ("text", "json"):
            raise r.error(["log", "format"], f'expected "text" or "json", got {_describe(fmt)}')
    return LogConfig(
        access_log=r.boolean(s["accessLog"], ["log", "accessLog"]) if "accessLog" in s else d.access_log,
        format=fmt,
    )


# ---------------------------------------------------------------------------
# Environment overrides


def _apply_environment(config: Config, environ: Mapping[str, str], warnings: list[str]) -> Config:
    """
    The Go version's overrides, applied after the file.  As in Go, a
    variable set to the empty string is ignored, except C{ACCESS_PROXY},
    where empty clears the proxy.
    """

    def get(name: str) -> str | None:
        value = environ.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def fail(name: str, reason: str) -> ConfigError:
        return ConfigError(ENVIRONMENT_SOURCE, name, reason)

    def integer(name: str, minimum: int, maximum: int | None = None) -> int | None:
        text = get(name)
        if text is None:
            return None
        expected = _int_range(minimum, maximum)
        if not _INT_TEXT.fullmatch(text):
            raise fail(name, f"expected {expected}, got {json.dumps(text)}")
        number = int(text)
        if number < minimum or (maximum is not None and number > maximum):
            raise fail(name, f"expected {expected}, got {json.dumps(text)}")
        return number

    def boolean(name: str) -> bool | None:
        text = get(name)
        if text is None:
            return None
        if text.lower() not in _BOOL_WORDS:
            raise fail(name, f"expected true or false (or 1/0, yes/no), got {json.dumps(text)}")
        return _BOOL_WORDS[text.lower()]

    def networks(name: str) -> tuple[IPNetwork, ...]:
        text = get(name)
        if text is None:
            return ()
        out = []
        for index, item in enumerate(e.strip() for e in text.split(",")):
            if not item:
                continue
            try:
                out.append(_parse_network(item))
            except ValueError:
                raise fail(f"{name}[{index}]", f"{json.dumps(item)} is not an IP address or CIDR") from None
        return tuple(out)

    server = config.server
    if (host := get("SERVER_HOST")) is not None:
        if not _can_listen_on(host):
            raise fail("SERVER_HOST", f"expected an address to listen on (such as \"0.0.0.0\" or \"::\"), got {json.dumps(host)}")
        server = dataclasses.replace(server, host=host)
    if (port := integer("SERVER_PORT", 1, 65535)) is not None:
        server = dataclasses.replace(server, port=port)
    if (h2c := boolean("ENABLE_H2C")) is not None:
        server = dataclasses.replace(server, enable_h2c=h2c)
    if (frontend := boolean("ENABLE_FRONTEND")) is not None:
        server = dataclasses.replace(server, enable_frontend=frontend)
    if (size := integer("MAX_FILE_SIZE", 1)) is not None:
        server = dataclasses.replace(server, file_size=size)
    if (public_url := get("HUBPROXY_PUBLIC_URL")) is not None:
        try:
            server = dataclasses.replace(server, public_url=_normalise_public_url(public_url))
        except ValueError as e:
            raise fail("HUBPROXY_PUBLIC_URL", str(e)) from None

    rate_limit = config.rate_limit
    if (limit := integer("RATE_LIMIT", 0)) is not None:
        rate_limit = dataclasses.replace(rate_limit, request_limit=limit)
    if (hours_text := get("RATE_PERIOD_HOURS")) is not None:
        hours = float(hours_text) if _FLOAT_TEXT.fullmatch(hours_text) else math.nan
        if not (math.isfinite(hours) and hours > 0):
            raise fail("RATE_PERIOD_HOURS", f"expected a number > 0, got {json.dumps(hours_text)}")
        rate_limit = dataclasses.replace(rate_limit, period_hours=hours)

    security = dataclasses.replace(
        config.security,
        white_list=config.security.white_list + networks("IP_WHITELIST"),
        black_list=config.security.black_list + networks("IP_BLACKLIST"),
    )

    access = config.access
    if "ACCESS_PROXY" in environ:
        try:
            access = dataclasses.replace(access, proxy=_check_proxy_url(environ["ACCESS_PROXY"]))
        except ValueError as e:
            raise fail("ACCESS_PROXY", str(e)) from None

    download = config.download
    if (images := integer("MAX_IMAGES", 1)) is not None:
        download = dataclasses.replace(download, max_images=images)

    skip_tls_verify = config.skip_tls_verify
    if (skip := boolean("SKIP_TLS_VERIFY")) is not None:
        skip_tls_verify = skip
    if skip_tls_verify:
        warnings.append(f"{ENVIRONMENT_SOURCE}: SKIP_TLS_VERIFY: upstream TLS certificates will NOT be verified")

    return dataclasses.replace(
        config,
        server=server,
        rate_limit=rate_limit,
        security=security,
        access=access,
        download=download,
        skip_tls_verify=skip_tls_verify,
    )


# ---------------------------------------------------------------------------
# Entry point


def _read_error(path: str, error: OSError) -> ConfigError:
    if isinstance(error, FileNotFoundError):
        return ConfigError(path, None, "file not found")
    if isinstance(error, IsADirectoryError):
        return ConfigError(path, None, "cannot read: is a directory")
    if isinstance(error, PermissionError):
        return ConfigError(path, None, "cannot read: permission denied")
    if isinstance(error, NotADirectoryError):
        return ConfigError(path, None, "cannot read: a parent is not a directory")
    reason = (error.strerror or str(error)).lower()
    return ConfigError(path, None, f"cannot read: {reason}")


_TOML_POSITION = re.compile(r"^(?P<reason>.*?) \((?:at line (?P<line>\d+), column (?P<column>\d+)|at end of document)\)$", re.S)


def _parse_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _read_error(path, e) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(path, f"line {line}", "invalid TOML: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = " ".join(str(e).split())
        match = _TOML_POSITION.match(message)
        if match is None:
            raise ConfigError(path, None, f"invalid TOML: {message}") from None
        if match.group("line") is None:
            where = f"line {text.count(chr(10)) + 1} (end of file)"
        else:
            where = f"line {match.group('line')}, column {match.group('column')}"
        raise ConfigError(path, where, f"invalid TOML: {match.group('reason')}") from None


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """
    Load the configuration and apply the environment overrides.

    Which file: C{path} if given (it must exist); else C{$HUBPROXY_CONFIG}
    if set (it must exist too); else C{./config.toml} if present; else the
    built-in defaults (source C{"<defaults>"}).

    @param environ: the environment variables to read (C{HUBPROXY_CONFIG}
        and the overrides); L{os.environ} when L{None}.  Pass C{{}} to
        ignore the real environment.
    @return: the configuration and the warnings (one line each, already
        prefixed with the file name).
    @raise ConfigError: the file cannot be read, is not TOML, or a value is
        wrong; nothing should be started then.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None:
        from_env = env.get(CONFIG_ENV, "")
        if from_env:
            path = from_env
        elif os.path.lexists(DEFAULT_PATH):
            path = DEFAULT_PATH
    if path is None:
        reader = _Reader(DEFAULTS_SOURCE)
        config = _build({}, reader)
    else:
        reader = _Reader(path)
        config = _build(_parse_toml(path), reader)
    warnings = reader.warnings
    config = _apply_environment(config, env, warnings)
    return config, warnings
