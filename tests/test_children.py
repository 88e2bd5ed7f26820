"""The embedded cluster runs as children of the server: the scheduler is not in the
server process, and no child outlives the server, even after ``kill -9``."""
from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from tests.helpers import submit, wait_job

pytestmark = pytest.mark.slow


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _gone_within(procs: list[psutil.Process], seconds: float) -> list[Any]:
    deadline = time.time() + seconds
    while _alive(procs) and time.time() < deadline:
        time.sleep(0.2)
    return [" ".join(p.cmdline())[:120] for p in _alive(procs)]


def test_scheduler_is_a_child_and_children_die_with_a_killed_server(make_server: Any) -> None:
    srv = make_server()
    srv.wait_workers(2)
    kids = srv.descendants()
    lines = [" ".join(p.cmdline()) for p in kids]
    assert sum("distributed.Scheduler" in line for line in lines) == 1, lines
    assert sum("distributed.Nanny" in line for line in lines) == 2, lines
    assert wait_job(srv, submit(srv, max_cores=1, max_memory_gb=0.25), 60)["status"] == "completed"
    srv.proc.kill()  # SIGKILL: the server gets no chance to close anything
    srv.proc.wait(10)
    assert _gone_within(kids, 15) == []


def test_sigterm_stops_every_child_and_a_restart_replaces_them(make_server: Any, tmp_path: Any) -> None:
    srv = make_server(data_dir=tmp_path / "data")
    srv.wait_workers(2)
    kids = srv.descendants()
    srv.terminate(30)
    assert _gone_within(kids, 10) == []
    again = make_server(data_dir=tmp_path / "data")
    again.wait_workers(2)
    assert not set(p.pid for p in again.descendants()) & set(p.pid for p in kids)
    assert wait_job(again, submit(again, max_cores=1, max_memory_gb=0.25), 60)["status"] == "completed"
