"""Warnings raised inside a job's tasks on the workers, written to the job's log.

On each worker (a :class:`CaptureWarnings` worker plugin, registered when the cluster
starts) one process-wide ``warnings.showwarning`` hook finds the task running in the
calling thread (``get_worker().get_current_task()``) and the job its ``job`` annotation
names, and sends the warning to the scheduler as a Dask event under :data:`TOPIC`
(``Worker.log_event``). ``warnings.catch_warnings`` is not used: it swaps module globals,
so two task threads of one worker would take each other's warnings.

Repeats are counted on the worker and sent again only when the count reaches 10, 100,
1000…; the server (:class:`WarningLog`, subscribed with ``Client.subscribe_topic``) writes
each distinct warning once with its place, a line when its count passes a power of ten,
and at most :data:`MAX_LINES` lines per job. Messages are cut to :data:`MAX_CHARS`; the
text is stored as raised (pages escape the log when they show it).

Every warning reaches the hook ("always" is appended to the filters, behind the
interpreter's own ``ignore`` entries), so a job warns in its log even when an earlier job
on the same worker raised the same warning; the worker's stderr still shows each place
once, as Python's default does.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import warnings
from typing import Any, Callable

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)

TOPIC = "processing-task-warning"
MAX_CHARS = 500  # of one warning's message
MAX_LINES = 20  # warning lines per job; one more says the rest were not logged
KEPT_COUNTS = 10_000  # (job, warning) counters a worker keeps
KEPT_JOBS = 1_000  # jobs the server keeps counting for

_lock = threading.Lock()
_original: Callable[..., Any] | None = None
_counts: collections.OrderedDict[tuple, int] = collections.OrderedDict()
_shown: collections.OrderedDict[tuple, None] = collections.OrderedDict()


def _current_job() -> tuple[Any, str] | None:
    """(worker, job annotation) of the task running in this thread, or None outside a job's task."""
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
        ts = worker.state.tasks.get(key)
    except (ValueError, KeyError, AttributeError):  # not a worker, or not a task thread
        return None
    job = ((ts.annotations or {}) if ts is not None else {}).get("job")
    return (worker, str(job)) if job else None


def _is_milestone(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


def _show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
          line: str | None = None) -> None:
    """The hook: count and send a job task's warning; show each place once on stderr."""
    place = (category, str(message), filename, lineno)
    try:
        found = _current_job()
        if found is not None:
            worker, job = found
            with _lock:
                count = _counts.pop((job, place), 0) + 1
                _counts[(job, place)] = count
                while len(_counts) > KEPT_COUNTS:
                    _counts.popitem(last=False)
            if _is_milestone(count):
                worker.log_event(TOPIC, {
                    "job": job, "category": category.__name__, "message": str(message)[:MAX_CHARS],
                    "where": f"{os.path.basename(filename)}:{lineno}", "count": count, "worker": worker.address})
    except Exception:  # noqa: BLE001 - a warning must never fail the task that raised it
        log.debug("could not report a task's warning", exc_info=True)
    with _lock:
        if place in _shown:
            return
        _shown[place] = None
        if len(_shown) > KEPT_COUNTS:
            _shown.popitem(last=False)
    if _original is not None:
        _original(message, category, filename, lineno, file, line)


def install() -> None:
    """Route this process's warnings through the hook (once per process)."""
    global _original
    with _lock:
        if _original is not None:
            return
        _original = warnings.showwarning
        warnings.showwarning = _show
        warnings.simplefilter("always", append=True)


class CaptureWarnings(WorkerPlugin):
    """Installs the hook on every worker, those that join later included."""

    name = "processing-task-warnings"

    def setup(self, worker: Any) -> None:
        install()


class WarningLog:
    """Writes the warnings heard under :data:`TOPIC` to their jobs' logs (``write`` is
    ``Store.log_job``), bounded per job; the handler runs on the server's loop."""

    def __init__(self, write: Callable[..., None]):
        self._write = write
        # job id -> {"lines": n, "seen": {(category, message, where): {worker: count}}, "logged": {…: total}}
        self._jobs: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    async def attach(self, client: Any, by_value: bool = False) -> None:
        """Install the hook on the workers and subscribe to their events."""
        if by_value:  # workers elsewhere cannot import this project
            import cloudpickle

            import app.task_warnings as module
            cloudpickle.register_pickle_by_value(module)
        await client.register_plugin(CaptureWarnings())
        client.subscribe_topic(TOPIC, self.heard)

    def heard(self, event: tuple[float, dict[str, Any]]) -> None:
        """One event: a warning's first occurrence in a job on a worker, or its count at a power of ten."""
        try:
            self._heard(event[1])
        except Exception:  # noqa: BLE001 - the log is a record, never a reason to fail
            log.warning("could not log a task's warning", exc_info=True)

    def _heard(self, msg: dict[str, Any]) -> None:
        job_id = str(msg["job"]).split("/", 1)[0]
        state = self._jobs.pop(job_id, None) or {"lines": 0, "seen": {}, "logged": {}}
        self._jobs[job_id] = state
        while len(self._jobs) > KEPT_JOBS:
            self._jobs.popitem(last=False)
        what = (str(msg["category"])[:100], str(msg["message"])[:MAX_CHARS], str(msg["where"])[:300])
        per_worker = state["seen"].setdefault(what, {})
        per_worker[str(msg.get("worker"))] = max(int(msg.get("count") or 1), per_worker.get(str(msg.get("worker")), 0))
        total = sum(per_worker.values())
        logged = state["logged"].get(what)
        if logged is not None and len(str(total)) <= len(str(logged)):
            return  # no new power of ten
        if state["lines"] > MAX_LINES:
            return
        state["lines"] += 1
        category, message, where = what
        details = {"category": category, "where": where, "count": total}
        if state["lines"] > MAX_LINES:
            self._write(job_id, "task_warning", f"more warnings were raised by this job's tasks; only the first "
                        f"{MAX_LINES} lines about them are kept", level="warning", details={"limit": MAX_LINES})
        elif logged is None:
            state["logged"][what] = total
            self._write(job_id, "task_warning", f"a task warned: {category}: {message} ({where})",
                        level="warning", details=details)
        else:
            state["logged"][what] = total
            self._write(job_id, "task_warning", f"a task warned {total} times so far: {category}: {message} ({where})",
                        level="warning", details=details)
