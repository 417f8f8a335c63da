"""
Tests for L{hubproxy.upstream.policy}.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.acl import NetworkSet, parse_network
from hubproxy.upstream.policy import (
    AddressPolicy,
    DisallowedURL,
    check_outside_url,
    host_literal,
    is_public,
    parse_ipv4_loose,
)

NOTHING = AddressPolicy(NetworkSet())

#: Every one of these must be refused with an empty allow list.
SSRF = [
    # loopback in every IPv4 spelling
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/admin",
    "http://127.1/",
    "http://127.0.1/",
    "http://127.0.0.1./",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7F.0.0.1/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://0177.1/",
    "http://017700000001/",
    "http://0/",
    "http://0.0.0.0/",
    "http://１２７.０.０.１/",  # fullwidth digits, mapped by IDNA
    # private and metadata
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",  # 169.254.169.254
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://100.64.0.1/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    # IPv6
    "http://[::1]/",
    "http://[::]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[::127.0.0.1]/",
    "http://[2001:db8::1]/",
    "http://[100::1]/",
    "http://[fd00:ec2::254]/",  # AWS IPv6 metadata
    # schemes
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://ftp.example.com/",
    "dict://127.0.0.1:11211/",
    "javascript:alert(1)",
    "//github.com/x",
    "/relative/path",
    # user-info and parser confusion
    "http://github.com@127.0.0.1/",
    "http://user:pw@github.com/",
    "https://github.com@evil.com/",
    "http://@github.com/",
    "http://127.0.0.1%2f@github.com",
    "http://%31%32%37.0.0.1/",
    "http://github.com%2F@evil.com/",
    "http://evil.com\\@github.com/",
    "http://github.com\\.evil.com/",
    "http://git hub.com/",
    "http://github.com\t/",
    "http://github.com/\r\nX-Injected: 1",
    "http:/github.com/",
    "http:///github.com/",
    "http://",
    "http://:80/",
    # ports
    "http://github.com:0/",
    "http://github.com:65536/",
    "http://github.com:99999999/",
    "http://github.com:+443/",
    "http://github.com:0x50/",
    "http://github.com:/",
    "http://github.com:８０/",
    # hosts that are not names
    "http://1.2.3.4.5/",
    "http://256.0.0.1/",
    "http://08.0.0.1/",
    "http://0x100000000/",
    "http://4294967296/",
    "http://example.123/",
    "http://[v1.fe]/",
    "http://[::1/",
    "http://::1/",
    "http://a..b/",
    "http://.github.com/",
    "http://github.com../",
    "http://exa<mple.com/",
    "http://" + "a" * 64 + ".com/",
    "http://xn--zz.com/",
    # names that always mean loopback
    "http://localhost/",
    "http://LOCALHOST:5000/",
    "http://localhost./",
    "http://foo.localhost/",
    "http://localhost.localdomain/",
    "http://ⓛocalhost/",
]

#: These must pass, normalised as shown.
PUBLIC = {
    "https://github.com/owner/repo/releases/download/v1/x.tar.gz": (
        "https://github.com/owner/repo/releases/download/v1/x.tar.gz"
    ),
    "HTTPS://GitHub.COM:443/a%2Fb?x=%2f#frag": "https://github.com/a%2Fb?x=%2f",
    "http://github.com": "http://github.com/",
    "https://github.com./o/r": "https://github.com/o/r",
    "http://140.82.112.3/": "http://140.82.112.3/",
    "http://0x8c.82.112.3:8080/": "http://140.82.112.3:8080/",
    "http://2354212867/": "http://140.82.112.3/",
    "https://[2606:4700::1111]/": "https://[2606:4700::1111]/",
    "https://[2606:4700:0:0:0:0:0:1111]:8443/": "https://[2606:4700::1111]:8443/",
    "http://[::ffff:8.8.8.8]/": "http://[::ffff:808:808]/",
    "http://[64:ff9b::8.8.8.8]/": "http://[64:ff9b::808:808]/",
    "https://bücher.de/ä b": "https://xn--bcher-kva.de/%C3%A4%20b",
    "https://objects.githubusercontent.com/x?X-Amz-Signature=ab%2Bc": (
        "https://objects.githubusercontent.com/x?X-Amz-Signature=ab%2Bc"
    ),
    "https://a_b.example.com:1/": "https://a_b.example.com:1/",
    "https://example.com:65535/": "https://example.com:65535/",
    "https://cdn-lfs.hf.co/repos/x": "https://cdn-lfs.hf.co/repos/x",
}


class CheckOutsideURLTests(SynchronousTestCase):
    def test_ssrf_refused(self) -> None:
        self.assertGreaterEqual(len(SSRF), 40)
        for url in SSRF:
            with self.assertRaises(DisallowedURL, msg=url) as ctx:
                check_outside_url(url, NOTHING)
            reason = ctx.exception.reason
            self.assertIsInstance(reason, str)
            self.assertEqual(str(ctx.exception), reason)
            self.assertNotIn("\n", reason, url)
            self.assertLess(len(reason), 300, url)

    def test_ssrf_refused_as_bytes(self) -> None:
        for url in SSRF:
            self.assertRaises(DisallowedURL, check_outside_url, url.encode("utf-8"), NOTHING)

    def test_public_passes(self) -> None:
        for url, expected in PUBLIC.items():
            self.assertEqual(check_outside_url(url, NOTHING).to_text(), expected, url)
            self.assertEqual(check_outside_url(url.encode("utf-8"), NOTHING).to_text(), expected, url)

    def test_not_utf8(self) -> None:
        self.assertRaises(DisallowedURL, check_outside_url, b"http://\xff.com/", NOTHING)

    def test_result_parts(self) -> None:
        url = check_outside_url("https://Example.COM:8443/p?q=1", NOTHING)
        self.assertEqual((url.scheme, url.host, url.port, url.userinfo), ("https", "example.com", 8443, ""))

    def test_reasons(self) -> None:
        def reason(url: str) -> str:
            with self.assertRaises(DisallowedURL) as ctx:
                check_outside_url(url, NOTHING)
            return ctx.exception.reason

        self.assertIn("scheme", reason("file:///etc/passwd"))
        self.assertIn("user-info", reason("http://github.com@127.0.0.1/"))
        self.assertIn("127.0.0.1", reason("http://0x7f000001/"))
        self.assertIn("port", reason("http://github.com:0/"))
        self.assertIn("this machine", reason("http://localhost/"))

    def test_allow_networks(self) -> None:
        policy = AddressPolicy(NetworkSet([parse_network("127.0.0.1"), parse_network("fd00::/8")]))
        self.assertEqual(check_outside_url("http://127.0.0.1:5001/v2/", policy).to_text(), "http://127.0.0.1:5001/v2/")
        self.assertEqual(check_outside_url("http://0x7f000001/", policy).to_text(), "http://127.0.0.1/")
        self.assertEqual(check_outside_url("http://[::ffff:127.0.0.1]/", policy).host, "::ffff:7f00:1")
        self.assertEqual(check_outside_url("http://[fd00::1]/", policy).host, "fd00::1")
        self.assertRaises(DisallowedURL, check_outside_url, "http://127.0.0.2/", policy)
        # The loopback names stay refused: allowNetworks is about addresses.
        self.assertRaises(DisallowedURL, check_outside_url, "http://localhost/", policy)

    @given(st.integers(0, 2**32 - 1), st.data())
    def test_every_spelling_same_verdict(self, value: int, data: st.DataObject) -> None:
        """
        Decimal, hex, octal, short and mixed spellings of an address get the
        same verdict as its dotted form, and normalise to it.
        """
        address = IPv4Address(value)
        dotted = str(address)
        octets = address.packed
        spellings = [
            str(value),
            hex(value),
            "0" + oct(value)[2:],
            ".".join(hex(b) for b in octets),
            ".".join("0" + oct(b)[2:] for b in octets),
            f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",
            f"{octets[0]}.{octets[1]}.{int.from_bytes(octets[2:], 'big')}",
            f"{hex(octets[0])}.{int.from_bytes(octets[1:], 'big'):#o}".replace("0o", "0"),
            dotted + ".",
        ]
        spelling = data.draw(st.sampled_from(spellings))
        self.assertEqual(parse_ipv4_loose(spelling), address, spelling)
        try:
            expected = check_outside_url(f"http://{dotted}/", NOTHING).to_text()
        except DisallowedURL:
            expected = None
        try:
            got = check_outside_url(f"http://{spelling}/", NOTHING).to_text()
        except DisallowedURL:
            got = None
        self.assertEqual(got, expected, spelling)
        self.assertEqual(expected is not None, is_public(address))


class ParseIPv4LooseTests(SynchronousTestCase):
    def test_spellings(self) -> None:
        for text in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "0177.0.0.1",
            "0x7f.1",
            "0x7f.0.0.0x1",
            "127.0.0.1.",
            "017700000001",
        ]:
            self.assertEqual(parse_ipv4_loose(text), IPv4Address("127.0.0.1"), text)
        self.assertEqual(parse_ipv4_loose("0"), IPv4Address("0.0.0.0"))
        self.assertEqual(parse_ipv4_loose("0x"), IPv4Address("0.0.0.0"))
        self.assertEqual(parse_ipv4_loose("1.2.3.4"), IPv4Address("1.2.3.4"))

    def test_not_ipv4(self) -> None:
        for text in [
            "",
            "github.com",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.256.1.1",
            "1.2.65536",
            "4294967296",
            "0x100000000",
            "08",
            "09.1.1.1",
            "1..1",
            "1.2.3.4..",
            ".1.2.3",
            "-1",
            "+1",
            "1e3",
            "0x7g",
            "１２７.0.0.1",
            "9" * 5000,
        ]:
            self.assertIsNone(parse_ipv4_loose(text), text)

    @given(st.text(max_size=30))
    def test_never_raises(self, text: str) -> None:
        result = parse_ipv4_loose(text)
        self.assertIn(type(result), (IPv4Address, type(None)))


class HostLiteralTests(SynchronousTestCase):
    def test_forms(self) -> None:
        cases = {
            "127.1": "127.0.0.1",
            "[::1]": "::1",
            "::1": "::1",
            "::ffff:127.0.0.1": "::ffff:7f00:1",
            "[0:0:0:0:0:ffff:7f00:1]": "::ffff:7f00:1",
            "fe80::1%eth0": "fe80::1",
            "[fe80::1%25eth0]": "fe80::1",
        }
        for text, expected in cases.items():
            self.assertEqual(host_literal(text), ip_address(expected), text)

    def test_names(self) -> None:
        for text in ["github.com", "", "[github.com]", "[1.2.3.4]", "[::g]", "localhost"]:
            self.assertIsNone(host_literal(text), text)


class IsPublicTests(SynchronousTestCase):
    def test_not_public(self) -> None:
        for text in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::192.168.0.1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:c0a8:0101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "3fff::1",
        ]:
            self.assertFalse(is_public(ip_address(text)), text)
            self.assertFalse(is_public(text), text)

    def test_public(self) -> None:
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "198.17.255.255",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ]:
            self.assertTrue(is_public(ip_address(text)), text)

    def test_garbage(self) -> None:
        self.assertFalse(is_public("not an address"))
        self.assertFalse(is_public(42))  # type: ignore[arg-type]

    @given(st.integers(0, 2**32 - 1))
    def test_embedded_forms_agree(self, value: int) -> None:
        """
        Mapped and NAT64 forms carry the verdict of the embedded IPv4.
        """
        v4 = IPv4Address(value)
        expected = is_public(v4)
        self.assertEqual(is_public(IPv6Address((0xFFFF << 32) | value)), expected)
        self.assertEqual(is_public(IPv6Address((0x64FF9B << 96) | value)), expected)
        self.assertEqual(is_public(IPv6Address((0x2002 << 112) | (value << 80) | 1)), expected)

    @given(st.integers(0, 2**32 - 1))
    def test_never_public_where_python_says_private(self, value: int) -> None:
        ip = IPv4Address(value)
        if ip.is_private or ip.is_loopback or ip.is_multicast or ip.is_reserved or ip.is_link_local:
            self.assertFalse(is_public(ip))


class AddressPolicyTests(SynchronousTestCase):
    def test_allows(self) -> None:
        policy = AddressPolicy(NetworkSet([parse_network("127.0.0.0/8"), parse_network("fd00::/8")]))
        self.assertTrue(policy.allows("8.8.8.8"))
        self.assertTrue(policy.allows(IPv4Address("127.0.0.5")))
        self.assertTrue(policy.allows("::ffff:127.0.0.5"))
        self.assertTrue(policy.allows(IPv6Address("::ffff:127.0.0.5")))
        self.assertTrue(policy.allows("fd00::5"))
        self.assertFalse(policy.allows("10.0.0.1"))
        self.assertFalse(policy.allows("::1"))
        self.assertFalse(policy.allows("garbage"))
        self.assertTrue(policy.allows_text("127.0.0.1"))
        self.assertFalse(policy.allows_text("169.254.169.254"))

    def test_empty(self) -> None:
        self.assertFalse(NOTHING.allows("127.0.0.1"))
        self.assertTrue(NOTHING.allows("140.82.112.3"))
