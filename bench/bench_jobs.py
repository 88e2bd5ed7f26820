"""Job engine figures, all in one run against one server and its cluster:

- submit→running latency when idle (server-side: started_at − created_at)
- tiny job submit→completed latency through HTTP (submit, then /wait)
- tiny jobs per second through the API (N submitted at once): each request on a new
  connection, and through the project's client (kept-alive connections)
- a 10M-row `aggregate mean` through HTTP vs the same Dask computation run directly
  on the same cluster (alternating, medians, ratio)
- ETA error at 25 % and 50 % of long jobs: |predicted end − actual end| / job runtime

    .venv/bin/python -m bench.bench_jobs [--rows 10000000] [--runs 5] [--tiny 200]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import dask.dataframe as dd
from distributed import Client

from app.demo import generate_expression, write_dataset
from bench.common import ServerProcess, median, table

MEAN = {"column": "expression_level", "operation": "mean"}


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def submit(srv: ServerProcess, dataset: str, params: dict, **extra) -> str:
    r = srv.post("/api/processing/jobs/submit", {"operation": "aggregate", "dataset_id": dataset,
                                                  "parameters": params, "max_cores": 1, "max_memory_gb": 0.5, "cache": False, **extra})
    r.raise_for_status()
    return r.json()["job_id"]


def wait(srv: ServerProcess, job: str) -> dict:
    while True:
        s = srv.get(f"/api/processing/jobs/{job}/wait?timeout=300", timeout=320).json()
        if s["status"] in ("completed", "failed", "cancelled"):
            return s


def tiny_latencies(srv: ServerProcess, n: int) -> tuple[list[float], list[float]]:
    to_running, to_done = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        job = submit(srv, "demo_expression", MEAN)
        s = wait(srv, job)
        to_done.append(time.perf_counter() - t0)
        to_running.append(ts(s["started_at"]) - ts(s["created_at"]))
    return to_running, to_done


def throughput(srv: ServerProcess, n: int) -> float:
    """Jobs/s, ``n`` submitted at once from 16 threads, each request on a new connection."""
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(lambda _: submit(srv, "demo_expression", MEAN), range(n)))
    for job in jobs:
        wait(srv, job)
    return n / (time.perf_counter() - t0)


def throughput_kept_alive(srv: ServerProcess, n: int) -> float:
    """The same through the project's client (``processing_client``): one kept-alive
    connection per thread, as a script using it submits."""
    from processing_client import Client as ApiClient

    local = threading.local()

    def api() -> ApiClient:
        if not hasattr(local, "api"):
            local.api = ApiClient(srv.url)
        return local.api

    body = {"operation": "aggregate", "dataset_id": "demo_expression", "parameters": MEAN, "max_cores": 1,
            "max_memory_gb": 0.5, "cache": False}
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(lambda _: api().request("POST", "/jobs/submit", json=body)["job_id"], range(n)))
        list(pool.map(lambda job: api().job(job).wait(progress=False, poll=30), jobs))
    return n / (time.perf_counter() - t0)


def big_dataset(srv: ServerProcess, rows: int) -> tuple[str, list[str]]:
    out = Path(srv.data_dir) / "inputs" / "big"
    write_dataset(generate_expression(rows), out, "parquet", n_files=16)
    r = srv.post("/api/processing/datasets", {"source": str(out), "dataset_id": "big"})
    r.raise_for_status()
    return "big", sorted(str(p) for p in out.glob("*.parquet"))


def http_vs_direct(srv: ServerProcess, files: list[str], runs: int) -> tuple[list[float], list[float]]:
    address = srv.get("/api/processing/cluster/status").json()["scheduler_address"]
    client = Client(address, set_as_default=False)
    http, direct = [], []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            wait(srv, submit(srv, "big", MEAN, max_cores=2))
            http.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.compute(dd.read_parquet(files, columns=["expression_level"]).expression_level.mean()).result()
            direct.append(time.perf_counter() - t0)
    finally:
        client.close()
    return http, direct


def eta_errors(srv: ServerProcess, runs: int) -> dict[str, list[float]]:
    errors: dict[str, list[float]] = {"25": [], "50": []}
    for _ in range(runs):
        s = wait(srv, submit(srv, "big", {"column": "expression_level", "operation": "nunique",
                                          "group_by": "sample_id"}, max_cores=2, max_memory_gb=2))
        if s["status"] != "completed":
            print(f"ETA job ended {s['status']}: {s.get('error')}", flush=True)
            continue
        history, start = s["eta_history"], ts(s["started_at"])
        actual = ts(history["actual_end"])
        for mark in errors:
            if mark in history:
                errors[mark].append(abs(ts(history[mark]["predicted_end"]) - actual) / (actual - start))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tiny", type=int, default=200)
    args = parser.parse_args()
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-jobs-")),
                        {"DEMO_ROWS": "20000", "LIVE_INTERVAL": "0.5", "MAX_CONCURRENT_JOBS": "4",
                         "DASK_MEMORY_LIMIT": "2GB"})
    srv.start()
    try:
        srv.wait_workers(2)
        srv.wait_for(lambda: srv.get("/api/processing/datasets/demo_expression?preview_rows=0").status_code == 200)
        to_running, to_done = tiny_latencies(srv, 30)
        jobs_per_s = throughput(srv, args.tiny)
        kept_per_s = throughput_kept_alive(srv, args.tiny)
        print(f"tiny: submit->running {1000 * median(to_running):.1f} ms, submit->completed "
              f"{1000 * median(to_done):.0f} ms, {jobs_per_s:.1f} jobs/s, {kept_per_s:.1f} kept alive", flush=True)
        _, files = big_dataset(srv, args.rows)
        http, direct = http_vs_direct(srv, files, args.runs)
        errors = eta_errors(srv, max(5, args.runs))  # 2 jobs gave medians 0.09-0.12 run to run
    finally:
        srv.cleanup()
    rows = [
        ("submit → running, idle (ms, median of 30)", f"{1000 * median(to_running):.1f}"),
        ("tiny job submit → completed (ms, median of 30)", f"{1000 * median(to_done):.0f}"),
        (f"tiny jobs/s ({args.tiny} at once, a connection per request)", f"{jobs_per_s:.1f}"),
        (f"tiny jobs/s ({args.tiny} at once, processing_client, kept alive)", f"{kept_per_s:.1f}"),
        (f"{args.rows:,}-row mean via HTTP (s, median of {args.runs})", f"{median(http):.3f}"),
        ("same computation direct on the cluster (s, median)", f"{median(direct):.3f}"),
        ("ratio HTTP / direct", f"{median(http) / median(direct):.2f}"),
        ("ETA error at 25 % (share of runtime, median)", f"{median(errors['25']):.2f}" if errors["25"] else "n/a"),
        ("ETA error at 50 % (share of runtime, median)", f"{median(errors['50']):.2f}" if errors["50"] else "n/a"),
    ]
    print(table(rows, ("figure", "value")))


if __name__ == "__main__":
    main()
