"""
Tests for L{hubproxy.acl}.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.acl import (
    NetworkSet,
    RepoAccess,
    client_ip,
    client_key,
    entry_problem,
    parse_ip,
    parse_network,
)

ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6Address)
ipv4_networks = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: IPv4Network(t, strict=False)
)
ipv6_networks = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    lambda t: IPv6Network(t, strict=False)
)
segment = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True)
# A first segment with a dot would name a registry host.
namespace = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)
two_segment = st.tuples(namespace, segment).map("/".join)


class ParseNetworkTests(SynchronousTestCase):
    def test_single_ipv4(self) -> None:
        self.assertEqual(parse_network("1.2.3.4"), IPv4Network("1.2.3.4/32"))

    def test_single_ipv6_is_128(self) -> None:
        """
        Go turned a bare IPv6 address into a /32; it is one address.
        """
        self.assertEqual(parse_network("2001:db8::1"), IPv6Network("2001:db8::1/128"))

    def test_cidr_host_bits(self) -> None:
        self.assertEqual(parse_network(" 10.1.2.3/8 "), IPv4Network("10.0.0.0/8"))
        self.assertEqual(parse_network("2001:db8::1/32"), IPv6Network("2001:db8::/32"))

    def test_brackets(self) -> None:
        self.assertEqual(parse_network("[::1]"), IPv6Network("::1/128"))

    def test_garbage(self) -> None:
        for bad in ["", "  ", "example.com", "1.2.3.4/33", "1.2.3", "::g", "1.2.3.4/", "01.2.3.4", "１.2.3.4"]:
            with self.assertRaises(ValueError) as ctx:
                parse_network(bad)
            self.assertIn("is not an IP address or CIDR", str(ctx.exception))


class ParseIPTests(SynchronousTestCase):
    def test_forms(self) -> None:
        cases = {
            "1.2.3.4": "1.2.3.4",
            " 1.2.3.4 ": "1.2.3.4",
            "1.2.3.4:5678": "1.2.3.4",
            "::1": "::1",
            "[::1]": "::1",
            "[2001:db8::1]:443": "2001:db8::1",
            "fe80::1%eth0": "fe80::1",
            "::ffff:1.2.3.4": "1.2.3.4",
            "::ffff:102:304": "1.2.3.4",
            "[::ffff:1.2.3.4]": "1.2.3.4",
        }
        for text, expected in cases.items():
            self.assertEqual(parse_ip(text), ip_address(expected), text)

    def test_mapped_is_ipv4(self) -> None:
        self.assertIsInstance(parse_ip("::ffff:10.0.0.1"), IPv4Address)

    def test_garbage(self) -> None:
        for bad in [
            "",
            "unknown",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "0x7f.0.0.1",
            "[1.2.3.4]",
            "[::1",
            "[::1]x",
            "1.2.3.4:http",
            "1.2.3.4%eth0",
            "２.2.3.4",
            "a" * 1000,
        ]:
            self.assertIsNone(parse_ip(bad), bad)

    @given(st.text(max_size=60))
    def test_never_raises(self, text: str) -> None:
        result = parse_ip(text)
        self.assertIn(type(result), (IPv4Address, IPv6Address, type(None)))


class NetworkSetTests(SynchronousTestCase):
    def test_empty(self) -> None:
        networks = NetworkSet([])
        self.assertFalse(networks)
        self.assertFalse(networks.contains("1.2.3.4"))

    def test_membership(self) -> None:
        networks = NetworkSet([parse_network("10.0.0.0/8"), parse_network("2001:db8::/32"), parse_network("1.2.3.4")])
        self.assertTrue(networks)
        self.assertEqual(len(networks), 3)
        self.assertTrue(networks.contains("10.255.0.1"))
        self.assertTrue(networks.contains(IPv4Address("1.2.3.4")))
        self.assertFalse(networks.contains("1.2.3.5"))
        self.assertTrue(networks.contains("2001:db8:ffff::1"))
        self.assertFalse(networks.contains("2001:db9::1"))
        self.assertIn("10.1.1.1", networks)

    def test_strings_accepted(self) -> None:
        self.assertTrue(NetworkSet(["127.0.0.1"]).contains("127.0.0.1"))

    def test_invalid_input(self) -> None:
        networks = NetworkSet([parse_network("0.0.0.0/0"), parse_network("::/0")])
        for bad in ["", "nope", "1.2.3", None, 42]:
            self.assertFalse(networks.contains(bad), bad)  # type: ignore[arg-type]

    def test_mapped_address_matches_ipv4(self) -> None:
        networks = NetworkSet([parse_network("192.168.0.0/16")])
        self.assertTrue(networks.contains("::ffff:192.168.1.1"))
        self.assertTrue(networks.contains(IPv6Address("::ffff:192.168.1.1")))
        self.assertFalse(networks.contains("::ffff:192.169.1.1"))

    def test_mapped_network_matches_ipv4(self) -> None:
        networks = NetworkSet([parse_network("::ffff:10.0.0.0/104")])
        self.assertTrue(networks.contains("10.9.9.9"))
        self.assertFalse(networks.contains("11.0.0.0"))

    def test_versions_separate(self) -> None:
        self.assertFalse(NetworkSet([parse_network("0.0.0.0/0")]).contains("::2"))
        self.assertFalse(NetworkSet([parse_network("::/0")]).contains("1.2.3.4"))

    def test_hundreds(self) -> None:
        networks = NetworkSet(IPv4Network((i << 16, 16)) for i in range(0, 512, 2))
        self.assertTrue(networks.contains(IPv4Address((10 << 16) + 5)))
        self.assertFalse(networks.contains(IPv4Address((11 << 16) + 5)))

    @given(st.lists(ipv4_networks, max_size=5), st.lists(ipv6_networks, max_size=5), ipv4s, ipv6s)
    def test_agrees_with_ipaddress(
        self, nets4: list[IPv4Network], nets6: list[IPv6Network], ip4: IPv4Address, ip6: IPv6Address
    ) -> None:
        networks = NetworkSet([*nets4, *nets6])
        self.assertEqual(networks.contains(ip4), any(ip4 in n for n in nets4))
        self.assertEqual(networks.contains(str(ip4)), any(ip4 in n for n in nets4))
        assume(ip6.ipv4_mapped is None)
        self.assertEqual(networks.contains(ip6), any(ip6 in n for n in nets6))

    @given(st.lists(ipv4_networks, max_size=5), ipv4s)
    def test_mapped_equivalence(self, nets4: list[IPv4Network], ip4: IPv4Address) -> None:
        networks = NetworkSet(nets4)
        mapped = IPv6Address(f"::ffff:{ip4}")
        self.assertEqual(networks.contains(mapped), networks.contains(ip4))
        self.assertEqual(networks.contains(str(mapped)), networks.contains(ip4))
        self.assertEqual(parse_ip(str(mapped)), ip4)


class ClientKeyTests(SynchronousTestCase):
    def test_ipv4(self) -> None:
        self.assertEqual(client_key(IPv4Address("1.2.3.4")), "1.2.3.4")

    def test_ipv6(self) -> None:
        self.assertEqual(client_key(IPv6Address("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64")

    def test_mapped(self) -> None:
        self.assertEqual(client_key(IPv6Address("::ffff:1.2.3.4")), "1.2.3.4")

    @given(ipv6s, st.integers(0, 2**64 - 1))
    def test_same_64(self, ip: IPv6Address, low: int) -> None:
        assume(ip.ipv4_mapped is None)
        other = IPv6Address((int(ip) >> 64 << 64) | low)
        self.assertEqual(client_key(ip), client_key(other))

    @given(ipv6s, st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1))
    def test_different_64(self, a: IPv6Address, delta: int, low: int) -> None:
        b = IPv6Address(((int(a) >> 64 ^ delta) << 64) | low)
        assume(a.ipv4_mapped is None and b.ipv4_mapped is None)
        self.assertNotEqual(client_key(a), client_key(b))

    @given(ipv4s, ipv4s)
    def test_ipv4_distinct(self, a: IPv4Address, b: IPv4Address) -> None:
        self.assertEqual(client_key(a) == client_key(b), a == b)


def headers(**values: str) -> object:
    table = {k.replace("_", "-").encode(): v.encode("latin-1") for k, v in values.items()}
    return lambda name: table.get(name.lower())


TRUSTED = NetworkSet([parse_network("127.0.0.1"), parse_network("10.0.0.0/8"), parse_network("::1")])


class ClientIPTests(SynchronousTestCase):
    def ip(self, peer: str, **values: str) -> object:
        return client_ip(peer, headers(**values), TRUSTED)  # type: ignore[arg-type]

    def test_untrusted_peer_ignores_headers(self) -> None:
        self.assertEqual(self.ip("8.8.8.8", x_forwarded_for="1.1.1.1", x_real_ip="2.2.2.2"), ip_address("8.8.8.8"))

    def test_rfc1918_not_trusted_by_default(self) -> None:
        """
        Unlike Go/gin, a LAN peer outside trustedProxies cannot spoof.
        """
        self.assertEqual(self.ip("192.168.1.5", x_forwarded_for="1.1.1.1"), ip_address("192.168.1.5"))

    def test_trusted_peer_no_headers(self) -> None:
        self.assertEqual(self.ip("127.0.0.1"), ip_address("127.0.0.1"))

    def test_xff_rightmost_untrusted(self) -> None:
        self.assertEqual(
            self.ip("127.0.0.1", x_forwarded_for="6.6.6.6, 1.1.1.1, 10.0.0.2"), ip_address("1.1.1.1")
        )

    def test_xff_all_trusted_leftmost(self) -> None:
        self.assertEqual(self.ip("127.0.0.1", x_forwarded_for="10.0.0.3, 10.0.0.2"), ip_address("10.0.0.3"))

    def test_xff_garbage_stops(self) -> None:
        self.assertEqual(
            self.ip("127.0.0.1", x_forwarded_for="1.1.1.1, garbage, 10.0.0.2"), ip_address("10.0.0.2")
        )
        self.assertEqual(self.ip("127.0.0.1", x_forwarded_for="1.1.1.1, garbage"), ip_address("127.0.0.1"))
        self.assertEqual(self.ip("127.0.0.1", x_forwarded_for="1.1.1.1,,10.0.0.9"), ip_address("10.0.0.9"))

    def test_xff_ipv6_and_ports(self) -> None:
        self.assertEqual(self.ip("::1", x_forwarded_for="2001:db8::5"), ip_address("2001:db8::5"))
        self.assertEqual(self.ip("::1", x_forwarded_for="[2001:db8::5]:1234"), ip_address("2001:db8::5"))
        self.assertEqual(self.ip("::ffff:127.0.0.1", x_forwarded_for="::ffff:9.9.9.9"), ip_address("9.9.9.9"))

    def test_real_ip(self) -> None:
        self.assertEqual(self.ip("127.0.0.1", x_real_ip="3.3.3.3"), ip_address("3.3.3.3"))
        self.assertEqual(self.ip("127.0.0.1", x_real_ip="junk"), ip_address("127.0.0.1"))
        self.assertEqual(self.ip("127.0.0.1", x_forwarded_for="   ", x_real_ip="3.3.3.3"), ip_address("3.3.3.3"))

    def test_xff_wins_over_real_ip(self) -> None:
        self.assertEqual(self.ip("127.0.0.1", x_forwarded_for="4.4.4.4", x_real_ip="3.3.3.3"), ip_address("4.4.4.4"))

    def test_non_ip_peer(self) -> None:
        self.assertIsNone(self.ip("/run/hubproxy.sock", x_forwarded_for="1.1.1.1"))

    def test_nothing_trusted(self) -> None:
        self.assertEqual(
            client_ip("127.0.0.1", headers(x_forwarded_for="1.1.1.1"), NetworkSet()),  # type: ignore[arg-type]
            ip_address("127.0.0.1"),
        )

    @given(st.lists(ipv4s, min_size=1, max_size=6))
    def test_result_is_untrusted_or_leftmost(self, chain: list[IPv4Address]) -> None:
        value = ", ".join(map(str, chain))
        got = self.ip("127.0.0.1", x_forwarded_for=value)
        untrusted = [ip for ip in chain if not TRUSTED.contains(ip)]
        self.assertEqual(got, untrusted[-1] if untrusted else chain[0])


class RepoAccessTests(SynchronousTestCase):
    def test_empty_allows_all(self) -> None:
        access = RepoAccess([], [])
        self.assertIsNone(access.check_image("docker.io", "library/nginx"))
        self.assertIsNone(access.check_github("o", "r"))

    def test_messages(self) -> None:
        access = RepoAccess(["library/*"], ["library/nginx"])
        self.assertEqual(access.check_image("docker.io", "library/nginx"), "image library/nginx is blacklisted")
        self.assertEqual(access.check_image("docker.io", "x/y"), "image x/y is not in the whitelist")
        self.assertEqual(access.check_image("ghcr.io", "x/y"), "image ghcr.io/x/y is not in the whitelist")
        self.assertEqual(access.check_github("X", "Y.git"), "repository x/y is not in the whitelist")

    def test_go_forms(self) -> None:
        """
        The Go matching rules, entry by entry.
        """
        cases = [
            # entry, name, matches
            ("baduser/malicious-repo", "baduser/malicious-repo", True),
            ("baduser/malicious-repo", "baduser/other", False),
            ("baduser", "baduser/anything", True),
            ("baduser/*", "baduser/anything", True),
            ("baduser/*", "gooduser/anything", False),
            ("*", "a/b", True),
            ("lib*", "library/nginx", True),
            ("library/ng*", "library/nginx", True),
            ("library/ng*", "library/redis", False),
            ("*/malicious-repo", "anyone/malicious-repo", True),
            ("*/malicious-repo", "anyone/malicious-repo2", False),
            ("*/mal*", "anyone/malicious-repo2", True),
            ("*/*", "a/b", True),
            ("  BadUser/*  ", "baduser/x", True),
            # Multi-segment names: full path, ns = first segment.
            ("team", "team/app/web", True),
            ("team/app", "team/app/web", True),
            ("team/app", "team/application", False),
            ("team/app/web", "team/app/web", True),
            ("*/app/web", "team/app/web", True),
            ("*/app", "team/app/web", True),
            ("*/web", "team/app/web", False),
            ("team/*", "team/app/web", True),
        ]
        for entry, name, expected in cases:
            access = RepoAccess([], [entry])
            got = access.check_image("docker.io", name) is not None
            self.assertEqual(got, expected, (entry, name))
            owner, _, repo = name.partition("/")
            self.assertEqual(access.check_github(owner, repo) is not None, expected, (entry, name))

    def test_registry_qualified(self) -> None:
        access = RepoAccess([], ["ghcr.io/owner/*", "quay.io/x/y", "localhost:5000", "docker.io/library/bad"])
        self.assertIsNotNone(access.check_image("ghcr.io", "owner/app"))
        self.assertIsNotNone(access.check_image("GHCR.IO", "owner/app/sub"))
        self.assertIsNone(access.check_image("docker.io", "owner/app"))
        self.assertIsNone(access.check_github("owner", "app"))
        self.assertIsNotNone(access.check_image("quay.io", "x/y"))
        self.assertIsNone(access.check_image("quay.io", "x/z"))
        self.assertIsNotNone(access.check_image("localhost:5000", "anything/here"))
        self.assertIsNotNone(access.check_image("docker.io", "library/bad"))
        self.assertIsNotNone(access.check_image("index.docker.io", "library/bad"))
        self.assertIsNone(access.check_image("ghcr.io", "library/bad"))

    def test_github_host(self) -> None:
        access = RepoAccess(["github.com/good/*"], [])
        self.assertIsNone(access.check_github("Good", "Repo.git"))
        self.assertIsNotNone(access.check_github("bad", "repo"))
        self.assertIsNotNone(access.check_image("docker.io", "good/repo"))

    def test_github_git_suffix_and_case(self) -> None:
        access = RepoAccess([], ["baduser/malicious-repo"])
        self.assertIsNotNone(access.check_github("BadUser", "Malicious-Repo.git"))
        self.assertIsNotNone(access.check_github("baduser", "malicious-repo"))

    def test_black_wins(self) -> None:
        access = RepoAccess(["*"], ["library/nginx"])
        self.assertIsNotNone(access.check_image("docker.io", "library/nginx"))
        self.assertIsNone(access.check_image("docker.io", "library/redis"))

    def test_blank_entries_ignored(self) -> None:
        access = RepoAccess(["", "  "], ["", " "])
        self.assertIsNone(access.check_image("docker.io", "library/nginx"))

    def test_entry_problem(self) -> None:
        for good in ["a/b", "a", "a/*", "*", "lib*", "*/repo", "*/re*", "ghcr.io/o/*", "ghcr.io"]:
            self.assertIsNone(entry_problem(good), good)
        for bad in ["", "a*b/c", "*a/b", "a//b", "ghcr.io/*/x*y"]:
            self.assertIsNotNone(entry_problem(bad), bad)

    @given(two_segment)
    def test_star_matches_everything(self, name: str) -> None:
        access = RepoAccess([], ["*"])
        self.assertIsNotNone(access.check_image("docker.io", name))
        self.assertIsNotNone(access.check_image("ghcr.io", name))
        owner, _, repo = name.partition("/")
        self.assertIsNotNone(access.check_github(owner, repo))

    @given(two_segment, two_segment)
    def test_exact_matches_only_itself(self, entry: str, name: str) -> None:
        access = RepoAccess([entry], [])
        self.assertEqual(access.check_image("docker.io", name) is None, entry == name)

    @given(st.lists(st.sampled_from(["*", "a", "a/*", "*/b", "a/b", "a*", "*/b*", "c/d"]), max_size=3), two_segment)
    def test_black_wins_over_white(self, entries: list[str], name: str) -> None:
        black = RepoAccess([], entries)
        both = RepoAccess(["*", *entries], entries)
        if black.check_image("docker.io", name) is not None:
            self.assertIn("blacklisted", both.check_image("docker.io", name) or "")
        else:
            self.assertIsNone(both.check_image("docker.io", name))
