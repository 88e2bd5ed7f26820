"""The store's reads: read-only connections on a pool, lists that follow an index, counters
kept by the writes, job timings kept as jobs end. No server: the store on a temporary file.
(That health answers while a heavy list runs is in tests/test_api_inprocess.py.)"""
from __future__ import annotations

import re
import sqlite3
import time

import pytest

from app.prometheus import DURATION_BUCKETS, WAIT_BUCKETS, JobTimings
from app.store import Store
from app.times import iso

# the definitions the counters replace, run over the rows themselves
JOB_COUNTS_SQL = "SELECT status, priority, dataset_id, operation, COUNT(*) FROM jobs GROUP BY 1, 2, 3, 4"
RETRIES_SQL = """SELECT COUNT(*) FROM attempts a WHERE outcome IN ('failed', 'worker_lost', 'server_restart')
                 AND EXISTS (SELECT 1 FROM attempts b WHERE b.job_id = a.job_id AND b.number > a.number)"""


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "processing.db")
    yield s
    s.close()


def seed(store: Store, n: int) -> None:
    """``n`` finished jobs written by one SQL statement (quick even for tens of thousands)."""
    with store._lock, store.db.conn:
        store.db.execute("""
            INSERT INTO jobs (job_id, seq, status, priority, operation, dataset_id, created_at)
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)
            SELECT printf('j%08d', i), i, CASE i % 5 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'completed' END,
                   CASE i % 4 WHEN 0 THEN 'LOW' WHEN 1 THEN 'NORMAL' WHEN 2 THEN 'HIGH' ELSE 'CRITICAL' END,
                   CASE i % 3 WHEN 0 THEN 'aggregate' ELSE 'groupby' END, 'd' || (i % 10),
                   '2026-01-01T00:00:00.000Z' FROM c""", [n])


def raw(store: Store, sql: str) -> list[tuple]:
    return store.db.execute(sql).fetchall()


@pytest.mark.parametrize("filters", [
    {"status": ["failed"]}, {"priority": ["HIGH"]}, {"dataset_id": "d3"}, {"operation": "groupby"}, {},
    {"status": ["completed"], "newest_first": False}, {"dataset_id": "d3", "offset": 150},
])
def test_every_list_filter_and_order_reads_an_index_without_sorting(store, filters):
    seed(store, 2000)
    seen: list[str] = []
    with store._pool.connection() as conn:  # the one idle read connection: list_jobs borrows it next
        conn.set_trace_callback(seen.append)
    total, rows = store.list_jobs(**filters)
    with store._pool.connection() as conn:
        conn.set_trace_callback(None)
        page = next(sql for sql in seen if sql.lstrip().startswith("SELECT *"))
        ids = re.search(r"rowid IN \((SELECT rowid .*)\) ORDER BY", page).group(1)  # the page's ids, then its rows
        plan, id_plan = ([row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)] for sql in (page, ids))
    assert rows and total >= len(rows)
    assert len(id_plan) == 1 and "USING COVERING INDEX idx_jobs_" in id_plan[0], id_plan  # in index order: no sort
    assert not any(re.search(r"SCAN jobs(?! USING)", step) for step in plan), plan  # never the whole table


def test_lists_and_totals_match_the_rows(store):
    seed(store, 3000)
    for status, priority, dataset_id, operation in [(["failed"], None, None, None), (None, ["LOW"], "d2", None),
                                                    (["failed", "cancelled"], None, None, "groupby"),
                                                    (None, None, None, None)]:
        total, rows = store.list_jobs(status, priority, limit=40, offset=25, dataset_id=dataset_id,
                                      operation=operation, columns=["job_id", "seq"])
        where = [f"{c} IN ({', '.join(repr(v) for v in ([vs] if isinstance(vs, str) else vs))})"
                 for c, vs in (("status", status), ("priority", priority), ("dataset_id", dataset_id),
                               ("operation", operation)) if vs]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        expected = raw(store, f"SELECT job_id FROM jobs {clause} ORDER BY seq DESC")
        assert total == len(expected)
        assert [r["job_id"] for r in rows] == [r[0] for r in expected[25:65]]
    assert store.list_jobs(offset=10_000) == (3000, [])
    with pytest.raises(ValueError):
        store.list_jobs(columns=["job_id", "seq; DROP TABLE jobs"])


def test_deep_pages_start_from_the_kept_block_counts_and_match_plain_offsets(store):
    seed(store, 30_000)
    for job_id in ("j00029990", "j00012000", "j00000007"):  # moves between statuses (and their blocks)
        store.update_job(job_id, status="pending")
    store.update_job("j00015000", operation="describe")
    store.insert_job({"job_id": "late", "status": "failed", "operation": "describe", "created_at": "x"})
    for filters in ({}, {"status": ["completed"]}, {"status": ["failed"]}, {"operation": "groupby"},
                    {"dataset_id": "d4"}, {"priority": ["LOW"]}):
        column, values = next(iter(filters.items()), (None, None))
        clause = f"WHERE {column} = '{values if isinstance(values, str) else values[0]}'" if column else ""
        for newest_first in (True, False):
            expected = [r[0] for r in raw(store, f"SELECT job_id FROM jobs {clause} ORDER BY seq "
                                                 f"{'DESC' if newest_first else 'ASC'}")]
            for offset in (4095, 4096, 9000, len(expected) - 30):
                _, rows = store.list_jobs(**filters, limit=50, offset=offset, newest_first=newest_first,
                                          columns=["job_id"])
                assert [r["job_id"] for r in rows] == expected[offset:offset + 50], (filters, newest_first, offset)


def test_counters_follow_inserts_status_changes_and_attempts(store):
    seed(store, 500)
    store.insert_job({"job_id": "new", "status": "pending", "priority": "HIGH", "dataset_id": "d1"})
    store.update_job("j00000001", status="failed")
    store.update_job("j00000002", priority="LOW", progress=50.0)
    store.update_job("j00000003", progress=10.0)  # no counted column: the counters do not move
    counted = {tuple(key): n for *key, n in raw(store, "SELECT status, priority, dataset_id, operation, n "
                                                       "FROM job_counts") if n}
    assert counted == {tuple(k if k is not None else "" for k in key): n for *key, n in raw(store, JOB_COUNTS_SQL)}
    assert store.count_jobs("status") == dict(raw(store, "SELECT status, COUNT(*) FROM jobs GROUP BY status"))
    assert store.count_jobs("priority", ["pending"]) == {"HIGH": 1}
    for column in ("status", "priority", "dataset_id", "operation"):
        kept = raw(store, f"SELECT value, block, n FROM job_blocks WHERE col = '{column}' AND n != 0 ORDER BY 1, 2")
        assert kept == raw(store, f"SELECT IFNULL({column}, ''), seq / 4096, COUNT(*) FROM jobs GROUP BY 1, 2 "
                                  "ORDER BY 1, 2"), column

    # attempts: a retry is an attempt that failed, was lost or cut by a restart and had a later one,
    # whichever of its end and the next attempt's start was written first
    for job, outcomes in {"j00000001": ["failed", "worker_lost", "completed"], "j00000004": ["server_restart"],
                          "j00000005": ["preempted", "completed"]}.items():
        for number, outcome in enumerate(outcomes, 1):
            store.end_attempt(store.add_attempt(job, number, iso(time.time())), outcome)
    late = store.add_attempt("j00000006", 1, iso(0))
    store.add_attempt("j00000006", 2, iso(0))
    store.end_attempt(late, "failed")  # ended after its successor began
    by_outcome, retries = store.attempt_counts()
    assert retries == raw(store, RETRIES_SQL)[0][0] == 3
    assert by_outcome == dict(raw(store, "SELECT outcome, COUNT(*) FROM attempts WHERE outcome IS NOT NULL "
                                         "GROUP BY outcome"))


def test_read_connections_cannot_write(store):
    with store._pool.connection() as conn, pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM jobs")


def test_job_timings_are_seeded_then_kept_as_jobs_end(store):
    now = time.time()
    for i, (wait, run) in enumerate([(2, 10), (40, 400)]):
        created = now - 3600 - wait - run
        store.insert_job({"job_id": f"c{i}", "status": "completed", "created_at": iso(created),
                          "started_at": iso(created + wait), "completed_at": iso(created + wait + run)})
    store.insert_job({"job_id": "old", "status": "completed", "created_at": iso(now - 3 * 86400),
                      "started_at": iso(now - 3 * 86400), "completed_at": iso(now - 3 * 86400 + 1)})
    timings = JobTimings.of(store)
    assert JobTimings.of(store) is timings, "made once per store"
    wait_count, wait_sum, wait_buckets = timings.snapshot(now)["wait"]
    assert (wait_count, wait_sum) == (2, 42) and wait_buckets == [int(2 <= b) + int(40 <= b) for b in WAIT_BUCKETS]

    store.insert_job({"job_id": "r", "status": "running", "created_at": iso(now - 20), "started_at": iso(now - 15)})
    store.update_job("r", status="completed", completed_at=iso(now - 5))
    store.insert_job({"job_id": "f", "status": "running", "created_at": iso(now - 20), "started_at": iso(now - 15)})
    store.update_job("f", status="failed", completed_at=iso(now - 5))  # only completed jobs are timed
    run_count, run_sum, run_buckets = timings.snapshot(now)["run"]
    assert (run_count, run_sum) == (3, 420) and run_buckets == [sum(r <= b for r in (10, 400, 10))
                                                                for b in DURATION_BUCKETS]
    assert timings.snapshot(now + 86400 + 120)["run"][0] == 0, "a day later the window has emptied"
