# -*- test-case-name: hubproxy.test.test_tarball -*-
"""
HTTP endpoints of the offline image tars.

 - C{GET /download?images=nginx:latest,redis:alpine[&platform=linux/arm64]}:
   one request, the tar streams back (curl, wget, a browser link);
 - the Go version's two-step API, kept for its web UI and scripts:
   C{GET /api/image/download?image=&mode=prepare[&platform=&tag=&compressed=]}
   and C{POST /api/image/batch?mode=prepare} (JSON C{{images, platform,
   useCompressedLayers}}) return C{{"download_url": ...}} with a one-time
   token (2 minutes, bound to the client's address and User-Agent), which
   C{GET /api/image/download?image=&token=} and C{GET /api/image/batch?token=}
   redeem;
 - C{GET /api/image/info?image=&tag=}: media type, digest, platforms.

Differences from Go (reference.md 4, 12.6): only configured, enabled
registries are reachable; C{[access]} lists apply to every image; errors
keep their meaning (400/403/404/429/502, not 500); a missing platform is a
400 listing the available ones.  Layers are always sent as the registry
stores them (compressed): C{docker load} decompresses them, and the Go
"uncompressed" mode downloaded every layer twice to learn its size.  A
request for uncompressed layers is answered with compressed ones and says
so in C{X-Hubproxy-Layers: compressed}.  There is no 5 s/60 s "debounce"
on prepare: the rate limiter already covers every request.
"""

from __future__ import annotations

import base64
import json
import os
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs, urlencode

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from hubproxy.errors import BadRequest, Forbidden, HubproxyError, TooManyRequests
from hubproxy.handler import AsyncLeaf
from hubproxy.relay import write_body
from hubproxy.tools.tarball import ImageResolver, ImageSpec, Platform, parse_platform, stream_tar

TOKEN_TTL = 120.0
MAX_TOKENS = 2000
MAX_BATCH_BODY = 64 * 1024


def query_args(request: Request) -> dict[str, list[str]]:
    return parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True)


def arg(args: dict[str, list[str]], name: str) -> str | None:
    values = args.get(name)
    return values[-1] if values else None


def required_image(args: dict[str, list[str]]) -> str:
    """The C{image} query argument; a 400 if it is missing or blank."""
    image = (arg(args, "image") or "").strip()
    if not image:
        raise BadRequest("missing image parameter", code="NAME_INVALID")
    return image


def send_json(request: Request, payload: Any, status: int = 200) -> None:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    write_body(request, json.dumps(payload).encode() + b"\n")


class TokenStore:
    """
    One-time download tokens: random, short-lived, bound to one client
    (address and User-Agent), consumed by any redemption attempt.
    """

    def __init__(self, clock: IReactorTime, ttl: float = TOKEN_TTL, limit: int = MAX_TOKENS) -> None:
        self._clock = clock
        self.ttl = ttl
        self.limit = limit
        self._tokens: OrderedDict[str, tuple[float, str, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tokens)

    def _purge(self) -> None:
        now = self._clock.seconds()
        while self._tokens:
            token, (expires, _, _) = next(iter(self._tokens.items()))
            if expires > now:
                break
            del self._tokens[token]

    def issue(self, payload: dict[str, Any], client: str) -> str:
        self._purge()
        if len(self._tokens) >= self.limit:
            raise TooManyRequests("too many download tokens outstanding; try again in a minute", headers={"Retry-After": "60"})
        token = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        self._tokens[token] = (self._clock.seconds() + self.ttl, client, payload)
        return token

    def consume(self, token: str, client: str) -> dict[str, Any]:
        """
        @raise Forbidden: unknown, expired, used, or issued to another client.
        """
        self._purge()
        entry = self._tokens.pop(token, None)
        if entry is None:
            raise Forbidden("download token is unknown, expired or already used; prepare the download again", code="TOKEN_INVALID")
        expires, owner, payload = entry
        if owner != client:
            raise Forbidden("download token was issued to another client", code="TOKEN_INVALID")
        return payload


class Downloads:
    """
    Shared state and the common paths of every tar endpoint.
    """

    log = Logger()

    def __init__(self, app: Any) -> None:
        self.app = app
        self.resolver = ImageResolver(app)
        self.single_tokens = TokenStore(app.clock)
        self.batch_tokens = TokenStore(app.clock)

    @property
    def max_images(self) -> int:
        return int(self.app.config.download.max_images)

    def client(self, request: Request) -> str:
        lookup = self.app.extras.get("client_ip")
        ip = lookup(request) if lookup is not None else None
        if ip is None:
            ip = getattr(request.getClientAddress(), "host", "") or ""
        ua = (request.getHeader(b"user-agent") or b"").decode("latin-1")
        return f"{ip}|{ua}"

    def specs(self, refs: list[str], default_tag: str | None = None) -> list[ImageSpec]:
        refs = [r.strip() for r in refs if r and r.strip() and not r.strip().startswith("#")]
        if not refs:
            raise BadRequest("no image given: use images=nginx:latest,redis:alpine", code="NAME_INVALID")
        if len(refs) > self.max_images:
            raise BadRequest(f"{len(refs)} images requested; at most {self.max_images} per archive ([download] maxImages)", code="TOO_MANY_IMAGES")
        out: list[ImageSpec] = []
        seen: set[str] = set()
        for ref in refs:
            spec = self.resolver.parse(ref, default_tag)
            if spec.canonical not in seen:
                seen.add(spec.canonical)
                out.append(spec)
        return out

    async def send(self, request: Request, specs: list[ImageSpec], platform: Platform | None, compressed: bool = True) -> None:
        images = [await self.resolver.resolve(spec, platform) for spec in specs]
        filename = f"{specs[0].file_stem}.tar" if len(specs) == 1 else f"batch_{len(specs)}_images.tar"
        request.setHeader(b"content-type", b"application/x-tar")
        request.setHeader(b"content-disposition", f'attachment; filename="{filename}"'.encode())
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-hubproxy-layers", b"compressed")
        request.setHeader(b"x-hubproxy-platforms", ", ".join(f"{i.spec.canonical}={i.platform or 'unknown'}" for i in images).encode("utf-8")[:4096])
        if not compressed:
            request.setHeader(b"x-hubproxy-note", b"uncompressed layers are not produced; docker load decompresses")
        self.log.info(
            "offline tar {filename}: {images} ({platform})",
            filename=filename,
            images=", ".join(f"{i.spec.canonical}@{i.manifest_digest[:19]}" for i in images),
            platform=platform or "default",
        )
        await stream_tar(
            request,
            images,
            self.resolver,
            clock=self.app.clock,
            idle_timeout=self.app.config.network.idle_timeout,
            on_data=self.app.extras.get("count_bytes"),
            log=self.log,
        )


def _flag(value: Any, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class DownloadResource(AsyncLeaf):
    """
    C{GET /download?images=a,b[&platform=os/arch[/variant]]}.
    """

    error_style = "json"
    methods = frozenset({b"GET"})

    def __init__(self, downloads: Downloads) -> None:
        super().__init__()
        self._d = downloads

    async def handle(self, request: Request) -> None:
        args = query_args(request)
        refs: list[str] = []
        for key in ("images", "image"):
            for value in args.get(key, []):
                refs += value.split(",")
        platform = parse_platform(arg(args, "platform"))
        specs = self._d.specs(refs, arg(args, "tag") or None)
        await self._d.send(request, specs, platform, _flag(arg(args, "compressed")))


class ImageDownload(AsyncLeaf):
    """
    C{GET /api/image/download}: prepare (C{mode=prepare}) or redeem
    (C{token=}) a single-image download.
    """

    error_style = "json"
    methods = frozenset({b"GET"})

    def __init__(self, downloads: Downloads) -> None:
        super().__init__()
        self._d = downloads

    async def handle(self, request: Request) -> None:
        args = query_args(request)
        image = required_image(args)
        token = arg(args, "token")
        if token:
            payload = self._d.single_tokens.consume(token, self._d.client(request))
            spec = self._d.resolver.parse(image)
            if spec.canonical != payload["canonical"]:
                raise BadRequest("download token does not match this image", code="TOKEN_INVALID")
            platform = parse_platform(payload.get("platform"))
            await self._d.send(request, [spec], platform, payload.get("compressed", True))
            return
        if arg(args, "mode") != "prepare":
            raise BadRequest("use mode=prepare to get a download token, then token=... to download", code="BAD_REQUEST")
        spec = self._d.resolver.parse(image, (arg(args, "tag") or "").strip() or None)
        platform = parse_platform(arg(args, "platform"))
        compressed = _flag(arg(args, "compressed"))
        payload = {"canonical": spec.canonical, "platform": str(platform) if platform else "", "compressed": compressed}
        token = self._d.single_tokens.issue(payload, self._d.client(request))
        send_json(request, {"download_url": "/api/image/download?" + urlencode({"image": spec.text, "token": token}), "expires_in": int(self._d.single_tokens.ttl)})


class ImageBatch(AsyncLeaf):
    """
    C{POST /api/image/batch?mode=prepare} and C{GET /api/image/batch?token=}.
    """

    error_style = "json"
    methods = frozenset({b"GET", b"POST"})

    def __init__(self, downloads: Downloads) -> None:
        super().__init__()
        self._d = downloads

    async def handle(self, request: Request) -> None:
        args = query_args(request)
        if request.method == b"POST":
            if arg(args, "mode") != "prepare":
                raise BadRequest("only mode=prepare is supported for POST", code="BAD_REQUEST")
            await self._prepare(request)
            return
        token = arg(args, "token")
        if not token:
            raise BadRequest("missing token parameter: POST ?mode=prepare first", code="TOKEN_INVALID")
        payload = self._d.batch_tokens.consume(token, self._d.client(request))
        specs = self._d.specs(payload["images"])
        await self._d.send(request, specs, parse_platform(payload.get("platform")), payload.get("compressed", True))

    async def _prepare(self, request: Request) -> None:
        content = request.content
        raw = content.read(MAX_BATCH_BODY + 1) if content is not None else b""
        if len(raw) > MAX_BATCH_BODY:
            raise HubproxyError("request body too large", status=413, code="SIZE_INVALID")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("body must be JSON: {\"images\": [...], \"platform\": \"linux/amd64\"}") from None
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise BadRequest("images must be a list of image references", code="NAME_INVALID")
        platform_text = body.get("platform")
        if platform_text is not None and not isinstance(platform_text, str):
            raise BadRequest("platform must be a string such as linux/arm64", code="PLATFORM_INVALID")
        platform = parse_platform(platform_text)
        specs = self._d.specs(images)
        payload = {
            "images": [s.text for s in specs],
            "platform": str(platform) if platform else "",
            "compressed": _flag(body.get("useCompressedLayers")),
        }
        token = self._d.batch_tokens.issue(payload, self._d.client(request))
        send_json(request, {"download_url": "/api/image/batch?" + urlencode({"token": token}), "images": len(specs), "expires_in": int(self._d.batch_tokens.ttl)})


class ImageInfo(AsyncLeaf):
    """
    C{GET /api/image/info?image=&tag=}.
    """

    error_style = "json"
    methods = frozenset({b"GET"})

    def __init__(self, downloads: Downloads) -> None:
        super().__init__()
        self._d = downloads

    async def handle(self, request: Request) -> None:
        args = query_args(request)
        image = required_image(args)
        spec = self._d.resolver.parse(image, (arg(args, "tag") or "").strip() or None)
        data = await self._d.resolver.info(spec)
        send_json(request, {"success": True, "data": data})
