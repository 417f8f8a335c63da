"""
Running hubproxy itself (and tiny helper servers) as subprocesses on
127.0.0.1 for integration tests.

Every wait is bounded; every process is stopped in the test's cleanup.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from twisted.trial.unittest import SkipTest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_tools(*names: str, package: str | None = None) -> None:
    """
    Fail (under CI=true) or skip (elsewhere) when a needed program is
    missing, saying what to install.
    """
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: apt-get install {package or ' '.join(missing)}"
    if in_ci():
        raise AssertionError(message)
    raise SkipTest(message)


def twistd_path() -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("twistd")
    if found is None:
        raise AssertionError("twistd not found next to the Python interpreter or on PATH")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen[Any] | None = None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} in time")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _stop(proc: subprocess.Popen[Any], timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode


def start_python_server(test: Any, source: str, args: list[str], port: int) -> subprocess.Popen[Any]:
    """
    Run a small Python server script (as a subprocess) until the test ends.
    """
    fd, path = tempfile.mkstemp(suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(source)
    proc = subprocess.Popen([sys.executable, path, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test.addCleanup(os.unlink, path)
    test.addCleanup(_stop, proc)
    wait_for_port(port, time.monotonic() + 20, proc)
    return proc


#: Environment variables a developer's shell may set that would change what
#: a test hubproxy does (proxies, the Go-style overrides, its config file).
ENV_DROP = (
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy",
    "HUBPROXY_CONFIG", "HUBPROXY_PUBLIC_URL", "SERVER_HOST", "SERVER_PORT", "ENABLE_H2C",
    "ENABLE_FRONTEND", "MAX_FILE_SIZE", "RATE_LIMIT", "RATE_PERIOD_HOURS", "IP_WHITELIST",
    "IP_BLACKLIST", "ACCESS_PROXY", "MAX_IMAGES", "SKIP_TLS_VERIFY",
)


def clean_env() -> dict[str, str]:
    """
    The environment for a test hubproxy: without L{ENV_DROP}, and with
    C{NO_PROXY=*} so nothing reaches a proxy by accident.
    """
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env["NO_PROXY"] = "*"
    return env


class ClassScope:
    """
    Lets L{HubproxyProcess} (which registers its cleanups on a test) live
    for a whole test class: its cleanups go to the class's L{Workdir}.
    """

    def __init__(self, work: Any) -> None:
        self.work = work

    def addCleanup(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        self.work.add_cleanup(lambda: fn(*args, **kwargs))


class HubproxyProcess:
    """
    C{twistd -n hubproxy --config <file>} with the given TOML (the port is
    filled in when the TOML does not set one).
    """

    def __init__(
        self,
        test: Any,
        toml_text: str | None,
        *,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        cwd: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="hubproxy-proc-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.config_path = os.path.join(self.dir, "config.toml")
        if toml_text is not None:
            if "port =" not in toml_text:
                if "[server]" in toml_text:
                    toml_text = toml_text.replace("[server]", f"[server]\nport = {self.port}", 1)
                else:
                    toml_text = f"[server]\nport = {self.port}\nhost = \"127.0.0.1\"\n" + toml_text
            with open(self.config_path, "w") as f:
                f.write(toml_text)
        self.argv = argv or [twistd_path(), "-n", "--pidfile=", "hubproxy", "--config", self.config_path]
        self.env = env
        self.cwd = cwd or self.dir
        self.log_path = os.path.join(self.dir, "hubproxy.log")
        self.proc: subprocess.Popen[Any] | None = None
        self._sync = 0
        test.addCleanup(self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hubproxy exited with {self.proc.returncode}:\n{self._read()}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise AssertionError(f"hubproxy not ready in {timeout}s:\n{self._read()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        rc = _stop(self.proc, 15)
        if not self._log.closed:
            self._log.close()
        return rc

    def log(self) -> str:
        """
        The process's output so far, access lines included.  hubproxy
        writes access lines in batches (L{hubproxy.logs.AccessLog}), so
        while it runs a marker request is sent and waited for (bounded):
        lines are written in order, so everything logged before it is in.
        """
        if self.proc is not None and self.proc.poll() is None:
            self._sync += 1
            marker = f"/ready?log-sync={self._sync}"
            try:
                urllib.request.urlopen(self.url + marker, timeout=2).close()
                served = True
            except urllib.error.HTTPError as e:  # refused (a blacklist test): still logged
                e.close()
                served = True
            except (urllib.error.URLError, OSError):
                served = False
            if served:
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and marker not in self._read():
                    time.sleep(0.02)
        return self._read()

    def _read(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
