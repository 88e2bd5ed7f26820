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


def _assert_cluster_children(kids: list[psutil.Process]) -> None:
    lines = [" ".join(p.cmdline()) for p in kids]
    assert sum("distributed.Scheduler" in line for line in lines) == 1, lines
    assert sum("distributed.Nanny" in line for line in lines) == 2, lines


def test_children_die_with_the_server_on_sigterm_and_kill_and_a_restart_replaces_them(
        make_server: Any, tmp_path: Any) -> None:
    """One server stopped by SIGTERM, then a restart on its data dir killed by SIGKILL: two
    starts check what four did (the scheduler and nannies are children, SIGTERM exits soon,
    no child outlives either end, the restart's children are new ones and run jobs)."""
    srv = make_server(data_dir=tmp_path / "data")
    srv.wait_workers(2)
    kids = srv.descendants()
    _assert_cluster_children(kids)
    assert wait_job(srv, submit(srv, max_cores=1, max_memory_gb=0.25), 60)["status"] == "completed"
    elapsed = srv.terminate(30)
    assert _gone_within(kids, 5) == []
    assert elapsed < 8, f"exit took {elapsed:.1f} s"  # ~2.5 s on a quiet machine (bench_api)

    again = make_server(data_dir=tmp_path / "data")
    again.wait_workers(2)
    new_kids = again.descendants()
    _assert_cluster_children(new_kids)
    assert not set(p.pid for p in new_kids) & set(p.pid for p in kids)
    assert wait_job(again, submit(again, max_cores=1, max_memory_gb=0.25), 60)["status"] == "completed"
    again.proc.kill()  # SIGKILL: the server gets no chance to close anything
    again.proc.wait(10)
    assert _gone_within(new_kids, 15) == []


def test_ctrl_c_signals_the_whole_group_and_the_server_still_exits_promptly(make_server: Any) -> None:
    """Ctrl-C in a terminal (and systemd's stop) signals every process of the group at once: the
    scheduler is gone before the server closes its cluster. The close used to retry the dead
    scheduler for distributed's 30 s connect timeout, and then once more from distributed's exit
    hook: the server took 42 s to over a minute to exit. It gives up after CLUSTER_CLOSE_S now."""
    import os
    import signal

    srv = make_server()
    srv.wait_workers(2)
    kids = srv.descendants()
    _assert_cluster_children(kids)
    started = time.time()
    os.killpg(srv.proc.pid, signal.SIGINT)  # the server runs in a session (and group) of its own
    srv.proc.wait(60)
    elapsed = time.time() - started
    assert srv.proc.returncode == 0, srv.log_tail()
    assert elapsed < 20, f"exit took {elapsed:.1f} s:\n{srv.log_tail()}"
    assert _gone_within(kids, 15) == []
