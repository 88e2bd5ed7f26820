"""Operations that write datasets resume after a crash without redoing finished partitions."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import register_generated, wait_job, wait_until

TRANSFORM = {"transforms": [{"column": "expression_level", "fn": "log2"}, {"column": "p_value", "fn": "log10"}]}


def read_result(srv, job: str) -> pd.DataFrame:
    path = Path(srv.data_dir) / "managed" / "results" / job
    return pd.concat([pd.read_parquet(p) for p in sorted(path.glob("part-*.parquet"))], ignore_index=True)


@pytest.mark.timeout(600)  # 1.2M rows generated, a job cut, resumed and run again, on a shared machine
def test_transform_resumes_from_written_partitions_after_kill(make_server, tmp_path):
    data = tmp_path / "data"
    srv = make_server({"DEMO_DATASET": "0"}, data_dir=data)
    srv.wait_workers(2)
    ds = register_generated(srv, 1_200_000, 40, "csv")
    job = srv.post("/api/processing/jobs/submit", {"operation": "transform", "dataset_id": ds["dataset_id"],
                                                     "parameters": TRANSFORM}).json()["job_id"]
    out = data / "managed" / "results" / job
    wait_until(lambda: len(list(out.glob("part-*.parquet"))) >= 4, 120, 0.02, "4 partitions written")
    # freeze the server and its workers (one process group) where they are, then kill them:
    # what was written is counted with nothing running, whatever the machine's speed
    os.killpg(srv.proc.pid, signal.SIGSTOP)
    written_before_kill = len(list(out.glob("part-*.parquet")))
    srv.kill()
    srv.cleanup()
    assert 4 <= written_before_kill < 40, f"the job must be cut mid-way: {written_before_kill} of 40 written"

    again = make_server({"DEMO_DATASET": "0"}, data_dir=data)
    final = wait_job(again, job, 240)
    assert final["status"] == "completed", final
    assert [a["outcome"] for a in final["attempts"]] == ["server_restart", "completed"]
    result = final["result"]
    assert result["partitions_reused"] >= written_before_kill
    assert result["partitions_written"] == result["n_partitions"] - result["partitions_reused"] < 40

    clean = again.post("/api/processing/jobs/submit", {"operation": "transform", "dataset_id": ds["dataset_id"],
                                                         "parameters": TRANSFORM, "cache": False}).json()["job_id"]
    clean_status = wait_job(again, clean, 240)
    assert clean_status["result"]["partitions_reused"] == 0
    pd.testing.assert_frame_equal(read_result(again, job), read_result(again, clean))
    r = again.get(f"/api/processing/datasets/{final['result_dataset_id']}?preview_rows=3")
    assert r.status_code == 200, r.text
    shown = r.json()
    assert shown["dataset_id"] == final["result_dataset_id"] and shown["origin_job_id"] == job
    assert {"expression_level", "p_value"} <= set(shown["columns"]) and len(shown["preview"]) == 3
    expected = read_result(again, job).head(3)
    assert [row["expression_level"] for row in shown["preview"]] == pytest.approx(list(expected.expression_level))
