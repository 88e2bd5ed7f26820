"""The CPU figure of each worker, read from the OS for the workers on this host.

Dask's heartbeat figure stops while a task holds the GIL and repeats an old reading
between heartbeats; a worker process's cumulative CPU seconds from psutil lose nothing.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import psutil


def process_identity() -> dict[str, Any]:
    """Run on a worker: its host, pid and start time, so the server can read its CPU from the OS."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def local_process(found: Any) -> psutil.Process | None:
    """The worker's process when it runs on this host (checked by pid and start time), else None."""
    if not isinstance(found, dict) or found.get("host") != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(found["pid"]))
        return proc if abs(proc.create_time() - float(found["started"])) < 0.01 else None
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None


class WorkerCpu:
    """Each worker process's CPU % over the interval between two samples, from the OS's counters.

    Dask's ``metrics.cpu`` is the last 0.5 s reading of the worker's monitor as of its last
    heartbeat: a sample between heartbeats repeats an old figure, and bursts shorter than a
    heartbeat are missed or over-weighted. Workers on this host (the embedded cluster) are read
    here with psutil: cumulative user+system seconds of the process, all its threads (DuckDB's
    included), so nothing between two samples is lost. Their nice level changes how much CPU
    they get, not how it is counted. Workers elsewhere keep Dask's figure.
    """

    ASK_AGAIN_S = 5.0  # a worker that did not say who it is is asked again after this

    def __init__(self) -> None:
        self._procs: dict[str, psutil.Process | None] = {}  # address -> local process, None: not here
        self._prev: dict[str, tuple[float, float]] = {}  # address -> (monotonic s, cpu s)
        self._ask_at: dict[str, float] = {}  # address -> when to ask again (it did not answer)

    async def update(self, client: Any, workers: list[dict[str, Any]]) -> int:
        """Set ``cpu_percent`` of the local workers' rows; returns the queries sent (new workers only).

        A worker that does not answer in time (its loop held by a task that keeps the GIL, or
        busy importing as it starts) is asked again later: taken as "not on this host", it kept
        Dask's stale figure for the rest of its life (8 % shown while it used 23 %)."""
        current = {w["address"] for w in workers}
        for address in (set(self._procs) | set(self._ask_at)) - current:
            self._procs.pop(address, None)
            self._prev.pop(address, None)
            self._ask_at.pop(address, None)
        now = time.monotonic()
        new = [a for a in current if a not in self._procs and self._ask_at.get(a, 0.0) <= now]
        if new:
            try:
                found = await asyncio.wait_for(client.run(process_identity, workers=new, on_error="return"), 2)
            except Exception:
                found = {}
            for address in new:
                answer = found.get(address)
                if isinstance(answer, dict):
                    self._procs[address] = local_process(answer)
                    self._ask_at.pop(address, None)
                else:
                    self._ask_at[address] = now + self.ASK_AGAIN_S
        for w in workers:
            self._read(w)
        return 1 if new else 0

    def _read(self, row: dict[str, Any]) -> None:
        proc = self._procs.get(row["address"])
        if proc is None:
            return
        try:
            times = proc.cpu_times()
        except psutil.Error:  # gone: the next reading of the scheduler drops it
            return
        now, used = time.monotonic(), times.user + times.system
        prev = self._prev.get(row["address"])
        self._prev[row["address"]] = (now, used)
        if prev is not None and now > prev[0]:
            row["cpu_percent"] = round(100.0 * max(0.0, used - prev[1]) / (now - prev[0]), 1)
