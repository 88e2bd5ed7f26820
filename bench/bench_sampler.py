"""What the one metrics sampler costs per tick with 2 and 16 workers, and whether 20
concurrent readers of the live buffer add Dask queries.

For each worker count N it starts a ``dask scheduler`` and N ``dask worker --no-nanny``
processes on 127.0.0.1, then the real server attached to them (``DASK_SCHEDULER_ADDRESS``,
``LIVE_INTERVAL=1``). Each tick the sampler records its event-loop time (``loop_ms``: the
steps of the tick, decoding the replies included, not its waits for them), its wall time and
its running count of scheduler queries; every live sample carries them
(``GET /api/processing/metrics/live``), and ``/metrics`` has the totals.

Two phases per N, ``--seconds`` each:

* idle: no readers;
* readers: ``--readers`` threads GET /metrics/live, /cluster/status and /metrics/workers
  in turn, as fast as they can.

Prints a table and writes ``bench/results/bench_sampler.json``; asserts nothing. Kills the
processes it started, by PID, at the end.

    .venv/bin/python -m bench.bench_sampler [--workers 2 16] [--seconds 20] [--readers 20]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import distributed
import psutil
import requests

from bench.common import ServerProcess, median, pct, table
from tests.server import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "bench_sampler.json"
LIVE = "/api/processing/metrics/live"
READ_PATHS = (LIVE, "/api/processing/cluster/status", "/api/processing/metrics/workers")


class LoopbackCluster:
    """A scheduler and ``n`` workers on 127.0.0.1, each a process this object started."""

    def __init__(self, n: int, workdir: Path):
        self.n = n
        self.workdir = workdir
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        dask = str(Path(sys.executable).parent / "dask")
        with open(self.workdir / log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen([dask, *args], cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 60) -> LoopbackCluster:
        port = self.address.rsplit(":", 1)[1]
        self._spawn("scheduler", "--host", "127.0.0.1", "--port", port, "--dashboard-address", "127.0.0.1:0",
                    log="scheduler.log")
        deadline = time.time() + timeout
        while True:  # the server's client gives up after 20 s: start it once the port answers
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError(f"the scheduler did not listen on {self.address}") from None
                time.sleep(0.2)
        for i in range(self.n):
            self._spawn("worker", self.address, "--no-nanny", "--nthreads", "1", "--memory-limit", "256MB",
                        "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}", log=f"worker-{i}.log")
        return self

    @property
    def scheduler(self) -> psutil.Process:
        return psutil.Process(self.procs[0].pid)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def newest_samples(srv: ServerProcess, seconds: float) -> list[dict[str, Any]]:
    return srv.get(LIVE, params={"seconds": seconds}).json()["samples"]


def next_sample(srv: ServerProcess, after_tick: int = -1) -> dict[str, Any]:
    """The newest live sample, once its tick is later than ``after_tick``."""
    return srv.wait_for(lambda: (s := newest_samples(srv, 5)[-1])["sampler"]["tick"] > after_tick and s,
                        timeout=30, interval=0.1)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def hammer(url: str, readers: int, stop: threading.Event) -> tuple[int, int]:
    """``readers`` threads reading the live views until ``stop``; (requests, errors)."""

    def one(i: int) -> tuple[int, int]:
        done = errors = 0
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    ok = session.get(url + READ_PATHS[(i + done) % len(READ_PATHS)], timeout=30).status_code == 200
                except requests.RequestException:
                    ok = False
                done += 1
                errors += not ok
        return done, errors

    with cf.ThreadPoolExecutor(readers) as pool:
        counts = list(pool.map(one, range(readers)))
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def phase(srv: ServerProcess, cluster: LoopbackCluster, seconds: float, readers: int) -> dict[str, Any]:
    """Ticks, their loop and wall time, scheduler queries and CPU over ``seconds``."""
    server_proc = psutil.Process(srv.proc.pid)  # type: ignore[union-attr]
    first = next_sample(srv)
    cpu0, sched0, t0 = cpu_seconds(server_proc), cpu_seconds(cluster.scheduler), time.perf_counter()
    requests_done = errors = 0
    if readers:
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        requests_done, errors = hammer(srv.url, readers, stop)
        timer.cancel()
    else:
        time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    cpu1, sched1 = cpu_seconds(server_proc), cpu_seconds(cluster.scheduler)
    last = next_sample(srv, first["sampler"]["tick"])
    ticks = [s for s in newest_samples(srv, seconds + 30)
             if first["sampler"]["tick"] < s["sampler"]["tick"] <= last["sampler"]["tick"]]
    loop_ms = [s["sampler"]["loop_ms"] for s in ticks]
    wall_ms = [s["sampler"]["wall_ms"] for s in ticks]
    n_ticks = last["sampler"]["tick"] - first["sampler"]["tick"]
    queries = last["sampler"]["queries"] - first["sampler"]["queries"]
    span = last["ts"] - first["ts"]
    return {
        "readers": readers, "seconds": round(elapsed, 2), "ticks": n_ticks,
        "workers_seen": [s["n_workers"] for s in ticks][-1] if ticks else None,
        "loop_ms_median": round(median(loop_ms), 3), "loop_ms_p95": round(pct(loop_ms, 0.95), 3),
        "wall_ms_median": round(median(wall_ms), 3), "wall_ms_p95": round(pct(wall_ms, 0.95), 3),
        "queries": queries, "queries_per_s": round(queries / span, 3) if span else None,
        "queries_per_tick": round(queries / n_ticks, 3) if n_ticks else None,
        "ticks_per_s": round(n_ticks / span, 3) if span else None,
        "reader_requests": requests_done, "reader_errors": errors,
        "reader_requests_per_s": round(requests_done / elapsed, 1) if readers else 0.0,
        "server_cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "scheduler_cpu_percent": round(100 * (sched1 - sched0) / elapsed, 1),
    }


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-sampler-{n}-") as tmp:
        cluster = LoopbackCluster(n, Path(tmp))
        srv: ServerProcess | None = None
        try:
            cluster.start()
            env = {"DASK_SCHEDULER_ADDRESS": cluster.address, "LIVE_INTERVAL": "1", "METRICS_INTERVAL": "2",
                   "DEMO_DATASET": "0"}
            srv = ServerProcess(Path(tmp) / "server", env)
            srv.start(timeout=120)
            t0 = time.perf_counter()
            srv.wait_workers(n, timeout=300)
            print(f"N={n}: scheduler sees {n} workers ({time.perf_counter() - t0:.0f} s after the server)",
                  flush=True)
            time.sleep(args.settle)
            idle = phase(srv, cluster, args.seconds, 0)
            print(f"N={n} idle:    {idle}", flush=True)
            busy = phase(srv, cluster, args.seconds, args.readers)
            print(f"N={n} readers: {busy}", flush=True)
            scrape = srv.get("/metrics").text
            totals = {line.split()[0]: float(line.split()[1]) for line in scrape.splitlines()
                      if line.startswith("processing_sampler_") and not line.startswith("#")}
            return {"workers": n, "idle": idle, "readers": busy, "prometheus": totals}
        finally:
            if srv is not None:
                srv.cleanup()
            cluster.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 16], help="worker counts (default 2 16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    parser.add_argument("--readers", type=int, default=20, help="concurrent readers (default 20)")
    parser.add_argument("--settle", type=float, default=5.0, help="wait once all workers are in (default 5)")
    args = parser.parse_args(argv)
    runs = [run(n, args) for n in args.workers]

    rows = []
    for r in runs:
        for name in ("idle", "readers"):
            p = r[name]
            rows.append((r["workers"], p["readers"], p["ticks"], p["loop_ms_median"], p["loop_ms_p95"],
                         p["wall_ms_median"], p["wall_ms_p95"], p["queries_per_s"], p["queries_per_tick"],
                         p["reader_requests_per_s"], p["server_cpu_percent"], p["scheduler_cpu_percent"]))
    print()
    print(table(rows, ("workers", "readers", "ticks", "loop ms p50", "loop ms p95", "wall ms p50", "wall ms p95",
                       "queries/s", "queries/tick", "reader req/s", "server CPU %", "scheduler CPU %")))
    by_n = {r["workers"]: r["idle"] for r in runs}
    ratios = {}
    if len(by_n) >= 2:
        lo, hi = min(by_n), max(by_n)
        ratios = {f"loop_ms_median_{hi}_over_{lo}": round(by_n[hi]["loop_ms_median"] / by_n[lo]["loop_ms_median"], 2),
                  f"loop_ms_p95_{hi}_over_{lo}": round(by_n[hi]["loop_ms_p95"] / by_n[lo]["loop_ms_p95"], 2)}
        print(f"loop time per tick, {hi} vs {lo} workers (idle): median ×{ratios[f'loop_ms_median_{hi}_over_{lo}']}, "
              f"p95 ×{ratios[f'loop_ms_p95_{hi}_over_{lo}']}")
    for r in runs:
        idle, busy = r["idle"], r["readers"]
        print(f"{r['workers']} workers: {idle['queries_per_s']} queries/s idle, {busy['queries_per_s']} with "
              f"{busy['readers']} readers ({busy['reader_requests_per_s']} req/s); queries/tick "
              f"{idle['queries_per_tick']} → {busy['queries_per_tick']}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "bench": "bench_sampler", "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args), "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                        "distributed": distributed.__version__, "platform": platform.platform()},
        "runs": runs, "ratios": ratios,
    }, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
