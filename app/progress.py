"""A scheduler plugin that counts each job's tasks by their ``job`` annotation.

It runs inside the Dask scheduler. With an external scheduler this module is sent
by value (``cloudpickle.register_pickle_by_value``), so it imports nothing from
the project.
"""
from __future__ import annotations

import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

PLUGIN_NAME = "processing-progress"


class JobProgressPlugin(SchedulerPlugin):
    """Per-job task counts, held bytes and compute time, plus a global done count."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.jobs: dict[str, dict[str, Any]] = {}
        self.done_total = 0
        self.erred_total = 0

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def _stats(self, job: str, create: bool) -> dict[str, Any] | None:
        stats = self.jobs.get(job)
        if stats is None and create:
            stats = self.jobs[job] = {
                "keys": set(), "done": set(), "processing": set(), "erred": 0, "held": 0, "peak_held": 0,
                "cpu_s": 0.0,
            }
        return stats

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and start == "processing":
            self.done_total += 1
        elif finish == "erred":
            self.erred_total += 1
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        job = (ts.annotations or {}).get("job") if ts is not None else None
        if job is None:
            return
        # a key leaving memory or being released belongs to a job that may be forgotten
        # already: only work arriving (waiting, processing, memory, erred) opens an entry
        stats = self._stats(job, create=start != "memory" and finish not in ("released", "forgotten"))
        if stats is None:
            return
        stats["keys"].add(key)
        if finish == "processing":  # on a worker (or sent to one that is stopped, or restarting)
            stats["processing"].add(key)
            stats.setdefault("first_processing", time.time())
        elif start == "processing":
            stats["processing"].discard(key)
        if finish == "memory":
            stats["done"].add(key)
            stats["last_done"] = time.time()
            stats["held"] += ts.nbytes if ts.nbytes and ts.nbytes > 0 else 0
            stats["peak_held"] = max(stats["peak_held"], stats["held"])
            for ss in kwargs.get("startstops") or ():
                if ss.get("action") == "compute":
                    stats["cpu_s"] += ss["stop"] - ss["start"]
        elif start == "memory":
            stats["held"] = max(0, stats["held"] - (ts.nbytes if ts.nbytes and ts.nbytes > 0 else 0))
        elif finish == "erred":
            stats["erred"] += 1

    def snapshot(self) -> dict[str, Any]:
        """Counts only (no key sets), cheap to send to the client. ``since_done``: seconds
        since the job's latest task ended, by this host's clock (the server subtracts it from
        its own: the count is as of then, not of the sample, which comes up to an interval later);
        ``since_first_processing``: since its first task went to a worker, when its work began."""
        now = time.time()
        return {
            "done_total": self.done_total,
            "erred_total": self.erred_total,
            "jobs": {
                job: {
                    "total": len(s["keys"]), "done": len(s["done"]), "erred": s["erred"],
                    "processing": len(s["processing"]),
                    "held_bytes": s["held"], "peak_held_bytes": s["peak_held"], "cpu_s": s["cpu_s"],
                    "since_done": max(0.0, now - s["last_done"]) if "last_done" in s else None,
                    "since_first_processing": (max(0.0, now - s["first_processing"])
                                               if "first_processing" in s else None),
                }
                for job, s in self.jobs.items()
            },
        }

    def forget_all(self, prefixes: list[str] | tuple[str, ...]) -> None:
        """``forget`` for many jobs in one pass over the entries."""
        ended = {p.split("/", 1)[0] for p in prefixes}
        for job in [job for job in self.jobs if job.split("/", 1)[0] in ended]:
            del self.jobs[job]

    def forget(self, prefix: str) -> None:
        """Drop the entries of every attempt whose annotation starts with ``prefix``."""
        for job in [job for job in self.jobs if job.startswith(prefix)]:
            del self.jobs[job]


def read_snapshot(dask_scheduler: Any, forget: list[str] | tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Run on the scheduler: the plugin's counts, then drop the entries of ended jobs
    (annotation prefixes ``job_id/``), so that a job's final counts are in the read after it
    ended (a short job's last sample while it ran predates its last task); None when not installed."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return None
    snap = plugin.snapshot()
    if forget:
        plugin.forget_all(forget)
    return snap


def forget_job(dask_scheduler: Any, job: str) -> None:
    """Run on the scheduler: drop the counts of a finished job's attempts (``job_id/``)."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is not None:
        plugin.forget(job if job.endswith("/") else job + "/")
