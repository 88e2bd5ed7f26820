"""The store's reads (the jobs' are in app.job_repository): named queries over read-only
connections (app.store_pool), run off the loop.

SQLite in WAL mode lets readers run beside the one writer, so reads take no lock: each
borrows a read-only connection of its own. Handlers ``await store.reading(fn, ...)``,
which runs ``fn`` on the store's small read pool, never on the event loop.
"""
from __future__ import annotations

import asyncio
import functools
import math
from typing import Any, Callable, Iterable, TypeVar

from .job_model import SUMMARY_COLUMNS  # noqa: F401 - read from here by bench/bench_search.py
from .store_pool import ReadPool, decode
from .store_schema import SCHEMA

T = TypeVar("T")


def json_number(column: str) -> str:
    """SQL for a REAL column as a JSON number: 17 significant digits, so it reads back as the same
    float; null where the API's JSON says null (infinities; SQLite holds NaN as NULL)."""
    return f"CASE WHEN abs({column}) <= 1.7976931348623157e308 THEN json(printf('%!.17g', {column})) END"


def json_number_or_zero(column: str) -> str:
    """``json_number``, with 0.0 for NULL and zero (Python's ``value or 0.0``)."""
    return f"CASE WHEN {column} IS NULL OR {column} = 0 THEN json('0.0') ELSE {json_number(column)} END"


def _integer(column: str) -> str:
    """An INTEGER column as JSON, 0 for NULL (a REAL that SQLite kept as REAL: as ``json_number``)."""
    return f"CASE WHEN typeof({column}) = 'real' THEN {json_number(column)} ELSE COALESCE({column}, 0) END"


def fetch_all(pool: ReadPool, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    """The rows of ``sql`` on one of the pool's read-only connections."""
    with pool.connection() as conn:
        return conn.execute(sql, list(params)).fetchall()


def fetch_dicts(pool: ReadPool, table: str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """``fetch_all``'s rows as dicts, with ``table``'s JSON columns decoded."""
    with pool.connection() as conn:
        cursor = conn.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        return [decode(table, dict(zip(names, row))) for row in cursor.fetchall()]


METRIC_COLUMNS = ("ts", *(c for c in SCHEMA["metrics"][0] if c != "ts"))
# a metric row for the API's history (app.api.metrics.history_entry): the byte counts that the
# contract's GB text and percentage are made from in Python, and the other fields as two JSON
# objects; the queue last, null when SQLite does not read it as JSON (its text then follows)
HISTORY_PARTS = (
    "ts", "COALESCE(total_memory_bytes, 0)", "COALESCE(used_memory_bytes, 0)",
    f"json_object('timestamp', timestamp, 'ts', {json_number('ts')}, 'n_workers', COALESCE(n_workers, 0))",
    f"json_object('total_cores', COALESCE(total_cores, 0), 'active_tasks', COALESCE(active_tasks, 0), "
    f"'total_memory_bytes', {_integer('total_memory_bytes')}, 'used_memory_bytes', {_integer('used_memory_bytes')})",
    f"json_object('cpu_percent', {json_number_or_zero('cpu_percent')}, "
    f"'tasks_per_second', {json_number_or_zero('tasks_per_second')}, 'status', status, "
    "'queue', CASE WHEN json_valid(queue) THEN json(queue) END)",
    "CASE WHEN queue IS NOT NULL AND NOT json_valid(queue) THEN queue END",
)


class StoreReads:
    """Mixed into :class:`app.store.Store`: every read that may touch many rows."""

    _pool: ReadPool

    # -- plumbing --------------------------------------------------------
    async def reading(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the read pool: how the event loop reads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool.executor, functools.partial(fn, *args, **kwargs))

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return fetch_all(self._pool, sql, params)

    def _dicts(self, table: str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return fetch_dicts(self._pool, table, sql, params)

    # -- metrics ---------------------------------------------------------
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
