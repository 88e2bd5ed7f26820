"""A data dir written by an older release opens: the server adds what the schema gained
(columns, the job list's indexes, the job and attempt counters filled from the old rows),
and every job and dataset it held is found, readable and usable.

The database is built by hand, with the tables of the first release's ``app/store.py``
(commit 955ada6: ``jobs`` had no ``result_kind``), not by today's code.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import wait_job

# The first release's tables, as sqlite-utils created them from its SCHEMA.
OLD_SCHEMA = """
CREATE TABLE [jobs] (
   [job_id] TEXT PRIMARY KEY NOT NULL, [seq] INTEGER, [operation] TEXT, [dataset_id] TEXT,
   [parameters] TEXT, [priority] TEXT, [max_memory_gb] FLOAT, [max_cores] FLOAT, [status] TEXT,
   [progress] FLOAT, [created_at] TEXT, [started_at] TEXT, [completed_at] TEXT, [updated_at] TEXT,
   [attempt_count] INTEGER, [error] TEXT, [result] TEXT, [result_dataset_id] TEXT, [eta_seconds] FLOAT,
   [estimated_completion_at] TEXT, [tasks_total] INTEGER, [tasks_done] INTEGER, [resources] TEXT,
   [eta_history] TEXT, [cancel_requested] INTEGER
);
CREATE INDEX [idx_jobs_status] ON [jobs] ([status]);
CREATE INDEX [idx_jobs_priority] ON [jobs] ([priority]);
CREATE INDEX [idx_jobs_seq] ON [jobs] ([seq]);
CREATE TABLE [attempts] (
   [id] INTEGER PRIMARY KEY, [job_id] TEXT, [number] INTEGER, [started_at] TEXT, [ended_at] TEXT,
   [outcome] TEXT, [cause] TEXT
);
CREATE INDEX [idx_attempts_job_id] ON [attempts] ([job_id]);
CREATE TABLE [datasets] (
   [dataset_id] TEXT PRIMARY KEY NOT NULL, [name] TEXT, [description] TEXT, [source] TEXT, [format] TEXT,
   [options] TEXT, [schema] TEXT, [files] TEXT, [file_count] INTEGER, [size_bytes] INTEGER,
   [estimated_rows] INTEGER, [managed] INTEGER, [created_at] TEXT, [partitions] TEXT, [origin_job_id] TEXT
);
CREATE TABLE [metrics] (
   [id] INTEGER PRIMARY KEY, [ts] FLOAT, [timestamp] TEXT, [status] TEXT, [n_workers] INTEGER,
   [total_cores] INTEGER, [total_memory_bytes] INTEGER, [used_memory_bytes] INTEGER, [cpu_percent] FLOAT,
   [active_tasks] INTEGER, [tasks_per_second] FLOAT, [network_bytes] INTEGER, [queue] TEXT
);
CREATE INDEX [idx_metrics_ts] ON [metrics] ([ts]);
CREATE TABLE [cluster_events] ([id] INTEGER PRIMARY KEY, [ts] FLOAT, [timestamp] TEXT, [event] TEXT, [details] TEXT);
"""

VALUES = [1.5, 2.5, 4.0, 8.0]
MEAN = {"column": "level", "operation": "mean"}


def old_job(job_id: str, seq: int, status: str, **values: object) -> dict:
    base = {"job_id": job_id, "seq": seq, "operation": "aggregate", "dataset_id": "old_levels",
            "parameters": json.dumps(MEAN), "priority": "NORMAL", "max_memory_gb": 0.5, "max_cores": 1.0,
            "status": status, "progress": 100.0 if status == "completed" else 0.0,
            "created_at": f"2026-01-0{seq}T10:00:00.000Z", "updated_at": f"2026-01-0{seq}T10:00:05.000Z",
            "attempt_count": 1 if status in ("completed", "failed") else 0, "cancel_requested": 0}
    return {**base, **values}


def write_old_data_dir(data: Path) -> Path:
    """A data dir as the first release left it: one CSV dataset and four jobs."""
    csv = data / "inputs" / "levels.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("gene,level\n" + "".join(f"G{i},{v}\n" for i, v in enumerate(VALUES)))
    db = sqlite3.connect(data / "processing.db")
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
        "old_levels", "Levels from before", "registered by the first release", str(csv), "csv", "{}",
        json.dumps([{"name": "gene", "dtype": "object"}, {"name": "level", "dtype": "float64"}]),
        json.dumps([str(csv)]), 1, csv.stat().st_size, len(VALUES), 0, "2026-01-01T09:00:00.000Z", None, None))
    jobs = [
        old_job("job_old_done", 1, "completed", started_at="2026-01-01T10:00:01.000Z",
                completed_at="2026-01-01T10:00:05.000Z", result=json.dumps({"value": 4.0, **MEAN}),
                eta_history=json.dumps({"actual_end": "2026-01-01T10:00:05.000Z"})),
        old_job("job_old_failed", 2, "failed", started_at="2026-01-02T10:00:01.000Z",
                completed_at="2026-01-02T10:00:02.000Z",
                error=json.dumps({"type": "ValueError", "message": "could not convert 'x' to float"})),
        old_job("job_old_cancelled", 3, "cancelled", completed_at="2026-01-03T10:00:02.000Z"),
        old_job("job_old_pending", 4, "pending"),  # waited through the upgrade: runs on the new server
    ]
    columns = list(jobs[0]) + [c for c in ("started_at", "completed_at", "result", "error", "eta_history")
                               if c not in jobs[0]]
    for job in jobs:
        db.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   [job.get(c) for c in columns])
    db.execute("INSERT INTO attempts (job_id, number, started_at, ended_at, outcome) VALUES (?,?,?,?,?)",
               ("job_old_done", 1, "2026-01-01T10:00:01.000Z", "2026-01-01T10:00:05.000Z", "completed"))
    db.execute("INSERT INTO attempts (job_id, number, started_at, ended_at, outcome, cause) VALUES (?,?,?,?,?,?)",
               ("job_old_failed", 1, "2026-01-02T10:00:01.000Z", "2026-01-02T10:00:02.000Z", "failed",
                "could not convert 'x' to float"))
    db.commit()
    db.close()
    return data


def test_a_data_dir_from_the_first_release_opens_with_every_job_and_dataset(make_server, tmp_path):
    data = write_old_data_dir(tmp_path / "old")
    srv = make_server({"DEMO_DATASET": "0", "DASK_N_WORKERS": "1"}, data_dir=data)

    datasets = srv.get("/api/processing/datasets").json()
    assert [d["dataset_id"] for d in datasets["datasets"]] == ["old_levels"] and datasets["total"] == 1
    shown = srv.get("/api/processing/datasets/old_levels?preview_rows=10").json()
    assert shown["name"] == "Levels from before" and shown["columns"] == ["gene", "level"]
    assert [r["level"] for r in shown["preview"]] == VALUES

    listed = srv.get("/api/processing/jobs/list?limit=100").json()
    assert listed["total"] == 4
    # the counters behind totals were filled from the old rows when the file was migrated
    for query, total in (("status=completed", 1), ("status=failed,cancelled", 2), ("dataset_id=old_levels", 4),
                         ("operation=aggregate&priority=NORMAL", 4), ("sort=oldest&limit=1", 4)):
        assert srv.get(f"/api/processing/jobs/list?{query}").json()["total"] == total, query
    assert srv.get("/api/processing/jobs/list?sort=oldest&limit=1").json()["jobs"][0]["job_id"] == "job_old_done"
    # the search index was built from the old rows (an error's text, a dataset id)
    assert [j["job_id"] for j in srv.get("/api/processing/jobs/list?q=convert").json()["jobs"]] == ["job_old_failed"]
    assert srv.get("/api/processing/jobs/list?q=old_levels").json()["total"] == 4
    attempts = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in srv.get("/metrics").text.splitlines()
                if line.startswith("processing_job_attempts_total{")}
    # (the pending job may already have run: one completed attempt more)
    assert attempts["failed"] == 1 and attempts["completed"] in (1, 2), attempts
    assert {j["job_id"] for j in listed["jobs"]} == {"job_old_done", "job_old_failed", "job_old_cancelled",
                                                     "job_old_pending"}
    done = srv.get("/api/processing/jobs/job_old_done/status").json()
    assert done["status"] == "completed" and done["result"]["value"] == 4.0
    assert [a["outcome"] for a in done["attempts"]] == ["completed"]
    r = srv.get("/api/processing/jobs/job_old_done/result")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["value"] == 4.0, "a result stored before result_kind existed is still served"
    failed = srv.get("/api/processing/jobs/job_old_failed/status").json()
    assert failed["status"] == "failed" and "could not convert" in failed["error"]["message"]
    assert srv.get("/api/processing/jobs/job_old_cancelled/status").json()["status"] == "cancelled"

    # the job that was waiting runs on the upgraded server, on the old dataset
    final = wait_job(srv, "job_old_pending", 120)
    assert final["status"] == "completed", final
    assert final["result"]["value"] == pytest.approx(sum(VALUES) / len(VALUES))
    # and new work goes next to the old
    r = srv.post("/api/processing/jobs/submit", {"operation": "aggregate", "dataset_id": "old_levels",
                                                 "parameters": {"column": "level", "operation": "max"},
                                                 "max_cores": 1, "max_memory_gb": 0.5})
    assert r.status_code == 201, r.text
    assert wait_job(srv, r.json()["job_id"])["result"]["value"] == max(VALUES)
    assert srv.get("/api/processing/jobs/list?limit=100").json()["total"] == 5

    db = sqlite3.connect(data / "processing.db")
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    indexes = {row[1] for row in db.execute("PRAGMA index_list(jobs)")}
    counted = db.execute("SELECT SUM(n) FROM job_counts").fetchone()[0]
    db.close()
    assert {"result_kind", "notify_url"} <= columns, "the schema gained its new columns"
    assert {"idx_jobs_status_seq", "idx_jobs_dataset_id_seq", "idx_jobs_operation_seq"} <= indexes, indexes
    assert counted == 5, "the counters followed every write after the upgrade"
