"""Jobs that wait for jobs (depends_on, '@job' datasets) and pipelines of named steps, on the shared server."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

from tests.helpers import error_of, status, submit, wait_job
from tests.server import ServerProcess

TINY = {"max_cores": 1, "max_memory_gb": 0.25, "cache": False}
HIGH = {"conditions": [{"column": "expression_level", "op": ">", "value": 40.0}]}


@contextmanager
def paused_workers(srv: ServerProcess) -> Iterator[None]:
    """SIGSTOP the shared server's workers for the block: what is submitted meanwhile waits."""
    procs = [p for p in srv.descendants() if "multiprocessing" in " ".join(p.cmdline())
             and "resource_tracker" not in " ".join(p.cmdline())]
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)


def total_jobs(srv: ServerProcess) -> int:
    return srv.get("/api/processing/jobs/list?limit=1").json()["total"]


def test_a_job_waits_for_its_dependency_and_reads_its_result(server: ServerProcess) -> None:
    with paused_workers(server):
        first = submit(server, "filter", parameters=HIGH, **TINY)
        then = submit(server, "aggregate", dataset_id=f"@{first}",
                      parameters={"column": "expression_level", "operation": "count"}, **TINY)
        waiting = server.wait_for(lambda: (s := status(server, then))["pending_reason"] and s)
        assert waiting["status"] == "pending" and waiting["pending_reason"] == f"waiting for {first}"
        assert waiting["depends_on"] == [first]
    done_first, done_then = wait_job(server, first), wait_job(server, then)
    assert done_first["status"] == done_then["status"] == "completed", done_then
    assert done_then["dataset_id"] == done_first["result_dataset_id"]
    assert done_then["result"]["value"] == done_first["result"]["rows"] > 0
    assert done_then["started_at"] >= done_first["completed_at"]


def test_a_failed_dependency_cancels_what_waits_for_it_in_turn(server: ServerProcess) -> None:
    with paused_workers(server):
        first = submit(server, "aggregate", parameters={"column": "expression_level", "operation": "mean"}, **TINY)
        second = submit(server, depends_on=[first], **TINY)
        third = submit(server, depends_on=[second], **TINY)
        assert server.post(f"/api/processing/jobs/{first}/cancel").status_code == 200
    for job in (second, third):
        ended = wait_job(server, job, 30)
        assert ended["status"] == "cancelled", ended
        assert ended["error"]["type"] == "DependencyFailed" and "cancelled" in ended["error"]["message"]
    assert f"job {first}" in wait_job(server, second)["error"]["message"]


def test_bad_dependencies_are_400_and_write_nothing(server: ServerProcess) -> None:
    before = total_jobs(server)
    body = {"operation": "aggregate", "dataset_id": "demo_expression",
            "parameters": {"column": "expression_level", "operation": "mean"}}
    r = server.post("/api/processing/jobs/submit", {**body, "depends_on": ["job_nope"]})
    assert r.status_code == 400 and error_of(r)["code"] == "unknown_dependency"
    assert server.post("/api/processing/jobs/submit", {**body, "dataset_id": "@job_nope"}).status_code == 400
    scalar = submit(server, **TINY)
    wait_job(server, scalar)
    r = server.post("/api/processing/jobs/submit", {**body, "dataset_id": f"@{scalar}"})
    assert r.status_code == 400 and "not a dataset" in error_of(r)["message"]
    assert total_jobs(server) == before + 1


def pipeline(*steps: dict, name: str = "p") -> dict:
    return {"name": name, "priority": "HIGH", "steps": list(steps)}


FILTERED = {"name": "filtered", "operation": "filter", "dataset_id": "demo_expression", "parameters": HIGH, **TINY}
SCALED = {"name": "scaled", "operation": "transform", "dataset_id": "@step:filtered", **TINY,
          "parameters": {"transforms": [{"column": "expression_level", "fn": "zscore", "output": "z"}]}}
SUMMED = {"name": "summed", "operation": "aggregate", "dataset_id": "@step:scaled", **TINY,
          "parameters": {"column": "z", "operation": "count"}}


def test_a_pipeline_runs_its_steps_in_order(server: ServerProcess) -> None:
    r = server.post("/api/processing/pipelines", pipeline(SUMMED, SCALED, FILTERED))
    assert r.status_code == 201, r.text
    created = r.json()
    assert [s["name"] for s in created["steps"]] == ["filtered", "scaled", "summed"]
    jobs = {s["name"]: s["job_id"] for s in created["steps"]}
    assert wait_job(server, jobs["summed"])["status"] == "completed"
    final = server.get(f"/api/processing/pipelines/{created['pipeline_id']}").json()
    assert final["status"] == "completed" and {s["status"] for s in final["steps"]} == {"completed"}
    rows = wait_job(server, jobs["filtered"])["result"]["rows"]
    assert wait_job(server, jobs["summed"])["result"]["value"] == rows
    assert status(server, jobs["scaled"])["priority"] == "HIGH"


def test_a_bad_pipeline_is_refused_whole(server: ServerProcess) -> None:
    before = total_jobs(server)
    cycle = pipeline({**FILTERED, "depends_on": ["summed"]}, SCALED, SUMMED)
    r = server.post("/api/processing/pipelines", cycle)
    assert r.status_code == 400 and "cycle" in error_of(r)["message"], r.text
    unknown = pipeline(FILTERED, {**SCALED, "dataset_id": "@step:nope"})
    assert "unknown step" in error_of(server.post("/api/processing/pipelines", unknown))["message"]
    # a column the previous step's output will not have: known before anything runs
    wrong = pipeline(FILTERED, SCALED, {**SUMMED, "parameters": {"column": "zz", "operation": "count"}})
    err = error_of(server.post("/api/processing/pipelines", wrong))
    assert "summed" in err["message"] and "zz" in err["message"], err
    twice = pipeline(FILTERED, {**FILTERED})
    assert "unique" in error_of(server.post("/api/processing/pipelines", twice))["message"]
    assert "steps" in error_of(server.post("/api/processing/pipelines", {"steps": []}))["message"]
    assert total_jobs(server) == before
    assert error_of(server.get("/api/processing/pipelines/pipe_nope"))["code"] == "pipeline_not_found"


def test_cancelling_a_pipeline_cancels_every_unfinished_step(server: ServerProcess) -> None:
    with paused_workers(server):
        r = server.post("/api/processing/pipelines", {"steps": [FILTERED, SCALED, SUMMED]})  # no name: allowed
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["name"] == ""
        r = server.post(f"/api/processing/pipelines/{created['pipeline_id']}/cancel")
        assert r.status_code == 200, r.text
    final = server.get(f"/api/processing/pipelines/{created['pipeline_id']}").json()
    assert final["status"] == "cancelled" and {s["status"] for s in final["steps"]} == {"cancelled"}, final
