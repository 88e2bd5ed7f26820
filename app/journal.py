"""What the engine writes into a job's log (``GET /jobs/{id}/logs``): one line per step
of its life, in words a user reads, with the figures in ``details``.

Queued (priority and reservation), started (attempt, reservation, how long it waited
and why), each attempt's end that is not a plain completion (outcome and cause, with
the traceback of an exception raised on a worker), requeued, and the end: completed
with its duration, failed with its error, cancelled.
"""
from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any, Callable

from .lifecycle import NOT_FAILURES, JobStatus, Outcome

if TYPE_CHECKING:
    from .job_model import Job

log = logging.getLogger(__name__)
TRACEBACK_LINES = 40


def _traceback(exc: BaseException | None) -> str | None:
    if exc is None or exc.__traceback__ is None:
        return None
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip()
    kept = text.splitlines()[-TRACEBACK_LINES:]
    return "\n".join(kept)


class Journal:
    """Writes a job's log lines through ``write(job_id, event, message, level, details)``;
    a failing write is logged and never stops the engine."""

    def __init__(self, write: Callable[..., None]):
        self._write = write

    def _line(self, job_id: str, event: str, message: str, level: str = "info", **details: Any) -> None:
        try:
            self._write(job_id, event, message, level=level, details={k: v for k, v in details.items() if v is not None})
        except Exception:  # noqa: BLE001 - the log is a record, never a reason to fail a job
            log.warning("could not write the log of job %s", job_id, exc_info=True)

    def queued(self, job: dict[str, Any]) -> None:
        extra = f"; a re-run of {job['rerun_of']}" if job.get("rerun_of") else ""
        self._line(job["job_id"], "queued",
                   f"queued at priority {job['priority']}, reserving {job['max_cores']:g} core(s) and "
                   f"{job['max_memory_gb']:g} GB{extra}",
                   priority=job["priority"], max_cores=job["max_cores"], max_memory_gb=job["max_memory_gb"],
                   operation=job["operation"], dataset_id=job["dataset_id"], rerun_of=job.get("rerun_of"))

    def started(self, job: dict[str, Any], number: int, waited_s: float | None, reason: str | None) -> None:
        waited = f" after waiting {waited_s:.1f} s" if waited_s is not None else ""
        why = f" (it waited because: {reason})" if reason else ""
        self._line(job["job_id"], "started",
                   f"attempt {number} started{waited}{why}, reserving {job['max_cores']:g} core(s) and "
                   f"{job['max_memory_gb']:g} GB",
                   attempt=number, waited_s=None if waited_s is None else round(waited_s, 3), wait_reason=reason)

    def attempt_ended(self, job_id: str, number: int, outcome: str, cause: str | None,
                      exc: BaseException | None = None) -> None:
        if outcome == Outcome.COMPLETED:
            return  # said by ``ended``, with the duration
        outcome = str(outcome)
        level = "info" if outcome in NOT_FAILURES else ("warning" if outcome == Outcome.WORKER_LOST else "error")
        self._line(job_id, "attempt_" + outcome, f"attempt {number} ended: {outcome}" + (f" — {cause}" if cause else ""),
                   level=level, attempt=number, outcome=outcome, traceback=_traceback(exc))

    def requeued(self, job_id: str) -> None:
        self._line(job_id, "requeued", "back in the queue; it runs again when its turn and room come")

    def ended(self, job: "Job", duration_s: float | None) -> None:
        """The job's record as it ended (completed, failed with its error, or cancelled)."""
        took = f" in {duration_s:.2f} s" if duration_s is not None else ""
        attempts = int(job.attempt_count or 0)
        status, error = job.status.value, job.error if isinstance(job.error, dict) else {}
        if job.status is JobStatus.COMPLETED:
            cached = f", answered from {job.cached_from}'s result" if job.cached_from else ""
            self._line(job.job_id, status, f"completed{took} ({attempts} attempt(s)){cached}",
                       duration_s=duration_s, attempts=attempts)
        elif job.status is JobStatus.FAILED:
            message = error.get("message") or "failed"
            self._line(job.job_id, status, f"failed{took}: {message}", level="error", duration_s=duration_s,
                       stage=error.get("stage"))
        else:
            self._line(job.job_id, status, f"{status}{took}", level="warning", duration_s=duration_s)
