"""Operations that write datasets resume after a crash without redoing finished partitions."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from tests.helpers import register_generated, wait_job

TRANSFORM = {"transforms": [{"column": "expression_level", "fn": "log2"}, {"column": "p_value", "fn": "log10"}]}


def read_result(srv, job: str) -> pd.DataFrame:
    path = Path(srv.data_dir) / "managed" / "results" / job
    return pd.concat([pd.read_parquet(p) for p in sorted(path.glob("part-*.parquet"))], ignore_index=True)


def test_transform_resumes_from_written_partitions_after_kill(make_server, tmp_path):
    data = tmp_path / "data"
    srv = make_server({"DEMO_DATASET": "0"}, data_dir=data)
    srv.wait_workers(2)
    ds = register_generated(srv, 1_200_000, 40, "csv")
    job = srv.post("/api/processing/jobs/submit", {"operation": "transform", "dataset_id": ds["dataset_id"],
                                                     "parameters": TRANSFORM}).json()["job_id"]
    out = data / "managed" / "results" / job
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 4:
        time.sleep(0.02)
    written_before_kill = len(list(out.glob("part-*.parquet")))
    srv.kill()
    srv.cleanup()
    assert 4 <= written_before_kill < 40, f"kill should land mid-job, {written_before_kill} of 40 were written"

    again = make_server({"DEMO_DATASET": "0"}, data_dir=data)
    final = wait_job(again, job, 240)
    assert final["status"] == "completed", final
    assert [a["outcome"] for a in final["attempts"]] == ["server_restart", "completed"]
    result = final["result"]
    assert result["partitions_reused"] >= written_before_kill
    assert result["partitions_written"] == result["n_partitions"] - result["partitions_reused"] < 40

    clean = again.post("/api/processing/jobs/submit", {"operation": "transform", "dataset_id": ds["dataset_id"],
                                                         "parameters": TRANSFORM}).json()["job_id"]
    clean_status = wait_job(again, clean, 240)
    assert clean_status["result"]["partitions_reused"] == 0
    pd.testing.assert_frame_equal(read_result(again, job), read_result(again, clean))
    assert final["result_dataset_id"] and again.get(f"/api/processing/datasets/{final['result_dataset_id']}").status_code == 200
