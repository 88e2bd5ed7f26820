"""The job engine built from its parts, with no HTTP and no service.

A real store on a temporary data dir, a real dataset registry, a real Dask
``LocalCluster`` (worker processes, attached through ``DASK_SCHEDULER_ADDRESS``) and an
injected clock. Workers are paused with SIGSTOP where a job must still be running when
the test acts on it, and killed with SIGKILL for a retry: no mocks.
"""
from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import dask
import psutil
import pytest
from distributed import Client, LocalCluster

from app.cluster import ClusterManager
from app.datasets import DatasetRegistry
from app.jobs import JobEngine
from app.lifecycle import JobStatus
from app.metrics import Sampler
from app.settings import Settings
from app.store import Store
from tests.helpers import run_async

pytestmark = pytest.mark.slow

MEAN = {"column": "level", "operation": "mean"}


class Clock:
    """Seconds since the epoch that a test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[LocalCluster]:
    # a task on a killed worker fails its attempt at once (KilledWorker), so the engine's
    # own retry is what brings the job to completion
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit="1GiB") as cluster:
        yield cluster


def workers(cluster: LocalCluster) -> list[psutil.Process]:
    """The LocalCluster's worker processes, by the pids they report (this test process may
    have other children: the shared server and its workers are not to be touched)."""
    with Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)  # a nanny restarts a killed worker
        return [psutil.Process(pid) for pid in client.run(os.getpid).values()]


class Parts:
    """What the engine is made of, on one data dir; ``engine()`` builds one more on them."""

    def __init__(self, data_dir: Path, scheduler: str, clock: Clock, **overrides: Any):
        self.settings = Settings(data_dir=data_dir, scheduler_address=scheduler, autostart=False,
                                 demo_dataset=False, job_check_interval=0.5, live_interval=0.2, **overrides)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.store = Store(self.settings.db_path)
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="engine-test")
        self.cluster = ClusterManager(self.settings)
        self.sampler = Sampler(self.cluster, self.store, self.settings.live_interval, 60.0, 1.0)
        self.datasets = DatasetRegistry(self.settings, self.store, self.executor)

    def engine(self) -> JobEngine:
        return JobEngine(settings=self.settings, store=self.store, cluster=self.cluster, datasets=self.datasets,
                         sampler=self.sampler, executor=self.executor, clock=self.clock)


@asynccontextmanager
async def running_engine(parts: Parts) -> AsyncIterator[JobEngine]:
    await parts.cluster.start()
    parts.sampler.start()
    engine = parts.engine()
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await parts.sampler.stop()
        await parts.cluster.stop()


async def register_levels(parts: Parts, rows: int = 2_000) -> None:
    path = parts.settings.data_dir / "levels.csv"
    path.write_text("gene,level\n" + "".join(f"G{i % 50},{i * 0.5}\n" for i in range(rows)))
    await parts.datasets.register(str(path), dataset_id="levels", fmt="csv")


def submission(priority: str = "NORMAL", parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"operation": "aggregate", "dataset_id": "levels", "parameters": parameters or MEAN,
            "priority": priority, "max_cores": 1, "max_memory_gb": 0.25, "cache": False}


async def until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met in {timeout} s")


def paused(procs: list[psutil.Process]) -> Any:
    """SIGSTOP the processes for the ``with`` block, SIGCONT after."""

    class Paused:
        def __enter__(self) -> None:
            for p in procs:
                p.send_signal(signal.SIGSTOP)

        def __exit__(self, *exc: Any) -> None:
            for p in procs:
                p.send_signal(signal.SIGCONT)

    return Paused()


def outcomes(engine: JobEngine, job_id: str) -> list[str]:
    return [a["outcome"] for a in engine.status(job_id)["attempts"]]


def test_dispatch_runs_jobs_in_priority_order(tmp_path: Path, dask_cluster: LocalCluster) -> None:
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, Clock(), max_concurrent_jobs=1)

    async def scenario() -> None:
        async with running_engine(parts) as engine:
            await register_levels(parts)
            with paused(workers(dask_cluster)):  # the first job holds the one slot while the others queue
                first = (await engine.submit(submission("NORMAL")))["job_id"]
                await until(lambda: engine.get(first)["status"] == "running", what="first running")
                low = (await engine.submit(submission("LOW")))["job_id"]
                high = (await engine.submit(submission("HIGH")))["job_id"]
                await until(lambda: engine.status(low)["pending_reason"], what="a wait reason")
                # positions come with a dispatch pass, which may follow the wait reason's (seen under load)
                await until(lambda: engine.status(high)["queue_position"] and engine.status(low)["queue_position"],
                            what="queue positions")
                assert engine.status(high)["queue_position"] == 1 and engine.status(low)["queue_position"] == 2
            done = [await engine.wait(j, 60) for j in (first, high, low)]
            assert [d["status"] for d in done] == ["completed"] * 3, done
            started = {j: engine.status(j)["started_at"] for j in (first, high, low)}
            assert started[first] <= started[high] <= started[low], started
            assert done[0]["result"]["value"] == pytest.approx(sum(i * 0.5 for i in range(2_000)) / 2_000)

    run_async(scenario(), dump_after=100)


def test_clock_ages_a_waiting_job(tmp_path: Path, dask_cluster: LocalCluster) -> None:
    clock = Clock()
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, clock, max_concurrent_jobs=1,
                  queue_aging_s=100.0)

    async def scenario() -> None:
        async with running_engine(parts) as engine:
            await register_levels(parts)
            with paused(workers(dask_cluster)):
                first = (await engine.submit(submission("NORMAL")))["job_id"]
                await until(lambda: engine.get(first)["status"] == "running", what="first running")
                low = (await engine.submit(submission("LOW")))["job_id"]
                clock.now += 250  # two aging steps: LOW -> HIGH
                high = (await engine.submit(submission("HIGH")))["job_id"]
                engine.kick()
                await until(lambda: engine.status(high)["queue_position"] and engine.status(low)["queue_position"],
                            what="positions")
                # aged to HIGH, the older job is ahead of the new HIGH one
                assert engine.status(low)["queue_position"] == 1, engine.status(low)
            for j in (first, low, high):
                assert (await engine.wait(j, 60))["status"] == "completed"

    run_async(scenario(), dump_after=100)


def test_critical_preempts_and_the_victim_runs_again(tmp_path: Path, dask_cluster: LocalCluster) -> None:
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, Clock(), max_concurrent_jobs=1)

    async def scenario() -> None:
        async with running_engine(parts) as engine:
            await register_levels(parts)
            with paused(workers(dask_cluster)):
                victim = (await engine.submit(submission("LOW")))["job_id"]
                await until(lambda: engine.get(victim)["status"] == "running", what="victim running")
                urgent = (await engine.submit(submission("CRITICAL")))["job_id"]
                await until(lambda: engine.get(urgent)["status"] == "running", what="critical running")
                assert engine.get(victim)["status"] == "pending"
            assert (await engine.wait(urgent, 60))["status"] == "completed"
            assert (await engine.wait(victim, 60))["status"] == "completed"
            assert outcomes(engine, victim) == ["preempted", "completed"]

    run_async(scenario(), dump_after=100)


def test_cancel_pending_and_running(tmp_path: Path, dask_cluster: LocalCluster) -> None:
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, Clock(), max_concurrent_jobs=1)

    async def scenario() -> None:
        async with running_engine(parts) as engine:
            await register_levels(parts)
            with paused(workers(dask_cluster)):
                running = (await engine.submit(submission()))["job_id"]
                await until(lambda: engine.get(running)["status"] == "running", what="running")
                queued = (await engine.submit(submission()))["job_id"]
                assert (await engine.cancel(queued))["status"] == "cancelled"
                assert outcomes(engine, queued) == []
                assert (await engine.cancel(running))["status"] == "cancelled"
                assert outcomes(engine, running) == ["cancelled"]
            after = (await engine.submit(submission()))["job_id"]
            assert (await engine.wait(after, 60))["status"] == "completed"
            assert engine.get(running)["status"] == JobStatus.CANCELLED.value

    run_async(scenario(), dump_after=100)


def test_a_killed_worker_is_retried(tmp_path: Path, dask_cluster: LocalCluster) -> None:
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, Clock())

    async def scenario() -> None:
        async with running_engine(parts) as engine:
            await register_levels(parts)
            procs = workers(dask_cluster)
            with paused(procs):
                job = (await engine.submit(submission()))["job_id"]
                await until(lambda: engine.get(job)["status"] == "running", what="running")
                await asyncio.sleep(0.5)  # the task is on a (paused) worker
                for p in procs:
                    p.send_signal(signal.SIGKILL)
            done = await engine.wait(job, 120)
            assert done["status"] == "completed", done
            assert outcomes(engine, job)[0] == "worker_lost" and outcomes(engine, job)[-1] == "completed", outcomes(
                engine, job)

    run_async(scenario(), dump_after=100)


def test_recovery_requeues_what_a_crash_interrupted(tmp_path: Path, dask_cluster: LocalCluster) -> None:
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, Clock())

    async def scenario() -> None:
        await parts.cluster.start()
        parts.sampler.start()
        crashed = parts.engine()
        await crashed.start()
        await register_levels(parts)
        with paused(workers(dask_cluster)):
            job = (await crashed.submit(submission()))["job_id"]
            await until(lambda: crashed.get(job)["status"] == "running", what="running")
            # the engine goes away recording nothing, as in a crash: the attempt stays open
            await crashed.stop()
        again = parts.engine()
        await again.start()
        try:
            assert again.get(job)["status"] in ("pending", "running")
            done = await again.wait(job, 60)
            assert done["status"] == "completed", done
            assert outcomes(again, job) == ["server_restart", "completed"]
        finally:
            await again.stop()
            await parts.sampler.stop()
            await parts.cluster.stop()

    run_async(scenario(), dump_after=100)


def test_lost_in_a_row_counts_only_the_latest_streak() -> None:
    from app.watchdog import lost_in_a_row

    rows = [{"number": n, "outcome": o} for n, o in
            enumerate(["lost_tasks", "worker_lost", "lost_tasks", "lost_tasks", None], start=1)]
    assert lost_in_a_row(rows, 5) == 2
    assert lost_in_a_row(rows, 2) == 1
    assert lost_in_a_row(rows, 3) == 0
    assert lost_in_a_row([], 1) == 0


def test_a_job_no_worker_will_run_fails_after_the_lost_tasks_bound(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker paused for memory from the start (as one whose own imports sit above
    Dask's pause threshold): the watchdog requeues the job as ``lost_tasks`` up to
    JOB_MAX_LOST_TASKS in a row, then fails it naming the paused workers, instead of
    requeueing it forever."""
    from app import watchdog

    monkeypatch.setattr(watchdog, "WORKED_ON_GRACE_S", 2.0)  # the test's patience, not the rule
    pause_at_once = {"distributed.worker.memory.pause": 0.001, "distributed.worker.memory.spill": False,
                     "distributed.worker.memory.target": False, "distributed.worker.memory.terminate": False}
    with dask.config.set(pause_at_once), LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                      host="127.0.0.1", dashboard_address=None,
                                                      memory_limit="1GiB") as cluster:
        parts = Parts(tmp_path / "data", cluster.scheduler_address, Clock(), job_max_lost_tasks=2)

        async def scenario() -> None:
            async with running_engine(parts) as engine:
                engine.watchdog.idle_after_s = 1.0
                await register_levels(parts)
                await until(lambda: any(w.get("status") == "paused"
                                        for w in parts.sampler.latest.get("workers") or []), 30, "a paused worker")
                job = (await engine.submit(submission()))["job_id"]
                done = await engine.wait(job, 90)
                assert done["status"] == "failed", done
                assert done["error"]["type"] == "LostTasks", done["error"]
                message = done["error"]["message"]
                assert "2 attempts in a row" in message and "paused for memory" in message, message
                assert outcomes(engine, job) == ["lost_tasks", "lost_tasks"]

        run_async(scenario(), dump_after=120)


def test_releasing_the_client_closes_it_and_the_next_job_makes_another(tmp_path: Path,
                                                                        dask_cluster: LocalCluster) -> None:
    # the service releases it when the cluster stops: left open, it tried for 20 s to reach
    # the scheduler that was gone and logged "Failed to reconnect" (seen in CI logs)
    parts = Parts(tmp_path / "data", dask_cluster.scheduler_address, Clock())

    async def scenario() -> None:
        async with running_engine(parts) as engine:
            await register_levels(parts)
            first = await engine.wait((await engine.submit(submission("NORMAL")))["job_id"], 60)
            client = engine._client
            assert first["status"] == "completed" and client is not None and client.status == "running"
            await engine.release_client()
            assert client.status == "closed" and engine._client is None
            again = await engine.wait((await engine.submit(submission("NORMAL")))["job_id"], 60)
            assert again["status"] == "completed" and engine._client is not None and engine._client is not client

    run_async(scenario(), dump_after=100)
