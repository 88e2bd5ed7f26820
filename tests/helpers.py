"""Shared helpers for API tests: datasets on disk, job submission and waiting."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from app.demo import generate_expression, write_dataset
from tests.server import ServerProcess

AGG_MEAN = {"column": "expression_level", "operation": "mean"}


def register_generated(srv: ServerProcess, rows: int, files: int, fmt: str = "csv",
                       dataset_id: str | None = None, seed: int = 42) -> dict[str, Any]:
    """Write a demo-shaped dataset into the server's data dir and register it."""
    dataset_id = dataset_id or f"gen_{uuid.uuid4().hex[:8]}"
    out = Path(srv.data_dir) / "inputs" / dataset_id
    write_dataset(generate_expression(rows, seed), out, fmt, n_files=files)
    r = srv.post("/api/processing/datasets", {"source": str(out), "dataset_id": dataset_id, "format": fmt})
    assert r.status_code == 201, r.text
    return r.json()["dataset"]


def submit(srv: ServerProcess, operation: str = "aggregate", dataset_id: str = "demo_expression",
           parameters: dict[str, Any] | None = None, **extra: Any) -> str:
    body = {"operation": operation, "dataset_id": dataset_id,
            "parameters": AGG_MEAN if parameters is None else parameters, **extra}
    r = srv.post("/api/processing/jobs/submit", body)
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


def wait_job(srv: ServerProcess, job_id: str, timeout: float = 120) -> dict[str, Any]:
    status = srv.get(f"/api/processing/jobs/{job_id}/wait?timeout={min(timeout, 300)}", timeout=timeout + 10).json()
    assert status["status"] in ("completed", "failed", "cancelled"), status
    return status


def status(srv: ServerProcess, job_id: str) -> dict[str, Any]:
    return srv.get(f"/api/processing/jobs/{job_id}/status").json()
