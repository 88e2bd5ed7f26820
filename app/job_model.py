"""A job as a record: the jobs table's fields, the API's shapes of it, and the named
transitions of its lifecycle (:mod:`app.lifecycle`).

The engine changes a job's status only through these transitions: ``start``,
``complete``, ``fail``, ``cancel`` and ``requeue`` each check the move against the
lifecycle (an invalid one raises :class:`~app.lifecycle.InvalidTransition` and changes
nothing), apply it to the record and return the fields to write, which the job
repository (:mod:`app.job_repository`) writes through to SQLite and to memory.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .lifecycle import JobStatus, check_transition

# what a job list entry shows (Job.summary); the repository reads only these for a list page
SUMMARY_COLUMNS = ("job_id", "operation", "status", "priority", "progress", "created_at", "started_at",
                   "dataset_id", "attempt_count", "eta_seconds")


@dataclass(slots=True)
class Job:
    """One row of the jobs table, decoded (JSON columns as values), with its status as a JobStatus."""

    job_id: str
    seq: int | None = None
    operation: str | None = None
    dataset_id: str | None = None
    parameters: dict[str, Any] | None = None
    priority: str | None = None
    max_memory_gb: float | None = None
    max_cores: float | None = None
    status: JobStatus = JobStatus.PENDING
    progress: float | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    updated_at: str | None = None
    attempt_count: int | None = None
    error: Any = None
    result: Any = None
    result_dataset_id: str | None = None
    eta_seconds: float | None = None
    estimated_completion_at: str | None = None
    tasks_total: int | None = None
    tasks_done: int | None = None
    resources: dict[str, Any] | None = None
    eta_history: dict[str, Any] | None = None
    cancel_requested: int | None = None
    result_kind: str | None = None
    no_cache: int | None = None
    cache_key: str | None = None
    cached_from: str | None = None
    rerun_of: str | None = None
    depends_on: list[str] | None = None
    notify_url: str | None = None

    def __post_init__(self) -> None:
        self.status = JobStatus(self.status)  # "failed" or JobStatus.FAILED; anything else raises

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        """The record of a stored row (as the store reads it back); missing columns are None, and the
        status must be one of the lifecycle's (ValueError otherwise)."""
        return cls(**{name: row[name] for name in FIELDS if name in row})

    def row(self) -> dict[str, Any]:
        """The record as a row: every column, the status as the store spells it."""
        out = {name: getattr(self, name) for name in FIELDS}
        out["status"] = self.status.value
        return out

    # -- the API's shapes ------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The contract's job list entry (SQLite builds the same, ``app.job_repository.SUMMARY_JSON``)."""
        return {
            "job_id": self.job_id, "type": self.operation, "operation": self.operation,
            "status": self.status.value, "priority": self.priority, "progress": self.progress or 0.0,
            "created_at": self.created_at, "started_at": self.started_at,
            "dataset_id": self.dataset_id, "attempt_count": self.attempt_count or 0,
        }

    def to_dict(self) -> dict[str, Any]:
        """The contract's job status (``GET /jobs/{id}/status``) as far as the record knows it:
        the queue's fields are null here (the engine's views fill them in from the queue, and add
        the attempts)."""
        running = self.status is JobStatus.RUNNING
        return {
            **self.summary(),
            "parameters": self.parameters, "max_memory_gb": self.max_memory_gb, "max_cores": self.max_cores,
            "completed_at": self.completed_at, "updated_at": self.updated_at,
            "queue_position": None, "pending_reason": None, "estimated_start_at": None,
            "eta_seconds": self.eta_seconds if running else (0.0 if self.status is JobStatus.COMPLETED else None),
            "estimated_completion_at": self.estimated_completion_at if running else None,
            "eta_history": self.eta_history or {},
            "tasks_total": self.tasks_total, "tasks_done": self.tasks_done,
            "resources": self.resources or {},
            "error": self.error, "result_kind": self.result_kind,
            "result": self.result, "result_dataset_id": self.result_dataset_id,
            "cached_from": self.cached_from, "rerun_of": self.rerun_of,
            "depends_on": self.depends_on or [],
        }

    # -- transitions -----------------------------------------------------------------
    def start(self, number: int, now: str) -> dict[str, Any]:
        """pending → running: attempt ``number`` begins (``started_at`` stays the first attempt's)."""
        return self._move(JobStatus.RUNNING, attempt_count=number, started_at=self.started_at or now)

    def requeue(self) -> dict[str, Any]:
        """running → pending: back in the queue (preempted, lost, retried, or after a restart)."""
        return self._move(JobStatus.PENDING, eta_seconds=None, estimated_completion_at=None)

    def complete(self, now: str, *, result: Any = None, result_kind: str | None = None,
                 result_dataset_id: str | None = None, cache_key: str | None = None,
                 cached_from: str | None = None) -> dict[str, Any]:
        """running → completed, with its result; progress 100 %, and the end kept in the ETA history."""
        return self._move(JobStatus.COMPLETED, completed_at=now, result=result, result_kind=result_kind,
                          result_dataset_id=result_dataset_id, cache_key=cache_key, cached_from=cached_from,
                          progress=100.0, eta_seconds=0.0, estimated_completion_at=None, tasks_done=self.tasks_total,
                          eta_history={**(self.eta_history or {}), "actual_end": now})

    def fail(self, now: str, error: dict[str, Any] | None) -> dict[str, Any]:
        """pending or running → failed, with the error."""
        return self._move(JobStatus.FAILED, completed_at=now, error=error)

    def cancel(self, now: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        """pending or running → cancelled (by request: no error; by a failed dependency: why)."""
        return self._move(JobStatus.CANCELLED, completed_at=now, error=error)

    def _move(self, to: JobStatus, **values: Any) -> dict[str, Any]:
        """Check the move, apply it, and return the fields to write (the status as stored)."""
        check_transition(self.status, to)
        self.status = to
        for name, value in values.items():
            setattr(self, name, value)
        return {"status": to.value, **values}


FIELDS = tuple(f.name for f in fields(Job))
