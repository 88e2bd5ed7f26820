"""Reads over a long history: every list, filter and sort query at 100k and 1M finished jobs.

    .venv/bin/python bench/bench_history.py [--sizes 100000,1000000] [--repeat 30] [--cache DIR]

Seeds the finished jobs (with one attempt each and two days of metric rows) into a
temporary data dir with sqlite-utils' bulk insert, starts the real server on it and
times each query (median and p99 of ``--repeat`` calls, one at a time). Meanwhile a
thread polls ``/api/processing/health`` every 5 ms: its longest answer is the longest
the event loop was kept from answering (the loop stall, plus one health request).
Each health answer also carries the server's own event-loop lag (a 5 ms timer inside
the server, ``LOOP_LAG_INTERVAL``): its maximum is the stall, free of the client's
scheduling. Then, with nothing else asking, each query again: the server process's CPU time per call
(its idle CPU over the same time taken off), which the machine's load does not inflate as it
does the latencies. A query the server refuses (a filter an older release does not have) shows as ``n/a``.
Prints figures; asserts nothing. ``--cache`` keeps the seeded databases for the next run
(each run works on a copy, since a newer server migrates the file in place).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
import sqlite_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.store import Store, iso  # noqa: E402
from bench.common import ServerProcess, median, pct, table  # noqa: E402

STATUSES = [("completed", 0.80), ("failed", 0.15), ("cancelled", 0.05)]
PRIORITIES = ["LOW", "NORMAL", "HIGH", "CRITICAL"]
OPERATIONS = ["aggregate", "groupby", "describe", "filter", "transform", "rank"]
DATASETS = [f"ds{i:04d}" for i in range(40)]
METRIC_DAYS, METRIC_STEP_S = 2, 5.0
BATCH = 20_000


def _jobs(n: int, now: float, rng: random.Random):
    """``n`` finished jobs, one every few seconds up to ``now``, oldest first (seq 1..n)."""
    statuses, weights = zip(*STATUSES)
    start = now - n * 3.0
    for seq in range(1, n + 1):
        created = start + seq * 3.0
        status = rng.choices(statuses, weights)[0]
        started = created + rng.random() * 20
        ended = started + rng.random() * 120
        yield {
            "job_id": f"{seq:012x}", "seq": seq, "operation": rng.choice(OPERATIONS), "dataset_id": rng.choice(DATASETS),
            "parameters": "{}", "priority": rng.choice(PRIORITIES), "max_memory_gb": 1.0, "max_cores": 1.0,
            "status": status, "progress": 100.0 if status == "completed" else 40.0, "created_at": iso(created),
            "started_at": iso(started), "completed_at": iso(ended), "updated_at": iso(ended), "attempt_count": 1,
            "error": json.dumps({"type": "ValueError", "message": "bad column"}) if status == "failed" else None,
            "result": json.dumps({"value": 1.0}) if status == "completed" else None,
            "resources": "{}", "eta_history": "{}", "cancel_requested": 0, "no_cache": 0, "result_kind": "value",
        }


def _attempts(n: int, now: float):
    start = now - n * 3.0
    for seq in range(1, n + 1):
        yield {"job_id": f"{seq:012x}", "number": 1, "started_at": iso(start + seq * 3.0),
               "ended_at": iso(start + seq * 3.0 + 30), "outcome": "completed" if seq % 7 else "failed"}


def _metrics(now: float):
    ts = now - METRIC_DAYS * 86400
    while ts < now:
        yield {"ts": ts, "timestamp": iso(ts), "status": "running", "n_workers": 2, "total_cores": 2,
               "total_memory_bytes": 2_000_000_000, "used_memory_bytes": 500_000_000, "cpu_percent": 20.0,
               "active_tasks": 0, "tasks_per_second": 0.0, "network_bytes": 0, "queue": "{}"}
        ts += METRIC_STEP_S


def seed(data_dir: Path, n: int) -> float:
    """Write ``n`` finished jobs into ``data_dir``'s store; returns seconds taken."""
    t0 = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    Store(data_dir / "processing.db").close()  # the release's own schema and indexes
    db = sqlite_utils.Database(data_dir / "processing.db")
    db.execute("PRAGMA synchronous=OFF")
    now, rng = time.time(), random.Random(17)
    db["jobs"].insert_all(_jobs(n, now, rng), batch_size=BATCH)
    db["attempts"].insert_all(_attempts(n, now), batch_size=BATCH)
    db["metrics"].insert_all(_metrics(now), batch_size=BATCH)
    db.conn.commit()
    db.close()
    return time.perf_counter() - t0


def queries(n: int) -> list[tuple[str, str]]:
    deep = max(0, n - 100)
    return [
        ("list (newest)", "/api/processing/jobs/list"),
        ("list status=failed", "/api/processing/jobs/list?status=failed"),
        ("list status=pending (none)", "/api/processing/jobs/list?status=pending"),
        ("list status=completed&priority=HIGH", "/api/processing/jobs/list?status=completed&priority=HIGH"),
        ("list status=failed,cancelled", "/api/processing/jobs/list?status=failed,cancelled"),
        ("list priority=LOW", "/api/processing/jobs/list?priority=LOW"),
        ("list dataset_id", f"/api/processing/jobs/list?dataset_id={DATASETS[3]}"),
        ("list operation", "/api/processing/jobs/list?operation=groupby"),
        ("list dataset_id&status=failed", f"/api/processing/jobs/list?dataset_id={DATASETS[3]}&status=failed"),
        ("list sort=oldest", "/api/processing/jobs/list?sort=oldest"),
        ("list status=failed sort=oldest", "/api/processing/jobs/list?status=failed&sort=oldest"),
        ("list limit=1000", "/api/processing/jobs/list?limit=1000"),
        ("list offset=n/2", f"/api/processing/jobs/list?offset={n // 2}"),
        ("list offset=n-100", f"/api/processing/jobs/list?offset={deep}"),
        ("list status=completed offset deep", f"/api/processing/jobs/list?status=completed&offset={int(n * 0.79)}"),
        ("list operation offset deep", f"/api/processing/jobs/list?operation=groupby&offset={n // 7}"),
        ("queue/status", "/api/processing/queue/status"),
        ("datasets", "/api/processing/datasets"),
        ("metrics/cluster window=1h", "/api/processing/metrics/cluster?window=1h"),
        ("metrics/cluster window=24h step=60", "/api/processing/metrics/cluster?window=24h&step=60"),
        ("/metrics (prometheus)", "/metrics"),
        ("recommendations", "/api/processing/recommendations"),
    ]


class HealthPoller(threading.Thread):
    """Polls health every 5 ms; keeps each answer's latency (ms)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.latencies, self.stop = url + "/api/processing/health", [], threading.Event()
        self.errors = 0  # a refused or dropped poll counts with the time it took to fail
        self.lag_at: list[tuple[float, float]] = []  # (perf_counter when answered, the server's own loop lag ms)

    def run(self) -> None:
        s = requests.Session()
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                lag = s.get(self.url, timeout=30).json().get("loop_lag_ms")
                if lag is not None:
                    self.lag_at.append((time.perf_counter(), lag))
            except requests.RequestException:
                self.errors += 1
                s.close()
                s = requests.Session()
            self.latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)
        s.close()


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def cpu_per_call(url: str, pid: int, n: int, repeat: int) -> dict[str, float]:
    """Server CPU ms per call of each query, less the server's idle CPU over the same time."""
    proc, out = psutil.Process(pid), {}
    c0, t0 = cpu_s(proc), time.perf_counter()
    time.sleep(2)
    idle_rate = (cpu_s(proc) - c0) / (time.perf_counter() - t0)
    with requests.Session() as s:
        for name, path in queries(n):
            if s.get(url + path, timeout=120).status_code != 200:
                continue
            c0, t0 = cpu_s(proc), time.perf_counter()
            for _ in range(repeat):
                s.get(url + path, timeout=120)
            busy = cpu_s(proc) - c0 - idle_rate * (time.perf_counter() - t0)
            out[name] = max(0.0, busy) * 1000 / repeat
    return out


def measure(url: str, n: int, repeat: int) -> tuple[list[tuple], "HealthPoller", "HealthPoller"]:
    rows: list[tuple] = []
    idle = HealthPoller(url)
    idle.start()
    time.sleep(3)
    idle.stop.set()
    idle.join()
    busy = HealthPoller(url)
    with requests.Session() as s:
        busy.start()
        for name, path in queries(n):
            first = s.get(url + path, timeout=120)
            if first.status_code != 200:
                rows.append((name, "n/a", "n/a", first.status_code))
                continue
            times = []
            began = time.perf_counter()
            for _ in range(repeat):
                t0 = time.perf_counter()
                s.get(url + path, timeout=120).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            rows.append((name, f"{median(times):.1f}", f"{pct(times, 0.99):.1f}", 200, (began, time.perf_counter())))
        busy.stop.set()
        busy.join()
    return rows, idle, busy


def _lag_within(poller: "HealthPoller", span: tuple[float, float] | None = None) -> str:
    """The largest loop lag the server reported while one query was being repeated."""
    if span is None:
        return "n/a"
    lags = [lag for at, lag in poller.lag_at if span[0] <= at <= span[1] + 0.05]
    return f"{max(lags):.1f}" if lags else "n/a"


def run(n: int, repeat: int, cache: Path | None) -> None:
    template = (cache / f"jobs-{n}") if cache else Path(tempfile.mkdtemp(prefix="bench-history-seed-"))
    if not (template / "processing.db").exists():
        print(f"seeding {n} jobs ... {seed(template, n):.1f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    for f in template.glob("processing.db*"):
        shutil.copy(f, work / f.name)
    srv = ServerProcess(work, {"DEMO_DATASET": "0", "LOOP_LAG_INTERVAL": "0.005"})
    try:
        t0 = time.perf_counter()
        srv.start(wait=True, timeout=600)
        print(f"\n{n} jobs: server healthy after {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()}")
        rows, idle, busy = measure(srv.url, n, repeat)
        cpu = cpu_per_call(srv.url, srv.proc.pid, n, repeat)
    finally:
        srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        if cache is None:
            shutil.rmtree(template, ignore_errors=True)
    rows = [(*row[:4], f"{cpu[row[0]]:.1f}" if row[0] in cpu else "n/a", _lag_within(busy, *row[4:]))
            for row in rows]
    print(table(rows, ("query", "median ms", "p99 ms", "http", "server CPU ms/call", "max loop lag ms")))
    print(f"health while idle: median {median(idle.latencies):.1f} ms, max {max(idle.latencies):.1f} ms "
          f"({len(idle.latencies)} polls)")
    print(f"health during the queries: median {median(busy.latencies):.1f} ms, p99 {pct(busy.latencies, 0.99):.1f} ms, "
          f"max {max(busy.latencies):.1f} ms ({len(busy.latencies)} polls, {busy.errors} failed); "
          f"load average {os.getloadavg()}")
    for name, poller in (("idle", idle), ("during the queries", busy)):
        lags = [lag for _, lag in poller.lag_at]
        if lags:  # an older release does not measure it
            print(f"event-loop lag inside the server, {name}: median {median(lags):.1f} ms, max {max(lags):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=None, help="keep seeded databases here between runs")
    args = parser.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args.repeat, args.cache)


if __name__ == "__main__":
    main()
