"""The ETA's arithmetic: the rate is measured up to the latest task's end, not the sample."""
from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from app.times import eta_at, eta_seconds


def test_counts_as_of_the_last_task_end_give_the_rate_of_then() -> None:
    # started at 100; 25 % was done at 101 (the latest task's end); the sample comes at 101.5
    assert math.isclose(eta_at(101.5, 100.0, 25.0, 0.5), 2.5)  # end at 101 + 3 × 1 s = 104
    # read as of the sample, the same counts predicted the end at 101.5 + 3 × 1.5 = 106
    assert math.isclose(101.5 + eta_seconds(1.5, 25.0), 106.0)


def test_nothing_done_has_no_eta_and_a_late_job_has_no_negative_one() -> None:
    assert eta_at(10.0, 0.0, 0.0, None) is None
    assert eta_at(50.0, 0.0, 99.0, 45.0) == 0.0  # its predicted end (5.05 s) has passed


@given(now=st.floats(0, 1e6), elapsed=st.floats(0, 1e4), share=st.floats(0.1, 100), lag=st.one_of(st.none(), st.floats(0, 1e5)))
def test_without_lag_it_is_the_plain_rate_and_a_lag_never_reaches_before_the_start(
        now: float, elapsed: float, share: float, lag: float | None) -> None:
    started = now - elapsed
    eta = eta_at(now, started, share, lag)
    assert eta is not None and eta >= 0.0
    if not lag:
        assert math.isclose(eta, eta_seconds(max(1e-3, now - started), share), rel_tol=1e-9, abs_tol=1e-6)


def test_the_rate_is_timed_from_the_first_task_on_a_worker() -> None:
    # started at 100, its first task reached a worker at 102 (planning, metadata, a queue);
    # 25 % was done at 103: 1 s of work for a quarter, 3 s left, so the end is at 106
    assert math.isclose(eta_at(103.0, 100.0, 25.0, 0.0, since_began=1.0), 3.0)
    # timed from the start instead, the same counts said 9 s left: the 2 s before work thrice over
    assert math.isclose(eta_at(103.0, 100.0, 25.0, 0.0), 9.0)


@given(now=st.floats(0, 1e6), elapsed=st.floats(0, 1e4), share=st.floats(0.1, 100),
       lag=st.one_of(st.none(), st.floats(0, 1e5)), began=st.one_of(st.none(), st.floats(0, 1e5)))
def test_a_first_task_time_out_of_range_is_clamped(now: float, elapsed: float, share: float,
                                                   lag: float | None, began: float | None) -> None:
    """Clocks of another host, or a count older than the attempt: never a negative ETA, never
    more than timing from the attempt's start gives."""
    eta = eta_at(now, now - elapsed, share, lag, since_began=began)
    assert eta is not None and 0.0 <= eta <= eta_at(now, now - elapsed, share, lag) + 1e-6
