"""The Dask cluster the service computes on: an embedded ``LocalCluster``, an
existing scheduler (``DASK_SCHEDULER_ADDRESS``) or one made by ``CLUSTER_FACTORY``.

Slow steps (starting or closing a cluster, scaling it) run in an executor thread;
the client is asynchronous on the server loop.
"""
from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import time
from typing import Any, Callable

import dask.config
from distributed import Client

from .errors import ClusterNotRunning, Conflict, InvalidRequest
from .settings import Settings

log = logging.getLogger(__name__)

# Dask keeps the last N messages of every batched connection (each job's graph among them)
# and the last N events per topic; its defaults (1000 and 100000) are sized for debugging
# one session, not for a server running jobs for weeks with its scheduler in-process.
# update_defaults: a value the user configured (YAML or DASK_* variables) still wins.
dask.config.update_defaults({
    "distributed": {"admin": {"low-level-log-length": 50}, "scheduler": {"events-log-length": 5000}},
})

STOPPED, STARTING, RUNNING, STOPPING, ERROR = "stopped", "starting", "running", "stopping", "error"


def load_factory(path: str) -> Callable[..., Any]:
    """Import ``module:function`` (or ``module.function``)."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise InvalidRequest(f"CLUSTER_FACTORY must look like 'module:function', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)


class ClusterManager:
    """Starts, scales and stops the cluster; owns the asynchronous Dask client."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.state = STOPPED
        self.client: Client | None = None
        self.cluster: Any = None
        self.started_at: float | None = None
        self.error: str | None = None
        self.adaptive: dict[str, int] | None = None
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> str:
        if self.settings.scheduler_address:
            return "external"
        return "factory" if self.settings.cluster_factory else "local"

    @property
    def running(self) -> bool:
        return self.state == RUNNING and self.client is not None

    @property
    def can_scale(self) -> bool:
        return self.mode != "external"

    @property
    def dashboard_url(self) -> str | None:
        if self.cluster is not None and getattr(self.cluster, "dashboard_link", None):
            return self.cluster.dashboard_link
        if self.client is not None:
            try:
                return self.client.dashboard_link
            except Exception:  # the scheduler may run no dashboard
                return None
        return None

    @property
    def scheduler_address(self) -> str | None:
        if self.client is not None and self.client.scheduler is not None:
            return self.client.scheduler.address
        return None

    def _make_local(self) -> Any:
        from distributed import LocalCluster

        s = self.settings
        return LocalCluster(
            n_workers=s.n_workers,
            threads_per_worker=s.threads_per_worker,
            memory_limit=s.memory_limit,
            dashboard_address=s.dashboard_address or None,
            host="127.0.0.1",
            processes=True,
            local_directory=str(s.data_dir / "dask-scratch"),
            # computations yield the cores to the API and the dashboard of this machine
            preload=["app.worker_setup"] if s.worker_nice else None,
            env={"PROCESSING_WORKER_NICE": str(s.worker_nice)},
        )

    def _make_cluster(self) -> Any:
        if self.mode == "factory":
            return load_factory(self.settings.cluster_factory)()
        return self._make_local()

    async def start(self) -> bool:
        """Start or attach; returns False when it was already running."""
        async with self._lock:
            if self.running:
                return False
            self.state, self.error = STARTING, None
            loop = asyncio.get_running_loop()
            try:
                if self.mode == "external":
                    address = self.settings.scheduler_address
                else:
                    self.cluster = await loop.run_in_executor(None, self._make_cluster)
                    address = self.cluster.scheduler_address
                # a factory's cluster may speak TLS (Dask Gateway always does): use its security
                security = getattr(self.cluster, "security", None)
                self.client = await Client(address, asynchronous=True, timeout="20s", security=security)
            except Exception as exc:
                self.state, self.error = ERROR, f"{type(exc).__name__}: {exc}"
                log.exception("cluster start failed")
                await self._close(loop)
                raise Conflict(f"the cluster could not start: {self.error}", code="cluster_start_failed") from None
            self.state, self.started_at = RUNNING, time.time()
            return True

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:
                log.warning("closing the Dask client failed", exc_info=True)
        if cluster is not None:
            try:
                await asyncio.wait_for(loop.run_in_executor(None, cluster.close), 15)
            except Exception:
                log.warning("closing the Dask cluster failed", exc_info=True)

    async def stop(self) -> bool:
        """Stop the embedded cluster (or detach from an external one)."""
        async with self._lock:
            if self.state == STOPPED and self.client is None:
                return False
            self.state = STOPPING
            await self._close(asyncio.get_running_loop())
            self.state, self.started_at, self.adaptive = STOPPED, None, None
            return True

    def _require_scalable(self) -> None:
        if not self.running:
            raise ClusterNotRunning("the cluster is not running; start it first")
        if not self.can_scale:
            raise Conflict(
                "this service is attached to an external scheduler "
                f"({self.settings.scheduler_address}); scale it with the tool that runs it",
                code="cluster_not_scalable",
            )

    async def scale(self, n_workers: int) -> None:
        """Set a fixed number of workers (turns adaptive scaling off)."""
        async with self._lock:
            self._require_scalable()
            loop = asyncio.get_running_loop()
            if self.adaptive is not None:
                await loop.run_in_executor(None, self._stop_adaptive)
            await loop.run_in_executor(None, self.cluster.scale, n_workers)
            self.adaptive = None

    def _stop_adaptive(self) -> None:
        adaptive = getattr(self.cluster, "_adaptive", None)
        if adaptive is not None:
            adaptive.stop()

    async def adapt(self, minimum: int, maximum: int) -> None:
        """Let Dask scale between ``minimum`` and ``maximum`` workers."""
        async with self._lock:
            self._require_scalable()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: self.cluster.adapt(minimum=minimum, maximum=maximum))
            self.adaptive = {"minimum": minimum, "maximum": maximum}

    async def identity(self) -> dict[str, Any] | None:
        """The scheduler's view of itself and every worker (~ms), or None when down."""
        if not self.running:
            return None
        return await self.client.scheduler.identity(n_workers=-1)  # type: ignore[union-attr]

    async def tidy_scheduler(self) -> int:
        """Drop the embedded scheduler's records of long-finished computations (see ``prune_spans``).

        Only for the embedded LocalCluster, whose scheduler lives in this process; a
        scheduler someone else runs is theirs to manage. Returns the spans dropped.
        """
        if self.mode != "local" or not self.running:
            return 0
        try:
            return await self.client.run_on_scheduler(prune_spans, keep=KEEP_SPANS)  # type: ignore[union-attr]
        except Exception:  # a scheduler busy or going away: try again next time
            log.debug("could not prune the scheduler's spans", exc_info=True)
            return 0


KEEP_SPANS = 200  # finished computations the Dask dashboard still shows
TOMBSTONE_S = 3600.0  # a dropped span's empty stand-in stays this long
SPAN_MIN_AGE_S = 60.0  # a span is kept this long after its last task ended (heartbeats: every few s)


def _finished_before(root: Any, moment: float) -> bool:
    groups = list(root.traverse_groups())
    return bool(groups) and all(group.done for group in groups) and max(group.stop for group in groups) < moment


def prune_spans(dask_scheduler: Any = None, keep: int = KEEP_SPANS, min_age_s: float = SPAN_MIN_AGE_S) -> int:
    """Forget finished root spans beyond the newest ``keep``; returns how many were dropped.

    Dask's scheduler keeps every span, and with it the TaskGroups of every computation,
    for as long as it runs (dask/distributed#7977). Each job is one computation, so an
    embedded scheduler grew this process by tens of KB per job. A root span is dropped
    only when the scheduler has already forgotten every task group under it, no live
    group refers to it, and its last task ended over ``min_age_s`` ago. Workers report a
    span's metrics by id with their heartbeats, and a report about an unknown span makes
    the scheduler fail the heartbeat and the worker close; so a dropped span's id keeps an
    empty stand-in (no groups, no code) for ``TOMBSTONE_S`` before it is removed. Works on
    the scheduler's own loop (``run_on_scheduler``); if the extension's layout is not the
    one this was written for (distributed 2026.x), it changes nothing.
    """
    from distributed.spans import Span

    ext = getattr(dask_scheduler, "extensions", {}).get("spans")
    needed = ("root_spans", "spans", "spans_search_by_name", "spans_search_by_tag")
    if ext is None or not all(hasattr(ext, name) for name in needed) or keep < 0:
        return 0
    live = dask_scheduler.task_groups
    # the scheduler looks a live group's span up by id (observe_tasks): never drop one of those
    referenced = {group.span_id for group in live.values() if group.span_id}
    old = ext.root_spans[:-keep] if keep else list(ext.root_spans)
    moment = time.time() - min_age_s
    drop = [root for root in old
            if not any(span.id in referenced for span in root.traverse_spans())
            and _finished_before(root, moment)
            and all(live.get(group.name) is not group for group in root.traverse_groups())]
    now = time.time()
    graves = ext.__dict__.setdefault("_processing_graves", collections.deque())
    while graves and graves[0][0] < now - TOMBSTONE_S:  # long past any report about them
        for key in graves.popleft()[1]:
            ext.spans.pop(key, None)
    if not drop:
        return 0
    gone = {id(span) for root in drop for span in root.traverse_spans()}
    ext.root_spans = [span for span in ext.root_spans if id(span) not in gone]
    buried = [key for key, span in ext.spans.items() if id(span) in gone]
    for key in buried:  # an empty stand-in, so a late worker report finds its span id
        ext.spans[key] = Span(ext.spans[key].name, key, None, dask_scheduler.total_nthreads_history)
    graves.append((now, buried))
    for index in (ext.spans_search_by_name, ext.spans_search_by_tag):
        for key in list(index):
            kept = [span for span in index[key] if id(span) not in gone]
            if kept:
                index[key] = kept
            else:
                del index[key]
    return len(drop)
