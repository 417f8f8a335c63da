# -*- test-case-name: hubproxy.test.test_scripts -*-
"""
Rewriting GitHub URLs inside shell and PowerShell scripts.

Install scripts (C{curl -fsSL https://raw.githubusercontent.com/.../install.sh | bash})
usually download more files from GitHub.  When the script itself came
through the proxy, the user is probably somewhere GitHub is slow or blocked,
so its GitHub URLs are rewritten to go through the proxy too.

Fixes over the Go hubproxy (reference.md 3.4 and 12.5):

 - A script is recognised by the last segment of the I{path}
   (C{x.sh?token=1} is a script, C{x.txt?a=.sh} is not); Go looked at the end
   of the whole URL including the query.
 - C{http://} URLs stay C{http://} (the proxy serves them); Go upgraded them.
 - The proxy origin comes from configuration (C{publicUrl}), else from
   C{X-Forwarded-Proto}/C{X-Forwarded-Host} sent by a trusted reverse proxy,
   else from the request; Go trusted C{X-Forwarded-Host} from anyone and
   always wrote C{https://}.  A client cannot make a script point elsewhere
   by sending forged headers (issue #111 and the Host-injection risk).
 - Rewriting is idempotent and never double-prefixes: a URL already behind
   the proxy is left alone.  The resource offers an off switch (issue #70).

Everything works on bytes: scripts need not be UTF-8.
"""

from __future__ import annotations

import ipaddress
import re

from hyperlink import URL

__all__ = [
    "MAX_SCRIPT_SIZE",
    "SCRIPT_HOSTS",
    "is_script_path",
    "proxy_origin",
    "rewrite_script",
]

#: Scripts are buffered to be rewritten; larger bodies are not scripts one
#: pipes into a shell, and buffering them would cost memory per request.
MAX_SCRIPT_SIZE = 10 * 1024 * 1024

#: Hosts whose URLs are rewritten inside scripts.
SCRIPT_HOSTS: tuple[str, ...] = (
    "github.com",
    "raw.githubusercontent.com",
    "raw.github.com",
    "gist.githubusercontent.com",
    "gist.github.com",
    "api.github.com",
    "objects.githubusercontent.com",
    "codeload.github.com",
)

_SUFFIXES = (".sh", ".ps1")

# A URL starts the text or follows a character that ends a shell/PowerShell
# word or opens a quoted string, an assignment or a list: the same set Go
# uses.  The negative look-behind ("not preceded by a non-separator") also
# matches at the very start.  After the host a "/" is required, so
# github.com.example.org never matches.  The prefix we insert ends in "/",
# which is not a separator: that is what makes rewriting idempotent.
_SCRIPT_URL = re.compile(
    rb"(?<![^\s'\"(=,\[{;|&<>])https?://(?:"
    + b"|".join(re.escape(h.encode("ascii")) for h in SCRIPT_HOSTS)
    + rb")/",
    re.IGNORECASE,
)


def is_script_path(url: URL) -> bool:
    """
    Whether the response for C{url} is a script to rewrite: the last path
    segment, lower-cased, ends in C{.sh} or C{.ps1}.  The query is ignored
    on purpose: it is often a token, never the file type.
    """
    path = url.path
    if not path:
        return False
    return path[-1].lower().endswith(_SUFFIXES)


def rewrite_script(body: bytes, proxy_origin: str) -> bytes:
    """
    Prefix every GitHub URL in C{body} with C{proxy_origin + "/"}.

    @param proxy_origin: as returned by L{proxy_origin}.  The empty string
        means no trustworthy origin is known: the body is returned unchanged
        (a script that still works against GitHub directly beats one that
        points at a made-up host).
    @return: the rewritten body; C{rewrite_script(rewrite_script(b, o), o)
        == rewrite_script(b, o)}.
    """
    if not proxy_origin:
        return body
    prefix = proxy_origin.rstrip("/").encode("ascii") + b"/"

    def replace(match: re.Match[bytes]) -> bytes:
        start = match.start()
        if body.startswith(prefix, start):
            # Only possible when the origin is itself a GitHub-looking URL;
            # never prefix twice.
            return match.group(0)
        return prefix + match.group(0)

    return _SCRIPT_URL.sub(replace, body)


# Origins ------------------------------------------------------------------

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?\Z"
)
_PORT = re.compile(r"[0-9]{1,5}\Z")


def _valid_host(value: bytes | None) -> str | None:
    """
    C{value} as a lower-case C{host[:port]} if it is exactly that: a DNS
    name, an IPv4 address or a bracketed IPv6 address, with an optional port.
    Anything with a path, user-info, whitespace or other characters is
    L{None}, so it can never smuggle text into a rewritten script.
    """
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    text = text.split(",", 1)[0].strip(" \t")
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    else:
        host, sep, port = text.partition(":")
        rest = sep + port
        if not _HOSTNAME.match(host):
            return None
    if rest:
        if not rest.startswith(":"):
            return None
        port = rest[1:]
        if not _PORT.match(port) or not 0 < int(port) < 65536:
            return None
    return text.lower()


def _valid_proto(value: bytes | None) -> str | None:
    if value is None:
        return None
    proto = value.split(b",", 1)[0].strip(b" \t").lower()
    if proto in (b"http", b"https"):
        return proto.decode("ascii")
    return None


def proxy_origin(
    public_url: str,
    forwarded_proto: bytes | None,
    forwarded_host: bytes | None,
    from_trusted_proxy: bool,
    host_header: bytes | None,
    is_secure: bool,
) -> str:
    """
    The origin (C{scheme://host[:port]}, or the configured C{publicUrl}) that
    rewritten scripts point at.

    Order: the configured C{public_url} if non-empty; else, only when the
    peer is a trusted proxy, C{X-Forwarded-Proto} and C{X-Forwarded-Host}
    (first value of a comma-separated list, validated; either one may be
    missing, the request then supplies the other part); else the request's
    C{Host} header and whether the connection is TLS.

    @return: the origin without a trailing slash, or C{""} when no valid host
        is known (no or a malformed C{Host} header): callers then serve the
        script unmodified (L{rewrite_script} treats C{""} as "do not rewrite")
        rather than inventing a host such as C{localhost}.
    """
    if public_url:
        return public_url.rstrip("/")
    scheme = "https" if is_secure else "http"
    host = _valid_host(host_header)
    if from_trusted_proxy:
        scheme = _valid_proto(forwarded_proto) or scheme
        host = _valid_host(forwarded_host) or host
    if host is None:
        return ""
    return f"{scheme}://{host}"
