"""The store's reads: named queries over read-only connections (app.store_pool), run off the loop.

SQLite in WAL mode lets readers run beside the one writer, so reads take no lock: each
borrows a read-only connection of its own. Handlers ``await store.reading(fn, ...)``,
which runs ``fn`` on the store's small read pool, never on the event loop.
"""
from __future__ import annotations

import asyncio
import functools
import math
import re
from typing import Any, Callable, Iterable, TypeVar

from .lifecycle import ALL, TERMINAL
from .store_pool import ReadPool, decode
from .store_schema import BLOCK_SEQS, SCHEMA

T = TypeVar("T")
ACTIVE = tuple(s for s in ALL if s not in TERMINAL)
LIST_FILTERS = ("status", "priority", "dataset_id", "operation")  # each has an index (column, seq)
# what a job list entry shows (app.job_views.JobViews.summary)
SUMMARY_COLUMNS = ("job_id", "operation", "status", "priority", "progress", "created_at", "started_at",
                   "dataset_id", "attempt_count", "eta_seconds")


def _number(column: str) -> str:
    """SQL for a REAL column as a JSON number: 17 significant digits, so it reads back as the same
    float; null where the API's JSON says null (infinities; SQLite holds NaN as NULL)."""
    return f"CASE WHEN abs({column}) <= 1.7976931348623157e308 THEN json(printf('%!.17g', {column})) END"


def _number_or_zero(column: str) -> str:
    """``_number``, with 0.0 for NULL and zero (Python's ``value or 0.0``)."""
    return f"CASE WHEN {column} IS NULL OR {column} = 0 THEN json('0.0') ELSE {_number(column)} END"


def _integer(column: str) -> str:
    """An INTEGER column as JSON, 0 for NULL (a REAL that SQLite kept as REAL: as ``_number``)."""
    return f"CASE WHEN typeof({column}) = 'real' THEN {_number(column)} ELSE COALESCE({column}, 0) END"


# a job list entry (the contract's, as app.job_views.JobViews.summary gives it for one job) built by
# SQLite; the queue's fields are null here and filled in from memory for the pending jobs that wait
SUMMARY_JSON = ("json_object('job_id', job_id, 'type', operation, 'operation', operation, 'status', status, "
                f"'priority', priority, 'progress', {_number_or_zero('progress')}, 'created_at', created_at, "
                "'started_at', started_at, 'dataset_id', dataset_id, 'attempt_count', COALESCE(attempt_count, 0), "
                f"'eta_seconds', CASE WHEN status = 'running' THEN {_number('eta_seconds')} END, "
                "'queue_position', NULL, 'pending_reason', NULL)")
METRIC_COLUMNS = ("ts", *(c for c in SCHEMA["metrics"][0] if c != "ts"))
# a metric row for the API's history (app.api.metrics.history_entry): the byte counts that the
# contract's GB text and percentage are made from in Python, and the other fields as two JSON
# objects; the queue last, null when SQLite does not read it as JSON (its text then follows)
HISTORY_PARTS = (
    "ts", "COALESCE(total_memory_bytes, 0)", "COALESCE(used_memory_bytes, 0)",
    f"json_object('timestamp', timestamp, 'ts', {_number('ts')}, 'n_workers', COALESCE(n_workers, 0))",
    f"json_object('total_cores', COALESCE(total_cores, 0), 'active_tasks', COALESCE(active_tasks, 0), "
    f"'total_memory_bytes', {_integer('total_memory_bytes')}, 'used_memory_bytes', {_integer('used_memory_bytes')})",
    f"json_object('cpu_percent', {_number_or_zero('cpu_percent')}, "
    f"'tasks_per_second', {_number_or_zero('tasks_per_second')}, 'status', status, "
    "'queue', CASE WHEN json_valid(queue) THEN json(queue) END)",
    "CASE WHEN queue IS NOT NULL AND NOT json_valid(queue) THEN queue END",
)


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


MAX_SEARCH_CHARS = 200  # a job list search (q=); longer ones are refused by the views


def match_expression(text: str) -> str | None:
    """FTS5 MATCH text for the words of ``text``: each word a quoted string (quotes doubled) and a
    prefix, all required, so FTS syntax (``"`` ``*`` ``:`` ``(`` ``NEAR`` ``-`` ``^``) is only
    searched as text, never parsed. None when no word has a letter or digit to search for."""
    words = [w for w in text.split() if _WORD.search(w)]
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words) or None


_WORD = re.compile(r"[^\W_]")  # the tokenizer splits on everything else, "_" included


class StoreReads:
    """Mixed into :class:`app.store.Store`: every read that may touch many rows."""

    _pool: ReadPool

    # -- plumbing --------------------------------------------------------
    async def reading(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the read pool: how the event loop reads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool.executor, functools.partial(fn, *args, **kwargs))

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._pool.connection() as conn:
            return conn.execute(sql, list(params)).fetchall()

    def _dicts(self, table: str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            cursor = conn.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [decode(table, dict(zip(names, row))) for row in cursor.fetchall()]

    # -- jobs ------------------------------------------------------------
    def list_jobs(
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
        unknown = set(names) - {"*", *SCHEMA["jobs"][0]}
        if unknown:
            raise ValueError(f"unknown job column(s): {sorted(unknown)}")
        return self._job_page(", ".join(names), functools.partial(self._dicts, "jobs"), status, priority, limit,
                              offset, newest_first, dataset_id, operation, q, created_after, created_before)

    def list_job_summaries(
        self, status: Iterable[str] | None = None, priority: Iterable[str] | None = None,
        limit: int = 50, offset: int = 0, newest_first: bool = True, dataset_id: str | None = None,
        operation: str | None = None, q: str | None = None, created_after: str | None = None,
        created_before: str | None = None,
    ) -> tuple[int, list[tuple[str, str, str]]]:
        """``list_jobs``' page as (job_id, status, the job's list entry as JSON text): the entry is
        built by SQLite (``SUMMARY_JSON``), so a 1000-job page costs no Python object per field."""
        return self._job_page(f"job_id, status, {SUMMARY_JSON}", self._all, status, priority, limit, offset,
                              newest_first, dataset_id, operation, q, created_after, created_before)

    def _job_page(self, select: str, fetch: Callable[[str, list[Any]], list[Any]],
                  status: Iterable[str] | None, priority: Iterable[str] | None, limit: int, offset: int,
                  newest_first: bool, dataset_id: str | None, operation: str | None, q: str | None,
                  created_after: str | None, created_before: str | None) -> tuple[int, list[Any]]:
        given = {"status": status, "priority": priority, "dataset_id": dataset_id, "operation": operation}
        filters = {c: [v] if isinstance(v, str) else list(v) for c, v in given.items() if v is not None}
        filters = {c: v for c, v in filters.items() if v}
        clause, params = _where(filters)
        if q is not None or created_after is not None or created_before is not None:
            return self._search_jobs(select, fetch, clause, params, limit, offset, newest_first, q, created_after,
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

    def _search_jobs(self, select: str, fetch: Callable[[str, list[Any]], list[Any]], clause: str,
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

    def count_jobs(self, by: str = "status", where_status: Iterable[str] | None = None) -> dict[str, int]:
        """Counts of jobs grouped by ``status`` or ``priority`` (from the kept counters)."""
        if by not in ("status", "priority"):
            raise ValueError(f"cannot count jobs by {by!r}")
        clause, params = _where({"status": where_status})
        rows = self._all(f"SELECT {by}, SUM(n) FROM job_counts {clause} GROUP BY {by} HAVING SUM(n) > 0", params)
        return {k: int(n) for k, n in rows}

    def job_counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (status, priority)."""
        rows = self._all("SELECT status, priority, SUM(n) FROM job_counts GROUP BY status, priority")
        return {(s, p): int(n) for s, p, n in rows}

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        """Jobs not in a terminal state, in submission order (for recovery)."""
        return self._dicts("jobs", f"SELECT * FROM jobs WHERE status IN ({', '.join('?' * len(ACTIVE))}) "
                                   "ORDER BY seq", ACTIVE)

    def oldest_pending_created_at(self) -> str | None:
        return self._all("SELECT MIN(created_at) FROM jobs WHERE status = 'pending'")[0][0]

    def completed_since(self, since_iso: str) -> list[tuple[str, str | None, str | None, str | None]]:
        """(job_id, created_at, started_at, completed_at) of jobs completed at or after ``since_iso``."""
        return self._all("SELECT job_id, created_at, started_at, completed_at FROM jobs "
                         "WHERE status = 'completed' AND completed_at >= ?", [since_iso])

    def memory_suspects(self, recent: int, since_iso: str, default_memory_gb: float) -> list[dict[str, Any]]:
        """Failed or completed jobs among the latest ``recent`` submissions, finished since ``since_iso``,
        newest first, that may have lacked memory: failed with an error naming memory (or with text
        LIKE cannot judge), spilled, or peaked above what they declared. A superset of the jobs
        ``app.recommendations.job_memory_rule`` advises on, so only those are decoded."""
        # a range of the seq index; '+status' keeps the planner off the status index
        return self._dicts("jobs", """
            SELECT job_id, status, operation, max_memory_gb, error, resources, completed_at FROM jobs
            WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM jobs) - ? AND +status IN ('failed', 'completed')
              AND completed_at >= ? AND (
                (status = 'failed' AND (error LIKE '%memory%' OR error LIKE '%killed%' OR error LIKE '%oom%'
                                        OR error GLOB '*[^ -~]*' OR error LIKE '%\\u%'))
                OR resources LIKE '%spill%'
                OR CASE WHEN json_valid(resources) THEN json_extract(resources, '$.peak_memory_bytes') END
                   > COALESCE(NULLIF(max_memory_gb, 0), ?) * 1e9)
            ORDER BY seq DESC""", [recent, since_iso, default_memory_gb])

    def recent_samples(self, since: float) -> list[dict[str, Any]]:
        """The stored metric rows since ``since`` (epoch s), oldest first: the fields advice reads."""
        return self._dicts("metrics", "SELECT ts, status, n_workers, active_tasks, total_memory_bytes, "
                                      "used_memory_bytes FROM metrics WHERE ts >= ? ORDER BY ts", [since])

    # -- attempts --------------------------------------------------------
    def attempt_counts(self) -> tuple[dict[str, int], int]:
        """Ended attempts by outcome, and retries (from the kept counters)."""
        rows = dict(self._all("SELECT outcome, n FROM attempt_counts"))
        retries = int(rows.pop("~retries", 0))
        return {k: int(n) for k, n in rows.items() if n}, retries

    # -- datasets and events ---------------------------------------------
    def list_datasets(self, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        total = self._all("SELECT COUNT(*) FROM datasets")[0][0]
        rows = self._dicts("datasets", "SELECT * FROM datasets ORDER BY created_at DESC, dataset_id LIMIT ? OFFSET ?",
                           [limit, offset])
        return total, rows

    def cluster_events(self, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        total = self._all("SELECT COUNT(*) FROM cluster_events")[0][0]
        rows = self._dicts("cluster_events", "SELECT * FROM cluster_events ORDER BY id DESC LIMIT ? OFFSET ?",
                           [limit, offset])
        return total, rows

    # -- metrics ---------------------------------------------------------
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
            inner = f"SELECT MAX(id) FROM metrics WHERE {clause} GROUP BY CAST(ts / ? AS INTEGER)"
            clause = f"id IN ({inner})"
            params = [*params, step]
        total = self._all(f"SELECT COUNT(*) FROM metrics WHERE {clause}", params)[0][0]
        rows = self._dicts(
            "metrics", f"SELECT * FROM (SELECT * FROM metrics WHERE {clause} ORDER BY ts DESC LIMIT ?) ORDER BY ts",
            [*params, limit])
        return total, rows

    def metric_history(self, since: float | None, until: float | None, limit: int,
                       step: float | None) -> tuple[int, list[dict[str, Any]]]:
        """(total, rows oldest first): the newest ``limit`` rows, or one row per ``step`` bucket."""
        total, rows = self._history(METRIC_COLUMNS, since, until, limit, step)
        return total, [decode("metrics", dict(zip(METRIC_COLUMNS, row))) for row in rows]

    def metric_history_entries(self, since: float | None, until: float | None, limit: int,
                               step: float | None) -> tuple[int, list[tuple]]:
        """``metric_history``'s rows as ``HISTORY_PARTS`` (JSON made by SQLite, for the API's history)."""
        return self._history(HISTORY_PARTS, since, until, limit, step)

    def _history(self, select: Iterable[str], since: float | None, until: float | None, limit: int,
                 step: float | None) -> tuple[int, list[tuple]]:
        """Rows of ``select`` (ts first), as ``metric_history`` chooses them."""
        select = ", ".join(select)
        if not step:
            where, params = ["1=1"], []
            for bound, op in ((since, ">="), (until, "<=")):
                if bound is not None:
                    where.append(f"ts {op} ?")
                    params.append(bound)
            clause = " AND ".join(where)
            rows = self._all(f"SELECT {select} FROM (SELECT * FROM metrics WHERE {clause} ORDER BY ts DESC LIMIT ?) "
                             "ORDER BY ts", [*params, limit])
            if len(rows) < limit:  # all of them: nothing to count
                return len(rows), rows
            return self._all(f"SELECT COUNT(*) FROM metrics WHERE {clause}", params)[0][0], rows
        lo = since if since is not None else 0.0
        hi = math.nextafter(until, math.inf) if until is not None else math.inf
        rows = self._pick(select, lo, hi, step, limit)
        total = len(rows)
        if total == limit:  # older buckets were cut off: count them
            total += self._count_buckets(lo, _bucket(rows[0][0], step), step)
        return total, rows

    def _pick(self, select: str, lo: float, hi: float, step: float, limit: int) -> list[tuple]:
        """The newest row of each of the newest ``limit`` buckets in [lo, hi), oldest first."""
        chunks: list[list[tuple]] = []
        left = limit
        while left > 0:
            want = min(CHUNK_BUCKETS, left)
            rows = self._all(DOWNSAMPLE_SQL.format(select=select), [lo, hi, step, want])
            if rows:
                chunks.append(rows)
                left -= len(rows)
                hi = _bucket(rows[0][0], step)
            if len(rows) < want:
                break
        return [row for rows in reversed(chunks) for row in rows]

    def _count_buckets(self, lo: float, hi: float, step: float) -> int:
        """Buckets holding rows in [lo, hi), counted over spans aligned on buckets."""
        first = self._all("SELECT MIN(ts) FROM metrics WHERE ts >= ? AND ts < ?", [lo, hi])[0][0]
        if first is None:
            return 0
        base, span = _bucket(first, step), step * max(1, math.ceil(CHUNK_SPAN_S / step))
        total, k = 0, 0
        while base + k * span < hi:
            total += self._all(BUCKETS_SQL, [max(lo, base + k * span), min(hi, base + (k + 1) * span), step])[0][0]
            k += 1
        return total


# Walks back from the newest row, one index seek per bucket (ts < start of the bucket
# just taken): O(buckets) seeks however many rows, where GROUP BY sorts every row.
DOWNSAMPLE_SQL = """
WITH RECURSIVE pick(ts, n) AS (
  SELECT MAX(ts), 1 FROM metrics WHERE ts >= ?1 AND ts < ?2
  UNION ALL
  SELECT (SELECT MAX(ts) FROM metrics WHERE ts >= ?1 AND ts < CAST(pick.ts / ?3 AS INTEGER) * ?3), n + 1
  FROM pick WHERE pick.ts IS NOT NULL AND n < ?4
)
SELECT {select} FROM metrics WHERE id IN (
  SELECT (SELECT MAX(id) FROM metrics m WHERE m.ts = pick.ts) FROM pick WHERE pick.ts IS NOT NULL
) ORDER BY ts"""
BUCKETS_SQL = "SELECT COUNT(DISTINCT CAST(ts / ?3 AS INTEGER)) FROM metrics WHERE ts >= ?1 AND ts < ?2"
# work done per statement, so each stays short however long the history
CHUNK_BUCKETS = 500
CHUNK_SPAN_S = 6 * 3600.0


def _bucket(ts: float, step: float) -> float:
    return int(ts / step) * step  # as SQLite's CAST(ts / step AS INTEGER) * step
