# -*- test-case-name: hubproxy.test.test_acl -*-
"""
Access lists: client address sets and image / repository wildcard lists.

Everything here is pure logic over strings and L{ipaddress} objects, so the
guard, the registry resource and the file proxy can share one tested
implementation and never disagree about what an entry means.

Differences from the Go hubproxy (reference.md 6.1, 6.3, 6.4 and 12.7), on
purpose:

 - A single IPv6 address in a list is a C{/128}, not a C{/32} (Go appended
   C{/32} to every bare address, turning one IPv6 address into a huge
   network).
 - IPv4-mapped IPv6 addresses (C{::ffff:1.2.3.4}, what a dual-stack socket
   reports for an IPv4 client) match IPv4 entries, so listing C{1.2.3.4}
   works whatever the listening socket looks like.
 - X-Forwarded-For is only read from configured trusted peers (not from any
   RFC 1918 address), and a malformed entry stops the walk instead of
   throwing the whole header away.
 - Repository lists understand registry-qualified entries
   (C{ghcr.io/owner/*}), which apply to that registry only; Go dropped the
   host and so applied them to every registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Union

__all__ = [
    "IPAddress",
    "Network",
    "NetworkSet",
    "RepoAccess",
    "client_ip",
    "client_key",
    "entry_problem",
    "parse_ip",
    "parse_network",
]

#: A parsed client or upstream address.
IPAddress = Union[IPv4Address, IPv6Address]
#: A parsed list entry: a single address is a /32 or /128 network.
Network = Union[IPv4Network, IPv6Network]

# IPv4-mapped IPv6 addresses (RFC 4291 2.5.5.2): ::ffff:a.b.c.d.
_MAPPED = IPv6Network("::ffff:0:0/96")


# -- addresses ---------------------------------------------------------------


def parse_network(entry: str) -> Network:
    """
    Parse one list entry: an IP address or a CIDR.

    A bare IPv4 address becomes a /32 and a bare IPv6 address a /128.  Host
    bits are allowed (C{10.1.2.3/8} is C{10.0.0.0/8}) because operators copy
    addresses with their prefix from C{ip addr}; refusing them would only
    annoy.

    @raise ValueError: C{entry} is neither; the message names it, so the
        configuration loader can pass it on as is.
    """
    text = entry.strip()
    if text.startswith("[") and "]" in text:
        # "[::1]" or "[2001:db8::]/32", as people write IPv6 next to ports.
        close = text.index("]")
        text = text[1:close] + text[close + 1 :]
    try:
        if not text or not text.isascii():
            raise ValueError(text)
        return ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{entry.strip()!r} is not an IP address or CIDR") from None


def parse_ip(text: str) -> IPAddress | None:
    """
    Parse an address as found in a socket peer, X-Forwarded-For or
    X-Real-IP, tolerantly; C{None} for anything that is not an address.

    Accepted besides the plain forms: brackets (C{[::1]}), a port
    (C{1.2.3.4:5678}, C{[::1]:443}, as some load balancers append), an IPv6
    zone id (C{fe80::1%eth0}, dropped: a zone never identifies a client).
    An IPv4-mapped IPv6 address is returned as its L{IPv4Address}, so the
    same client has one identity whatever socket family accepted it.

    Never raises: these strings come from the network.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > 100 or not text.isascii():
        return None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        after = text[close + 1 :]
        if after and not (after[0] == ":" and after[1:].isdigit()):
            return None
        text = text[1:close]
        if ":" not in text:
            return None  # brackets are for IPv6 only
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit() or "." not in host:
            return None
        text = host
    if ":" in text:
        text = text.split("%", 1)[0]
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    return _unmap(ip)


def _unmap(ip: IPAddress) -> IPAddress:
    """
    The IPv4 address behind an IPv4-mapped IPv6 address, else C{ip}.
    """
    if isinstance(ip, IPv6Address):
        if ip.scope_id is not None:
            ip = IPv6Address(int(ip))
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


class NetworkSet:
    """
    An immutable set of networks with fast membership tests.

    Networks are grouped by (version, prefix length) into sets of integer
    network addresses, so a lookup costs one mask-and-probe per distinct
    prefix length (at most 33 for IPv4, 129 for IPv6) however long the list
    is: hundreds of entries cost nothing per request.

    An IPv6 network inside C{::ffff:0:0/96} is also stored as the IPv4
    network it maps, and an IPv4-mapped address is looked up as IPv4, so the
    two spellings are interchangeable on both sides.
    """

    def __init__(self, networks: Iterable[Network | str] = ()) -> None:
        """
        @param networks: parsed networks; strings are accepted too and go
            through L{parse_network} (which raises L{ValueError}).
        """
        items: list[Network] = []
        for network in networks:
            if isinstance(network, str):
                network = parse_network(network)
            items.append(network)
        self._networks: tuple[Network, ...] = tuple(items)
        # version -> {prefixlen: {network address as int}}
        self._tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in items:
            self._add(network)
            if isinstance(network, IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
                v4 = IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
                self._add(v4)
        self._lookups: dict[int, tuple[tuple[int, set[int]], ...]] = {
            version: tuple(
                (_mask(version, prefixlen), members) for prefixlen, members in sorted(table.items())
            )
            for version, table in self._tables.items()
        }

    def _add(self, network: Network) -> None:
        table = self._tables[network.version]
        table.setdefault(network.prefixlen, set()).add(int(network.network_address))

    def contains(self, ip: str | IPAddress) -> bool:
        """
        Whether C{ip} is in one of the networks.  Strings go through
        L{parse_ip}; anything unparseable is simply not contained (the
        callers are deciding about trust, and garbage earns none).
        """
        if isinstance(ip, str):
            parsed = parse_ip(ip)
            if parsed is None:
                return False
            ip = parsed
        elif isinstance(ip, (IPv4Address, IPv6Address)):
            ip = _unmap(ip)
        else:
            return False
        value = int(ip)
        for mask, members in self._lookups[ip.version]:
            if value & mask in members:
                return True
        return False

    __contains__ = contains

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __len__(self) -> int:
        return len(self._networks)

    def __iter__(self) -> Iterator[Network]:
        return iter(self._networks)

    def __repr__(self) -> str:
        return f"NetworkSet([{', '.join(str(n) for n in self._networks)}])"


def _mask(version: int, prefixlen: int) -> int:
    bits = 32 if version == 4 else 128
    return ((1 << prefixlen) - 1) << (bits - prefixlen)


def client_key(ip: IPAddress) -> str:
    """
    The rate-limit identity of a client.

    IPv4 clients are keyed by address.  IPv6 clients are keyed by their
    C{/64}: an end site normally gets at least a /64 and can pick any
    address in it, so keying by address would let one client rotate
    through 2**64 fresh buckets.
    """
    ip = _unmap(ip)
    if isinstance(ip, IPv4Address):
        return str(ip)
    return str(IPv6Network((int(ip) >> 64 << 64, 64)))


def client_ip(
    peer: str,
    header: Callable[[bytes], bytes | None],
    trusted: NetworkSet,
) -> IPAddress | None:
    """
    Who the client is, honouring forwarding headers only from trusted peers.

    If the TCP peer is not trusted, it is the client: anyone can write
    C{X-Forwarded-For}.  A trusted peer (our own reverse proxy) appends the
    address it saw, so the header is walked right to left over trusted
    hops; the first untrusted address is the client.  If every entry is
    trusted the leftmost one is used.  A malformed entry ends the walk at
    the last good address: whatever is left of garbage was written by
    someone we cannot vouch for.  Without C{X-Forwarded-For}, a trusted
    peer's C{X-Real-IP} is used, else the peer itself.

    @param peer: the socket peer's host string.
    @param header: returns a request header's combined raw value (all
        occurrences joined with C{", "}), or C{None}.
    @param trusted: the configured trusted proxies.
    @return: the client's address, or C{None} if C{peer} is not an IP
        address (a UNIX socket); the caller decides what that means.
    """
    peer_ip = parse_ip(peer)
    if peer_ip is None:
        return None
    if not trusted.contains(peer_ip):
        return peer_ip
    forwarded = header(b"x-forwarded-for")
    if forwarded is not None and forwarded.strip():
        last_good: IPAddress = peer_ip
        for entry in reversed(forwarded.decode("latin-1").split(",")):
            ip = parse_ip(entry)
            if ip is None:
                return last_good
            last_good = ip
            if not trusted.contains(ip):
                return ip
        return last_good
    real = header(b"x-real-ip")
    if real is not None:
        ip = parse_ip(real.decode("latin-1"))
        if ip is not None:
            return ip
    return peer_ip


# -- repository lists --------------------------------------------------------

# Docker Hub's other names, as in hubproxy.registry.names.
_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def _is_host(segment: str) -> bool:
    """
    Docker's rule for "this first component is a registry host".
    """
    return "." in segment or ":" in segment or segment == "localhost"


def _canonical_registry(host: str) -> str:
    host = host.strip().lower()
    return "docker.io" if host in _DOCKER_HUB else host


def _match(pattern: str, full: str) -> bool:
    """
    Whether one (lower-case, host-less) list pattern matches the path
    C{full}.

    C{full} is split into a namespace (its first segment) and a repository
    part (all the rest, possibly containing C{/}).  The Go rules, with
    "names a path" meaning the path itself or anything below it:

     - C{ns/repo} names a path (exact, or C{full} starts with C{entry/});
     - C{ns} and C{ns/*} name the whole namespace;
     - a trailing C{*} is a plain string prefix on C{full} (C{*} matches
       everything, C{lib*} matches C{library/x});
     - C{*/repo} matches the repository part by path (C{*/app} matches
       C{team/app} and C{team/app/web}), C{*/rep*} by string prefix.
    """
    namespace, _, rest = full.partition("/")
    if pattern == full or full.startswith(pattern + "/"):
        return True
    if pattern == namespace or pattern == namespace + "/*":
        return True
    if pattern.startswith("*/"):
        repo_pattern = pattern[2:]
        if repo_pattern.endswith("*"):
            return bool(rest) and rest.startswith(repo_pattern[:-1])
        return bool(rest) and (rest == repo_pattern or rest.startswith(repo_pattern + "/"))
    if pattern.endswith("*"):
        return full.startswith(pattern[:-1])
    return False


def entry_problem(entry: str) -> str | None:
    """
    Why an access-list entry can never match what its author meant, or
    C{None} if it is fine.

    The Go hubproxy accepted such entries silently; the configuration
    loader should warn about them (not refuse them, so old files still
    load).
    """
    text = entry.strip().lower()
    if not text:
        return "empty entry"
    body = text
    first, _, rest = text.partition("/")
    if _is_host(first):
        body = rest or "*"
    stripped = body
    if stripped.startswith("*/"):
        stripped = stripped[2:]
    if stripped.endswith("*"):
        stripped = stripped[:-1]
    if "*" in stripped:
        return "'*' is only allowed at the start ('*/repo') or the end ('prefix*')"
    if "//" in body or body.startswith("/") or (body.endswith("/") and body != "/"):
        return "empty path segment"
    return None


class _Rule:
    """
    One parsed entry: an optional registry host and a host-less pattern.
    """

    __slots__ = ("host", "pattern")

    def __init__(self, entry: str) -> None:
        first, _, rest = entry.partition("/")
        if _is_host(first):
            self.host: str | None = _canonical_registry(first)
            # "ghcr.io" alone is the whole registry.
            self.pattern = rest or "*"
        else:
            self.host = None
            self.pattern = entry

    def matches(self, registry: str, full: str) -> bool:
        if self.host is not None and self.host != registry:
            return False
        return _match(self.pattern, full)


class RepoAccess:
    """
    The C{[access]} white and black lists, for images and GitHub/HF
    repositories.

    A non-empty white list must match; the black list must not (it wins
    over the white list).  Entries are trimmed and lower-cased; see
    L{_match} for the wildcard forms.

    An entry whose first segment is a registry host (contains C{.} or
    C{:}, or is C{localhost}) applies only to images from that registry
    (C{ghcr.io/owner/*}; Docker Hub may be written C{docker.io/...}); the
    rest of the entry is matched against the repository path.  GitHub
    repositories are matched by host-less entries and by entries for
    C{github.com}.  Entries without a host apply everywhere, as in Go.

    Images are compared by their full normalised repository path
    (C{library/nginx}, C{team/app/web}): namespace is the first segment,
    the repository part is the rest.
    """

    def __init__(self, white_list: Sequence[str], black_list: Sequence[str]) -> None:
        self._white = self._compile(white_list)
        self._black = self._compile(black_list)

    @property
    def active(self) -> bool:
        """Whether any list has an entry (else everything is allowed)."""
        return bool(self._white or self._black)

    @staticmethod
    def _compile(entries: Sequence[str]) -> tuple[_Rule, ...]:
        rules = []
        for entry in entries:
            text = entry.strip().lower()
            if text:
                rules.append(_Rule(text))
        return tuple(rules)

    def _verdict(self, registry: str, full: str, what: str) -> str | None:
        if any(rule.matches(registry, full) for rule in self._black):
            return f"{what} is blacklisted"
        if self._white and not any(rule.matches(registry, full) for rule in self._white):
            return f"{what} is not in the whitelist"
        return None

    def check_image(self, registry: str, repository: str) -> str | None:
        """
        Whether an image may be pulled.

        @param registry: the registry key (C{docker.io}, C{ghcr.io}).
        @param repository: the normalised repository path on it.
        @return: C{None} if allowed, else a short English reason for a 403.
        """
        registry = _canonical_registry(registry)
        full = repository.strip().strip("/").lower()
        name = full if registry == "docker.io" else f"{registry}/{full}"
        return self._verdict(registry, full, f"image {name}")

    def check_github(self, owner: str, repo: str) -> str | None:
        """
        Whether a GitHub (or Hugging Face) repository may be fetched.

        Compared case-insensitively with a C{.git} suffix removed, because
        GitHub treats C{Owner/Repo.git} and C{owner/repo} as the same
        repository.

        @return: C{None} if allowed, else a short English reason for a 403.
        """
        owner = owner.strip().strip("/").lower()
        repo = repo.strip().strip("/").lower()
        if repo.endswith(".git"):
            repo = repo[: -len(".git")]
        full = f"{owner}/{repo}" if repo else owner
        return self._verdict("github.com", full, f"repository {full}")
