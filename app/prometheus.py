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

import time
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from .job_timings import DURATION_BUCKETS, HISTOGRAM_WINDOW_S, WAIT_BUCKETS, JobTimings
from .models import PRIORITIES
from .times import epoch

if TYPE_CHECKING:
    from .service import ProcessingService

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
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
        lag = self.service.loop_lag.figures()
        for key, doc in (("loop_lag_ms", "How late the server's event loop last woke up (s)."),
                         ("loop_lag_max_ms", "The largest event-loop lag over the last minute (s).")):
            value = lag[key]
            yield GaugeMetricFamily(f"processing_event_{key.replace('_ms', '')}_seconds", doc,
                                    value=float("nan") if value is None else value / 1000)
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
