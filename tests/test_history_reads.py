"""Reads over a long history, in-process on a temporary store: the job list's entries and the metric
history's as SQLite encodes them, next to the Python view of the same rows. (The timings are
bench/bench_history.py's.)"""
from __future__ import annotations

import json
import math

import pytest

from app import recommendations
from app.api.metrics import history_entry
from app.job_views import JobViews
from app.jsonsafe import json_safe
from app.metrics import fmt_gb
from app.queue import WaitInfo
from app.store import Store
from app.times import iso


class Views(JobViews):
    """The engine's read views over a store and a queue's wait reasons, without the rest of the engine."""

    def __init__(self, store: Store, waiting: dict[str, WaitInfo]):
        self.store, self.waiting = store, waiting


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "processing.db")
    yield s
    s.close()


# values whose JSON text differs between a careless encoder and Python's: floats that need all 17
# digits, huge and tiny ones, zero, infinities (null), None, and text that must be escaped
JOBS = [
    {"status": "running", "progress": 100 / 3, "eta_seconds": 0.1 + 0.2, "attempt_count": 2},
    {"status": "running", "progress": 1e-7, "eta_seconds": math.inf, "started_at": None},
    {"status": "pending", "progress": None, "eta_seconds": 12.5, "attempt_count": None},
    {"status": "pending", "progress": 0.0},  # pending but not in the queue's wait reasons
    {"status": "completed", "progress": 100.0, "eta_seconds": 3.0},
    {"status": "failed", "progress": 99.99999999999999, "operation": 'x"</script><b>\u2028é\x01'},
    {"status": "cancelled", "progress": -0.0, "dataset_id": None},
    {"status": "completed", "progress": 1.5e300, "eta_seconds": -math.inf},
    {"status": "completed", "progress": math.inf},
]


def seed(store: Store) -> list[dict]:
    jobs = [{"job_id": f"job{i}", "operation": "aggregate", "dataset_id": f"ds{i % 3}", "priority": "HIGH",
             "created_at": f"2026-01-01T00:00:{i:02d}.000Z", "started_at": f"2026-01-01T00:01:{i:02d}.000Z",
             "attempt_count": 1, "parameters": {"column": "x"}, **job} for i, job in enumerate(JOBS)]
    return store.insert_jobs(jobs)


def expected(views: Views, row: dict) -> dict:
    """The list entry from the Python view of the full stored row."""
    item = views.summary(row)
    wait = views.waiting.get(row["job_id"]) if row["status"] == "pending" else None
    eta = row["eta_seconds"] if row["status"] == "running" else None
    item.update(eta_seconds=eta if eta is None or math.isfinite(eta) else None,
                queue_position=wait.position if wait else None, pending_reason=wait.reason if wait else None)
    if isinstance(item["progress"], float) and not math.isfinite(item["progress"]):
        item["progress"] = None
    return item


def test_list_entries_encoded_by_sqlite_equal_the_python_view_of_each_job(store):
    seed(store)
    waiting = {"job2": WaitInfo(3, 'waits for "cores" <b>', "HIGH", None)}
    views = Views(store, waiting)
    page = views.list([], [], 50, 0)
    assert (page["total"], page["limit"], page["offset"]) == (len(JOBS), 50, 0)
    by_id = {job["job_id"]: job for job in page["jobs"]}
    assert [j["job_id"] for j in page["jobs"]] == [f"job{i}" for i in reversed(range(len(JOBS)))]
    for job_id, entry in by_id.items():
        want = expected(views, store.get_job(job_id))
        assert list(entry) == list(want), job_id  # the same fields in the same order
        for key, value in want.items():
            assert entry[key] == value and type(entry[key]) is type(value), (job_id, key, entry[key], value)
    assert by_id["job0"]["progress"] == 100 / 3 and by_id["job0"]["eta_seconds"] == 0.1 + 0.2
    assert by_id["job2"]["queue_position"] == 3 and by_id["job2"]["pending_reason"] == 'waits for "cores" <b>'
    assert by_id["job3"]["pending_reason"] is None and by_id["job2"]["progress"] == 0.0
    assert by_id["job1"]["eta_seconds"] is None  # infinite: null, as the API's JSON writes it


def test_list_json_is_valid_json_for_every_filter_search_and_order(store):
    seed(store)
    views = Views(store, {})
    for kwargs in ({"status": ["running"]}, {"priority": ["HIGH"], "offset": 3}, {"dataset_id": "ds1"},
                   {"q": "aggregate", "newest_first": False}, {"created_after": "2026-01-01T00:00:04Z"}):
        args = {"status": [], "priority": [], "limit": 5, "offset": 0, **kwargs}
        text = views.list_json(**args)
        page = json.loads(text)  # strict: NaN or Infinity would fail here
        total, rows = store.list_jobs(args["status"] or None, args["priority"] or None, 5, args["offset"],
                                      args.get("newest_first", True), dataset_id=args.get("dataset_id"),
                                      q=args.get("q"), created_after=args.get("created_after") and
                                      "2026-01-01T00:00:04.000Z")
        assert page["total"] == total and [j["job_id"] for j in page["jobs"]] == [r["job_id"] for r in rows], kwargs
        assert "Infinity" not in text and "NaN" not in text


def history_row(r: dict) -> dict:
    """The contract's history entry, from a stored metric row as the store decodes it."""
    total, used = r.get("total_memory_bytes") or 0, r.get("used_memory_bytes") or 0
    return json_safe({
        "timestamp": r["timestamp"], "ts": r["ts"], "n_workers": r.get("n_workers") or 0,
        "total_memory": fmt_gb(total), "used_memory": fmt_gb(used), "total_cores": r.get("total_cores") or 0,
        "active_tasks": r.get("active_tasks") or 0, "total_memory_bytes": total, "used_memory_bytes": used,
        "memory_usage_percent": round(100.0 * used / total, 2) if total else 0.0,
        "cpu_percent": r.get("cpu_percent") or 0.0, "tasks_per_second": r.get("tasks_per_second") or 0.0,
        "status": r.get("status"), "queue": r.get("queue"),
    })


METRICS = [  # ties of the GB text and the percentage, 17-digit floats, NULLs, queues SQLite reads or not
    {"total_memory_bytes": 2_125_000_000, "used_memory_bytes": 100_100_000, "cpu_percent": 100 / 3,
     "tasks_per_second": 0.1 + 0.2, "queue": {"pending": 3, "by_priority": {"HIGH": 1}, "rate": 1.5e-7}},
    {"total_memory_bytes": None, "used_memory_bytes": None, "cpu_percent": None, "n_workers": None,
     "status": None, "queue": None},
    {"total_memory_bytes": 3_000_000_000, "used_memory_bytes": 1_000_000_000, "cpu_percent": math.inf,
     "tasks_per_second": 0.0, "queue": '{"pending": NaN, "text": "<b>\u2028é"}'},  # Python reads NaN; SQLite not
    {"total_memory_bytes": 2_000_000_000, "used_memory_bytes": 100_100_000, "cpu_percent": -0.0,
     "queue": "not json <b>"},
]


def test_history_entries_encoded_by_sqlite_equal_the_python_view_of_each_row(store):
    for i, extra in enumerate(METRICS * 5):
        ts = 1_700_000_000 + i * 7.3 + 1 / 3
        store.insert_metric({"ts": ts, "timestamp": iso(ts), "status": "running", "n_workers": 2, "total_cores": 4,
                             "active_tasks": i, "network_bytes": 0, **extra})
    cases = [(None, None, 1000, None), (None, None, 7, None), (1_700_000_020, 1_700_000_090, 1000, None),
             (None, None, 1000, 30.0), (None, None, 3, 30.0), (1_700_000_020, None, 1000, 15.0)]
    seen = set()
    for since, until, limit, step in cases:
        total, rows = store.metric_history(since, until, limit, step)
        total_e, entries = store.metric_history_entries(since, until, limit, step)
        assert total == total_e and len(rows) == len(entries) > 0, (since, until, limit, step)
        for row, entry in zip(rows, entries):
            got, want = json.loads(history_entry(*entry)), history_row(row)
            seen.add((got["total_memory"], got["memory_usage_percent"]))
            assert list(got) == list(want)
            for key, value in want.items():
                assert got[key] == value and type(got[key]) is type(value), (key, got[key], value)
    assert {("2.12GB", 4.71), ("2.00GB", 5.0)} <= seen  # the ties rounded as Python rounds them


SUSPECTS = [  # (status, error, resources, max_memory_gb): advised on or not, as the rule decides
    ("failed", {"type": "MemoryError", "message": "x"}, {}, 1.0),
    ("failed", {"type": "KilledWorker", "message": "worker died"}, {}, None),
    ("failed", {"type": "RuntimeError", "message": "OOM kill"}, {}, 2.0),
    ("failed", {"type": "RuntimeError", "message": "\u212ailled  worker"}, {}, 2.0),  # Kelvin sign: IGNORECASE
    ("failed", None, None, 2.0),  # error: text that is not JSON (written below)
    ("failed", {"type": "ValueError", "message": "bad column"}, {}, 1.0),
    ("failed", {"type": "ValueError", "message": "room for doubt"}, {}, 1.0),  # 'oom' but not a word
    ("completed", None, {"peak_memory_bytes": 3e9, "tasks": 4}, 2.0),
    ("completed", None, {"peak_memory_bytes": 1e9, "tasks": 4}, 2.0),
    ("completed", None, {"peak_memory_bytes": 5e9}, 0),  # 0 declared: the default (4 GB) counts
    ("completed", None, {"peak_memory_bytes": 3e9}, None),
    ("completed", None, {"spilled_bytes_disk": 2e9}, 1.0),
    ("completed", None, {"SPILL": 2e9}, 1.0),  # not 'spill' as the rule reads keys
    ("completed", None, None, 1.0),  # resources: text that is not JSON (written below)
    ("completed", {"type": "MemoryError"}, {}, 1.0),  # completed: its error is not read
]


def test_memory_suspects_give_the_advice_of_every_recent_finished_job(store):
    jobs = [{"job_id": f"s{i}", "operation": "aggregate", "dataset_id": "ds", "priority": "LOW", "status": status,
             "error": error, "resources": resources, "max_memory_gb": gb, "created_at": "2026-01-01T00:00:00.000Z",
             "completed_at": f"2026-01-01T00:{i:02d}:00.000Z"}
            for i, (status, error, resources, gb) in enumerate(SUSPECTS)]
    store.insert_jobs(jobs + [{**jobs[0], "job_id": "old", "completed_at": "2025-01-01T00:00:00.000Z"}])
    with store.db.conn:  # text an older release (or a hand) may have stored in a JSON column
        store.db.execute("UPDATE jobs SET error = 'out of memory' WHERE job_id = 's4'")
        store.db.execute("UPDATE jobs SET resources = '{not json spill' WHERE job_id = 's13'")
    since = "2026-01-01T00:00:00.000Z"
    _, everything = store.list_jobs(["failed", "completed"], None, 100, 0)
    everything = [j for j in everything if j["completed_at"] >= since]
    suspects = store.memory_suspects(100, since, 4.0)
    want = recommendations.job_memory_rule(everything, default_memory_gb=4.0)
    assert recommendations.job_memory_rule(suspects, default_memory_gb=4.0) == want
    assert {r["suggested"]["job_id"] for r in want} == {"s0", "s1", "s2", "s3", "s4", "s7", "s9", "s11"}
    assert {j["job_id"] for j in suspects} < {j["job_id"] for j in everything}
    assert {"s5", "s8", "s10", "s14", "old"}.isdisjoint(j["job_id"] for j in suspects)
    assert len(store.memory_suspects(3, since, 4.0)) <= 3  # among the latest submissions only
