"""Pure scheduling logic for the job queue: who starts, who waits and why.

Nothing here touches Dask, SQLite or the clock; the job engine passes ``now`` in
and applies the returned :class:`Plan`. The rules:

* **Order.** Queued jobs are ordered by *effective* priority, CRITICAL > HIGH >
  NORMAL > LOW, then first-in first-out by ``seq``. Effective priority is the base
  rank (LOW=0 … CRITICAL=3) plus one level per ``aging_s`` seconds waited since
  submission, capped at CRITICAL, so low-priority work cannot starve.
* **Admission.** A job starts only when its cores and memory fit in what running
  jobs (and jobs started earlier in the same plan) have not reserved, and fewer
  than ``max_concurrent`` jobs are running. Nothing starts while the cluster is
  not running.
* **Head of line and backfill.** The queue is walked in order. The first job that
  does not fit becomes the *blocked head*. Jobs behind it may still start if they
  fit ("backfill"), but only while the head has waited less than
  ``backfill_window_s`` since submission; after that, free resources are held
  for the head and nothing behind it starts (nor preempts) until it does. Running jobs finish,
  so the head eventually starts; lower jobs age upward, so they cannot starve
  either. Only the first blocked job becomes the head. A job too big for the
  whole cluster (see :func:`fits_ever`) never becomes the head, since holding
  resources for it would stall the queue for ever.
* **Preemption.** When ``policy.preemption`` is on and a job whose *base*
  priority is CRITICAL cannot be admitted, running jobs of lower base priority
  are chosen as victims, lowest priority first, then most recently started
  first, one by one until the CRITICAL job fits (cores, memory and a concurrency
  slot). If preempting every eligible job would not make room, nobody is
  preempted. Victims are listed in ``Plan.preempt`` (the engine requeues them
  before starting the CRITICAL job); jobs started in the same plan are never
  victims, and jobs that only aged up to CRITICAL never preempt.
* **Reasons.** Every queued job not started gets a :class:`WaitInfo` whose reason
  says what it waits for, with the free resources at its turn in the walk:
  ``cluster not running``; ``waiting for cores: needs 4, 2 free``;
  ``waiting for memory: needs 6.0 GB, 2.5 GB free``;
  ``held behind job <id> (higher priority, waiting for resources)`` (or
  ``submitted earlier`` when the head has the same priority); the
  :func:`fits_ever` message for jobs that can never fit. When the concurrency
  limit is reached after the plan, every waiting job that could ever fit reads
  ``4 of 4 concurrent jobs running`` instead.
* **Estimated start** (an approximation). Running jobs with a known
  ``expected_end_at`` are released in end-time order, starting from the state
  after this plan; a waiting job is estimated to start at the first release
  after which it *and every waiting job ahead of it* fit together. Jobs without
  a known end (including those started by this plan) are assumed to keep their
  resources, and jobs ahead are assumed not to finish, so the estimate is
  ``None`` when those releases never make room, or when the cluster is not
  running.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .models import PRIORITIES

CRITICAL = len(PRIORITIES) - 1
_PRIORITY_NAME = dict(enumerate(PRIORITIES))
# Sums of float cores/memory drift by ulps; don't let that refuse a job that fits.
_EPS = 1e-9


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting to start."""

    job_id: str
    priority: str
    cores: float
    memory_gb: float
    submitted_at: float
    seq: int


@dataclass(frozen=True)
class RunningJob:
    """A job holding cluster resources."""

    job_id: str
    priority: str
    cores: float
    memory_gb: float
    started_at: float
    expected_end_at: float | None = None


@dataclass(frozen=True)
class Capacity:
    """What the cluster offers to jobs as a whole."""

    total_cores: float
    total_memory_gb: float
    max_concurrent: int
    running: bool = True


@dataclass(frozen=True)
class QueuePolicy:
    """Tunable scheduling knobs; ``aging_s=math.inf`` disables aging."""

    aging_s: float = 600.0
    preemption: bool = True
    backfill_window_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.aging_s > 0:
            raise ValueError("aging_s must be positive")
        if not self.backfill_window_s >= 0:
            raise ValueError("backfill_window_s must not be negative")


@dataclass(frozen=True)
class WaitInfo:
    """Why a queued job did not start, and when it might."""

    position: int
    reason: str
    effective_priority: str
    estimated_start_at: float | None


@dataclass(frozen=True)
class Plan:
    """What the engine should do now."""

    start: list[str]
    preempt: list[str]
    waiting: dict[str, WaitInfo]


@dataclass
class _Pool:
    """Free resources during one plan walk (mutable scratch, never shared)."""

    cores: float
    memory_gb: float
    slots: int
    active: list[RunningJob] = field(default_factory=list)

    def room(self, cores: float, memory_gb: float, slots: int = 1) -> bool:
        return cores <= self.cores + _EPS and memory_gb <= self.memory_gb + _EPS and slots <= self.slots

    def take(self, job: QueuedJob) -> None:
        self.cores -= job.cores
        self.memory_gb -= job.memory_gb
        self.slots -= 1

    def give_back(self, job: RunningJob) -> None:
        self.cores += job.cores
        self.memory_gb += job.memory_gb
        self.slots += 1

    def release(self, job: RunningJob) -> None:
        self.active.remove(job)
        self.give_back(job)


_RANKS = {p: i for i, p in enumerate(PRIORITIES)}


def _rank(priority: str) -> int:
    return _RANKS[priority]


def effective_rank(job: QueuedJob, now: float, policy: QueuePolicy) -> int:
    """Base rank plus one level per ``aging_s`` waited, capped at CRITICAL."""
    waited = now - job.submitted_at
    if waited < policy.aging_s:  # the common case, without the division
        return _RANKS[job.priority]
    return min(CRITICAL, _RANKS[job.priority] + math.floor(waited / policy.aging_s))


def order(queued: Iterable[QueuedJob], now: float, policy: QueuePolicy) -> list[QueuedJob]:
    """Queued jobs in start order: effective priority first, then FIFO by ``seq``."""
    # job_id only breaks exact ties so the result never depends on input order.
    return sorted(queued, key=lambda j: (-effective_rank(j, now, policy), j.seq, j.job_id))


def fits_ever(cores: float, memory_gb: float, capacity: Capacity) -> str | None:
    """None if a job of this size could ever run on ``capacity``, else why not."""
    if cores > capacity.total_cores:
        total = _fmt_cores(capacity.total_cores)
        return f"asks for {_fmt_cores(cores)} cores; the cluster has {total} in total"
    if memory_gb > capacity.total_memory_gb:
        total = _fmt_gb(capacity.total_memory_gb)
        return f"asks for {_fmt_gb(memory_gb)} GB of memory; the cluster has {total} GB in total"
    return None


def plan(
    queued: Sequence[QueuedJob],
    running: Sequence[RunningJob],
    capacity: Capacity,
    now: float,
    policy: QueuePolicy = QueuePolicy(),
    window: int | None = None,
) -> Plan:
    """Decide which queued jobs start now, which running jobs to preempt, and why the rest wait.

    With ``window``, only the first ``window`` jobs in order are considered for starting
    (and backfill); the rest keep their position with a plain reason. This bounds the cost
    of a pass when thousands of jobs wait.
    """
    ordered = order(queued, now, policy)
    if window is not None and len(ordered) > window:
        head_plan = plan(ordered[:window], running, capacity, now, policy)
        ahead = len(head_plan.waiting)
        tail = {
            job.job_id: WaitInfo(ahead + i + 1, f"queued: {ahead + i} jobs ahead",
                                 _PRIORITY_NAME[effective_rank(job, now, policy)], None)
            for i, job in enumerate(ordered[window:])
        }
        return Plan(head_plan.start, head_plan.preempt, {**head_plan.waiting, **tail})
    if not capacity.running:
        reasons = {j.job_id: "cluster not running" for j in ordered}
        return Plan([], [], _wait_infos(ordered, reasons, None, set(), now, policy))
    never = {j.job_id for j in ordered if fits_ever(j.cores, j.memory_gb, capacity)}
    pool = _initial_pool(running, capacity)
    start, preempt, reasons = _walk(ordered, pool, capacity, now, policy)
    if pool.slots <= 0:
        busy = f"{capacity.max_concurrent - pool.slots} of {capacity.max_concurrent} concurrent jobs running"
        reasons = {k: r if k in never else busy for k, r in reasons.items()}
    waiting = [j for j in ordered if j.job_id in reasons]
    return Plan(start, preempt, _wait_infos(waiting, reasons, pool, never, now, policy))


def _initial_pool(running: Sequence[RunningJob], capacity: Capacity) -> _Pool:
    """What running jobs leave free; may be negative if capacity shrank under them."""
    return _Pool(
        cores=capacity.total_cores - sum(r.cores for r in running),
        memory_gb=capacity.total_memory_gb - sum(r.memory_gb for r in running),
        slots=capacity.max_concurrent - len(running),
        active=list(running),
    )


def _walk(
    ordered: list[QueuedJob], pool: _Pool, capacity: Capacity, now: float, policy: QueuePolicy
) -> tuple[list[str], list[str], dict[str, str]]:
    """Admit jobs in order, applying head-of-line, backfill and preemption rules."""
    start: list[str] = []
    preempt: list[str] = []
    reasons: dict[str, str] = {}
    head: QueuedJob | None = None
    for job in ordered:
        never = fits_ever(job.cores, job.memory_gb, capacity)
        if never is not None:
            reasons[job.job_id] = never
        elif head is not None and now - head.submitted_at >= policy.backfill_window_s:
            reasons[job.job_id] = _held_reason(head, job, now, policy)
        elif (victims := _admit(job, pool, policy)) is not None:
            start.append(job.job_id)
            preempt.extend(v.job_id for v in victims)
        else:
            reasons[job.job_id] = _shortfall(job, pool, capacity)
            if head is None:
                head = job
    return start, preempt, reasons


def _admit(job: QueuedJob, pool: _Pool, policy: QueuePolicy) -> list[RunningJob] | None:
    """Take room for ``job`` if possible; return the victims preempted for it (maybe none)."""
    if pool.room(job.cores, job.memory_gb):
        pool.take(job)
        return []
    if not (policy.preemption and _rank(job.priority) == CRITICAL):
        return None
    victims = _choose_victims(job, pool)
    if victims is None:
        return None
    for victim in victims:
        pool.release(victim)
    pool.take(job)
    return victims


def _choose_victims(job: QueuedJob, pool: _Pool) -> list[RunningJob] | None:
    """Fewest victims, taken greedily in preemption order, that make room; None if impossible."""
    eligible = sorted(
        (r for r in pool.active if _rank(r.priority) < CRITICAL),
        key=lambda r: (_rank(r.priority), -r.started_at, r.job_id),
    )
    trial = _Pool(pool.cores, pool.memory_gb, pool.slots)
    chosen: list[RunningJob] = []
    for victim in eligible:
        chosen.append(victim)
        trial.give_back(victim)
        if trial.room(job.cores, job.memory_gb):
            return chosen
    return None


def _shortfall(job: QueuedJob, pool: _Pool, capacity: Capacity) -> str:
    """The most useful thing to say about why ``job`` does not fit in ``pool``."""
    if pool.slots < 1:
        running = capacity.max_concurrent - pool.slots
        return f"{running} of {capacity.max_concurrent} concurrent jobs running"
    free_cores, free_mem = max(0.0, pool.cores), max(0.0, pool.memory_gb)
    if job.cores > pool.cores + _EPS:
        return f"waiting for cores: needs {_fmt_cores(job.cores)}, {_fmt_cores(free_cores)} free"
    return f"waiting for memory: needs {_fmt_gb(job.memory_gb)} GB, {_fmt_gb(free_mem)} GB free"


def _held_reason(head: QueuedJob, job: QueuedJob, now: float, policy: QueuePolicy) -> str:
    ahead = effective_rank(head, now, policy) > effective_rank(job, now, policy)
    why = "higher priority" if ahead else "submitted earlier"
    return f"held behind job {head.job_id} ({why}, waiting for resources)"


def _wait_infos(
    waiting: list[QueuedJob],
    reasons: dict[str, str],
    pool: _Pool | None,
    never: set[str],
    now: float,
    policy: QueuePolicy,
) -> dict[str, WaitInfo]:
    """WaitInfo for each waiting job, positions following the effective order."""
    infos: dict[str, WaitInfo] = {}
    ahead_cores, ahead_mem, ahead_n = 0.0, 0.0, 0
    for position, job in enumerate(waiting, start=1):
        estimate = None
        if pool is not None and job.job_id not in never:
            ahead_cores, ahead_mem, ahead_n = ahead_cores + job.cores, ahead_mem + job.memory_gb, ahead_n + 1
            estimate = _estimate(ahead_cores, ahead_mem, ahead_n, pool, now)
        rank = effective_rank(job, now, policy)
        infos[job.job_id] = WaitInfo(position, reasons[job.job_id], PRIORITIES[rank], estimate)
    return infos


def _estimate(cores: float, memory_gb: float, slots: int, pool: _Pool, now: float) -> float | None:
    """When releases with a known end first leave room for this much; None if they never do."""
    trial = _Pool(pool.cores, pool.memory_gb, pool.slots)
    if trial.room(cores, memory_gb, slots):
        return now
    known = [(r.expected_end_at, r) for r in pool.active if r.expected_end_at is not None]
    for end, job in sorted(known, key=lambda pair: (pair[0], pair[1].job_id)):
        trial.give_back(job)
        if trial.room(cores, memory_gb, slots):
            return max(now, end)
    return None


def _fmt_cores(cores: float) -> str:
    """4.0 -> "4", 2.5 -> "2.5"."""
    return f"{cores:.2f}".rstrip("0").rstrip(".")


def _fmt_gb(gb: float) -> str:
    """6 -> "6.0", 2.5 -> "2.5", 0.25 -> "0.25"."""
    text = f"{gb:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
