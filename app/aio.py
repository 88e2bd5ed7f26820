"""Waits that end when they say they do.

``asyncio.wait_for(aw, t)`` on Python 3.11 cancels ``aw`` at ``t`` and then waits for the
cancellation to be over, however long that takes. Code that swallows a cancellation
makes that forever: distributed's ``Client._close`` suppresses ``CancelledError``
around its waits for the report task (``distributed/client.py``,
``_wait_for_handle_report_task``) and goes on awaiting comms. A shutdown path then
hangs on the very line meant to bound it. :func:`within` gives up at the deadline: the
work is cancelled and left to end on its own, and the caller goes on.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

log = logging.getLogger(__name__)


def _retrieve(task: "asyncio.Future[Any]") -> None:
    """Read a given-up task's outcome when it ends, so asyncio logs no 'never retrieved'."""
    if not task.cancelled():
        exc = task.exception()
        if exc is not None:
            log.debug("%s ended after it was given up: %r", task, exc)


async def within(aw: Awaitable[Any], seconds: float, what: str) -> tuple[bool, Any]:
    """``(True, result)`` if ``aw`` ends within ``seconds``, else ``(False, None)``.

    On the deadline ``aw`` is cancelled and not waited for. Its exception, if it
    raises in time, is raised here. Cancelling the caller cancels ``aw`` too.
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if done:
        return True, task.result()
    task.cancel()
    task.add_done_callback(_retrieve)
    log.warning("%s did not end within %.0f s; given up", what, seconds)
    return False, None
