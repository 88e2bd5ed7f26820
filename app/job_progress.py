"""How the engine follows its running attempts: progress, ETA and memory from each sample of
the scheduler's per-job counts (a mixin of :class:`app.jobs.JobEngine`).

Per tick, each running job's progress (never backwards, at most 99 % until it completes),
its ETA and the ETA's history at 25 % and 50 %, and the resources it holds are written to
its record; a job holding more than ``MEMORY_MARGIN`` times its declared memory is
stopped and failed when ``ENFORCE_JOB_MEMORY`` is on.
"""
from __future__ import annotations

import logging
from typing import Any

from . import queue as q
from .job_model import Job
from .lifecycle import Interrupt, JobStatus, Outcome
from .runner import Attempt
from .times import eta_at, iso

log = logging.getLogger("app.jobs")
ETA_MARKS = (25, 50)
MEMORY_MARGIN = 1.5


class ProgressTracking:
    """Progress of running attempts; the engine supplies the state and the outcomes it uses."""

    store: Any
    settings: Any
    running: dict[str, Any]
    pending: dict[str, Any]
    completed_attempts: dict[str, str]

    def _on_sample(self, snap: dict[str, Any]) -> None:
        """Per tick: progress and ETA of running jobs from the plugin's counts."""
        counts = snap.get("jobs", {})
        now = snap["ts"]
        for job_id, (_running, attempt, _) in list(self.running.items()):
            stats = counts.get(attempt.annotation)
            if not stats or not stats["total"]:
                continue
            self._progress(job_id, attempt, stats, now)
        self._final_resources(counts)
        if self.pending:
            self.kick()

    def _final_resources(self, counts: dict[str, Any]) -> None:
        """A completed job's resources from its counts once all its tasks are done: the last
        sample while it ran often predates its last task (a short job's CPU time read 0). The
        plugin drops the counts of ended jobs after the read following their end."""
        for job_id, annotation in list(self.completed_attempts.items()):
            stats = counts.get(annotation)
            if stats and stats["total"] and stats["done"] < stats["total"]:
                continue  # a sample taken before its last task ended: the next one has it
            del self.completed_attempts[job_id]
            if stats and stats["total"]:
                self.store.jobs.update(job_id, resources=_resources(stats), tasks_total=stats["total"],
                                       tasks_done=stats["done"])

    def _progress(self, job_id: str, attempt: Attempt, stats: dict[str, Any], now: float) -> None:
        job = self.store.jobs.get(job_id)
        if job is None or job["status"] != JobStatus.RUNNING:
            return
        share = 100.0 * stats["done"] / stats["total"]
        progress = round(max(float(job["progress"] or 0.0), min(99.0, share)), 2)
        eta = eta_at(now, attempt.started_at, share, stats.get("since_done"), stats.get("since_first_processing"))
        values: dict[str, Any] = {
            "progress": progress, "tasks_total": stats["total"], "tasks_done": stats["done"],
            "eta_seconds": round(eta, 2) if eta is not None else None,
            "estimated_completion_at": iso(now + eta) if eta is not None else None,
            "resources": _resources(stats),
        }
        history = dict(job.get("eta_history") or {})
        for mark in ETA_MARKS:
            if share >= mark and str(mark) not in history and eta is not None:
                history[str(mark)] = {"at": iso(now), "eta_seconds": round(eta, 2), "predicted_end": iso(now + eta)}
                values["eta_history"] = history
        self.store.jobs.update(job_id, **values)
        entry = self.running.get(job_id)
        if entry and eta is not None:
            self.running[job_id] = (q.RunningJob(entry[0].job_id, entry[0].priority, entry[0].cores,
                                                 entry[0].memory_gb, entry[0].started_at, now + eta), *entry[1:])
        limit = float(job["max_memory_gb"] or 0) * 1e9 * MEMORY_MARGIN
        if self.settings.enforce_job_memory and limit and stats["held_bytes"] > limit:
            self._memory_stop(job_id, attempt, stats["held_bytes"], float(job["max_memory_gb"]))

    def _memory_stop(self, job_id: str, attempt: Attempt, held: int, declared: float) -> None:
        log.warning("job %s holds %.2f GB, over its declared %.2f GB: stopping it", job_id, held / 1e9, declared)
        self._interrupt_attempt(attempt, Interrupt.MEMORY)
        attempt.recorded = True
        self.running.pop(job_id, None)
        message = (f"the job held {held / 1e9:.2f} GB of results on the workers, more than "
                   f"{MEMORY_MARGIN}× its declared max_memory_gb={declared:g}; resubmit with more memory")
        self._end_attempt(attempt, Outcome.FAILED, message)
        self._finish(job_id, Job.fail, error={"type": "MemoryLimit", "message": message})
        self.kick()


def _resources(stats: dict[str, Any]) -> dict[str, Any]:
    """A job's ``resources`` from the plugin's counts of its attempt."""
    return {"peak_memory_bytes": stats["peak_held_bytes"], "held_memory_bytes": stats["held_bytes"],
            "task_cpu_seconds": round(stats["cpu_s"], 3), "tasks": stats["total"]}
