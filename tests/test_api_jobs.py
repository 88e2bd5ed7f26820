"""The job engine through the real API: validation, results, progress, ETA, queue."""
from __future__ import annotations

import time

import pandas as pd
import pytest

from app.demo import generate_expression
from tests.helpers import AGG_MEAN, TERMINAL, error_of, register_generated, status, submit, wait_job

DEMO_ROWS = 20_000  # tests.server.TEST_ENV


@pytest.fixture(scope="module")
def demo_frame() -> pd.DataFrame:
    return generate_expression(DEMO_ROWS)


@pytest.fixture(scope="module")
def big(server) -> dict:
    """A CSV dataset big enough for jobs that run for several seconds on 2 workers."""
    return register_generated(server, 3_000_000, 24, "csv", dataset_id="big_csv")


@pytest.mark.parametrize("body, status_code, needle", [
    ({"operation": "aggregate", "dataset_id": "nope", "parameters": AGG_MEAN}, 404, "no dataset 'nope'"),
    ({"operation": "explode", "dataset_id": "demo_expression"}, 400, "available: aggregate, correlation"),
    ({"operation": "aggregate", "dataset_id": "demo_expression",
      "parameters": {"column": "nope", "operation": "mean"}}, 400, "the dataset's columns are: gene_id"),
    ({"operation": "aggregate", "dataset_id": "demo_expression",
      "parameters": {"column": 5, "operation": "mean"}}, 400, "must be a string"),
    ({"operation": "aggregate", "dataset_id": "demo_expression",
      "parameters": {"column": "expression_level", "operation": "mode"}}, 400, "does not accept 'mode'"),
    ({"operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
      "priority": "URGENT"}, 400, "LOW, NORMAL, HIGH, CRITICAL"),
    ({"operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
      "max_cores": 0}, 400, "max_cores"),
    ({"operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
      "max_memory_gb": -1}, 400, "max_memory_gb"),
    ({"operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
      "max_cores": 64}, 400, "asks for 64 cores; the cluster has 2 in total"),
    ({"operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
      "max_memory_gb": 100}, 400, "the cluster has 2.0 GB in total"),
    ({"dataset_id": "demo_expression"}, 400, "missing required field(s): operation"),
    ({"operation": "aggregate", "dataset_id": "demo_expression", "parameters": "mean"}, 400, "must be an object"),
])
def test_submit_validation(server, body, status_code, needle):
    before = server.get("/api/processing/jobs/list?limit=1").json()["total"]
    r = server.post("/api/processing/jobs/submit", body)
    assert r.status_code == status_code, r.text
    assert needle in error_of(r)["message"]
    assert server.get("/api/processing/jobs/list?limit=1").json()["total"] == before, "nothing may be written"


def test_contract_example_aggregate_mean(server, demo_frame):
    r = server.post("/api/processing/jobs/submit", {
        "operation": "aggregate", "dataset_id": "demo_expression", "parameters": AGG_MEAN,
        "priority": "HIGH", "max_memory_gb": 1.0, "max_cores": 1})
    assert r.status_code == 201
    body = r.json()
    assert body["message"] == "Job submitted successfully" and body["status"] == "pending"
    assert body["job_id"].startswith("job_")
    final = wait_job(server, body["job_id"])
    assert final["status"] == "completed" and final["progress"] == 100
    assert final["result"]["value"] == pytest.approx(demo_frame.expression_level.mean(), rel=1e-12)
    assert final["result_kind"] == "scalar"
    for key in ("job_id", "status", "priority", "progress", "created_at", "started_at"):
        assert key in final
    assert final["created_at"] <= final["started_at"] <= final["completed_at"]
    assert [a["outcome"] for a in final["attempts"]] == ["completed"]


def test_grouped_result_pages_and_matches_pandas(server, demo_frame):
    job = submit(server, parameters={"column": "expression_level", "operation": "max", "group_by": "gene_id"})
    final = wait_job(server, job)
    assert final["status"] == "completed", final
    expected = demo_frame.groupby("gene_id").expression_level.max()
    page = server.get(f"/api/processing/jobs/{job}/result?offset=10&limit=5").json()
    assert page["total"] == len(expected) and len(page["rows"]) == 5
    all_rows = server.get(f"/api/processing/jobs/{job}/result?limit=10000").json()["rows"]
    got = {r["gene_id"]: r["max"] for r in all_rows}
    assert got == pytest.approx(expected.to_dict())


def test_describe_matches_pandas(server, demo_frame):
    final = wait_job(server, submit(server, "describe", parameters={"columns": ["expression_level", "p_value"]}))
    assert final["status"] == "completed", final
    rows = {r["column"]: r for r in final["result"]["rows"]}
    expected = demo_frame[["expression_level", "p_value"]].describe()
    for column in ("expression_level", "p_value"):
        for stat in ("count", "mean", "std", "min", "max"):
            assert rows[column][stat] == pytest.approx(expected.loc[stat, column], rel=1e-9), (column, stat)


def test_result_of_unfinished_or_unknown_job(server, big):
    assert server.get("/api/processing/jobs/job_nope/result").status_code == 404
    job = submit(server, "aggregate", big["dataset_id"], {"column": "expression_level", "operation": "nunique",
                                                           "group_by": "sample_id"}, cache=False)  # really runs
    r = server.get(f"/api/processing/jobs/{job}/result")  # seconds of work on 3M rows: not done yet
    assert r.status_code == 409 and error_of(r)["code"] == "job_not_completed", r.text
    cancel = server.post(f"/api/processing/jobs/{job}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled", cancel.text
    assert wait_job(server, job)["status"] == "cancelled"
    r = server.get(f"/api/processing/jobs/{job}/result")
    assert r.status_code == 409 and error_of(r)["code"] == "job_not_completed", "a cancelled job has no result"


def test_progress_is_monotonic_reaches_100_and_has_eta(server, big):
    job = submit(server, "aggregate", big["dataset_id"],
                 {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"},
                 cache=False)  # computed, not answered from an earlier identical job
    seen, etas = [], []
    deadline = time.monotonic() + 180
    while True:
        s = status(server, job)
        seen.append(s["progress"])
        if s["status"] == "running" and s["eta_seconds"] is not None:
            etas.append(s["eta_seconds"])
            assert s["estimated_completion_at"].endswith("Z")
        if s["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, f"job still {s['status']} after 180 s: {s}"
        time.sleep(0.05)
    assert s["status"] == "completed", s
    assert seen == sorted(seen), "progress went backwards"
    assert seen[-1] == 100
    assert len(set(seen)) >= 3, f"progress should move through several values: {sorted(set(seen))}"
    assert etas, "a running job reports an ETA"
    history = s["eta_history"]
    assert "actual_end" in history and "25" in history and "50" in history
    assert s["tasks_total"] and s["tasks_done"] == s["tasks_total"]
    assert s["resources"]["task_cpu_seconds"] > 0


def test_list_filters_paginates_newest_first(server):
    ids = [submit(server, priority="LOW") for _ in range(3)]
    for job in ids:
        wait_job(server, job)
    page = server.get("/api/processing/jobs/list?priority=LOW&limit=2").json()
    assert page["total"] >= 3 and len(page["jobs"]) == 2
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2]
    entry = page["jobs"][0]
    for key in ("job_id", "type", "operation", "status", "priority", "progress", "created_at"):
        assert key in entry
    second = server.get("/api/processing/jobs/list?priority=LOW&limit=2&offset=2").json()
    assert second["jobs"][0]["job_id"] not in {j["job_id"] for j in page["jobs"]}
    completed = server.get("/api/processing/jobs/list?status=completed&limit=1000").json()
    assert all(j["status"] == "completed" for j in completed["jobs"])
    r = server.get("/api/processing/jobs/list?status=done")
    assert r.status_code == 400 and "allowed: pending, running" in error_of(r)["message"]
    assert server.get("/api/processing/jobs/list?limit=5000").status_code == 400


def test_queue_status_contract_shape(server):
    body = server.get("/api/processing/queue/status").json()
    assert body["scheduler_running"] is True
    qs = body["queue_status"]
    for key in ("total_queued", "total_running", "total_completed", "priority_breakdown"):
        assert key in qs
    res = body["resource_usage"]["cluster_resources"]
    for key in ("total_memory_gb", "used_memory_gb", "available_memory_gb", "memory_usage_percent",
                "total_cores", "used_cores", "available_cores"):
        assert key in res
    assert res["total_cores"] == 2 and res["total_memory_gb"] == 2.0


def test_cancel_finished_job_is_409(server):
    job = submit(server)
    wait_job(server, job)
    r = server.post(f"/api/processing/jobs/{job}/cancel")
    assert r.status_code == 409 and error_of(r)["code"] == "job_finished"
    assert server.post("/api/processing/jobs/job_nope/cancel").status_code == 404


def test_operations_catalogue(server):
    ops = {o["name"]: o for o in server.get("/api/processing/operations").json()["operations"]}
    assert {"aggregate", "describe", "partition"} <= set(ops)
    assert "column" in ops["aggregate"]["parameters"]["properties"]


def test_a_short_job_ends_with_its_final_resources(server):
    # one task of ~10 ms: the samples taken while it ran (if any) predate its end; the read
    # after it ended carries its final counts, and the job's resources are taken from those
    job = submit(server, priority="HIGH", cache=False)  # not answered from an earlier job's result
    done = wait_job(server, job)
    assert done["status"] == "completed" and not done.get("cached_from"), done
    final = server.wait_for(lambda: (s := server.get(f"/api/processing/jobs/{job}/status").json())
                            ["resources"].get("task_cpu_seconds", 0) > 0 and s, 20, 0.2)
    assert final["resources"]["tasks"] == final["tasks_total"] >= 1
    assert final["resources"]["peak_memory_bytes"] > 0
