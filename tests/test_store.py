"""The store's hot paths in plain SQL: batched job inserts, updates by column name,
and the cached dataset rows, on a real SQLite file."""
from __future__ import annotations

import sqlite3

import pytest

from app.ids import new_id
from app.store import Store, utcnow


def job(job_id: str, **extra) -> dict:
    return {"job_id": job_id, "operation": "aggregate", "dataset_id": "d", "parameters": {"column": "x"},
            "priority": "NORMAL", "max_memory_gb": 1.0, "max_cores": 1.0, "status": "pending",
            "progress": 0.0, "created_at": utcnow(), "attempt_count": 0, "eta_history": {}, **extra}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "processing.db")
    yield s
    s.close()


def test_a_batch_of_jobs_gets_consecutive_sequence_numbers_after_the_existing_ones(store):
    store.insert_job(job("job_a"))
    rows = store.insert_jobs([job("job_b"), job("job_c"), job("job_d")])
    assert [r["seq"] for r in rows] == [2, 3, 4]
    stored = store.get_job("job_c")
    assert stored["seq"] == 3 and stored["parameters"] == {"column": "x"} and stored["updated_at"] == stored["created_at"]


def test_a_batch_is_all_or_nothing(store, tmp_path):
    store.insert_job(job("job_a"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_jobs([job("job_b"), job("job_a")])  # the second repeats a key
    with sqlite3.connect(tmp_path / "processing.db") as db:
        assert [r[0] for r in db.execute("SELECT job_id FROM jobs")] == ["job_a"]


def test_unknown_columns_are_refused_before_anything_is_written(store):
    with pytest.raises(ValueError, match="unknown column"):
        store.insert_jobs([job("job_a", owner="me")])
    with pytest.raises(ValueError, match="unknown column"):
        store.update_job("job_a", **{"status = 'x'; --": 1})
    assert store.get_job("job_a") is None


def test_update_and_attempts_through_plain_sql(store):
    store.insert_job(job("job_a"))
    store.update_job("job_a", status="running", error={"type": "X"}, progress=0.5)
    attempt = store.add_attempt("job_a", 1, utcnow())
    store.end_attempt(attempt, "failed", "worker lost")
    row = store.get_job("job_a")
    assert row["status"] == "running" and row["error"] == {"type": "X"} and row["progress"] == 0.5
    (only,) = store.attempts("job_a")
    assert only["id"] == attempt and only["outcome"] == "failed" and only["cause"] == "worker lost"


def test_cached_dataset_rows_follow_every_write(store):
    store.insert_dataset({"dataset_id": "d", "name": "d", "source": "/x.csv", "format": "csv",
                          "schema": [{"name": "a", "dtype": "int64"}], "files": ["/x.csv"]})
    first = store.get_dataset("d")
    first["schema"].append({"name": "mutated", "dtype": "object"})  # a caller's change stays its own
    assert store.get_dataset("d")["schema"] == [{"name": "a", "dtype": "int64"}]
    store.update_dataset("d", partitions={"path": "/p", "n": 2})
    assert store.get_dataset("d")["partitions"] == {"path": "/p", "n": 2}
    store.delete_dataset("d")
    assert store.get_dataset("d") is None
    store.insert_dataset({"dataset_id": "d", "name": "again", "source": "/y.csv", "format": "csv"})
    assert store.get_dataset("d")["name"] == "again"


def test_ids_are_hex_of_the_asked_length_and_do_not_repeat():
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    assert len(new_id(6)) == 6
