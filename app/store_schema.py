"""The store's tables, indexes and derived counters, and how an existing file is brought up to date.

``migrate`` runs on every open and only adds: missing tables, columns, indexes and
counter tables (filled once from the rows already there), so a data dir written by an
older release opens in place.
"""
from __future__ import annotations

from typing import Any

import sqlite_utils

JSON_COLUMNS = {
    "jobs": ("parameters", "result", "error", "resources", "eta_history", "depends_on"),
    "attempts": (),
    "datasets": ("options", "schema", "files", "partitions"),
    "cluster_events": ("details",),
    "metrics": ("queue",),
    "job_log": ("details",),
    "pipelines": ("steps",),
    "webhook_deliveries": (),
}

SCHEMA: dict[str, tuple[dict[str, Any], str]] = {
    "jobs": (
        {
            "job_id": str, "seq": int, "operation": str, "dataset_id": str, "parameters": str,
            "priority": str, "max_memory_gb": float, "max_cores": float, "status": str,
            "progress": float, "created_at": str, "started_at": str, "completed_at": str,
            "updated_at": str, "attempt_count": int, "error": str, "result": str,
            "result_dataset_id": str, "eta_seconds": float, "estimated_completion_at": str,
            "tasks_total": int, "tasks_done": int, "resources": str, "eta_history": str,
            "cancel_requested": int, "result_kind": str, "no_cache": int, "cache_key": str,
            "cached_from": str, "rerun_of": str, "depends_on": str, "notify_url": str,
        },
        "job_id",
    ),
    "pipelines": (
        {"pipeline_id": str, "name": str, "priority": str, "created_at": str, "steps": str},
        "pipeline_id",
    ),
    "job_log": (
        {"id": int, "job_id": str, "ts": float, "timestamp": str, "level": str, "event": str, "message": str,
         "details": str},
        "id",
    ),
    # webhooks owed for ended jobs, until delivered or given up: resumed after a restart
    "webhook_deliveries": (
        {"job_id": str, "url": str, "attempts": int, "next_at": float, "created_at": float},
        "job_id",
    ),
    "attempts": (
        {"id": int, "job_id": str, "number": int, "started_at": str, "ended_at": str,
         "outcome": str, "cause": str},
        "id",
    ),
    "datasets": (
        {
            "dataset_id": str, "name": str, "description": str, "source": str, "format": str,
            "options": str, "schema": str, "files": str, "file_count": int, "size_bytes": int,
            "estimated_rows": int, "managed": int, "created_at": str, "partitions": str,
            "origin_job_id": str,
        },
        "dataset_id",
    ),
    "metrics": (
        {"id": int, "ts": float, "timestamp": str, "status": str, "n_workers": int,
         "total_cores": int, "total_memory_bytes": int, "used_memory_bytes": int,
         "cpu_percent": float, "active_tasks": int, "tasks_per_second": float,
         "network_bytes": int, "queue": str},
        "id",
    ),
    "cluster_events": (
        {"id": int, "ts": float, "timestamp": str, "event": str, "details": str},
        "id",
    ),
}

# Every job list filter (one column) is followed by seq, the list's order: a filtered page
# is an index range read in order, never a sort. The single-column ones came first.
INDEXES = {
    "jobs": [["status"], ["priority"], ["seq"], ["cache_key"], ["status", "seq"], ["priority", "seq"],
             ["dataset_id", "seq"], ["operation", "seq"], ["status", "completed_at"], ["created_at"]],
    "attempts": [["job_id"]],
    "job_log": [["job_id", "id"]],
    "metrics": [["ts"]],
}

RETRIED_OUTCOMES = ("failed", "worker_lost", "server_restart")
_RETRIED = ", ".join(f"'{o}'" for o in RETRIED_OUTCOMES)

# Jobs per block of BLOCK_SEQS sequence numbers, per value of each list filter ('*': all jobs).
# A deep page of one filter sums these to find the block its first job is in, then steps at
# most one block of the (filter, seq) index: SQLite's OFFSET alone steps every skipped entry.
BLOCK_SEQS = 4096
BLOCKED = ("status", "priority", "dataset_id", "operation")


def _block_rows(row: str, sign: str, columns: tuple[str, ...] = BLOCKED) -> str:
    keys = [("'*'", "''")] * (columns == BLOCKED) + [(f"'{c}'", f"IFNULL({row}.{c}, '')") for c in columns]
    values = ", ".join(f"({col}, {value}, IFNULL({row}.seq, 0) / {BLOCK_SEQS}, {sign}1)" for col, value in keys)
    return f"INSERT INTO job_blocks VALUES {values} ON CONFLICT DO UPDATE SET n = n + excluded.n;"


# Counters the writes keep, so a total or a scrape is a read of a few rows at any size.
# job_counts: jobs by every list filter; attempt_counts: ended attempts by outcome, plus
# '~retries', attempts that failed, were lost or cut by a restart and had a later attempt.
COUNTERS = {
    "job_blocks": (
        "CREATE TABLE job_blocks (col TEXT NOT NULL, value TEXT NOT NULL, block INTEGER NOT NULL, n INTEGER NOT NULL,"
        " PRIMARY KEY (col, value, block))",
        "INSERT INTO job_blocks " + " UNION ALL ".join(
            f"SELECT '{c}', IFNULL({c}, ''), IFNULL(seq, 0) / {BLOCK_SEQS}, COUNT(*) FROM jobs GROUP BY 2, 3"
            for c in BLOCKED) + f" UNION ALL SELECT '*', '', IFNULL(seq, 0) / {BLOCK_SEQS}, COUNT(*) FROM jobs GROUP BY 3",
    ),
    "job_counts": (
        "CREATE TABLE job_counts (status TEXT NOT NULL, priority TEXT NOT NULL, dataset_id TEXT NOT NULL,"
        " operation TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (status, priority, dataset_id, operation))",
        "INSERT INTO job_counts SELECT IFNULL(status, ''), IFNULL(priority, ''), IFNULL(dataset_id, ''),"
        " IFNULL(operation, ''), COUNT(*) FROM jobs GROUP BY 1, 2, 3, 4",
    ),
    "attempt_counts": (
        "CREATE TABLE attempt_counts (outcome TEXT PRIMARY KEY, n INTEGER NOT NULL)",
        "INSERT INTO attempt_counts SELECT outcome, COUNT(*) FROM attempts WHERE outcome IS NOT NULL GROUP BY outcome"
        " UNION ALL SELECT '~retries', COUNT(*) FROM attempts a WHERE outcome IN (" + _RETRIED + ")"
        " AND EXISTS (SELECT 1 FROM attempts b WHERE b.job_id = a.job_id AND b.number > a.number)",
    ),
}


# Full-text search over the job history: an external-content FTS5 table over jobs (the text
# lives once, in jobs), keyed by seq so a match list comes out in the list's order. Its
# triggers fire only when a searched column changes (progress writes are frequent).
SEARCHED = ("job_id", "dataset_id", "operation", "parameters", "error")
_SEARCHED = ", ".join(SEARCHED)
SEARCH = {
    "jobs_fts": (
        f"CREATE VIRTUAL TABLE jobs_fts USING fts5({_SEARCHED}, content='jobs', content_rowid='seq')",
        "INSERT INTO jobs_fts(jobs_fts) VALUES ('rebuild')",  # an older data dir: indexed from its rows
    ),
}


def _fts_row(row: str, delete: bool = False) -> str:
    values = ", ".join(f"{row}.{c}" for c in SEARCHED)
    command = ("jobs_fts, ", "'delete', ") if delete else ("", "")
    return (f"INSERT INTO jobs_fts({command[0]}rowid, {_SEARCHED}) SELECT {command[1]}{row}.seq, {values} "
            f"WHERE {row}.seq IS NOT NULL;")


def _job_delta(row: str, sign: str) -> str:
    key = f"IFNULL({row}.status, ''), IFNULL({row}.priority, ''), IFNULL({row}.dataset_id, ''), IFNULL({row}.operation, '')"
    return (f"INSERT INTO job_counts VALUES ({key}, {sign}1) "
            f"ON CONFLICT DO UPDATE SET n = n {sign} 1;")


def _attempt_delta(outcome: str, amount: str) -> str:
    return f"INSERT INTO attempt_counts VALUES ({outcome}, {amount}) ON CONFLICT DO UPDATE SET n = n + excluded.n;"


TRIGGERS = {
    "jobs_fts_insert": f"AFTER INSERT ON jobs BEGIN {_fts_row('NEW')} END",
    "jobs_fts_delete": f"AFTER DELETE ON jobs BEGIN {_fts_row('OLD', True)} END",
    "jobs_fts_update": (
        f"AFTER UPDATE OF seq, {_SEARCHED} ON jobs WHEN " + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in ("seq", *SEARCHED))
        + f" BEGIN {_fts_row('OLD', True)} {_fts_row('NEW')} END"),
    "job_counts_insert": f"AFTER INSERT ON jobs BEGIN {_job_delta('NEW', '+')} {_block_rows('NEW', '+')} END",
    "job_counts_delete": f"AFTER DELETE ON jobs BEGIN {_job_delta('OLD', '-')} {_block_rows('OLD', '-')} END",
    **{f"job_blocks_{c}": (f"AFTER UPDATE OF {c} ON jobs WHEN OLD.{c} IS NOT NEW.{c} BEGIN "
                           f"{_block_rows('OLD', '-', (c,))} {_block_rows('NEW', '+', (c,))} END") for c in BLOCKED},
    "job_counts_update": (
        "AFTER UPDATE OF status, priority, dataset_id, operation ON jobs WHEN OLD.status IS NOT NEW.status"
        " OR OLD.priority IS NOT NEW.priority OR OLD.dataset_id IS NOT NEW.dataset_id"
        f" OR OLD.operation IS NOT NEW.operation BEGIN {_job_delta('OLD', '-')} {_job_delta('NEW', '+')} END"),
    "attempt_counts_end": (
        "AFTER UPDATE OF outcome ON attempts WHEN NEW.outcome IS NOT NULL AND OLD.outcome IS NULL BEGIN "
        + _attempt_delta("NEW.outcome", "1")
        + _attempt_delta("'~retries'", f"NEW.outcome IN ({_RETRIED}) AND EXISTS (SELECT 1 FROM attempts b"
                                       " WHERE b.job_id = NEW.job_id AND b.number > NEW.number)")
        + " END"),
    # a new attempt makes the job's latest ended one, if it failed or was lost, a retry
    "attempt_counts_retry": (
        "AFTER INSERT ON attempts BEGIN "
        + _attempt_delta("'~retries'", f"(SELECT COUNT(*) FROM attempts a WHERE a.job_id = NEW.job_id"
                                       f" AND a.number < NEW.number AND a.outcome IN ({_RETRIED}) AND NOT EXISTS"
                                       " (SELECT 1 FROM attempts b WHERE b.job_id = a.job_id AND b.number > a.number"
                                       " AND b.id != NEW.id))")
        + " END"),
}


def migrate(db: sqlite_utils.Database) -> None:
    """Create what is missing: tables, columns, indexes, counters and the search index (filled from
    existing rows) and triggers."""
    for name, (columns, pk) in SCHEMA.items():
        table = db[name]
        if not table.exists():
            table.create(columns, pk=pk, not_null={pk} if pk != "id" else set())
        else:
            missing = {c: t for c, t in columns.items() if c not in table.columns_dict}
            for column, ctype in missing.items():
                table.add_column(column, ctype)
        for cols in INDEXES.get(name, []):
            table.create_index(cols, if_not_exists=True)
    # counters, their first fill and their triggers appear together or not at all (DDL does
    # not open a transaction by itself in sqlite3's legacy mode: BEGIN explicitly)
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        for name, (create, fill) in {**COUNTERS, **SEARCH}.items():
            if not db[name].exists():
                db.conn.execute(create)
                db.conn.execute(fill)
        for name, body in TRIGGERS.items():  # made afresh: a file always has this release's triggers
            db.conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            db.conn.execute(f"CREATE TRIGGER {name} {body}")
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.commit()
