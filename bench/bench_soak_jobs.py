"""Thousands of tiny jobs in bursts, as an automation script sends them: does every job end?

    .venv/bin/python -m bench.bench_soak_jobs [--jobs 5000] [--burst 1000] [--clients 16]

Starts its own server (2 workers x 1 thread, ``MAX_CONCURRENT_JOBS=4``, a 5,000-row
CSV dataset), then sends ``--jobs`` tiny ``aggregate mean`` jobs in bursts of
``--burst``: ``--clients`` concurrent clients each submit a job and await it with
``/jobs/{id}/wait``, again and again. Reports jobs per second, the longest gap with no
job finishing, stuck jobs (not ended ``--stuck-after`` seconds after the last
completion) and the server's RSS before and after. Exits 1 when a job is stuck or
fails.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ServerProcess, pct  # noqa: E402

TERMINAL = {"completed", "failed", "cancelled"}


def write_csv(path: Path, rows: int = 5000) -> None:
    lines = ["gene_id,sample_id,expression_level"]
    lines += [f"g{i % 97},s{i % 13},{(i * 7919) % 1000 / 10}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def job_body(index: int) -> dict[str, Any]:
    """The issue's job: tiny aggregate means, one core and a quarter GB each."""
    return {"operation": "aggregate", "dataset_id": "soak",
            "parameters": {"column": "expression_level", "operation": "mean"},
            "max_cores": 1, "max_memory_gb": 0.25, "cache": False}  # every job computes


async def _one(session: aiohttp.ClientSession, url: str, index: int, ends: list[float],
               outcomes: dict[str, str]) -> None:
    async with session.post(f"{url}/api/processing/jobs/submit", json=job_body(index)) as r:
        body = await r.json()
        if r.status != 201:
            outcomes[f"submit-{index}"] = f"http {r.status}: {body}"
            return
    job_id = body["job_id"]
    outcomes[job_id] = "pending"
    while outcomes[job_id] not in TERMINAL:
        async with session.get(f"{url}/api/processing/jobs/{job_id}/wait", params={"timeout": "30"}) as r:
            outcomes[job_id] = (await r.json())["status"]
    ends.append(time.monotonic())


async def _burst(url: str, first: int, count: int, clients: int, ends: list[float],
                 outcomes: dict[str, str], deadline: float) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first, first + count):
        queue.put_nowait(i)

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while not queue.empty() and time.monotonic() < deadline:
                await _one(session, url, queue.get_nowait(), ends, outcomes)

    await asyncio.gather(*(client() for _ in range(clients)))


def longest_gap(start: float, ends: list[float]) -> float:
    marks = [start, *sorted(ends)]
    return max((b - a for a, b in zip(marks, marks[1:])), default=float("nan"))


def bursts(jobs: int, burst: int, first_burst: int = 0) -> list[int]:
    """Sizes of the bursts that add up to ``jobs``."""
    sizes = [min(first_burst, jobs)] if first_burst else []
    left = jobs - sum(sizes)
    while left > 0:
        sizes.append(min(burst, left))
        left -= sizes[-1]
    return sizes


async def run(url: str, sizes: list[int], clients: int, stuck_after: float) -> dict[str, Any]:
    ends: list[float] = []
    outcomes: dict[str, str] = {}
    start = time.monotonic()
    first = 0
    for size in sizes:
        # a job not done by then is stuck: no tiny job needs minutes, even behind 1,000 others
        deadline = time.monotonic() + stuck_after + size * 0.5
        await asyncio.wait_for(_burst(url, first, size, clients, ends, outcomes, deadline),
                               timeout=stuck_after + size * 0.5 + 60)
        first += size
    took = time.monotonic() - start
    stuck = [j for j, s in outcomes.items() if s not in TERMINAL]
    bad = {j: s for j, s in outcomes.items() if s in {"failed", "cancelled"} or j.startswith("submit-")}
    return {"completed": sum(1 for s in outcomes.values() if s == "completed"), "stuck": stuck, "bad": bad,
            "seconds": took, "jobs_per_s": len(ends) / took if took else 0.0,
            "longest_gap_s": longest_gap(start, ends),
            "gaps_p99_s": pct([b - a for a, b in zip(sorted(ends), sorted(ends)[1:])], 0.99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--first-burst", type=int, default=0,
                        help="a first burst of this size before the others (the issue's 300 then 1,000)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--stuck-after", type=float, default=120.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {"MAX_CONCURRENT_JOBS": "4", "DEMO_DATASET": "0"}
        server = ServerProcess(data, env=env).start()
        server.wait_workers(2)  # the bursts measure the engine, not the workers joining
        try:
            csv = data / "soak.csv"
            write_csv(csv)
            import requests

            r = requests.post(f"{server.url}/api/processing/datasets",
                              json={"source": str(csv), "dataset_id": "soak"}, timeout=60)
            r.raise_for_status()
            proc = psutil.Process(server.proc.pid)
            rss_before = proc.memory_info().rss
            figures = asyncio.run(run(server.url, bursts(args.jobs, args.burst, args.first_burst), args.clients,
                                      args.stuck_after))
            rss_after = proc.memory_info().rss
        finally:
            server.cleanup()
    print(f"jobs: {args.jobs} in bursts of {args.burst} from {args.clients} clients")
    print(f"completed {figures['completed']}, stuck {len(figures['stuck'])}, failed/refused {len(figures['bad'])}")
    print(f"{figures['jobs_per_s']:.1f} jobs/s over {figures['seconds']:.1f} s; longest gap with no job "
          f"finishing {figures['longest_gap_s']:.2f} s (p99 gap {figures['gaps_p99_s'] * 1000:.0f} ms)")
    print(f"server RSS {rss_before / 1e6:.1f} MB -> {rss_after / 1e6:.1f} MB")
    if figures["stuck"]:
        print("stuck:", ", ".join(figures["stuck"][:10]))
    if figures["bad"]:
        print("bad:", list(figures["bad"].items())[:5])
    return 1 if figures["stuck"] or figures["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
