"""
Tests for L{hubproxy.registry.names}.
"""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.registry.names import (
    MAX_NAME_LENGTH,
    InvalidName,
    Route,
    client_name,
    is_supported_digest,
    parse_image_reference,
    parse_route,
    validate_digest,
    validate_repository,
    validate_tag,
)

D256 = "sha256:" + "ab" * 32
D512 = "sha512:" + "0f" * 64

REGISTRIES: dict[str, object] = {
    "docker.io": object(),
    "ghcr.io": object(),
    "gcr.io": object(),
    "quay.io": object(),
    "registry.k8s.io": object(),
    "off.example.com": object(),
    "localhost:5001": object(),
}
DISABLED = {"off.example.com"}


def enabled(key: str) -> bool:
    return key in REGISTRIES and key not in DISABLED


def route(path: str, ns: str | None = None, registries: dict[str, object] = REGISTRIES) -> Route:
    return parse_route(path, ns, registries, enabled)


# (path, ns, registry, repository, kind, reference)
ACCEPTED: list[tuple[str, str | None, str, str, str, str | None]] = [
    # Docker Hub and the library/ rule
    ("nginx/manifests/latest", None, "docker.io", "library/nginx", "manifests", "latest"),
    ("library/nginx/manifests/latest", None, "docker.io", "library/nginx", "manifests", "latest"),
    ("nginx/manifests/" + D256, None, "docker.io", "library/nginx", "manifests", D256),
    ("nginx/manifests/" + D512, None, "docker.io", "library/nginx", "manifests", D512),
    ("nginx/blobs/" + D256, None, "docker.io", "library/nginx", "blobs", D256),
    ("nginx/tags/list", None, "docker.io", "library/nginx", "tags", None),
    ("user/app/manifests/1.0", None, "docker.io", "user/app", "manifests", "1.0"),
    ("team/app/web/tags/list", None, "docker.io", "team/app/web", "tags", None),
    ("docker.io/nginx/manifests/latest", None, "docker.io", "library/nginx", "manifests", "latest"),
    ("docker.io/library/nginx/manifests/latest", None, "docker.io", "library/nginx", "manifests", "latest"),
    ("docker.io/user/app/manifests/v1", None, "docker.io", "user/app", "manifests", "v1"),
    ("index.docker.io/user/app/manifests/v1", None, "docker.io", "user/app", "manifests", "v1"),
    # one component is never a host (as in Docker's reference parser)
    ("foo.bar/manifests/1", None, "docker.io", "library/foo.bar", "manifests", "1"),
    ("ghcr.io/manifests/1", None, "docker.io", "library/ghcr.io", "manifests", "1"),
    ("localhost/manifests/1", None, "docker.io", "library/localhost", "manifests", "1"),
    # name grammar corners
    ("a__b/c-d--e/f.g/manifests/_x", None, "docker.io", "a__b/c-d--e/f.g", "manifests", "_x"),
    ("u/app/manifests/V1.2_rc-3", None, "docker.io", "u/app", "manifests", "V1.2_rc-3"),
    ("0/1/manifests/0", None, "docker.io", "0/1", "manifests", "0"),
    ("u/app/manifests/" + "t" * 128, None, "docker.io", "u/app", "manifests", "t" * 128),
    # components called like the API words: split at the last one
    ("u/blobs/manifests/1", None, "docker.io", "u/blobs", "manifests", "1"),
    ("u/manifests/blobs/" + D256, None, "docker.io", "u/manifests", "blobs", D256),
    ("u/manifests/x/tags/list", None, "docker.io", "u/manifests/x", "tags", None),
    ("tags/list/tags/list", None, "docker.io", "tags/list", "tags", None),
    # other registries by prefix
    ("ghcr.io/owner/app/manifests/v1", None, "ghcr.io", "owner/app", "manifests", "v1"),
    ("ghcr.io/app/manifests/v1", None, "ghcr.io", "app", "manifests", "v1"),
    ("GHCR.io/owner/app/manifests/v1", None, "ghcr.io", "owner/app", "manifests", "v1"),
    ("gcr.io/p/a/b/blobs/" + D256, None, "gcr.io", "p/a/b", "blobs", D256),
    ("quay.io/o/a/tags/list", None, "quay.io", "o/a", "tags", None),
    ("registry.k8s.io/pause/manifests/3.9", None, "registry.k8s.io", "pause", "manifests", "3.9"),
    ("ghcr.io/manifests/manifests/1", None, "ghcr.io", "manifests", "manifests", "1"),
    ("localhost:5001/x/manifests/1", None, "localhost:5001", "x", "manifests", "1"),
    # containerd ?ns=
    ("owner/app/manifests/v1", "ghcr.io", "ghcr.io", "owner/app", "manifests", "v1"),
    ("pause/manifests/3.9", "registry.k8s.io", "registry.k8s.io", "pause", "manifests", "3.9"),
    ("library/nginx/manifests/latest", "docker.io", "docker.io", "library/nginx", "manifests", "latest"),
    ("nginx/manifests/latest", "docker.io", "docker.io", "library/nginx", "manifests", "latest"),
    ("ghcr.io/x/manifests/1", "quay.io", "quay.io", "ghcr.io/x", "manifests", "1"),
    ("nginx/manifests/latest", "", "docker.io", "library/nginx", "manifests", "latest"),
    # percent-decoding, once
    ("nginx/manifests/sha256%3A" + "ab" * 32, None, "docker.io", "library/nginx", "manifests", D256),
    ("%6Eginx/manifests/latest", None, "docker.io", "library/nginx", "manifests", "latest"),
]

# (path, ns, code)
REFUSED: list[tuple[str, str | None, str]] = [
    ("UPPER/manifests/1", None, "NAME_INVALID"),
    ("user/App/manifests/1", None, "NAME_INVALID"),
    ("nginx/manifests/bad%20tag", None, "TAG_INVALID"),
    ("nginx/manifests/.hidden", None, "TAG_INVALID"),
    ("nginx/manifests/" + "t" * 129, None, "TAG_INVALID"),
    ("nginx/manifests/", None, "TAG_INVALID"),
    ("nginx/manifests/sha256:abc", None, "DIGEST_INVALID"),
    ("nginx/manifests/sha256:" + "AB" * 32, None, "DIGEST_INVALID"),
    ("nginx/manifests/sha384:" + "ab" * 48, None, "DIGEST_INVALID"),
    ("nginx/blobs/latest", None, "DIGEST_INVALID"),
    ("nginx/blobs/sha256%3Azz", None, "DIGEST_INVALID"),
    ("nginx/blobs/sha512:" + "ab" * 32, None, "DIGEST_INVALID"),
    # traversal, empty components, encoded slashes
    ("../etc/manifests/1", None, "NAME_INVALID"),
    ("a/../b/manifests/1", None, "NAME_INVALID"),
    ("a/./b/manifests/1", None, "NAME_INVALID"),
    ("a//b/manifests/1", None, "NAME_INVALID"),
    ("/a/manifests/1", None, "NAME_INVALID"),
    ("a%2Fb/manifests/1", None, "NAME_INVALID"),
    ("a%2fb/manifests/1", None, "NAME_INVALID"),
    ("a%2E%2E/manifests/1", None, "NAME_INVALID"),
    ("a%2/manifests/1", None, "NAME_INVALID"),
    ("a%zz/manifests/1", None, "NAME_INVALID"),
    ("nginx/manifests/..%2F..%2Fx", None, "TAG_INVALID"),
    ("a%252Fb/manifests/1", None, "NAME_INVALID"),
    ("manifests/1", None, "NAME_INVALID"),
    ("tags/list", None, "NAME_INVALID"),
    ("caf\u00e9/manifests/1", None, "NAME_INVALID"),
    ("x" * 250 + "/yyyyy/manifests/1", None, "NAME_INVALID"),
    # registries that are not served
    ("off.example.com/o/a/manifests/1", None, "NAME_UNKNOWN"),
    ("unknown.example/o/a/manifests/1", None, "NAME_UNKNOWN"),
    ("localhost:5000/o/manifests/1", None, "NAME_UNKNOWN"),
    ("localhost/o/manifests/1", None, "NAME_UNKNOWN"),
    ("ghcr.io//manifests/1", None, "NAME_INVALID"),
    ("owner/app/manifests/1", "off.example.com", "NAME_UNKNOWN"),
    ("owner/app/manifests/1", "mcr.microsoft.com", "NAME_UNKNOWN"),
    # not a pull
    ("nginx/blobs/uploads/", None, "UNSUPPORTED"),
    ("nginx/blobs/uploads", None, "UNSUPPORTED"),
    ("nginx/blobs/uploads/1234-abcd", None, "UNSUPPORTED"),
    ("_catalog", None, "UNSUPPORTED"),
    ("nginx/referrers/" + D256, None, "UNSUPPORTED"),
    ("nginx/manifests/a/b", None, "UNSUPPORTED"),
    ("nginx/tags/list/", None, "UNSUPPORTED"),
    ("", None, "UNSUPPORTED"),
]


class ParseRouteTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        """
        Every accepted path resolves to the expected registry, repository,
        kind and reference.
        """
        for path, ns, registry, repository, kind, reference in ACCEPTED:
            with self.subTest(path=path, ns=ns):
                got = route(path, ns)
                self.assertEqual(
                    (got.registry, got.repository, got.kind, got.reference),
                    (registry, repository, kind, reference),
                )

    def test_refused(self) -> None:
        """
        Every refused path raises L{InvalidName} with the expected code and
        a message.
        """
        for path, ns, code in REFUSED:
            with self.subTest(path=path, ns=ns):
                e = self.assertRaises(InvalidName, route, path, ns)
                self.assertEqual(e.code, code, e.message)
                self.assertTrue(e.message)

    def test_enough_cases(self) -> None:
        self.assertGreaterEqual(len(ACCEPTED) + len(REFUSED), 40)

    def test_disabled_prefix_does_not_fall_through(self) -> None:
        """
        A disabled registry's prefix is C{NAME_UNKNOWN} with a message
        naming it, not a Docker Hub lookup of C{off.example.com/o/a} (the
        Go behaviour).
        """
        e = self.assertRaises(InvalidName, route, "off.example.com/o/a/manifests/1")
        self.assertEqual(e.code, "NAME_UNKNOWN")
        self.assertIn("off.example.com", e.message)
        self.assertIn("not enabled", e.message)

    def test_unconfigured_host_message(self) -> None:
        e = self.assertRaises(InvalidName, route, "mcr.microsoft.com/dotnet/sdk/manifests/8.0")
        self.assertIn("mcr.microsoft.com", e.message)
        self.assertIn("not configured", e.message)

    def test_default_registry_implicit(self) -> None:
        """
        The default registry works without being configured, by name, by
        prefix and by C{ns}.
        """
        registries = {"ghcr.io": object()}
        self.assertEqual(route("nginx/manifests/1", None, registries).repository, "library/nginx")
        self.assertEqual(route("docker.io/nginx/manifests/1", None, registries).registry, "docker.io")
        self.assertEqual(route("nginx/manifests/1", "docker.io", registries).registry, "docker.io")

    def test_default_registry_disabled(self) -> None:
        """
        A default registry that is configured but disabled is refused too.
        """
        e = self.assertRaises(
            InvalidName, parse_route, "nginx/manifests/1", None, REGISTRIES, lambda k: k != "docker.io"
        )
        self.assertEqual(e.code, "NAME_UNKNOWN")

    def test_other_default_registry(self) -> None:
        """
        With another default registry, single names get no C{library/}.
        """
        got = parse_route("app/manifests/1", None, REGISTRIES, enabled, default_registry="quay.io")
        self.assertEqual((got.registry, got.repository), ("quay.io", "app"))

    def test_is_digest(self) -> None:
        self.assertTrue(route("nginx/manifests/" + D256).is_digest)
        self.assertTrue(route("nginx/blobs/" + D256).is_digest)
        self.assertFalse(route("nginx/manifests/latest").is_digest)
        self.assertFalse(route("nginx/tags/list").is_digest)

    def test_client_name(self) -> None:
        """
        L{client_name} is the name the client used, which Docker compares
        against and builds the next page's URL from.
        """
        self.assertEqual(client_name(route("nginx/tags/list")), "nginx")
        self.assertEqual(client_name(route("ghcr.io/o/a/tags/list")), "ghcr.io/o/a")
        self.assertEqual(client_name(route("o/a/tags/list", "ghcr.io")), "o/a")
        self.assertEqual(client_name(Route("ghcr.io", "o/a", "tags", None)), "ghcr.io/o/a")
        self.assertEqual(client_name(Route("docker.io", "library/x", "tags", None)), "library/x")

    def test_equality_ignores_spelling(self) -> None:
        """
        Two spellings of one upstream target are equal routes (cache keys).
        """
        self.assertEqual(route("nginx/manifests/1"), route("docker.io/library/nginx/manifests/1"))

    def test_message_in_str(self) -> None:
        e = InvalidName("TAG_INVALID", "bad")
        self.assertIsInstance(e, ValueError)
        self.assertEqual((e.code, e.message), ("TAG_INVALID", "bad"))
        self.assertIn("bad", str(e))


# (reference, registry, repository, tag-or-digest)
IMAGES: list[tuple[str, str, str, str]] = [
    ("nginx", "docker.io", "library/nginx", "latest"),
    ("nginx:latest", "docker.io", "library/nginx", "latest"),
    ("nginx:1.25-alpine", "docker.io", "library/nginx", "1.25-alpine"),
    (" nginx:1 ", "docker.io", "library/nginx", "1"),
    ("docker.io/library/x", "docker.io", "library/x", "latest"),
    ("docker.io/x:2", "docker.io", "library/x", "2"),
    ("team/app@" + D256, "docker.io", "team/app", D256),
    ("team/app:1@" + D256, "docker.io", "team/app", D256),
    ("ghcr.io/o/a:1", "ghcr.io", "o/a", "1"),
    ("ghcr.io/o/a", "ghcr.io", "o/a", "latest"),
    ("localhost:5001/x:3", "localhost:5001", "x", "3"),
    ("localhost:5001/x", "localhost:5001", "x", "latest"),
]

IMAGES_REFUSED: list[tuple[str, str]] = [
    ("", "NAME_INVALID"),
    ("Nginx", "NAME_INVALID"),
    ("nginx:", "TAG_INVALID"),
    ("nginx:bad tag", "TAG_INVALID"),
    ("nginx@sha256:xyz", "DIGEST_INVALID"),
    ("nginx@", "DIGEST_INVALID"),
    ("off.example.com/o/a:1", "NAME_UNKNOWN"),
    ("unknown.example/o/a", "NAME_UNKNOWN"),
    ("localhost:5000/x", "NAME_UNKNOWN"),
    ("a//b", "NAME_INVALID"),
    ("../x", "NAME_INVALID"),
]


class ParseImageReferenceTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        for ref, registry, repository, reference in IMAGES:
            with self.subTest(ref=ref):
                self.assertEqual(parse_image_reference(ref, REGISTRIES, enabled), (registry, repository, reference))

    def test_refused(self) -> None:
        for ref, code in IMAGES_REFUSED:
            with self.subTest(ref=ref):
                e = self.assertRaises(InvalidName, parse_image_reference, ref, REGISTRIES, enabled)
                self.assertEqual(e.code, code, e.message)


class GrammarTests(SynchronousTestCase):
    def test_repository_length(self) -> None:
        name = "a/" * 127 + "a"
        self.assertEqual(len(name), MAX_NAME_LENGTH)
        self.assertEqual(validate_repository(name), name)
        self.assertRaises(InvalidName, validate_repository, name + "b")

    def test_tag(self) -> None:
        self.assertEqual(validate_tag("_"), "_")
        self.assertRaises(InvalidName, validate_tag, "-x")
        self.assertRaises(InvalidName, validate_tag, "")

    def test_digest_algorithms(self) -> None:
        """
        sha256 and sha512 are supported; other well-formed algorithms are
        accepted syntactically only when asked, and flagged unsupported.
        """
        self.assertTrue(is_supported_digest(D256))
        self.assertTrue(is_supported_digest(D512))
        other = "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"
        self.assertFalse(is_supported_digest(other))
        self.assertEqual(validate_digest(other, allow_unsupported=True), other)
        e = self.assertRaises(InvalidName, validate_digest, other)
        self.assertIn("unsupported", e.message)
        self.assertRaises(InvalidName, validate_digest, "sha256", allow_unsupported=True)
        self.assertRaises(InvalidName, validate_digest, "SHA256:" + "ab" * 32, allow_unsupported=True)


# -- properties -------------------------------------------------------------

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_sep = st.sampled_from([".", "_", "__", "-", "--"])


@st.composite
def components(draw: st.DrawFn, dots: bool = True) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        sep = draw(_sep if dots else st.sampled_from(["_", "__", "-", "---"]))
        parts += [sep, draw(_alnum)]
    return "".join(parts)


@st.composite
def repositories(draw: st.DrawFn) -> str:
    """
    Valid names whose first component is not host-like, so they belong to
    the default registry.
    """
    first = draw(components(dots=False))
    rest = draw(st.lists(components(), max_size=4))
    return "/".join([first, *rest])[:MAX_NAME_LENGTH].rstrip("/._-") or "a"


tags = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", fullmatch=True)
digests = st.one_of(
    st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True),
    st.from_regex(r"sha512:[a-f0-9]{128}", fullmatch=True),
)


class PropertyTests(SynchronousTestCase):
    @given(repositories(), tags)
    def test_valid_tags_round_trip(self, name: str, tag: str) -> None:
        got = route(f"{name}/manifests/{tag}")
        expected = name if "/" in name else "library/" + name
        self.assertEqual(got, Route("docker.io", expected, "manifests", tag))
        self.assertEqual(client_name(got), name)
        self.assertEqual(route(f"ghcr.io/{name}/manifests/{tag}"), Route("ghcr.io", name, "manifests", tag))
        self.assertEqual(route(f"{name}/manifests/{tag}", "quay.io"), Route("quay.io", name, "manifests", tag))

    @given(repositories(), digests)
    def test_valid_digests_round_trip(self, name: str, digest: str) -> None:
        for kind in ("manifests", "blobs"):
            got = route(f"gcr.io/{name}/{kind}/{digest}")
            self.assertEqual(got, Route("gcr.io", name, kind, digest))
            self.assertTrue(got.is_digest)
        self.assertEqual(route(f"{name}/tags/list", "ghcr.io"), Route("ghcr.io", name, "tags", None))

    @given(repositories(), tags)
    def test_image_reference_round_trip(self, name: str, tag: str) -> None:
        self.assertEqual(parse_image_reference(f"ghcr.io/{name}:{tag}", REGISTRIES, enabled), ("ghcr.io", name, tag))

    @given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=20)))
    def test_arbitrary_paths(self, path: str, ns: str | None) -> None:
        """
        Whatever the path and C{ns}, the only exception is L{InvalidName}.
        """
        for candidate in (path, path + "/manifests/x", "a/" + path + "/blobs/" + D256, path + "/tags/list"):
            try:
                got = route(candidate, ns)
            except InvalidName as e:
                self.assertIn(e.code, {"NAME_INVALID", "TAG_INVALID", "DIGEST_INVALID", "NAME_UNKNOWN", "UNSUPPORTED"})
            else:
                validate_repository(got.repository)

    @given(st.text(alphabet="abcAB09:/@.%-_2fF", max_size=80))
    def test_arbitrary_path_alphabet(self, path: str) -> None:
        """
        Denser search over the characters that matter to the parser.
        """
        try:
            got = route(path + "/manifests/1")
        except InvalidName:
            pass
        else:
            self.assertNotIn("%", got.repository)
            self.assertNotIn("//", got.repository)

    @given(st.text(max_size=200))
    def test_arbitrary_image_references(self, ref: str) -> None:
        try:
            parse_image_reference(ref, REGISTRIES, enabled)
        except InvalidName:
            pass
