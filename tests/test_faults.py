"""Faults injected by really killing processes, cancellation under load, and bursts."""
from __future__ import annotations

import concurrent.futures as cf
import random
import signal
import sqlite3
import time

from typing import Iterator

import psutil
import pytest
import requests

from app.demo import generate_expression
from app.models import PRIORITIES
from tests.helpers import AGG_MEAN, ServerPool, register_generated, status, submit, wait_job, wait_running, wait_until
from tests.server import ServerProcess

pytestmark = pytest.mark.slow

# Two kinds of server, each started once for the tests that need it (a test that kills one
# leaves its restart behind, or nothing, and the next test gets a running one either way):
# kernel jobs split into many tasks, no demo dataset (the killed worker and killed server)...
KILLS = {"DEMO_DATASET": "0", "KERNEL_ONE_TASK_MB": "0", "KERNEL_ONE_HOST_MB": "0"}
# ...and the same with one job at a time and the demo dataset (cancel, and the burst's order).
ONE_SLOT = {"KERNEL_ONE_TASK_MB": "0", "KERNEL_ONE_HOST_MB": "0", "MAX_CONCURRENT_JOBS": "1"}
LONG = {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"}


def expected_nunique(rows: int) -> dict[str, int]:
    return generate_expression(rows).groupby("sample_id").expression_level.nunique().to_dict()


def worker_processes(srv: ServerProcess) -> list:
    found = []
    for proc in srv.descendants():
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:  # a zombie (a killed nanny not yet reaped by the server) or gone
            continue
        if "multiprocessing" in line and "resource_tracker" not in line:
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path_factory.mktemp("faults"))
    yield servers
    servers.close()


def shared(pool: ServerPool, name: str, env: dict[str, str]) -> ServerProcess:
    """The module's server of that kind, with 2 live worker processes (a worker killed by an
    earlier test has been replaced and reaped)."""
    srv = pool.get(name, env)
    wait_until(lambda: len(worker_processes(srv)) == 2, 60, 0.2, "2 worker processes")
    return srv


class paused:
    """SIGSTOP the server's workers for the ``with`` block (SIGCONT after): a job started
    meanwhile is running, and cannot finish, however fast the machine."""

    def __init__(self, srv: ServerProcess):
        self.procs = worker_processes(srv)
        assert len(self.procs) == 2, [p.cmdline() for p in srv.descendants()]

    def __enter__(self) -> list:
        for p in self.procs:
            p.send_signal(signal.SIGSTOP)
        return self.procs

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            try:
                p.send_signal(signal.SIGCONT)
            except Exception:  # killed meanwhile
                pass


ROWS = 40_000


def rows_by_id(result: dict, rows: list) -> dict:
    return {r["sample_id"]: r["nunique"] for r in rows}


def test_killed_worker_mid_job_still_gives_the_right_result(pool):
    srv = shared(pool, "kills", KILLS)
    ds = register_generated(srv, ROWS, 8, "csv")
    with paused(srv) as workers:
        job = submit(srv, "aggregate", ds["dataset_id"], LONG)
        wait_running(srv, job, 0)
        time.sleep(1)  # its tasks reach the (stopped) workers
        workers[0].send_signal(signal.SIGKILL)
    final = wait_job(srv, job, 180)
    assert final["status"] == "completed", final
    rows = srv.get(f"/api/processing/jobs/{job}/result?limit=10000").json()["rows"]
    assert rows_by_id(final, rows) == expected_nunique(ROWS)


def test_a_job_sized_for_the_whole_cluster_is_accepted_while_a_worker_restarts(pool):
    """A worker away for a moment (killed; its nanny starts it again) does not make a job that
    asks for every core of the embedded cluster "invalid": it waits for the worker."""
    srv = shared(pool, "kills", KILLS)
    ds = register_generated(srv, 2000, 2, "csv")
    worker = worker_processes(srv)[0]
    nanny = worker.parent()
    nanny.send_signal(signal.SIGSTOP)  # holds the restart until SIGCONT
    try:
        worker.send_signal(signal.SIGKILL)
        srv.wait_for(lambda: srv.get("/api/processing/queue/status").json()
                     ["resource_usage"]["cluster_resources"]["total_cores"] == 1, 30)
        job = submit(srv, "aggregate", ds["dataset_id"], AGG_MEAN, max_cores=2)
    finally:
        nanny.send_signal(signal.SIGCONT)
    assert wait_job(srv, job, 120)["status"] == "completed"


def test_a_worker_whose_nanny_process_died_is_started_again(pool):
    """A nanny gone for good (killed here; distributed closes one whose worker stays away past
    its lost-worker timeout, as in a restart loop for memory) is started again from the
    cluster's plan: the cluster gets back to its size and a job sized for all of it runs."""
    srv = shared(pool, "kills", KILLS)
    ds = register_generated(srv, 2000, 2, "csv")
    worker = worker_processes(srv)[0]
    nanny = worker.parent()
    nanny.send_signal(signal.SIGKILL)
    worker.send_signal(signal.SIGKILL)
    wait_until(lambda: not nanny.is_running() or nanny.status() == "zombie", 10, 0.1, "the nanny gone")

    def cores() -> int:
        return srv.get("/api/processing/queue/status").json()["resource_usage"]["cluster_resources"]["total_cores"]

    wait_until(lambda: cores() == 1, 30, 0.2, "the scheduler to see one worker")
    # back without anyone scaling: distributed forgets the nanny ~15 s after, the server restarts it
    wait_until(lambda: len(worker_processes(srv)) == 2 and cores() == 2, 90, 0.5, "2 workers again")
    job = submit(srv, "aggregate", ds["dataset_id"], AGG_MEAN, max_cores=2)
    assert wait_job(srv, job, 120)["status"] == "completed"
    assert "starting again" in srv.log_tail(100000)


def test_killed_server_mid_job_resumes_after_restart(pool):
    srv = shared(pool, "kills", KILLS)
    ds = register_generated(srv, ROWS, 8, "csv")
    with paused(srv):
        queued = submit(srv, "aggregate", ds["dataset_id"], AGG_MEAN, priority="LOW")
        job = submit(srv, "aggregate", ds["dataset_id"], LONG, priority="CRITICAL")
        wait_running(srv, job, 0)
        srv.kill()  # SIGKILL: no chance to record anything
    srv.cleanup()  # reap the orphaned Dask processes of the dead server
    again = ServerProcess(srv.data_dir, KILLS).start()
    pool.replace("kills", again)  # the module's server of this kind from now on
    listed = {j["job_id"] for j in again.get("/api/processing/jobs/list?limit=100").json()["jobs"]}
    assert {job, queued} <= listed, "every accepted job survives the crash"
    final = wait_job(again, job, 180)
    assert final["status"] == "completed", final
    outcomes = [a["outcome"] for a in final["attempts"]]
    assert outcomes == ["server_restart", "completed"], final["attempts"]
    rows = again.get(f"/api/processing/jobs/{job}/result?limit=10000").json()["rows"]
    assert rows_by_id(final, rows) == expected_nunique(ROWS)
    assert wait_job(again, queued)["status"] == "completed"


def test_cancel_running_job_frees_room_for_the_next(pool):
    srv = shared(pool, "one_slot", ONE_SLOT)
    ds = register_generated(srv, ROWS, 8, "csv")
    with paused(srv):
        long_job = submit(srv, "aggregate", ds["dataset_id"], LONG)
        wait_running(srv, long_job, 0)
        small = submit(srv, "aggregate", ds["dataset_id"], {"column": "p_value", "operation": "max"})
        waiting = srv.wait_for(lambda: (s := status(srv, small))["pending_reason"] and s)
        assert waiting["status"] == "pending" and waiting["queue_position"] == 1
        assert waiting["pending_reason"] == "1 of 1 concurrent jobs running"
        r = srv.post(f"/api/processing/jobs/{long_job}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert wait_job(srv, small, 60)["status"] == "completed"
    cancelled = status(srv, long_job)
    assert cancelled["status"] == "cancelled"
    assert [a["outcome"] for a in cancelled["attempts"]] == ["cancelled"]
    assert srv.post(f"/api/processing/jobs/{long_job}/cancel").status_code == 409
    # a queued job is cancelled at once
    srv.post("/api/processing/cluster/stop")
    queued = submit(srv, "aggregate", ds["dataset_id"], AGG_MEAN)
    assert srv.wait_for(lambda: status(srv, queued)["pending_reason"]) == "cluster not running"
    assert srv.post(f"/api/processing/jobs/{queued}/cancel").json()["status"] == "cancelled"


def test_burst_of_200_all_accepted_and_started_in_priority_order(pool):
    srv = shared(pool, "one_slot", ONE_SLOT)
    srv.wait_for(lambda: srv.get("/api/processing/datasets/demo_expression?preview_rows=0").status_code == 200)
    srv.post("/api/processing/cluster/stop")  # hold everything in the queue
    rng = random.Random(7)
    priorities = [rng.choice(PRIORITIES) for _ in range(200)]

    def one(priority: str) -> requests.Response:
        return requests.post(srv.url + "/api/processing/jobs/submit", timeout=60, json={
            "operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
            "priority": priority, "max_cores": 1, "max_memory_gb": 0.5})

    with cf.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(one, priorities))
    assert [r.status_code for r in responses] == [201] * 200
    ids = [r.json()["job_id"] for r in responses]
    db = sqlite3.connect(srv.data_dir / "processing.db")
    assert db.execute("SELECT COUNT(*) FROM jobs WHERE job_id IN (%s)" % ",".join("?" * 200), ids).fetchone()[0] == 200
    completed_before = srv.get("/api/processing/queue/status").json()["queue_status"]["total_completed"]
    srv.post("/api/processing/cluster/start")
    # with one slot they start one by one: the first 40 to start are the first 40 by priority,
    # then by arrival (the other 160 would only repeat that)
    srv.wait_for(lambda: srv.get("/api/processing/queue/status").json()["queue_status"]["total_completed"] >= completed_before + 40,
                 timeout=240, interval=0.5)
    rows = db.execute("SELECT priority, seq FROM jobs WHERE job_id IN (%s) AND started_at IS NOT NULL "
                      "ORDER BY started_at, seq" % ",".join("?" * 200), ids).fetchall()
    every = db.execute("SELECT priority, seq FROM jobs WHERE job_id IN (%s)" % ",".join("?" * 200), ids).fetchall()
    db.close()
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    started = [(-rank[p], seq) for p, seq in rows]
    assert len(started) >= 40
    assert started == sorted((-rank[p], seq) for p, seq in every)[:len(started)], \
        "with one slot, jobs start by priority, then FIFO"
    srv.post("/api/processing/cluster/stop")  # the other 160 are not needed: leave the shared server idle
    for job_id in ids:
        srv.post(f"/api/processing/jobs/{job_id}/cancel")


def test_critical_job_preempts_a_running_low_job(make_server):
    # the Dask DataFrame graph (KERNELS=0): preemption of a job that is not a kernel plan
    srv = make_server({"DEMO_DATASET": "0", "KERNELS": "0", "MAX_CONCURRENT_JOBS": "1"})
    srv.wait_workers(2)
    ds = register_generated(srv, ROWS, 8, "csv")
    with paused(srv):
        low = submit(srv, "aggregate", ds["dataset_id"], LONG, priority="LOW")
        wait_running(srv, low, 0)
        critical = submit(srv, "aggregate", ds["dataset_id"], AGG_MEAN, priority="CRITICAL")
        srv.wait_for(lambda: status(srv, low)["status"] == "pending")  # requeued for the critical one
    assert wait_job(srv, critical, 90)["status"] == "completed"
    final = wait_job(srv, low, 180)
    assert final["status"] == "completed", final
    assert [a["outcome"] for a in final["attempts"]] == ["preempted", "completed"]
    assert final["attempt_count"] == 2
    rows = srv.get(f"/api/processing/jobs/{low}/result?limit=10000").json()["rows"]
    assert rows_by_id(final, rows) == expected_nunique(ROWS)
