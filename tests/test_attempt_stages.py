"""Fault injection at every stage of an attempt: whatever raises, the job ends within
seconds, failed, with the stage named in its error — never "running" forever.

The service runs in this process (its own loop in a thread) on a real Dask cluster,
so each stage's code can be made to raise; nothing else is replaced.
"""
from __future__ import annotations

import logging

import asyncio
import operator
import threading
from pathlib import Path
from typing import Any, Awaitable, Iterator

import dask
import pytest

import app.task_graph
import app.readers
import app.runner
from app.operations import get as get_operation
from app.service import ProcessingService
from app.settings import Settings

pytestmark = pytest.mark.slow

AGG = {"operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
       "parameters": {"column": "expression_level", "operation": "mean"}}
FILTER = {**AGG, "operation": "filter",
          "parameters": {"conditions": [{"column": "expression_level", "op": ">", "value": 0}]}}
SPILL = {**AGG, "operation": "sort_top", "parameters": {"column": "expression_level", "n": 20}}


class Loop:
    """An event loop in a thread, running the service as the server would."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Loop, ProcessingService]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("stages")), n_workers=1, threads_per_worker=2,
                        memory_limit="1GB", dashboard_address="", demo_rows=2000, live_interval=0.5,
                        job_check_interval=1.0, result_inline_rows=5, job_max_attempts=1)
    loop = Loop()
    service = ProcessingService(settings)
    loop.run(service.start())

    async def ready() -> None:
        while not (service.cluster.running and service.store.get_dataset("demo_expression")):
            await asyncio.sleep(0.2)

    loop.run(ready(), 120)
    yield loop, service
    loop.run(service.stop())
    loop.close()


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


async def _aboom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


def _inject(stage: str, service: ProcessingService, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make ``stage`` raise; returns the submission that reaches it."""
    op = get_operation("aggregate")
    if stage == "start":
        monkeypatch.setattr(service.datasets, "read_source", _boom)
    elif stage == "metadata":  # listing the dataset's files
        monkeypatch.setattr(app.readers, "list_files", _boom)
    elif stage == "build":  # the kernels' task graph
        monkeypatch.setattr(app.task_graph, "graph", _boom)
    elif stage == "compute":  # a task that raises on the worker
        monkeypatch.setattr(app.task_graph, "graph", lambda frags, plan, small, threads=1: dask.delayed(operator.truediv)(1, 0))
    elif stage == "finalize":
        monkeypatch.setattr(op, "finalize", _boom)
    elif stage == "write":  # a result over RESULT_INLINE_ROWS is written as a dataset
        monkeypatch.setattr(app.runner, "_write_part", _boom)
        return SPILL
    elif stage == "register":
        monkeypatch.setattr(service.datasets, "register", _aboom)
        return FILTER
    elif stage == "record":
        end_attempt = service.store.end_attempt

        def refuse_completed(attempt_id: int, outcome: str, cause: str | None = None) -> None:
            if outcome == "completed":
                raise RuntimeError("injected fault")
            end_attempt(attempt_id, outcome, cause)

        monkeypatch.setattr(service.store, "end_attempt", refuse_completed)
    return AGG


@pytest.mark.parametrize("stage", ["start", "metadata", "build", "compute", "finalize", "write", "register", "record"])
def test_a_fault_at_any_stage_ends_the_job(engine: tuple[Loop, ProcessingService], stage: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    loop, service = engine
    body = _inject(stage, service, monkeypatch)
    job = loop.run(service.jobs.submit(body))
    status = loop.run(service.jobs.wait(job["job_id"], 30), 40)
    assert status["status"] == "failed", status
    assert status["error"]["stage"] == stage, status["error"]
    assert f"during {stage}" in status["error"]["message"], status["error"]
    assert job["job_id"] not in service.jobs.running
    assert all(a["ended_at"] for a in status["attempts"]), status["attempts"]


def test_after_the_faults_jobs_still_complete(engine: tuple[Loop, ProcessingService]) -> None:
    loop, service = engine
    job = loop.run(service.jobs.submit(AGG))
    status = loop.run(service.jobs.wait(job["job_id"], 30), 40)
    assert status["status"] == "completed", status


def test_watchdog_fails_a_running_job_with_no_live_attempt(engine: tuple[Loop, ProcessingService],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A row left "running" with nothing behind it (as a bug once did) is failed and reported;
    its attempts are read off the event loop."""
    from app.store_pool import set_loop_guard

    loop, service = engine

    async def orphan() -> str:
        job = await service.jobs.submit(AGG)
        await service.jobs.wait(job["job_id"], 30)
        service.store.update_job(job["job_id"], status="running", completed_at=None)
        set_loop_guard(True)
        try:
            with caplog.at_level(logging.ERROR, logger="app.store_pool"):
                await service.jobs.watchdog.check()
        finally:
            set_loop_guard(None)
        return job["job_id"]

    job_id = loop.run(orphan())
    assert "store read on the event loop" not in caplog.text, caplog.text
    status = service.jobs.status(job_id)
    assert status["status"] == "failed" and status["error"]["type"] == "Orphaned", status
    assert any(job_id in reason for reason in service.health()["reasons"]), service.health()
