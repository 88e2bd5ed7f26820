"""The recommendation rules, as pure functions over lists of dicts: each fires on its
evidence and stays quiet without it."""
from __future__ import annotations

from app import recommendations as rec
from app.store import iso

NOW = 1_700_000_000.0
GB = 1_000_000_000
CLUSTER = {"status": "running", "n_workers": 2, "total_cores": 4, "total_memory_bytes": 4 * GB, "adaptive": None}
LIMITS = {"max_workers": 8, "default_cores": 2, "default_memory_gb": 2.0}


def samples(minutes: float, every_s: float = 2.0, **values) -> list[dict]:
    """Metric rows ending now, one every ``every_s`` over ``minutes``."""
    base = {"status": "running", "n_workers": 2, "total_memory_bytes": 4 * GB, "used_memory_bytes": GB,
            "active_tasks": 0}
    n = int(minutes * 60 / every_s)
    return [{**base, **values, "ts": NOW - (n - i) * every_s} for i in range(n + 1)]


def pending(job_id: str, waited_s: float, **kw) -> dict:
    return {"job_id": job_id, "created_at": iso(NOW - waited_s), "max_cores": 2, "max_memory_gb": 1.0, **kw}


# -- scale up: jobs waiting ---------------------------------------------------------

def test_pending_wait_fires_for_jobs_older_than_five_minutes():
    out = rec.pending_wait_rule([pending("a", 400), pending("b", 60), pending("c", 900)], CLUSTER, NOW, **LIMITS)
    assert len(out) == 1 and out[0]["action"] == "scale_up"
    ev = out[0]["evidence"]
    assert ev["pending_jobs"] == 2 and ev["job_ids"] == ["c", "a"] and ev["waited_s"] == 900
    # 4 declared cores at 2 cores per worker: two more workers
    assert out[0]["suggested"] == {"n_workers": 4}


def test_pending_wait_quiet_for_young_jobs_or_a_stopped_cluster():
    assert rec.pending_wait_rule([pending("a", 120)], CLUSTER, NOW, **LIMITS) == []
    assert rec.pending_wait_rule([], CLUSTER, NOW, **LIMITS) == []
    stopped = {**CLUSTER, "status": "stopped", "n_workers": 0}
    assert rec.pending_wait_rule([pending("a", 900)], stopped, NOW, **LIMITS) == []


def test_pending_wait_is_capped_by_max_workers():
    jobs = [pending(str(i), 600, max_cores=4) for i in range(10)]
    out = rec.pending_wait_rule(jobs, {**CLUSTER, "n_workers": 8, "total_cores": 16}, NOW, **LIMITS)
    assert out[0]["suggested"] == {"n_workers": 8} and "MAX_WORKERS" in out[0]["reason"]
    bigger = rec.pending_wait_rule(jobs, {**CLUSTER, "n_workers": 10, "total_cores": 20}, NOW, **LIMITS)
    assert bigger[0]["suggested"] == {"n_workers": 10}  # never suggests fewer workers than now


# -- scale up: memory ----------------------------------------------------------------

def test_memory_rule_fires_after_ten_minutes_above_85_percent():
    out = rec.memory_rule(samples(12, used_memory_bytes=int(3.6 * GB)), CLUSTER, NOW, max_workers=8)
    assert len(out) == 1 and out[0]["action"] == "scale_up"
    ev = out[0]["evidence"]
    assert ev["min_percent"] == ev["max_percent"] == 90.0 and ev["minutes"] >= 10
    assert 0 < len(ev["memory_percent"]) <= rec.EVIDENCE_SAMPLES
    assert out[0]["suggested"] == {"n_workers": 3}  # 2 workers at 90 % → 70 % needs 3


def test_memory_rule_quiet_when_short_low_or_interrupted():
    high = int(3.6 * GB)
    assert rec.memory_rule(samples(5, used_memory_bytes=high), CLUSTER, NOW, max_workers=8) == []
    assert rec.memory_rule(samples(20, used_memory_bytes=GB), CLUSTER, NOW, max_workers=8) == []
    dipped = samples(20, used_memory_bytes=high)
    dipped[-60]["used_memory_bytes"] = GB  # two minutes ago memory was fine
    assert rec.memory_rule(dipped, CLUSTER, NOW, max_workers=8) == []
    gap = [s for s in samples(20, used_memory_bytes=high) if not NOW - 400 < s["ts"] < NOW - 200]
    assert rec.memory_rule(gap, CLUSTER, NOW, max_workers=8) == []  # the server was down for a while
    stale = [s for s in samples(20, used_memory_bytes=high) if s["ts"] < NOW - 300]
    assert rec.memory_rule(stale, CLUSTER, NOW, max_workers=8) == []


# -- scale down ---------------------------------------------------------------------

def test_idle_rule_fires_after_fifteen_idle_minutes():
    out = rec.idle_rule(samples(16), CLUSTER, NOW, active_jobs=0)
    assert len(out) == 1 and out[0]["action"] == "scale_down"
    assert out[0]["evidence"]["idle_minutes"] >= 15 and out[0]["suggested"] == {"n_workers": 1}


def test_idle_rule_quiet_with_tasks_jobs_one_worker_or_adaptive():
    assert rec.idle_rule(samples(10), CLUSTER, NOW, active_jobs=0) == []
    busy = samples(20)
    busy[-30]["active_tasks"] = 3
    assert rec.idle_rule(busy, CLUSTER, NOW, active_jobs=0) == []
    assert rec.idle_rule(samples(20), CLUSTER, NOW, active_jobs=1) == []
    one = {**CLUSTER, "n_workers": 1}
    assert rec.idle_rule(samples(20, n_workers=1), one, NOW, active_jobs=0) == []
    adaptive = {**CLUSTER, "adaptive": {"minimum": 1, "maximum": 4}}
    assert rec.idle_rule(samples(20), adaptive, NOW, active_jobs=0) == []


# -- job memory ---------------------------------------------------------------------

def finished(job_id: str, status: str = "failed", error=None, resources=None, max_memory_gb=1.0) -> dict:
    return {"job_id": job_id, "status": status, "operation": "aggregate", "max_memory_gb": max_memory_gb,
            "error": error, "resources": resources or {}}


def test_job_memory_fires_on_memory_errors():
    jobs = [
        finished("a", error={"type": "MemoryLimit", "message": "the job held 3.10 GB"}),
        finished("b", error={"type": "KilledWorker", "message": "Attempted to run task on 3 workers"}),
        finished("c", error="Worker exceeded 95% memory budget"),
    ]
    out = rec.job_memory_rule(jobs, default_memory_gb=2.0)
    assert [r["suggested"] for r in out] == [{"job_id": j, "max_memory_gb": 2.0} for j in "abc"]
    assert all(r["action"] == "raise_job_memory" for r in out)
    assert out[1]["evidence"]["error_type"] == "KilledWorker"


def test_job_memory_fires_on_spill_or_peak_above_declaration():
    spilled = finished("s", status="completed", resources={"spilled_bytes": 2 * GB})
    peaked = finished("p", status="completed", resources={"peak_memory_bytes": int(1.7 * GB)})
    out = rec.job_memory_rule([spilled, peaked], default_memory_gb=2.0)
    assert out[0]["evidence"]["spilled_bytes"] == 2 * GB and out[0]["suggested"]["max_memory_gb"] == 4.0
    assert out[1]["evidence"]["peak_memory_bytes"] == int(1.7 * GB) and out[1]["suggested"]["max_memory_gb"] == 2.5


def test_job_memory_quiet_without_evidence():
    jobs = [
        finished("a", error={"type": "KeyError", "message": "column 'x' not found"}),
        finished("b", status="completed", resources={"peak_memory_bytes": GB // 2, "spilled_bytes": 0}),
        finished("c", status="completed", error=None),
    ]
    assert rec.job_memory_rule(jobs, default_memory_gb=2.0) == []


def test_recommend_combines_the_rules():
    out = rec.recommend(
        now=NOW, cluster=CLUSTER, samples=samples(20), pending=[], active_jobs=0,
        finished=[finished("a", error={"type": "MemoryLimit", "message": "out of memory"})], **LIMITS,
    )
    assert [r["action"] for r in out] == ["scale_down", "raise_job_memory"]
    assert rec.recommend(now=NOW, cluster=CLUSTER, samples=samples(5), pending=[], active_jobs=0,
                         finished=[], **LIMITS) == []
