"""Preloaded into the embedded cluster's scheduler and nannies (Dask's ``preload``).

They run as children of the server process. A child whose parent is gone (the
server was killed with ``kill -9``, so it could not close them) closes itself
within about a second instead of living on as an orphan holding ports and memory.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from .aio import within

log = logging.getLogger(__name__)
CHECK_EVERY_S = 0.5
_watches: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks


async def _watch(server: Any, parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(CHECK_EVERY_S)
    log.warning("the server process %d is gone: closing %s", parent, type(server).__name__)
    try:
        await within(server.close(), 10, f"closing {type(server).__name__}")
    finally:
        os._exit(0)  # whatever close left running (threads, a worker process) must not keep us alive


def dask_setup(server: Any) -> None:
    """Start watching the parent process from the server's own loop.

    In the scheduler, also keep the log to what matters: the server's sampler reads the
    progress plugin every second, and distributed logs each such call at INFO.
    """
    if type(server).__name__ == "Scheduler":
        logging.getLogger("distributed.worker").setLevel(logging.WARNING)
    task = asyncio.get_running_loop().create_task(_watch(server, os.getppid()))
    _watches.add(task)
    task.add_done_callback(_watches.discard)
