"""The record of truth: jobs, attempts, datasets, metrics and cluster events in
SQLite. The only module that imports ``sqlite_utils``.

Every method takes the one lock, so the store may be called from the server loop
(calls are sub-millisecond) and from executor threads alike.
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from .lifecycle import TERMINAL

JSON_COLUMNS = {
    "jobs": ("parameters", "result", "error", "resources", "eta_history"),
    "attempts": (),
    "datasets": ("options", "schema", "files", "partitions"),
    "cluster_events": ("details",),
    "metrics": ("queue",),
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
            "cached_from": str,
        },
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

INDEXES = {
    "jobs": [["status"], ["priority"], ["seq"], ["cache_key"]],
    "attempts": [["job_id"]],
    "metrics": [["ts"]],
}



_IDS = random.Random(os.urandom(16))  # seeded once: a new id costs no system call


def new_id(hex_chars: int = 12) -> str:
    """A random hex id (request, job): unique enough for keys, not a secret."""
    return f"{_IDS.getrandbits(4 * hex_chars):0{hex_chars}x}"


def _check_columns(table: str, names: Iterable[str]) -> None:
    """Refuse column names the schema does not have (they are put into SQL text)."""
    unknown = set(names) - set(SCHEMA[table][0])
    if unknown:
        raise ValueError(f"unknown column(s) for {table}: {sorted(unknown)}")


def utcnow() -> str:
    """Now as an ISO-8601 UTC string with a Z, the API's time format."""
    return iso(time.time())


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """SQLite through sqlite-utils, in WAL mode, tables created on open."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._closed = False
        self._dataset_rows: dict[str, dict[str, Any]] = {}  # raw rows; the store is their only writer
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL survives a killed process (not a power cut).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        for name, (columns, pk) in SCHEMA.items():
            table = self.db[name]
            if not table.exists():
                table.create(columns, pk=pk, not_null={pk} if pk != "id" else set())
            else:
                missing = {c: t for c, t in columns.items() if c not in table.columns_dict}
                for column, ctype in missing.items():
                    table.add_column(column, ctype)
            for cols in INDEXES.get(name, []):
                table.create_index(cols, if_not_exists=True)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.db.conn.close()

    # -- helpers ---------------------------------------------------------
    def _decode(self, table: str, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        for column in JSON_COLUMNS.get(table, ()):
            value = row.get(column)
            if isinstance(value, str):
                try:
                    row[column] = json.loads(value)
                except ValueError:
                    pass
        return row

    def _encode(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for column in JSON_COLUMNS.get(table, ()):
            if column in out and out[column] is not None and not isinstance(out[column], str):
                out[column] = json.dumps(out[column], default=str)
        return out

    def _update(self, table: str, key: Any, values: dict[str, Any]) -> None:
        """``UPDATE`` one row by primary key (plain SQL: the hot paths skip sqlite-utils' introspection)."""
        _check_columns(table, values)
        pk = SCHEMA[table][1]
        encoded = self._encode(table, values)
        assignments = ", ".join(f"[{c}] = ?" for c in encoded)
        with self._lock, self.db.conn:
            self.db.execute(f"UPDATE [{table}] SET {assignments} WHERE [{pk}] = ?", [*encoded.values(), key])

    def _rows(self, table: str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db.query(sql, list(params)))
        return [self._decode(table, r) for r in rows]  # type: ignore[misc]

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """A read-only query for monitoring modules (parameterised; keep each one short)."""
        with self._lock:
            return self.db.execute(sql, list(params)).fetchall()

    def read_rows(self, table: str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows of ``table`` as dicts (JSON columns decoded) from a read-only query."""
        return self._rows(table, sql, params)

    def ping(self) -> bool:
        """True when the database answers and is writable."""
        with self._lock:
            self.db.execute("CREATE TABLE IF NOT EXISTS _ping (x)")
            self.db.execute("DELETE FROM _ping")
            self.db.conn.commit()
        return True

    # -- jobs ------------------------------------------------------------
    def insert_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Insert a new job, giving it the next FIFO sequence number."""
        return self.insert_jobs([job])[0]

    def insert_jobs(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert new jobs in one transaction, in order, with consecutive sequence numbers.

        Returns the jobs as inserted (with ``seq`` and ``updated_at``); all or none are written.
        """
        columns = SCHEMA["jobs"][0]
        _check_columns("jobs", {k for job in jobs for k in job})
        rows = []
        with self._lock, self.db.conn:
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0]
            for offset, job in enumerate(jobs, start=1):
                rows.append({**{c: None for c in columns}, **job, "seq": seq + offset,
                             "updated_at": job.get("created_at")})
            names = list(columns)
            values = [[encoded[c] for c in names] for encoded in (self._encode("jobs", row) for row in rows)]
            self.db.conn.executemany(
                f"INSERT INTO jobs ({', '.join(f'[{c}]' for c in names)}) VALUES ({', '.join('?' * len(names))})",
                values)
        return rows

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._rows("jobs", "SELECT * FROM jobs WHERE job_id = ?", [job_id])
        return rows[0] if rows else None

    def update_job(self, job_id: str, **values: Any) -> None:
        """Write fields of a job, committing before returning."""
        values["updated_at"] = utcnow()
        self._update("jobs", job_id, values)

    def cached_result(self, cache_key: str) -> dict[str, Any] | None:
        """The newest completed job with this cache key (any thread: reads under the lock)."""
        rows = self._rows("jobs", "SELECT * FROM jobs WHERE cache_key = ? AND status = 'completed' "
                                  "ORDER BY completed_at DESC LIMIT 1", [cache_key])
        return rows[0] if rows else None

    def list_jobs(
        self, status: Iterable[str] | None = None, priority: Iterable[str] | None = None,
        limit: int = 50, offset: int = 0, newest_first: bool = True, dataset_id: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Jobs filtered by status/priority/dataset, paginated; returns (total, page)."""
        where, params = [], []
        if dataset_id is not None:
            where.append("dataset_id = ?")
            params.append(dataset_id)
        for column, values in (("status", status), ("priority", priority)):
            if values:
                values = list(values)
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = self.db.execute(f"SELECT COUNT(*) FROM jobs {clause}", params).fetchone()[0]
        order = "DESC" if newest_first else "ASC"
        rows = self._rows(
            "jobs", f"SELECT * FROM jobs {clause} ORDER BY seq {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return total, rows

    def count_jobs(self, by: str = "status", where_status: Iterable[str] | None = None) -> dict[str, int]:
        """Counts of jobs grouped by ``status`` or ``priority``."""
        assert by in {"status", "priority"}
        params: list[Any] = []
        clause = ""
        if where_status:
            values = list(where_status)
            clause = f"WHERE status IN ({', '.join('?' for _ in values)})"
            params = values
        with self._lock:
            rows = self.db.execute(f"SELECT {by}, COUNT(*) FROM jobs {clause} GROUP BY {by}", params).fetchall()
        return {k: n for k, n in rows}

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        """Jobs not in a terminal state, in submission order (for recovery)."""
        return self._rows(
            "jobs", "SELECT * FROM jobs WHERE status NOT IN (?, ?, ?) ORDER BY seq", TERMINAL
        )

    # -- attempts --------------------------------------------------------
    def add_attempt(self, job_id: str, number: int, started_at: str) -> int:
        with self._lock, self.db.conn:
            cursor = self.db.execute("INSERT INTO attempts (job_id, number, started_at) VALUES (?, ?, ?)",
                                     [job_id, number, started_at])
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    def end_attempt(self, attempt_id: int, outcome: str, cause: str | None = None) -> None:
        self._update("attempts", attempt_id, {"ended_at": utcnow(), "outcome": outcome, "cause": cause})

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        return self._rows("attempts", "SELECT * FROM attempts WHERE job_id = ? ORDER BY number, id", [job_id])

    # -- datasets --------------------------------------------------------
    def insert_dataset(self, dataset: dict[str, Any]) -> None:
        with self._lock, self.db.conn:
            self._dataset_rows.pop(dataset["dataset_id"], None)
            self.db["datasets"].insert(self._encode("datasets", dataset))

    def get_dataset(self, dataset_id: str) -> dict[str, Any] | None:
        """One dataset, decoded afresh; the raw row is remembered (every submission reads it)."""
        with self._lock:
            raw = self._dataset_rows.get(dataset_id)
            if raw is None:
                rows = list(self.db.query("SELECT * FROM datasets WHERE dataset_id = ?", [dataset_id]))
                if not rows:
                    return None
                raw = self._dataset_rows[dataset_id] = rows[0]
        return self._decode("datasets", dict(raw))

    def update_dataset(self, dataset_id: str, **values: Any) -> None:
        with self._lock:
            self._dataset_rows.pop(dataset_id, None)
            self._update("datasets", dataset_id, values)

    def delete_dataset(self, dataset_id: str) -> None:
        with self._lock, self.db.conn:
            self._dataset_rows.pop(dataset_id, None)
            self.db["datasets"].delete(dataset_id)

    def list_datasets(self, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            total = self.db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0]
        rows = self._rows(
            "datasets", "SELECT * FROM datasets ORDER BY created_at DESC, dataset_id LIMIT ? OFFSET ?",
            [limit, offset],
        )
        return total, rows

    # -- metrics ---------------------------------------------------------
    def insert_metric(self, row: dict[str, Any]) -> None:
        with self._lock, self.db.conn:
            self.db["metrics"].insert(self._encode("metrics", row))

    def query_metrics(
        self, since: float | None = None, until: float | None = None, limit: int = 1000,
        step: float | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Metric rows in time order; with ``step`` (s) one row per time bucket (the last)."""
        where, params = ["1=1"], []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts <= ?")
            params.append(until)
        clause = " AND ".join(where)
        if step:
            # keep the newest row of each step-wide bucket: one cheap indexed query
            inner = f"SELECT MAX(id) FROM metrics WHERE {clause} GROUP BY CAST(ts / ? AS INTEGER)"
            clause = f"id IN ({inner})"
            params = [*params, step]
        with self._lock:
            total = self.db.execute(f"SELECT COUNT(*) FROM metrics WHERE {clause}", params).fetchone()[0]
        rows = self._rows(
            "metrics",
            f"SELECT * FROM (SELECT * FROM metrics WHERE {clause} ORDER BY ts DESC LIMIT ?) ORDER BY ts",
            [*params, limit],
        )
        return total, rows

    def prune_metrics(self, before_ts: float) -> int:
        with self._lock, self.db.conn:
            cursor = self.db.execute("DELETE FROM metrics WHERE ts < ?", [before_ts])
            return cursor.rowcount

    # -- cluster events --------------------------------------------------
    def add_cluster_event(self, event: str, details: dict[str, Any] | None = None) -> None:
        now = time.time()
        with self._lock, self.db.conn:
            self.db["cluster_events"].insert(
                self._encode("cluster_events", {"ts": now, "timestamp": iso(now), "event": event, "details": details or {}})
            )

    def cluster_events(self, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            total = self.db.execute("SELECT COUNT(*) FROM cluster_events").fetchone()[0]
        rows = self._rows("cluster_events", "SELECT * FROM cluster_events ORDER BY id DESC LIMIT ? OFFSET ?",
                          [limit, offset])
        return total, rows
