"""A worker killed by its nanny for memory is not "worker lost": the job fails once,
saying to raise max_memory_gb (the cluster has no room to retry it with double)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from tests.helpers import submit, wait_job

pytestmark = pytest.mark.slow


def test_a_job_that_runs_a_worker_out_of_memory_fails_as_out_of_memory(make_server: Any) -> None:
    srv = make_server({"DASK_N_WORKERS": "1", "DASK_MEMORY_LIMIT": "400MB", "DEMO_DATASET": "0",
                       # no pause at 80 %: a worker restarted for memory holds the imports of its
                       # setup (~300 MB); paused at once, it ran nothing and the job was requeued as
                       # lost every 8 s (found in a loaded run; the engine does not yet bound that)
                       "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "false"})
    srv.wait_workers(1)
    folder = srv.data_dir / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "wide.csv"
    rng = np.random.default_rng(3)
    # ~400 MB: a 64 MB block parses to several times the worker's memory (Arrow's CSV writer:
    # some 6x faster than formatting the rows in Python)
    names = ["g", *"abcde"]
    groups = pa.array([f"g{i % 50}" for i in range(100_000)])
    schema = pa.schema([("g", pa.string())] + [(c, pa.float64()) for c in "abcde"])
    with pa_csv.CSVWriter(path, schema, write_options=pa_csv.WriteOptions(quoting_style="none")) as out:
        for _ in range(40):
            block = rng.random((100_000, 5))
            out.write_table(pa.table([groups, *(pa.array(block[:, j]) for j in range(5))], names=names))
    assert srv.post("/api/processing/datasets", {"source": str(path), "dataset_id": "wide"}).status_code == 201
    job = submit(srv, "transform", "wide", {"transforms": [{"column": "a", "fn": "zscore", "group_by": "g"}]},
                 max_cores=1, max_memory_gb=0.25, cache=False)
    done = wait_job(srv, job, 280)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "OutOfMemory", done["error"]
    assert "max_memory_gb" in done["error"]["message"], done["error"]
    outcomes = [a["outcome"] for a in done["attempts"]]
    # one attempt, ended as out of memory; on a loaded machine an attempt whose task a worker
    # held without running it may first be requeued by the watchdog (lost_tasks, not a failure)
    assert outcomes[-1] == "out_of_memory" and set(outcomes[:-1]) <= {"lost_tasks"}, done["attempts"]
    assert outcomes.count("out_of_memory") == 1, done["attempts"]
