"""A new user's first run: a fresh clone, started with no configuration but the port.

The repository's committed HEAD is cloned into a temporary folder and served from
there (the cwd is the clone, so the default data dir ``data`` is relative to it),
with this interpreter and an environment stripped of every setting of the app
(``PROCESSING_*``, ``DASK_*`` and every variable of ``app.settings.SETTINGS``)
except ``PROCESSING_PORT``. The README's first job example, read from the clone's
README.md, is then run as written (only its URL points at the port) and its job
must complete.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from app.settings import SETTINGS
from tests.server import ROOT, free_port

README_URL = "http://localhost:8001"
BASH_BLOCK = re.compile(r"^```bash\n(?P<code>.*?)\n```", re.S | re.M)


def first_job_example(readme: str) -> str:
    """The first ```bash block of the README that submits a job."""
    for match in BASH_BLOCK.finditer(readme):
        if "jobs/submit" in match["code"]:
            return match["code"]
    raise AssertionError("README.md has no bash block that submits a job")


def clean_env(port: int) -> dict[str, str]:
    """The caller's environment without any setting of the app, plus the port."""
    names = {var.env for var in SETTINGS}
    env = {k: v for k, v in os.environ.items()
           if k not in names and not k.startswith(("PROCESSING_", "DASK_"))}
    env["PROCESSING_PORT"] = str(port)
    return env


class FreshClone:
    """``python -m app serve`` from a clone of the repository; stopped by PID (its own session)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder.parent / "first-run.log"
        self.proc: subprocess.Popen | None = None

    def clone(self) -> None:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(self.folder)], check=True, timeout=120)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=self.folder,
                                         env=clean_env(self.port), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)

    def wait_for(self, what: str, predicate: Any, timeout: float) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"the server exited:\n{self.log_tail()}"
            try:
                value = predicate()
            except requests.RequestException:
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{what} not reached in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGKILL to the session it leads (its Dask processes too): a teardown need not wait
        for the graceful exit, which tests/test_children.py checks."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[FreshClone]:
    app = FreshClone(tmp_path / "clone")
    app.clone()
    yield app
    app.stop()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_readme_first_job_runs_on_a_fresh_clone_with_the_defaults(fresh):
    assert not (fresh.folder / "data").exists()
    started = time.perf_counter()
    fresh.start()
    fresh.wait_for("health", lambda: fresh.get("/api/processing/health").status_code == 200, 120)
    # the demo dataset is made in the background on first start: a failure there is a health reason
    fresh.wait_for("the demo dataset", lambda: fresh.get("/api/processing/datasets/demo_expression").status_code
                   == 200 or _demo_failed(fresh), 240)
    assert not _demo_failed(fresh), fresh.get("/api/processing/health").json()
    assert (fresh.folder / "data" / "managed" / "demo" / "demo_expression").is_dir()
    demo_at = time.perf_counter() - started

    example = first_job_example((fresh.folder / "README.md").read_text())
    assert README_URL in example, example
    out = subprocess.run(["bash", "-e", "-c", example.replace(README_URL, fresh.url)], capture_output=True,
                         text=True, timeout=60, cwd=fresh.folder)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer.get("status") == "pending" and answer.get("job_id"), answer

    def finished() -> dict[str, Any] | None:
        status = fresh.get(f"/api/processing/jobs/{answer['job_id']}/wait?timeout=20", timeout=40).json()
        return status if status["status"] in ("completed", "failed", "cancelled") else None

    status = fresh.wait_for("the job's end", finished, 240)
    assert status["status"] == "completed", status
    print(f"first run: demo dataset after {demo_at:.1f} s, README job completed after "
          f"{time.perf_counter() - started:.1f} s")  # a figure for the report, not a limit
    assert fresh.get("/api/processing/health").json()["status"] == "healthy"


def _demo_failed(app: FreshClone) -> bool:
    return any("demo dataset" in r for r in app.get("/api/processing/health").json()["reasons"])


def test_the_first_job_example_is_found_and_the_environment_is_clean(monkeypatch):
    example = first_job_example((ROOT / "README.md").read_text())
    assert "jobs/submit" in example and README_URL in example
    monkeypatch.setenv("PROCESSING_DATA_DIR", "/elsewhere")
    monkeypatch.setenv("DASK_N_WORKERS", "9")
    monkeypatch.setenv("DEMO_ROWS", "10")
    env = clean_env(1234)
    assert env["PROCESSING_PORT"] == "1234" and env["PATH"] == os.environ["PATH"]
    assert not {"PROCESSING_DATA_DIR", "DASK_N_WORKERS", "DEMO_ROWS"} & set(env)
