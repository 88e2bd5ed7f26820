"""The engine's consistency watchdog: no job stays "running" without work behind it.

Every ``interval`` seconds it compares three records of the same thing:

- the store: a job whose row says ``running`` but that has no live attempt in the
  engine is failed, with the reason;
- the scheduler: an attempt whose submitted tasks the scheduler no longer knows
  (seen on two checks in a row), or that has made no progress while the scheduler
  had nothing to do for ``idle_after_s`` (no worker thread running a task, no other
  job's task processing, none of its own tasks processing or waiting for a worker to
  come back, for at most ``WORKED_ON_GRACE_S``), is requeued with the outcome
  ``lost_tasks`` — not a failure of the job, unless ``JOB_MAX_LOST_TASKS`` attempts in a
  row ended so (a worker paused for memory by its own baseline runs nothing, forever):
  then the job fails, naming the paused workers;
- each repair is logged with the job and the attempt, counted by outcome in
  Prometheus (``processing_job_attempts``), and named by ``/health`` for a while.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .lifecycle import Interrupt, JobStatus

if TYPE_CHECKING:
    from .jobs import JobEngine
    from .runner import Attempt

log = logging.getLogger(__name__)
STUCK_BEFORE_SUBMIT_S = 120.0  # an attempt that never got its tasks to the scheduler, on an idle cluster
# Task states in which the scheduler is working on a task, whatever the sampled worker metrics say
# (a worker restarted by its nanny reports no activity for a while; its task waits as "no-worker").
WORKED_ON = frozenset({"processing", "no-worker"})
# ...but for a bounded time: a task held "processing" by a worker that never runs it (paused
# for memory, say) would keep the job running forever. Past this long with no task of the
# attempt ending, the usual rule applies again (idle scheduler -> lost_tasks, requeued).
WORKED_ON_GRACE_S = 30.0


@dataclass
class _Seen:
    """What the previous check saw of one attempt."""

    done: int
    since: float  # when ``done`` last changed, or the scheduler was last seen working on it
    unknown_since: float | None = None
    progressed: float = 0.0  # when ``done`` last changed (or the attempt was first seen)
    others_busy_at: float = 0.0  # when another job's task was last seen processing


def lost_in_a_row(attempts: list[dict[str, Any]], number: int) -> int:
    """How many attempts just before attempt ``number`` ended as ``lost_tasks``, in a row."""
    streak = 0
    for row in sorted((a for a in attempts if a["number"] < number), key=lambda a: a["number"], reverse=True):
        if row["outcome"] != Interrupt.LOST_TASKS.value:
            break
        streak += 1
    return streak


class Watchdog:
    """Runs next to the engine, on the server loop; each check costs one scheduler call."""

    def __init__(self, engine: "JobEngine", interval: float = 2.0, idle_after_s: float = 5.0):
        self.engine = engine
        self.interval = interval
        self.idle_after_s = idle_after_s
        self._seen: dict[tuple[str, int], _Seen] = {}
        self._busy_at = time.time()  # the last moment the scheduler was seen with work
        self._workers: frozenset[str] = frozenset()  # the workers' addresses at the last check
        self.checks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one bad check
                log.exception("watchdog check failed")

    async def check(self) -> None:
        """One pass over the store and the scheduler."""
        self.checks += 1
        await self._orphans()
        await self._lost()

    async def _orphans(self) -> None:
        engine = self.engine
        jobs = engine.store.jobs
        _, rows = await engine.store.reading(jobs.page, [JobStatus.RUNNING.value], None, 1000, 0, columns=["job_id"])
        for row in rows:  # read on the read pool: a job may have ended or been requeued since
            job_id = row["job_id"]
            if job_id in engine.running or job_id in engine.pending:
                continue
            held = jobs.held(job_id)
            if held is None or held["status"] == JobStatus.RUNNING:
                attempts = await engine.store.reading(engine.store.attempts, job_id)
                if job_id in engine.running or job_id in engine.pending:
                    continue  # requeued or started while its attempts were read
                engine.fail_orphan(job_id, attempts)

    async def _lost(self) -> None:
        engine = self.engine
        client = engine.cluster.client
        if client is None or not engine.running:
            self._seen.clear()
            return
        now = time.time()
        snap = engine.sampler.latest
        counts = snap.get("jobs", {})
        self.note_busy(snap, now)
        attempts = [attempt for _, attempt, _ in engine.running.values()]
        live = {(a.job_id, a.number) for a in attempts}
        self._seen = {k: v for k, v in self._seen.items() if k in live}
        pending = {a.annotation: [f for f in list(a.futures) if f.status == "pending"] for a in attempts}
        keys = [f.key for futures in pending.values() for f in futures]
        known = await client.scheduler.get_task_status(keys=keys) if keys else {}
        for attempt in attempts:
            reason = self._verdict(attempt, pending[attempt.annotation], known, counts, now)
            if reason:
                self._seen.pop((attempt.job_id, attempt.number), None)
                earlier = await engine.store.reading(engine.store.attempts, attempt.job_id)
                engine.lost_tasks(attempt.job_id, attempt, reason, lost_in_a_row(earlier, attempt.number))

    def note_busy(self, snap: dict[str, Any], now: float) -> None:
        """Remember when a worker was last seen running a task (its thread executing one).

        Not the workers' queued tasks: a worker paused for memory holds the ones sent to it
        as "ready" without running them, and counting those kept an attempt stuck on such a
        worker alive forever. Other jobs' tasks processing count per attempt (see ``_verdict``)."""
        workers = snap.get("workers") or []
        present = frozenset(str(w.get("address")) for w in workers)
        if any(int(w.get("executing") or 0) for w in workers) or present != self._workers:
            # a worker joined or left (a nanny restarting one killed for memory, say): the
            # scheduler moves that worker's tasks meanwhile, which is not idleness either
            self._busy_at = now
        self._workers = present

    def _verdict(self, attempt: "Attempt", futures: list[Any], known: dict[Any, Any],
                 counts: dict[str, Any], now: float) -> str | None:
        """Why this attempt is lost, or None while it is fine."""
        done = int((counts.get(attempt.annotation) or {}).get("done", 0))
        seen = self._seen.setdefault((attempt.job_id, attempt.number), _Seen(done, now, progressed=now))
        own = (attempt.annotation, f"{attempt.annotation}/merge")
        if any(int((c or {}).get("processing") or 0) > 0 for key, c in counts.items() if key not in own):
            seen.others_busy_at = now  # the scheduler works on other jobs' tasks: this one may wait its turn
        if done != seen.done:
            seen.done, seen.since, seen.progressed = done, now, now
        unknown = [f.key for f in futures if known.get(f.key) is None]
        if unknown:
            if seen.unknown_since is None:
                seen.unknown_since = now  # it may have been submitted a moment ago: look again
            elif now - seen.unknown_since >= self.idle_after_s:
                return f"the scheduler does not know {len(unknown)} of its task(s) (e.g. {unknown[0]!r})"
        else:
            seen.unknown_since = None
        worked_on = any(known.get(f.key) in WORKED_ON for f in futures) or _processing(counts, attempt.annotation)
        if worked_on and now - seen.progressed < WORKED_ON_GRACE_S:
            # the scheduler has a task of it on a worker (one may be stopped, or restarting and
            # silent), or waits for a worker (a nanny restarting one): not lost, for a while
            seen.since = now
        idle = now - max(self._busy_at, seen.others_busy_at, seen.since)
        if attempt.stage != "compute" or idle < self.idle_after_s or not self._has_workers():
            return None
        if futures:
            return f"no progress for {idle:.0f} s while the scheduler had no task to run"
        if idle >= STUCK_BEFORE_SUBMIT_S:
            return f"no task reached the scheduler in {idle:.0f} s while it had nothing to run"
        return None

    def _has_workers(self) -> bool:
        """Idle without workers is waiting for them, not lost."""
        return bool(self.engine.sampler.latest.get("n_workers", 0))


def _processing(counts: dict[str, Any], annotation: str) -> bool:
    """Whether the progress plugin counts a task of the attempt (its fragments, or its merges
    annotated ``…/merge``) as processing: the futures the engine holds are only the graph's
    root, which waits while those run."""
    return any(int((counts.get(key) or {}).get("processing") or 0) > 0
               for key in (annotation, f"{annotation}/merge"))
