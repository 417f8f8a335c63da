# -*- test-case-name: hubproxy.test.test_fileproxy -*-
"""
The URL-prefix file and git proxy: C{/https://github.com/o/r/...}.

One resource serves release assets, archives, raw files, gists, the GitHub
API, git smart HTTP (C{info/refs} and the C{git-upload-pack} POST) and
Hugging Face downloads.  What may be fetched is decided by
L{hubproxy.files.urls.parse_target} (a fixed set of URL shapes); where a
redirect may lead is decided by the upstream client's address policy, hop
by hop.  Bodies stream through L{hubproxy.relay} with backpressure, except
the two kinds we must rewrite (shell scripts and Hugging Face API JSON),
which are small and bounded.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO, cast

import hyperlink
from twisted.internet.task import Cooperator
from twisted.web.client import FileBodyProducer
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import Request

from hubproxy.acl import RepoAccess
from hubproxy.errors import Forbidden, PayloadTooLarge
from hubproxy.files import hf, scripts
from hubproxy.files.urls import RefusedURL, Target, is_proxyable_host, parse_target, rewrite_location
from hubproxy.handler import AsyncLeaf
from hubproxy.relay import copy_headers, relay_body, set_length, write_body
from hubproxy.upstream.client import discard, read_body

# Request headers forwarded upstream.  Everything else (cookies, our own
# X-Forwarded-*, client hints) stays here.
FORWARD_REQUEST_HEADERS = (
    b"accept",
    b"range",
    b"if-range",
    b"if-match",
    b"if-none-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"user-agent",
    b"git-protocol",
    b"content-type",
    b"content-encoding",
    b"authorization",
    b"x-github-api-version",
)

# Response headers never relayed: they would apply to *our* origin.
DROP_RESPONSE_HEADERS = (
    b"set-cookie",
    b"content-security-policy",
    b"content-security-policy-report-only",
    b"strict-transport-security",
    b"referrer-policy",
    b"alt-svc",
    b"report-to",
    b"nel",
)

HTML_TYPES = (b"text/html", b"application/xhtml+xml")
MAX_REQUEST_BODY = 64 * 1024 * 1024
MAX_API_JSON = 32 * 1024 * 1024
HF_KINDS = ("hf", "hf-cdn")


def _access_refusal(access: RepoAccess, target: Target) -> str | None:
    """
    Why C{[access]} refuses C{target}, or L{None}.

    C{owner/repo} URLs are checked as such; owner-only URLs (api.github.com
    C{/users/<u>}, C{/orgs/<o>/repos}) and owner-less HF names (C{gpt2}) as
    a bare namespace, so "evil" or "evil/*" blacklists them and a whitelist
    of single repositories does not open them; a gist named by id only
    cannot be checked at all, so it is refused while any list is set.
    """
    if target.owner_unknown:
        if access.active:
            return (
                "this URL names a gist by id only, so its owner cannot be checked against the"
                " [access] lists; use the gist.github.com/<user>/<id> form"
            )
        return None
    if target.owner and target.repo:
        return access.check_github(target.owner, target.repo)
    namespace = target.owner or target.repo
    return access.check_github(namespace, "") if namespace else None


class FileProxy(AsyncLeaf):
    """
    The fallback resource of the tree: everything that is not another
    route is read as C{/<url>}.
    """

    methods = frozenset({b"GET", b"HEAD", b"POST"})
    error_style = "text"

    def __init__(self, app: Any) -> None:
        super().__init__()
        self._app = app
        self._config = app.config

    async def handle(self, request: Request) -> None:
        try:
            target = parse_target(request.uri)
        except RefusedURL as e:
            raise Forbidden(e.reason) from None
        access = self._app.extras.get("repo_access")
        reason = _access_refusal(access, target) if access is not None else None
        if reason:
            raise Forbidden(reason)
        if request.method == b"POST" and target.kind not in ("git", "api", "hf"):
            raise Forbidden("POST is only proxied for git fetches and API calls")

        origin = self._proxy_origin(request)
        is_script = self._config.github.rewrite_scripts and scripts.is_script_path(target.url)
        is_hf_json = target.kind == "hf" and _is_hf_api(target.url)
        rewrites = is_script or is_hf_json

        headers = Headers()
        for name in FORWARD_REQUEST_HEADERS:
            values = request.requestHeaders.getRawHeaders(name)
            if values:
                headers.setRawHeaders(name, values)
        accept_encoding = None
        if not rewrites:
            accept_encoding = request.getHeader(b"accept-encoding")
        body = self._request_body(request)

        def should_follow(current: str, url: str) -> bool:
            if target.kind not in HF_KINDS:
                return True
            # Hub -> CDN: followed here, with the Hub's metadata carried
            # over (the client would lose X-Repo-Commit otherwise).  Hub ->
            # Hub (renames, resolve-cache): handed to the client as a
            # Location on the proxy, as the Hub would.
            if hf.follow_server_side(current, url):
                return True
            if rewrite_location(url, current, origin) is None:
                # Not expressible on the proxy: follow it here, where the
                # address policy decides, never hand it to the client raw.
                return True
            return not is_proxyable_host(hyperlink.URL.from_text(url).host)

        upstream = await self._app.client.request(
            request.method.decode("ascii"),
            target.text(),
            headers=headers,
            body=body,
            accept_encoding=accept_encoding,
            should_follow=should_follow,
            label=target.url.host,
        )
        response = upstream.response
        if request.method == b"GET" or request.method == b"POST":
            content_type = (upstream.header(b"content-type") or b"").split(b";")[0].strip().lower()
            if content_type in HTML_TYPES:
                discard(response)
                request.setResponseCode(response.code if response.code >= 400 else 403)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                write_body(request, f"upstream answered {response.code} with a web page; hubproxy only proxies files\n".encode())
                return

        limit = self._config.server.file_size
        if response.length is not UNKNOWN_LENGTH and response.length > limit:
            discard(response)
            raise PayloadTooLarge(f"file of {response.length} bytes exceeds the {limit} byte limit of this proxy")

        request.setResponseCode(response.code)
        drop = list(DROP_RESPONSE_HEADERS)
        if rewrites:
            drop += [b"etag", b"content-md5", b"content-encoding", b"accept-ranges"]
        copy_headers(response.headers, request, drop=drop)
        if target.kind in HF_KINDS:
            pairs = list(_raw_pairs(request.responseHeaders))
            for hop in upstream.redirect_headers:
                if hop.hasHeader(b"x-repo-commit"):
                    pairs = hf.carry_hub_metadata(list(_raw_pairs(hop)), pairs)
                    break
            pairs = hf.strip_xet_headers(pairs)
            pairs = hf.rewrite_links(pairs, upstream.url, origin)
            _replace_headers(request, pairs)
        location = response.headers.getRawHeaders(b"location")
        if location and response.code in (301, 302, 303, 307, 308):
            rewritten = rewrite_location(location[0].decode("latin-1"), upstream.url, origin)
            if rewritten is not None:
                request.setHeader(b"location", rewritten.encode("latin-1"))

        if rewrites and response.code == 200 and request.method != b"HEAD":
            if is_script:
                data = await read_body(response, scripts.MAX_SCRIPT_SIZE, self._app.clock, self._config.network.idle_timeout)
                data = scripts.rewrite_script(data, origin)
            else:
                data = await read_body(response, MAX_API_JSON, self._app.clock, self._config.network.idle_timeout)
                data = hf.strip_xet_json(data)
            write_body(request, data)
            return
        if rewrites and request.method == b"HEAD":
            request.responseHeaders.removeHeader(b"content-length")
        else:
            set_length(request, response)
        await relay_body(
            request,
            response,
            clock=self._app.clock,
            idle_timeout=self._config.network.idle_timeout,
            max_bytes=limit,
            on_data=self._app.extras.get("count_bytes"),
        )

    def _request_body(self, request: Request) -> Any:
        if request.method != b"POST":
            return None
        # Twisted declares Request.content as None at class level; gotLength
        # sets it to a file before any resource renders.
        content = cast(BinaryIO, request.content)
        content.seek(0, io.SEEK_END)
        size = content.tell()
        content.seek(0)
        if size > MAX_REQUEST_BODY:
            raise PayloadTooLarge(f"request body larger than {MAX_REQUEST_BODY} bytes")
        if size <= 1024 * 1024:
            return content.read()
        clock = self._app.clock
        cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
        return FileBodyProducer(content, cooperator=cooperator)

    def _proxy_origin(self, request: Request) -> str:
        trusted = self._app.extras.get("trusted_proxies")
        peer = getattr(request.getClientAddress(), "host", "")
        from_trusted = bool(trusted is not None and trusted.contains(peer))
        return scripts.proxy_origin(
            self._config.server.public_url,
            request.getHeader(b"x-forwarded-proto"),
            request.getHeader(b"x-forwarded-host"),
            from_trusted,
            request.getHeader(b"host"),
            request.isSecure(),
        )


def _is_hf_api(url: hyperlink.URL) -> bool:
    path = url.path
    return bool(path) and path[0] == "api"


def _raw_pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    pairs = []
    for name, values in headers.getAllRawHeaders():
        for value in values:
            pairs.append((name, value))
    return pairs


def _replace_headers(request: Request, pairs: list[tuple[bytes, bytes]]) -> None:
    fresh = Headers()
    for name, value in pairs:
        fresh.addRawHeader(name, value)
    request.responseHeaders = fresh


__all__ = ["FileProxy", "Target"]
