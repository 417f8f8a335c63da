# -*- test-case-name: hubproxy.test.test_tarball -*-
"""
Offline image tars: C{docker load}-able archives streamed from the registry.

What goes into the tar (the C{docker save} layout that C{docker load},
C{podman load} and C{skopeo ... docker-archive:} read):

 - C{<hex>.json}: each image's config blob, byte for byte as the registry
   has it (the Go version re-serialised it, changing the image ID and
   dropping unknown fields);
 - C{<hex>/layer.tar}: each layer blob as the registry has it (usually
   gzip; C{docker load} decompresses), written I{once} however many images
   share it;
 - C{manifest.json} and C{repositories} at the end.

How it is produced: everything that can fail cheaply (names, access lists,
manifests, platform selection, configs) is done before the first byte, so
those failures are ordinary JSON errors.  Then L{stream_tar} registers a
L{TarWriter} as the request's push producer: tar headers are generated,
blob bodies are relayed from the upstream through L{_BlobSink} with pause
and resume forwarded to the upstream connection, so memory stays at about
one socket buffer whatever the layer sizes.  Every blob is checked against
its descriptor's size and sha256 while it streams; a mismatch, an upstream
failure or a stall after the first byte I{aborts} the client connection,
so a truncated tar never looks complete (the Go version finished the HTTP
response normally after logging the error).

Registry access goes through the registry mirror's own upstream auth
(L{hubproxy.registry.auth.RegistryAuth}, token cache included) and its
manifest cache; there is no second registry client.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

from hubproxy.errors import BadGateway, BadRequest, Forbidden, GatewayTimeout, HubproxyError, abort, client_gone
from hubproxy.registry.manifests import (
    DEFAULT_ACCEPT,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_SCHEMA2,
    OCI_IMAGE_INDEX,
    OCI_IMAGE_MANIFEST,
    CachedManifest,
    digest_of,
    normalise_accept,
    verify_digest,
)
from hubproxy.registry.names import InvalidName, parse_image_reference, validate_digest
from hubproxy.upstream.client import discard, read_body

WRITE_SIZE = 64 * 1024
MAX_MANIFEST = 4 * 1024 * 1024
MAX_CONFIG = 8 * 1024 * 1024
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_IMAGE_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST_SCHEMA2, OCI_IMAGE_MANIFEST})
_ACCEPT_KEY = normalise_accept([DEFAULT_ACCEPT])

# Docker's platform normalisation: the default variant of each architecture.
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm", "i686": "386", "i386": "386"}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


# -- platforms --------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """
    C{os/architecture[/variant]}, compared after Docker's normalisation:
    C{linux/arm64} is C{linux/arm64/v8} and C{linux/arm} is
    C{linux/arm/v7}, as C{docker pull --platform} treats them.
    """

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(p and p.replace("-", "").replace("_", "").isalnum() for p in parts):
            raise BadRequest(f"invalid platform {text!r}: use os/architecture[/variant], e.g. linux/arm64", code="PLATFORM_INVALID")
        return cls(*parts)

    @classmethod
    def from_dict(cls, data: Any) -> "Platform | None":
        if not isinstance(data, dict):
            return None
        os_, arch = data.get("os"), data.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
            return None
        variant = data.get("variant")
        return cls(os_.lower(), arch.lower(), variant.lower() if isinstance(variant, str) else "")

    def normalised(self) -> "Platform":
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or _DEFAULT_VARIANT.get(arch, "")
        if arch == "arm64" and variant == "8":
            variant = "v8"
        return Platform(self.os, arch, variant)

    def matches(self, other: "Platform") -> bool:
        return self.normalised() == other.normalised()

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


DEFAULT_PLATFORM = Platform("linux", "amd64")


def parse_platform(text: str | None) -> Platform | None:
    """
    The platform a client asked for, or L{None} for "the default".
    """
    if text is None or not text.strip():
        return None
    return Platform.parse(text)


# -- images -----------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """
    An image reference as the user typed it, resolved to a registry.

    @ivar text: the reference as typed (stripped).
    @ivar registry: the registry key (C{docker.io}, C{ghcr.io}).
    @ivar repository: the repository on it (C{library/nginx}).
    @ivar reference: tag or digest.
    """

    text: str
    registry: str
    repository: str
    reference: str

    @property
    def is_digest(self) -> bool:
        return ":" in self.reference

    @property
    def display_name(self) -> str:
        """
        The name C{docker images} shows for it: C{nginx}, C{user/app},
        C{ghcr.io/owner/app}.
        """
        if self.registry == "docker.io":
            return self.repository[len("library/") :] if self.repository.startswith("library/") else self.repository
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        sep = "@" if self.is_digest else ":"
        return f"{self.display_name}{sep}{self.reference}"

    @property
    def repo_tag(self) -> str | None:
        """
        The C{RepoTags} entry, or L{None} for a digest reference (Docker
        cannot tag an image with a digest).
        """
        return None if self.is_digest else f"{self.display_name}:{self.reference}"

    @property
    def file_stem(self) -> str:
        """
        A file name for a single-image tar: C{nginx_latest}.
        """
        text = self.canonical.replace("@sha256:", "_").replace("/", "_").replace(":", "_")
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:200]


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]


@dataclass
class ResolvedImage:
    """
    One image ready to be written: its config bytes are already fetched and
    verified, its layers are descriptors.
    """

    spec: ImageSpec
    manifest_digest: str
    platform: str
    config: Blob
    config_bytes: bytes
    layers: list[Blob] = field(default_factory=list)


def _blob(desc: Any, what: str) -> Blob:
    if not isinstance(desc, dict):
        raise BadGateway(f"upstream manifest has a malformed {what} descriptor")
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadGateway(f"upstream manifest has a malformed {what} descriptor")
    try:
        validate_digest(digest)
    except InvalidName:
        raise BadGateway(f"upstream manifest names an unusable {what} digest {digest!r}") from None
    if not digest.startswith("sha256:"):
        raise BadGateway(f"{what} digest {digest} is not sha256; docker-save archives need sha256")
    return Blob(digest, size, str(desc.get("mediaType") or ""))


def _platforms_of(index: dict[str, Any]) -> list[tuple[Platform, dict[str, Any]]]:
    """
    The runnable entries of an index (attestation entries, whose platform
    is C{unknown/unknown}, and entries without a platform are skipped).
    """
    out = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict):
            continue
        platform = Platform.from_dict(entry.get("platform"))
        if platform is None or platform.os == "unknown" or platform.architecture == "unknown":
            continue
        out.append((platform, entry))
    return out


class ImageResolver:
    """
    Turns references into L{ResolvedImage}s and opens blob bodies, through
    the registry mirror's auth and manifest cache.
    """

    log = Logger()

    def __init__(self, app: Any) -> None:
        self._app = app

    @property
    def _registry(self) -> Any:
        return self._app.extras["registry"]

    # -- names ------------------------------------------------------------

    def parse(self, text: str, default_tag: str | None = None) -> ImageSpec:
        """
        Resolve and authorise one reference as typed.

        @param default_tag: the tag for a reference without one (the Go
            API's C{&tag=}); C{latest} otherwise.
        @raise BadRequest: malformed, or a registry not enabled here.
        @raise Forbidden: refused by the C{[access]} lists.
        """
        text = text.strip()
        if not text:
            raise BadRequest("empty image reference", code="NAME_INVALID")
        if len(text) > 512:
            raise BadRequest("image reference too long", code="NAME_INVALID")
        if default_tag and "@" not in text and ":" not in text.rpartition("/")[2]:
            text = f"{text}:{default_tag}"
        config = self._app.config
        try:
            registry, repository, reference = parse_image_reference(
                text, config.registries, lambda name: config.enabled_registry(name) is not None
            )
        except InvalidName as e:
            raise BadRequest(f"{text}: {e.message}", code=e.code) from None
        access = self._app.extras.get("repo_access")
        if access is not None:
            reason = access.check_image(registry, repository)
            if reason:
                refusals = self._app.extras.get("count_refusal")
                if refusals is not None:
                    refusals("repository")
                raise Forbidden(reason)
        return ImageSpec(text, registry, repository, reference)

    # -- manifests ----------------------------------------------------------

    async def manifest(self, spec: ImageSpec, reference: str) -> CachedManifest:
        """
        The manifest (or index) C{reference} of C{spec}'s repository, from
        the mirror's cache when fresh, else from the upstream.
        """
        registry = self._registry
        cache = registry.manifests
        key = (spec.registry, spec.repository, reference, _ACCEPT_KEY)
        if cache is not None:
            cached = cache.get_fresh(key)
            if cached is not None:
                return cached  # type: ignore[no-any-return]
        reg = self._registry_config(spec)
        url = f"{reg.upstream}/v2/{spec.repository}/manifests/{reference}"
        response = await registry.auth.request(reg, spec.repository, "GET", url, Headers({b"accept": [DEFAULT_ACCEPT]}))
        clock, idle = self._app.clock, self._app.config.network.idle_timeout
        if response.code != 200:
            from hubproxy.registry.resource import upstream_error

            try:
                body = await read_body(response.response, 64 * 1024, clock, idle)
            except HubproxyError:
                body = b""
            err = upstream_error(response.response, body, "manifests")
            if err.status == 404:
                err = HubproxyError(f"{spec.canonical}: manifest unknown to the upstream registry", status=404, code="MANIFEST_UNKNOWN")
            raise err
        body = await read_body(response.response, MAX_MANIFEST, clock, idle)
        if ":" in reference and not verify_digest(body, reference):
            raise BadGateway(f"upstream manifest does not match digest {reference}")
        media_type = (response.header(b"content-type") or b"").decode("latin-1").split(";")[0].strip()
        manifest = CachedManifest(body=body, media_type=media_type, digest=reference if ":" in reference else digest_of(body), stored_at=clock.seconds())
        if cache is not None:
            cache.put(key, manifest)
        return manifest

    def _registry_config(self, spec: ImageSpec) -> Any:
        reg = self._app.config.enabled_registry(spec.registry)
        if reg is None:
            raise BadRequest(f"registry {spec.registry} is not enabled on this mirror", code="NAME_UNKNOWN")
        return reg

    @staticmethod
    def _parse(manifest: CachedManifest, what: str) -> tuple[str, dict[str, Any]]:
        try:
            doc = json.loads(manifest.body)
        except ValueError:
            raise BadGateway(f"upstream sent an unparsable manifest for {what}") from None
        if not isinstance(doc, dict):
            raise BadGateway(f"upstream sent an unparsable manifest for {what}")
        media_type = doc.get("mediaType") or manifest.media_type
        if not media_type:
            media_type = OCI_IMAGE_INDEX if "manifests" in doc else OCI_IMAGE_MANIFEST
        if media_type not in INDEX_TYPES and media_type not in IMAGE_TYPES:
            raise HubproxyError(f"{what}: manifest type {media_type} is not supported (schema 1 images cannot be exported)", status=422, code="UNSUPPORTED")
        return media_type, doc

    async def info(self, spec: ImageSpec) -> dict[str, Any]:
        """
        The Go C{/api/image/info} data for C{spec}.
        """
        manifest = await self.manifest(spec, spec.reference)
        media_type, doc = self._parse(manifest, spec.canonical)
        platforms: list[str] = []
        multi = media_type in INDEX_TYPES
        if multi:
            platforms = [str(p) for p, _ in _platforms_of(doc)]
        else:
            config = await self._config(spec, _blob(doc.get("config"), "config"))
            platform = _config_platform(config)
            if platform is not None:
                platforms = [str(platform)]
        return {
            "name": spec.canonical,
            "registry": spec.registry,
            "repository": spec.repository,
            "mediaType": media_type,
            "digest": manifest.digest,
            "size": len(manifest.body),
            "multiArch": multi,
            "platforms": platforms,
        }

    async def resolve(self, spec: ImageSpec, platform: Platform | None) -> ResolvedImage:
        """
        Pick the manifest for C{platform} and fetch (and verify) its config.

        Without a platform, C{linux/amd64} is used, or the only platform of
        an index that has one, or a single-platform image as it is.  A
        platform asked for that the image does not have is a 400 listing
        those it has (never a silent fallback to another one).
        """
        manifest = await self.manifest(spec, spec.reference)
        media_type, doc = self._parse(manifest, spec.canonical)
        manifest_digest = manifest.digest
        chosen: Platform | None = None
        if media_type in INDEX_TYPES:
            entries = _platforms_of(doc)
            want = platform or DEFAULT_PLATFORM
            matches = [(p, e) for p, e in entries if p.matches(want)]
            if not matches and platform is None and len(entries) == 1:
                matches = entries
            if not matches:
                available = [str(p) for p, _ in entries]
                raise BadRequest(
                    f"{spec.canonical} has no {want} image; available platforms: {', '.join(available) or 'none'}",
                    code="PLATFORM_UNKNOWN",
                    detail={"platforms": available},
                )
            chosen, entry = matches[0]
            digest = entry.get("digest")
            if not isinstance(digest, str):
                raise BadGateway("upstream index entry without a digest")
            try:
                validate_digest(digest)
            except InvalidName:
                raise BadGateway(f"upstream index names an unusable digest {digest!r}") from None
            manifest = await self.manifest(spec, digest)
            manifest_digest = digest
            media_type, doc = self._parse(manifest, f"{spec.canonical} ({chosen})")
            if media_type in INDEX_TYPES:
                raise HubproxyError(f"{spec.canonical}: nested image indexes are not supported", status=422, code="UNSUPPORTED")
        config_desc = _blob(doc.get("config"), "config")
        layers = [_blob(d, "layer") for d in doc.get("layers") or []]
        config = await self._config(spec, config_desc)
        actual = _config_platform(config)
        if chosen is None:
            # A single-platform image is what it is.  Asked for explicitly,
            # another platform is the same 400 as for an index (Go sent it
            # anyway, its #97); with no platform asked for, it is used as
            # it is.  X-Hubproxy-Platforms tells what was sent.
            if platform is not None and actual is not None and not actual.matches(platform):
                raise BadRequest(
                    f"{spec.canonical} is a single-platform {actual} image, it has no {platform} image;"
                    f" available platforms: {actual}",
                    code="PLATFORM_UNKNOWN",
                    detail={"platforms": [str(actual)]},
                )
            chosen = actual
        return ResolvedImage(spec, manifest_digest, str(chosen or ""), config_desc, config, layers)

    async def _config(self, spec: ImageSpec, desc: Blob) -> bytes:
        if desc.size > MAX_CONFIG:
            raise BadGateway(f"image config of {desc.size} bytes is too large")
        response = await self.open_blob(spec, desc)
        body = await read_body(response, MAX_CONFIG, self._app.clock, self._app.config.network.idle_timeout)
        if len(body) != desc.size or not verify_digest(body, desc.digest):
            raise BadGateway(f"upstream config blob does not match {desc.digest}")
        return body

    async def open_blob(self, spec: ImageSpec, blob: Blob) -> Any:
        """
        Start fetching C{blob}; returns the (unread) 200 response.
        """
        reg = self._registry_config(spec)
        url = f"{reg.upstream}/v2/{spec.repository}/blobs/{blob.digest}"
        response = await self._registry.auth.request(reg, spec.repository, "GET", url, Headers())
        if response.code != 200:
            from hubproxy.registry.resource import upstream_error

            try:
                body = await read_body(response.response, 64 * 1024, self._app.clock, self._app.config.network.idle_timeout)
            except HubproxyError:
                body = b""
            err = upstream_error(response.response, body, "blobs")
            if err.status < 500 and err.status != 429:
                # Whatever the upstream said, a blob its own manifest names
                # is missing or refused: that is the upstream's fault.
                err = BadGateway(f"upstream could not serve blob {blob.digest} of {spec.canonical}: {err.message}")
            raise err
        return response.response


def _config_platform(config: bytes) -> Platform | None:
    try:
        doc = json.loads(config)
    except ValueError:
        return None
    return Platform.from_dict(doc) if isinstance(doc, dict) else None


# -- tar ----------------------------------------------------------------------


def tar_header(name: str, size: int, directory: bool = False) -> bytes:
    """
    A deterministic tar header (PAX where USTAR cannot hold the size).
    """
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def tar_file(name: str, data: bytes) -> bytes:
    return tar_header(name, len(data)) + data + padding(len(data))


END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


def archive_metadata(images: list[ResolvedImage]) -> tuple[bytes, bytes]:
    """
    C{manifest.json} and C{repositories} for C{images}.
    """
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        tag = image.spec.repo_tag
        manifest.append(
            {
                "Config": f"{image.config.hex}.json",
                "RepoTags": [tag] if tag else [],
                "Layers": [f"{layer.hex}/layer.tar" for layer in image.layers],
            }
        )
        if tag:
            repo, _, t = tag.rpartition(":")
            repositories.setdefault(repo, {})[t] = image.config.hex
    return (
        json.dumps(manifest, separators=(",", ":")).encode() + b"\n",
        json.dumps(repositories, separators=(",", ":")).encode() + b"\n",
    )


@implementer(IPushProducer)
class TarWriter:
    """
    The push producer registered on the request for a whole tar.

    Generated bytes are coalesced into writes of at least C{WRITE_SIZE}
    (each C{request.write} is one HTTP chunk).  Pause and resume from the
    client's connection are forwarded to whichever upstream blob body is
    being relayed (L{attach}).
    """

    def __init__(self, request: Request) -> None:
        self.request = request
        self.paused = False
        self.gone = False
        self.sent = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._upstream: Any = None

    def write(self, data: bytes) -> None:
        if self.gone or not data:
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= WRITE_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self.gone:
            return
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer = []
        self._buffered = 0
        self.sent += len(data)
        self.request.write(data)

    def attach(self, transport: Any) -> None:
        self._upstream = transport
        if self.paused or self.gone:
            transport.pauseProducing() if not self.gone else transport.stopProducing()

    def detach(self) -> None:
        self._upstream = None

    def pauseProducing(self) -> None:
        self.paused = True
        if self._upstream is not None:
            self._upstream.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self._upstream is not None and not self.gone:
            self._upstream.resumeProducing()

    def stopProducing(self) -> None:
        self.gone = True
        self._buffer = []
        if self._upstream is not None:
            self._upstream.stopProducing()


class _BlobSink(Protocol):
    """
    Relays one blob body into the L{TarWriter}, checking size and digest.
    """

    def __init__(self, writer: TarWriter, blob: Blob, done: defer.Deferred[int], clock: IReactorTime, idle_timeout: float, on_data: Any) -> None:
        self._writer = writer
        self._blob = blob
        self._done = done
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._on_data = on_data
        self._hash = hashlib.sha256()
        self._count = 0
        self._failed: HubproxyError | None = None
        self._timer: Any = None

    def connectionMade(self) -> None:
        self._writer.attach(self.transport)
        self._timer = self._clock.callLater(self._idle_timeout, self._idle)

    def _idle(self) -> None:
        self._timer = None
        if self._writer.paused:
            # The client is slow, not the upstream.
            self._timer = self._clock.callLater(self._idle_timeout, self._idle)
            return
        self._fail(GatewayTimeout(f"upstream sent nothing for {self._idle_timeout:g}s while relaying blob {self._blob.digest}"))

    def _fail(self, err: HubproxyError) -> None:
        if self._failed is None:
            self._failed = err
        # The body transport is Twisted's TransportProxyProducer.
        cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._failed is not None or self._writer.gone:
            return
        self._count += len(data)
        if self._count > self._blob.size:
            self._fail(BadGateway(f"upstream blob {self._blob.digest} is longer than its {self._blob.size} byte descriptor"))
            return
        if self._timer is not None:
            self._timer.reset(self._idle_timeout)
        self._hash.update(data)
        if self._on_data is not None:
            self._on_data(len(data))
        self._writer.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._writer.detach()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._done.called:
            return
        if self._writer.gone:
            self._done.errback(defer.CancelledError())
        elif self._failed is not None:
            self._done.errback(self._failed)
        elif not reason.check(ResponseDone, PotentialDataLoss):
            self._done.errback(BadGateway(f"upstream connection broke while relaying blob {self._blob.digest}"))
        elif self._count != self._blob.size:
            self._done.errback(BadGateway(f"upstream blob {self._blob.digest} ended after {self._count} of {self._blob.size} bytes"))
        elif "sha256:" + self._hash.hexdigest() != self._blob.digest:
            self._done.errback(BadGateway(f"upstream blob does not match its digest {self._blob.digest}"))
        else:
            self._done.callback(self._count)


async def stream_tar(
    request: Request,
    images: list[ResolvedImage],
    resolver: ImageResolver,
    *,
    clock: IReactorTime,
    idle_timeout: float,
    on_data: Any = None,
    log: Logger | None = None,
) -> int:
    """
    Write the tar of C{images} into C{request} and finish it.

    Status and headers must be set.  Returns the bytes written.  On failure
    the request is aborted if anything was written (else left for the
    caller's error response) and the failure is raised.
    """
    writer = TarWriter(request)
    request.registerProducer(writer, True)
    written: set[str] = set()
    try:
        for image in images:
            if image.config.digest not in written:
                written.add(image.config.digest)
                writer.write(tar_file(f"{image.config.hex}.json", image.config_bytes))
        for image in images:
            for layer in image.layers:
                if layer.digest in written:
                    continue
                written.add(layer.digest)
                writer.write(tar_header(f"{layer.hex}/", 0, directory=True))
                writer.write(tar_header(f"{layer.hex}/layer.tar", layer.size))
                writer.flush()
                body = await resolver.open_blob(image.spec, layer)
                if writer.gone or client_gone(request):
                    discard(body)
                    raise defer.CancelledError()
                done: defer.Deferred[int] = defer.Deferred()
                body.deliverBody(_BlobSink(writer, layer, done, clock, idle_timeout, on_data))
                await done
                writer.write(padding(layer.size))
        manifest, repositories = archive_metadata(images)
        writer.write(tar_file("manifest.json", manifest))
        writer.write(tar_file("repositories", repositories))
        writer.write(END_OF_ARCHIVE)
        writer.flush()
    except BaseException as e:
        writer.gone = True
        if not client_gone(request):
            if request.producer is not None:
                request.unregisterProducer()
            if request.startedWriting:
                if log is not None and not isinstance(e, defer.CancelledError):
                    log.warn(
                        "aborted {uri} after {sent} bytes: {reason}",
                        uri=request.uri.decode("latin-1")[:2048],
                        sent=writer.sent,
                        reason=getattr(e, "message", None) or repr(e),
                    )
                abort(request)
                # Logged here; nothing more can be said to this client.
                raise defer.CancelledError() from e
            request.responseHeaders.removeHeader(b"content-disposition")
        raise
    if not client_gone(request):
        request.unregisterProducer()
        request.finish()
    return writer.sent
