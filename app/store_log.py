"""Each job's log: timestamped lines the engine writes as the job moves (queued, started,
each attempt's outcome, retries, preemption, cancellation, completion), read by ``since``.

A mixin of :class:`app.store.Store`: writes take the store's one writer lock; reads go
to its read pool.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from .times import iso

LOG_LEVELS = ("info", "warning", "error")
MAX_MESSAGE_CHARS = 4000  # one line; a traceback keeps its last lines (where it raised)
MAX_LINES_PER_JOB = 2000  # past this a job's log keeps its first lines and says how many were dropped


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else "…" + message[-(MAX_MESSAGE_CHARS - 1):]


class JobLogStore:
    """``log_job`` appends one line; ``job_log`` reads lines after ``since``."""

    db: Any
    _lock: threading.RLock
    _pool: Any  # the store's ReadPool

    def log_job(self, job_id: str, event: str, message: str, level: str = "info",
                details: dict[str, Any] | None = None, ts: float | None = None) -> None:
        now = time.time() if ts is None else ts
        with self._lock, self.db.conn:
            count = self.db.execute("SELECT COUNT(*) FROM job_log WHERE job_id = ?", [job_id]).fetchone()[0]
            if count >= MAX_LINES_PER_JOB:
                return
            self.db.execute(
                "INSERT INTO job_log (job_id, ts, timestamp, level, event, message, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [job_id, now, iso(now), level if level in LOG_LEVELS else "info", event, _clip(message),
                 json.dumps(details, default=str) if details else None])

    def job_log(self, job_id: str, since: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """Lines of ``job_id`` with an id above ``since``, oldest first; blocking, on a read
        connection (handlers call it through the read pool)."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, timestamp, level, event, message, details FROM job_log WHERE job_id = ? AND id > ? "
                "ORDER BY id LIMIT ?", [job_id, since, limit]).fetchall()
        return [{"id": r[0], "timestamp": r[1], "level": r[2], "event": r[3], "message": r[4],
                 "details": json.loads(r[5]) if r[5] else {}} for r in rows]
