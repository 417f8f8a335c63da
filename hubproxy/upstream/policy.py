# -*- test-case-name: hubproxy.test.test_policy -*-
"""
Where a URL derived from outside may go (SSRF defence).

Base URLs written in the configuration are trusted as written.  Anything
else (a URL a client put in its path, a redirect C{Location}, an auth
realm from a C{WWW-Authenticate} challenge) goes through
L{check_outside_url} before it is requested, and the addresses its host
resolves to go through L{AddressPolicy.allows} at connect time (see
L{hubproxy.upstream.endpoints}).  This module is the first of those two
checks: it refuses what can be refused from the text alone.

Why so many spellings: C library resolvers (C{inet_aton}), curl and
browsers all accept C{2130706433}, C{0x7f000001}, C{0177.0.0.1} and
C{127.1} as C{127.0.0.1}, and IPv6 can carry an IPv4 address inside it
(mapped, NAT64, 6to4).  A filter that only knows dotted quads is a filter
with holes, so every IPv4 spelling is parsed here the way C{inet_aton}
does, and every host that I{looks} numeric but is not a valid address is
refused rather than handed to a resolver that might read it differently.

The Go hubproxy had no such check (reference.md 6.5): its GitHub proxy
followed redirects to any host, and its offline API reached any registry.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
import hyperlink
import idna

from hubproxy.acl import IPAddress, NetworkSet, parse_ip

__all__ = [
    "AddressPolicy",
    "DisallowedURL",
    "check_outside_url",
    "host_literal",
    "is_public",
    "parse_ipv4_loose",
]


class DisallowedURL(Exception):
    """
    A URL derived from outside may not be fetched.

    @ivar reason: one short English sentence, suitable for a 403/502
        C{text/plain} body and for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- IPv4 in every spelling --------------------------------------------------

_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*\Z")
_OCT_PART = re.compile(r"0[0-7]+\Z")
_DEC_PART = re.compile(r"(?:0|[1-9][0-9]*)\Z")


def _ipv4_part(part: str) -> int | None:
    """
    One dot-separated part of an C{inet_aton} address: decimal, C{0x} hex
    (C{0x} alone is 0, as in browsers) or C{0}-prefixed octal.
    """
    if len(part) > 40:  # far beyond 2**32 in any base; avoid huge ints
        return None
    if _HEX_PART.match(part):
        return int(part[2:] or "0", 16)
    if _OCT_PART.match(part):
        return int(part, 8)
    if _DEC_PART.match(part):
        return int(part, 10)
    return None


def parse_ipv4_loose(host: str) -> IPv4Address | None:
    """
    Parse an IPv4 address in any spelling C{inet_aton}, browsers (WHATWG
    URL) or curl accept; C{None} if C{host} is not an IPv4 literal.

    One to four parts, each decimal, hex (C{0x7f}) or octal (C{0177}); the
    last part fills the remaining bytes (C{127.1}, C{127.0.1},
    C{2130706433}); one trailing dot is ignored (C{127.0.0.1.}).
    """
    if not host or not host.isascii() or len(host) > 200:
        return None
    if host.endswith("."):
        host = host[:-1]
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        value = _ipv4_part(part)
        if value is None:
            return None
        values.append(value)
    *leading, last = values
    if any(v > 255 for v in leading):
        return None
    if last >= 1 << (8 * (5 - len(values))):
        return None
    result = last
    for index, value in enumerate(leading):
        result |= value << (8 * (3 - index))
    return IPv4Address(result)


def _ends_in_number(host: str) -> bool:
    """
    The WHATWG URL rule: a host whose last label is numeric (decimal or
    C{0x} hex) is parsed as IPv4, so if it is not a valid one it must not
    be treated as a name either.
    """
    if host.endswith("."):
        host = host[:-1]
    last = host.rsplit(".", 1)[-1]
    return bool(last) and (last.isascii() and last.isdigit() or bool(_HEX_PART.match(last)))


# -- literals and what they embed ---------------------------------------------

_MAPPED = IPv6Network("::ffff:0:0/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SIXTOFOUR = IPv6Network("2002::/16")
_GLOBAL_UNICAST = IPv6Network("2000::/3")


def host_literal(host: str) -> IPAddress | None:
    """
    The address a host string denotes if it is an IP literal in any
    spelling, else C{None} (a host name, or garbage).

    Accepts loose IPv4 (see L{parse_ipv4_loose}) and IPv6 with or without
    brackets, with a zone id (dropped) and with an embedded dotted quad
    (C{::ffff:127.0.0.1}).  IPv6 is returned as IPv6 (it is what a socket
    would connect to); L{is_public} looks inside for embedded IPv4.
    """
    host = host.strip()
    if not host or not host.isascii():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    if ":" in host:
        address = host.split("%", 1)[0]
        try:
            return IPv6Address(address)
        except ValueError:
            return None
    return parse_ipv4_loose(host)


_NOT_PUBLIC_V4 = NetworkSet(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including 255.255.255.255
    )
)

_NOT_PUBLIC_V6 = NetworkSet(
    IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs (RFC 9602)
    )
)


def is_public(ip: IPAddress | str) -> bool:
    """
    Whether C{ip} is an ordinary, globally reachable unicast address.

    Written out instead of using L{IPv4Address.is_global}, whose answers
    have changed between Python releases.  IPv6 is public only inside
    global unicast C{2000::/3} (less the special blocks), or as an
    IPv4-mapped or NAT64 (C{64:ff9b::/96}) address whose embedded IPv4 is
    public; a 6to4 address (C{2002::/16}) must also embed a public IPv4.
    Everything else (C{::}, C{::1}, C{fc00::/7}, C{fe80::/10},
    C{fec0::/10}, C{ff00::/8}, C{100::/64}, IPv4-compatible C{::/96},
    C{64:ff9b:1::/48} ...) lies outside C{2000::/3} and is refused.
    Strings go through L{hubproxy.acl.parse_ip}; garbage is not public.
    """
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        ip = parsed
    if isinstance(ip, IPv4Address):
        return not _NOT_PUBLIC_V4.contains(ip)
    if not isinstance(ip, IPv6Address):
        return False
    ip = IPv6Address(int(ip))  # drop any zone id
    if ip in _MAPPED or ip in _NAT64:
        return not _NOT_PUBLIC_V4.contains(IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip not in _GLOBAL_UNICAST or _NOT_PUBLIC_V6.contains(ip):
        return False
    if ip in _SIXTOFOUR:
        embedded = ip.sixtofour
        return embedded is not None and not _NOT_PUBLIC_V4.contains(embedded)
    return True


class AddressPolicy:
    """
    Which addresses outside-derived URLs may reach: public ones, plus the
    configured C{[network] allowNetworks} (an internal mirror, a test
    fixture on loopback).
    """

    def __init__(self, allow_networks: NetworkSet) -> None:
        self.allow_networks = allow_networks

    def allows(self, ip: IPAddress | str) -> bool:
        """
        Whether a connection to C{ip} is allowed.  Strings (resolver
        output) go through L{hubproxy.acl.parse_ip}; garbage is refused.
        IPv4-mapped addresses are matched as IPv4 against the allow list.
        """
        if isinstance(ip, str):
            parsed = parse_ip(ip)
            if parsed is None:
                return False
            ip = parsed
        return is_public(ip) or self.allow_networks.contains(ip)

    def allows_text(self, text: str) -> bool:
        """
        L{allows} for a resolved address string, the shape
        L{hubproxy.upstream.endpoints.EndpointFactory} wants.
        """
        return self.allows(text)


# -- URLs ---------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
# Names that resolve to loopback without asking DNS (RFC 6761 6.3, and
# the Debian/RedHat /etc/hosts aliases).
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_MAX_URL = 8192


def _show(text: str, limit: int = 80) -> str:
    """
    Quote a piece of the refused URL for the reason, bounded and with
    control characters escaped, so a reason is always one safe line.
    """
    shown = repr(text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _bad_char(text: str) -> bool:
    return any(ord(c) < 0x21 or c == "\x7f" or c == "\\" or c == "%" for c in text)


def _normalise_name(raw: str) -> str:
    """
    Turn a non-literal host into its canonical ASCII form, or refuse it.
    """
    host = raw
    if not host.isascii():
        try:
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError, ValueError):
            raise DisallowedURL(f"the host {_show(raw)} is not a valid internationalised name") from None
    host = host.lower()
    if host.endswith("."):
        # The absolute form names the same host; drop it so host
        # comparisons downstream see one spelling.
        host = host[:-1]
    if not host or host.startswith(".") or ".." in host or host.endswith("."):
        raise DisallowedURL(f"the host {_show(raw)} has an empty label")
    return host


def _check_host(raw: str, policy: AddressPolicy) -> str:
    """
    Validate the host part of an authority; return the normalised host
    (lower-case ASCII name, dotted IPv4, or compressed IPv6 without
    brackets).
    """
    if raw.startswith("["):
        inner = raw[1:-1]
        if not inner.isascii() or ":" not in inner:
            raise DisallowedURL(f"the host {_show(raw)} is not a valid IPv6 literal")
        try:
            ip6 = IPv6Address(inner)
        except ValueError:
            raise DisallowedURL(f"the host {_show(raw)} is not a valid IPv6 literal") from None
        if not policy.allows(ip6):
            raise DisallowedURL(f"the address {ip6} is not a public address")
        return str(ip6)
    host = _normalise_name(raw)
    if host.isascii():
        literal = parse_ipv4_loose(host)
        if literal is not None:
            if not policy.allows(literal):
                raise DisallowedURL(f"the address {_show(raw)} ({literal}) is not a public address")
            return str(literal)
        if _ends_in_number(host):
            raise DisallowedURL(f"the host {_show(raw)} is neither a valid IPv4 address nor a host name")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        raise DisallowedURL(f"the host {_show(raw)} always means this machine")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=False).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            raise DisallowedURL(f"the host {_show(raw)} is not a valid internationalised name") from None
    if len(host) > 253:
        raise DisallowedURL("the host name is too long")
    for label in host.split("."):
        if not _LABEL.match(label):
            raise DisallowedURL(f"the host {_show(raw)} is not a valid host name")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                raise DisallowedURL(f"the host {_show(raw)} is not a valid internationalised name") from None
    # Unicode look-alikes of "localhost" were caught above after mapping;
    # an A-label spelling of it cannot exist.
    return host


def check_outside_url(url: str | bytes, policy: AddressPolicy) -> hyperlink.URL:
    """
    Check a URL that came from outside before anything is requested.

    Refused: schemes other than http and https; a missing or empty host;
    user-info (C{https://github.com@evil.com/}); percent-encoding,
    backslashes, whitespace or control characters in the authority; ports
    outside 1-65535 or not plain digits; IP literals in any spelling that
    the policy does not allow; numeric-looking hosts that are not valid
    addresses; names that always mean loopback (C{localhost},
    C{*.localhost}); control characters anywhere.  Other host names pass:
    what they resolve to is checked at connect time.

    The authority is split by hand, not by C{hyperlink}, which is more
    forgiving than the resolvers and HTTP stacks downstream (it accepts
    C{:+80} and drops the brackets of C{[v1.x]}); C{hyperlink} is used for
    the path and query only.

    @return: the normalised URL: lower-case scheme and host, IDNA A-labels,
        dotted IPv4, compressed IPv6, default port elided, raw spaces and
        non-ASCII in path and query percent-encoded, no user-info and no
        fragment (fragments are never sent upstream).
    @raise DisallowedURL: with the reason.
    """
    if isinstance(url, bytes):
        try:
            url = url.decode("utf-8")
        except UnicodeDecodeError:
            raise DisallowedURL("the URL is not valid UTF-8") from None
    if len(url) > _MAX_URL:
        raise DisallowedURL("the URL is too long")
    if any(ord(c) < 0x20 or c == "\x7f" for c in url):
        raise DisallowedURL("the URL contains control characters")
    match = _SCHEME.match(url)
    if match is None:
        raise DisallowedURL(f"the URL {_show(url)} has no scheme")
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        raise DisallowedURL(f"the URL scheme {_show(scheme)} is not allowed (only http and https)")
    rest = url[match.end() :]
    if not rest.startswith("//"):
        raise DisallowedURL(f"the URL {_show(url)} has no host")
    rest = rest[2:]
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if found >= 0:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        raise DisallowedURL("URLs with user-info (user@host) are not allowed")
    if not authority:
        raise DisallowedURL(f"the URL {_show(url)} has no host")
    if _bad_char(authority):
        raise DisallowedURL(
            f"the host {_show(authority)} contains percent-encoding, a backslash, whitespace or control characters"
        )
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise DisallowedURL(f"the host {_show(authority)} is not a valid IPv6 literal")
        raw_host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise DisallowedURL(f"the host {_show(authority)} is not a valid IPv6 literal")
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise DisallowedURL(f"the host {_show(authority)} is not valid (IPv6 needs brackets)")
        raw_host, colon, port_text_raw = authority.partition(":")
        port_text = port_text_raw if colon else None
    if not raw_host:
        raise DisallowedURL(f"the URL {_show(url)} has no host")
    port: int | None = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
            raise DisallowedURL(f"the port {_show(port_text)} is not a number from 1 to 65535")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise DisallowedURL(f"the port {port} is not a number from 1 to 65535")
    host = _check_host(raw_host, policy)
    try:
        # to_uri percent-encodes raw spaces and non-ASCII in the path and
        # query (an HTTP request line cannot carry them) and keeps existing
        # escapes exactly as they are (signed CDN URLs depend on that).
        parsed = hyperlink.parse(f"{scheme}://h{tail}", decoded=False).to_uri()
    except (hyperlink.URLParseError, ValueError) as e:
        raise DisallowedURL(f"the URL is not valid: {e}") from None
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    if parsed.path == ():
        parsed = parsed.replace(path=("",))
    return parsed.replace(scheme=scheme, host=host, port=port, userinfo="", fragment="", rooted=True)

