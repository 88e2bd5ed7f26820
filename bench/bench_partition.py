"""Partitioning figures: a CSV several times larger than the workers' memory, through the API.

- time to register (schema inference on a sample) and to partition (a job, two passes)
- partition throughput in MB/s of source CSV, against ``cat FILE > /dev/null`` as the floor
- peak worker memory (``/metrics/workers`` polled every 0.5 s) and worker restarts

    .venv/bin/python -m bench.bench_partition [--size-gb 4.1] [--partitions N] [--keep]

The default size is 4× the workers' total memory limit (2 workers × 512MB), and the
default partition size is the API's (128 MB of source per partition, a quarter of a
worker's memory): each output file is appended to slice by slice, so a file may be larger
than what a worker can hold. (Before that, the writer built each file in memory, and at
128 MB the nanny restarted the 512MB workers until the job failed with KilledWorker.)
Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes

from app.demo import generate_expression
from bench.common import ServerProcess, table

API = "/api/processing"
BLOCK_ROWS = 500_000
N_BLOCKS = 4  # distinct blocks cycled through: generating every row would dominate the run


def write_csv(path: Path, target_bytes: int) -> tuple[int, float]:
    """Write about ``target_bytes`` of demo CSV; returns (rows, seconds)."""
    started = time.perf_counter()
    blocks = [generate_expression(BLOCK_ROWS, seed=i).to_csv(index=False).encode() for i in range(N_BLOCKS)]
    header, _ = blocks[0].split(b"\n", 1)
    bodies = [b.split(b"\n", 1)[1] for b in blocks]
    rows = written = 0
    with open(path, "wb") as f:
        f.write(header + b"\n")
        while written < target_bytes:
            body = bodies[(rows // BLOCK_ROWS) % N_BLOCKS]
            f.write(body)
            written += len(body)
            rows += BLOCK_ROWS
    return rows, time.perf_counter() - started


def cat_seconds(path: Path) -> float:
    started = time.perf_counter()
    with open("/dev/null", "wb") as devnull:
        subprocess.run(["cat", str(path)], stdout=devnull, check=True)
    return time.perf_counter() - started


class WorkerWatch:
    """Polls the workers every 0.5 s: peak memory per worker and in total, addresses seen."""

    def __init__(self, srv: ServerProcess):
        self.srv = srv
        self.peak_worker = 0
        self.peak_total = 0
        self.first: set[str] = set()
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                workers = self.srv.get(f"{API}/metrics/workers", timeout=5).json()["workers"]
            except Exception:
                workers = []
            addresses = {w["address"] for w in workers}
            self.first = self.first or addresses
            self.seen |= addresses
            memory = [int(w.get("memory_bytes") or 0) for w in workers]
            self.peak_worker = max([self.peak_worker, *memory])
            self.peak_total = max(self.peak_total, sum(memory))
            self._stop.wait(0.5)

    def __enter__(self) -> "WorkerWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def restarts(self) -> int:
        """Workers that appeared after the first poll: a restarted worker has a new address."""
        return len(self.seen - self.first)


def partition(srv: ServerProcess, dataset_id: str, n_partitions: int, timeout: float) -> dict[str, Any]:
    """The job's final status (PARTITION_WAIT_S is short: the answer is a 202 and a job to follow)."""
    r = srv.post(f"{API}/data/partition", {"dataset_id": dataset_id, "n_partitions": n_partitions})
    r.raise_for_status()
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = srv.get(f"{API}/jobs/{job_id}/wait?timeout=60", timeout=90).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
    srv.post(f"{API}/jobs/{job_id}/cancel")
    return {**srv.get(f"{API}/jobs/{job_id}/status").json(), "status": f"timed out after {timeout:.0f} s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MB", help="per worker (DASK_MEMORY_LIMIT)")
    parser.add_argument("--size-gb", type=float, default=None, help="CSV size (default 4× total worker memory)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="n_partitions (default: the API's partition_size_mb, 128 MB of source each)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up on the partition job after this (s)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()

    worker_memory = parse_bytes(args.memory_limit)
    total_memory = args.workers * worker_memory
    size = int(args.size_gb * 1e9) if args.size_gb else 4 * total_memory
    data_dir = Path(tempfile.mkdtemp(prefix="bench-partition-"))
    srv = ServerProcess(data_dir, {"DASK_N_WORKERS": str(args.workers), "DASK_MEMORY_LIMIT": args.memory_limit,
                                   "DEMO_DATASET": "0", "PARTITION_WAIT_S": "1"})
    try:
        csv = data_dir / "inputs" / "large.csv"
        csv.parent.mkdir(parents=True)
        rows, write_s = write_csv(csv, size)
        size = csv.stat().st_size
        print(f"wrote {size / 1e9:.2f} GB, {rows:,} rows in {write_s:.1f} s "
              f"(workers: {args.workers} × {args.memory_limit} = {total_memory / 1e9:.2f} GB)")
        cat_first, cat_warm = cat_seconds(csv), cat_seconds(csv)
        n_partitions = args.partitions or math.ceil(size / 128e6)  # what the API plans by default

        srv.start()
        srv.wait_workers(args.workers)
        with WorkerWatch(srv) as watch:
            started = time.perf_counter()
            r = srv.post(f"{API}/datasets", {"source": str(csv), "dataset_id": "large"}, timeout=600)
            r.raise_for_status()
            register_s = time.perf_counter() - started
            started = time.perf_counter()
            final = partition(srv, "large", n_partitions, args.timeout)
            partition_s = time.perf_counter() - started

        mb = size / 1e6
        rows_out: list[tuple] = []
        if final["status"] == "completed":
            copy = srv.get(f"{API}/datasets/large?preview_rows=0").json()["partitioned"]
            sizes = copy["partition_bytes"]
            rows_out = [
                ("partitions written", str(copy["n_partitions"]),
                 f"{min(sizes) / 1e6:.1f}–{max(sizes) / 1e6:.1f} MB each, {copy['size_bytes'] / 1e6:.0f} MB total"),
                ("rows in the copy", f"{copy['rows']:,}", "ok" if copy["rows"] == rows else f"expected {rows:,}"),
            ]
        else:
            rows_out = [("partition job", final["status"], str((final.get("error") or {}).get("message", ""))[:90])]
        print()
        print(table([
            ("register (schema from a sample)", f"{register_s:.2f} s", ""),
            (f"partition into {n_partitions} (job, via API)", f"{partition_s:.1f} s", f"{mb / partition_s:.1f} MB/s"),
            ("cat FILE > /dev/null, first", f"{cat_first:.2f} s", f"{mb / cat_first:.0f} MB/s"),
            ("cat FILE > /dev/null, warm", f"{cat_warm:.2f} s", f"{mb / cat_warm:.0f} MB/s"),
            *rows_out,
            ("attempts", str(len(final.get("attempts") or [])),
             ", ".join(a["outcome"] or "?" for a in final.get("attempts") or [])),
            ("peak memory of one worker", f"{watch.peak_worker / 1e6:.0f} MB", f"limit {worker_memory / 1e6:.0f} MB"),
            ("peak memory, all workers", f"{watch.peak_total / 1e6:.0f} MB", f"limit {total_memory / 1e6:.0f} MB"),
            ("worker restarts", str(watch.restarts), f"{len(watch.seen)} addresses seen"),
        ], ("measure", "value", "note")))
    finally:
        srv.cleanup()
        if args.keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
