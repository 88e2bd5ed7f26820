"""The job repository: the only SQL about jobs (the ``jobs`` table and what the schema derives
from it: ``job_counts``, ``job_blocks`` and the ``jobs_fts`` search index).

Writes take the store's one writer (its read-write connection, under its lock) and go to
SQLite first, then to the memory of live and recent jobs (:class:`app.job_records.JobRecords`),
so a read of a job this process holds is a dict lookup. Reads of many rows (pages, counts,
the history reads of recovery, timings and advice) run on the store's read-only connections
(:mod:`app.store_pool`). The store composes one as ``store.jobs``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Callable, Iterable

import sqlite_utils

from .job_model import Job
from .job_records import JobRecords
from .lifecycle import ALL, TERMINAL, JobStatus
from .store_pool import ReadPool, check_off_loop, decode
from .store_reads import fetch_all, fetch_dicts, json_number, json_number_or_zero
from .store_schema import BLOCK_SEQS, JSON_COLUMNS, SCHEMA
from .times import utcnow

log = logging.getLogger("app.store")
JobEndListener = Callable[[dict[str, Any]], None]
COLUMNS = tuple(SCHEMA["jobs"][0])
ACTIVE = tuple(s for s in ALL if s not in TERMINAL)
ENDED_FIELDS = ("job_id", "status", "created_at", "started_at", "completed_at")  # what an end listener hears
LIST_FILTERS = ("status", "priority", "dataset_id", "operation")  # each has an index (column, seq)
MAX_SEARCH_CHARS = 200  # a job list search (q=); longer ones are refused by the views

# a job list entry (the contract's, as app.job_model.Job.summary gives it for one job) built by
# SQLite; the queue's fields are null here and filled in from memory for the pending jobs that wait
SUMMARY_JSON = ("json_object('job_id', job_id, 'type', operation, 'operation', operation, 'status', status, "
                f"'priority', priority, 'progress', {json_number_or_zero('progress')}, 'created_at', created_at, "
                "'started_at', started_at, 'dataset_id', dataset_id, 'attempt_count', COALESCE(attempt_count, 0), "
                f"'eta_seconds', CASE WHEN status = 'running' THEN {json_number('eta_seconds')} END, "
                "'queue_position', NULL, 'pending_reason', NULL)")


def _check_columns(names: Iterable[str]) -> None:
    """Refuse column names the jobs table does not have (they are put into SQL text)."""
    unknown = set(names) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown column(s) for jobs: {sorted(unknown)}")


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for column in JSON_COLUMNS["jobs"]:
        if column in out and out[column] is not None and not isinstance(out[column], str):
            out[column] = json.dumps(out[column], default=str)
    return out


def _where(filters: dict[str, Iterable[str] | str | None]) -> tuple[str, list[Any]]:
    """``WHERE`` over the list filters: a value, or any of several; unknown names refused."""
    where, params = [], []
    for column, given in filters.items():
        if column not in LIST_FILTERS:
            raise ValueError(f"no job filter {column!r}")
        values = [given] if isinstance(given, str) else list(given or [])
        if not values:
            continue
        where.append(f"{column} IN ({', '.join('?' * len(values))})")
        params.extend(values)
    return (f"WHERE {' AND '.join(where)}" if where else ""), params


def match_expression(text: str) -> str | None:
    """FTS5 MATCH text for the words of ``text``: each word a quoted string (quotes doubled) and a
    prefix, all required, so FTS syntax (``"`` ``*`` ``:`` ``(`` ``NEAR`` ``-`` ``^``) is only
    searched as text, never parsed. None when no word has a letter or digit to search for."""
    words = [w for w in text.split() if _WORD.search(w)]
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words) or None


_WORD = re.compile(r"[^\W_]")  # the tokenizer splits on everything else, "_" included


class JobRepository:
    """Jobs written through to SQLite and memory, and read back as rows or as :class:`Job` records."""

    def __init__(self, db: sqlite_utils.Database, lock: threading.RLock, pool: ReadPool):
        """``db`` and ``lock``: the store's one writer; ``pool``: its read-only connections."""
        self.db = db
        self._lock = lock
        self._pool = pool
        self.records = JobRecords()  # live and recent jobs, written through
        self._end_listeners: list[JobEndListener] = []

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows on the writer's connection: point reads a write is about to depend on."""
        check_off_loop()
        with self._lock:
            rows = list(self.db.query(sql, list(params)))
        return [decode("jobs", r) for r in rows]

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return fetch_all(self._pool, sql, params)

    def _dicts(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return fetch_dicts(self._pool, "jobs", sql, params)

    # -- one job ---------------------------------------------------------------------
    def insert(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert new jobs in one transaction, in order, with consecutive sequence numbers.

        Returns the jobs as inserted (with ``seq`` and ``updated_at``); all or none are written.
        """
        _check_columns({k for job in jobs for k in job})
        rows = []
        with self._lock, self.db.conn:
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0]
            for offset, job in enumerate(jobs, start=1):
                rows.append({**{c: None for c in COLUMNS}, **job, "seq": seq + offset,
                             "updated_at": job.get("created_at")})
            values = [[encoded[c] for c in COLUMNS] for encoded in map(_encode, rows)]
            self.db.conn.executemany(
                f"INSERT INTO jobs ({', '.join(f'[{c}]' for c in COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                values)
        with self._lock:  # committed: now readable from memory
            for row in rows:
                self.records.inserted(row)
        return rows

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's row: from memory when this process holds it, else from SQLite."""
        with self._lock:
            held = self.records.get(job_id)
            if held is not None:
                return held
            rows = self._rows("SELECT * FROM jobs WHERE job_id = ?", [job_id])
            if rows:
                self.records.loaded(rows[0])
        return rows[0] if rows else None

    def held(self, job_id: str) -> dict[str, Any] | None:
        """The job's row if this process holds it in memory (live or recently ended), else None: no SQL."""
        with self._lock:
            return self.records.get(job_id)

    def job(self, job_id: str) -> Job | None:
        """The job's record (see ``get``)."""
        row = self.get(job_id)
        return None if row is None else Job.from_row(row)

    def update(self, job_id: str, **values: Any) -> None:
        """Write fields of a job, committing before returning; a new terminal status is told to listeners."""
        values["updated_at"] = utcnow()
        _check_columns(values)
        encoded = _encode(values)
        assignments = ", ".join(f"[{c}] = ?" for c in encoded)
        with self._lock:  # the write and who hears of it, in one hold (see watch_ends)
            with self.db.conn:
                self.db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*encoded.values(), job_id])
            self.records.updated(job_id, values)
            listeners = list(self._end_listeners) if values.get("status") in TERMINAL else []
            ended = self._ended_row(job_id) if listeners else []
        for listener in listeners if ended else []:
            try:
                listener(ended[0])
            except Exception:  # a listener's fault must not fail the write that happened
                log.exception("job-end listener failed for %s", job_id)

    def _ended_row(self, job_id: str) -> list[dict[str, Any]]:
        """What an end listener hears of a job just written: from memory when held (the loop
        finishes jobs: no SQL read there), else read back on the writer's connection."""
        held = self.records.get(job_id)
        if held is not None:
            return [{k: held.get(k) for k in ENDED_FIELDS}]
        return self._rows(f"SELECT {', '.join(ENDED_FIELDS)} FROM jobs WHERE job_id = ?", [job_id])

    def watch_ends(self, listener: JobEndListener, seed: Callable[[], None]) -> None:
        """Call ``listener`` with each job that reaches a terminal status from now on.

        ``seed`` (which reads what ended before) runs under the writer's lock with the
        registration, so no job end falls between the two or is counted twice.
        """
        with self._lock:
            seed()
            self._end_listeners.append(listener)

    def cached_result(self, cache_key: str) -> dict[str, Any] | None:
        """The newest completed job with this cache key (any thread: reads under the lock)."""
        rows = self._rows("SELECT * FROM jobs WHERE cache_key = ? AND status = ? ORDER BY completed_at DESC LIMIT 1",
                          [cache_key, JobStatus.COMPLETED.value])
        return rows[0] if rows else None

    # -- pages -----------------------------------------------------------------------
    def page(
        self, status: Iterable[str] | None = None, priority: Iterable[str] | None = None,
        limit: int = 50, offset: int = 0, newest_first: bool = True, dataset_id: str | None = None,
        operation: str | None = None, columns: Iterable[str] | None = None, q: str | None = None,
        created_after: str | None = None, created_before: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Jobs filtered by status/priority/dataset/operation in submission order, paginated: (total, page).

        ``columns`` (default all) names the fields the page needs: a list view that skips
        the JSON fields reads a 1000-job page several times faster. ``q`` searches job id,
        dataset, operation, parameters and error text (words, each a prefix, all required);
        ``created_after`` / ``created_before`` bound ``created_at`` (ISO text as the store writes it).
        """
        names = list(columns) if columns is not None else ["*"]
        unknown = set(names) - {"*", *COLUMNS}
        if unknown:
            raise ValueError(f"unknown job column(s): {sorted(unknown)}")
        return self._page(", ".join(names), self._dicts, status, priority, limit, offset, newest_first,
                          dataset_id, operation, q, created_after, created_before)

    def summary_page(
        self, status: Iterable[str] | None = None, priority: Iterable[str] | None = None,
        limit: int = 50, offset: int = 0, newest_first: bool = True, dataset_id: str | None = None,
        operation: str | None = None, q: str | None = None, created_after: str | None = None,
        created_before: str | None = None,
    ) -> tuple[int, list[tuple[str, str, str]]]:
        """``page`` as (job_id, status, the job's list entry as JSON text): the entry is built
        by SQLite (``SUMMARY_JSON``), so a 1000-job page costs no Python object per field."""
        return self._page(f"job_id, status, {SUMMARY_JSON}", self._all, status, priority, limit, offset,
                          newest_first, dataset_id, operation, q, created_after, created_before)

    def _page(self, select: str, fetch: Callable[[str, list[Any]], list[Any]],
              status: Iterable[str] | None, priority: Iterable[str] | None, limit: int, offset: int,
              newest_first: bool, dataset_id: str | None, operation: str | None, q: str | None,
              created_after: str | None, created_before: str | None) -> tuple[int, list[Any]]:
        given = {"status": status, "priority": priority, "dataset_id": dataset_id, "operation": operation}
        filters = {c: [v] if isinstance(v, str) else list(v) for c, v in given.items() if v is not None}
        filters = {c: v for c, v in filters.items() if v}
        clause, params = _where(filters)
        if q is not None or created_after is not None or created_before is not None:
            return self._search(select, fetch, clause, params, limit, offset, newest_first, q, created_after,
                                created_before)
        total = int(self._all(f"SELECT TOTAL(n) FROM job_counts {clause}", params)[0][0])
        if offset >= total:
            return total, []
        order = "DESC" if newest_first else "ASC"
        clause, params, offset = self._skip_blocks(filters, clause, params, offset, newest_first)
        # the page's rowids come from the (filter, seq) index alone, so an OFFSET steps over
        # index entries, not rows; only the page's rows are read
        rows = fetch(f"SELECT {select} FROM jobs WHERE rowid IN (SELECT rowid FROM jobs {clause} "
                     f"ORDER BY seq {order} LIMIT ? OFFSET ?) ORDER BY seq {order}", [*params, limit, offset])
        return total, rows

    def _search(self, select: str, fetch: Callable[[str, list[Any]], list[Any]], clause: str,
                params: list[Any], limit: int, offset: int, newest_first: bool, q: str | None,
                created_after: str | None, created_before: str | None) -> tuple[int, list[Any]]:
        """The list filters with a text search and a creation-time range: counted, not from the counters."""
        where, values = [clause[len("WHERE "):]] if clause else [], list(params)
        if q is not None:
            match = match_expression(q)
            if match is None:  # nothing searchable (only punctuation): no job matches
                return 0, []
            # the matches' seqs come from the FTS index, newest or oldest first as the page wants
            where.append("seq IN (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ?)")
            values.append(match)
        for bound, op in ((created_after, ">="), (created_before, "<")):
            if bound is not None:
                where.append(f"created_at {op} ?")
                values.append(bound)
        order = "DESC" if newest_first else "ASC"
        if len(where) == 1 and q is not None:  # the search alone: counted and paged in the FTS index
            total = int(self._all("SELECT COUNT(*) FROM jobs_fts WHERE jobs_fts MATCH ?", values)[0][0])
            if offset >= total:
                return total, []
            return total, fetch(f"SELECT {select} FROM jobs WHERE seq IN (SELECT rowid FROM jobs_fts WHERE "
                                f"jobs_fts MATCH ? ORDER BY rowid {order} LIMIT ? OFFSET ?) ORDER BY seq {order}",
                                [*values, limit, offset])
        clause = f"WHERE {' AND '.join(where)}"
        total = int(self._all(f"SELECT COUNT(*) FROM jobs {clause}", values)[0][0])
        if offset >= total:
            return total, []
        rows = fetch(f"SELECT {select} FROM jobs {clause} ORDER BY seq {order} LIMIT ? OFFSET ?",
                     [*values, limit, offset])
        return total, rows

    def _skip_blocks(self, filters: dict[str, list[str]], clause: str, params: list[Any], offset: int,
                     newest_first: bool) -> tuple[str, list[Any], int]:
        """A deep page of one filter value (or of all jobs) starts at the block holding its first
        job, found from the kept per-block counts: the OFFSET left is less than one block."""
        if offset < BLOCK_SEQS or len(filters) > 1 or any(len(v) != 1 for v in filters.values()):
            return clause, params, offset
        col, value = next(((c, v[0]) for c, v in filters.items()), ("*", ""))
        blocks = self._all(f"SELECT block, n FROM job_blocks WHERE col = ? AND value = ? AND n > 0 "
                           f"ORDER BY block {'DESC' if newest_first else 'ASC'}", [col, value])
        left = offset
        for block, n in blocks:
            if left < n:
                bound = ("seq < ?", (block + 1) * BLOCK_SEQS) if newest_first else ("seq >= ?", block * BLOCK_SEQS)
                return f"{clause} AND {bound[0]}" if clause else f"WHERE {bound[0]}", [*params, bound[1]], left
            left -= n
        return clause, params, offset

    # -- counts and history reads ----------------------------------------------------
    def count(self, by: str = "status", where_status: Iterable[str] | None = None) -> dict[str, int]:
        """Counts of jobs grouped by ``status`` or ``priority`` (from the kept counters)."""
        if by not in ("status", "priority"):
            raise ValueError(f"cannot count jobs by {by!r}")
        clause, params = _where({"status": where_status})
        rows = self._all(f"SELECT {by}, SUM(n) FROM job_counts {clause} GROUP BY {by} HAVING SUM(n) > 0", params)
        return {k: int(n) for k, n in rows}

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (status, priority)."""
        rows = self._all("SELECT status, priority, SUM(n) FROM job_counts GROUP BY status, priority")
        return {(s, p): int(n) for s, p, n in rows}

    def unfinished(self) -> list[dict[str, Any]]:
        """Jobs not in a terminal state, in submission order (for recovery)."""
        return self._dicts(f"SELECT * FROM jobs WHERE status IN ({', '.join('?' * len(ACTIVE))}) ORDER BY seq", ACTIVE)

    def oldest_pending_created_at(self) -> str | None:
        return self._all("SELECT MIN(created_at) FROM jobs WHERE status = ?", [JobStatus.PENDING.value])[0][0]

    def completed_since(self, since_iso: str) -> list[tuple[str, str | None, str | None, str | None]]:
        """(job_id, created_at, started_at, completed_at) of jobs completed at or after ``since_iso``."""
        return self._all("SELECT job_id, created_at, started_at, completed_at FROM jobs "
                         "WHERE status = ? AND completed_at >= ?", [JobStatus.COMPLETED.value, since_iso])

    def memory_suspects(self, recent: int, since_iso: str, default_memory_gb: float) -> list[dict[str, Any]]:
        """Failed or completed jobs among the latest ``recent`` submissions, finished since ``since_iso``,
        newest first, that may have lacked memory: failed with an error naming memory (or with text
        LIKE cannot judge), spilled, or peaked above what they declared. A superset of the jobs
        ``app.recommendations.job_memory_rule`` advises on, so only those are decoded."""
        # a range of the seq index; '+status' keeps the planner off the status index
        return self._dicts("""
            SELECT job_id, status, operation, max_memory_gb, error, resources, completed_at FROM jobs
            WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM jobs) - ? AND +status IN ('failed', 'completed')
              AND completed_at >= ? AND (
                (status = 'failed' AND (error LIKE '%memory%' OR error LIKE '%killed%' OR error LIKE '%oom%'
                                        OR error GLOB '*[^ -~]*' OR error LIKE '%\\u%'))
                OR resources LIKE '%spill%'
                OR CASE WHEN json_valid(resources) THEN json_extract(resources, '$.peak_memory_bytes') END
                   > COALESCE(NULLIF(max_memory_gb, 0), ?) * 1e9)
            ORDER BY seq DESC""", [recent, since_iso, default_memory_gb])

