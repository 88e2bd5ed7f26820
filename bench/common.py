"""Helpers shared by the benchmarks: medians, tables, a server to measure."""
from __future__ import annotations

import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server import ServerProcess  # noqa: E402


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def table(rows: list[tuple], header: tuple) -> str:
    rows = [tuple(str(c) for c in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class PeakRss:
    """Peak resident memory of a process and each of its children (workers, scheduler),
    sampled every ``interval`` seconds in a thread while the block runs."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _name(self, p) -> str:
        if p.pid == self.proc.pid:
            return "server"
        line = " ".join(p.cmdline())
        if "Scheduler" in line:
            return "scheduler"
        if "spawn_main" in line:
            return f"worker {p.pid}"
        return ""

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    name = self._name(p)
                    if name:
                        self.peaks[name] = max(self.peaks.get(name, 0), p.memory_info().rss)
            except Exception:  # noqa: BLE001 - a child that just ended
                continue

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> str:
        return ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in sorted(self.peaks.items()))


__all__ = ["PeakRss", "ServerProcess", "median", "pct", "table"]
