"""The CPU figure's reader of local worker processes (app.worker_cpu.WorkerCpu): a worker that
does not say who it is in time is asked again, not taken for one on another host."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from app.worker_cpu import WorkerCpu, process_identity

ADDRESS = "tcp://127.0.0.1:1"


class SlowThenAnswering:
    """Stands in for a Dask client whose worker's loop is held (a task keeping the GIL) at the
    first ask and free after: only the answer's timing is faked, the identity is this process's."""

    def __init__(self, fail: BaseException | None) -> None:
        self.fail, self.asked = fail, 0

    async def run(self, fn: Any, workers: list[str], on_error: str) -> dict[str, Any]:
        self.asked += 1
        if self.asked == 1:
            if self.fail is not None:
                raise self.fail
            return {w: OSError("timed out") for w in workers}  # on_error="return": the error as the answer
        return {w: fn() for w in workers}


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def rows() -> list[dict[str, Any]]:
    return [{"address": ADDRESS, "cpu_percent": 3.0}]  # 3.0: Dask's own (stale) figure


def test_a_worker_that_did_not_answer_is_asked_again_and_then_read_from_the_os():
    for fail in (asyncio.TimeoutError(), None):
        cpu, client = WorkerCpu(), SlowThenAnswering(fail)
        first = rows()
        assert asyncio.run(cpu.update(client, first)) == 1
        assert first[0]["cpu_percent"] == 3.0 and client.asked == 1  # no answer: Dask's figure meanwhile
        assert asyncio.run(cpu.update(client, rows())) == 0 and client.asked == 1  # not at every tick
        cpu._ask_at[ADDRESS] = 0.0  # ASK_AGAIN_S have passed
        asyncio.run(cpu.update(client, rows()))
        assert client.asked == 2
        burn(0.3)
        read = rows()
        asyncio.run(cpu.update(client, read))
        assert client.asked == 2, "an identified worker is not asked again"
        assert read[0]["cpu_percent"] > 20.0, read  # this process's own CPU, from the OS


def test_a_worker_elsewhere_keeps_dask_s_figure_and_a_gone_one_is_forgotten():
    class Elsewhere:
        async def run(self, fn: Any, workers: list[str], on_error: str) -> dict[str, Any]:
            return {w: {**process_identity(), "host": "another-host"} for w in workers}

    cpu = WorkerCpu()
    asyncio.run(cpu.update(Elsewhere(), rows()))
    read = rows()
    assert asyncio.run(cpu.update(Elsewhere(), read)) == 0 and read[0]["cpu_percent"] == 3.0
    asyncio.run(cpu.update(Elsewhere(), []))
    assert ADDRESS not in cpu._procs
