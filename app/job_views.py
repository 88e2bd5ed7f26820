"""The engine's read views: a job's status, the job list, the queue, results and waits.

Mixed into :class:`app.jobs.JobEngine`; they read the store and the engine's queue state
and change nothing.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .errors import Conflict, InvalidRequest, NotFound
from .job_model import Job
from .job_repository import ACTIVE, MAX_SEARCH_CHARS
from .jsonsafe import json_safe
from .lifecycle import ALL, TERMINAL, JobStatus
from .downloads import ResultStream, result_files, table_of
from .runner import read_rows, results_dir
from .times import iso, parse_iso


SORTS = {  # the job list's server-side orders: (column, its values in rank order, lowest first)
    "created": ("created", ()),
    "priority": ("priority", ("LOW", "NORMAL", "HIGH", "CRITICAL")),
    "status": ("status", ALL),
}


class LiveViews:
    """Plain-data views of the engine's memory for the pages: nothing returned is engine state."""

    def list_sorted(self, status: list[str], priority: list[str], limit: int, offset: int,
                    sort: str = "created", descending: bool = True, **filters: Any) -> dict[str, Any]:
        """A page of the job list in a server-side order across all pages.

        ``priority`` sorts by rank (LOW < NORMAL < HIGH < CRITICAL) and ``status`` by the
        lifecycle, each group newest first: the page is cut from one filtered, indexed
        read per group, so no column needs an index of its own. ``filters``: what ``list``
        also takes (``q``, ``dataset_id``, ``created_after``, ``created_before``…).
        """
        if sort not in SORTS:
            raise InvalidRequest(f"unknown sort {sort}; allowed: {', '.join(SORTS)}", {"field": "sort"})
        column, ranks = SORTS[sort]
        if not ranks:
            return self.list(status, priority, limit, offset, newest_first=descending, **filters)
        chosen = {"status": status, "priority": priority}
        groups = [v for v in (reversed(ranks) if descending else ranks) if not chosen[column] or v in chosen[column]]
        jobs: list[dict[str, Any]] = []
        total = 0
        for value in groups:
            local = {**chosen, column: [value]}
            want = limit - len(jobs)
            page = self.list(local["status"], local["priority"], max(1, want), max(0, offset + len(jobs) - total),
                             **filters)
            if want > 0:
                jobs.extend(page["jobs"][:want])
            total += page["total"]
        return {"total": total, "limit": limit, "offset": offset, "jobs": jobs}

    def running_view(self) -> list[dict[str, Any]]:
        """Running jobs with live progress, ETA, tasks and reservations, longest running first."""
        counts = self.sampler.latest.get("jobs") or {}
        now = self.clock()
        rows = []
        for job_id, (run, attempt, _task) in list(self.running.items()):
            stats = counts.get(attempt.annotation) or {}
            total, done = int(stats.get("total") or 0), int(stats.get("done") or 0)
            share = min(99.0, 100.0 * done / total) if total else 0.0
            elapsed = max(0.0, now - attempt.started_at)
            rows.append({
                "job_id": job_id, "operation": attempt.operation, "priority": attempt.priority,
                "dataset_id": (attempt.dataset or {}).get("dataset_id"), "progress": share,
                "expected_end_at": run.expected_end_at, "elapsed_s": elapsed, "attempt": attempt.number,
                "tasks_done": done, "tasks_total": total, "held_bytes": int(stats.get("held_bytes") or 0),
                "peak_held_bytes": int(stats.get("peak_held_bytes") or 0), "cpu_s": float(stats.get("cpu_s") or 0.0),
                "cores": run.cores, "memory_gb": run.memory_gb,
            })
        rows.sort(key=lambda r: -r["elapsed_s"])
        return rows

    def queue_view(self) -> list[dict[str, Any]]:
        """Waiting jobs in queue order, each with its position and the reason it waits."""
        rows = []
        for job_id, queued in list(self.pending.items()):
            wait = self.waiting.get(job_id)
            rows.append({"job_id": job_id, "priority": queued.priority,
                         "position": wait.position if wait else None,
                         "reason": wait.reason if wait else "waiting for the next dispatch pass"})
        rows.sort(key=lambda r: r["position"] if r["position"] is not None else 10**9)
        return rows

    def phase(self, job_id: str) -> str:
        """"running", "pending" or "ended", from memory (no store read)."""
        if job_id in self.running:
            return "running"
        return "pending" if job_id in self.pending else "ended"

    def live_ids(self) -> set[str]:
        """Ids of the jobs queued or running now."""
        return set(self.pending) | set(self.running)

    def status_counts(self) -> dict[str, int]:
        """Jobs per status (a blocking read: call it in an executor)."""
        return self.store.jobs.count()

    def timing_histograms(self) -> dict[str, dict[str, list[float]]]:
        """Queue wait and run time of the jobs that completed in the histogram window: bucket
        upper bounds and the count in each bucket (not cumulative; the last is over the top bound)."""
        from . import job_timings

        snap = job_timings.JobTimings.of(self.store).snapshot(self.clock())
        out = {}
        for key, bounds in (("wait", job_timings.WAIT_BUCKETS), ("run", job_timings.DURATION_BUCKETS)):
            count, _, cumulative = snap[key]
            steps = [*cumulative, count]
            out[key] = {"upper_s": [*bounds, float("inf")],
                        "count": [steps[0], *(b - a for a, b in zip(steps, steps[1:]))]}
        return out

    def ended_times(self, statuses: list[str], limit: int = 1000) -> dict[str, list[str]]:
        """When the newest ``limit`` jobs of each status ended (blocking: call it in an executor)."""
        out = {}
        for status in statuses:
            _, rows = self.store.jobs.page([status], None, limit, 0, columns=["completed_at"])
            out[status] = [r["completed_at"] for r in rows if r.get("completed_at")]
        return out


class JobViews(LiveViews):
    """Reads only: the API's and the pages' shapes of jobs and of the queue."""

    def get(self, job_id: str) -> dict[str, Any]:
        job = self.store.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job '{job_id}'", {"job_id": job_id}, code="job_not_found")
        return job

    def status(self, job_id: str) -> dict[str, Any]:
        """The contract's status: the record's (``Job.to_dict``), with its place in the queue and its attempts."""
        job = Job.from_row(self.get(job_id))
        view = job.to_dict()
        wait = self.waiting.get(job_id)
        if job.status is JobStatus.PENDING:
            view.update(queue_position=wait.position if wait else None,
                        pending_reason=wait.reason if wait else "waiting for the next dispatch pass")
        if wait and wait.estimated_start_at:
            view["estimated_start_at"] = iso(wait.estimated_start_at)
        view["attempts"] = [{k: a[k] for k in ("number", "started_at", "ended_at", "outcome", "cause")}
                            for a in self.store.attempts(job_id)]
        return view

    def logs(self, job_id: str, since: int = 0, limit: int = 500) -> dict[str, Any]:
        """The job's log lines after ``since`` (a line id), oldest first; blocking (read pool)."""
        self.get(job_id)
        lines = self.store.job_log(job_id, since, limit)
        return {"job_id": job_id, "lines": lines, "next_since": lines[-1]["id"] if lines else since,
                "more": len(lines) == limit}

    def summary(self, job: dict[str, Any]) -> dict[str, Any]:
        """The contract's list entry of a stored row (``Job.summary``)."""
        return Job.from_row(job).summary()

    def list(self, status: list[str], priority: list[str], limit: int, offset: int, dataset_id: str | None = None,
             operation: str | None = None, newest_first: bool = True, q: str | None = None,
             created_after: str | None = None, created_before: str | None = None) -> dict[str, Any]:
        """A page of the job list, optionally searched (``q``) and bounded by creation time;
        blocking reads (handlers call it on the store's read pool)."""
        return json.loads(self.list_json(status, priority, limit, offset, dataset_id, operation, newest_first, q,
                                         created_after, created_before))

    def list_json(self, status: list[str], priority: list[str], limit: int, offset: int,
                  dataset_id: str | None = None, operation: str | None = None, newest_first: bool = True,
                  q: str | None = None, created_after: str | None = None, created_before: str | None = None) -> str:
        """``list``'s page as the API's JSON text: each entry comes encoded from SQLite, and only a
        pending job that waits in the queue is decoded, given its place and reason, and encoded again."""
        from .models import PRIORITIES

        statuses = ALL
        for values, allowed, name in ((status, statuses, "status"), (priority, PRIORITIES, "priority")):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise InvalidRequest(f"unknown {name} {', '.join(bad)}; allowed: {', '.join(allowed)}", {"field": name})
        if q is not None and len(q) > MAX_SEARCH_CHARS:
            raise InvalidRequest(f"'q' is {len(q)} characters long; at most {MAX_SEARCH_CHARS} are accepted",
                                 {"field": "q", "limit": MAX_SEARCH_CHARS})
        total, rows = self.store.jobs.summary_page(
            status or None, priority or None, limit, offset, newest_first, dataset_id=dataset_id, operation=operation,
            q=q or None, created_after=_iso_arg("created_after", created_after),
            created_before=_iso_arg("created_before", created_before))
        waiting = self.waiting
        entries = [entry if job_status != JobStatus.PENDING or job_id not in waiting else self._waiting_entry(entry, job_id)
                   for job_id, job_status, entry in rows]
        head = f'"total": {int(total)}, "limit": {int(limit)}, "offset": {int(offset)}'
        return f'{{{head}, "jobs": [{", ".join(entries)}]}}'

    def _waiting_entry(self, entry: str, job_id: str) -> str:
        """A pending job's list entry with its queue position and the reason it waits."""
        wait = self.waiting.get(job_id)
        item = json.loads(entry)
        if wait is not None:
            item.update(queue_position=wait.position, pending_reason=wait.reason)
        return json.dumps(json_safe(item))

    def queue_status(self) -> dict[str, Any]:
        """The contract's queue shape, with the reservations of running jobs."""
        from .models import PRIORITIES

        by_status = self.store.jobs.count("status")
        pending_by_priority = self.store.jobs.count("priority", [JobStatus.PENDING.value])
        running = [r for r, _, _ in self.running.values()]
        cap = self.capacity()
        snap = self.sampler.latest
        used_cores = sum(r.cores for r in running)
        used_mem = sum(r.memory_gb for r in running)
        total_mem = snap.get("total_memory_bytes", 0) / 1e9 if cap.running else 0.0
        actual_mem = snap.get("used_memory_bytes", 0) / 1e9 if cap.running else 0.0
        return {
            "scheduler_running": cap.running,
            "queue_status": {
                "total_queued": by_status.get(JobStatus.PENDING, 0), "total_running": by_status.get(JobStatus.RUNNING, 0),
                "total_completed": by_status.get(JobStatus.COMPLETED, 0),
                "total_failed": by_status.get(JobStatus.FAILED, 0),
                "total_cancelled": by_status.get(JobStatus.CANCELLED, 0),
                "priority_breakdown": {p: pending_by_priority[p] for p in reversed(PRIORITIES) if pending_by_priority.get(p)},
                "running_by_priority": _count(r.priority for r in running),
                "max_concurrent_jobs": self.settings.max_concurrent_jobs,
            },
            "resource_usage": {"cluster_resources": {
                "total_memory_gb": round(total_mem, 2), "used_memory_gb": round(actual_mem, 2),
                "available_memory_gb": round(max(0.0, total_mem - actual_mem), 2),
                "memory_usage_percent": snap.get("memory_usage_percent", 0.0) if cap.running else 0.0,
                "total_cores": cap.total_cores, "used_cores": used_cores,
                "available_cores": max(0, cap.total_cores - used_cores),
                "reserved_cores": used_cores, "reserved_memory_gb": round(used_mem, 2),
                "unreserved_memory_gb": round(max(0.0, total_mem - used_mem), 2),
            }},
        }

    async def result(self, job_id: str, offset: int, limit: int) -> dict[str, Any]:
        """A page of a job's result: rows of its result dataset, or of the inline table."""
        job = self.get(job_id)
        if job["status"] != JobStatus.COMPLETED:
            raise Conflict(f"job {job_id} is {job['status']}; results exist once it is completed",
                           {"status": job["status"]}, code="job_not_completed")
        base = {"job_id": job_id, "result_kind": job["result_kind"], "offset": offset, "limit": limit,
                "result_dataset_id": job["result_dataset_id"]}
        if job["result_dataset_id"]:
            path = str(results_dir(self.settings.data_dir, job_id))
            total, rows = await asyncio.get_running_loop().run_in_executor(self.executor, read_rows, path, offset, limit)
            return {**base, "total": total, "rows": rows}
        result = job["result"]
        rows = result.get("rows") if isinstance(result, dict) else None
        if isinstance(rows, list):
            return {**base, "total": len(rows), "rows": rows[offset: offset + limit],
                    "result": {k: v for k, v in result.items() if k != "rows"}}
        return {**base, "total": None, "result": result}

    def download(self, job_id: str, fmt: str) -> ResultStream:
        """The completed job's result as a stream of ``fmt`` bytes (blocking: the read pool)."""
        job = self.get(job_id)
        if job["status"] != JobStatus.COMPLETED:
            raise Conflict(f"job {job_id} is {job['status']}; results exist once it is completed",
                           {"status": job["status"]}, code="job_not_completed")
        if job["result_dataset_id"]:
            ds = self.store.get_dataset(job["result_dataset_id"])
            folder = Path(ds["source"]) if ds else results_dir(self.settings.data_dir, job_id)
            files = result_files(folder)
            if files:
                return ResultStream(fmt, files=files)
        return ResultStream(fmt, table=table_of(job["result"]))

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job's status once it ends, or after ``timeout`` seconds."""
        if self.get(job_id)["status"] not in TERMINAL:
            event = self.done_events.setdefault(job_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.status(job_id)

    def uses_dataset(self, dataset_id: str) -> bool:
        total, _ = self.store.jobs.page(ACTIVE, None, 1, 0, dataset_id=dataset_id, columns=["job_id"])
        return total > 0


def _iso_arg(name: str, value: str | None) -> str | None:
    """An ISO-8601 time as the store writes it (UTC, milliseconds, Z); 400 naming ``name`` if not ISO."""
    if not value:
        return None
    try:
        return iso(parse_iso(value).timestamp())
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO-8601 time such as 2026-01-31T12:00:00Z, got "
                             f"{value[:40]!r}", {"field": name}) from None


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
