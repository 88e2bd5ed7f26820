"""Prometheus exposition of the cluster, the jobs and their attempts.

A custom Collector on a private registry (never the global one), rendered with
``generate_latest``. Cluster figures come from the sampler's last reading (no Dask
query), with the sampler's own counters: ticks, scheduler queries, and a summary of
each tick's event-loop time (quantiles over the last 300 ticks). Job figures come from SQLite:

* ``processing_jobs{status,priority}``: a GROUP BY, every combination present.
* ``processing_job_queue_wait_seconds`` (created → started) and
  ``processing_job_duration_seconds`` (started → completed): histograms over the
  jobs completed in the last ``HISTOGRAM_WINDOW_S`` (24 h), computed in one SQL
  pass. A sliding window, so counts may fall: read them with
  ``histogram_quantile`` over the raw buckets, not with ``rate()``.
* attempt counters over all time: by outcome, retries (a failed, lost or
  restart-interrupted attempt followed by another attempt of the same job), and
  preemptions.

``render`` does blocking reads: a few ms for thousands of jobs, ~0.3 s of thread
time for 100 000 jobs (indexes that would cut it are listed in the monitoring
notes). Call it in an executor; the reads take the store's lock per range of
``CHUNK_ROWS`` rows, so the loop never waits long for the store meanwhile.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from .models import PRIORITIES
from .recommendations import ts_of
from .store import iso

if TYPE_CHECKING:
    from .service import ProcessingService
    from .store import Store

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
HISTOGRAM_WINDOW_S = 24 * 3600.0
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
RETRIED_OUTCOMES = ("failed", "worker_lost", "server_restart")
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


# -- reads ----------------------------------------------------
# Each runs over rowid ranges of CHUNK_ROWS, one short store read per range: the
# loop, which calls the store too, never waits long however big the tables grow.

CHUNK_ROWS = 5_000  # ~2-5 ms of SQLite work per hold


def _chunked(store: "Store", table: str, sql: str, params: list[Any] | None = None) -> Iterator[tuple]:
    """Rows of ``sql`` (whose last two parameters bound ``rowid``) over every range of ``table``."""
    lo, hi = store.read(f"SELECT MIN(rowid), MAX(rowid) FROM {table}")[0]
    if lo is None:
        return
    for start in range(lo, hi + 1, CHUNK_ROWS):
        yield from store.read(sql, [*(params or []), start, start + CHUNK_ROWS - 1])


COUNTS_SQL = "SELECT status, priority, COUNT(*) FROM jobs WHERE rowid BETWEEN ? AND ? GROUP BY status, priority"


def job_counts(store: "Store") -> dict[tuple[str, str], int]:
    """Jobs by (status, priority)."""
    counts: dict[tuple[str, str], int] = {}
    for status, priority, n in _chunked(store, "jobs", COUNTS_SQL):
        counts[(status, priority)] = counts.get((status, priority), 0) + n
    return counts


def oldest_pending_created_at(store: "Store") -> str | None:
    # the status index makes this one seek
    return store.read("SELECT MIN(created_at) FROM jobs WHERE status = 'pending'")[0][0]


def _bucket_sql(expr: str, bounds: tuple[float, ...]) -> str:
    return ", ".join([f"COUNT({expr})", f"TOTAL({expr})", *(f"TOTAL({expr} <= {b!r})" for b in bounds)])


# MATERIALIZED: computed once per row, not once per bucket expression
TIMING_SQL = f"""
WITH t AS MATERIALIZED (
  SELECT MAX(0.0, (julianday(started_at) - julianday(created_at)) * 86400.0) AS wait,
         MAX(0.0, (julianday(completed_at) - julianday(started_at)) * 86400.0) AS run
  FROM jobs WHERE status = 'completed' AND completed_at >= ? AND started_at IS NOT NULL
    AND created_at IS NOT NULL AND rowid BETWEEN ? AND ?
) SELECT {_bucket_sql('wait', WAIT_BUCKETS)}, {_bucket_sql('run', DURATION_BUCKETS)} FROM t"""


def job_timings(store: "Store", since: float) -> dict[str, tuple[int, float, list[int]]]:
    """(count, sum, cumulative bucket counts) of queue wait and run time, for jobs completed since ``since``."""
    sums = [0.0] * (2 * (2 + len(WAIT_BUCKETS)))
    for row in _chunked(store, "jobs", TIMING_SQL, [iso(since)]):
        sums = [a + (b or 0) for a, b in zip(sums, row)]
    n_wait = 2 + len(WAIT_BUCKETS)
    wait, run = sums[:n_wait], sums[n_wait:]
    return {
        "wait": (int(wait[0]), wait[1], [int(c) for c in wait[2:]]),
        "run": (int(run[0]), run[1], [int(c) for c in run[2:]]),
    }


# a retry: an attempt that failed, was lost or was cut by a restart, and a later attempt followed
ATTEMPTS_SQL = f"""
SELECT outcome, COUNT(*), TOTAL(CASE WHEN outcome IN ({', '.join(repr(o) for o in RETRIED_OUTCOMES)})
  THEN EXISTS (SELECT 1 FROM attempts b WHERE b.job_id = a.job_id AND b.number > a.number) ELSE 0 END)
FROM attempts a WHERE outcome IS NOT NULL AND rowid BETWEEN ? AND ? GROUP BY outcome"""


def attempt_counts(store: "Store") -> tuple[dict[str, int], int]:
    """Ended attempts by outcome, and retries."""
    by_outcome: dict[str, int] = {}
    retries = 0
    for outcome, n, retried in _chunked(store, "attempts", ATTEMPTS_SQL):
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        retries += int(retried)
    return by_outcome, retries


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
        counts = job_counts(store)
        family = GaugeMetricFamily("processing_jobs", "Jobs by status and priority.", labels=["status", "priority"])
        for status in JOB_STATUSES:
            for priority in PRIORITIES:
                family.add_metric([status, priority], counts.get((status, priority), 0))
        yield family
        oldest = oldest_pending_created_at(store)
        age = max(0.0, time.time() - (ts_of(oldest) or 0.0)) if oldest else 0.0
        yield GaugeMetricFamily("processing_jobs_oldest_pending_age_seconds",
                                "Seconds the oldest pending job has waited since submission (0 when none).",
                                value=round(age, 3))
        timings = job_timings(store, time.time() - self.histogram_window_s)
        window = f"jobs completed in the last {self.histogram_window_s / 3600:g} h (sliding window)"
        yield _histogram("processing_job_queue_wait_seconds", f"Submission to start, of {window}.",
                         WAIT_BUCKETS, timings["wait"])
        yield _histogram("processing_job_duration_seconds", f"Start to completion, of {window}.",
                         DURATION_BUCKETS, timings["run"])

    def _attempts(self) -> Iterator[Metric]:
        by_outcome, retries = attempt_counts(self.service.store)
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
