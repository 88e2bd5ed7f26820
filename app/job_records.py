"""The jobs this process is working on, kept in memory in step with SQLite.

The store writes every job change to SQLite first and then here (write-through), so a
read of a live or recently ended job (the engine reads one on every transition, the
``/wait`` handler on every answer) is a dict lookup instead of a query on the loop.
Values are kept as SQLite gives them back: JSON columns as their decoded text, booleans
as integers. Jobs nobody here wrote (older ones) are read from SQLite, as before.
"""
from __future__ import annotations

import collections
import json
from typing import Any

from .lifecycle import TERMINAL
from .store_schema import JSON_COLUMNS

RECENT = 2048  # ended jobs kept (their waiters and pages read them right after the end)
_JSON = frozenset(JSON_COLUMNS["jobs"])


def stored(column: str, value: Any) -> Any:
    """``value`` as a read of the column returns it (after ``Store._encode`` wrote it)."""
    if value is None:
        return None
    if column in _JSON:
        return json.loads(value) if isinstance(value, str) else json.loads(json.dumps(value, default=str))
    if isinstance(value, bool):
        return int(value)
    return value


class JobRecords:
    """job_id -> the job's row (decoded); live jobs all, ended ones the last ``RECENT``.

    Not thread-safe by itself: the store calls it under its writer lock.
    """

    def __init__(self, recent: int | None = None):
        self._live: dict[str, dict[str, Any]] = {}
        self._ended: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._recent = RECENT if recent is None else recent

    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self._live.get(job_id) or self._ended.get(job_id)
        return dict(row) if row is not None else None

    def inserted(self, row: dict[str, Any]) -> None:
        """A new job, as inserted (every column present)."""
        self._put({k: stored(k, v) for k, v in row.items()})

    def updated(self, job_id: str, values: dict[str, Any]) -> None:
        """Fields written to a job; a job not held here stays unheld (its next read loads it)."""
        row = self._live.get(job_id) or self._ended.get(job_id)
        if row is None:
            return
        row.update({k: stored(k, v) for k, v in values.items()})
        self._put(row)

    def loaded(self, row: dict[str, Any]) -> None:
        """A live job read from SQLite (after a restart): held from now on."""
        if row.get("status") not in TERMINAL:
            self._put(dict(row))

    def _put(self, row: dict[str, Any]) -> None:
        job_id = row["job_id"]
        if row.get("status") in TERMINAL:
            self._live.pop(job_id, None)
            self._ended[job_id] = row
            self._ended.move_to_end(job_id)
            while len(self._ended) > self._recent:
                self._ended.popitem(last=False)
        else:
            self._ended.pop(job_id, None)
            self._live[job_id] = row
