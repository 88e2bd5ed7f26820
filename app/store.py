"""The record of truth: jobs, attempts, datasets, metrics and cluster events in
SQLite. With ``store_schema``, ``store_reads`` and ``job_repository`` (``store.jobs``,
which holds all the SQL about jobs), the only place that holds SQL.

One writer: every write (and the point reads the writes depend on) takes the one lock
on the one read-write connection, so it may be called from the server loop (calls are
sub-millisecond) and from executor threads alike. Reads of many rows are in
:class:`app.store_reads.StoreReads`, on read-only connections of their own.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import sqlite_utils

from .job_repository import JobRepository
from .store_log import JobLogStore
from .store_reads import ReadPool, StoreReads, decode
from .store_pool import check_off_loop
from .store_schema import JSON_COLUMNS, SCHEMA, migrate
from .times import iso, utcnow

log = logging.getLogger(__name__)


def _on_jobs(name: str, method: str) -> Callable[..., Any]:
    """``Store.<name>``: ``store.jobs.<method>``, the name the callers outside the engine use."""
    def delegate(self: "Store", *args: Any, **kwargs: Any) -> Any:
        return getattr(self.jobs, method)(*args, **kwargs)

    delegate.__name__ = delegate.__qualname__ = name
    delegate.__doc__ = f"``store.jobs.{method}`` (see :class:`app.job_repository.JobRepository`)."
    return delegate


def _check_columns(table: str, names: Iterable[str]) -> None:
    """Refuse column names the schema does not have (they are put into SQL text)."""
    unknown = set(names) - set(SCHEMA[table][0])
    if unknown:
        raise ValueError(f"unknown column(s) for {table}: {sorted(unknown)}")


class Store(StoreReads, JobLogStore):
    """SQLite through sqlite-utils, in WAL mode, tables created (or brought up to date) on open."""

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
        migrate(self.db)
        self._pool = ReadPool(self.path)
        self.jobs = JobRepository(self.db, self._lock, self._pool)  # every job read and write

    def close(self) -> None:
        """Close the connections and the read pool; safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
                self.db.conn.close()

    # -- helpers ---------------------------------------------------------
    def _decode(self, table: str, row: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else decode(table, row)

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
        """Rows on the writer's connection: point reads a write is about to depend on."""
        check_off_loop()
        with self._lock:
            rows = list(self.db.query(sql, list(params)))
        return [self._decode(table, r) for r in rows]  # type: ignore[misc]

    def ping(self) -> bool:
        """True when the database answers and is writable."""
        with self._lock:
            self.db.execute("CREATE TABLE IF NOT EXISTS _ping (x)")
            self.db.execute("DELETE FROM _ping")
            self.db.conn.commit()
        return True

    # -- jobs: the repository's, under the names callers outside the engine use ------
    insert_jobs = _on_jobs("insert_jobs", "insert")
    get_job = _on_jobs("get_job", "get")
    update_job = _on_jobs("update_job", "update")
    watch_job_ends = _on_jobs("watch_job_ends", "watch_ends")
    list_jobs = _on_jobs("list_jobs", "page")
    count_jobs = _on_jobs("count_jobs", "count")
    job_counts = _on_jobs("job_counts", "counts")
    oldest_pending_created_at = _on_jobs("oldest_pending_created_at", "oldest_pending_created_at")
    completed_since = _on_jobs("completed_since", "completed_since")
    memory_suspects = _on_jobs("memory_suspects", "memory_suspects")

    def insert_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Insert a new job, giving it the next FIFO sequence number."""
        return self.jobs.insert([job])[0]

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
            if raw is None:  # (a key lookup the registry makes on the loop at upload: not guarded)
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

    # -- metrics ---------------------------------------------------------
    def insert_pipeline(self, record: dict[str, Any]) -> None:
        with self._lock, self.db.conn:
            self.db["pipelines"].insert(self._encode("pipelines", record))

    def get_pipeline(self, pipeline_id: str) -> dict[str, Any] | None:
        rows = self._rows("pipelines", "SELECT * FROM pipelines WHERE pipeline_id = ?", [pipeline_id])
        return rows[0] if rows else None

    def recent_pipelines(self, limit: int) -> list[dict[str, Any]]:
        return self._rows("pipelines", "SELECT pipeline_id, name, created_at FROM pipelines "
                          "ORDER BY created_at DESC LIMIT ?", [limit])

    def insert_metric(self, row: dict[str, Any]) -> None:
        with self._lock, self.db.conn:
            self.db["metrics"].insert(self._encode("metrics", row))

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
