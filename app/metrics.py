"""The one metrics sampler: reads the scheduler once per tick into a ring buffer
(for live views and the status endpoint) and every ``METRICS_INTERVAL`` into SQLite.

Browser sessions and API calls read ``latest`` / ``history``; they never query Dask.
The sampler counts its ticks and the requests it sends the scheduler (``queries``), and
times each tick on the loop (``loop_ms``: the steps it runs, not the waits for replies).

It also follows the workers from one reading to the next: a worker that leaves without
being retired (killed, crashed, cut off) is recorded in ``lost`` and, when a worker of the
same name comes back under a new address (a nanny's restart), counted in ``restarts``.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

from .aio import within
from .cluster import ClusterManager
from .progress import read_snapshot
from .store import Store, iso
from .worker_cpu import WorkerCpu

log = logging.getLogger(__name__)

ACTIVE_STATES = ("executing", "ready", "waiting", "constrained", "long-running", "fetch", "flight")
PRUNE_EVERY_S = 600.0


class LoopTimer:
    """Awaits a coroutine and adds up the time its steps run on the loop, waits excluded."""

    __slots__ = ("busy", "coro")

    def __init__(self, coro: Any):
        self.coro = coro
        self.busy = 0.0  # seconds

    def __await__(self) -> Any:
        value: Any = None
        error: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                future = self.coro.throw(error) if error is not None else self.coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                self.busy += time.perf_counter() - started
            value, error = None, None
            try:
                value = yield future
            except GeneratorExit:
                self.coro.close()
                raise
            except BaseException as exc:  # cancellation included: hand it to the coroutine
                error = exc


def fmt_gb(nbytes: float | int | None) -> str:
    """Bytes as the contract writes them: ``"8.00GB"`` (decimal gigabytes)."""
    return f"{(nbytes or 0) / 1e9:.2f}GB"


def worker_rows(identity: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """One row per worker: memory, CPU, tasks and heartbeat age."""
    rows = []
    for address, w in sorted(identity.get("workers", {}).items()):
        m = w.get("metrics", {})
        counts = m.get("task_counts", {}) or {}
        last_seen = w.get("last_seen") or now
        rows.append({
            "address": address,
            "name": str(w.get("name")),
            "nthreads": w.get("nthreads", 0),
            "memory_limit_bytes": w.get("memory_limit") or 0,
            "memory_bytes": m.get("memory", 0),
            "managed_bytes": m.get("managed_bytes", 0),
            "spilled_bytes": (m.get("spilled_bytes") or {}).get("disk", 0),
            "cpu_percent": m.get("cpu", 0.0),
            "executing": counts.get("executing", 0),
            "active_tasks": sum(counts.get(s, 0) for s in ACTIVE_STATES),
            "last_seen": iso(last_seen),
            "heartbeat_age_s": round(max(0.0, now - last_seen), 3),
            "status": w.get("status", "unknown"),
        })
    return rows


def summarize(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Cluster totals from the worker rows."""
    total_mem = sum(w["memory_limit_bytes"] for w in workers)
    used_mem = sum(w["memory_bytes"] for w in workers)
    cores = sum(w["nthreads"] for w in workers)
    return {
        "n_workers": len(workers),
        "total_cores": cores,
        "total_memory_bytes": total_mem,
        "used_memory_bytes": used_mem,
        "memory_usage_percent": round(100.0 * used_mem / total_mem, 2) if total_mem else 0.0,
        "cpu_percent": round(sum(w["cpu_percent"] for w in workers) / cores, 2) if cores else 0.0,
        "active_tasks": sum(w["active_tasks"] for w in workers),
    }


def stopped_snapshot(now: float, state: str) -> dict[str, Any]:
    return {
        "ts": now, "timestamp": iso(now), "status": state, "workers": [],
        **summarize([]), "tasks_per_second": 0.0, "jobs": {}, "done_total": None,
    }


class Sampler:
    """Samples the cluster every ``live_interval`` seconds; one per process."""

    def __init__(self, cluster: ClusterManager, store: Store, live_interval: float,
                 persist_interval: float, retention_hours: float, buffer_size: int = 3600):
        self.cluster = cluster
        self.store = store
        self.live_interval = live_interval
        self.persist_interval = persist_interval
        self.retention_s = retention_hours * 3600
        self.buffer: collections.deque[dict[str, Any]] = collections.deque(maxlen=buffer_size)
        self.latest: dict[str, Any] = stopped_snapshot(time.time(), cluster.state)
        self.last_tick_at: float | None = None
        self.tick_ms: collections.deque[float] = collections.deque(maxlen=300)  # wall time of a tick
        self.loop_ms: collections.deque[float] = collections.deque(maxlen=300)  # its time on the loop
        self.loop_seconds_total = 0.0
        self.ticks = 0
        self.queries = 0  # requests sent to the scheduler; readers of the buffer add none
        self.lost: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.restarts: dict[str, int] = {}  # by worker name, since the cluster started
        self._members: dict[str, dict[str, Any]] = {}  # address -> row, of the last reading
        self.listeners: list[Callable[[dict[str, Any]], Any]] = []
        self.extra: Callable[[], dict[str, Any]] | None = None  # queue figures, set by the service
        self._task: asyncio.Task | None = None
        self._last_persist = 0.0
        self._last_prune = 0.0
        self._prev_done: tuple[float, int] | None = None
        self._cpu = WorkerCpu()
        self._wake = asyncio.Event()
        self._forget: set[str] = set()  # ended jobs whose counts the plugin drops at the next read

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the sampling task; a reading stuck in a Dask call is left behind after 5 s."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await within(task, 5, "stopping the metrics sampler")
            except asyncio.CancelledError:
                if not task.cancelled():  # the caller was cancelled, not the sampler
                    raise

    def poke(self) -> None:
        """Take a sample now (after start, scale or stop) instead of at the next tick."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("metrics sample failed", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), self.live_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def forget_job(self, job_id: str) -> None:
        """An ended job: the progress plugin drops its counts (every attempt's) with the next
        read, one scheduler call for every job that ended since."""
        self._forget.add(job_id)

    async def _read(self, now: float) -> dict[str, Any]:
        if self.cluster.running:
            self.queries += 1
        identity = await self.cluster.identity()
        if identity is None:
            self._prev_done = None
            self._cpu = WorkerCpu()
            self._forget_members()
            return stopped_snapshot(now, self.cluster.state)
        workers = worker_rows(identity, now)
        self.queries += await self._cpu.update(self.cluster.client, workers)
        await self._follow_members(workers, now)
        progress = None
        try:
            self.queries += 1
            forget, self._forget = sorted(self._forget), set()
            progress = await self.cluster.client.run_on_scheduler(  # type: ignore[union-attr]
                read_snapshot, forget=[job + "/" for job in forget])
        except Exception:
            self._forget.update(forget)  # dropped at the next read that works
            log.debug("progress plugin not readable", exc_info=True)
        snap = {"ts": now, "timestamp": iso(now), "status": self.cluster.state, "workers": workers,
                **summarize(workers)}
        snap["jobs"] = (progress or {}).get("jobs", {})
        snap["done_total"] = (progress or {}).get("done_total")
        snap["tasks_per_second"] = self._rate(now, snap["done_total"])
        return snap

    def _forget_members(self) -> None:
        """The cluster stopped: a new one starts with no history (its names are reused)."""
        self._members = {}
        self.restarts.clear()
        self.lost.clear()

    def _wanted(self) -> set[str] | None:
        """Worker names the cluster object still asks for (a SpecCluster's spec), None if unknown."""
        spec = getattr(self.cluster.cluster, "worker_spec", None)
        return None if not isinstance(spec, dict) else {str(name) for name in list(spec)}

    async def _follow_members(self, workers: list[dict[str, Any]], now: float) -> None:
        """Record workers gone since the last reading that were not retired, and their returns.

        A worker the cluster's spec no longer names was scaled away. Otherwise the scheduler's
        event log of that worker says whether it was retired (adaptive, an operator's retire):
        one query per departure, none while the workers stay.
        """
        current = {w["address"]: w for w in workers}
        wanted = self._wanted()
        gone = [w for address, w in self._members.items()
                if address not in current and (wanted is None or w["name"] in wanted)]
        if gone:
            retired = await self._retired([w["address"] for w in gone])
            for w in gone:
                if not retired.get(w["address"]):
                    log.warning("worker %s (%s) left the cluster without being retired", w["name"], w["address"])
                    self.lost.append({"name": w["name"], "address": w["address"], "lost_at": now,
                                      "last_status": w["status"], "replaced_by": None})
        self._members = current
        by_name = {w["name"]: w["address"] for w in workers}
        for lost in self.lost:
            back = by_name.get(lost["name"])
            if lost["replaced_by"] is None and back is not None and back != lost["address"]:
                lost["replaced_by"] = back
                self.restarts[lost["name"]] = self.restarts.get(lost["name"], 0) + 1
        for w in workers:
            w["restarts"] = self.restarts.get(w["name"], 0)

    async def _retired(self, addresses: list[str]) -> dict[str, bool]:
        """Whether the scheduler removed each worker as expected (``retire_workers``)."""

        async def one(address: str) -> bool:
            self.queries += 1
            events = await self.cluster.client.scheduler.events(topic=address)  # type: ignore[union-attr]
            removals = [msg for _, msg in events if isinstance(msg, dict) and msg.get("action") == "remove-worker"]
            return bool(removals and removals[-1].get("expected"))

        answers = await asyncio.gather(*(one(a) for a in addresses), return_exceptions=True)
        return {a: answer is True for a, answer in zip(addresses, answers)}  # unknown counts as lost

    def lost_since(self, since: float) -> list[dict[str, Any]]:
        """Workers lost (not retired) since ``since``, oldest first."""
        return [dict(lost) for lost in self.lost if lost["lost_at"] >= since]

    def _rate(self, now: float, done: int | None) -> float:
        if done is None:
            return 0.0
        prev, self._prev_done = self._prev_done, (now, done)
        if prev is None or now <= prev[0] or done < prev[1]:
            return 0.0
        return round((done - prev[1]) / (now - prev[0]), 2)

    async def sample(self) -> dict[str, Any]:
        """Read the scheduler once; update the buffer, listeners and (maybe) the store."""
        started = time.perf_counter()
        now = time.time()
        read = LoopTimer(self._read(now))
        try:
            snap = await asyncio.wait_for(read, 5)
        except (asyncio.TimeoutError, OSError) as exc:
            snap = stopped_snapshot(now, self.cluster.state)
            snap["error"] = f"scheduler did not answer: {type(exc).__name__}"
        on_loop = time.perf_counter()  # from here on, no awaits: all of it is loop time
        if self.extra is not None:
            snap["queue"] = self.extra()
        self.latest = snap
        self.buffer.append(snap)
        self.last_tick_at = now
        for listener in list(self.listeners):
            try:
                listener(snap)
            except Exception:
                log.warning("metrics listener failed", exc_info=True)
        if now - self._last_persist >= self.persist_interval:
            self._last_persist = now
            self._persist(snap)
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            asyncio.get_running_loop().run_in_executor(None, self.store.prune_metrics, now - self.retention_s)
        self._count_tick(snap, started, read.busy + time.perf_counter() - on_loop)
        return snap

    def _count_tick(self, snap: dict[str, Any], started: float, busy: float) -> None:
        """Keep the tick's figures, and add them to its sample (read by ``/metrics/live``)."""
        wall_ms = (time.perf_counter() - started) * 1000
        self.ticks += 1
        self.tick_ms.append(wall_ms)
        self.loop_ms.append(busy * 1000)
        self.loop_seconds_total += busy
        snap["sampler"] = {"tick": self.ticks, "queries": self.queries, "loop_ms": round(busy * 1000, 3),
                           "wall_ms": round(wall_ms, 3)}

    def _persist(self, snap: dict[str, Any]) -> None:
        keys = ("ts", "timestamp", "status", "n_workers", "total_cores", "total_memory_bytes",
                "used_memory_bytes", "cpu_percent", "active_tasks", "tasks_per_second")
        row = {k: snap.get(k) for k in keys}
        row["queue"] = snap.get("queue")
        self.store.insert_metric(row)

    def history(self, seconds: float) -> list[dict[str, Any]]:
        """Samples of the last ``seconds`` from the in-memory buffer.

        Pages are built off the loop while it appends samples: ``list()`` copies the deque in
        one step (C, under the GIL), where iterating it could meet an append ("deque mutated
        during iteration", seen in a full test run)."""
        cutoff = time.time() - seconds
        return [s for s in list(self.buffer) if s["ts"] >= cutoff]
