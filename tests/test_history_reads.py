"""Reads over a long history, in-process on a temporary store: the job list's entries as SQLite
encodes them, next to the Python view of the same jobs. (The timings are bench/bench_history.py's.)"""
from __future__ import annotations

import json
import math

import pytest

from app.job_views import JobViews
from app.queue import WaitInfo
from app.store import Store


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
