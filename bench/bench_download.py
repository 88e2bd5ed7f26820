"""Server memory while a large result is downloaded (``GET /jobs/{id}/result.csv`` and
``.parquet``): a filter that keeps every row of a generated dataset writes a result
dataset; the bench downloads it while sampling the server process's RSS every 0.1 s.

    .venv/bin/python -m bench.bench_download [--rows 10000000]

Prints the bytes received, the time, and the server's RSS before and at its peak during
each download; asserts nothing.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from app.demo import generate_expression, write_dataset
from bench.common import ServerProcess, table


def download(url: str, rss_of: psutil.Process) -> tuple[int, float, float, float]:
    """(bytes, seconds, RSS MB before, peak RSS MB during)."""
    before = rss_of.memory_info().rss / 1e6
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_of.memory_info().rss / 1e6)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received, t0 = 0, time.perf_counter()
    with requests.get(url, stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            received += len(chunk)
    took = time.perf_counter() - t0
    done.set()
    sampler.join()
    return received, took, before, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-download-")), {"DEMO_DATASET": "0"})
    srv.start()
    try:
        srv.wait_workers(2)
        out = Path(srv.data_dir) / "inputs" / "big"
        write_dataset(generate_expression(args.rows), out, "parquet", n_files=8)
        srv.post("/api/processing/datasets", {"source": str(out), "dataset_id": "big"}).raise_for_status()
        r = srv.post("/api/processing/jobs/submit", {
            "operation": "filter", "dataset_id": "big", "max_cores": 2, "max_memory_gb": 2, "cache": False,
            "parameters": {"conditions": [{"column": "expression_level", "op": ">", "value": -1e9}]}})
        r.raise_for_status()
        job = r.json()["job_id"]
        while (s := srv.get(f"/api/processing/jobs/{job}/wait?timeout=300", timeout=320).json())["status"] not in (
                "completed", "failed", "cancelled"):
            pass
        assert s["status"] == "completed", s
        server = psutil.Process(srv.proc.pid)
        rows = []
        for fmt in ("csv", "parquet"):
            received, took, before, peak = download(f"{srv.url}/api/processing/jobs/{job}/result.{fmt}", server)
            rows.append((fmt, f"{received / 1e6:,.0f}", f"{took:.1f}", f"{before:.0f}", f"{peak:.0f}",
                         f"{peak - before:+.0f}"))
    finally:
        srv.cleanup()
    print(f"{args.rows:,} rows")
    print(table(rows, ("format", "MB received", "s", "server RSS before (MB)", "peak (MB)", "growth (MB)")))


if __name__ == "__main__":
    main()
