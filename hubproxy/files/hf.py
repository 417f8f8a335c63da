# -*- test-case-name: hubproxy.test.test_hf -*-
"""
Keeping the Hugging Face client on the proxy, over plain HTTP.

Users point the official client at us with
C{HF_ENDPOINT=https://proxy.example/https://huggingface.co}.  Two things
would make it leave the proxy: Xet storage (the client then talks to the
Xet CAS service directly) and absolute URLs to Hub or CDN hosts in
redirects and pagination links.  This module holds the pure helpers for
both; the resource applies them to responses of C{hf}/C{hf-cdn} targets.

What the client does (read in C{huggingface_hub} 2.4.0, the version
installed when this was written; verified with a loopback simulation of
C{hf_hub_download} against a fake proxy):

 - C{file_download.get_hf_file_metadata} sends C{HEAD .../resolve/<rev>/<file>}
   via C{utils._http._httpx2_follow_hub_redirects_with_backoff}, which
   follows a redirect itself (relative or absolute, up to 20) only while
   the target has the I{same origin} (scheme, host, port) as the URL it
   asked or is a Hub origin (huggingface.co, hf.co, the staging hub,
   C{HF_ENDPOINT}); any other host stops the loop and that redirect
   response is used.  From the last response it reads C{X-Repo-Commit}
   (required, else C{FileMetadataError} "missing the 'X-Repo-Commit'
   header"), C{X-Linked-Etag} or else C{ETag} (required), C{X-Linked-Size}
   or else C{Content-Length} (not on a redirect), C{Location} or else the
   last requested URL (this becomes the GET URL when the file is not Xet).
 - C{utils._xet.parse_xet_file_data_from_response} switches the download
   to Xet when the response has C{X-Xet-Hash} I{and} either a C{Link}
   entry with C{rel="xet-auth"} or C{X-Xet-Refresh-Route}.  Without
   C{X-Xet-Hash} the client stays on HTTP.  With it, and C{hf_xet}
   installed (C{is_xet_available()}: installed and C{HF_HUB_DISABLE_XET}
   unset), it calls the refresh route for C{X-Xet-Cas-Url},
   C{X-Xet-Access-Token} and C{X-Xet-Token-Expiration} and downloads from
   the CAS host directly, bypassing the proxy.
 - C{snapshot_download} and C{HfFileSystem} list files with
   C{/api/<type>s/<id>/tree/<rev>?recursive=true} (and C{paths-info});
   C{RepoFile} takes C{xetHash} from each entry.  The listing is cached
   on disk (C{_tree_cache}), and C{_xet_file_metadata_from_tree_cache}
   I{skips the HEAD entirely} for a file with a valid C{xetHash} when
   C{hf_xet} is installed: so C{xetHash} must go from the JSON too.  (A
   listing cached before the proxy was used still carries it.)
 - C{xetEnabled} (model/dataset info) is not read by 2.4.0; it is set to
   false anyway for other clients.
 - Pagination (C{utils._pagination}) follows C{Link: <url>; rel="next"}
   verbatim: the Hub sends absolute C{https://huggingface.co/api/...}
   URLs, which must be rewritten to the prefix form (L{rewrite_links}).
 - A relative C{Location} (the Hub's C{/api/resolve-cache/...}) is
   resolved by the client against the proxy URL and would lose the
   C{/https://huggingface.co} prefix: it must be made absolute
   (L{hubproxy.files.urls.rewrite_location}).
 - Caution: a Hub redirect to a I{CDN} host (C{cdn-lfs*.hf.co},
   C{cas-bridge.xethub.hf.co}) rewritten into the prefix form has the
   proxy's origin, so the HEAD loop follows it and ends on the CDN's
   response, which has no C{X-Repo-Commit}: C{hf_hub_download} then
   fails.  Such hops must be followed server-side, with the Hub hop's
   metadata headers carried onto the final response
   (L{follow_server_side}, L{carry_hub_metadata}); the client's GET of
   the C{resolve} URL then also stays on the proxy.  Redirects between
   Hub URLs are rewritten, so the client sees each Hub response itself.
"""

from __future__ import annotations

import json
from typing import Any

from hyperlink import URL

from hubproxy.files.urls import HF_CDN_HOSTS, HF_HUB_HOSTS, rewrite_location

__all__ = [
    "HUB_METADATA_HEADERS",
    "XET_HEADERS_PREFIX",
    "carry_hub_metadata",
    "follow_server_side",
    "rewrite_links",
    "strip_xet_headers",
    "strip_xet_json",
]

Headers = list[tuple[bytes, bytes]]

#: Lower-case prefix of the Xet headers (C{X-Xet-Hash}, C{X-Xet-Refresh-Route},
#: C{X-Xet-Cas-Url}, C{X-Xet-Access-Token}, C{X-Xet-Token-Expiration}, ...).
XET_HEADERS_PREFIX = b"x-xet-"

#: What C{get_hf_file_metadata} reads from the Hub's own response.
HUB_METADATA_HEADERS: tuple[bytes, ...] = (
    b"x-repo-commit",
    b"x-linked-etag",
    b"x-linked-size",
)

# Link headers ---------------------------------------------------------------


def _split_links(value: bytes) -> list[bytes]:
    """
    Split a C{Link} value into entries at the commas that are outside
    C{<...>} and quoted strings (URLs and titles may contain commas).
    """
    entries: list[bytes] = []
    start = 0
    in_url = in_quote = escaped = False
    for index, byte in enumerate(value):
        char = bytes((byte,))
        if in_quote:
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                in_quote = False
        elif in_url:
            if char == b">":
                in_url = False
        elif char == b"<":
            in_url = True
        elif char == b'"':
            in_quote = True
        elif char == b",":
            entries.append(value[start:index])
            start = index + 1
    entries.append(value[start:])
    return [entry.strip() for entry in entries if entry.strip()]


def _rels(entry: bytes) -> list[bytes]:
    """The relation types of one C{Link} entry (lower-case)."""
    end = entry.find(b">")
    params = entry[end + 1 :] if end >= 0 else entry
    rels: list[bytes] = []
    for param in params.split(b";"):
        name, sep, raw = param.partition(b"=")
        if sep and name.strip().lower() == b"rel":
            rels.extend(raw.strip().strip(b'"').lower().split())
    return rels


def _is_xet_link(entry: bytes) -> bool:
    return any(rel.startswith(b"xet") for rel in _rels(entry))


def strip_xet_headers(headers: Headers) -> Headers:
    """
    Remove what makes C{huggingface_hub} switch to Xet: every C{X-Xet-*}
    header, and every C{Link} entry whose relation starts with C{xet}
    (C{rel="xet-auth"}).  Other C{Link} entries (C{rel="next"} pagination)
    are kept, byte for byte when nothing in that header changed; a C{Link}
    header left empty is dropped.  Order is preserved.
    """
    result: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(XET_HEADERS_PREFIX):
            continue
        if lower == b"link":
            entries = _split_links(value)
            kept = [entry for entry in entries if not _is_xet_link(entry)]
            if not kept:
                continue
            if len(kept) != len(entries):
                value = b", ".join(kept)
        result.append((name, value))
    return result


def rewrite_links(headers: Headers, base_url: str, proxy_origin: str) -> Headers:
    """
    Rewrite the URLs of C{Link} headers that point at proxyable targets
    (HF and GitHub API pagination) into the proxy-prefix form, so a client
    following C{rel="next"} stays on the proxy.  Relative URLs are resolved
    against C{base_url}, the upstream URL that answered.  Other headers and
    unchanged C{Link} values are returned as they were.
    """
    result: Headers = []
    for name, value in headers:
        if name.lower() == b"link":
            value = _rewrite_link_value(value, base_url, proxy_origin)
        result.append((name, value))
    return result


def _rewrite_link_value(value: bytes, base_url: str, proxy_origin: str) -> bytes:
    entries = _split_links(value)
    changed = False
    out: list[bytes] = []
    for entry in entries:
        start, end = entry.find(b"<"), entry.find(b">")
        if start == 0 and end > 0:
            try:
                target = entry[1:end].decode("ascii")
            except UnicodeDecodeError:
                target = ""
            proxied = rewrite_location(target, base_url, proxy_origin) if target else None
            if proxied is not None:
                entry = b"<" + proxied.encode("ascii") + entry[end:]
                changed = True
        out.append(entry)
    return b", ".join(out) if changed else value


# Redirects ----------------------------------------------------------------


def _host(url: str) -> str:
    try:
        return URL.from_text(url).host.lower().rstrip(".")
    except Exception:
        return ""


def follow_server_side(base_url: str, location: str) -> bool:
    """
    Whether a redirect from C{base_url} to C{location} must be followed by
    the proxy instead of being rewritten for the client: a Hub response
    (huggingface.co, hf.co) sending the client to an HF CDN host.  See the
    module docstring: the client would follow a rewritten one itself and
    lose the Hub's C{X-Repo-Commit}.
    """
    if _host(base_url) not in HF_HUB_HOSTS:
        return False
    try:
        resolved = URL.from_text(base_url).click(location)
    except Exception:
        return False
    return resolved.host.lower().rstrip(".") in HF_CDN_HOSTS


def carry_hub_metadata(hub_headers: Headers, final_headers: Headers) -> Headers:
    """
    The final (CDN) response headers plus the Hub hop's
    L{HUB_METADATA_HEADERS}, so the client's HEAD sees the commit, the
    linked ETag and the linked size as if it had stopped at the redirect.
    Headers the final response already has are replaced by the Hub's value.
    """
    carried = [(n, v) for n, v in hub_headers if n.lower() in HUB_METADATA_HEADERS]
    names = {n.lower() for n, _ in carried}
    kept = [(n, v) for n, v in final_headers if n.lower() not in names]
    return kept + carried


# JSON -----------------------------------------------------------------------


def _strip(node: Any) -> tuple[Any, bool]:
    """Return C{node} without Xet markers, and whether anything changed."""
    changed = False
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "xetHash":
                changed = True
                continue
            if key == "xetEnabled" and value is not False:
                out[key] = False
                changed = True
                continue
            value, child_changed = _strip(value)
            changed = changed or child_changed
            out[key] = value
        return out, changed
    if isinstance(node, list):
        items = []
        for item in node:
            item, child_changed = _strip(item)
            changed = changed or child_changed
            items.append(item)
        return items, changed
    return node, False


def strip_xet_json(body: bytes) -> bytes:
    """
    Remove C{xetHash} keys (at any depth) and set C{xetEnabled} to false in
    Hub API JSON (tree listings, C{paths-info}, model/dataset info), so
    that neither the HEAD-skipping tree cache nor C{HfFileSystem} chooses
    Xet.  A body with nothing to change, or that is not JSON, is returned
    unchanged (the same object); a changed one is re-serialised compactly
    (UTF-8, no ASCII escaping).
    """
    if b"xetHash" not in body and b"xetEnabled" not in body:
        return body
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body
    try:
        stripped, changed = _strip(document)
    except RecursionError:
        return body
    if not changed:
        return body
    return json.dumps(stripped, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
