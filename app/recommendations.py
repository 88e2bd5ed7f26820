"""Advice for the operator, from evidence the service already holds.

The rules are pure functions over lists of dicts (metric rows, job rows), so each
is tested without a server; ``from_service`` is the one function that reads.

* ``scale_up`` (waiting jobs): a pending job was submitted more than
  ``PENDING_WAIT_S`` (5 min) ago. Suggests enough workers for the cores and
  memory the late jobs declared, capped by ``MAX_WORKERS``.
* ``scale_up`` (memory): used memory stayed above ``MEMORY_HIGH_PERCENT`` (85 %)
  of the cluster's for the last ``MEMORY_WINDOW_S`` (10 min) of history. Suggests
  the workers that bring it to ``MEMORY_TARGET_PERCENT`` (70 %).
* ``scale_down``: more than one worker and zero active tasks for the last
  ``IDLE_WINDOW_S`` (15 min), and no pending or running job. Not for adaptive
  clusters, which shrink themselves. Suggests one worker.
* ``raise_job_memory``: a job finished in the last ``FINISHED_WINDOW_S`` (24 h)
  failed with an error that mentions memory (``MemoryLimit``, ``MemoryError``,
  ``KilledWorker``, "out of memory"…), or its ``resources`` show spilled bytes or
  a peak above its declared ``max_memory_gb``. Suggests a new ``max_memory_gb``.

The window rules need history covering the whole window with no gap longer than
``MAX_GAP_S``: a server that has just started recommends nothing from them.
"""
from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from .times import epoch, iso

if TYPE_CHECKING:
    from .service import ProcessingService

PENDING_WAIT_S = 300.0
MEMORY_HIGH_PERCENT = 85.0
MEMORY_TARGET_PERCENT = 70.0
MEMORY_WINDOW_S = 600.0
IDLE_WINDOW_S = 900.0
MAX_GAP_S = 120.0
FINISHED_WINDOW_S = 24 * 3600.0
MEMORY_RAISE_FACTOR = 2.0  # after a memory failure, double the declared memory
SPILL_HEADROOM = 1.25  # after spilling or a high peak, declare the need plus a quarter
MEMORY_ERROR = re.compile(r"memory|killed\s*worker|\boom\b", re.IGNORECASE)
EVIDENCE_JOBS = 10  # job ids listed in evidence
EVIDENCE_SAMPLES = 10  # memory percentages listed in evidence
MAX_JOB_ADVICE = 20  # raise_job_memory recommendations, newest jobs first

Row = dict[str, Any]


def memory_percent(sample: Row) -> float:
    total = sample.get("total_memory_bytes") or 0
    return round(100.0 * (sample.get("used_memory_bytes") or 0) / total, 2) if total else 0.0


def trailing_run(samples: list[Row], ok: Callable[[Row], bool], now: float, max_gap_s: float = MAX_GAP_S) -> list[Row]:
    """The newest unbroken run of samples (oldest first) for which ``ok`` holds.

    A sample failing ``ok``, or a gap longer than ``max_gap_s`` (the server was
    down, or history is stale), ends the run.
    """
    run: list[Row] = []
    later = now
    for sample in sorted(samples, key=lambda s: s["ts"], reverse=True):
        if later - sample["ts"] > max_gap_s or not ok(sample):
            break
        run.append(sample)
        later = sample["ts"]
    run.reverse()
    return run


def _running(cluster: Row) -> bool:
    return cluster.get("status") == "running" and (cluster.get("n_workers") or 0) > 0


def _per_worker(cluster: Row) -> tuple[float, float]:
    """Cores and GB of one worker, from the cluster totals."""
    n = cluster["n_workers"]
    return (cluster.get("total_cores") or n) / n, (cluster.get("total_memory_bytes") or 0) / n / 1e9


def _target(n: int, wanted: int, max_workers: int) -> tuple[int, str]:
    """Workers to suggest (never fewer than now, at most MAX_WORKERS) and a note when capped."""
    target = max(n, min(max_workers, wanted))
    return target, (" (MAX_WORKERS reached: raise it, or attach a bigger cluster)" if target <= n else "")


def pending_wait_rule(pending: list[Row], cluster: Row, now: float, *, max_workers: int,
                      default_cores: float, default_memory_gb: float,
                      wait_s: float = PENDING_WAIT_S) -> list[Row]:
    """``scale_up`` when pending jobs have waited longer than ``wait_s``."""
    if not _running(cluster):
        return []
    waited = [(now - (epoch(j.get("created_at")) or now), j) for j in pending]
    late = sorted((pair for pair in waited if pair[0] >= wait_s), key=lambda pair: -pair[0])
    if not late:
        return []
    n = cluster["n_workers"]
    cores, gb = _per_worker(cluster)
    need_cores = sum(float(j.get("max_cores") or default_cores) for _, j in late)
    need_gb = sum(float(j.get("max_memory_gb") or default_memory_gb) for _, j in late)
    extra = max(1, math.ceil(need_cores / cores) if cores else 1, math.ceil(need_gb / gb) if gb else 1)
    target, note = _target(n, n + extra, max_workers)
    return [{
        "action": "scale_up",
        "reason": (f"{len(late)} pending job(s) have waited more than {wait_s / 60:g} min for resources "
                   f"(longest {late[0][0] / 60:.1f} min){note}"),
        "evidence": {
            "pending_jobs": len(late), "waited_s": round(late[0][0], 1), "threshold_s": wait_s,
            "job_ids": [j["job_id"] for _, j in late[:EVIDENCE_JOBS]],
            "declared_cores": need_cores, "declared_memory_gb": round(need_gb, 2), "n_workers": n,
        },
        "suggested": {"n_workers": target},
    }]


def memory_rule(samples: list[Row], cluster: Row, now: float, *, max_workers: int,
                high: float = MEMORY_HIGH_PERCENT, window_s: float = MEMORY_WINDOW_S,
                max_gap_s: float = MAX_GAP_S) -> list[Row]:
    """``scale_up`` when memory stayed above ``high`` % for the last ``window_s``."""
    if not _running(cluster):
        return []
    run = trailing_run(samples, lambda s: s.get("status") == "running" and memory_percent(s) > high, now, max_gap_s)
    if not run or now - run[0]["ts"] < window_s:
        return []
    values = [memory_percent(s) for s in run]
    n = cluster["n_workers"]
    target, note = _target(n, max(n + 1, math.ceil(n * max(values) / MEMORY_TARGET_PERCENT)), max_workers)
    every = max(1, math.ceil(len(values) / EVIDENCE_SAMPLES))
    return [{
        "action": "scale_up",
        "reason": (f"memory use stayed above {high:g}% for {(now - run[0]['ts']) / 60:.1f} min "
                   f"(max {max(values):.1f}%){note}"),
        "evidence": {
            "memory_percent": values[::every], "min_percent": min(values), "max_percent": max(values),
            "samples": len(values), "minutes": round((now - run[0]["ts"]) / 60, 1), "threshold_percent": high,
            "n_workers": n,
        },
        "suggested": {"n_workers": target},
    }]


def idle_rule(samples: list[Row], cluster: Row, now: float, *, active_jobs: int,
              window_s: float = IDLE_WINDOW_S, max_gap_s: float = MAX_GAP_S) -> list[Row]:
    """``scale_down`` when more than one worker sat idle for ``window_s`` with no job around."""
    if not _running(cluster) or cluster["n_workers"] <= 1 or cluster.get("adaptive") or active_jobs:
        return []
    run = trailing_run(
        samples, lambda s: s.get("status") == "running" and (s.get("n_workers") or 0) > 1 and not s.get("active_tasks"),
        now, max_gap_s,
    )
    if not run or now - run[0]["ts"] < window_s:
        return []
    idle_minutes = round((now - run[0]["ts"]) / 60, 1)
    return [{
        "action": "scale_down",
        "reason": (f"{cluster['n_workers']} workers have had no task for {idle_minutes:g} min and no job is "
                   "pending or running; scale to 1 (or set adaptive bounds)"),
        "evidence": {"idle_minutes": idle_minutes, "threshold_s": window_s, "samples": len(run),
                     "idle_since": iso(run[0]["ts"]), "n_workers": cluster["n_workers"], "active_jobs": active_jobs},
        "suggested": {"n_workers": 1},
    }]


def _spilled(resources: Any) -> int:
    """Spilled bytes a job's resources report (any numeric key naming a spill)."""
    if not isinstance(resources, dict):
        return 0
    return int(sum(v for k, v in resources.items() if "spill" in k and isinstance(v, (int, float))))


def _round_gb(value: float) -> float:
    """Up to the next half gigabyte."""
    return math.ceil(value * 2) / 2


def job_memory_rule(finished: list[Row], *, default_memory_gb: float) -> list[Row]:
    """``raise_job_memory`` for jobs that failed on memory, spilled, or peaked above their declaration."""
    out: list[Row] = []
    seen: set[str] = set()
    for job in finished:
        if len(out) >= MAX_JOB_ADVICE:
            break
        if job["job_id"] in seen:
            continue
        declared = float(job.get("max_memory_gb") or default_memory_gb)
        evidence, reason, new_gb = _memory_evidence(job, declared)
        if evidence is None:
            continue
        seen.add(job["job_id"])
        out.append({
            "action": "raise_job_memory",
            "reason": f"job {job['job_id']} {reason}; resubmit it with max_memory_gb={new_gb:g}",
            "evidence": {"job_id": job["job_id"], "status": job.get("status"), "operation": job.get("operation"),
                         "max_memory_gb": declared, **evidence},
            "suggested": {"job_id": job["job_id"], "max_memory_gb": new_gb},
        })
    return out


def _memory_evidence(job: Row, declared: float) -> tuple[Row | None, str, float]:
    error = job.get("error")
    if job.get("status") == "failed" and error:
        kind = error.get("type", "") if isinstance(error, dict) else ""
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        if MEMORY_ERROR.search(f"{kind} {message}"):
            return ({"error_type": kind or None, "error_message": message[:300]}, "failed for lack of memory",
                    _round_gb(declared * MEMORY_RAISE_FACTOR))
    resources = job.get("resources") if isinstance(job.get("resources"), dict) else {}
    spilled = _spilled(resources)
    if spilled:
        return ({"spilled_bytes": spilled}, f"spilled {spilled / 1e9:.2f} GB to disk",
                _round_gb((declared + spilled / 1e9) * SPILL_HEADROOM))
    peak = resources.get("peak_memory_bytes") or 0
    if isinstance(peak, (int, float)) and peak > declared * 1e9:
        return ({"peak_memory_bytes": int(peak)}, f"peaked at {peak / 1e9:.2f} GB, above its declared {declared:g} GB",
                _round_gb(peak / 1e9 * SPILL_HEADROOM))
    return None, "", declared


def recommend(*, now: float, cluster: Row, samples: list[Row], pending: list[Row], finished: list[Row],
              active_jobs: int, max_workers: int, default_cores: float, default_memory_gb: float,
              max_gap_s: float = MAX_GAP_S) -> list[Row]:
    """Every rule over the evidence; scale advice first, then per-job advice."""
    return [
        *pending_wait_rule(pending, cluster, now, max_workers=max_workers, default_cores=default_cores,
                           default_memory_gb=default_memory_gb),
        *memory_rule(samples, cluster, now, max_workers=max_workers, max_gap_s=max_gap_s),
        *idle_rule(samples, cluster, now, active_jobs=active_jobs, max_gap_s=max_gap_s),
        *job_memory_rule(finished, default_memory_gb=default_memory_gb),
    ]


# -- reading the evidence (the only part that touches the service) ----------------------

RECENT_JOBS = 1000  # finished jobs are looked for among this many latest submissions


def from_service(service: "ProcessingService", now: float | None = None) -> Row:
    """Gather the evidence and apply the rules; blocking reads, call it on the read pool (``store.reading``)."""
    now = time.time() if now is None else now
    settings, store = service.settings, service.store
    status = service.cluster_status()
    history_s = 2 * max(IDLE_WINDOW_S, MEMORY_WINDOW_S)
    samples = store.recent_samples(now - history_s)
    _, pending = store.list_jobs(status=["pending"], limit=500, newest_first=False,
                                 columns=["job_id", "created_at", "max_cores", "max_memory_gb"])
    counts = store.count_jobs(by="status", where_status=["pending", "running"])
    # only jobs the memory rule may advise on are read and decoded (SQL picks a superset)
    finished = store.memory_suspects(RECENT_JOBS, iso(now - FINISHED_WINDOW_S), settings.default_max_memory_gb)
    recs = recommend(
        now=now, cluster=status, samples=samples, pending=pending, finished=finished,
        active_jobs=counts.get("pending", 0) + counts.get("running", 0), max_workers=settings.max_workers,
        default_cores=settings.default_max_cores, default_memory_gb=settings.default_max_memory_gb,
        max_gap_s=max(MAX_GAP_S, 3 * settings.metrics_interval),
    )
    return {"recommendations": recs, "generated_at": iso(now), "thresholds": thresholds()}


def thresholds() -> Row:
    """The rule constants, as the response reports them."""
    return {"pending_wait_s": PENDING_WAIT_S, "memory_high_percent": MEMORY_HIGH_PERCENT,
            "memory_window_s": MEMORY_WINDOW_S, "idle_window_s": IDLE_WINDOW_S,
            "finished_window_s": FINISHED_WINDOW_S}
