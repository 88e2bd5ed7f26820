"""ProcessingService: the one owner of the store, the cluster, the sampler, the
dataset registry and the job engine. Handlers and Panel components call it;
it never speaks HTTP.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, TypeVar

from concurrent.futures import ThreadPoolExecutor

import cloudpickle

from . import progress, task_warnings
from .cluster import RUNNING, ClusterManager
from .datasets import DatasetRegistry
from .jobs import INCIDENT_WINDOW_S, JobEngine
from .lifecycle import Interrupt
from .loop_lag import LoopLag
from .errors import InvalidRequest
from .metrics import Sampler, fmt_gb
from .partition import plan_partitions
from .pipelines import Pipelines
from .settings import Settings
from .store import Store, iso, utcnow
from .webhooks import WebhookSender

log = logging.getLogger(__name__)

LOST_WORKER_WINDOW_S = 60.0  # a worker lost without being retired keeps health degraded this long


def worker_label(w: dict[str, Any]) -> str:
    """``name (address)``, or the address alone for a worker named by its address."""
    return w["address"] if w["name"] == w["address"] else f"{w['name']} ({w['address']})"


T = TypeVar("T")


class ProcessingService:
    """Starts everything once per process; ``stop()`` undoes it in reverse order."""

    def __init__(self, settings: Settings):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.db_path)
        self.cluster = ClusterManager(settings)
        self.sampler = Sampler(
            self.cluster, self.store, settings.live_interval, settings.metrics_interval,
            settings.metrics_retention_hours,
        )
        # file I/O, schema inference and job threads: never the server loop
        self.executor = ThreadPoolExecutor(max_workers=settings.max_concurrent_jobs + 6, thread_name_prefix="processing")
        self.datasets = DatasetRegistry(settings, self.store, self.executor)
        self.jobs = JobEngine(settings=settings, store=self.store, cluster=self.cluster, datasets=self.datasets,
                              sampler=self.sampler, executor=self.executor)
        self.pipelines = Pipelines(self.jobs, self.store)
        self.sampler.extra = self._queue_figures
        self.webhooks = WebhookSender(settings, self.store, self.jobs.status)
        self.started_at = time.time()
        self.loop_lag = LoopLag(settings.loop_lag_interval)
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._store_checked_at: tuple[float, str | None] = (0.0, None)
        self.startup_problems: list[str] = []  # background start-up steps that failed: health reasons

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        """Start the sampler and, with CLUSTER_AUTOSTART, the cluster (in the background)."""
        loop = asyncio.get_running_loop()
        self.sampler.start()
        self.webhooks.start()
        await self.jobs.start()
        self._tasks.append(loop.create_task(self.loop_lag.run()))
        self._tasks.append(loop.create_task(self._demo()))
        if self.settings.autostart:
            self._tasks.append(loop.create_task(self._autostart()))

    async def _demo(self) -> None:
        try:
            await self.datasets.clean_incoming()  # partial uploads of a killed earlier run
        except Exception as exc:
            log.exception("partial uploads of an earlier run could not be removed")
            self.startup_problems.append(f"partial uploads of an earlier run could not be removed: {str(exc)[:300]}")
        try:
            await self.datasets.ensure_demo()
        except Exception as exc:
            log.exception("the demo dataset could not be created")
            detail = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.startup_problems.append(f"the demo dataset could not be created at start: {detail[:300]}")

    async def _autostart(self) -> None:
        try:
            await self.start_cluster()
        except Exception:
            log.exception("cluster autostart failed")

    async def stop(self) -> None:
        """Stop background work, then the cluster, then close the store."""
        if self._stopping:
            return
        self._stopping = True
        for task in reversed(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.jobs.stop()
        await self.webhooks.stop()
        await self.sampler.stop()
        await self.cluster.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # -- cluster ---------------------------------------------------------
    async def start_cluster(self) -> tuple[bool, dict[str, Any]]:
        """Start or attach; returns (started_now, cluster_info)."""
        started = await self.cluster.start()
        if started:
            await self._install_plugin()
            self.store.add_cluster_event("start", {"mode": self.cluster.mode, "scheduler": self.cluster.scheduler_address})
            await self.sampler.sample()
            self.jobs.kick()
        return started, self.cluster_info()

    async def _install_plugin(self) -> None:
        if self.cluster.mode != "local":
            # a scheduler elsewhere cannot import this project: send the module by value
            cloudpickle.register_pickle_by_value(progress)
        try:
            await self.cluster.client.register_plugin(progress.JobProgressPlugin())  # type: ignore[union-attr]
        except Exception:
            log.warning("could not install the progress plugin; progress will be coarse", exc_info=True)
        try:  # warnings raised in jobs' tasks, into their logs
            await task_warnings.WarningLog(self.store.log_job).attach(self.cluster.client, self.cluster.mode != "local")
        except Exception:
            log.warning("could not install the task warnings plugin; task warnings stay on the workers", exc_info=True)

    async def stop_cluster(self) -> bool:
        """Stop the cluster; running jobs go back to the queue (outcome ``cluster_stopped``)."""
        requeued = self.jobs.interrupt_all(Interrupt.CLUSTER_STOPPED) if self.cluster.running else 0
        if requeued:
            log.info("cluster stop: %d running job(s) requeued", requeued)
        stopped = await self.cluster.stop()
        await self.jobs.release_client()
        if stopped:
            self.store.add_cluster_event("stop", {"mode": self.cluster.mode})
        await self.sampler.sample()
        return stopped

    async def scale_cluster(self, n_workers: int | None = None, adaptive: dict[str, int] | None = None) -> dict[str, Any]:
        """Fixed size, or adaptive between minimum and maximum workers."""
        limit = self.settings.max_workers
        if (n_workers is None) == (adaptive is None):
            raise InvalidRequest("give either 'n_workers' or 'adaptive' ({'minimum': a, 'maximum': b})")
        if n_workers is not None:
            if n_workers < self.sampler.latest.get("n_workers", 0):
                self.jobs.scaled_down_at = time.time()  # attempts losing a worker now are requeued
            await self.cluster.scale(n_workers)
            self.store.add_cluster_event("scale", {"n_workers": n_workers})
        else:
            lo, hi = adaptive["minimum"], adaptive["maximum"]  # type: ignore[index]
            if lo > hi:
                raise InvalidRequest(f"adaptive minimum ({lo}) must not exceed maximum ({hi}); allowed 0..{limit}")
            self.jobs.scaled_down_at = time.time()
            await self.cluster.adapt(lo, hi)
            self.store.add_cluster_event("adapt", {"minimum": lo, "maximum": hi})
        self.sampler.poke()
        self.jobs.kick()
        return self.cluster_status()

    def cluster_status(self) -> dict[str, Any]:
        """The contract's status fields from the sampler's last reading, plus numbers."""
        snap = self.sampler.latest
        c = self.cluster
        running = c.state == RUNNING
        return {
            "status": c.state,
            "n_workers": snap["n_workers"] if running else 0,
            "total_cores": snap["total_cores"] if running else 0,
            "total_memory": fmt_gb(snap["total_memory_bytes"] if running else 0),
            "used_memory": fmt_gb(snap["used_memory_bytes"] if running else 0),
            "memory_usage_percent": snap["memory_usage_percent"] if running else 0.0,
            "active_tasks": snap["active_tasks"] if running else 0,
            "total_memory_bytes": snap["total_memory_bytes"] if running else 0,
            "used_memory_bytes": snap["used_memory_bytes"] if running else 0,
            "cpu_percent": snap["cpu_percent"] if running else 0.0,
            "tasks_per_second": snap.get("tasks_per_second", 0.0) if running else 0.0,
            "mode": c.mode,
            "can_scale": c.can_scale,
            "adaptive": c.adaptive,
            "scheduler_address": c.scheduler_address,
            "dashboard_url": c.dashboard_url,
            "started_at": iso(c.started_at),
            "sampled_at": snap["timestamp"],
            "error": c.error,
        }

    def cluster_info(self) -> dict[str, Any]:
        """The contract's ``cluster_info`` block of the start response."""
        s = self.cluster_status()
        keys = ("status", "scheduler_address", "dashboard_url", "n_workers", "total_cores", "total_memory",
                "total_memory_bytes", "mode")
        return {k: s[k] for k in keys}

    def _queue_figures(self) -> dict[str, Any]:
        """Queue figures stored with each metrics sample."""
        running = [r for r, _, _ in self.jobs.running.values()]
        pending: dict[str, int] = {}
        for job in self.jobs.pending.values():
            pending[job.priority] = pending.get(job.priority, 0) + 1
        return {"queued": len(self.jobs.pending), "running": len(running), "queued_by_priority": pending,
                "reserved_cores": sum(r.cores for r in running),
                "reserved_memory_gb": round(sum(r.memory_gb for r in running), 3)}

    # -- datasets --------------------------------------------------------
    async def delete_dataset(self, dataset_id: str) -> dict[str, Any]:
        return await self.datasets.delete(dataset_id, busy=self.jobs.uses_dataset(dataset_id))

    async def partition(self, dataset_id: str, n_partitions: int | None, partition_size_mb: float | None,
                        priority: str = "HIGH") -> tuple[bool, dict[str, Any]]:
        """Partition as a job; (finished, status) once it ends or PARTITION_WAIT_S passes."""
        ds = self.datasets.get(dataset_id)
        # refuse a size that plans too many files now (400), not as a failed job (422)
        plan_partitions(int(ds.get("size_bytes") or 0), n_partitions, partition_size_mb)
        cap = self.jobs.capacity()
        job = await self.jobs.submit({
            "operation": "partition", "dataset_id": dataset_id, "priority": priority,
            "parameters": {k: v for k, v in (("n_partitions", n_partitions), ("partition_size_mb", partition_size_mb)) if v is not None},
            "max_cores": min(self.settings.default_max_cores, max(1, cap.total_cores or 1)),
            # it streams: never ask for more memory than a running cluster has (workers of 512MB)
            "max_memory_gb": min(self.settings.default_max_memory_gb, cap.total_memory_gb) if cap.running else None,
        })
        status = await self.jobs.wait(job["job_id"], self.settings.partition_wait_s)
        return status["status"] in ("completed", "failed", "cancelled"), status

    def workers(self) -> list[dict[str, Any]]:
        return list(self.sampler.latest.get("workers", []))

    async def reading(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a read of many stored rows, on the store's read pool: how handlers read off the loop."""
        return await self.store.reading(fn, *args)

    def metric_history(self, since: float | None, until: float | None, limit: int,
                       step: float | None) -> tuple[int, list[dict[str, Any]]]:
        """Stored metric rows, oldest first, or one per ``step`` bucket; blocking (see ``reading``)."""
        return self.store.metric_history(since, until, limit, step)

    def metric_history_entries(self, since: float | None, until: float | None, limit: int,
                               step: float | None) -> tuple[int, list[tuple]]:
        """``metric_history`` for the API, mostly encoded by SQLite; blocking (see ``reading``)."""
        return self.store.metric_history_entries(since, until, limit, step)

    def cluster_events(self, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        return self.store.cluster_events(limit, offset)

    # -- health ----------------------------------------------------------
    def _check_store(self) -> str | None:
        """Write to the store at most every 5 s: health is polled often."""
        now = time.time()
        if now - self._store_checked_at[0] >= 5:
            try:
                self.store.ping()
                self._store_checked_at = (now, None)
            except Exception as exc:
                self._store_checked_at = (now, str(exc))
        return self._store_checked_at[1]

    def health(self) -> dict[str, Any]:
        """The contract's health shape; ``degraded`` with reasons when something is off."""
        reasons = []
        running = self.cluster.state == RUNNING
        snap = self.sampler.latest
        now = time.time()
        if running and snap.get("n_workers", 0) == 0:
            reasons.append("the cluster has no workers")
        stale_s = self.settings.stale_heartbeat_s
        stale = [f"{worker_label(w)} (last beat {w['heartbeat_age_s']:.0f} s ago)"
                 for w in snap.get("workers", []) if w["heartbeat_age_s"] > stale_s]
        if stale:
            reasons.append(f"worker(s) not heartbeating for over {stale_s:.0f} s: {', '.join(stale)}")
        for lost in self.sampler.lost_since(now - LOST_WORKER_WINDOW_S):
            fate = f"restarted as {lost['replaced_by']}" if lost["replaced_by"] else "not replaced"
            reasons.append(f"worker {worker_label(lost)} was lost {now - lost['lost_at']:.0f} s ago "
                           f"without being retired; {fate}")
        last = self.sampler.last_tick_at
        if last is not None and now - last > max(10.0, 5 * self.settings.live_interval):
            reasons.append(f"metrics sampler stalled ({now - last:.0f} s since last sample)")
        reasons.extend(self.startup_problems)
        reasons += self.jobs.incidents_since(now - INCIDENT_WINDOW_S)
        store_error = self._check_store()
        if store_error:
            reasons.append(f"store not writable: {store_error}")
        return {
            "status": "degraded" if reasons else "healthy",
            "cluster_running": running,
            "timestamp": utcnow(),
            "cluster_status": self.cluster.state,
            "reasons": reasons,
            "uptime_s": round(now - self.started_at, 1),
            **self.loop_lag.figures(),
        }
