"""The job lifecycle as a model: the statuses and the only transitions allowed."""
from __future__ import annotations

import pytest

from app.lifecycle import ALLOWED, TERMINAL, InvalidTransition, JobStatus, check_transition


def test_terminal_statuses_are_the_three_ends() -> None:
    assert TERMINAL == ("completed", "failed", "cancelled")
    assert [s for s in JobStatus if s.terminal] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]


@pytest.mark.parametrize("old", list(JobStatus))
@pytest.mark.parametrize("new", list(JobStatus))
def test_only_listed_transitions_pass(old: JobStatus, new: JobStatus) -> None:
    if new in ALLOWED[old]:
        assert check_transition(old.value, new.value) is new
    else:
        with pytest.raises(InvalidTransition):
            check_transition(old, new)


def test_nothing_leaves_a_finished_job_and_nothing_skips_running() -> None:
    for end in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        with pytest.raises(InvalidTransition, match="cannot become"):
            check_transition(end, JobStatus.PENDING)
    with pytest.raises(InvalidTransition):
        check_transition(JobStatus.PENDING, JobStatus.COMPLETED)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        check_transition("pending", "paused")
