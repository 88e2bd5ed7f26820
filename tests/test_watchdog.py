"""The watchdog's verdict on one attempt, from what the scheduler and the sampler report.

An attempt whose task the scheduler holds as processing, or as waiting for a worker
(a nanny restarting one killed for memory), is not lost however quiet the sampled
worker metrics are; the same attempt with its task only waiting is."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.watchdog import Watchdog


def _watchdog() -> Watchdog:
    engine = SimpleNamespace(sampler=SimpleNamespace(latest={"n_workers": 1}))
    dog = Watchdog(engine, idle_after_s=5.0)  # type: ignore[arg-type]
    dog._busy_at = 0.0
    return dog


ATTEMPT = SimpleNamespace(job_id="job_a", number=1, annotation="job_a-1", stage="compute")
FUTURE = SimpleNamespace(key="task-0")


@pytest.mark.parametrize("state", ["processing", "no-worker"])
def test_a_task_the_scheduler_works_on_is_not_lost(state: str) -> None:
    dog = _watchdog()
    for now in (100.0, 110.0, 125.0):
        assert dog._verdict(ATTEMPT, [FUTURE], {"task-0": state}, {}, now) is None  # type: ignore[arg-type]


def test_a_task_left_waiting_with_nothing_running_is_lost() -> None:
    dog = _watchdog()
    assert dog._verdict(ATTEMPT, [FUTURE], {"task-0": "waiting"}, {}, 100.0) is None  # type: ignore[arg-type]
    reason = dog._verdict(ATTEMPT, [FUTURE], {"task-0": "waiting"}, {}, 106.0)  # type: ignore[arg-type]
    assert reason and reason.startswith("no progress for 6 s"), reason


def test_a_task_the_scheduler_forgot_is_lost_on_the_second_look() -> None:
    dog = _watchdog()
    assert dog._verdict(ATTEMPT, [FUTURE], {}, {}, 100.0) is None  # type: ignore[arg-type]
    reason = dog._verdict(ATTEMPT, [FUTURE], {}, {}, 105.0)  # type: ignore[arg-type]
    assert reason and "does not know 1 of its task(s)" in reason, reason


@pytest.mark.parametrize("counted", ["job_a-1", "job_a-1/merge"])
def test_a_graph_whose_root_waits_while_its_tasks_are_processing_is_not_lost(counted: str) -> None:
    """The engine holds only the root of a kernel graph: it waits while fragments (or merges)
    run, e.g. on a worker stopped or slow to report; the progress plugin counts those."""
    dog = _watchdog()
    counts = {counted: {"done": 0, "processing": 2}}
    for now in (100.0, 110.0, 125.0):
        assert dog._verdict(ATTEMPT, [FUTURE], {"task-0": "waiting"}, counts, now) is None  # type: ignore[arg-type]
    idle = {counted: {"done": 0, "processing": 0}}
    reason = dog._verdict(ATTEMPT, [FUTURE], {"task-0": "waiting"}, idle, 131.0)  # type: ignore[arg-type]
    assert reason and reason.startswith("no progress for 6 s"), reason


def test_a_task_held_processing_with_no_progress_is_lost_after_the_grace() -> None:
    """A worker that holds a task without running it (paused for memory, say) does not keep
    the job running forever: past WORKED_ON_GRACE_S with no task ended, the idle rule applies."""
    from app.watchdog import WORKED_ON_GRACE_S

    dog = _watchdog()
    assert dog._verdict(ATTEMPT, [FUTURE], {"task-0": "processing"}, {}, 100.0) is None  # type: ignore[arg-type]
    assert dog._verdict(ATTEMPT, [FUTURE], {"task-0": "processing"}, {}, 100.0 + WORKED_ON_GRACE_S - 1) is None  # type: ignore[arg-type]
    late = 100.0 + WORKED_ON_GRACE_S + 10
    reason = dog._verdict(ATTEMPT, [FUTURE], {"task-0": "processing"}, {}, late)  # type: ignore[arg-type]
    assert reason and reason.startswith("no progress for"), reason
    # a task of it ending starts the grace again
    counts = {ATTEMPT.annotation: {"done": 1, "processing": 1}}
    fresh = _watchdog()
    fresh._verdict(ATTEMPT, [FUTURE], {"task-0": "processing"}, {}, 100.0)  # type: ignore[arg-type]
    assert fresh._verdict(ATTEMPT, [FUTURE], {"task-0": "processing"}, counts, late) is None  # type: ignore[arg-type]


def test_a_task_queued_on_a_paused_worker_is_not_work_but_a_running_one_is() -> None:
    """The sampled workers say whether one runs a task: a paused worker holding the attempt's
    task as "ready" (active, not executing) keeps nothing alive past the grace; a worker
    executing a task does (the attempt's own long task, or another job's), and so does
    another job's task processing (this one waits its turn)."""
    from app.watchdog import WORKED_ON_GRACE_S

    paused = {"workers": [{"address": "w1", "executing": 0, "active_tasks": 1, "status": "paused"}]}
    running = {"workers": [{"address": "w1", "executing": 1, "active_tasks": 1}]}
    own = {ATTEMPT.annotation: {"done": 0, "processing": 1}}
    late = 100.0 + WORKED_ON_GRACE_S + 10
    for snap, others, lost in ((paused, {}, True), (running, {}, False),
                               (paused, {"job_b/1": {"done": 3, "processing": 2}}, False)):
        dog = _watchdog()
        counts = {**own, **others}
        for now in (100.0, 110.0, 120.0, 100.0 + WORKED_ON_GRACE_S - 1, late):
            dog.note_busy(snap, now)
            reason = dog._verdict(ATTEMPT, [FUTURE], {"task-0": "processing"}, counts, now)  # type: ignore[arg-type]
            if now < late:
                assert reason is None, (snap, now, reason)
        assert bool(reason) is lost, (snap, others, reason)


def test_a_worker_that_comes_and_goes_is_not_idleness() -> None:
    """A nanny restarting its worker again and again (killed for memory each time) gives the
    worker a new address each time: the cluster is in flux, and an attempt whose task waits
    to be sent again is not lost meanwhile; once the workers stay the same, the idle rule applies."""
    dog = _watchdog()
    waiting = {ATTEMPT.annotation: {"done": 0, "processing": 0}}
    for i, now in enumerate((100.0, 104.0, 108.0, 112.0, 116.0)):
        dog.note_busy({"workers": [{"address": f"w{i}", "executing": 0}]}, now)
        assert dog._verdict(ATTEMPT, [FUTURE], {"task-0": "waiting"}, waiting, now) is None, now  # type: ignore[arg-type]
    for now in (118.0, 122.0):
        dog.note_busy({"workers": [{"address": "w4", "executing": 0}]}, now)
    reason = dog._verdict(ATTEMPT, [FUTURE], {"task-0": "waiting"}, waiting, 122.0)  # type: ignore[arg-type]
    assert reason and reason.startswith("no progress for 6 s"), reason


def test_the_progress_plugin_counts_a_jobs_tasks_on_workers() -> None:
    from app.progress import JobProgressPlugin

    plugin = JobProgressPlugin()
    plugin.scheduler = SimpleNamespace(tasks={k: SimpleNamespace(annotations={"job": "job_a/1"}, nbytes=8)
                                              for k in ("f0", "f1")})
    for key in ("f0", "f1"):
        plugin.transition(key, "released", "waiting")
        plugin.transition(key, "waiting", "processing")
    assert plugin.snapshot()["jobs"]["job_a/1"]["processing"] == 2
    plugin.transition("f0", "processing", "memory")
    plugin.transition("f1", "processing", "released")  # its worker died: back to waiting next
    stats = plugin.snapshot()["jobs"]["job_a/1"]
    assert stats["processing"] == 0 and stats["done"] == 1, stats
