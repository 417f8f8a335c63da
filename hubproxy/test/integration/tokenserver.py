"""
A Docker-Hub-like registry token server, run as its own process by
L{hubproxy.test.integration.fixtures.TokenServer}.

Why a separate process with only the standard library (+ pyjwt,
cryptography): the test process runs a Twisted reactor for hubproxy, and an
upstream living in the same reactor would hide deadlocks and blocking calls
in the code under test.  A threading stdlib server is independent of it.

What it does, like auth.docker.io:
  - C{GET /token?service=S&scope=repository:NAME:pull[,push]} with optional
    Basic auth, and C{POST /token} with an OAuth2 form
    (C{grant_type=password|refresh_token}), as containerd sends;
  - answers C{{"token", "access_token", "expires_in", "issued_at"}} where
    the token is an RS256 JWT carrying the signing certificate in its C{x5c}
    header (the registry trusts it through its C{rootcertbundle}), with the
    claims C{iss sub aud exp nbf iat jti access};
  - anonymous clients get only C{pull} (as on Docker Hub for public images),
    unless started with C{--no-anonymous}; known users get what they ask;
  - counts what it issued: C{GET /stats} returns
    C{{"issued": N, "requests": [...]}} so a test can prove that a proxy
    caches tokens; C{POST /stats/reset} zeroes the counters.
Every request is also appended to the JSON-lines access log (C{--log}).
"""

import argparse
import base64
import json
import secrets
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization


class State:
    def __init__(self, args):
        self.args = args
        with open(args.key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        with open(args.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.users = dict(u.split(":", 1) for u in args.user)
        self.lock = threading.Lock()
        self.issued = 0
        self.requests = []
        self.refresh_tokens = {}
        self.log = open(args.log, "a", buffering=1) if args.log else None

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)
            if self.log:
                self.log.write(json.dumps(entry) + "\n")


def parse_scope(scope):
    # repository:library/hello:pull,push  (the name may not contain ':'
    # except for a port in a registry-qualified name; split from both ends)
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    typ, actions = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    return {"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-auth/1.0"
    state = None  # set in main()

    def log_message(self, fmt, *args):  # quiet stderr; we log JSON ourselves
        pass

    def _send_json(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _basic_user(self):
        """Return (user, ok): user None when no credentials were sent."""
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("basic "):
            return None, True
        try:
            user, pw = base64.b64decode(auth[6:].strip()).decode().split(":", 1)
        except Exception:
            return "?", False
        return user, self.state.users.get(user) == pw

    def _entry(self, **kw):
        e = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "peer": "%s:%d" % self.client_address[:2],
            "user_agent": self.headers.get("User-Agent", ""),
        }
        e.update(kw)
        return e

    def _issue(self, user, service, scopes, with_refresh=False):
        st = self.state
        now = int(time.time())
        access = []
        for s in scopes:
            sc = parse_scope(s)
            if sc is None:
                continue
            if user is None:
                sc["actions"] = [a for a in sc["actions"] if a == "pull"]
            access.append(sc)
        claims = {
            "iss": st.args.issuer,
            "sub": user or "",
            "aud": service or st.args.service,
            "exp": now + st.args.ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, st.key, algorithm="RS256", headers={"x5c": st.x5c})
        with st.lock:
            st.issued += 1
        body = {
            "token": token,
            "access_token": token,
            "expires_in": st.args.ttl,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }
        if with_refresh and user is not None:
            rt = secrets.token_hex(16)
            with st.lock:
                st.refresh_tokens[rt] = user
            body["refresh_token"] = rt
        return body, access

    def do_GET(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        if url.path == "/stats":
            with self.state.lock:
                data = {"issued": self.state.issued, "requests": list(self.state.requests)}
            return self._send_json(200, data)
        if url.path == "/healthz":
            return self._send_json(200, {"ok": True})
        if url.path != "/token":
            self.state.record(self._entry(status=404))
            return self._send_json(404, {"details": "not found"})
        user, ok = self._basic_user()
        service = q.get("service", [""])[0]
        scopes = q.get("scope", [])
        if not ok or (user is None and not self.state.args.anonymous):
            self.state.record(self._entry(status=401, user=user, service=service, scopes=scopes, issued=False))
            return self._send_json(
                401, {"details": "incorrect username or password"},
                {"WWW-Authenticate": 'Basic realm="fake-auth"'})
        want_refresh = q.get("offline_token", [""])[0] == "true"
        body, access = self._issue(user, service, scopes, want_refresh)
        self.state.record(self._entry(status=200, user=user, service=service, scopes=scopes,
                                      access=access, issued=True))
        self._send_json(200, body)

    do_HEAD = do_GET

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path == "/stats/reset":
            with self.state.lock:
                self.state.issued = 0
                self.state.requests = []
            return self._send_json(200, {"issued": 0})
        if url.path != "/token":
            self.state.record(self._entry(status=404))
            return self._send_json(404, {"details": "not found"})
        form = parse_qs(raw.decode("utf-8", "replace"))
        f = lambda k: form.get(k, [""])[0]
        grant = f("grant_type")
        service = f("service")
        scopes = [s for s in f("scope").split(" ") if s]
        user = None
        if grant == "password":
            user = f("username")
            if self.state.users.get(user) != f("password"):
                self.state.record(self._entry(status=401, grant=grant, user=user, issued=False))
                return self._send_json(401, {"error": "invalid_grant"})
        elif grant == "refresh_token":
            with self.state.lock:
                user = self.state.refresh_tokens.get(f("refresh_token"))
            if user is None:
                self.state.record(self._entry(status=401, grant=grant, issued=False))
                return self._send_json(401, {"error": "invalid_grant"})
        else:
            self.state.record(self._entry(status=400, grant=grant, issued=False))
            return self._send_json(400, {"error": "unsupported_grant_type"})
        body, access = self._issue(user, service, scopes, with_refresh=(f("access_type") == "offline"))
        body["scope"] = " ".join(scopes)
        self.state.record(self._entry(status=200, grant=grant, user=user, service=service,
                                      scopes=scopes, access=access, issued=True))
        self._send_json(200, body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--issuer", default="fake-auth")
    p.add_argument("--service", default="registry.docker.io")
    p.add_argument("--user", action="append", default=[], help="user:password (repeatable)")
    p.add_argument("--no-anonymous", dest="anonymous", action="store_false")
    p.add_argument("--ttl", type=int, default=300)
    p.add_argument("--log")
    args = p.parse_args(argv)
    Handler.state = State(args)
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    print("tokenserver listening on %s:%d" % (args.host, args.port), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
