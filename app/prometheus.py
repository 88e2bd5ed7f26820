"""Prometheus exposition of the cluster, the jobs and their attempts.

A custom Collector on a private registry (never the global one), rendered with
``generate_latest``. Cluster figures come from the sampler's last reading (no Dask
query), with the sampler's own counters: ticks, scheduler queries, and a summary of
each tick's event-loop time (quantiles over the last 300 ticks). Job figures never
scan the jobs: they come from counters the store keeps as it writes, and from
histograms kept here as jobs end.

* ``processing_jobs{status,priority}``: every combination (the store's job counters).
* ``processing_job_queue_wait_seconds`` (created → started) and
  ``processing_job_duration_seconds`` (started → completed): histograms over the
  jobs completed in the last ``HISTOGRAM_WINDOW_S`` (24 h), to the minute
  (:class:`JobTimings`). A sliding window, so counts may fall: read them with
  ``histogram_quantile`` over the raw buckets, not with ``rate()``.
* attempt counters over all time: by outcome, retries (a failed, lost or
  restart-interrupted attempt followed by another attempt of the same job), and
  preemptions (the store's attempt counters).

``render`` reads a few rows of the store: call it on the store's read pool
(``store.reading``). The first call also reads the window's completed jobs once.
"""
from __future__ import annotations

import heapq
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from .models import PRIORITIES
from .times import epoch, iso

if TYPE_CHECKING:
    from .service import ProcessingService
    from .store import Store

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
HISTOGRAM_WINDOW_S = 24 * 3600.0
SEED_OVERLAP_S = 60.0  # completion times are stamped before they are written: look back this far
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TICK_QUANTILES = (0.5, 0.95, 0.99)

CLUSTER_GAUGES = (  # (metric, sampler key, help)
    ("processing_cluster_workers", "n_workers", "Workers connected to the scheduler."),
    ("processing_cluster_cores", "total_cores", "Worker threads in the cluster."),
    ("processing_cluster_memory_total_bytes", "total_memory_bytes", "Sum of the workers' memory limits."),
    ("processing_cluster_memory_used_bytes", "used_memory_bytes", "Memory the workers use."),
    ("processing_cluster_cpu_percent", "cpu_percent", "Mean CPU use per core, in percent."),
    ("processing_cluster_active_tasks", "active_tasks", "Tasks executing, ready or waiting on the workers."),
    ("processing_cluster_tasks_per_second", "tasks_per_second", "Tasks finished per second (last sample)."),
)
WORKER_GAUGES = (
    ("processing_worker_memory_used_bytes", "memory_bytes", "Memory one worker uses."),
    ("processing_worker_spilled_bytes", "spilled_bytes", "Bytes one worker spilled to disk."),
    ("processing_worker_cpu_percent", "cpu_percent", "CPU use of one worker, in percent."),
)


# -- job timings, kept as jobs end ----------------------------------------------------

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


# -- the collector ----------------------------------------------------------------------

def _histogram(name: str, doc: str, bounds: tuple[float, ...], data: tuple[int, float, list[int]]) -> Metric:
    count, total, cumulative = data
    buckets = [(repr(b), c) for b, c in zip(bounds, cumulative)] + [("+Inf", count)]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class ServiceCollector(Collector):
    """Reads the service's sampler and store on every scrape."""

    def __init__(self, service: "ProcessingService", histogram_window_s: float = HISTOGRAM_WINDOW_S):
        self.service = service
        self.histogram_window_s = histogram_window_s

    def describe(self) -> list[Metric]:
        return []  # registering must not run a scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._cluster()
        yield from self._jobs()
        yield from self._attempts()

    def _cluster(self) -> Iterator[Metric]:
        snap = self.service.sampler.latest
        yield GaugeMetricFamily("processing_cluster_up", "1 when the cluster is running, else 0.",
                                value=1.0 if self.service.cluster.state == "running" else 0.0)
        for name, key, doc in CLUSTER_GAUGES:
            yield GaugeMetricFamily(name, doc, value=float(snap.get(key) or 0))
        for name, key, doc in WORKER_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["worker"])
            for w in snap.get("workers", []):
                family.add_metric([w["address"]], float(w.get(key) or 0))
            yield family
        last = self.service.sampler.last_tick_at
        yield GaugeMetricFamily("processing_sampler_last_sample_age_seconds",
                                "Seconds since the metrics sampler last read the scheduler.",
                                value=round(time.time() - last, 3) if last else float("nan"))
        yield from self._sampler()

    def _sampler(self) -> Iterator[Metric]:
        sampler = self.service.sampler
        yield CounterMetricFamily("processing_sampler_ticks", "Samples the metrics sampler has taken.",
                                  value=sampler.ticks)
        yield CounterMetricFamily("processing_sampler_queries",
                                  "Requests the sampler sent the scheduler (live views and status reads add none).",
                                  value=sampler.queries)
        recent = sorted(sampler.loop_ms)  # copied in C: no tick can interleave
        summary = Metric("processing_sampler_tick_seconds",
                         f"Event-loop time of one sampler tick (its steps, not its waits); quantiles over the "
                         f"last {len(recent)} ticks.", "summary")
        for q in TICK_QUANTILES:
            value = recent[min(len(recent) - 1, int(q * len(recent)))] / 1000 if recent else float("nan")
            summary.add_sample("processing_sampler_tick_seconds", {"quantile": repr(q)}, value)
        summary.add_sample("processing_sampler_tick_seconds_count", {}, sampler.ticks)
        summary.add_sample("processing_sampler_tick_seconds_sum", {}, sampler.loop_seconds_total)
        yield summary

    def _jobs(self) -> Iterator[Metric]:
        store = self.service.store
        counts = store.job_counts()
        family = GaugeMetricFamily("processing_jobs", "Jobs by status and priority.", labels=["status", "priority"])
        for status in JOB_STATUSES:
            for priority in PRIORITIES:
                family.add_metric([status, priority], counts.get((status, priority), 0))
        yield family
        oldest = store.oldest_pending_created_at()
        age = max(0.0, time.time() - (epoch(oldest) or 0.0)) if oldest else 0.0
        yield GaugeMetricFamily("processing_jobs_oldest_pending_age_seconds",
                                "Seconds the oldest pending job has waited since submission (0 when none).",
                                value=round(age, 3))
        timings = JobTimings.of(store, self.histogram_window_s).snapshot(time.time())
        window = f"jobs completed in the last {self.histogram_window_s / 3600:g} h (sliding window)"
        yield _histogram("processing_job_queue_wait_seconds", f"Submission to start, of {window}.",
                         WAIT_BUCKETS, timings["wait"])
        yield _histogram("processing_job_duration_seconds", f"Start to completion, of {window}.",
                         DURATION_BUCKETS, timings["run"])

    def _attempts(self) -> Iterator[Metric]:
        by_outcome, retries = self.service.store.attempt_counts()
        family = CounterMetricFamily("processing_job_attempts", "Ended job attempts by outcome.", labels=["outcome"])
        for outcome, n in sorted(by_outcome.items()):
            family.add_metric([outcome], n)
        yield family
        yield CounterMetricFamily("processing_job_retries", "Attempts that failed or were lost and were retried.",
                                  value=retries)
        yield CounterMetricFamily("processing_job_preemptions", "Attempts requeued to make room for a CRITICAL job.",
                                  value=by_outcome.get("preempted", 0))


def render(service: "ProcessingService") -> bytes:
    """The text exposition of one scrape, from a private registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    return generate_latest(registry)
