"""How late the server's event loop wakes up: the measure of "the loop never blocks".

A timer asks the loop to sleep ``interval`` seconds and records how much longer the
sleep took. Anything that holds the loop (a synchronous read, a slow callback) shows
as lag, from inside the process: unlike a client timing ``/health``, the figure is not
inflated by the client's own scheduling. ``/health`` reports the last lag and the
largest over the last minute; Prometheus has the same as gauges.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

WINDOW_S = 60.0


class LoopLag:
    """A coroutine to run on the loop it measures, and the figures it has gathered."""

    def __init__(self, interval: float = 0.1, window_s: float = WINDOW_S):
        self.interval = interval
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(window_s / interval) + 1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval)
            self._samples.append((time.time(), max(0.0, loop.time() - asked - self.interval)))

    def figures(self) -> dict[str, float | None]:
        """``loop_lag_ms`` (the last wake-up) and ``loop_lag_max_ms`` (the latest minute's largest)."""
        if not self._samples:
            return {"loop_lag_ms": None, "loop_lag_max_ms": None}
        since = time.time() - self.window_s
        recent = [lag for at, lag in list(self._samples) if at >= since] or [self._samples[-1][1]]
        return {"loop_lag_ms": round(self._samples[-1][1] * 1000, 1), "loop_lag_max_ms": round(max(recent) * 1000, 1)}
