"""Start the real server in a subprocess, for tests and benchmarks.

The server binds port 0 (the OS picks a free port) and logs the port it bound; this class
reads it from the log, so no port is chosen first and lost to another process meanwhile."""
from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent

TEST_ENV = {
    "DASK_N_WORKERS": "2",
    "DASK_THREADS_PER_WORKER": "1",
    "DASK_MEMORY_LIMIT": "1GB",
    "DASK_DASHBOARD_ADDRESS": "127.0.0.1:0",
    "DEMO_ROWS": "20000",
    "LIVE_INTERVAL": "0.5",
    "METRICS_INTERVAL": "1",
    "JOB_CHECK_INTERVAL": "2",
    "LOG_LEVEL": "INFO",
    # an idle test server costs ~10 % of a core with Dask's defaults (a 20 ms event-loop tick in
    # every process, the workers' 10 ms statistical profiler, a 0.5 s system monitor), ~4 %
    # without: the session-scoped servers sit idle most of the run, six at the end of it
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "500ms",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "false",
    "LOOP_LAG_INTERVAL": "1",  # the server's loop-lag timer: 0.3 % of a core at its 0.1 s default
    "SESSION_EXPIRY_S": "5",  # a closed tab's session goes in 5-7.5 s, not 15-32 s (tests/ui/test_log_noise.py waits for it)
}


LISTENING = re.compile(rb"listening on http://([^\s/]+):(\d+)/")
WILDCARD = {"0.0.0.0", "::", ""}
_LOGS = itertools.count()
# Set by tests/conftest.py before each test: the node id of the running test when it is not
# marked slow or ui (so it may not start a server), else None. Benchmarks leave it None.
FAST_TEST: str | None = None


def free_port() -> int:
    """A port that was free a moment ago (racy: only for things that cannot bind port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClosedPort:
    """A loopback port held bound but not listening: connecting is refused, and no other
    process can take it while the ``with`` block runs (a free_port() can be taken)."""

    def __enter__(self) -> str:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()


class ServerProcess:
    """``python -m app serve`` with a temporary data dir; stopped by PID.

    Without ``port`` the server binds port 0 and ``port``/``url`` are known once it logged
    the port it bound (``start`` waits for that, even with ``wait=False``)."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port: int | None = port
        self.env = {**os.environ, **TEST_ENV, "PROCESSING_DATA_DIR": str(self.data_dir),
                    "PROCESSING_HOST": "127.0.0.1", **(env or {}), "PROCESSING_PORT": str(port or 0)}
        self.proc: subprocess.Popen | None = None
        self._cleaned = False  # cleanup() ended this proc (a second call must not: its PID may be reused)
        self._url: str | None = None
        self.host = "127.0.0.1"  # where to reach it: the bound address unless that is a wildcard
        self._log_start = 0
        self.log_path = self.data_dir / f"server-{os.getpid()}-{next(_LOGS)}.log"

    @property
    def url(self) -> str:
        if self._url is not None:
            return self._url
        if self.port is None:
            raise RuntimeError("the server has not reported its port yet: start() it first")
        return f"http://{self.host}:{self.port}"

    @url.setter
    def url(self, value: str) -> None:
        """Reach the server under another address (e.g. 127.0.0.2 on a wildcard bind)."""
        self._url = value

    def start(self, wait: bool = True, timeout: float = 90) -> "ServerProcess":
        if FAST_TEST is not None:
            raise RuntimeError(f"{FAST_TEST} starts a server: mark it slow (tests/conftest.py)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self._cleaned = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        host, self.port = self.wait_port(timeout)
        self.host = "127.0.0.1" if host in WILDCARD else host
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_port(self, timeout: float = 90) -> tuple[str, int]:
        """The address and port this start of the server logged it listens on."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                found = LISTENING.search(f.read())
            if found:
                return found.group(1).decode(), int(found.group(2))
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"server logged no port after {timeout} s:\n{self.log_tail()}")

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/api/processing/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not healthy after {timeout} s:\n{self.log_tail()}")

    def wait_for(self, predicate: Any, timeout: float = 60, interval: float = 0.2) -> Any:
        """Poll ``predicate()`` until it returns something truthy."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"condition not met in {timeout} s:\n{self.log_tail()}")

    def wait_workers(self, n: int, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(lambda: (s := self.get("/api/processing/cluster/status").json())["n_workers"] == n and s, timeout)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, json=json, timeout=kw.pop("timeout", 60), **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return requests.delete(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)  # type: ignore[union-attr]
        except psutil.NoSuchProcess:
            return []

    def terminate(self, timeout: float = 20) -> float:
        """SIGTERM and wait; returns seconds to exit."""
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL the server only (its Dask processes are reaped by ``cleanup``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> None:
        """End the server and every process it started (its own session), at once, by SIGKILL.

        A teardown does not wait for the graceful exit (some seconds per server, with its
        cluster): where SIGTERM's exit is the subject, the test calls ``terminate`` itself
        (tests/test_children.py), and children that outlive a killed server are a test too."""
        if self.proc is None or self._cleaned:
            return  # never started, or ended already (its PID may belong to another process now)
        self._cleaned = True
        kids = self.descendants()
        if self.proc.poll() is None:
            self.proc.kill()
        for kid in kids:
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
