"""Each job's log: timestamped lines the engine writes as the job moves (queued, started,
each attempt's outcome, retries, preemption, cancellation, completion), read by ``since``;
and the completion webhooks still owed (``webhook_deliveries``), so a restart resumes them.

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

    # -- completion webhooks owed (app.webhooks) -------------------------------------------
    def add_delivery(self, job_id: str, url: str) -> None:
        """Owe ``job_id``'s webhook to ``url`` (once: a job ends once)."""
        now = time.time()
        with self._lock, self.db.conn:
            self.db.execute("INSERT OR IGNORE INTO webhook_deliveries (job_id, url, attempts, next_at, created_at) "
                            "VALUES (?, ?, 0, ?, ?)", [job_id, url, now, now])

    def delivery_tried(self, job_id: str, attempts: int, next_at: float) -> None:
        """A failed try: ``attempts`` made so far, the next one due at ``next_at`` (epoch seconds)."""
        with self._lock, self.db.conn:
            self.db.execute("UPDATE webhook_deliveries SET attempts = ?, next_at = ? WHERE job_id = ?",
                            [attempts, next_at, job_id])

    def end_delivery(self, job_id: str) -> None:
        """Delivered, given up or refused: no longer owed."""
        with self._lock, self.db.conn:
            self.db.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", [job_id])

    def delivery(self, job_id: str) -> dict[str, Any] | None:
        """What is owed for ``job_id``: ``url``, ``attempts`` made, ``next_at``; None if nothing."""
        with self._lock:
            row = self.db.execute("SELECT url, attempts, next_at FROM webhook_deliveries WHERE job_id = ?",
                                  [job_id]).fetchone()
        return {"url": row[0], "attempts": int(row[1] or 0), "next_at": float(row[2] or 0)} if row else None

    def pending_deliveries(self, limit: int = 10_000) -> list[str]:
        """Jobs whose webhook is still owed, the oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT job_id FROM webhook_deliveries ORDER BY created_at LIMIT ?",
                                   [limit]).fetchall()
        return [r[0] for r in rows]
