"""A job's lifecycle: its statuses and the transitions between them.

::

    pending ──► running ──► completed
       │  ▲        │
       │  └────────┤ (requeued: preempted, lost tasks, cluster stopped, retried)
       ▼           ▼
    cancelled / failed      (terminal: nothing leaves them)

Every status change the engine makes is a named transition of the job's record
(:class:`app.job_model.Job`), checked by :func:`check_transition`, so a bug
that would move a finished job, or skip ``running``, raises instead of writing.
"""
from __future__ import annotations

from enum import Enum


class Spelled(str, Enum):
    """A name the API and the store spell as its value, in text too (``f"{JobStatus.FAILED}"`` is "failed")."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class JobStatus(Spelled):
    """The ``status`` of a job, as the API and the store spell it."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


TERMINAL = tuple(s.value for s in JobStatus if s.terminal)
ALL = tuple(s.value for s in JobStatus)

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A status change the lifecycle does not allow (a bug in the engine, never user input)."""


def check_transition(old: str | JobStatus, new: str | JobStatus) -> JobStatus:
    """``new`` as a JobStatus if ``old`` may become it; raises InvalidTransition otherwise."""
    before, after = JobStatus(old), JobStatus(new)
    if after not in ALLOWED[before]:
        raise InvalidTransition(f"a {before.value} job cannot become {after.value}")
    return after


class Interrupt(str, Enum):
    """Why the engine stopped a running attempt (its attempt outcome)."""

    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    MEMORY = "memory"
    LOST_TASKS = "lost_tasks"
    CLUSTER_STOPPED = "cluster_stopped"
    SCALED_DOWN = "scaled_down"
    SHUTDOWN = "shutdown"


class Outcome(Spelled):
    """How an attempt ended (its ``outcome``), besides the requeues named by :class:`Interrupt`."""

    COMPLETED = "completed"
    FAILED = "failed"  # a data or code error, or over its memory: the job fails
    WORKER_LOST = "worker_lost"  # retried up to JOB_MAX_ATTEMPTS
    OUT_OF_MEMORY = "out_of_memory"  # retried once with doubled memory
    SERVER_RESTART = "server_restart"  # the server stopped during it: requeued at the next start
    CANCELLED = "cancelled"


# attempt outcomes that say nothing against the job: it is not charged an attempt for them
NOT_FAILURES = ("preempted", "server_restart", "cancelled", "completed", "lost_tasks", "cluster_stopped",
                "scaled_down", None)

REQUEUED_BY = {
    Interrupt.PREEMPTED: "room was needed for a CRITICAL job",
    Interrupt.LOST_TASKS: "the scheduler no longer held the attempt's tasks",
    Interrupt.CLUSTER_STOPPED: "the cluster was stopped; the job runs again when workers are back",
    Interrupt.SCALED_DOWN: "its worker was removed by scaling down; the job runs again",
}
