"""``app.aio.within``: a deadline that holds even against a cancellation swallowed."""
from __future__ import annotations

import asyncio

import pytest

from app.aio import within


async def _swallows_cancellation(ended: list[str]) -> None:
    """Like distributed's ``Client._close``: suppresses a CancelledError and goes on waiting."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(0.5)  # goes on after the cancellation (distributed awaits comms here)
    ended.append("ended")


def test_the_deadline_holds_when_the_work_swallows_its_cancellation() -> None:
    async def scenario() -> tuple[bool, list[str], list[str]]:
        ended: list[str] = []
        ok, _ = await within(_swallows_cancellation(ended), 0.2, "a stubborn close")
        at_return = list(ended)  # asyncio.wait_for would have returned only after "ended"
        await asyncio.sleep(1.0)  # the given-up work ends on its own, later
        return ok, at_return, ended

    ok, at_return, ended = asyncio.run(scenario())
    assert not ok
    assert at_return == []
    assert ended == ["ended"]


def test_a_result_and_an_error_in_time_come_back() -> None:
    async def value() -> int:
        await asyncio.sleep(0.01)
        return 7

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("no")

    assert asyncio.run(within(value(), 5, "value")) == (True, 7)
    with pytest.raises(ValueError, match="no"):
        asyncio.run(within(fails(), 5, "fails"))


def test_cancelling_the_caller_cancels_the_work() -> None:
    async def scenario() -> bool:
        work = asyncio.ensure_future(asyncio.sleep(3600))
        caller = asyncio.ensure_future(within(work, 60, "work"))
        await asyncio.sleep(0.05)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0)
        return work.cancelled()

    assert asyncio.run(scenario())
