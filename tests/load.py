"""A burst of concurrent job submissions with a health probe beside it: shared by the
security test (a small burst) and ``bench/bench_burst.py`` (1,000 at once)."""
from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import requests


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


SUBMISSION = {"operation": "aggregate", "dataset_id": "demo_expression",
              "parameters": {"column": "expression_level", "operation": "mean"}, "max_cores": 1, "max_memory_gb": 0.5,
              "cache": False}
HEALTH_EVERY_S = 0.02


def _health_loop(url: str, stop: Any, out: Any) -> None:
    """In a child process, so the client's own busy loop does not delay the probe."""
    latencies, failures = [], []
    with requests.Session() as session:  # one kept-alive connection, like a monitoring agent
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status = session.get(url + "/api/processing/health", timeout=10).status_code
                if status != 200:
                    failures.append(f"health {status}")
            except requests.RequestException as exc:
                failures.append(f"health {type(exc).__name__}")
            latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(HEALTH_EVERY_S)
    out.send((latencies, failures))


async def _submit(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
    try:
        async with client.post(url + "/api/processing/jobs/submit", json=SUBMISSION, headers=headers) as r:
            body = await r.json()
            if r.status == 429 and not r.headers.get("Retry-After"):
                return -429, "429 without Retry-After"
            return r.status, body
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


async def burst(url: str, token: str | None, n: int = 1000, concurrency: int = 1000) -> dict[str, Any]:
    """Fire ``n`` submissions (``concurrency`` connections) while polling health; the tally."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ctx = multiprocessing.get_context("spawn")
    stop, (receive, send) = ctx.Event(), ctx.Pipe(duplex=False)
    prober = ctx.Process(target=_health_loop, args=(url, stop, send), daemon=True)
    prober.start()
    await asyncio.sleep(1.0)  # a baseline before the burst
    # aiohttp: an httpx client with 1,000 connections spent more CPU than the server it measured
    connector = aiohttp.TCPConnector(limit=concurrency)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        answers = await asyncio.gather(*(_submit(client, url, headers) for _ in range(n)))
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    stop.set()
    latencies, failures = receive.recv()
    prober.join(10)
    statuses = Counter(code for code, _ in answers)
    return {
        "n": n, "elapsed_s": round(elapsed, 2), "statuses": dict(statuses),
        "job_ids": [body["job_id"] for code, body in answers if code == 201 and isinstance(body, dict)],
        "errors": sum(1 for code, _ in answers if code not in (201, 429)) + len(failures),
        "error_samples": [body for code, body in answers if code not in (201, 429)][:5] + failures[:5],
        "health_checks": len(latencies), "health_max_ms": round(max(latencies), 1),
        "health_p50_ms": round(median(latencies), 1), "health_p99_ms": round(pct(latencies, 0.99), 1),
    }


def count_rows(db_path: Path, job_ids: list[str]) -> tuple[int, int]:
    """(rows for these job ids, all rows) in the server's jobs table."""
    with sqlite3.connect(db_path) as db:
        total = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        found = 0
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start:start + 500]
            found += db.execute(f"SELECT COUNT(*) FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})",
                                chunk).fetchone()[0]
    return found, total
