"""The one set of test helpers: datasets on disk, job submission and waiting, error bodies,
condition waits with deadlines. Test modules import from here, never from each other."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

import requests

from app.demo import generate_expression, write_dataset
from app.store_pool import decode
from tests.server import ServerProcess

AGG_MEAN = {"column": "expression_level", "operation": "mean"}
TOKEN = "test-api-token-5f2c"  # the token-protected server's (conftest: token_server)
TERMINAL = ("completed", "failed", "cancelled")

T = TypeVar("T")


def uid(prefix: str) -> str:
    """A fresh id with a readable prefix."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Callable[[], T], timeout: float = 60, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met in {timeout} s (last value {value!r})")
        time.sleep(interval)


def write_csv(path: Path, rows: int = 3) -> Path:
    """A small gene_id,expression_level CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("gene_id,expression_level\n" + "".join(f"G{i},{i * 1.5}\n" for i in range(rows)))
    return path


def register_generated(srv: ServerProcess, rows: int, files: int, fmt: str = "csv",
                       dataset_id: str | None = None, seed: int = 42) -> dict[str, Any]:
    """Write a demo-shaped dataset into the server's data dir and register it."""
    dataset_id = dataset_id or uid("gen")
    out = Path(srv.data_dir) / "inputs" / dataset_id
    frame = generate_expression(rows, seed)
    if fmt == "csv":
        write_csv_fast(frame, out, files)
    else:
        write_dataset(frame, out, fmt, n_files=files)
    return register(srv, out, dataset_id, fmt)


def write_csv_fast(frame: Any, out: Path, files: int) -> list[Path]:
    """``write_dataset(frame, out, "csv", n_files=files)``'s files (the same names, rows and
    values; small floats may be written positionally, not in exponent form) written by
    Arrow's CSV writer, some 5x faster than pandas' (seconds saved on millions of rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(frame), files + 1).round().astype(int)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    paths = []
    for i in range(files):
        path = out / f"part-{i:05d}.csv"
        with open(path, "wb") as f:
            f.write((",".join(frame.columns) + "\n").encode())
            pacsv.write_csv(pa.Table.from_pandas(frame.iloc[bounds[i]:bounds[i + 1]], preserve_index=False), f, options)
        paths.append(path)
    return paths


def register(srv: ServerProcess, source: Path, dataset_id: str, fmt: str = "csv") -> dict[str, Any]:
    """Register a file or folder already on disk; the dataset's record."""
    r = srv.post("/api/processing/datasets", {"source": str(source), "dataset_id": dataset_id, "format": fmt})
    assert r.status_code == 201, r.text
    return r.json()["dataset"]


def submit(srv: ServerProcess, operation: str = "aggregate", dataset_id: str = "demo_expression",
           parameters: dict[str, Any] | None = None, **extra: Any) -> str:
    """Submit a job (201 expected); its id."""
    body = {"operation": operation, "dataset_id": dataset_id,
            "parameters": AGG_MEAN if parameters is None else parameters, **extra}
    r = srv.post("/api/processing/jobs/submit", body)
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


def wait_job(srv: ServerProcess, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job's status once it ended (completed, failed or cancelled); fails if it did not."""
    r = srv.get(f"/api/processing/jobs/{job_id}/wait?timeout={min(timeout, 300)}", timeout=timeout + 10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] in TERMINAL, f"job {job_id} still {body['status']} after {timeout} s: {body}"
    return body


def status(srv: ServerProcess, job_id: str) -> dict[str, Any]:
    """The job's status now."""
    r = srv.get(f"/api/processing/jobs/{job_id}/status")
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(srv: ServerProcess, job_id: str, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
    """Poll the job until its status is one of ``wanted``."""
    return wait_until(lambda: (s := status(srv, job_id))["status"] in wanted and s, timeout, 0.1,
                      f"job {job_id} in {sorted(wanted)}")


def wait_running(srv: ServerProcess, job_id: str, min_progress: float = 1.0, timeout: float = 90) -> dict[str, Any]:
    """Poll the job until it runs with at least ``min_progress`` percent done.

    A job that ends first fails the wait at once, with its status (the test meant a
    longer job); a timeout names the last status seen.
    """
    seen: dict[str, Any] = {}

    def running() -> dict[str, Any] | None:
        seen.update(status(srv, job_id))
        assert seen["status"] in ("pending", "running"), f"job {job_id} ended before it was seen running: {seen}"
        return dict(seen) if seen["status"] == "running" and seen["progress"] >= min_progress else None

    try:
        return wait_until(running, timeout, 0.1, f"job {job_id} running at {min_progress}%")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {seen}") from None


def error_of(r: requests.Response) -> dict[str, Any]:
    """The ``error`` object of an error answer."""
    return r.json()["error"]


def concrete(path: str) -> str:
    """An OpenAPI path with every ``{placeholder}`` filled by an id that does not exist."""
    return re.sub(r"\{\w+\}", "does-not-exist", path)


class ServerPool:
    """Servers shared by the tests of one module, one per environment, so that tests needing
    the same kind of server start it once. ``get(name, env)`` hands back a running one with
    its cluster started and ``workers`` workers up, starting it first (or again, when an
    earlier test ended it); ``replace(name, srv)`` keeps the restart a test made itself.
    ``close()`` ends them all."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.servers: dict[str, ServerProcess] = {}

    def get(self, name: str, env: dict[str, str], workers: int = 2) -> ServerProcess:
        srv = self.servers.get(name)
        if srv is None or srv.proc is None or srv.proc.poll() is not None:
            if srv is not None:
                srv.cleanup()
            srv = self.servers[name] = ServerProcess(self.base / name, env).start()
        if srv.get("/api/processing/cluster/status").json()["status"] != "running":
            assert srv.post("/api/processing/cluster/start").status_code == 200
        srv.wait_workers(workers)
        return srv

    def replace(self, name: str, srv: ServerProcess) -> None:
        old = self.servers.get(name)
        if old is not None and old is not srv:
            old.cleanup()
        self.servers[name] = srv

    def close(self) -> None:
        for srv in self.servers.values():
            srv.cleanup()


def scheduler_address(scheduler_file: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    """The address a ``dask scheduler --port 0 --scheduler-file F`` wrote once it bound."""
    def written() -> str | None:
        assert proc.poll() is None, f"dask scheduler exited with {proc.returncode}"
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None
    return wait_until(written, timeout, 0.1, "scheduler file")


def check_shared_cluster(request, fixture: str, what: str, hint: str) -> None:
    """After a test that used the shared server ``fixture``: still running, 2 fixed workers."""
    import pytest

    if fixture not in request.fixturenames:
        return
    srv = request.getfixturevalue(fixture)
    if srv.proc is None or srv.proc.poll() is not None:
        pytest.fail(f"{request.node.nodeid} ended the {what}")
    try:
        status = srv.wait_workers(2, timeout=30)
    except TimeoutError:
        pytest.fail(f"{request.node.nodeid} changed the {what}'s cluster ({hint})")
    assert status["status"] == "running" and status.get("adaptive") is None, (
        f"{request.node.nodeid} changed the {what}'s cluster ({hint}): {status}")



def job_on_disk(path: Path, job_id: str) -> dict:
    """The job's row as SQLite holds it (JSON columns decoded), read on a read-only connection of its own."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        cursor = conn.execute("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        names = [d[0] for d in cursor.description]
        return decode("jobs", dict(zip(names, cursor.fetchone())))
    finally:
        conn.close()


def run_async(coro: Any, dump_after: float = 150.0) -> Any:
    """``asyncio.run(coro)``; still running after ``dump_after`` s, every asyncio task's stack is
    printed (pytest-timeout's dump shows threads only: a loop idle in ``select`` while a
    coroutine awaits something that never comes says nothing) and the main task is cancelled."""
    import asyncio
    import sys
    import threading

    with asyncio.Runner() as runner:
        loop = runner.get_loop()

        def dump() -> None:
            print(f"--- asyncio tasks after {dump_after:.0f} s ---", file=sys.stderr)
            for task in asyncio.all_tasks(loop):
                print(repr(task), file=sys.stderr)  # its repr names the future it waits for
                task.print_stack(limit=40, file=sys.stderr)
            for task in asyncio.all_tasks(loop):
                if task.get_coro() is coro:  # Runner.run wraps the coroutine itself in its task
                    task.cancel()

        timer = threading.Timer(dump_after, lambda: loop.call_soon_threadsafe(dump))
        timer.daemon = True
        timer.start()
        try:
            return runner.run(coro)
        finally:
            timer.cancel()
