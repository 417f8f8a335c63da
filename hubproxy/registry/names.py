# -*- test-case-name: hubproxy.test.test_names -*-
"""
What a C{/v2/} request names: which registry, which repository, which
manifest, blob or tag list.

The client's path (everything after C{/v2/}) becomes a L{Route}.  Every
piece is validated against the grammar of the OCI distribution spec before
anything is sent upstream, so an upstream URL is only ever built from a
repository name made of C{[a-z0-9._-]} components and a plain tag or digest.

Registry selection, in order:

 1. containerd's C{?ns=<host>} query names the registry outright and the
    whole name is the repository on it;
 2. otherwise a first path component that is a configured registry key
    (C{ghcr.io/owner/app}) selects that registry and is stripped;
 3. otherwise a first component that looks like a host (contains C{.} or
    C{:}, or is C{localhost}) and is not configured is refused: the client
    meant some registry we do not mirror;
 4. otherwise the default registry (Docker Hub), where a one-component name
    gets C{library/} (C{nginx} -> C{library/nginx}).

Like Docker's own reference parser, a one-component name is never a host:
C{/v2/foo.bar/manifests/1} is C{docker.io/library/foo.bar}.

Differences from the Go hubproxy (reference.md 2.1 and 12), on purpose:

 - A disabled or unconfigured registry named by C{ns} or by the path prefix
   is C{NAME_UNKNOWN}.  Go fell through to Docker Hub with the prefix left
   in the name, which then failed upstream with a misleading error (or,
   worse, pulled C{docker.io/ghcr.io/...} if someone had squatted it).
 - The split is at the I{last} C{/manifests/} or C{/blobs/}: references
   never contain a slash, while a repository may legitimately have a
   component called C{blobs} or C{manifests}.
 - The path is taken raw and percent-decoded here, once.  An encoded slash
   (C{%2F}) is refused, so no name can be built whose components differ
   from what access lists were checked against.
 - Upload, catalog and referrers paths are C{UNSUPPORTED} (a pull-only
   mirror) instead of Go's generic C{400 Invalid path format}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

__all__ = [
    "DIGEST_ALGORITHMS",
    "InvalidName",
    "MAX_NAME_LENGTH",
    "Route",
    "client_name",
    "is_supported_digest",
    "parse_image_reference",
    "parse_route",
    "validate_digest",
    "validate_repository",
    "validate_tag",
]

#: Longest repository name the distribution spec allows.
MAX_NAME_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_HEX = re.compile(r"[a-f0-9]+")

#: Registered digest algorithms we can verify, and the hex length of each.
DIGEST_ALGORITHMS: Mapping[str, int] = {"sha256": 64, "sha512": 128}

# Docker Hub's other spellings: Docker's reference parser maps
# index.docker.io to docker.io, and registry-1.docker.io is its API host.
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")

_SEPARATORS = ("/manifests/", "/blobs/")
_TAGS_SUFFIX = "/tags/list"


class InvalidName(ValueError):
    """
    A C{/v2/} path or image reference that cannot be served.

    @ivar code: the registry error code for the response body:
        C{NAME_INVALID}, C{TAG_INVALID}, C{DIGEST_INVALID}, C{NAME_UNKNOWN}
        (the registry is unknown or disabled here) or C{UNSUPPORTED} (a
        push, catalog or referrers path).
    @ivar message: a sentence for the client saying what was wrong.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Route:
    """
    One pull request, resolved.

    @ivar registry: the registry key from the configuration (C{docker.io},
        C{ghcr.io}).
    @ivar repository: the repository path on that registry's upstream
        (C{library/nginx}, C{owner/app}).
    @ivar kind: C{"manifests"}, C{"blobs"} or C{"tags"}.
    @ivar reference: a tag or digest for manifests, a digest for blobs,
        L{None} for a tag list.
    @ivar name: the (decoded) name as the client wrote it, e.g. C{nginx} or
        C{ghcr.io/owner/app}.  Not part of equality: two spellings of one
        upstream target are the same route.
    """

    registry: str
    repository: str
    kind: str
    reference: str | None
    name: str = field(default="", compare=False)

    @property
    def is_digest(self) -> bool:
        """
        Whether the reference is content-addressed (cacheable forever).
        """
        return self.reference is not None and ":" in self.reference


def client_name(route: Route) -> str:
    """
    The repository name as the client spelt it, for the C{name} field of a
    tag list and for C{Link} headers.  Docker and skopeo build the next
    page's URL from it, so it must be the client's name (C{ghcr.io/o/a},
    C{nginx}), not the upstream's (C{o/a}, C{library/nginx}) as in Go.
    """
    if route.name:
        return route.name
    return route.repository if route.registry == "docker.io" else f"{route.registry}/{route.repository}"


# -- grammar --------------------------------------------------------------


def validate_repository(name: str) -> str:
    """
    Check a repository name against the distribution grammar.

    @return: C{name}, unchanged.
    @raise InvalidName: C{NAME_INVALID}.
    """
    if not name:
        raise InvalidName("NAME_INVALID", "repository name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName("NAME_INVALID", f"repository name is longer than {MAX_NAME_LENGTH} characters")
    if _NAME_RE.fullmatch(name) is None:
        raise InvalidName(
            "NAME_INVALID",
            f"invalid repository name {name!r}: components are lower-case letters and digits "
            "separated by '.', '_', '__' or '-', joined by '/'",
        )
    return name


def validate_tag(tag: str) -> str:
    """
    Check a tag against the distribution grammar.

    @raise InvalidName: C{TAG_INVALID}.
    """
    if _TAG_RE.fullmatch(tag) is None:
        raise InvalidName("TAG_INVALID", f"invalid tag {tag!r}")
    return tag


def validate_digest(digest: str, allow_unsupported: bool = False) -> str:
    """
    Check a digest (C{algorithm:encoded}).

    C{sha256} and C{sha512} must be lower-case hex of the right length.
    Any other algorithm that fits the generic grammar is well-formed but
    cannot be verified by us, so it is refused unless C{allow_unsupported}.

    @raise InvalidName: C{DIGEST_INVALID}.
    """
    m = _DIGEST_RE.fullmatch(digest)
    if m is None:
        raise InvalidName("DIGEST_INVALID", f"invalid digest {digest!r}")
    algorithm, encoded = m.group(1), m.group(2)
    size = DIGEST_ALGORITHMS.get(algorithm)
    if size is None:
        if allow_unsupported:
            return digest
        raise InvalidName("DIGEST_INVALID", f"unsupported digest algorithm {algorithm!r} (sha256 and sha512 are)")
    if len(encoded) != size or _HEX.fullmatch(encoded) is None:
        raise InvalidName("DIGEST_INVALID", f"invalid {algorithm} digest {digest!r}")
    return digest


def is_supported_digest(digest: str) -> bool:
    """
    Whether C{digest} is a well-formed digest with an algorithm we verify.
    """
    try:
        validate_digest(digest)
    except InvalidName:
        return False
    return True


def _validate_reference(kind: str, reference: str) -> str:
    if kind == "blobs" or ":" in reference:
        return validate_digest(reference)
    return validate_tag(reference)


# -- percent-decoding -----------------------------------------------------


_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _decode(raw: str, code: str, what: str) -> str:
    """
    Percent-decode one piece of the path exactly once.  An encoded slash is
    refused: it would let a name's components differ from what the client's
    path appeared to say.
    """
    if "%" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEXDIGITS:
                raise InvalidName(code, f"malformed percent-escape in {what}")
            byte = int(pair, 16)
            if byte == 0x2F:
                raise InvalidName(code, f"encoded '/' is not allowed in {what}")
            out.append(byte)
            i += 3
        else:
            out += c.encode("utf-8", "surrogatepass")
            i += 1
    return out.decode("latin-1")


def _code_for(kind: str, reference: str) -> str:
    if kind == "blobs" or "%3a" in reference.lower() or ":" in reference:
        return "DIGEST_INVALID"
    return "TAG_INVALID"


# -- registry selection ---------------------------------------------------


def _lookup(key: str, registries: Mapping[str, object]) -> str | None:
    """
    The configured key matching C{key}, host names being case-insensitive.
    """
    if key in registries:
        return key
    lowered = key.lower()
    for configured in registries:
        if configured.lower() == lowered:
            return configured
    return None


def _looks_like_host(component: str) -> bool:
    """
    Docker's rule for "the first component is a registry host": it has a
    dot or a port, or is C{localhost}, and is a well-formed host (so C{..}
    is a bad name, not an unknown registry).
    """
    if _HOST_RE.fullmatch(component) is None:
        return False
    return "." in component or ":" in component or component.lower() == "localhost"


def _select(
    name: str,
    ns: str | None,
    registries: Mapping[str, object],
    is_enabled: Callable[[str], bool],
    default_registry: str,
) -> tuple[str, str]:
    """
    Pick the registry for C{name}: C{(registry key, name on that registry)}.
    """

    def usable(key: str) -> str:
        # The default registry is built in: usable unless configured off.
        if key == default_registry and key not in registries:
            return key
        if not is_enabled(key):
            raise InvalidName("NAME_UNKNOWN", f"registry {key} is not enabled on this mirror")
        return key

    def default_alias(host: str) -> str | None:
        if default_registry == "docker.io" and host.lower() in _DOCKER_HUB_ALIASES:
            return default_registry
        return host if host == default_registry else None

    if ns:
        key = _lookup(ns, registries) or default_alias(ns)
        if key is None:
            raise InvalidName("NAME_UNKNOWN", f"registry {ns} is not enabled on this mirror")
        return usable(key), name
    first, slash, rest = name.partition("/")
    if slash:
        key = _lookup(first, registries)
        if key is None and _looks_like_host(first):
            key = default_alias(first)
            if key is None:
                raise InvalidName("NAME_UNKNOWN", f"registry {first} is not configured on this mirror")
        if key is not None:
            return usable(key), rest
    return usable(default_registry), name


def _resolve(
    name: str,
    ns: str | None,
    registries: Mapping[str, object],
    is_enabled: Callable[[str], bool],
    default_registry: str,
) -> tuple[str, str]:
    if not name:
        raise InvalidName("NAME_INVALID", "repository name is empty")
    registry, repository = _select(name, ns, registries, is_enabled, default_registry)
    if not repository:
        raise InvalidName("NAME_INVALID", f"no repository named after registry {registry}")
    if registry == "docker.io" and "/" not in repository:
        repository = "library/" + repository
    validate_repository(repository)
    return registry, repository


# -- public entry points --------------------------------------------------


def parse_route(
    path: str,
    ns: str | None,
    registries: Mapping[str, object],
    is_enabled: Callable[[str], bool],
    default_registry: str = "docker.io",
) -> Route:
    """
    Resolve a C{/v2/} request path.

    @param path: the raw (still percent-encoded) path after C{/v2/}, without
        the query: C{nginx/manifests/latest}, C{ghcr.io/o/a/blobs/sha256:...},
        C{team/app/tags/list}.
    @param ns: containerd's C{?ns=} query value, or L{None}.
    @param registries: the configured registries, by key.
    @param is_enabled: whether a configured registry key is enabled.
    @param default_registry: the registry for names without a host.

    @raise InvalidName: for anything that cannot be served; never anything
        else, whatever C{path} and C{ns} hold.
    """
    if path.endswith(_TAGS_SUFFIX) or path == _TAGS_SUFFIX[1:]:
        raw_name = path[: -len(_TAGS_SUFFIX)] if path != _TAGS_SUFFIX[1:] else ""
        kind, raw_ref = "tags", None
    else:
        padded = "/" + path
        at, sep = max((padded.rfind(s), s) for s in _SEPARATORS)
        if at < 0:
            raise InvalidName("UNSUPPORTED", "only manifests, blobs and tags/list can be pulled through this mirror")
        raw_name = padded[1:at] if at > 0 else ""
        kind = sep.strip("/")
        raw_ref = padded[at + len(sep) :]
        if "/" in raw_ref or raw_ref == "uploads":
            if kind == "blobs" and raw_ref.partition("/")[0] == "uploads":
                raise InvalidName("UNSUPPORTED", "this mirror is pull-only: uploads are not supported")
            raise InvalidName("UNSUPPORTED", "only manifests, blobs and tags/list can be pulled through this mirror")
    name = _decode(raw_name, "NAME_INVALID", "repository names")
    registry, repository = _resolve(name, ns, registries, is_enabled, default_registry)
    reference = None
    if raw_ref is not None:
        reference = _validate_reference(kind, _decode(raw_ref, _code_for(kind, raw_ref), "references"))
    return Route(registry, repository, kind, reference, name=name)


def parse_image_reference(
    ref: str,
    registries: Mapping[str, object],
    is_enabled: Callable[[str], bool],
    default_registry: str = "docker.io",
) -> tuple[str, str, str]:
    """
    Resolve an image reference as users type it (C{nginx},
    C{nginx:1.25}, C{ghcr.io/o/a:1}, C{team/app@sha256:...},
    C{docker.io/library/x}) for the offline tools, with the same registry
    rules and errors as L{parse_route}.

    @return: C{(registry key, repository, tag or digest)}; the tag defaults
        to C{latest}, and a digest wins over a tag when both are given (as
        in Docker).
    @raise InvalidName: for anything that cannot be served.
    """
    text = ref.strip()
    name, at, digest = text.partition("@")
    if at:
        validate_digest(digest)
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = "latest"
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        validate_tag(tag)
    registry, repository = _resolve(name, None, registries, is_enabled, default_registry)
    return registry, repository, digest if at else tag
