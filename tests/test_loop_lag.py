"""The loop-lag probe reports what holds the loop, and nothing when nothing does."""
from __future__ import annotations

import asyncio
import time

from app.loop_lag import LoopLag
from tests.helpers import run_async


def test_a_held_loop_shows_as_lag_and_a_free_one_does_not() -> None:
    probe = LoopLag(interval=0.02)

    async def scenario() -> tuple[dict, dict]:
        task = asyncio.ensure_future(probe.run())
        try:
            assert probe.figures() == {"loop_lag_ms": None, "loop_lag_max_ms": None}
            await asyncio.sleep(0.2)
            free = probe.figures()
            time.sleep(0.3)  # what a synchronous read on the loop would do
            await asyncio.sleep(0.1)
            return free, probe.figures()
        finally:
            task.cancel()

    free, held = run_async(scenario())
    assert free["loop_lag_max_ms"] is not None and free["loop_lag_max_ms"] < 250, free
    assert held["loop_lag_max_ms"] >= 250, held  # the 300 ms hold, less the timer's own 20 ms
    assert held["loop_lag_ms"] < held["loop_lag_max_ms"], held  # it woke on time again since
