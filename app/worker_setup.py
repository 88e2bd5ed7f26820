"""Preloaded into the embedded cluster's worker processes (Dask's ``preload``).

``dask_setup`` imports the operations' modules in a thread beside the worker's start, so
the first job on a new worker does not pay for them, and lowers the CPU priority of the whole worker process to
``PROCESSING_WORKER_NICE`` (from ``DASK_WORKER_NICE``): the workers still get every
idle cycle, but the API, the dashboard and the scheduler in the server process come
first when both want the machine's cores.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)
ENV = "PROCESSING_WORKER_NICE"


def lower_priority(nice: int, pid: int | None = None) -> int:
    """Set every thread of process ``pid`` (default: this one) to at least ``nice``; threads renice individually on Linux."""
    pid = os.getpid() if pid is None else pid
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # not Linux: the process-wide call is all there is
        tids = [pid]
    changed = 0
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except OSError:  # the thread ended meanwhile
            continue
    return changed


def warm_imports() -> None:
    """The kernels' modules (pandas, pyarrow, duckdb, scipy…), loaded ahead of the first task."""
    try:
        import app.kernels  # noqa: F401
        import app.operations  # noqa: F401
    except Exception:  # noqa: BLE001 - the first task imports them again and reports what fails
        log.exception("importing the operations' modules ahead of the first task failed")


def dask_setup(worker: Any) -> None:
    nice = int(os.environ.get(ENV, "0") or 0)
    if nice > 0:
        lower_priority(nice)
        log.debug("worker %s runs at nice %d", getattr(worker, "name", "?"), nice)
    # Loaded beside the worker's start, not before it: the worker joins the scheduler ~3 s
    # sooner (the imports took that long in the setup, on 2 busy cores), and a task arriving
    # meanwhile waits on Python's import lock for the same modules, not longer. Started after
    # the renice: a new thread takes its creator's nice value.
    threading.Thread(target=warm_imports, name="warm-imports", daemon=True).start()
