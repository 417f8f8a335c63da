# -*- test-case-name: hubproxy.test.test_challenge -*-
"""
C{WWW-Authenticate} challenges (RFC 7235) and the token URL they lead to.

A registry answers an unauthenticated request with one or more challenges,
typically C{Bearer realm="https://auth.docker.io/token",
service="registry.docker.io",scope="repository:library/nginx:pull"}.  The
parser follows the RFC grammar closely enough for every registry seen in
the wild (several challenges in one header and across headers, quoted
strings with backslash escapes, commas inside quotes, token68,
case-insensitive parameter names) and is lenient about the rest: what it
cannot parse it skips.  It never raises, because the header comes from a
server we do not control and a bad header must become a clean upstream
error, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = [
    "Challenge",
    "basic_challenge",
    "bearer_challenge",
    "parse_www_authenticate",
    "pull_scope",
    "token_url",
]

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"


@dataclass(frozen=True)
class Challenge:
    """
    One authentication challenge.

    @ivar scheme: the auth scheme, lower-cased (C{bearer}, C{basic}).
    @ivar params: the auth parameters, names lower-cased, values unquoted.
        When a parameter is repeated, the first one counts.
    @ivar token68: the token68 form of the credentials data, if the
        challenge used it instead of parameters (rare for registries).
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")


class _Parser:
    """
    A cursor over one header value.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def at_end(self) -> bool:
        return self.i >= len(self.s)

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in _WS:
            self.i += 1

    def skip_ws_and_commas(self) -> None:
        while self.i < len(self.s) and (self.s[self.i] in _WS or self.s[self.i] == ","):
            self.i += 1

    def skip_item(self) -> None:
        """
        Skip garbage up to the next comma outside quotes.
        """
        while self.i < len(self.s) and self.s[self.i] != ",":
            if self.s[self.i] == '"':
                self.quoted()
            else:
                self.i += 1

    def token(self) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in _TCHAR:
            self.i += 1
        return self.s[start : self.i]

    def quoted(self) -> str:
        """
        A quoted-string starting at the cursor; an unterminated one runs to
        the end of the header (lenient: the realm is still usable).
        """
        self.i += 1  # the opening quote
        out = []
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < len(self.s):
                out.append(self.s[self.i + 1])
                self.i += 2
            elif c == '"':
                self.i += 1
                break
            else:
                out.append(c)
                self.i += 1
        return "".join(out)

    def param_ahead(self) -> bool:
        """
        Whether an C{auth-param} (C{token BWS "=" BWS ...}) starts here,
        rather than a new challenge or a token68.
        """
        j = self.i
        while j < len(self.s) and self.s[j] in _TCHAR:
            j += 1
        if j == self.i:
            return False
        while j < len(self.s) and self.s[j] in _WS:
            j += 1
        if j >= len(self.s) or self.s[j] != "=":
            return False
        # "abc==" followed by the end or a comma is token68, not a param.
        k = j
        while k < len(self.s) and self.s[k] == "=":
            k += 1
        while k < len(self.s) and self.s[k] in _WS:
            k += 1
        return not (k >= len(self.s) or self.s[k] == ",")

    def scheme_ahead(self) -> bool:
        """
        Whether a new challenge (C{auth-scheme} then space, comma or end)
        starts here.
        """
        j = self.i
        while j < len(self.s) and self.s[j] in _TCHAR:
            j += 1
        return j > self.i and (j == len(self.s) or self.s[j] in " \t,")

    def token68(self) -> str | None:
        j = self.i
        while j < len(self.s) and self.s[j] in _TOKEN68:
            j += 1
        if j == self.i:
            return None
        while j < len(self.s) and self.s[j] == "=":
            j += 1
        k = j
        while k < len(self.s) and self.s[k] in _WS:
            k += 1
        if k < len(self.s) and self.s[k] != ",":
            return None
        value = self.s[self.i : j]
        self.i = k
        return value

    def param(self) -> tuple[str, str] | None:
        name = self.token().lower()
        self.skip_ws()
        if self.peek() != "=":
            return None
        self.i += 1
        self.skip_ws()
        if self.peek() == '"':
            value = self.quoted()
        else:
            value = self.token()
        return name, value

    def challenges(self) -> Iterable[Challenge]:
        while True:
            self.skip_ws_and_commas()
            if self.at_end():
                return
            scheme = self.token()
            if not scheme or self.peek() not in ("", ",", " ", "\t"):
                self.skip_item()
                continue
            self.skip_ws()
            params: dict[str, str] = {}
            token68 = None
            if not self.param_ahead():
                token68 = self.token68()
                if token68 is None and not self.at_end() and self.peek() != ",":
                    # Neither params nor token68: a challenge whose data we
                    # cannot read.  Keep the scheme, drop the rest.
                    self.skip_item()
            else:
                while True:
                    parsed = self.param()
                    if parsed is not None and parsed[0]:
                        params.setdefault(parsed[0], parsed[1])
                    self.skip_ws()
                    if not self.at_end() and self.peek() != ",":
                        self.skip_item()  # junk after a value
                    self.skip_ws_and_commas()
                    # Garbage between params is skipped; a new scheme ends
                    # this challenge.
                    while not self.at_end() and not self.param_ahead() and not self.scheme_ahead():
                        self.skip_item()
                        self.skip_ws_and_commas()
                    if self.at_end() or not self.param_ahead():
                        break
            yield Challenge(scheme.lower(), params, token68)


def parse_www_authenticate(values: Sequence[bytes]) -> list[Challenge]:
    """
    Parse every C{WWW-Authenticate} header value into challenges, in order.

    Never raises: unparseable parts are skipped.
    """
    out: list[Challenge] = []
    for value in values:
        try:
            text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
            out.extend(_Parser(text).challenges())
        except Exception:  # pragma: no cover - defence in depth
            continue
    return out


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def bearer_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """
    The first C{Bearer} challenge whose realm is an absolute http(s) URL.

    A Bearer challenge without a usable realm cannot lead to a token, so it
    is treated as absent (and L{token_url} can never fail on the result).
    """
    for c in challenges:
        if c.scheme == "bearer" and c.realm and _is_http_url(c.realm):
            return c
    return None


def basic_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """
    The first C{Basic} challenge, if any.
    """
    for c in challenges:
        if c.scheme == "basic":
            return c
    return None


def pull_scope(repository: str) -> str:
    """
    The token scope for pulling C{repository}.
    """
    return f"repository:{repository}:pull"


def _resource(scope: str) -> tuple[str, str]:
    """
    C{(type, name)} of a scope C{type:name:actions}; names may contain a
    port's colon (C{repository:host:5000/x:pull}), so split at both ends.
    """
    kind, _, rest = scope.partition(":")
    name, _, _ = rest.rpartition(":")
    return kind, name


def _scopes(challenge: Challenge, scope: str | None) -> list[str]:
    offered = (challenge.scope or "").split()
    if scope is None:
        return offered
    wanted = _resource(scope)[1]
    if any(_resource(s)[1] == wanted for s in offered):
        return offered
    return [scope]


def token_url(challenge: Challenge, scope: str | None) -> str:
    """
    The URL to fetch a token from: the realm with C{service} and C{scope}
    added to whatever query the realm already has.

    Which scope: the registry knows best what it wants, so when the
    challenge carries a scope for the same repository as C{scope}, the
    challenge's scope is used as is (it may ask for other actions or a
    resource type like C{repository(plugin)}; several space-separated
    scopes become several C{scope=} parameters).  A challenge scope for a
    I{different} repository comes from a challenge remembered from an
    earlier request (we reuse a registry's realm to fetch tokens before the
    first 401), so it is ignored and C{scope} is used.  With C{scope=None},
    the challenge's scope is used if it has one.

    @raise ValueError: if the realm is not an absolute http(s) URL (never
        for a challenge returned by L{bearer_challenge}).
    """
    realm = challenge.realm or ""
    if not _is_http_url(realm):
        raise ValueError(f"unusable token realm {realm!r}")
    parts = urlsplit(realm)
    query = [parts.query] if parts.query else []
    if challenge.service:
        query.append("service=" + quote(challenge.service, safe=""))
    for s in _scopes(challenge, scope):
        query.append("scope=" + quote(s, safe=""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(query), ""))
