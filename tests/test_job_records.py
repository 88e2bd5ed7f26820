"""The store keeps live and recent jobs in memory, written through: a job read from
memory is exactly the row SQLite holds, after any sequence of writes."""
from __future__ import annotations

from app import job_records
from app.store import Store
from tests.helpers import job_on_disk
from tests.test_store import job


def test_a_job_read_from_memory_is_the_row_sqlite_holds(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    try:
        store.insert_job(job("job_a", parameters={"column": "x", "bins": (1, 2)}, depends_on=["job_z"]))
        assert store.get_job("job_a") == job_on_disk(path, "job_a")
        store.update_job("job_a", status="running", progress=12.5, resources={"tasks": 3}, no_cache=True)
        store.update_job("job_a", eta_history={"25": {"at": "t", "eta_seconds": 1.0}}, tasks_total=None)
        assert store.get_job("job_a") == job_on_disk(path, "job_a")
        store.update_job("job_a", status="completed", result={"value": 1.5, "rows": [[1, "é"]]}, error=None)
        assert store.get_job("job_a") == job_on_disk(path, "job_a")
        assert store.jobs.records.get("job_a") is not None  # an ended job is still held...
        held = store.get_job("job_a")
        held["status"] = "failed"  # ...and what a caller does to its copy stays with the caller
        assert store.get_job("job_a")["status"] == "completed"
    finally:
        store.close()


def test_ended_jobs_are_held_up_to_a_bound_and_then_read_from_sqlite(tmp_path, monkeypatch):
    monkeypatch.setattr(job_records, "RECENT", 2)
    store = Store(tmp_path / "s.db")
    try:
        for name in ("job_a", "job_b", "job_c"):
            store.insert_job(job(name))
            store.update_job(name, status="cancelled")
        assert store.jobs.records.get("job_a") is None  # the oldest ended job left memory
        assert store.get_job("job_a")["status"] == "cancelled"  # and is read from SQLite
        assert store.jobs.records.get("job_c")["status"] == "cancelled"
    finally:
        store.close()


def test_a_job_written_by_an_earlier_process_is_loaded_once_read(tmp_path):
    path = tmp_path / "s.db"
    first = Store(path)
    first.insert_job(job("job_a"))
    first.close()
    store = Store(path)
    try:
        assert store.jobs.records.get("job_a") is None
        assert store.get_job("job_a")["status"] == "pending"
        store.update_job("job_a", status="running")
        assert store.jobs.records.get("job_a")["status"] == "running"
        assert store.get_job("job_a") == job_on_disk(path, "job_a")
    finally:
        store.close()
