"""
The web UI in a real browser: Debian's headless Chromium, driven over the
DevTools protocol on C{--remote-debugging-pipe} (file descriptors 3 and 4,
NUL-separated JSON), with nothing but the standard library: no Playwright,
no browser download, no websocket package.

Each page must load without console errors, exceptions or failed requests
(a CSP violation or a 404 asset shows up as a C{Log.entryAdded} error); the
URL converter must produce this host's link; a search must show results
from the Hub look-alike and the copy button must work with the Clipboard API
removed (the plain-http fallback); a download must start and produce a tar.
Screenshots of each page go to C{$HUBPROXY_ARTIFACTS} (default: a temporary
directory, named in the test log).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import tarfile
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from hubproxy.test.integration import fixtures as F
from hubproxy.test.integration.test_tools_clients import start_tools_stack

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--window-size=1200,900",
]


def chromium_path():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(Exception):
    pass


class Chromium:
    """
    A headless Chromium and a minimal DevTools client over its pipe.
    """

    def __init__(self, work):
        exe = chromium_path()
        self.profile = tempfile.mkdtemp(prefix="hp-chromium-")
        work.add_cleanup(shutil.rmtree, self.profile, True)
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # Move the child's ends above 3 and 4, so the redirections to 3 and
        # 4 can never clobber them (bash, not dash: dash refuses fd > 9).
        to_r, from_w = (self._high(fd) for fd in (to_r, from_w))
        shell = 'exec "$@" 3<&%d 4>&%d %d<&- %d>&-' % (to_r, from_w, to_r, from_w)
        argv = ["bash", "-c", shell, "bash", exe] + CHROMIUM_FLAGS + [
            "--user-data-dir=" + self.profile, "--remote-debugging-pipe", "about:blank"]
        self.log_path = work.join("logs", "chromium.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        work.add_cleanup(self.stop)
        self._buf = b""
        self._id = 0
        self.events = []
        self.session = None

    @staticmethod
    def _high(fd):
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64)
        os.close(fd)
        return high

    def stop(self):
        try:
            os.close(self._to_w)
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:
            os.close(self._from_r)
        except OSError:
            pass

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message in time")
            ready, _, _ = select.select([self._from_r], [], [], left)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    raise CDPError("chromium closed the DevTools pipe; see " + self.log_path)
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def send(self, method, params=None, session=True, timeout=30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CDPError("%s: %s" % (method, reply["error"]))
                return reply.get("result", {})
            self.events.append(reply)

    def pump(self, seconds):
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def wait_event(self, method, timeout=30, since=0):
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events[since:]:
                if e.get("method") == method:
                    return e
            self.events.append(self._read_message(deadline))

    def open_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            self.send(domain)

    def navigate(self, url):
        mark = len(self.events)
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", since=mark)
        return mark

    def evaluate(self, expression, await_promise=True):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": await_promise,
                                                "returnByValue": True, "userGesture": True})
        if "exceptionDetails" in result:
            raise CDPError("JS exception: %s" % json.dumps(result["exceptionDetails"])[:1000])
        return result.get("result", {}).get("value")

    def wait_for(self, expression, timeout=15, what=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            self.pump(0.1)
        raise AssertionError("timed out waiting for %s" % (what or expression))

    def click(self, selector):
        box = self.evaluate(
            "(() => { const r = document.querySelector(%s).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()" % json.dumps(selector))
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def problems(self, since=0):
        """Console errors, uncaught exceptions and failed loads since C{since}."""
        out = []
        for e in self.events[since:]:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: %s" % json.dumps(p.get("exceptionDetails"))[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], json.dumps(p.get("args"))[:500]))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: %s %s" % (p["entry"].get("text"), p["entry"].get("url", "")))
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append("load failed: %s" % json.dumps(p)[:300])
        return out


class UITests(F.SharedFixtures, SynchronousTestCase):
    @classmethod
    def setUpFixtures(cls, work):
        if chromium_path() is None:
            msg = "install chromium: apt-get install --no-install-recommends chromium"
            if F.in_ci():
                raise AssertionError("missing in CI (see .ci/install-deps.sh): " + msg)
            from twisted.trial.unittest import SkipTest
            raise SkipTest(msg)
        cls.stack = start_tools_stack(work)
        cls.origin = cls.stack.proxy.url
        cls.artifacts = os.environ.get("HUBPROXY_ARTIFACTS") or tempfile.mkdtemp(prefix="hubproxy-ui-artifacts-")
        os.makedirs(cls.artifacts, exist_ok=True)
        cls.downloads = work.sub("downloads")
        cls.browser = Chromium(work)
        cls.browser.send("Browser.setDownloadBehavior", {"behavior": "allowAndName", "downloadPath": cls.downloads,
                                                         "eventsEnabled": True}, session=False)
        cls.browser.open_page()

    def load(self, path, shot):
        b = self.browser
        mark = b.navigate(self.origin + path)
        b.pump(0.3)
        b.screenshot(os.path.join(self.artifacts, shot))
        self.assertEqual(b.problems(mark), [], "problems on %s (screenshot %s/%s)" % (path, self.artifacts, shot))
        return mark

    def test_home_converter(self):
        b = self.browser
        mark = self.load("/", "home.png")
        usage = b.evaluate("document.querySelector('[data-template=docker]').textContent")
        self.assertIn("docker pull 127.0.0.1:%d/nginx" % self.stack.proxy.port, usage)
        b.evaluate("document.getElementById('convert-input').value = 'github.com/owner/repo/releases/download/v1/app.tgz'")
        b.click("#convert-form button")
        b.wait_for("!document.getElementById('convert-result').hidden", what="converted link")
        link = b.evaluate("document.getElementById('convert-link').href")
        self.assertEqual(link, self.origin + "/https://github.com/owner/repo/releases/download/v1/app.tgz")
        b.evaluate("document.getElementById('convert-input').value = 'https://example.com/x'")
        b.click("#convert-form button")
        b.wait_for("!document.getElementById('convert-error').hidden", what="error for a foreign host")
        self.assertEqual(b.evaluate("getComputedStyle(document.getElementById('convert-result')).display"), "none")
        b.screenshot(os.path.join(self.artifacts, "home-converted.png"))
        self.assertEqual(b.problems(mark), [])

    def test_search_and_copy(self):
        b = self.browser
        mark = self.load("/search?q=redis", "search.png")
        b.wait_for("document.querySelectorAll('#results li').length === 2", what="search results")
        names = b.evaluate("Array.from(document.querySelectorAll('#results li')).map(li => li.dataset.repo)")
        self.assertEqual(names, ["redis", "someone/redis-tools"])
        b.evaluate("document.querySelector('#results li button.name').click()")
        b.wait_for("document.querySelectorAll('#tags li[data-tag]').length === 2", what="tag list")
        host = "127.0.0.1:%d" % self.stack.proxy.port
        line = b.evaluate("document.querySelector('#tags li[data-tag=\"latest\"] code').textContent")
        self.assertEqual(line, "docker pull %s/redis:latest" % host)
        # plain-http origins have no Clipboard API: the fallback must copy
        b.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true}); true")
        b.click("#tags li[data-tag=\"latest\"] .pull button")
        b.wait_for("document.getElementById('toast').textContent === 'Copied'", what="copy confirmation")
        self.assertEqual(b.evaluate("window.__lastCopied"), "docker pull %s/redis:latest" % host)
        b.screenshot(os.path.join(self.artifacts, "search-tags.png"))
        self.assertEqual(b.problems(mark), [])

    def test_images_download(self):
        b = self.browser
        mark = self.load("/images", "images.png")
        b.evaluate("document.getElementById('platform').value = 'linux/arm64'")
        b.evaluate("document.getElementById('single-image').value = 'multi:1'")
        events = len(b.events)
        b.click("#single-form button")
        begin = b.wait_event("Browser.downloadWillBegin", timeout=30, since=events)
        self.assertEqual(begin["params"]["suggestedFilename"], "multi_1.tar")
        guid = begin["params"]["guid"]
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Browser.downloadProgress" and e["params"].get("guid") == guid
                      and e["params"].get("state") == "completed" for e in b.events):
            self.assertLess(time.monotonic(), deadline, "download did not complete")
            b.pump(0.2)
        with open(os.path.join(self.downloads, guid), "rb") as f:
            with tarfile.open(fileobj=io.BytesIO(f.read())) as tar:
                manifest = json.load(tar.extractfile("manifest.json"))
        arm = self.stack.images["library/multi:1"]["platforms"]["linux/arm64/v8"]
        self.assertEqual(manifest[0]["Config"], arm["config_digest"].split(":")[1] + ".json")
        # a platform the image lacks: an inline error, no download
        b.evaluate("document.getElementById('platform').value = 'linux/s390x'")
        b.click("#single-form button")
        b.wait_for("!document.getElementById('images-error').hidden", what="platform error")
        self.assertIn("linux/arm64/v8", b.evaluate("document.getElementById('images-error').textContent"))
        b.screenshot(os.path.join(self.artifacts, "images-error.png"))
        self.assertEqual(b.problems(mark), [])
