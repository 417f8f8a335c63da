# -*- test-case-name: hubproxy.test.test_urls -*-
"""
Which URLs the file proxy accepts, and what they mean.

A client asks for ``/<url>`` (``/https://github.com/o/r/releases/...``,
``/github.com/o/r/raw/main/x.sh``, ``/https:/...`` after a reverse proxy merged
the slashes, or ``/http://...``).  This module turns that request target into a
L{Target}: the absolute upstream URL to fetch, what kind of resource it is, and
the ``owner/repo`` that C{[access]} lists are checked against.  Anything that is
not one of the shapes below raises L{RefusedURL}, whose C{reason} is the
plain-text body of the 403.

Why it is strict:

 - The proxy is not an open proxy.  Only download-shaped GitHub and Hugging
   Face URLs are accepted, never repository web pages, push endpoints or
   arbitrary hosts.
 - Access lists must not be bypassable, so owner and repository names must be
   plain names (C{[A-Za-z0-9._-]}).  A percent-encoded owner such as
   C{b%61duser} would be decoded by GitHub but not by a list match, so it is
   refused instead of being compared.
 - Dot segments, backslashes, user-info and odd ports are refused rather than
   normalised: each is a way to make the URL we check differ from the URL the
   upstream serves.

Everything is parsed with C{hyperlink}, segment by segment.  Path segments and
the query are kept exactly as the client sent them (C{%2F} inside a segment
stays C{%2F}; signed CDN queries are not re-encoded); the only rewrites are
C{blob} to C{raw} on github.com and the lower-cased host.

Go hubproxy differences (reference.md section 3 and 12.5): C{/http://...} is
accepted and keeps C{http} (Go mangled it into a 403); api.github.com also
accepts C{/users/...}, C{/orgs/.../repos} and C{/gists/...} (issue #101); HF
URLs are checked by shape, with the real C{org/name} as the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from hyperlink import URL

__all__ = [
    "HF_CDN_HOSTS",
    "HF_HUB_HOSTS",
    "KINDS",
    "REDIRECT_HOSTS",
    "RefusedURL",
    "Target",
    "is_proxyable_host",
    "parse_target",
    "proxied_url",
    "rewrite_location",
]


class RefusedURL(Exception):
    """
    The request target is not a URL this proxy serves.

    @ivar reason: one plain English sentence, suitable as a C{text/plain} 403
        body; it names what is allowed so users can fix their URL.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Every value L{Target.kind} can take.
KINDS = frozenset(
    {
        "release",
        "archive",
        "raw",
        "git",
        "gist",
        "api",
        "hf",
        "hf-cdn",
        "assets",
        "codeload",
    }
)


@dataclass(frozen=True)
class Target:
    """
    An accepted upstream URL.

    @ivar url: absolute C{http}/C{https} URL to fetch upstream (github.com blob
        URLs already rewritten to C{raw}).
    @ivar kind: one of L{KINDS}; the resource uses it to choose methods,
        script rewriting and HF header handling.
    @ivar owner: lower-cased GitHub owner (or HF organisation, gist user) for
        access lists; L{None} when the URL carries none (CDN and asset hosts,
        HF listings, legacy single-name HF repositories).
    @ivar repo: lower-cased repository name with C{.git} stripped (HF: the
        model/dataset/space name, gists: the gist id); L{None} when absent.
    """

    url: URL
    kind: str
    owner: str | None
    repo: str | None
    #: the URL names something that belongs to an owner it does not say
    #: (a gist by id): C{[access]} lists cannot be checked against it
    owner_unknown: bool = False

    def text(self) -> str:
        """
        The URL as the string to hand to the HTTP client.

        It is ASCII-only: non-ASCII request bytes were percent-encoded by
        L{parse_target}.
        """
        return self.url.to_text()


# Hosts -------------------------------------------------------------------

_GITHUB = "github.com"
_RAW_HOSTS = frozenset({"raw.githubusercontent.com", "raw.github.com"})
_MEDIA_HOST = "media.githubusercontent.com"
_GIST_HOSTS = frozenset({"gist.githubusercontent.com", "gist.github.com"})
_API_HOST = "api.github.com"
_CODELOAD_HOST = "codeload.github.com"
_RELEASE_CDN_HOSTS = frozenset(
    {
        "objects.githubusercontent.com",
        "release-assets.githubusercontent.com",
        "github-releases.githubusercontent.com",
    }
)
#: The Hugging Face Hub itself.
HF_HUB_HOSTS: frozenset[str] = frozenset({"huggingface.co", "hf.co"})
#: Where the Hub redirects file downloads (kind C{"hf-cdn"}).
HF_CDN_HOSTS: frozenset[str] = frozenset(
    {
        "cdn-lfs.hf.co",
        "cdn-lfs-us-1.hf.co",
        "cdn-lfs-eu-1.hf.co",
        "cdn-lfs.huggingface.co",
        "cdn-lfs-us-1.huggingface.co",
        "cdn-lfs-eu-1.huggingface.co",
        "cas-bridge.xethub.hf.co",
    }
)
_ASSET_HOSTS = frozenset(
    {
        "github.githubassets.com",
        "opengraph.githubassets.com",
        "avatars.githubusercontent.com",
    }
)

_ACCEPTED_HOSTS = (
    {_GITHUB, _MEDIA_HOST, _API_HOST, _CODELOAD_HOST}
    | _RAW_HOSTS
    | _GIST_HOSTS
    | _RELEASE_CDN_HOSTS
    | HF_HUB_HOSTS
    | HF_CDN_HOSTS
    | _ASSET_HOSTS
)

#: Hosts that a redirect I{from} an accepted URL is expected to reach:
#: release assets, archives, raw files, LFS media and HF blobs live on other
#: hosts than the URL the user typed.  For documentation and metrics only:
#: where a redirect may actually go is decided by the upstream address policy.
REDIRECT_HOSTS: frozenset[str] = frozenset(
    {_GITHUB, _CODELOAD_HOST, _MEDIA_HOST, "github-cloud.githubusercontent.com"}
    | _RAW_HOSTS
    | _GIST_HOSTS
    | _RELEASE_CDN_HOSTS
    | HF_HUB_HOSTS
    | HF_CDN_HOSTS
)

_DEFAULT_PORTS = {"http": 80, "https": 443}

_ALLOWED = (
    "Only these URLs can be proxied: github.com release, archive, blob/raw "
    "and git clone/fetch URLs; raw.githubusercontent.com files; gists; "
    "api.github.com /repos/, /users/, /orgs/<org>/repos and /gists/ "
    "endpoints; huggingface.co resolve, api and git URLs (models, datasets, "
    "spaces); Hugging Face CDN hosts; codeload.github.com and GitHub release "
    "asset hosts; githubassets.com assets."
)

# Owner, repository, gist and HF names: what GitHub and the Hub allow,
# deliberately without percent-escapes (see module docstring).
_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DOT_SEGMENTS = frozenset({".", ".."})
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\#]")

# Hugging Face API sub-resources that change a repository.  Reading is the
# whole point of a pull proxy; these are refused even though the Hub would
# check the forwarded token.  The xet token endpoints are refused because
# the proxy keeps clients off Xet (see hubproxy.files.hf).
_HF_API_REFUSED = frozenset(
    {
        "commit",
        "preupload",
        "settings",
        "xet-read-token",
        "xet-write-token",
        "lfs-files",
        "branch",
        "tag",
    }
)
_HF_REPO_TYPES = ("models", "datasets", "spaces")
_HF_FILE_ACTIONS = frozenset({"resolve", "raw"})


def _refuse(reason: str) -> RefusedURL:
    return RefusedURL(reason)


def _ascii(raw: bytes | str) -> str:
    """
    Percent-encode every non-ASCII byte so the rest of the parse, and the
    URL handed to the HTTP client, is ASCII.  curl sends raw UTF-8; browsers
    already encode it.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return "".join(chr(b) if b < 0x80 else "%%%02X" % (b,) for b in data)


def _decoded_dots(segment: str) -> str:
    """C{%2e} is a dot to every server that decodes before resolving."""
    return segment.replace("%2e", ".").replace("%2E", ".")


def _name(segment: str, what: str) -> str:
    """Validate one owner/repo-like segment and return its canonical form."""
    if not segment:
        raise _refuse(f"The {what} name is empty. {_ALLOWED}")
    if not _NAME.match(segment):
        raise _refuse(
            f"The {what} name {segment!r} may only contain letters, digits, "
            f"'.', '-' and '_'."
        )
    return segment.lower()


def _strip_git(repo: str) -> str:
    return repo[: -len(".git")] if repo.endswith(".git") and len(repo) > 4 else repo


def _has_file(segments: tuple[str, ...], start: int) -> bool:
    """At least one segment from C{start} on, and the last one non-empty."""
    return len(segments) > start and segments[-1] != ""


def _query_value(url: URL, name: str) -> list[str | None]:
    return [v for k, v in url.query if k == name]


def _check_git_service(url: URL) -> None:
    """
    Smart-HTTP discovery must ask for upload-pack: fetch and clone only.
    The dumb protocol (no service) is not served by GitHub or the Hub.
    """
    services = _query_value(url, "service")
    if services != ["git-upload-pack"]:
        if "git-receive-pack" in services:
            raise _refuse(
                "Pushing through this proxy is not allowed; only git clone "
                "and fetch (service=git-upload-pack) are proxied."
            )
        raise _refuse(
            "Git discovery URLs must ask for service=git-upload-pack; only "
            "git clone and fetch are proxied."
        )


def _git_endpoint(rest: tuple[str, ...]) -> str | None:
    """
    Classify the part of a repository path after C{owner/repo} as a git
    endpoint: C{"refs"} (info/refs), C{"upload"} (git-upload-pack),
    C{"lfs"} (LFS batch API), or L{None}.
    """
    if rest == ("info", "refs"):
        return "refs"
    if rest == ("git-upload-pack",):
        return "upload"
    if rest == ("info", "lfs", "objects", "batch"):
        return "lfs"
    return None


def _github(url: URL, seg: tuple[str, ...]) -> Target:
    if len(seg) < 3:
        raise _refuse(f"Repository pages are not proxied. {_ALLOWED}")
    owner = _name(seg[0], "owner")
    repo = _name(_strip_git(seg[1]), "repository")
    action = seg[2]
    if action in ("releases", "archive") and _has_file(seg, 3):
        return Target(url, "release" if action == "releases" else "archive", owner, repo)
    if action in ("raw", "blob") and _has_file(seg, 4):
        if action == "blob":
            # GitHub answers /raw/ with a redirect to raw.githubusercontent.com;
            # /blob/ would be an HTML page.  Only this segment is rewritten,
            # a file that is itself called "blob" keeps its name.
            url = url.replace(path=seg[:2] + ("raw",) + seg[3:])
        return Target(url, "raw", owner, repo)
    endpoint = _git_endpoint(seg[2:])
    if endpoint == "refs":
        _check_git_service(url)
    if endpoint is not None:
        return Target(url, "git", owner, repo)
    raise _refuse(
        f"github.com/{seg[0]}/{seg[1]}/{action}... is not a download URL. {_ALLOWED}"
    )


def _raw(url: URL, seg: tuple[str, ...]) -> Target:
    # owner/repo/ref/path...: a ref and at least one path segment.
    if not _has_file(seg, 3):
        raise _refuse(
            "raw.githubusercontent.com URLs need owner/repo/ref/path. " + _ALLOWED
        )
    return Target(url, "raw", _name(seg[0], "owner"), _name(seg[1], "repository"))


def _media(url: URL, seg: tuple[str, ...]) -> Target:
    # media.githubusercontent.com/media/owner/repo/ref/path: LFS files.
    if len(seg) < 1 or seg[0] != "media" or not _has_file(seg, 4):
        raise _refuse(
            "media.githubusercontent.com URLs need /media/owner/repo/ref/path. "
            + _ALLOWED
        )
    return Target(url, "raw", _name(seg[1], "owner"), _name(seg[2], "repository"))


def _gist(url: URL, seg: tuple[str, ...]) -> Target:
    if seg and seg[0].endswith(".git"):
        # gist.github.com/<id>.git/...: the clone URL GitHub shows, by id
        # only; the owner is not in it.
        owner, gist, rest, unknown = None, _name(_strip_git(seg[0]), "gist id"), seg[1:], True
    elif len(seg) < 2 or not seg[1]:
        raise _refuse(f"Gist URLs need a user and a gist id. {_ALLOWED}")
    else:
        owner, gist, rest, unknown = _name(seg[0], "gist user"), _name(_strip_git(seg[1]), "gist id"), seg[2:], False
    endpoint = _git_endpoint(rest)
    if endpoint == "refs":
        _check_git_service(url)
    # git smart HTTP (clone/fetch: info/refs, then a POST to git-upload-pack)
    kind = "git" if endpoint in ("refs", "upload") else "gist"
    return Target(url, kind, owner, gist, owner_unknown=unknown)


def _api(url: URL, seg: tuple[str, ...]) -> Target:
    head = seg[0] if seg else ""
    if head == "repos" and len(seg) >= 3:
        return Target(url, "api", _name(seg[1], "owner"), _name(seg[2], "repository"))
    if head == "users" and len(seg) >= 2:
        return Target(url, "api", _name(seg[1], "user"), None)
    if head == "orgs" and len(seg) in (2, 3) and seg[2:] in ((), ("repos",)):
        return Target(url, "api", _name(seg[1], "organisation"), None)
    if head == "gists" and len(seg) >= 2:
        return Target(url, "api", None, _name(seg[1], "gist id"), owner_unknown=True)
    raise _refuse(
        "Only api.github.com /repos/<owner>/<repo>, /users/<user>, "
        "/orgs/<org>/repos and /gists/<id> are proxied."
    )


def _hf_repo(url: URL, seg: tuple[str, ...]) -> Target:
    """
    C{[datasets/|spaces/]<org>/<name>/resolve/<rev>/<file>}, legacy
    C{<name>/resolve/...}, and the repository's git endpoints.
    """
    if seg and seg[0] in ("datasets", "spaces"):
        seg = seg[1:]
    # org/name/... first: a model called "resolve" under an org is a real
    # possibility, a single-name repo is legacy.
    for size in (2, 1):
        if len(seg) <= size:
            continue
        names, rest = seg[:size], seg[size:]
        if rest[0] in _HF_FILE_ACTIONS and _has_file(rest, 2):
            return _hf_target(url, names, git=False)
        endpoint = _git_endpoint(rest)
        if endpoint is not None:
            if endpoint == "refs":
                _check_git_service(url)
            return _hf_target(url, names, git=True)
    raise _refuse(
        "Only Hugging Face file downloads (.../resolve/<revision>/<file>), "
        "/api/models|datasets|spaces/... and git clone URLs are proxied."
    )


def _hf_target(url: URL, names: tuple[str, ...], git: bool) -> Target:
    if len(names) == 2:
        owner: str | None = _name(names[0], "organisation")
        last = names[1]
    else:
        owner, last = None, names[0]
    repo = _name(_strip_git(last) if git else last, "repository")
    return Target(url, "hf", owner, repo)


def _hf_api(url: URL, seg: tuple[str, ...]) -> Target:
    # seg starts after "api".
    if seg and seg[0] == "resolve-cache" and _has_file(seg, 1):
        return Target(url, "hf", *_hf_api_names(seg[2:]))
    if seg and seg[0] in _HF_REPO_TYPES:
        refused = _HF_API_REFUSED.intersection(seg[1:])
        if refused:
            raise _refuse(
                f"The Hugging Face API endpoint {sorted(refused)[0]!r} is not "
                "proxied; only read-only repository APIs are."
            )
        return Target(url, "hf", *_hf_api_names(seg[1:]))
    raise _refuse(
        "Only the Hugging Face /api/models, /api/datasets, /api/spaces and "
        "/api/resolve-cache endpoints are proxied."
    )


#: Second path element of /api/<type>s/<name>/<sub> that marks <name> as a
#: legacy single-name repository rather than an organisation.
_HF_API_SUBRESOURCES = frozenset(
    {
        "revision",
        "tree",
        "paths-info",
        "refs",
        "commits",
        "treesize",
        "parquet",
        "resolve",
        "discussions",
        "compare",
        "croissant",
    }
)


def _hf_api_names(seg: tuple[str, ...]) -> tuple[str | None, str | None]:
    """org/name from the path after /api/<type>s/ (or resolve-cache/<type>s/)."""
    if not seg or not seg[0]:
        return None, None  # a listing such as /api/models?search=...
    if len(seg) == 1 or seg[1] in _HF_API_SUBRESOURCES or not seg[1]:
        return None, _name(seg[0], "repository")
    return _name(seg[0], "organisation"), _name(seg[1], "repository")


def _hf(url: URL, seg: tuple[str, ...]) -> Target:
    if seg and seg[0] == "api":
        return _hf_api(url, seg[1:])
    return _hf_repo(url, seg)


def _codeload(url: URL, seg: tuple[str, ...]) -> Target:
    if not _has_file(seg, 2):
        raise _refuse("codeload.github.com URLs need owner/repo/format/ref. " + _ALLOWED)
    return Target(url, "codeload", _name(seg[0], "owner"), _name(seg[1], "repository"))


_Shape = Callable[[URL, "tuple[str, ...]"], Target]


def _anything(kind: str) -> _Shape:
    def shape(url: URL, seg: tuple[str, ...]) -> Target:
        if not _has_file(seg, 0):
            raise _refuse(f"{url.host} URLs need a file path. {_ALLOWED}")
        return Target(url, kind, None, None)

    return shape


def _shape_for(host: str) -> _Shape | None:
    """The parser for the paths of an accepted host; L{None} for others."""
    if host == _GITHUB:
        return _github
    if host in _RAW_HOSTS:
        return _raw
    if host == _MEDIA_HOST:
        return _media
    if host in _GIST_HOSTS:
        return _gist
    if host == _API_HOST:
        return _api
    if host in HF_HUB_HOSTS:
        return _hf
    if host == _CODELOAD_HOST:
        return _codeload
    if host in _RELEASE_CDN_HOSTS:
        return _anything("release")
    if host in HF_CDN_HOSTS:
        return _anything("hf-cdn")
    if host in _ASSET_HOSTS:
        return _anything("assets")
    return None


def _normal_host(host: str) -> str:
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


def _authority(scheme: str, text: str) -> str:
    """
    Parse the host segment (C{host[:port]}) and return the normalised host.
    User-info and non-default ports are refused: they either carry
    credentials in the path or aim at a service GitHub does not run.
    """
    if "@" in text:
        raise _refuse("URLs with a user name or password are not proxied.")
    try:
        parsed = URL.from_text("//" + text)
    except Exception:
        raise _refuse(f"{text!r} is not a valid host name. {_ALLOWED}") from None
    if parsed.port is not None and parsed.port != _DEFAULT_PORTS[scheme]:
        raise _refuse("Only the default port of http and https is proxied.")
    return _normal_host(parsed.host)


def parse_target(raw: bytes | str) -> Target:
    """
    Turn a request target (path and query as received, starting with C{/})
    into the upstream L{Target}.

    @raise RefusedURL: for anything that is not an accepted shape; the
        reason names what is allowed.  No other exception escapes, whatever
        the input, so callers can map this one exception to a 403.
    """
    text = _ascii(raw)
    if not text.startswith("/"):
        raise _refuse(f"Request paths must start with '/'. {_ALLOWED}")
    if _FORBIDDEN_CHARS.search(text):
        raise _refuse(
            "URLs with spaces, control characters, backslashes or fragments "
            "are not proxied."
        )
    if _PERCENT.search(text):
        raise _refuse("The URL contains a malformed percent-escape.")
    try:
        # A dummy origin makes hyperlink read the whole target as a path, even
        # when it starts with "//" (which alone would be a network-path reference).
        request = URL.from_text("http://request.invalid" + text)
    except Exception:
        raise _refuse(f"The URL could not be parsed. {_ALLOWED}") from None
    segments = tuple(request.path)
    for segment in segments:
        lowered = segment.lower()
        if _decoded_dots(segment) in _DOT_SEGMENTS:
            raise _refuse("URLs with '.' or '..' path segments are not proxied.")
        if "%5c" in lowered:
            raise _refuse("URLs with backslashes are not proxied.")

    # Normalise: drop the leading empty segments, read an optional scheme
    # ("https:" from /https://, /https:/ and /http://), then drop the empty
    # segments a "//" left before the host.
    index = 0
    while index < len(segments) and segments[index] == "":
        index += 1
    scheme = "https"
    if index < len(segments) and segments[index].endswith(":"):
        scheme = segments[index][:-1].lower()
        if scheme not in _DEFAULT_PORTS:
            raise _refuse("Only http and https URLs are proxied.")
        index += 1
        while index < len(segments) and segments[index] == "":
            index += 1
    if index >= len(segments):
        raise _refuse(f"No URL was given. {_ALLOWED}")

    host = _authority(scheme, segments[index])
    path = segments[index + 1 :]
    shape = _shape_for(host)
    if shape is None:
        raise _refuse(f"The host {host!r} is not proxied. {_ALLOWED}")
    for segment in path:
        if segment == "git-receive-pack":
            raise _refuse(
                "Pushing through this proxy is not allowed; only git clone "
                "and fetch are proxied."
            )
    try:
        url = URL(scheme=scheme, host=host, path=path, query=request.query)
    except Exception:
        raise _refuse(f"The URL could not be parsed. {_ALLOWED}") from None
    return shape(url, path)


def is_proxyable_host(host: str) -> bool:
    """
    Whether absolute URLs on C{host} may be rewritten into the proxy's
    prefix form: the hosts L{parse_target} accepts.  Upstream redirects and
    pagination links to these hosts are sent back through the proxy so that
    the client never talks to them directly.
    """
    return _normal_host(host) in _ACCEPTED_HOSTS


def proxied_url(target_url: str, proxy_origin: str) -> str:
    """
    The prefix form of C{target_url}: C{"https://proxy.example/https://github.com/..."}.

    @param proxy_origin: C{scheme://host[:port]}, optionally with a base path
        (a proxy mounted under a path); a trailing slash is ignored.
    """
    return proxy_origin.rstrip("/") + "/" + target_url


def rewrite_location(location: str, base_url: str, proxy_origin: str) -> str | None:
    """
    Map an upstream redirect to what the client should see.

    The C{Location} is resolved against C{base_url} (the upstream URL that
    answered), because a relative C{Location} such as the Hub's
    C{/api/resolve-cache/...} would otherwise be resolved by the client
    against the I{proxy} URL and lose the C{/https://huggingface.co} prefix.

    @return: the proxy-prefix form when the resolved URL is itself an
        accepted target (a proxyable host I{and} an accepted shape, so the
        client's next request is not a 403); L{None} when it is not, and the
        caller follows the redirect server-side (subject to the address
        policy) instead.
    """
    try:
        resolved = URL.from_text(_ascii(base_url)).click(_ascii(location))
    except Exception:
        return None
    if resolved.scheme not in _DEFAULT_PORTS or not resolved.host:
        return None
    if not is_proxyable_host(resolved.host):
        return None
    resolved = resolved.replace(fragment="")
    text = resolved.to_text()
    try:
        parse_target("/" + text)
    except RefusedURL:
        return None
    return proxied_url(text, proxy_origin)
