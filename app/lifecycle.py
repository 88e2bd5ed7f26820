"""A job's lifecycle: its statuses and the transitions between them.

::

    pending ──► running ──► completed
       │  ▲        │
       │  └────────┤ (requeued: preempted, lost tasks, cluster stopped, retried)
       ▼           ▼
    cancelled / failed      (terminal: nothing leaves them)

Every status change the engine makes goes through :func:`check_transition`, so a bug
that would move a finished job, or skip ``running``, raises instead of writing.
"""
from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
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
