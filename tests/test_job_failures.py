"""Jobs that end ``failed`` through the engine, and the large-result path, on a real server.

One server for the module: JOB_MAX_ATTEMPTS=1 and a scheduler that gives up on a task at
the first worker lost with it (allowed-failures 0), so a killed worker fails its job at
once; RESULT_INLINE_ROWS=10, so a table of more rows is written as a dataset.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pandas as pd
import psutil
import pytest

from app.demo import generate_expression
from tests.helpers import error_of, register, register_generated, submit, wait_job, wait_status, wait_until
from tests.server import TEST_ENV, ServerProcess

INLINE_ROWS = 10
NUNIQUE_BY_SAMPLE = {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("failures"), {
        "JOB_MAX_ATTEMPTS": "1", "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
        "RESULT_INLINE_ROWS": str(INLINE_ROWS)}).start()
    server.wait_workers(2)
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def big(srv: ServerProcess) -> dict:
    """1M rows in 8 CSV files: jobs on it run for seconds on 2 workers."""
    return register_generated(srv, 1_000_000, 8, "csv", dataset_id="big_failures")


def worker_processes(srv: ServerProcess) -> list[psutil.Process]:
    """The Dask worker processes (children of the nannies), not the nannies or the scheduler."""
    found = []
    for p in srv.descendants():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in part for part in p.cmdline()):
                found.append(p)
        except psutil.Error:  # a killed worker not yet reaped by its nanny, or gone meanwhile
            continue
    return found


def test_a_value_the_schema_sample_did_not_see_fails_the_job_with_its_message(srv, tmp_path):
    # 300k numeric rows (~6 MB, past the 4 MB the schema is inferred from), then one that is not
    path = Path(srv.data_dir) / "inputs" / "late_text.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("gene_id,expression_level\n")
        f.writelines(f"G{i},{i * 0.5}\n" for i in range(300_000))
        f.write("G_bad,not-a-number\n")
    ds = register(srv, path, "late_text")
    assert {"name": "expression_level", "dtype": "float64"} in ds["schema"], "the sample saw numbers only"
    job = submit(srv, dataset_id="late_text", parameters={"column": "expression_level", "operation": "mean"})
    final = wait_job(srv, job, 120)
    assert final["status"] == "failed", final
    assert "not-a-number" in final["error"]["message"], final["error"]
    assert [a["outcome"] for a in final["attempts"]] == ["failed"], "a data error is not retried"
    r = srv.get(f"/api/processing/jobs/{job}/result")
    assert r.status_code == 409 and error_of(r)["code"] == "job_not_completed"


@pytest.mark.timeout(600)
def test_a_job_holding_more_than_its_memory_is_stopped(srv):
    # the smallest declaration (0.05 GB, stopped over 75 MB); the distinct values of 8M rows
    # per sample, held between the steps of the job, are several times that
    held = register_generated(srv, 8_000_000, 32, "parquet", dataset_id="held_failures")
    # one worker is stopped (SIGSTOP): the other's partials (2M rows each, ~50 MB as Arrow)
    # wait on it to be merged, held however fast the kernels are, until the engine sees them
    stopped = worker_processes(srv)[0]
    stopped.send_signal(signal.SIGSTOP)
    try:
        job = submit(srv, "aggregate", held["dataset_id"], NUNIQUE_BY_SAMPLE, max_memory_gb=0.05, max_cores=1,
                     cache=False)
        final = wait_job(srv, job, 300)
    finally:
        stopped.send_signal(signal.SIGCONT)
    assert final["status"] == "failed", final
    assert final["error"]["type"] == "MemoryLimit" and "max_memory_gb=0.05" in final["error"]["message"]
    # its first attempt may be requeued by the watchdog as lost: the frozen worker holds its
    # tasks with none ending, and on a busy machine the grace (WORKED_ON_GRACE_S) can run out
    # before the memory check stops it; the attempt that ends it fails, and is not retried
    outcomes = [a["outcome"] for a in final["attempts"]]
    assert outcomes[-1] == "failed" and set(outcomes[:-1]) <= {"lost_tasks"}, outcomes
    assert srv.wait_workers(2), "stopping a job leaves the cluster as it was"


def test_a_large_table_result_is_written_as_a_dataset_and_paged(srv):
    job = submit(srv, parameters={"column": "expression_level", "operation": "mean", "group_by": "gene_id"})
    final = wait_job(srv, job)
    assert final["status"] == "completed", final
    expected = generate_expression(int(TEST_ENV["DEMO_ROWS"])).groupby("gene_id").expression_level.mean()
    assert len(expected) > INLINE_ROWS
    result = final["result"]
    assert result["truncated"] is True and result["total_rows"] == len(expected)
    assert len(result["rows"]) == INLINE_ROWS, "only the head stays inline"
    assert final["result_dataset_id"], "the whole table is a dataset"
    shown = srv.get(f"/api/processing/datasets/{final['result_dataset_id']}?preview_rows=0").json()
    assert shown["origin_job_id"] == job
    pages, offset = [], 0
    while offset < len(expected):
        page = srv.get(f"/api/processing/jobs/{job}/result?offset={offset}&limit=7").json()
        assert page["total"] == len(expected) and 0 < len(page["rows"]) <= 7, page
        pages += page["rows"]
        offset += 7
    got = {row["gene_id"]: row["mean"] for row in pages}
    assert len(pages) == len(got) == len(expected), "every row once"
    assert got == pytest.approx(expected.to_dict(), rel=1e-12)


def test_a_filter_that_keeps_no_row_completes_as_a_job(srv):
    job = submit(srv, "filter", parameters={
        "conditions": [{"column": "expression_level", "op": ">", "value": 1e12}]})
    final = wait_job(srv, job, 120)
    assert final["status"] == "completed", final
    assert final["result"]["rows"] == 0, final["result"]
    page = srv.get(f"/api/processing/jobs/{job}/result").json()
    assert page["total"] == 0 and page["rows"] == []


def test_a_job_whose_workers_die_fails_once_its_attempts_are_spent(srv, big):
    killed = worker_processes(srv)
    assert len(killed) == 2, [p.cmdline() for p in srv.descendants()]
    # the workers are stopped (SIGSTOP) before the job is sent: its tasks reach them and wait
    # there, however fast the kernels would have finished them, until the workers are killed
    for proc in killed:
        proc.send_signal(signal.SIGSTOP)
    try:
        job = submit(srv, "aggregate", big["dataset_id"], NUNIQUE_BY_SAMPLE, max_cores=1, max_memory_gb=0.5,
                     cache=False)
        wait_until(lambda: (s := wait_status(srv, job, {"running", "completed", "failed"}))["status"] != "running"
                   or (s["tasks_total"] or 0) > 0, 60, 0.1, "tasks on the workers")
    finally:
        for proc in killed:  # every worker: whichever holds the job's tasks is lost with them
            proc.send_signal(signal.SIGKILL)
    final = wait_job(srv, job, 120)
    assert final["status"] == "failed", final
    assert [a["outcome"] for a in final["attempts"]] == ["worker_lost"], final["attempts"]
    assert "KilledWorker" in final["error"]["type"] or "worker" in final["error"]["message"].lower(), final["error"]
    # the nannies bring the workers back: the module's server is as it was
    wait_until(lambda: len(worker_processes(srv)) == 2 and srv.get("/api/processing/cluster/status").json()[
        "n_workers"] == 2, 60, 0.5, "2 workers back")
