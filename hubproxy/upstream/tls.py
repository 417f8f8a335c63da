# -*- test-case-name: hubproxy.test.test_client -*-
"""
TLS to upstreams: platform roots, plus an optional extra CA bundle, or (only
when the operator says so) no verification at all.

Host names are always verified against the certificate (service-identity,
through Twisted's C{optionsForClientTLS}) unless verification is off.  The
extra bundle exists for corporate TLS-inspecting proxies and internal
registries signed by a private CA.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IOpenSSLTrustRoot)
class PlatformPlusBundle:
    """
    Trust the platform's roots and the certificates in C{ca_file}.
    """

    def __init__(self, ca_file: str) -> None:
        self.ca_file = ca_file

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        context.load_verify_locations(self.ca_file)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self._context.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        self._context.set_alpn_protos([b"http/1.1"])

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        try:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        except UnicodeError:
            pass
        return connection


@implementer(IPolicyForHTTPS)
class UnverifiedPolicy:
    """
    C{SKIP_TLS_VERIFY=true}: encryption without authentication.  Logged
    loudly at start and reported on C{/ready}.
    """

    def creatorForNetloc(self, hostname: bytes, port: int) -> _Unverified:
        return _Unverified(hostname.decode("ascii"))


def make_tls_policy(ca_file: str = "", skip_verify: bool = False) -> IPolicyForHTTPS:
    if skip_verify:
        return UnverifiedPolicy()
    if ca_file:
        return BrowserLikePolicyForHTTPS(trustRoot=PlatformPlusBundle(ca_file))
    return BrowserLikePolicyForHTTPS()


__all__ = ["make_tls_policy", "UnverifiedPolicy", "PlatformPlusBundle", "ssl"]
