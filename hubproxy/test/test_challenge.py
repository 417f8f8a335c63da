"""
Tests for L{hubproxy.registry.challenge}.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hubproxy.registry.challenge import (
    Challenge,
    basic_challenge,
    bearer_challenge,
    parse_www_authenticate,
    pull_scope,
    token_url,
)

# Headers as the registries send them (captured from their 401 answers).
REAL_WORLD: list[tuple[str, bytes, str, dict[str, str]]] = [
    (
        "docker hub",
        b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        b'scope="repository:library/nginx:pull"',
        "bearer",
        {"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull"},
    ),
    (
        "docker hub ping",
        b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
        "bearer",
        {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"},
    ),
    (
        "ghcr",
        b'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:owner/app:pull"',
        "bearer",
        {"realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:owner/app:pull"},
    ),
    (
        "quay",
        b'Bearer realm="https://quay.io/v2/auth",service="quay.io",scope="repository:coreos/etcd:pull"',
        "bearer",
        {"realm": "https://quay.io/v2/auth", "service": "quay.io", "scope": "repository:coreos/etcd:pull"},
    ),
    (
        "gcr",
        b'Bearer realm="https://gcr.io/v2/token",service="gcr.io",scope="repository:google-containers/pause:pull"',
        "bearer",
        {"realm": "https://gcr.io/v2/token", "service": "gcr.io", "scope": "repository:google-containers/pause:pull"},
    ),
    (
        "ecr public",
        b'Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws"',
        "bearer",
        {"realm": "https://public.ecr.aws/token/", "service": "public.ecr.aws", "scope": "aws"},
    ),
    (
        "harbor",
        b'Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",'
        b'scope="repository:library/nginx:pull,push"',
        "bearer",
        {
            "realm": "https://harbor.example.com/service/token",
            "service": "harbor-registry",
            "scope": "repository:library/nginx:pull,push",
        },
    ),
    (
        "acr with error",
        b'Bearer realm="https://x.azurecr.io/oauth2/token",service="x.azurecr.io",'
        b'scope="repository:foo:pull",error="invalid_token"',
        "bearer",
        {
            "realm": "https://x.azurecr.io/oauth2/token",
            "service": "x.azurecr.io",
            "scope": "repository:foo:pull",
            "error": "invalid_token",
        },
    ),
    (
        "ecr private",
        b'Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"',
        "basic",
        {"realm": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/", "service": "ecr.amazonaws.com"},
    ),
    ("registry:2 htpasswd", b'Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
    (
        "spaces and case",
        b'  BEARER   Realm = "https://r/t" ,  SERVICE=svc ,scope = "a b"  ',
        "bearer",
        {"realm": "https://r/t", "service": "svc", "scope": "a b"},
    ),
]


def parse(*values: bytes) -> list[Challenge]:
    return parse_www_authenticate(list(values))


class ParseTests(SynchronousTestCase):
    def test_real_world(self) -> None:
        for label, header, scheme, params in REAL_WORLD:
            with self.subTest(label):
                [c] = parse(header)
                self.assertEqual(c.scheme, scheme)
                self.assertEqual(dict(c.params), params)

    def test_rfc_example(self) -> None:
        """
        RFC 7235 section 4.1's example: two challenges in one header, the
        first with an escaped quote inside a quoted string.
        """
        got = parse(b'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"')
        self.assertEqual(
            got,
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        )

    def test_several_headers(self) -> None:
        got = parse(b'Basic realm="x"', b'Bearer realm="https://a/t",service="s"')
        self.assertEqual([c.scheme for c in got], ["basic", "bearer"])
        self.assertEqual(bearer_challenge(got), got[1])
        self.assertEqual(basic_challenge(got), got[0])

    def test_comma_in_quotes(self) -> None:
        [c] = parse(b'Bearer realm="https://a/t",scope="repository:a:pull,push",service="s"')
        self.assertEqual(c.scope, "repository:a:pull,push")
        self.assertEqual(c.service, "s")

    def test_token68(self) -> None:
        got = parse(b"Negotiate YIIB3gYGKwYBBQUCoIIB0jCCAc6gMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHg==, Basic realm=x")
        self.assertEqual(got[0].scheme, "negotiate")
        self.assertEqual(got[0].token68, "YIIB3gYGKwYBBQUCoIIB0jCCAc6gMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHg==")
        self.assertEqual(got[0].params, {})
        self.assertEqual(got[1], Challenge("basic", {"realm": "x"}))

    def test_bare_schemes(self) -> None:
        self.assertEqual(parse(b"Negotiate, NTLM"), [Challenge("negotiate"), Challenge("ntlm")])

    def test_first_repeated_param_wins(self) -> None:
        [c] = parse(b'Bearer realm="https://a/1", realm="https://b/2"')
        self.assertEqual(c.realm, "https://a/1")

    def test_unterminated_quote(self) -> None:
        [c] = parse(b'Bearer realm="https://a/token')
        self.assertEqual(c.realm, "https://a/token")

    def test_garbage_skipped(self) -> None:
        """
        Unparseable items are skipped; what can be read is kept.
        """
        got = parse(b'@@@, Bearer realm="https://a/t", @ @, service="s", =x, Basic realm="b"')
        self.assertEqual(got[0], Challenge("bearer", {"realm": "https://a/t", "service": "s"}))
        self.assertEqual(basic_challenge(got), Challenge("basic", {"realm": "b"}))
        self.assertEqual(parse(b""), [])
        self.assertEqual(parse(b",,, ,"), [])
        self.assertEqual(parse(b'"quoted"'), [])
        self.assertEqual(parse(b"Bearer @@@ junk"), [Challenge("bearer")])

    def test_latin1(self) -> None:
        [c] = parse(b'Basic realm="caf\xe9"')
        self.assertEqual(c.realm, "caf\u00e9")

    def test_empty_value(self) -> None:
        [c] = parse(b'Bearer realm="", service=')
        self.assertEqual(c.realm, "")
        self.assertIsNone(bearer_challenge([c]))


class SelectTests(SynchronousTestCase):
    def test_bearer_needs_http_realm(self) -> None:
        """
        A Bearer challenge without an absolute http(s) realm cannot lead to
        a token, so it does not count.
        """
        for header in (b"Bearer", b'Bearer realm="/token"', b'Bearer realm="ftp://x/t"', b'Bearer realm="https://"'):
            with self.subTest(header):
                self.assertIsNone(bearer_challenge(parse(header)))
        got = parse(b'Bearer realm="/x", Bearer realm="http://ok/t"')
        self.assertEqual(bearer_challenge(got), got[1])

    def test_none(self) -> None:
        self.assertIsNone(bearer_challenge([]))
        self.assertIsNone(basic_challenge(parse(b'Bearer realm="https://a/t"')))


class TokenURLTests(SynchronousTestCase):
    def test_docker_hub(self) -> None:
        [c] = parse(REAL_WORLD[0][1])
        self.assertEqual(
            token_url(c, pull_scope("library/nginx")),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fnginx%3Apull",
        )

    def test_keeps_realm_query(self) -> None:
        c = Challenge("bearer", {"realm": "https://auth.example/token?tenant=a%20b&x=1#frag", "service": "s p"})
        url = token_url(c, "repository:a:pull")
        self.assertEqual(url, "https://auth.example/token?tenant=a%20b&x=1&service=s%20p&scope=repository%3Aa%3Apull")

    def test_no_service_no_scope(self) -> None:
        c = Challenge("bearer", {"realm": "http://127.0.0.1:5001/token"})
        self.assertEqual(token_url(c, None), "http://127.0.0.1:5001/token")

    def test_challenge_scope_preferred_for_same_repository(self) -> None:
        """
        The registry knows which scope it wants: for the same repository,
        its scope is used as is.
        """
        c = Challenge("bearer", {"realm": "https://h/t", "scope": "repository:a/b:pull,push"})
        self.assertEqual(parse_qs(urlsplit(token_url(c, "repository:a/b:pull")).query)["scope"], ["repository:a/b:pull,push"])

    def test_remembered_challenge_for_other_repository(self) -> None:
        """
        A challenge remembered from another repository does not lend its
        scope to this one.
        """
        c = Challenge("bearer", {"realm": "https://h/t", "service": "s", "scope": "repository:other/x:pull"})
        self.assertEqual(parse_qs(urlsplit(token_url(c, "repository:a/b:pull")).query)["scope"], ["repository:a/b:pull"])

    def test_ecr_public_scope(self) -> None:
        [c] = parse(REAL_WORLD[5][1])
        self.assertEqual(parse_qs(urlsplit(token_url(c, "repository:nginx/nginx:pull")).query)["scope"], ["repository:nginx/nginx:pull"])
        self.assertEqual(parse_qs(urlsplit(token_url(c, None)).query)["scope"], ["aws"])

    def test_several_challenge_scopes(self) -> None:
        c = Challenge("bearer", {"realm": "https://h/t", "scope": "repository:a:pull repository:b:pull"})
        self.assertEqual(
            parse_qs(urlsplit(token_url(c, "repository:b:pull")).query)["scope"], ["repository:a:pull", "repository:b:pull"]
        )

    def test_port_in_repository(self) -> None:
        c = Challenge("bearer", {"realm": "https://h/t", "scope": "repository:h:5000/a:pull"})
        self.assertEqual(parse_qs(urlsplit(token_url(c, "repository:h:5000/a:pull")).query)["scope"], ["repository:h:5000/a:pull"])

    def test_bad_realm(self) -> None:
        self.assertRaises(ValueError, token_url, Challenge("bearer", {"realm": "nope"}), None)
        self.assertRaises(ValueError, token_url, Challenge("bearer"), None)

    def test_pull_scope(self) -> None:
        self.assertEqual(pull_scope("library/nginx"), "repository:library/nginx:pull")


class PropertyTests(SynchronousTestCase):
    @given(st.lists(st.binary(max_size=200), max_size=3))
    def test_never_raises(self, values: list[bytes]) -> None:
        for c in parse_www_authenticate(values):
            self.assertEqual(c.scheme, c.scheme.lower())
            self.assertTrue(c.scheme)
            for name in c.params:
                self.assertEqual(name, name.lower())
        bearer = bearer_challenge(parse_www_authenticate(values))
        if bearer is not None:
            token_url(bearer, "repository:a:pull")

    @given(st.text(alphabet='Bb=", \\\t;realmsvc:/h', max_size=60))
    def test_dense_alphabet(self, text: str) -> None:
        parse_www_authenticate([text.encode("latin-1")])

    @given(
        st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
            max_size=5,
        )
    )
    def test_quoted_round_trip(self, params: dict[str, str]) -> None:
        """
        Any parameter values, quoted with escapes, come back unchanged.
        """
        quoted = ", ".join('{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')) for k, v in params.items())
        header = ("Bearer " + quoted + ", Basic realm=x").encode("latin-1")
        got = parse_www_authenticate([header])
        self.assertEqual(got[0], Challenge("bearer", params))
        self.assertEqual(got[-1], Challenge("basic", {"realm": "x"}))
