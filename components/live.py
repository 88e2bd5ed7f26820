"""Live data for the pages: one periodic callback per browser session, fed only by
the shared sampler, and read-only helpers that compose service calls.

Nothing here queries Dask. SQLite is read only on a user's action (changing the
monitoring window, opening a job), when a job a table shows changed state, or through
``SharedCache`` (job counts per status at most every 0.4 s, throughput every 10 s) per
process, never per tick and session.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

import panel as pn
import param
from bokeh.models import ColumnDataSource
from panel.io.callbacks import PeriodicCallback

from app.models import PRIORITIES
from app.service import ProcessingService
from app.times import epoch as _epoch
from app.times import eta_seconds

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "cancelled")
WINDOWS = {"Last 5 min": 300, "Last 1 h": 3600, "Last 24 h": 86400}
MAX_POINTS = 720  # points per chart for a long window: one every window/720 seconds

_feeds = {"active": 0}
_feeds_lock = threading.Lock()


def active_feeds() -> int:
    """Live feeds (browser sessions with live views) in this process."""
    return _feeds["active"]


class LiveFeed(param.Parameterized):
    """The one periodic callback of a browser session.

    Each tick it looks at ``service.sampler.latest``; when the sampler has taken a
    new reading since the last tick it hands it to every subscriber, inside one
    ``hold`` so the browser gets a single message.

    The callback is Panel's ``PeriodicCallback`` scheduled on this session's
    document (Bokeh drops it with the document, some seconds after the tab closes)
    and stopped explicitly when the session is destroyed. It is made with
    ``background=True``: a foreground periodic callback toggles Panel's global
    ``state.busy`` on every tick, which re-renders the busy indicator of EVERY open
    session, so N sessions cost N² updates a second.
    """

    service = param.ClassSelector(class_=ProcessingService, doc="The process's service.")
    period_ms = param.Integer(default=1000, bounds=(200, None), doc="How often this session looks for a new sample.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._last_ts: float | None = None
        self._callback = PeriodicCallback(callback=self.tick, period=self.period_ms, background=True, log=False)
        self._callback.start()
        with _feeds_lock:
            _feeds["active"] += 1
        self._context = pn.state.curdoc.session_context if pn.state.curdoc is not None else None
        if self._context is not None:
            pn.state.curdoc.on_session_destroyed(self._destroyed)

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(sample)`` for every new sample."""
        self._subscribers.append(callback)

    def tick(self) -> None:
        """Hand a new sample (if any) to the subscribers, while a browser is connected."""
        if not self._connected():
            return  # a closed tab's session lives on for 15-30 s: nothing may be written to its socket
        snap = self.service.sampler.latest
        if snap.get("ts") == self._last_ts:
            return
        self._last_ts = snap.get("ts")
        with pn.io.hold():
            for callback in list(self._subscribers):
                try:
                    callback(snap)
                except Exception:
                    log.exception("live update failed in %s", getattr(callback, "__qualname__", callback))

    def _connected(self) -> bool:
        session = getattr(self._context, "session", None)
        return self._context is None or (session is not None and session.connection_count > 0)

    def _destroyed(self, _context: Any) -> None:
        self._callback.stop()
        self._subscribers.clear()
        with _feeds_lock:
            _feeds["active"] -= 1
        # formatted here: the log's repeat filter groups lines by their text, and each count is news
        log.info(f"session closed: live feed stopped ({_feeds['active']} still active)")


# -- time series -------------------------------------------------------------------

SERIES = ("t", "mem_used", "mem_total", "cpu", "tasks", "workers", "tps", *(f"q_{p}" for p in PRIORITIES), "queued")


def series_row(sample: dict[str, Any]) -> dict[str, Any]:
    """One chart row from a sampler reading or a stored metrics row."""
    queue = sample.get("queue") or {}
    by_priority = queue.get("queued_by_priority") or {}
    total = sample.get("total_memory_bytes") or 0
    used = sample.get("used_memory_bytes") or 0
    row = {
        "t": sample["ts"] * 1000.0,  # epoch ms: Bokeh shows it as UTC
        "mem_used": used / 1e9, "mem_total": total / 1e9,
        "cpu": float(sample.get("cpu_percent") or 0.0),
        "tasks": int(sample.get("active_tasks") or 0),
        "workers": int(sample.get("n_workers") or 0),
        "tps": float(sample.get("tasks_per_second") or 0.0),
        "queued": int(queue.get("queued") or 0),
    }
    for p in PRIORITIES:
        row[f"q_{p}"] = int(by_priority.get(p, 0))
    return row


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [r[key] for r in rows] for key in SERIES}


class LiveSource:
    """A session's one ColumnDataSource of metrics, shared by all its charts.

    ``window_s`` and ``step_s`` say how much is kept and how often a point is added
    (every sample for short windows, one per ``step_s`` for long ones), so one
    ``stream`` per tick updates every chart on the page.
    """

    def __init__(self, feed: LiveFeed, window_s: float = 300):
        self.feed = feed
        self.source = ColumnDataSource(columns_of([]))
        self.window_s = window_s
        self.step_s = step_for(window_s, feed.service.settings.live_interval)
        self._last_ts = 0.0
        self.load(feed.service.sampler.history(window_s))
        feed.subscribe(self._on_sample)

    @property
    def rollover(self) -> int:
        return int(self.window_s / self.step_s) + 2

    def load(self, samples: list[dict[str, Any]], window_s: float | None = None) -> None:
        """Replace the data (a new window), then keep streaming into it."""
        if window_s is not None:
            self.window_s = window_s
            self.step_s = step_for(window_s, self.feed.service.settings.live_interval)
        rows = [series_row(s) for s in samples if s.get("ts")]
        with pn.io.unlocked():  # may run after an await, outside the document lock
            self.source.data = columns_of(rows[-self.rollover:])
        self._last_ts = samples[-1]["ts"] if samples else 0.0

    def _on_sample(self, snap: dict[str, Any]) -> None:
        if snap["ts"] - self._last_ts < self.step_s * 0.98:
            return
        self._last_ts = snap["ts"]
        self.source.stream({k: [v] for k, v in series_row(snap).items()}, rollover=self.rollover)


def step_for(window_s: float, live_interval: float) -> float:
    return max(live_interval, window_s / MAX_POINTS)


async def metric_history(service: ProcessingService, window_s: float) -> list[dict[str, Any]]:
    """Samples of the last ``window_s``: the sampler's buffer when it covers it, else the store."""
    buffer = service.sampler.buffer
    now = time.time()
    if buffer and buffer[0]["ts"] <= now - window_s + service.settings.live_interval * 2:
        step = step_for(window_s, service.settings.live_interval)
        return _thin(service.sampler.history(window_s), step)
    step = step_for(window_s, service.settings.metrics_interval)
    _, rows = await service.reading(service.metric_history, now - window_s, None, MAX_POINTS * 2, step)
    recent = [s for s in service.sampler.buffer if rows and s["ts"] > rows[-1]["ts"]]
    return [*rows, *_thin(recent, step)]


def _thin(samples: list[dict[str, Any]], step: float) -> list[dict[str, Any]]:
    out, last = [], 0.0
    for s in samples:
        if s["ts"] - last >= step * 0.98:
            out.append(s)
            last = s["ts"]
    return out


# -- jobs, from memory ---------------------------------------------------------------

def running_jobs(service: ProcessingService, memo: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Running jobs with live progress and ETA (the engine's running view and the last sample).

    ``memo`` keeps each job's highest progress so a bar never moves backwards when a
    job submits a second graph.
    """
    now = time.time()
    rows = service.jobs.running_view()
    for row in rows:
        if memo is not None:
            row["progress"] = memo[row["job_id"]] = max(memo.get(row["job_id"], 0.0), row["progress"])
        end = row.pop("expected_end_at")
        row["eta_seconds"] = max(0.0, end - now) if end else eta_seconds(row["elapsed_s"], row["progress"])
    return rows


def running_job(service: ProcessingService, job_id: str, memo: dict[str, float] | None = None) -> dict[str, Any] | None:
    return next((r for r in running_jobs(service, memo) if r["job_id"] == job_id), None)


def queued_jobs(service: ProcessingService) -> list[dict[str, Any]]:
    """Waiting jobs in queue order with the reason each waits."""
    return service.jobs.queue_view()


def queue_counts(snap: dict[str, Any]) -> dict[str, int]:
    """Queued jobs by priority (highest first) from a sampler reading."""
    by_priority = (snap.get("queue") or {}).get("queued_by_priority") or {}
    return {p: int(by_priority.get(p, 0)) for p in reversed(PRIORITIES)}


# -- a small cache shared by every session of the process ------------------------------

class SharedCache:
    """Results of slow read-only calls, shared by all sessions for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._values: dict[Any, tuple[float, Any]] = {}
        self._inflight: dict[Any, asyncio.Future] = {}

    async def get(self, key: Any, service: ProcessingService, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``compute()`` run once on the service's read pool."""
        hit = self._values.get(key)
        if hit and time.time() - hit[0] < self.ttl_s:
            return hit[1]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future = asyncio.ensure_future(service.reading(compute))
        self._inflight[key] = future
        try:
            value = await future
        finally:
            self._inflight.pop(key, None)
        self._values[key] = (time.time(), value)
        return value


_throughput_cache = SharedCache(ttl_s=10.0)
_status_counts_cache = SharedCache(ttl_s=0.4)


async def job_status_counts(service: ProcessingService) -> dict[str, int]:
    """Jobs per status: one small GROUP BY per process at most every 0.4 s, shared by every session.

    Every state change moves a job between statuses, so a change of these counts
    tells a table that a job it may show has changed, even one that was queued,
    ran and ended between two samples (which the in-memory maps never show).
    """
    return await _status_counts_cache.get("status", service, service.jobs.status_counts)


def memory_status(service: ProcessingService, job_id: str) -> str:
    """"running", "pending" or "ended", from the engine's memory (no SQLite)."""
    return service.jobs.phase(job_id)


OUTCOMES = ("completed", "failed", "cancelled")


async def job_throughput(service: ProcessingService, window_s: float, buckets: int = 30) -> dict[str, list[Any]]:
    """Jobs that completed, failed or were cancelled per time bucket over the window (newest 1000 of each)."""
    bucket_s = max(10.0, window_s / buckets)

    def compute() -> dict[str, list[Any]]:
        now = time.time()
        start = now - window_s
        ended = service.jobs.ended_times(list(OUTCOMES))
        out: dict[str, list[Any]] = {
            "t": [(start + (i + 0.5) * bucket_s) * 1000.0 for i in range(buckets)],
            "width": [bucket_s * 1000 * 0.9] * buckets}
        for status in OUTCOMES:
            counts = [0] * buckets
            for text in ended[status]:
                done = _epoch(text)
                if done is not None and done >= start:
                    counts[min(buckets - 1, int((done - start) / bucket_s))] += 1
            out[status] = counts
        out["count"] = out["completed"]
        return out

    return await _throughput_cache.get((window_s, buckets), service, compute)

