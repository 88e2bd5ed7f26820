"""What the service leaves on the Dask scheduler after jobs end, on a real in-process scheduler.

The embedded LocalCluster's scheduler lives in the server process, so anything it keeps
per job grows the server: the progress plugin's counts, and Dask's own spans
(dask/distributed#7977). Both must stay bounded however many jobs run.
"""
from __future__ import annotations

import time
from typing import Iterator

import dask
import dask.array as da
import pytest
from distributed import Client

from app.cluster import prune_spans
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


def _spans(dask_scheduler) -> tuple[int, int]:
    ext = dask_scheduler.extensions["spans"]
    return len(ext.root_spans), len(ext.spans)


def _indexes_agree(dask_scheduler) -> bool:
    """Indexes hold the kept spans; every dropped id has an empty stand-in (late reports)."""
    ext = dask_scheduler.extensions["spans"]
    kept = {id(span) for root in ext.root_spans for span in root.traverse_spans()}
    by_name = {id(span) for spans in ext.spans_search_by_name.values() for span in spans}
    by_tag = {id(span) for spans in ext.spans_search_by_tag.values() for span in spans}
    stand_ins = [span for span in ext.spans.values() if id(span) not in kept]
    return (by_name == kept == by_tag and kept <= {id(span) for span in ext.spans.values()}
            and all(not span.groups and not span.children for span in stand_ins) and len(stand_ins) > 0)


def _late_report(dask_scheduler) -> bool:
    """A worker heartbeat about a dropped span is still taken."""
    ext = dask_scheduler.extensions["spans"]
    kept = {id(span) for root in ext.root_spans for span in root.traverse_spans()}
    dropped = next(key for key, span in ext.spans.items() if id(span) not in kept)
    ext.heartbeat(None, {("execute", dropped, "x", "thread-cpu", "seconds"): 0.5})
    return True


def test_spans_of_finished_jobs_are_pruned_to_the_newest(client):
    for seed in range(30):
        run_job(client, f"job_s{seed}/1", seed)
    roots, _ = client.run_on_scheduler(_spans)
    assert roots >= 30  # Dask keeps one root span per computation
    assert client.run_on_scheduler(prune_spans, keep=5) == 0  # all ended moments ago: kept a while
    time.sleep(2.5)  # the workers' heartbeats about those spans arrive meanwhile
    dropped = client.run_on_scheduler(prune_spans, keep=5, min_age_s=2)
    assert dropped == roots - 5
    roots_after, all_after = client.run_on_scheduler(_spans)
    assert roots_after == 5 and all_after >= roots  # dropped ids keep empty stand-ins
    # the indexes agree with what is left, and new work still gets its span
    assert client.run_on_scheduler(_indexes_agree)
    assert client.run_on_scheduler(_late_report)
    assert run_job(client, "job_after/1", 99) > 0
    assert client.run_on_scheduler(_spans)[0] == 6


def test_a_running_computation_keeps_its_span(client):
    event = "hold-" + str(id(client))
    from distributed import Event

    gate = Event(event)

    def wait_for_gate(x):
        Event(event).wait(30)
        return x

    with dask.annotate(job="job_running/1"):
        held = client.submit(wait_for_gate, 1, pure=False)
    key = held.key

    def processing(dask_scheduler) -> bool:
        ts = dask_scheduler.tasks.get(key)
        return ts is not None and ts.state == "processing"

    deadline = time.monotonic() + 30
    while not client.run_on_scheduler(processing) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.run_on_scheduler(processing)
    time.sleep(2.5)  # earlier tests' spans: their heartbeats are in
    client.run_on_scheduler(prune_spans, keep=0, min_age_s=2)
    roots_left = client.run_on_scheduler(lambda dask_scheduler: [
        [g.name for g in s.traverse_groups()] for s in dask_scheduler.extensions["spans"].root_spans])
    assert any(any(name.startswith("wait_for_gate") for name in groups) for groups in roots_left), roots_left
    gate.set()
    assert held.result() == 1


def test_pruning_leaves_an_unknown_scheduler_layout_alone():
    class NoSpans:
        extensions: dict = {}
        task_groups: dict = {}

    assert prune_spans(NoSpans(), keep=0) == 0
