"""Server memory per job: the service in this process (as ``panel_serve.sh`` runs it; the
embedded cluster's scheduler is a child process), thousands of tiny jobs, RSS of this
process and of the scheduler's after every ``--every`` jobs.

    .venv/bin/python -m bench.bench_memory [--jobs 2000] [--every 250]

Prints RSS per step and KB per job over the second half of the run (after Dask's own
bounded histories have filled); asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import table

JOB = {"operation": "aggregate", "dataset_id": "demo_expression",
       "parameters": {"column": "expression_level", "operation": "mean"}, "max_cores": 1, "max_memory_gb": 0.5,
       "cache": False}  # every job runs on the cluster: the result cache would answer all but the first


async def run(jobs: int, every: int) -> list[tuple[int, float, float, float]]:
    from app.service import ProcessingService
    from app.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    settings = Settings.from_env({"DASK_N_WORKERS": "2", "DASK_THREADS_PER_WORKER": "1",
                                  "DASK_MEMORY_LIMIT": "1GB", "DASK_DASHBOARD_ADDRESS": "127.0.0.1:0",
                                  "DEMO_ROWS": "20000"}, data_dir=data_dir)
    service = ProcessingService(settings)
    process = psutil.Process()
    steps: list[tuple[int, float, float, float]] = []
    try:
        await service.start()
        while service.cluster.client is None or service.store.get_dataset("demo_expression") is None:
            await asyncio.sleep(0.5)
        started = time.perf_counter()
        for done in range(1, jobs + 1):
            job = await service.jobs.submit(dict(JOB))
            status = await service.jobs.wait(job["job_id"], 120)
            if status["status"] != "completed":
                raise RuntimeError(f"job {job['job_id']} ended {status['status']}: {status.get('error')}")
            if done % every == 0:
                gc.collect()
                steps.append((done, process.memory_info().rss / 1e6, scheduler_rss(process) / 1e6,
                              time.perf_counter() - started))
    finally:
        await service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return steps


def scheduler_rss(process: psutil.Process) -> int:
    """RSS of the embedded scheduler, the child running ``distributed.Scheduler``."""
    for child in process.children(recursive=True):
        try:
            if "distributed.Scheduler" in " ".join(child.cmdline()):
                return child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    steps = asyncio.run(run(args.jobs, args.every))
    print(table([(str(n), f"{rss:.1f}", f"{sched:.1f}", f"{s:.0f}") for n, rss, sched, s in steps],
                ("jobs", "server RSS MB", "scheduler RSS MB", "seconds")))
    half = steps[len(steps) // 2 - 1] if len(steps) >= 2 else steps[0]
    last = steps[-1]
    if last[0] > half[0]:
        print(f"\nsecond half: server {(last[1] - half[1]) * 1000 / (last[0] - half[0]):.1f} KB per job, "
              f"scheduler {(last[2] - half[2]) * 1000 / (last[0] - half[0]):.1f} KB per job "
              f"({half[0]}→{last[0]} jobs, {last[0] / last[3]:.1f} jobs/s)")


if __name__ == "__main__":
    main()
