"""Queue-wait and run-time histograms of the jobs that completed in a sliding window, kept
as jobs end: what ``/metrics`` exports and the Monitoring page charts."""
from __future__ import annotations

import heapq
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .times import epoch, iso

if TYPE_CHECKING:
    from .store import Store

HISTOGRAM_WINDOW_S = 24 * 3600.0
SEED_OVERLAP_S = 60.0  # completion times are stamped before they are written: look back this far
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)


class JobTimings:
    """Queue-wait and run-time histograms of the jobs completed in a sliding window.

    Kept per minute of completion with running totals: a job's end adds to its minute,
    a minute that leaves the window is subtracted once, and a scrape reads the totals.
    Seeded once from the store, then told of every job that ends (``Store.watch_job_ends``).
    """

    def __init__(self, window_s: float = HISTOGRAM_WINDOW_S):
        self.window_s = window_s
        self._lock = threading.Lock()  # job ends arrive from the loop and from executor threads
        self._minutes: dict[int, list[float]] = {}
        self._order: list[int] = []  # a heap of the minutes held
        self._total = [0.0] * (2 * _WIDTH)

    @classmethod
    def of(cls, store: "Store", window_s: float = HISTOGRAM_WINDOW_S) -> "JobTimings":
        """The store's timings: made, seeded and subscribed on first use (a read of the window's jobs)."""
        with _TIMINGS_LOCK:
            timings = _TIMINGS.get(store)
            if timings is None or timings.window_s != window_s:
                timings = _TIMINGS[store] = cls(window_s)
                timings._seed(store)
            return timings

    def _seed(self, store: "Store") -> None:
        # The window's jobs are read and counted first, beside the writer; under its lock only
        # what completed meanwhile (by job id) is added as the listener is subscribed: writers
        # wait for that short read, never for the whole window.
        started = time.time()
        seen = set()
        for job_id, *times in store.completed_since(iso(started - self.window_s)):  # type: ignore[arg-type]
            seen.add(job_id)
            self.add_times(*times)

        def late() -> None:
            for job_id, *times in store.completed_since(iso(started - SEED_OVERLAP_S)):  # type: ignore[arg-type]
                if job_id not in seen:
                    self.add_times(*times)

        store.watch_job_ends(self.add, late)

    def add(self, job: dict[str, Any]) -> None:
        """A job that ended: counted when it completed."""
        if job.get("status") == "completed":
            self.add_times(job.get("created_at"), job.get("started_at"), job.get("completed_at"))

    def add_times(self, created_at: str | None, started_at: str | None, completed_at: str | None) -> None:
        created, started, completed = epoch(created_at), epoch(started_at), epoch(completed_at)
        if created is None or started is None or completed is None:
            return
        row = _observation(max(0.0, started - created), max(0.0, completed - started))
        minute = int(completed // 60)
        with self._lock:
            if minute * 60 + 60 <= time.time() - self.window_s:
                return
            held = self._minutes.get(minute)
            if held is None:
                held = self._minutes[minute] = [0.0] * len(row)
                heapq.heappush(self._order, minute)
            for i, v in enumerate(row):
                held[i] += v
                self._total[i] += v

    def snapshot(self, now: float) -> dict[str, tuple[int, float, list[int]]]:
        """(count, sum, cumulative bucket counts) of queue wait and run time in the window ending ``now``."""
        with self._lock:
            while self._order and self._order[0] * 60 + 60 <= now - self.window_s:
                for i, v in enumerate(self._minutes.pop(heapq.heappop(self._order))):
                    self._total[i] -= v
            total = list(self._total)
        wait, run = total[:_WIDTH], total[_WIDTH:]
        return {"wait": (round(wait[0]), wait[1], [round(c) for c in wait[2:]]),
                "run": (round(run[0]), run[1], [round(c) for c in run[2:]])}


_WIDTH = 2 + len(WAIT_BUCKETS)  # count, sum, then one count per bucket
_TIMINGS: "weakref.WeakKeyDictionary[Store, JobTimings]" = weakref.WeakKeyDictionary()
_TIMINGS_LOCK = threading.Lock()


def _observation(wait: float, run: float) -> list[float]:
    return [1.0, wait, *(float(wait <= b) for b in WAIT_BUCKETS), 1.0, run, *(float(run <= b) for b in DURATION_BUCKETS)]


