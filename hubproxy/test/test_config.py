"""
Tests for L{hubproxy.config}.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Mapping

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.config import (
    AccessConfig,
    Config,
    ConfigError,
    DownloadConfig,
    GithubConfig,
    LogConfig,
    MetricsConfig,
    NetworkConfig,
    RateLimitConfig,
    RegistryConfig,
    SecurityConfig,
    ServerConfig,
    TLSConfig,
    TokenCacheConfig,
    default_config,
    load_config,
    parse_duration,
)

SHIPPED = Path(__file__).resolve().parent.parent.parent / "config.toml"

DEFAULT_REGISTRIES = {
    "docker.io": ("https://registry-1.docker.io", "auth.docker.io/token", "docker"),
    "ghcr.io": ("https://ghcr.io", "ghcr.io/token", "github"),
    "gcr.io": ("https://gcr.io", "gcr.io/v2/token", "google"),
    "quay.io": ("https://quay.io", "quay.io/v2/auth", "quay"),
    "registry.k8s.io": ("https://registry.k8s.io", "registry.k8s.io", "anonymous"),
    "mcr.microsoft.com": ("https://mcr.microsoft.com", "mcr.microsoft.com", "anonymous"),
    "nvcr.io": ("https://nvcr.io", "nvcr.io", "anonymous"),
    "docker.elastic.co": ("https://docker.elastic.co", "docker.elastic.co", "anonymous"),
    "public.ecr.aws": ("https://public.ecr.aws", "public.ecr.aws", "anonymous"),
}


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


class ConfigTestCase(SynchronousTestCase):
    """
    Helpers: write TOML into a fresh directory and load it.
    """

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)

    def write(self, text: str, name: str = "config.toml") -> str:
        path = self.dir / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def load(self, text: str, environ: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
        return load_config(self.write(text), environ={} if environ is None else environ)

    def loadError(self, text: str, environ: Mapping[str, str] | None = None) -> str:
        """
        Load C{text}; it must fail.  Returns the message with the file
        name replaced by C{config.toml}, as users see it for the usual file.
        """
        path = self.write(text)
        with self.assertRaises(ConfigError) as cm:
            load_config(path, environ={} if environ is None else environ)
        message = str(cm.exception)
        self.assertNotIn("\n", message)
        return message.replace(path, "config.toml")

    def chdir(self, where: Path) -> None:
        old = os.getcwd()
        os.chdir(where)
        self.addCleanup(os.chdir, old)


class DefaultsTests(ConfigTestCase):
    def test_values(self) -> None:
        """
        The built-in defaults are the documented ones.
        """
        c = default_config()
        self.assertEqual(c.source, "<defaults>")
        self.assertEqual(
            c.server,
            ServerConfig(
                host="0.0.0.0",
                port=5000,
                file_size=2147483648,
                enable_h2c=False,
                enable_frontend=True,
                tls=TLSConfig("", ""),
                shutdown_grace=30.0,
                public_url="",
            ),
        )
        self.assertFalse(c.server.tls.enabled)
        self.assertEqual(c.rate_limit, RateLimitConfig(500, 3.0))
        self.assertEqual(c.security, SecurityConfig((), (), (net("127.0.0.1/32"), net("::1/128"))))
        self.assertEqual(c.access, AccessConfig((), (), "", ()))
        self.assertEqual(c.download, DownloadConfig(10))
        self.assertEqual(c.token_cache, TokenCacheConfig(True, 1200.0))
        self.assertEqual(c.network, NetworkConfig((), 10.0, 60.0, 120.0))
        self.assertEqual(c.github, GithubConfig(True))
        self.assertEqual(c.log, LogConfig(True, "text"))
        self.assertEqual(c.metrics, MetricsConfig(False))
        self.assertFalse(c.skip_tls_verify)
        self.assertEqual(dict(c.upstreams), {})
        self.assertEqual(list(c.registries), list(DEFAULT_REGISTRIES))
        for name, (upstream, auth_host, auth_type) in DEFAULT_REGISTRIES.items():
            self.assertEqual(c.registries[name], RegistryConfig(name, upstream, auth_host, auth_type, True, "", ""))
        self.assertEqual(c.registries["docker.io"].host, "registry-1.docker.io")

    def test_immutable(self) -> None:
        """
        Sections cannot be changed, lists are tuples and mappings read-only.
        """
        c = default_config()
        with self.assertRaises(dataclasses.FrozenInstanceError):
            c.server.port = 1  # type: ignore[misc]
        with self.assertRaises(TypeError):
            c.registries["x"] = c.registries["ghcr.io"]  # type: ignore[index]
        with self.assertRaises(TypeError):
            c.upstreams["x"] = "y"  # type: ignore[index]
        self.assertIsInstance(c.security.trusted_proxies, tuple)

    def test_enabled_registry(self) -> None:
        """
        C{enabled_registry} finds enabled registries case-insensitively and
        hides disabled or unknown ones.
        """
        c, _ = self.load('[registries."gcr.io"]\nenabled = false\n')
        self.assertEqual(c.enabled_registry("GHCR.IO"), c.registries["ghcr.io"])
        self.assertIsNone(c.enabled_registry("gcr.io"))
        self.assertIn("gcr.io", c.registries)
        self.assertIsNone(c.enabled_registry("example.com"))

    def test_no_file(self) -> None:
        """
        Without a path, C{$HUBPROXY_CONFIG} or C{./config.toml}, the defaults
        are used, and environment overrides still apply.
        """
        self.chdir(self.dir)
        c, warnings = load_config(None, environ={})
        self.assertEqual(c, default_config())
        self.assertEqual(warnings, [])
        c, _ = load_config(None, environ={"SERVER_PORT": "6000"})
        self.assertEqual(c.server.port, 6000)
        self.assertEqual(c.source, "<defaults>")


class ShippedConfigTests(ConfigTestCase):
    def setUp(self) -> None:
        super().setUp()
        if not SHIPPED.exists():
            raise self.skipTest(f"{SHIPPED} not present (installed package)")

    def test_loads_cleanly(self) -> None:
        """
        The repository's config.toml loads without warnings and equals the
        built-in defaults.
        """
        c, warnings = load_config(str(SHIPPED), environ={})
        self.assertEqual(warnings, [])
        self.assertEqual(c.source, str(SHIPPED))
        self.assertEqual(dataclasses.replace(c, source="<defaults>"), default_config())

    def test_every_key_present(self) -> None:
        """
        The shipped file documents every key (the legacy top-level C{proxy}
        aside) and every default registry.
        """
        data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
        expected = {
            "server": {"host", "port", "fileSize", "enableH2C", "enableFrontend", "tls", "shutdownGrace", "publicUrl"},
            "rateLimit": {"requestLimit", "periodHours"},
            "security": {"whiteList", "blackList", "trustedProxies"},
            "access": {"whiteList", "blackList", "proxy", "noProxy"},
            "download": {"maxImages"},
            "tokenCache": {"enabled", "defaultTTL"},
            "network": {"allowNetworks", "connectTimeout", "responseTimeout", "idleTimeout", "caFile"},
            "github": {"rewriteScripts"},
            "log": {"accessLog", "format"},
            "metrics": {"public"},
        }
        self.assertEqual(set(data), set(expected) | {"registries", "upstreams"})
        for section, keys in expected.items():
            self.assertEqual(set(data[section]), keys, section)
        self.assertEqual(set(data["server"]["tls"]), {"cert", "key"})
        self.assertEqual(set(data["registries"]), set(DEFAULT_REGISTRIES))
        registry_keys = set().union(*(set(t) for t in data["registries"].values()))
        self.assertEqual(registry_keys, {"upstream", "authHost", "authType", "enabled", "username", "password"})

    def test_implicit(self) -> None:
        """
        A C{config.toml} in the working directory is used when no path is
        given, and named as such.
        """
        self.chdir(self.dir)
        (self.dir / "config.toml").write_bytes(SHIPPED.read_bytes())
        c, warnings = load_config(None, environ={})
        self.assertEqual((c.source, warnings), ("config.toml", []))


FULL = """
proxy = "http://legacy.example:3128"

[server]
host = "::"
port = 8443
fileSize = 1048576
enableH2C = true
enableFrontend = false
tls = { cert = "CERT", key = "KEY" }
shutdownGrace = 2.5
publicUrl = "https://Proxy.Example:443/"

[rateLimit]
requestLimit = 0
periodHours = 1

[security]
whiteList = ["10.0.0.0/8", "192.0.2.7", "2001:db8::1", "10.1.2.3/16"]
blackList = ["198.51.100.0/24"]
trustedProxies = ["172.16.0.0/12"]

[access]
whiteList = [" Library/* ", "myorg/app"]
blackList = ["baduser/*"]
proxy = "socks5://user:pass@127.0.0.1:1080"
noProxy = ["localhost", ".internal", "10.0.0.0/8", "::1", "*", "mirror.example:8080", "*.Corp.Example"]

[download]
maxImages = 3

[tokenCache]
enabled = false
defaultTTL = "1h30m"

[registries."ghcr.io"]
upstream = "http://127.0.0.1:5001/"
authHost = "127.0.0.1:5001/token"
authType = "github2"
enabled = false
username = "bot"
password = "s3cret"

[registries."Harbor.Example:8443"]
upstream = "https://harbor.example:8443"
authType = "basic"

[upstreams]
"GitHub.com" = "http://127.0.0.1:8080"
"raw.githubusercontent.com" = "raw-mirror.internal"

[network]
allowNetworks = ["127.0.0.0/8", "fd00::/8"]
connectTimeout = 1
responseTimeout = 2.5
idleTimeout = 3
caFile = "CAFILE"

[github]
rewriteScripts = false

[log]
accessLog = false
format = "json"

[metrics]
public = true
"""


class RoundTripTests(ConfigTestCase):
    def test_every_key(self) -> None:
        """
        Every key of the contract loads into its attribute.
        """
        cert = self.write("cert", "cert.pem")
        key = self.write("key", "key.pem")
        ca = self.write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "ca.pem")
        c, warnings = self.load(FULL.replace("CERT", cert).replace("KEY", key).replace("CAFILE", ca))
        self.assertEqual(warnings, ['config.toml: key "proxy" ignored: access.proxy is also set (and wins)'.replace("config.toml", c.source)])
        self.assertEqual(
            c.server,
            ServerConfig("::", 8443, 1048576, True, False, TLSConfig(cert, key), 2.5, "https://proxy.example"),
        )
        self.assertTrue(c.server.tls.enabled)
        self.assertEqual(c.rate_limit, RateLimitConfig(0, 1.0))
        self.assertIsInstance(c.rate_limit.period_hours, float)
        self.assertEqual(
            c.security,
            SecurityConfig(
                (net("10.0.0.0/8"), net("192.0.2.7/32"), net("2001:db8::1/128"), net("10.1.0.0/16")),
                (net("198.51.100.0/24"),),
                (net("172.16.0.0/12"),),
            ),
        )
        self.assertEqual(
            c.access,
            AccessConfig(
                ("library/*", "myorg/app"),
                ("baduser/*",),
                "socks5://user:pass@127.0.0.1:1080",
                ("localhost", ".internal", "10.0.0.0/8", "::1", "*", "mirror.example:8080", ".corp.example"),
            ),
        )
        self.assertEqual(c.download, DownloadConfig(3))
        self.assertEqual(c.token_cache, TokenCacheConfig(False, 5400.0))
        self.assertEqual(
            c.registries["ghcr.io"],
            RegistryConfig("ghcr.io", "http://127.0.0.1:5001", "127.0.0.1:5001/token", "github2", False, "bot", "s3cret"),
        )
        self.assertEqual(c.registries["ghcr.io"].host, "127.0.0.1:5001")
        self.assertEqual(
            c.registries["harbor.example:8443"],
            RegistryConfig("harbor.example:8443", "https://harbor.example:8443", "", "basic", True),
        )
        self.assertEqual(
            dict(c.upstreams),
            {"github.com": "http://127.0.0.1:8080", "raw.githubusercontent.com": "https://raw-mirror.internal"},
        )
        self.assertEqual(c.network, NetworkConfig((net("127.0.0.0/8"), net("fd00::/8")), 1.0, 2.5, 3.0, ca))
        self.assertEqual(c.github, GithubConfig(False))
        self.assertEqual(c.log, LogConfig(False, "json"))
        self.assertEqual(c.metrics, MetricsConfig(True))

    def test_ca_file(self) -> None:
        """
        C{[network] caFile} must name a file holding a PEM certificate; an
        empty string means none.
        """
        c, warnings = self.load('[network]\ncaFile = ""\n')
        self.assertEqual((c.network.ca_file, warnings), ("", []))
        not_pem = self.write("just text\n", "notpem.txt")
        self.assertEqual(
            self.loadError(f'[network]\ncaFile = "{not_pem}"\n'),
            f'config.toml: network.caFile: "{not_pem}": no PEM certificate in the file',
        )
        self.assertEqual(
            self.loadError(f'[network]\ncaFile = "{self.dir}"\n'),
            f'config.toml: network.caFile: "{self.dir}": file not found',
        )

    def test_error_pickles(self) -> None:
        """
        L{ConfigError} keeps its parts and survives pickling.
        """
        import pickle

        e = pickle.loads(pickle.dumps(ConfigError("c.toml", "server.port", "bad")))
        self.assertEqual((str(e), e.source, e.key, e.reason), ("c.toml: server.port: bad", "c.toml", "server.port", "bad"))
        self.assertEqual(str(ConfigError("c.toml", None, "file not found")), "c.toml: file not found")

    def test_password_hidden(self) -> None:
        """
        Registry passwords do not show in reprs (configs get logged).
        """
        c, _ = self.load('[registries."ghcr.io"]\nusername = "bot"\npassword = "s3cret"\n')
        self.assertNotIn("s3cret", repr(c))

    def test_top_level_proxy(self) -> None:
        """
        A top-level C{proxy} (older configs) means C{[access] proxy}.
        """
        c, warnings = self.load('proxy = "http://proxy.example:3128"\n')
        self.assertEqual((c.access.proxy, warnings), ("http://proxy.example:3128", []))
        self.assertEqual(
            self.loadError('proxy = "ftp://x"\n'),
            'config.toml: proxy: unsupported scheme "ftp" (use socks5:// or http://)',
        )

    def test_ipv6_single_address(self) -> None:
        """
        A single IPv6 address is a /128 (the Go version made it a /32).
        """
        c, _ = self.load('[security]\nwhiteList = ["2001:db8::5"]\nblackList = ["::ffff:1.2.3.4", "1.2.3.4"]\n')
        self.assertEqual(c.security.white_list, (net("2001:db8::5/128"),))
        self.assertEqual([n.prefixlen for n in c.security.black_list], [128, 32])

    def test_upstream_forms(self) -> None:
        """
        Registry upstreams and C{[upstreams]} values are normalised to
        C{scheme://host[:port]}.
        """
        cases = {
            "ghcr.io": "https://ghcr.io",
            "ghcr.io/": "https://ghcr.io",
            "127.0.0.1:5001": "https://127.0.0.1:5001",
            "HTTP://LocalHost:80/": "http://localhost",
            "https://x.example:443": "https://x.example",
            "http://[::1]:5000": "http://[::1]:5000",
            "[::1]": "https://[::1]",
        }
        for written, normal in cases.items():
            c, _ = self.load(f'[registries."ghcr.io"]\nupstream = "{written}"\n[upstreams]\n"a.example" = "{written}"\n')
            self.assertEqual((c.registries["ghcr.io"].upstream, c.upstreams["a.example"]), (normal, normal), written)


class RegistryMergeTests(ConfigTestCase):
    def test_override_only_given_keys(self) -> None:
        """
        A table for a default registry changes only the keys it sets.
        """
        c, _ = self.load('[registries."ghcr.io"]\nupstream = "http://127.0.0.1:5001"\n')
        self.assertEqual(
            c.registries["ghcr.io"],
            RegistryConfig("ghcr.io", "http://127.0.0.1:5001", "ghcr.io/token", "github", True),
        )
        self.assertEqual(c.registries["quay.io"], default_config().registries["quay.io"])
        self.assertEqual(list(c.registries), list(DEFAULT_REGISTRIES))

    def test_disable(self) -> None:
        c, _ = self.load('[registries."docker.io"]\nenabled = false\n')
        self.assertFalse(c.registries["docker.io"].enabled)
        self.assertEqual(c.registries["docker.io"].upstream, "https://registry-1.docker.io")

    def test_new_registry(self) -> None:
        """
        A new table adds a registry, after the defaults; its name is
        lower-cased, its upstream defaults to its name and it is enabled.
        """
        c, _ = self.load('[registries."Registry.Example"]\nauthType = "anonymous"\n')
        self.assertEqual(list(c.registries)[-1], "registry.example")
        self.assertEqual(c.registries["registry.example"], RegistryConfig("registry.example", "https://registry.example", "", "anonymous", True))

    def test_case_insensitive_name(self) -> None:
        """
        C{"GHCR.io"} is the default C{ghcr.io}, merged.
        """
        c, _ = self.load('[registries."GHCR.io"]\nenabled = false\n')
        self.assertEqual(c.registries["ghcr.io"].auth_type, "github")
        self.assertFalse(c.registries["ghcr.io"].enabled)
        self.assertEqual(len(c.registries), len(DEFAULT_REGISTRIES))

    def test_errors(self) -> None:
        self.assertEqual(
            self.loadError('[registries."ghcr.io"]\nupstream = "ftp://ghcr.io"\n'),
            'config.toml: registries."ghcr.io".upstream: unsupported scheme "ftp" (use https://host or http://host:port)',
        )
        self.assertEqual(
            self.loadError('[registries."ghcr.io"]\nupstream = "https://ghcr.io/v2"\n'),
            'config.toml: registries."ghcr.io".upstream: path "/v2" not allowed (give only scheme://host[:port])',
        )
        self.assertEqual(
            self.loadError('[registries."ghcr.io"]\nupstream = "https://u:p@ghcr.io"\n'),
            'config.toml: registries."ghcr.io".upstream: credentials in the URL are not allowed',
        )
        self.assertEqual(
            self.loadError('[registries."ghcr.io"]\nupstream = "https://ghcr.io:99999"\n'),
            'config.toml: registries."ghcr.io".upstream: "https://ghcr.io:99999" is not a valid URL',
        )
        self.assertEqual(
            self.loadError('[registries."ghcr.io"]\nenabled = "yes"\n'),
            'config.toml: registries."ghcr.io".enabled: expected true or false, got "yes"',
        )
        self.assertEqual(
            self.loadError('[registries."ghcr.io"]\nusername = "bot"\n'),
            'config.toml: registries."ghcr.io".password: missing (username is set; give both or neither)',
        )
        self.assertEqual(
            self.loadError('[registries]\n"ghcr.io" = "ghcr.io"\n'),
            'config.toml: registries."ghcr.io": expected a table, got "ghcr.io"',
        )
        self.assertEqual(
            self.loadError('[registries."bad name"]\nenabled = true\n'),
            'config.toml: registries."bad name": "bad name" is not a host name',
        )
        self.assertEqual(
            self.loadError('[registries."a.io"]\n[registries."A.io"]\n'),
            'config.toml: registries."A.io": given twice (as "a.io" and "A.io")',
        )

    def test_unknown_key_in_registry(self) -> None:
        c, warnings = self.load('[registries."ghcr.io"]\nauthhost = "x"\nuptream = "y"\n')
        path = c.source
        self.assertEqual(
            warnings,
            [
                f"{path}: key 'registries.\"ghcr.io\".authhost' taken as registries.\"ghcr.io\".authHost (spell it that way)",
                f"{path}: unknown key 'registries.\"ghcr.io\".uptream' (ignored); did you mean registries.\"ghcr.io\".upstream?",
            ],
        )
        self.assertEqual(c.registries["ghcr.io"].auth_host, "x")
        self.assertEqual(c.registries["ghcr.io"].upstream, "https://ghcr.io")


class ValidationTests(ConfigTestCase):
    def test_messages(self) -> None:
        """
        Each bad value gives one line naming the key and the reason.
        """
        cases = [
            ('[server]\nport = "abc"', 'config.toml: server.port: expected an integer 1-65535, got "abc"'),
            ("[server]\nport = 0", "config.toml: server.port: expected an integer 1-65535, got 0"),
            ("[server]\nport = 65536", "config.toml: server.port: expected an integer 1-65535, got 65536"),
            ("[server]\nport = true", "config.toml: server.port: expected an integer 1-65535, got true"),
            ("[server]\nport = 5000.0", "config.toml: server.port: expected an integer 1-65535, got 5000.0"),
            ("[server]\nhost = 5", "config.toml: server.host: expected a string, got 5"),
            ('[server]\nhost = ""', 'config.toml: server.host: expected an address to listen on (such as "0.0.0.0" or "::"), got ""'),
            ("[server]\nfileSize = 0", "config.toml: server.fileSize: expected an integer >= 1, got 0"),
            ('[server]\nenableH2C = "true"', 'config.toml: server.enableH2C: expected true or false, got "true"'),
            ("[server]\nenableFrontend = 1", "config.toml: server.enableFrontend: expected true or false, got 1"),
            ("[server]\nshutdownGrace = -1", "config.toml: server.shutdownGrace: expected a number of seconds >= 0, got -1"),
            ("[server]\nshutdownGrace = inf", "config.toml: server.shutdownGrace: expected a number of seconds >= 0, got inf"),
            ("[network]\nidleTimeout = 1" + "0" * 400, "config.toml: network.idleTimeout: expected a number of seconds > 0, got 1" + "0" * 400),
            ('[server]\nhost = "abc.invalid"', 'config.toml: server.host: expected an address to listen on (such as "0.0.0.0" or "::"), got "abc.invalid"'),
            ('[server]\nhost = "999.1.1.1"', 'config.toml: server.host: expected an address to listen on (such as "0.0.0.0" or "::"), got "999.1.1.1"'),
            ('[access]\nproxy = "socks5://' + "u" * 300 + '@127.0.0.1:1080"', "config.toml: access.proxy: SOCKS5 user name and password are limited to 255 bytes each"),
            ('[server]\npublicUrl = "proxy.example"', 'config.toml: server.publicUrl: "proxy.example" is not an http(s) URL (use https://proxy.example)'),
            ('[server]\npublicUrl = "https://p.example/hub"', 'config.toml: server.publicUrl: path "/hub" not allowed (give only scheme://host[:port])'),
            ("[server]\ntls = 5", "config.toml: server.tls: expected a table, got 5"),
            ('[server]\ntls = { cert = "/nonexistent/c.pem" }', "config.toml: server.tls.key: missing (server.tls.cert is set; give both or neither)"),
            (
                '[server]\ntls = { cert = "/nonexistent/c.pem", key = "/nonexistent/k.pem" }',
                'config.toml: server.tls.cert: "/nonexistent/c.pem": file not found',
            ),
            ("[rateLimit]\nrequestLimit = -1", "config.toml: rateLimit.requestLimit: expected an integer >= 0, got -1"),
            ("[rateLimit]\nperiodHours = 0", "config.toml: rateLimit.periodHours: expected a number > 0, got 0"),
            ('[rateLimit]\nperiodHours = "3"', 'config.toml: rateLimit.periodHours: expected a number > 0, got "3"'),
            ('[security]\nwhiteList = ["10.0.0.1", "10.0.0.0/8", "10.0.0.300"]', 'config.toml: security.whiteList[2]: "10.0.0.300" is not an IP address or CIDR'),
            ('[security]\nblackList = "10.0.0.1"', 'config.toml: security.blackList: expected an array of strings, got "10.0.0.1"'),
            ("[security]\ntrustedProxies = [1]", "config.toml: security.trustedProxies[0]: expected a string, got 1"),
            ('[security]\nwhiteList = ["10.0.0.0/33"]', 'config.toml: security.whiteList[0]: "10.0.0.0/33" is not an IP address or CIDR'),
            ('[access]\nproxy = "ftp://proxy.example"', 'config.toml: access.proxy: unsupported scheme "ftp" (use socks5:// or http://)'),
            ('[access]\nproxy = "proxy.example:3128"', 'config.toml: access.proxy: "proxy.example:3128" is not a URL (use socks5://host:port or http://host:port)'),
            ('[access]\nnoProxy = ["ok.example", "a b"]', 'config.toml: access.noProxy[1]: "a b" is not a host name, .suffix, IP address, CIDR or "*"'),
            ('[access]\nwhiteList = [" "]', "config.toml: access.whiteList[0]: empty entry"),
            ("[download]\nmaxImages = 0", "config.toml: download.maxImages: expected an integer >= 1, got 0"),
            ('[tokenCache]\ndefaultTTL = "20 minutes"', 'config.toml: tokenCache.defaultTTL: "20 minutes" is not a duration (use 90s, 20m, 1h)'),
            ("[tokenCache]\ndefaultTTL = 1200", 'config.toml: tokenCache.defaultTTL: expected a duration such as "20m", got 1200'),
            ('[tokenCache]\ndefaultTTL = "0s"', 'config.toml: tokenCache.defaultTTL: expected a duration > 0, got "0s"'),
            ('[upstreams]\n"github.com" = "ftp://x"', 'config.toml: upstreams."github.com": unsupported scheme "ftp" (use https://host or http://host:port)'),
            ('[upstreams]\n"github.com" = 5', 'config.toml: upstreams."github.com": expected a string, got 5'),
            ('[upstreams]\n"git hub" = "x.example"', 'config.toml: upstreams."git hub": "git hub" is not a host name'),
            ('[network]\nallowNetworks = ["nope"]', 'config.toml: network.allowNetworks[0]: "nope" is not an IP address or CIDR'),
            ("[network]\nconnectTimeout = 0", "config.toml: network.connectTimeout: expected a number of seconds > 0, got 0"),
            ("[network]\nresponseTimeout = -5", "config.toml: network.responseTimeout: expected a number of seconds > 0, got -5"),
            ("[network]\nidleTimeout = false", "config.toml: network.idleTimeout: expected a number of seconds > 0, got false"),
            ("[network]\ncaFile = 5", "config.toml: network.caFile: expected a string, got 5"),
            ('[network]\ncaFile = "/nonexistent/ca.pem"', 'config.toml: network.caFile: "/nonexistent/ca.pem": file not found'),
            ('[github]\nrewriteScripts = "no"', 'config.toml: github.rewriteScripts: expected true or false, got "no"'),
            ('[log]\nformat = "xml"', 'config.toml: log.format: expected "text" or "json", got "xml"'),
            ("[log]\naccessLog = 0", "config.toml: log.accessLog: expected true or false, got 0"),
            ('[metrics]\npublic = "yes"', 'config.toml: metrics.public: expected true or false, got "yes"'),
            ("server = 5", "config.toml: server: expected a table, got 5"),
            ("[server]\nport = 1\nPort = 2", 'config.toml: server.Port: given twice (as "port" and "Port")'),
        ]
        for text, expected in cases:
            self.assertEqual(self.loadError(text + "\n"), expected, text)

    def test_tls_files_present(self) -> None:
        cert = self.write("c", "c.pem")
        c, _ = self.load(f'[server]\ntls = {{ cert = "{cert}", key = "{cert}" }}\n')
        self.assertEqual(c.server.tls, TLSConfig(cert, cert))
        c, _ = self.load('[server]\ntls = { cert = "", key = "" }\n')
        self.assertFalse(c.server.tls.enabled)

    def test_unknown_keys_warn(self) -> None:
        """
        Unknown keys anywhere are one warning each, with a suggestion when
        one is close, and do not stop the load.
        """
        c, warnings = self.load(
            "[server]\nprot = 6000\nfilesize = 5\nrequestLimit = 3\nzzz = 1\n[sever]\nport = 1\n[tokenCache]\nttl = 1\n"
        )
        p = c.source
        self.assertEqual(
            warnings,
            [
                f'{p}: unknown key "sever" (ignored); did you mean server?',
                f'{p}: unknown key "server.prot" (ignored); did you mean server.port?',
                f'{p}: key "server.filesize" taken as server.fileSize (spell it that way)',
                f'{p}: unknown key "server.requestLimit" (ignored); did you mean rateLimit.requestLimit?',
                f'{p}: unknown key "server.zzz" (ignored)',
                f'{p}: unknown key "tokenCache.ttl" (ignored)',
            ],
        )
        self.assertEqual(c.server.port, 5000)
        self.assertEqual(c.server.file_size, 5)

    def test_unknown_key_relative_name(self) -> None:
        """
        Warnings name the file as it was given.
        """
        self.chdir(self.dir)
        (self.dir / "config.toml").write_text("[server]\nprot = 1\n")
        _, warnings = load_config(None, environ={})
        self.assertEqual(warnings, ['config.toml: unknown key "server.prot" (ignored); did you mean server.port?'])


class FileTests(ConfigTestCase):
    def test_explicit_missing(self) -> None:
        """
        An explicit path must exist.
        """
        path = str(self.dir / "nope.toml")
        with self.assertRaises(ConfigError) as cm:
            load_config(path, environ={})
        self.assertEqual(str(cm.exception), f"{path}: file not found")

    def test_env_missing(self) -> None:
        """
        C{$HUBPROXY_CONFIG} must exist too, and wins over C{./config.toml}.
        """
        self.chdir(self.dir)
        (self.dir / "config.toml").write_text("[server]\nport = 1\n")
        with self.assertRaises(ConfigError) as cm:
            load_config(None, environ={"HUBPROXY_CONFIG": "other.toml"})
        self.assertEqual(str(cm.exception), "other.toml: file not found")
        (self.dir / "other.toml").write_text("[server]\nport = 2\n")
        c, _ = load_config(None, environ={"HUBPROXY_CONFIG": "other.toml"})
        self.assertEqual((c.source, c.server.port), ("other.toml", 2))

    def test_implicit_missing(self) -> None:
        """
        A missing implicit C{./config.toml} means the defaults.
        """
        self.chdir(self.dir)
        c, warnings = load_config(None, environ={"HUBPROXY_CONFIG": ""})
        self.assertEqual((c.source, warnings), ("<defaults>", []))

    def test_implicit_broken(self) -> None:
        """
        A present but broken C{./config.toml} is an error, not the defaults.
        """
        self.chdir(self.dir)
        (self.dir / "config.toml").write_text("[server]\nport = \n")
        with self.assertRaises(ConfigError) as cm:
            load_config(None, environ={})
        self.assertEqual(str(cm.exception), "config.toml: line 2, column 8: invalid TOML: Invalid value")

    def test_directory(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            load_config(str(self.dir), environ={})
        self.assertEqual(str(cm.exception), f"{self.dir}: cannot read: is a directory")

    def test_parent_is_file(self) -> None:
        parent = self.write("", "plain")
        path = os.path.join(parent, "config.toml")
        with self.assertRaises(ConfigError) as cm:
            load_config(path, environ={})
        self.assertEqual(str(cm.exception), f"{path}: cannot read: a parent is not a directory")

    def test_permission_denied(self) -> None:
        path = self.write("[server]\n")
        os.chmod(path, 0)
        self.addCleanup(os.chmod, path, 0o600)
        with self.assertRaises(ConfigError) as cm:
            if os.geteuid() == 0:
                # Root reads files whatever their mode: drop the effective
                # uid for the read (the saved uid lets us take it back).
                os.seteuid(65534)
                try:
                    load_config(path, environ={})
                finally:
                    os.seteuid(0)
            else:
                load_config(path, environ={})
        self.assertEqual(str(cm.exception), f"{path}: cannot read: permission denied")

    def test_syntax_error(self) -> None:
        """
        TOML errors name the file, the line and column, and tomllib's reason.
        """
        self.assertEqual(
            self.loadError('[server]\nhost = "0.0.0.0"\nport = 5000 5001\n'),
            "config.toml: line 3, column 13: invalid TOML: Expected newline or end of document after a statement",
        )
        self.assertEqual(
            self.loadError("[server]\nport = 1\nport = 2\n"),
            "config.toml: line 3, column 9: invalid TOML: Cannot overwrite a value",
        )
        self.assertEqual(
            self.loadError('[server]\nhost = "0.0.0.0'),
            "config.toml: line 2 (end of file): invalid TOML: Unterminated string",
        )

    def test_not_utf8(self) -> None:
        path = self.dir / "latin1.toml"
        path.write_bytes(b'[server]\nhost = "\xe9"\n')
        with self.assertRaises(ConfigError) as cm:
            load_config(str(path), environ={})
        self.assertEqual(str(cm.exception), f"{path}: line 2: invalid TOML: not UTF-8 text")


class EnvironmentTests(ConfigTestCase):
    def test_all_overrides(self) -> None:
        """
        Every variable overrides its key, after the file.
        """
        c, warnings = self.load(
            '[security]\nwhiteList = ["10.0.0.0/8"]\nblackList = ["192.0.2.1"]\n[access]\nproxy = "http://p.example:3128"\n',
            environ={
                "SERVER_HOST": "127.0.0.1",
                "SERVER_PORT": "6000",
                "ENABLE_H2C": "yes",
                "ENABLE_FRONTEND": "0",
                "MAX_FILE_SIZE": "1024",
                "RATE_LIMIT": "0",
                "RATE_PERIOD_HOURS": "0.5",
                "IP_WHITELIST": "192.168.1.0/24, 2001:db8::1,",
                "IP_BLACKLIST": "198.51.100.7",
                "ACCESS_PROXY": "socks5://127.0.0.1:1080",
                "MAX_IMAGES": "2",
                "SKIP_TLS_VERIFY": "true",
                "HUBPROXY_PUBLIC_URL": "https://hub.example/",
            },
        )
        self.assertEqual(
            (c.server.host, c.server.port, c.server.enable_h2c, c.server.enable_frontend, c.server.file_size, c.server.public_url),
            ("127.0.0.1", 6000, True, False, 1024, "https://hub.example"),
        )
        self.assertEqual(c.rate_limit, RateLimitConfig(0, 0.5))
        self.assertEqual(c.security.white_list, (net("10.0.0.0/8"), net("192.168.1.0/24"), net("2001:db8::1/128")))
        self.assertEqual(c.security.black_list, (net("192.0.2.1/32"), net("198.51.100.7/32")))
        self.assertEqual(c.access.proxy, "socks5://127.0.0.1:1080")
        self.assertEqual(c.download.max_images, 2)
        self.assertTrue(c.skip_tls_verify)
        self.assertEqual(warnings, ["environment: SKIP_TLS_VERIFY: upstream TLS certificates will NOT be verified"])

    def test_access_proxy_empty_clears(self) -> None:
        text = '[access]\nproxy = "http://p.example:3128"\n'
        c, _ = self.load(text, environ={"ACCESS_PROXY": ""})
        self.assertEqual(c.access.proxy, "")
        c, _ = self.load(text, environ={})
        self.assertEqual(c.access.proxy, "http://p.example:3128")

    def test_empty_ignored(self) -> None:
        """
        As in Go, other variables set to the empty string are ignored.
        """
        c, warnings = self.load("[server]\nport = 7000\n", environ={"SERVER_PORT": "", "SKIP_TLS_VERIFY": "", "IP_WHITELIST": ""})
        self.assertEqual((c.server.port, c.skip_tls_verify, c.security.white_list, warnings), (7000, False, (), []))

    def test_booleans(self) -> None:
        for text, value in [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("No", False)]:
            c, _ = self.load("", environ={"ENABLE_H2C": text})
            self.assertEqual(c.server.enable_h2c, value, text)

    def test_errors(self) -> None:
        cases = [
            ({"SERVER_PORT": "x"}, 'environment: SERVER_PORT: expected an integer 1-65535, got "x"'),
            ({"SERVER_PORT": "70000"}, 'environment: SERVER_PORT: expected an integer 1-65535, got "70000"'),
            ({"ENABLE_H2C": "maybe"}, 'environment: ENABLE_H2C: expected true or false (or 1/0, yes/no), got "maybe"'),
            ({"MAX_FILE_SIZE": "0"}, 'environment: MAX_FILE_SIZE: expected an integer >= 1, got "0"'),
            ({"RATE_LIMIT": "-1"}, 'environment: RATE_LIMIT: expected an integer >= 0, got "-1"'),
            ({"RATE_PERIOD_HOURS": "0"}, 'environment: RATE_PERIOD_HOURS: expected a number > 0, got "0"'),
            ({"RATE_PERIOD_HOURS": "soon"}, 'environment: RATE_PERIOD_HOURS: expected a number > 0, got "soon"'),
            ({"IP_WHITELIST": "10.0.0.1,bad"}, 'environment: IP_WHITELIST[1]: "bad" is not an IP address or CIDR'),
            ({"IP_BLACKLIST": "1.2.3.4/40"}, 'environment: IP_BLACKLIST[0]: "1.2.3.4/40" is not an IP address or CIDR'),
            ({"ACCESS_PROXY": "ftp://x"}, 'environment: ACCESS_PROXY: unsupported scheme "ftp" (use socks5:// or http://)'),
            ({"MAX_IMAGES": "0"}, 'environment: MAX_IMAGES: expected an integer >= 1, got "0"'),
            ({"SKIP_TLS_VERIFY": "sure"}, 'environment: SKIP_TLS_VERIFY: expected true or false (or 1/0, yes/no), got "sure"'),
            ({"HUBPROXY_PUBLIC_URL": "ftp://x"}, 'environment: HUBPROXY_PUBLIC_URL: unsupported scheme "ftp" (use https://host or http://host:port)'),
        ]
        for environ, expected in cases:
            self.assertEqual(self.loadError("", environ=environ), expected, environ)

    def test_os_environ_default(self) -> None:
        """
        Without C{environ}, the process environment is read.
        """
        self.patch(os, "environ", {"SERVER_PORT": "6001"})
        c, _ = load_config(self.write(""))
        self.assertEqual(c.server.port, 6001)


class DurationTests(SynchronousTestCase):
    def test_examples(self) -> None:
        for text, seconds in [
            ("90s", 90.0),
            ("20m", 1200.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("1h0m0s", 3600.0),
            ("-2s", -2.0),
            (".5s", 0.5),
            ("1.s", 1.0),
            ("250us", 0.00025),
            ("3ns", 3e-9),
        ]:
            self.assertAlmostEqual(parse_duration(text), seconds, msg=text)

    def test_rejects(self) -> None:
        for text in ["", "20", "20 m", " 20m", "20min", "1e3s", "h", "1h 30m", "m20", "--1s", "1.2.3s", "20M", "+"]:
            with self.assertRaises(ValueError, msg=text):
                parse_duration(text)

    @given(
        st.lists(
            st.tuples(
                st.one_of(
                    st.integers(min_value=0, max_value=10**6).map(str),
                    st.decimals(min_value=0, max_value=10**4, places=3, allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f")),
                ),
                st.sampled_from(["ns", "us", "\u00b5s", "ms", "s", "m", "h"]),
            ),
            min_size=1,
            max_size=5,
        ),
        st.sampled_from(["", "+", "-"]),
    )
    def test_round_trip(self, parts: list[tuple[str, str]], sign: str) -> None:
        """
        Any sequence of C{<number><unit>} parses to the sum of its parts.
        """
        scale = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
        text = sign + "".join(number + unit for number, unit in parts)
        expected = sum(float(number) * scale[unit] for number, unit in parts) * (-1 if sign == "-" else 1)
        self.assertAlmostEqual(parse_duration(text), expected, delta=1e-9 * max(1.0, abs(expected)))

    @given(st.integers(min_value=0, max_value=10**6), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
    def test_round_trip_hms(self, hours: int, minutes: int, seconds: int, millis: int) -> None:
        text = f"{hours}h{minutes}m{seconds}s{millis}ms"
        expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
        self.assertAlmostEqual(parse_duration(text), expected, delta=1e-12 * max(1.0, expected))
