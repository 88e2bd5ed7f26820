"""A job's log, its result as CSV and Parquet downloads, and re-running it (on the shared server)."""
from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
import requests

from tests.helpers import error_of, submit, wait_job
from tests.server import ServerProcess

GROUPED = {"column": "expression_level", "operation": "mean", "group_by": "condition"}


def events(srv: ServerProcess, job_id: str, since: int = 0) -> list[dict]:
    r = srv.get(f"/api/processing/jobs/{job_id}/logs?since={since}")
    assert r.status_code == 200, r.text
    return r.json()["lines"]


def test_a_completed_job_logs_each_step_and_since_polls(server: ServerProcess) -> None:
    job = submit(server, parameters=GROUPED, cache=False, max_cores=1, max_memory_gb=0.5)
    assert wait_job(server, job)["status"] == "completed"
    lines = events(server, job)
    assert [line["event"] for line in lines] == ["queued", "started", "completed"], lines
    assert "priority NORMAL" in lines[0]["message"] and "0.5 GB" in lines[0]["message"]
    assert lines[1]["details"]["attempt"] == 1 and "attempt 1 started" in lines[1]["message"]
    assert lines[2]["details"]["duration_s"] >= 0 and all(line["timestamp"].endswith("Z") for line in lines)
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert events(server, job, since=lines[0]["id"]) == lines[1:]
    body = server.get(f"/api/processing/jobs/{job}/logs?since={lines[-1]['id']}").json()
    assert body["lines"] == [] and body["next_since"] == lines[-1]["id"]


def test_a_worker_exception_is_logged_with_its_traceback(server: ServerProcess) -> None:
    folder = server.data_dir / "inputs" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    good = "".join(f"g{i % 7},{i * 0.5}\n" for i in range(600_000))  # past the schema sample
    (folder / "bad.csv").write_text("gene_id,value\n" + good + "g1,2.0,surprise\n")
    assert server.post("/api/processing/datasets", {"source": str(folder / "bad.csv"),
                                                     "dataset_id": "log_bad"}).status_code == 201
    job = submit(server, dataset_id="log_bad", parameters={"column": "value", "operation": "mean"}, cache=False)
    assert wait_job(server, job)["status"] == "failed"
    lines = events(server, job)
    assert [line["event"] for line in lines] == ["queued", "started", "attempt_failed", "failed"], lines
    attempt = lines[2]
    assert attempt["level"] == "error" and "bad.csv" in attempt["message"]
    assert "Traceback" in attempt["details"]["traceback"], attempt["details"]
    assert lines[3]["level"] == "error" and "failed" in lines[3]["message"]


def test_logs_of_unknown_jobs_and_bad_queries(server: ServerProcess) -> None:
    assert error_of(server.get("/api/processing/jobs/job_nope/logs"))["code"] == "job_not_found"
    job = submit(server)
    r = server.get(f"/api/processing/jobs/{job}/logs?since=-1")
    assert r.status_code == 400 and "since" in error_of(r)["message"]
    assert server.get(f"/api/processing/jobs/{job}/logs?tail=5").status_code == 400


def test_rerun_submits_the_same_job_again(server: ServerProcess) -> None:
    first = submit(server, parameters=GROUPED, priority="HIGH", max_cores=1, max_memory_gb=0.5)
    done = wait_job(server, first)
    r = server.post(f"/api/processing/jobs/{first}/rerun")
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["rerun_of"] == first and again["job_id"] != first and again["priority"] == "HIGH"
    rerun = wait_job(server, again["job_id"])
    assert rerun["status"] == "completed" and rerun["rerun_of"] == first
    for key in ("operation", "dataset_id", "parameters", "max_cores", "max_memory_gb"):
        assert rerun[key] == done[key], key
    assert f"a re-run of {first}" in events(server, again["job_id"])[0]["message"]
    missing = server.post("/api/processing/jobs/job_nope/rerun")
    assert missing.status_code == 404 and error_of(missing)["code"] == "job_not_found"


def test_downloads_of_a_table_a_value_and_a_result_dataset(server: ServerProcess) -> None:
    grouped = submit(server, parameters=GROUPED, cache=False)
    rows = wait_job(server, grouped)["result"]["rows"]
    csv = server.get(f"/api/processing/jobs/{grouped}/result.csv")
    assert csv.status_code == 200 and csv.headers["Content-Type"].startswith("text/csv")
    assert f'filename="{grouped}_result.csv"' in csv.headers["Content-Disposition"]
    assert pd.read_csv(io.StringIO(csv.text)).to_dict("records") == pytest_approx_records(rows)
    parquet = server.get(f"/api/processing/jobs/{grouped}/result.parquet")
    assert pq.read_table(io.BytesIO(parquet.content)).to_pylist() == rows

    mean = submit(server, cache=False)
    value = wait_job(server, mean)["result"]["value"]
    one = pd.read_csv(io.StringIO(server.get(f"/api/processing/jobs/{mean}/result.csv").text))
    assert len(one) == 1 and abs(one["value"][0] - value) < 1e-9

    filtered = submit(server, "filter", parameters={"conditions": [
        {"column": "expression_level", "op": ">", "value": 5.0}]}, cache=False)
    final = wait_job(server, filtered)
    assert final["status"] == "completed" and final["result_dataset_id"], final
    table = pq.read_table(io.BytesIO(server.get(f"/api/processing/jobs/{filtered}/result.parquet").content))
    total = server.get(f"/api/processing/jobs/{filtered}/result?limit=1").json()["total"]
    assert table.num_rows == total > 0 and min(table.column("expression_level").to_pylist()) > 5.0
    head = requests.head(server.url + f"/api/processing/jobs/{filtered}/result.csv", timeout=30)
    assert head.status_code == 200 and not head.content and head.headers["Content-Type"].startswith("text/csv")


def test_downloads_refuse_unfinished_and_unknown_jobs(server: ServerProcess) -> None:
    assert error_of(server.get("/api/processing/jobs/job_nope/result.csv"))["code"] == "job_not_found"
    assert server.get("/api/processing/jobs/job_nope/result.xlsx").status_code == 404


def pytest_approx_records(rows: list[dict]) -> list[dict]:
    """The JSON rows as pandas reads them back from CSV (floats may lose the last bit)."""
    import pytest

    return [{k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
