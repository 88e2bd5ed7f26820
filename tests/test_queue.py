"""Property-based and example tests for the pure scheduling rules in ``app.queue``."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.models import PRIORITIES
from app.queue import (
    Capacity,
    Plan,
    QueuedJob,
    QueuePolicy,
    RunningJob,
    effective_rank,
    fits_ever,
    order,
    plan,
)

NOW = 1_000_000.0
CRITICAL = "CRITICAL"
TOL = 1e-6

# Applied per test rather than as a profile, so other test modules keep their own settings.
modest = settings(max_examples=200, deadline=None)

priorities = st.sampled_from(PRIORITIES)
core_sizes = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 12.0])
memory_sizes = st.sampled_from([0.25, 0.5, 1.0, 2.5, 4.0, 8.0, 16.0, 40.0])
policies = st.builds(
    QueuePolicy,
    aging_s=st.sampled_from([30.0, 600.0, math.inf]),
    preemption=st.booleans(),
    backfill_window_s=st.sampled_from([0.0, 60.0, 600.0, math.inf]),
)


@st.composite
def capacities(draw: st.DrawFn) -> Capacity:
    return Capacity(
        total_cores=float(draw(st.integers(1, 16))),
        total_memory_gb=float(draw(st.integers(1, 32))),
        max_concurrent=draw(st.integers(1, 6)),
    )


@st.composite
def queued_jobs(draw: st.DrawFn, prio: st.SearchStrategy[str] = priorities, max_size: int = 8) -> list[QueuedJob]:
    specs = draw(st.lists(st.tuples(prio, core_sizes, memory_sizes, st.integers(0, 4000)), max_size=max_size))
    # Oldest first, so seq increases with submission time as it does in the engine.
    specs.sort(key=lambda s: -s[3])
    return [QueuedJob(f"q{i}", p, c, m, NOW - age, i) for i, (p, c, m, age) in enumerate(specs)]


@st.composite
def running_jobs(draw: st.DrawFn, capacity: Capacity) -> list[RunningJob]:
    """Running jobs that fit ``capacity`` together, as they would on a healthy cluster."""
    ends = st.one_of(st.none(), st.integers(0, 3000).map(lambda d: NOW + d))
    specs = draw(st.lists(st.tuples(priorities, core_sizes, memory_sizes, st.integers(0, 3000), ends), max_size=8))
    jobs: list[RunningJob] = []
    cores = memory = 0.0
    for i, (p, c, m, ago, end) in enumerate(specs):
        room = cores + c <= capacity.total_cores and memory + m <= capacity.total_memory_gb
        if room and len(jobs) < capacity.max_concurrent:
            jobs.append(RunningJob(f"r{i}", p, c, m, NOW - ago, end))
            cores, memory = cores + c, memory + m
    return jobs


@st.composite
def scenarios(draw: st.DrawFn, prio: st.SearchStrategy[str] = priorities):
    capacity = draw(capacities())
    return draw(queued_jobs(prio)), draw(running_jobs(capacity)), capacity, draw(policies)


def active_after(result: Plan, queued: list[QueuedJob], running: list[RunningJob]) -> list[QueuedJob | RunningJob]:
    """Jobs holding resources once the engine applies ``result``."""
    kept: list[QueuedJob | RunningJob] = [r for r in running if r.job_id not in result.preempt]
    return kept + [q for q in queued if q.job_id in result.start]


def fits(cores: float, memory: float, count: int, capacity: Capacity, jobs: list) -> bool:
    used_cores = sum(j.cores for j in jobs) + cores
    used_mem = sum(j.memory_gb for j in jobs) + memory
    return (
        used_cores <= capacity.total_cores + TOL
        and used_mem <= capacity.total_memory_gb + TOL
        and len(jobs) + count <= capacity.max_concurrent
    )


def victim_key(r: RunningJob) -> tuple:
    return (PRIORITIES.index(r.priority), -r.started_at, r.job_id)


# --- 1. admission never over-commits -------------------------------------------------


@modest
@given(scenarios())
def test_plan_never_overcommits(scenario) -> None:
    queued, running, capacity, policy = scenario
    result = plan(queued, running, capacity, NOW, policy)
    assert fits(0, 0, 0, capacity, active_after(result, queued, running))
    assert len(set(result.start)) == len(result.start)
    assert set(result.preempt) <= {r.job_id for r in running}


@modest
@given(scenarios())
def test_plan_does_not_depend_on_input_order(scenario) -> None:
    queued, running, capacity, policy = scenario
    expected = plan(queued, running, capacity, NOW, policy)
    assert plan(queued[::-1], running[::-1], capacity, NOW, policy) == expected


# --- 2. order ----------------------------------------------------------------------


@modest
@given(scenarios())
def test_without_aging_starts_follow_priority_then_fifo(scenario) -> None:
    queued, running, capacity, policy = scenario
    policy = QueuePolicy(aging_s=math.inf, preemption=policy.preemption, backfill_window_s=policy.backfill_window_s)
    ordered = order(queued, NOW, policy)
    assert ordered == sorted(queued, key=lambda j: (-PRIORITIES.index(j.priority), j.seq))
    ids = [j.job_id for j in ordered]
    started_positions = [ids.index(s) for s in plan(queued, running, capacity, NOW, policy).start]
    assert started_positions == sorted(started_positions)


@modest
@given(scenarios())
def test_without_backfill_started_jobs_are_a_prefix_of_the_order(scenario) -> None:
    queued, running, capacity, policy = scenario
    policy = QueuePolicy(aging_s=policy.aging_s, preemption=False, backfill_window_s=0.0)
    candidates = [j.job_id for j in order(queued, NOW, policy) if fits_ever(j.cores, j.memory_gb, capacity) is None]
    started = plan(queued, running, capacity, NOW, policy).start
    assert started == candidates[: len(started)]


@modest
@given(queued_jobs(), st.integers(0, 10), policies)
def test_unlimited_resources_start_exactly_the_top_k(queued, k, policy) -> None:
    capacity = Capacity(total_cores=1e6, total_memory_gb=1e6, max_concurrent=k)
    result = plan(queued, [], capacity, NOW, policy)
    assert result.start == [j.job_id for j in order(queued, NOW, policy)[:k]]


# --- 3. aging ----------------------------------------------------------------------


@modest
@given(priorities, st.floats(0, 10_000), st.sampled_from([1.0, 60.0, 600.0]))
def test_effective_rank_rises_one_level_per_aging_period(priority, waited, aging_s) -> None:
    job = QueuedJob("a", priority, 1, 1, NOW - waited, 0)
    policy = QueuePolicy(aging_s=aging_s)
    expected = min(3, PRIORITIES.index(priority) + math.floor(waited / aging_s))
    assert effective_rank(job, NOW, policy) == expected
    assert effective_rank(job, NOW + aging_s, policy) >= expected


def test_low_job_that_waited_three_periods_ranks_as_critical() -> None:
    job = QueuedJob("low", "LOW", 1, 1, NOW - 3 * 600, 0)
    assert effective_rank(job, NOW, QueuePolicy(aging_s=600)) == PRIORITIES.index(CRITICAL)
    assert effective_rank(job, NOW - 1, QueuePolicy(aging_s=600)) == PRIORITIES.index("HIGH")


@modest
@given(queued_jobs(max_size=6), st.floats(0, 5000))
def test_long_waiting_low_job_starts_ahead_of_newer_jobs(others, extra) -> None:
    policy = QueuePolicy(aging_s=600)
    oldest = min((j.submitted_at for j in others), default=NOW)
    low = QueuedJob("low", "LOW", 1, 1, oldest - 1, -1)
    now = low.submitted_at + 3 * policy.aging_s + extra
    capacity = Capacity(total_cores=64, total_memory_gb=64, max_concurrent=1)
    result = plan([*others, low], [], capacity, now, policy)
    assert result.start == ["low"]


# --- 4. preemption -----------------------------------------------------------------


@st.composite
def preemption_scenarios(draw: st.DrawFn):
    capacity = draw(capacities())
    running = draw(running_jobs(capacity))
    crit = QueuedJob("crit", CRITICAL, draw(core_sizes), draw(memory_sizes), NOW - 1, 0)
    return crit, running, capacity


@modest
@given(preemption_scenarios())
def test_preemption_takes_fewest_lower_priority_victims_in_order(scenario) -> None:
    crit, running, capacity = scenario
    result = plan([crit], running, capacity, NOW, QueuePolicy())
    eligible = sorted((r for r in running if r.priority != CRITICAL), key=victim_key)
    victims = [r for r in eligible if r.job_id in result.preempt]
    assert [v.job_id for v in victims] == result.preempt
    assert victims == eligible[: len(victims)]
    if fits(crit.cores, crit.memory_gb, 1, capacity, running):
        assert result.start == ["crit"] and result.preempt == []
    elif result.preempt:
        assert result.start == ["crit"]
        remaining = [r for r in running if r not in victims]
        assert fits(crit.cores, crit.memory_gb, 1, capacity, remaining)
        assert not fits(crit.cores, crit.memory_gb, 1, capacity, remaining + victims[-1:])
    else:
        assert result.start == []
        critical_running = [r for r in running if r.priority == CRITICAL]
        assert not fits(crit.cores, crit.memory_gb, 1, capacity, critical_running)


@modest
@given(scenarios())
def test_no_preemption_when_disabled(scenario) -> None:
    queued, running, capacity, policy = scenario
    policy = QueuePolicy(aging_s=policy.aging_s, preemption=False, backfill_window_s=policy.backfill_window_s)
    assert plan(queued, running, capacity, NOW, policy).preempt == []


@modest
@given(scenarios(prio=st.sampled_from(PRIORITIES[:-1])))
def test_aged_up_jobs_never_preempt(scenario) -> None:
    queued, running, capacity, _ = scenario
    policy = QueuePolicy(aging_s=1.0)  # everything waiting has aged to CRITICAL
    assert plan(queued, running, capacity, NOW + 10, policy).preempt == []


@modest
@given(scenarios())
def test_victims_are_lower_priority_running_jobs(scenario) -> None:
    queued, running, capacity, policy = scenario
    result = plan(queued, running, capacity, NOW, policy)
    by_id = {r.job_id: r for r in running}
    assert all(by_id[v].priority != CRITICAL for v in result.preempt)
    if result.preempt:
        assert any(q.priority == CRITICAL and q.job_id in result.start for q in queued)


def test_preemption_picks_lowest_priority_then_most_recent() -> None:
    running = [
        RunningJob("old-low", "LOW", 2, 1, NOW - 100),
        RunningJob("new-low", "LOW", 2, 1, NOW - 10),
        RunningJob("normal", "NORMAL", 2, 1, NOW - 5),
        RunningJob("crit-run", CRITICAL, 2, 1, NOW - 1),
    ]
    capacity = Capacity(total_cores=8, total_memory_gb=16, max_concurrent=8)
    crit = QueuedJob("crit", CRITICAL, 4, 1, NOW, 0)
    result = plan([crit], running, capacity, NOW)
    assert result.preempt == ["new-low", "old-low"]
    assert result.start == ["crit"]


def test_nobody_preempted_when_it_cannot_make_room() -> None:
    running = [RunningJob("low", "LOW", 2, 1, NOW), RunningJob("crit-run", CRITICAL, 6, 1, NOW)]
    capacity = Capacity(total_cores=8, total_memory_gb=16, max_concurrent=8)
    result = plan([QueuedJob("crit", CRITICAL, 4, 1, NOW, 0)], running, capacity, NOW)
    assert result.preempt == [] and result.start == []
    assert result.waiting["crit"].reason == "waiting for cores: needs 4, 0 free"


def test_preemption_frees_a_concurrency_slot() -> None:
    running = [RunningJob("a", "NORMAL", 1, 1, NOW - 50), RunningJob("b", "HIGH", 1, 1, NOW - 10)]
    capacity = Capacity(total_cores=8, total_memory_gb=16, max_concurrent=2)
    result = plan([QueuedJob("crit", CRITICAL, 1, 1, NOW, 0)], running, capacity, NOW)
    assert result.preempt == ["a"] and result.start == ["crit"]


# --- 5. every waiting job is explained ---------------------------------------------


@modest
@given(scenarios())
def test_every_waiting_job_has_a_position_and_reason(scenario) -> None:
    queued, running, capacity, policy = scenario
    result = plan(queued, running, capacity, NOW, policy)
    assert set(result.start).isdisjoint(result.waiting)
    assert set(result.start) | set(result.waiting) == {q.job_id for q in queued}
    by_position = sorted(result.waiting, key=lambda k: result.waiting[k].position)
    assert [result.waiting[k].position for k in by_position] == list(range(1, len(by_position) + 1))
    assert by_position == [j.job_id for j in order(queued, NOW, policy) if j.job_id in result.waiting]
    for job in queued:
        info = result.waiting.get(job.job_id)
        if info is not None:
            assert info.reason.strip()
            assert info.effective_priority == PRIORITIES[effective_rank(job, NOW, policy)]
            assert info.estimated_start_at is None or info.estimated_start_at >= NOW


@modest
@given(scenarios())
def test_nothing_starts_when_cluster_not_running(scenario) -> None:
    queued, running, capacity, policy = scenario
    stopped = Capacity(capacity.total_cores, capacity.total_memory_gb, capacity.max_concurrent, running=False)
    result = plan(queued, running, stopped, NOW, policy)
    assert result.start == [] and result.preempt == []
    assert len(result.waiting) == len(queued)
    assert all(i.reason == "cluster not running" and i.estimated_start_at is None for i in result.waiting.values())


@modest
@given(scenarios())
def test_full_concurrency_is_the_reason_given(scenario) -> None:
    queued, running, capacity, policy = scenario
    result = plan(queued, running, capacity, NOW, policy)
    active = len(active_after(result, queued, running))
    if active >= capacity.max_concurrent:
        expected = f"{active} of {capacity.max_concurrent} concurrent jobs running"
        for job in queued:
            if job.job_id in result.waiting and fits_ever(job.cores, job.memory_gb, capacity) is None:
                assert result.waiting[job.job_id].reason == expected


CAP = Capacity(total_cores=8, total_memory_gb=16, max_concurrent=4)


def waiter(cores: float, memory: float) -> QueuedJob:
    return QueuedJob("j", "NORMAL", cores, memory, NOW, 0)


def holder(job_id: str, cores: float, memory: float, end: float | None = None) -> RunningJob:
    return RunningJob(job_id, "NORMAL", cores, memory, NOW - 10, end)


@pytest.mark.parametrize(
    ("job", "running", "reason"),
    [
        (waiter(4, 1), [holder("r", 6, 1)], "waiting for cores: needs 4, 2 free"),
        (waiter(2.5, 1), [holder("r", 6, 1)], "waiting for cores: needs 2.5, 2 free"),
        (waiter(1, 6), [holder("r", 1, 13.5)], "waiting for memory: needs 6.0 GB, 2.5 GB free"),
        (waiter(1, 1), [holder(f"r{i}", 1, 1) for i in range(4)], "4 of 4 concurrent jobs running"),
        (waiter(64, 1), [], "asks for 64 cores; the cluster has 8 in total"),
    ],
)
def test_reasons_are_specific(job, running, reason) -> None:
    assert plan([job], running, CAP, NOW, QueuePolicy(preemption=False)).waiting["j"].reason == reason


# --- 6. backfill -------------------------------------------------------------------


def backfill_case(head_waited: float, window: float) -> Plan:
    running = [RunningJob("r", "NORMAL", 6, 4, NOW - 100)]
    big = QueuedJob("big", "HIGH", 4, 4, NOW - head_waited, 0)
    small = QueuedJob("small", "LOW", 1, 1, NOW - min(head_waited, 1.0), 1)
    return plan([big, small], running, CAP, NOW, QueuePolicy(backfill_window_s=window))


def test_small_job_backfills_within_the_window() -> None:
    result = backfill_case(head_waited=10, window=60)
    assert result.start == ["small"]
    assert result.waiting["big"].reason == "waiting for cores: needs 4, 2 free"


def test_small_job_is_held_after_the_window() -> None:
    result = backfill_case(head_waited=61, window=60)
    assert result.start == []
    assert result.waiting["small"].reason == "held behind job big (higher priority, waiting for resources)"


@modest
@given(st.floats(0, 3000), st.floats(0, 3000))
def test_backfill_only_inside_window(head_waited, window) -> None:
    result = backfill_case(head_waited, window)
    waited = NOW - (NOW - head_waited)  # what the planner sees, float rounding included
    assert ("small" in result.start) == (waited < window)
    assert "big" not in result.start


def test_a_job_that_can_never_fit_does_not_block_the_queue() -> None:
    huge = QueuedJob("huge", CRITICAL, 64, 1, NOW - 10_000, 0)
    small = QueuedJob("small", "LOW", 1, 1, NOW, 1)
    result = plan([huge, small], [], CAP, NOW, QueuePolicy(backfill_window_s=0))
    assert result.start == ["small"]
    assert result.waiting["huge"].reason == "asks for 64 cores; the cluster has 8 in total"


# --- estimated start ---------------------------------------------------------------


def test_estimated_start_follows_known_end_times() -> None:
    running = [holder("a", 4, 1, NOW + 100), holder("b", 4, 1, NOW + 50)]
    queued = [QueuedJob("six", "HIGH", 6, 1, NOW, 0), QueuedJob("two", "LOW", 2, 1, NOW, 1)]
    waiting = plan(queued, running, CAP, NOW, QueuePolicy(preemption=False)).waiting
    assert waiting["six"].estimated_start_at == NOW + 100
    assert waiting["two"].estimated_start_at == NOW + 100  # behind "six": needs 8 free together


def test_estimated_start_unknown_without_end_times() -> None:
    running = [holder("a", 4, 1, NOW + 100), holder("b", 4, 1)]
    queued = [QueuedJob("two", "LOW", 2, 1, NOW, 0), QueuedJob("six", "HIGH", 6, 1, NOW, 1)]
    waiting = plan(queued, running, CAP, NOW, QueuePolicy(preemption=False, aging_s=math.inf)).waiting
    assert waiting["six"].estimated_start_at is None
    assert waiting["two"].estimated_start_at is None  # needs 8 free with "six" ahead of it


def test_estimated_start_with_partial_knowledge() -> None:
    running = [holder("a", 4, 1, NOW + 100), holder("b", 4, 1)]
    waiting = plan([QueuedJob("two", "LOW", 2, 1, NOW, 0)], running, CAP, NOW).waiting
    assert waiting["two"].estimated_start_at == NOW + 100


# --- 7. fits_ever ------------------------------------------------------------------


def test_fits_ever_messages() -> None:
    assert fits_ever(64, 1, CAP) == "asks for 64 cores; the cluster has 8 in total"
    assert fits_ever(1, 32, CAP) == "asks for 32.0 GB of memory; the cluster has 16.0 GB in total"
    assert fits_ever(8, 16, CAP) is None
    assert fits_ever(0.5, 0.25, CAP) is None


@modest
@given(st.floats(0, 100), st.floats(0, 100), capacities())
def test_fits_ever_agrees_with_totals(cores, memory, capacity) -> None:
    message = fits_ever(cores, memory, capacity)
    assert (message is None) == (cores <= capacity.total_cores and memory <= capacity.total_memory_gb)
    if message is not None:
        assert "in total" in message


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        QueuePolicy(aging_s=0)
    with pytest.raises(ValueError):
        QueuePolicy(backfill_window_s=-1)


def test_window_bounds_the_pass_and_keeps_positions():
    now = 1000.0
    jobs = [QueuedJob(f"j{i}", "NORMAL", 1, 1, now - 1, i) for i in range(50)]
    cap = Capacity(total_cores=2, total_memory_gb=8, max_concurrent=4)
    full = plan(jobs, [], cap, now)
    windowed = plan(jobs, [], cap, now, window=10)
    assert windowed.start == full.start == ["j0", "j1"]
    assert [windowed.waiting[f"j{i}"].position for i in range(2, 50)] == list(range(1, 49))
    assert windowed.waiting["j49"].reason == "queued: 47 jobs ahead"
    assert {k: w.position for k, w in full.waiting.items()} == {k: w.position for k, w in windowed.waiting.items()}
