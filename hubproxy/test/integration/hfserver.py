"""
A Hugging Face Hub look-alike, run as its own process by
L{hubproxy.test.integration.fixtures.HFServer}.

Why: the real C{huggingface_hub} client honours C{HF_ENDPOINT}; pointing it
(directly, or through hubproxy) at this server exercises the exact requests
the client makes, without internet.  What the client does (read from
huggingface_hub's file_download.py / hf_api.py / _snapshot_download.py):
  - C{hf_hub_download}: C{HEAD /{repo}/resolve/{rev}/{file}} without following
    cross-host redirects; it needs C{X-Repo-Commit} and C{X-Linked-Etag} (or
    C{ETag}), takes the size from C{X-Linked-Size} (or C{Content-Length} on a
    200), and when the answer is a redirect to another origin it downloads
    from that C{Location} directly (a signed CDN URL, Authorization dropped);
  - C{snapshot_download}: C{GET /api/models/{repo}/revision/{rev}} (for
    C{sha}), then C{GET /api/models/{repo}/tree/{sha}?recursive=True&expand=False}
    (a JSON list, paginated with a C{Link} header we never need), then one
    C{hf_hub_download} per file with C{revision=<sha>}.
So C{{rev}} may be C{main} or the commit sha.  Small files are answered
directly (C{ETag} = git blob id, as the Hub does); LFS files answer C{302}
to the "LFS CDN" port with C{?sig=...} (the CDN refuses requests without
it, 403), with C{X-Linked-Etag} = sha256 and C{X-Linked-Size}.  Datasets
work the same under C{/datasets/...} and C{/api/datasets/...}.

The repositories are described by C{DATA/repos.json} (written by the
fixture): C{{"models/org/model": {"sha": ..., "files": {path: {"size",
"oid", "sha256", "lfs", "file"}}}}}.  Every request to either port is
appended to the JSON-lines access log with the peer address and User-Agent.
"""

import argparse
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LOG_LOCK = threading.Lock()


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-hf/1.0"
    role = "?"
    cfg = None

    def log_message(self, fmt, *args):
        pass

    def _log(self, status, **kw):
        e = {
            "time": time.time(),
            "server": self.role,
            "method": self.command,
            "path": self.path,
            "peer": "%s:%d" % self.client_address[:2],
            "user_agent": self.headers.get("User-Agent", ""),
            "range": self.headers.get("Range"),
            "authorization": bool(self.headers.get("Authorization")),
            "status": status,
        }
        e.update(kw)
        with LOG_LOCK:
            self.cfg.log.write(json.dumps(e) + "\n")
            self.cfg.log.flush()

    def _send(self, code, body=b"", headers=None, ctype="application/json"):
        self._log(code)
        self.send_response(code)
        hdrs = {"Content-Type": ctype, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, code, obj, headers=None):
        self._send(code, json.dumps(obj).encode(), headers)

    def _error(self, code, err_code, msg, headers=None):
        h = {"X-Error-Code": err_code, "X-Error-Message": msg}
        h.update(headers or {})
        self._json(code, {"error": msg}, h)

    def _file(self, path, size, headers):
        """Serve a file with optional single Range, streaming in 64 KiB."""
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.match(r"bytes=(\d*)-(\d*)$", rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                end = min(end, size - 1)
                if start > end or start >= size:
                    return self._send(416, b"", dict(headers, **{"Content-Range": "bytes */%d" % size}))
                code = 206
        length = end - start + 1
        self._log(code)
        self.send_response(code)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if code == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            while left:
                chunk = f.read(min(65536, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


class HubHandler(Base):
    role = "hub"

    def do_GET(self):
        cfg = self.cfg
        url = urlsplit(self.path)
        path = unquote(url.path)
        q = parse_qs(url.query)
        m = re.match(r"^/api/(models|datasets)/(.+?)(?:/(revision|tree)/([^/]+)(/.*)?)?/?$", path)
        if m:
            kind, repo_id, what, rev, sub = m.groups()
            repo = cfg.repos.get("%s/%s" % (kind, repo_id))
            if repo is None:
                return self._error(401, "RepoNotFound", "Repository not found")
            if what is not None and rev not in ("main", repo["sha"]):
                return self._error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
            if what == "tree":
                return self._json(200, self._tree(repo, (sub or "").strip("/"),
                                                  q.get("recursive", ["false"])[0].lower() == "true"))
            return self._json(200, {
                "_id": repo["sha"][:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": repo["sha"],
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(repo["files"])],
            })
        m = re.match(r"^/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            kind, repo_id, rev, fname = m.groups()
            repo = cfg.repos.get("%s/%s" % (kind or "models", repo_id))
            if repo is None:
                return self._error(401, "RepoNotFound", "Repository not found")
            if rev not in ("main", repo["sha"]):
                return self._error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
            info = repo["files"].get(fname)
            common = {"X-Repo-Commit": repo["sha"]}
            if info is None:
                return self._error(404, "EntryNotFound", "Entry not found", common)
            if info["lfs"]:
                sha = info["sha256"]
                loc = "http://127.0.0.1:%d/repos/%s/%s/%s?sig=%s&response-content-disposition=%s" % (
                    cfg.cdn_port, sha[:2], sha[2:4], sha, "fake-" + sha[:16],
                    quote('attachment; filename="%s"' % fname.split("/")[-1]))
                return self._send(302, b"", dict(common, **{
                    "Location": loc,
                    "X-Linked-Etag": '"%s"' % sha,
                    "X-Linked-Size": str(info["size"]),
                    "ETag": 'W/"%s"' % info["oid"],
                }))
            return self._file(os.path.join(cfg.data, info["file"]), info["size"], dict(common, **{
                "ETag": '"%s"' % info["oid"],
                "Content-Type": "application/octet-stream",
            }))
        return self._error(404, "NotFound", "not found")

    do_HEAD = do_GET

    def _tree(self, repo, sub, recursive):
        out, dirs = [], set()
        prefix = sub + "/" if sub else ""
        for p in sorted(repo["files"]):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
            if len(parts) > 1 and not recursive:
                continue
            info = repo["files"][p]
            e = {"type": "file", "oid": info["oid"], "size": info["size"], "path": p}
            if info["lfs"]:
                e["lfs"] = {"oid": info["sha256"], "size": info["size"], "pointerSize": 134}
            out.append(e)
        return out


class CdnHandler(Base):
    role = "cdn"

    def do_GET(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        m = re.match(r"^/repos/[0-9a-f]{2}/[0-9a-f]{2}/([0-9a-f]{64})$", url.path)
        if not m or m.group(1) not in self.cfg.blobs:
            return self._send(404, b"NoSuchKey", ctype="text/plain")
        if not q.get("sig"):
            return self._send(403, b"AccessDenied: missing signature", ctype="text/plain")
        path, size = self.cfg.blobs[m.group(1)]
        self._file(path, size, {"ETag": '"%s"' % m.group(1), "Content-Type": "application/octet-stream"})

    do_HEAD = do_GET


class Config:
    def __init__(self, args):
        self.data = args.data
        with open(os.path.join(args.data, "repos.json")) as f:
            self.repos = json.load(f)
        self.blobs = {}
        for repo in self.repos.values():
            for info in repo["files"].values():
                if info["lfs"]:
                    self.blobs[info["sha256"]] = (os.path.join(args.data, info["file"]), info["size"])
        self.cdn_port = args.cdn_port
        self.log = open(args.log, "a")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cdn-port", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)
    cfg = Config(args)
    HubHandler.cfg = CdnHandler.cfg = cfg
    servers = [ThreadingHTTPServer((args.host, args.cdn_port), CdnHandler),
               ThreadingHTTPServer((args.host, args.port), HubHandler)]
    for s in servers:
        s.daemon_threads = True
    threading.Thread(target=servers[0].serve_forever, daemon=True).start()
    print("hfserver on %s:%d (cdn %d)" % (args.host, args.port, args.cdn_port), flush=True)
    try:
        servers[1].serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
