"""What the service leaves on the Dask scheduler after jobs end, on a real in-process scheduler.

The scheduler runs for weeks (the embedded one as a child of the server, an external
one for longer), so the progress plugin's per-job counts must stay bounded however
many jobs run. (Dask's own spans, dask/distributed#7977, are the scheduler's business:
since the scheduler left the server process they no longer grow the server.)
"""
from __future__ import annotations

import time
from typing import Iterator

import dask
import dask.array as da
import pytest
from distributed import Client

from app.progress import PLUGIN_NAME, JobProgressPlugin, forget_job


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        c.register_plugin(JobProgressPlugin())
        yield c


def plugin_jobs(client: Client) -> dict:
    return client.run_on_scheduler(lambda dask_scheduler: dict(dask_scheduler.plugins[PLUGIN_NAME].jobs))


def run_job(client: Client, annotation: str, seed: int) -> float:
    with dask.annotate(job=annotation):
        future = client.compute(da.random.default_rng(seed).random(1000, chunks=100).sum())
    value = future.result()
    del future  # the client releases the keys: transitions out of memory follow
    return value


def test_a_forgotten_job_leaves_no_counts_even_when_its_keys_are_released_later(client):
    with dask.annotate(job="job_a/1"):
        future = client.compute(da.random.default_rng(1).random(1000, chunks=100).sum())
    future.result()
    counts = plugin_jobs(client)["job_a/1"]
    assert len(counts["keys"]) > 0 and counts["done"] == counts["keys"]
    client.run_on_scheduler(forget_job, job="job_a/")  # the engine forgets the job when it ends...
    assert "job_a/1" not in plugin_jobs(client)
    key = future.key
    del future  # ...and the result's release (memory -> released -> forgotten) comes after
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "job_a/1" not in plugin_jobs(client)


def test_every_attempt_of_a_job_is_forgotten_including_unsampled_ones(client):
    for n in (1, 2, 3):  # e.g. retries; none was ever in a sample
        run_job(client, f"job_b/{n}", n)
    run_job(client, "job_bb/1", 9)  # another job whose id starts the same way stays
    client.run_on_scheduler(forget_job, job="job_b")
    jobs = plugin_jobs(client)
    assert not [j for j in jobs if j.startswith("job_b/")]
    assert "job_bb/1" in jobs
    client.run_on_scheduler(forget_job, job="job_bb/")


def test_the_sampler_read_drops_every_ended_job_in_one_call(client):
    from app.progress import read_snapshot

    for n in (1, 2):
        run_job(client, f"job_c/{n}", n)
    run_job(client, "job_cc/1", 5)
    run_job(client, "job_d/1", 6)
    snap = client.run_on_scheduler(read_snapshot, forget=["job_c/", "job_d/"])
    # this read still carries the ended jobs' final counts (the engine's resources of a
    # completed job come from them); they are dropped after it
    assert {"job_c/1", "job_c/2", "job_d/1"} <= set(snap["jobs"])
    assert snap["jobs"]["job_c/2"]["done"] == snap["jobs"]["job_c/2"]["total"] > 0
    jobs = plugin_jobs(client)
    assert not [j for j in jobs if j.startswith(("job_c/", "job_d/"))]
    assert "job_cc/1" in snap["jobs"] and "job_cc/1" in jobs
    client.run_on_scheduler(forget_job, job="job_cc/")
