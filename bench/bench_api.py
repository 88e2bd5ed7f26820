"""Foundation figures: start to healthy, cluster start, status endpoint load, shutdown.

    .venv/bin/python bench/bench_api.py [--runs 3] [--duration 10]

Prints medians; asserts nothing. Uses wrk (Debian package) for the load test.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from bench.common import ServerProcess, median, table


def start_to_healthy(env: dict) -> tuple[float, float, ServerProcess]:
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-api-")), env)
    t0 = time.perf_counter()
    srv.start(wait=True)
    healthy = time.perf_counter() - t0
    srv.wait_workers(int(env.get("DASK_N_WORKERS", 2)))
    return healthy, time.perf_counter() - t0, srv


def wrk(url: str, duration: int, connections: int = 50) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    env = {"DEMO_DATASET": "0", "LIVE_INTERVAL": "1", "DASK_N_WORKERS": "2"}
    healthy, ready, starts, stops = [], [], [], []
    rps, p99 = [], []
    for run in range(args.runs):
        h, r, srv = start_to_healthy(env)
        healthy.append(h)
        ready.append(r)
        try:
            srv.post("/api/processing/cluster/stop")
            t0 = time.perf_counter()
            requests.post(srv.url + "/api/processing/cluster/start", timeout=120).raise_for_status()
            starts.append(time.perf_counter() - t0)
            if shutil.which("wrk"):
                a, b = wrk(srv.url + "/api/processing/cluster/status", args.duration)
                rps.append(a)
                p99.append(b)
            stops.append(srv.terminate(30))
        finally:
            srv.cleanup()
    rows = [
        ("process start → /health 200 (s)", f"{median(healthy):.2f}"),
        ("process start → workers ready (s)", f"{median(ready):.2f}"),
        ("POST /cluster/start (s)", f"{median(starts):.2f}"),
        ("GET /cluster/status req/s @50 conn", f"{median(rps):.0f}" if rps else "wrk missing"),
        ("GET /cluster/status p99 (ms)", f"{median(p99):.1f}" if p99 else "wrk missing"),
        ("SIGTERM → exit (s)", f"{median(stops):.2f}"),
    ]
    print(table(rows, (f"median of {args.runs} runs", "value")))


if __name__ == "__main__":
    main()
