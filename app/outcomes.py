"""How an attempt ends, and how the engine stops one: a mixin of :class:`app.jobs.JobEngine`.

Completed (its result registered and recorded), failed (a data or code error, once),
transient (a lost worker: retried up to ``JOB_MAX_ATTEMPTS``; out of memory: retried
once with doubled memory; a stop or scale-down: requeued, not a failure), cancelled,
preempted, or lost by the watchdog. Each end is written to the store and to the job's log.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import Conflict
from .job_model import Job
from .lifecycle import NOT_FAILURES, REQUEUED_BY, Interrupt, JobStatus, Outcome
from .runner import Attempt, Stopped, is_transient
from .times import iso

log = logging.getLogger("app.jobs")
SCALE_DOWN_GRACE_S = 30.0  # a worker loss this soon after a scale-down is the scale-down's doing


class AttemptOutcomes:
    """Outcomes of attempts, cancel and interrupts; the engine supplies the state they use."""

    store: Any
    cluster: Any
    datasets: Any
    settings: Any
    journal: Any
    clock: Any
    running: dict[str, Any]
    pending: dict[str, Any]
    incidents: Any
    scaled_down_at: float
    sampler: Any

    # -- outcomes ----------------------------------------------------------------
    async def _succeeded(self, attempt: Attempt, outcome: dict[str, Any]) -> None:
        if attempt.stop_reason:
            raise Stopped(attempt.stop_reason)
        job_id = attempt.job_id
        attempt.stage = "register"
        result_dataset_id = None
        if outcome.get("partitions"):
            info = {**outcome["partitions"], "created_at": iso(self.clock())}
            self.datasets.set_partitions(attempt.dataset["dataset_id"], info, self._reading())
        path = outcome.get("dataset_path")
        if path:
            ds = await self.datasets.register(
                path, f"{job_id}_result", f"Result of {attempt.operation} ({job_id})",
                f"Written by {job_id} from {attempt.dataset['dataset_id']}", "parquet", managed=True,
                origin_job_id=job_id)
            result_dataset_id = ds["dataset_id"]
        attempt.stage = "record"
        if attempt.stop_reason:  # cancelled while the result was being registered
            raise Stopped(attempt.stop_reason)
        result = outcome["result"]
        if isinstance(result, dict) and result_dataset_id:
            result = {**result, "result_dataset_id": result_dataset_id}
        self._end_attempt(attempt, Outcome.COMPLETED)
        self.completed_attempts[job_id] = attempt.annotation
        self._finish(job_id, Job.complete, result=result, result_kind=outcome.get("kind"),
                     result_dataset_id=result_dataset_id, cache_key=outcome.get("cache_key"),
                     cached_from=outcome.get("cached_from"))

    def _settle(self, attempt: Attempt, exc: BaseException) -> None:
        """Record a failed or stopped attempt; if even that fails, fail the job plainly."""
        try:
            self._failed(attempt, exc)
        except Exception:  # noqa: BLE001 - the store or a bug: the job must still end
            log.exception("recording the end of job %s attempt %d failed", attempt.job_id, attempt.number)
            try:
                self._change(attempt.job_id, Job.fail, iso(self.clock()), job_error(exc, attempt.stage))
            except Exception:  # noqa: BLE001 - the watchdog fails it once the store answers
                log.exception("job %s could not be marked failed", attempt.job_id)
            self._forget(attempt.job_id)

    async def _memory_evidence(self, attempt: Attempt) -> str | None:
        """What the nannies told the scheduler about workers restarted for memory during the attempt."""
        client = self.cluster.client
        if client is None:
            return None
        try:
            events = await asyncio.wait_for(client.get_events("worker-restart-memory"), 5)
        except Exception:  # noqa: BLE001 - no evidence is no evidence
            log.debug("could not read the scheduler's memory events", exc_info=True)
            return None
        hits = [msg for at, msg in events if at >= attempt.started_at - 1]
        if not hits:
            return None
        last = hits[-1]
        return (f"{len(hits)} worker restart(s) by the nanny for memory, the last of {last.get('worker')} "
                f"at {float(last.get('rss') or 0) / 1e9:.2f} GB")

    def _failed(self, attempt: Attempt, exc: BaseException) -> None:
        if attempt.recorded or attempt.stop_reason:
            return  # the engine recorded what it did when it stopped the attempt
        job_id = attempt.job_id
        error = job_error(exc, attempt.stage)
        attempt.error = exc
        if is_transient(exc):
            return self._transient(attempt, error)
        self._end_attempt(attempt, Outcome.FAILED, error["message"])
        log.info("job %s failed during %s: %s", job_id, attempt.stage, _short(error["message"]))
        self._finish(job_id, Job.fail, error=error)

    def _transient(self, attempt: Attempt, error: dict[str, Any]) -> None:
        """Worker or scheduler loss: out of memory, a scale-down, or retried up to JOB_MAX_ATTEMPTS."""
        job_id = attempt.job_id
        if self.cluster.state == "stopping" or not self.cluster.running:
            return self._requeue_attempt(attempt, Interrupt.CLUSTER_STOPPED)
        if attempt.oom_evidence:
            return self._out_of_memory(attempt, error)
        if self.clock() - self.scaled_down_at < SCALE_DOWN_GRACE_S:
            return self._requeue_attempt(attempt, Interrupt.SCALED_DOWN)
        failures = sum(1 for a in self.store.attempts(job_id) if a["outcome"] not in NOT_FAILURES) + 1
        self._end_attempt(attempt, Outcome.WORKER_LOST, error["message"])
        if failures < self.settings.job_max_attempts:
            log.warning("job %s attempt %d lost (%s); retrying", job_id, attempt.number, _short(error["message"]))
            return self._requeue(job_id)
        log.info("job %s failed after %d lost attempts", job_id, failures)
        self._finish(job_id, Job.fail, error=error)

    def _out_of_memory(self, attempt: Attempt, error: dict[str, Any]) -> None:
        """A worker was restarted by its nanny for memory: retry once with double memory, or fail."""
        job = self.get(attempt.job_id)
        declared = float(job["max_memory_gb"] or 0)
        doubled = round(declared * 2, 3)
        retried = any(a["outcome"] == Outcome.OUT_OF_MEMORY for a in self.store.attempts(attempt.job_id))
        if not retried and doubled <= self.capacity().total_memory_gb:
            cause = (f"a worker ran out of memory ({attempt.oom_evidence}); retrying once with "
                     f"max_memory_gb={doubled:g} (doubled from {declared:g})")
            self._end_attempt(attempt, Outcome.OUT_OF_MEMORY, cause)
            self.store.jobs.update(attempt.job_id, max_memory_gb=doubled)
            log.warning("job %s: %s", attempt.job_id, cause)
            return self._requeue(attempt.job_id)
        what = "after a retry with doubled memory" if retried else "and the cluster has no room to double it"
        message = (f"a worker ran out of memory running this job ({attempt.oom_evidence}) {what}; "
                   f"resubmit with a larger max_memory_gb than {declared:g}, or use bigger workers "
                   "(DASK_MEMORY_LIMIT)")
        self._end_attempt(attempt, Outcome.OUT_OF_MEMORY, message)
        self._finish(attempt.job_id, Job.fail, error={"type": "OutOfMemory", "message": message,
                                                      "stage": error.get("stage")})

    def _requeue_attempt(self, attempt: Attempt, reason: Interrupt) -> None:
        """End the attempt with an outcome that is not a failure and put the job back in line."""
        attempt.recorded = True
        self._end_attempt(attempt, reason.value, REQUEUED_BY[reason])
        job = self.store.jobs.get(attempt.job_id)
        if job is not None and job["status"] == JobStatus.RUNNING:
            self._requeue(attempt.job_id)

    def _end_attempt(self, attempt: Attempt, outcome: str, cause: str | None = None) -> None:
        """Record the attempt's end in the store and in the job's log."""
        self.store.end_attempt(attempt.attempt_id, str(outcome), cause)
        self.journal.attempt_ended(attempt.job_id, attempt.number, outcome, cause, attempt.error)

    def _requeue(self, job_id: str) -> None:
        self.journal.requeued(job_id)
        self._change(job_id, Job.requeue)
        self.pending[job_id] = self._queued(self.store.jobs.get(job_id))

    # -- cancel and preemption -----------------------------------------------------
    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job at once, or a running one (its futures are cancelled)."""
        job = self.get(job_id)
        if JobStatus(job["status"]).terminal:
            raise Conflict(f"job {job_id} is already {job['status']}; only pending or running jobs can be cancelled",
                           {"status": job["status"]}, code="job_finished")
        if job_id in self.running:
            self._stop_running(self.running[job_id][1], Interrupt.CANCELLED, Outcome.CANCELLED, "cancelled by request")
        self._finish(job_id, Job.cancel)
        self.kick()
        return self.status(job_id)

    def _stop_running(self, attempt: Attempt, reason: Interrupt, outcome: str, cause: str) -> None:
        """Take a running attempt out of the engine, stop its futures and record how it ended;
        the caller then ends or requeues the job."""
        self.running.pop(attempt.job_id, None)
        self._interrupt_attempt(attempt, reason)
        attempt.recorded = True
        self._end_attempt(attempt, outcome, cause)

    def _interrupt(self, job_id: str, reason: Interrupt) -> None:
        """Stop a running attempt from the loop and put its job back in the queue."""
        entry = self.running.pop(job_id, None)
        if entry is None:
            return
        _, attempt, _ = entry
        self._interrupt_attempt(attempt, reason)
        self._requeue_attempt(attempt, reason)

    def interrupt_all(self, reason: Interrupt) -> int:
        """Requeue every running attempt (the cluster is being stopped); returns how many."""
        jobs = list(self.running)
        for job_id in jobs:
            self._interrupt(job_id, reason)
        return len(jobs)

    def lost_tasks(self, job_id: str, attempt: Attempt, reason: str, earlier: int = 0) -> None:
        """The watchdog found an attempt with no work behind it: requeue it (outcome ``lost_tasks``),
        or fail the job when ``earlier`` attempts just before it ended so too (``JOB_MAX_LOST_TASKS``
        in a row): nothing runs its tasks, and requeueing again would loop forever."""
        entry = self.running.get(job_id)
        if entry is None or entry[1] is not attempt:
            return
        if earlier + 1 < self.settings.job_max_lost_tasks:
            self.report(f"job {job_id} attempt {attempt.number} lost its tasks ({reason}); requeued")
            self._interrupt(job_id, Interrupt.LOST_TASKS)
            return self.kick()
        message = (f"{earlier + 1} attempts in a row had no worker running their tasks (the last: {reason}); "
                   f"the job failed instead of being requeued again (JOB_MAX_LOST_TASKS="
                   f"{self.settings.job_max_lost_tasks}){self._paused_workers()}")
        self._stop_running(attempt, Interrupt.LOST_TASKS, Interrupt.LOST_TASKS.value, message)
        self.report(f"job {job_id} attempt {attempt.number} lost its tasks ({reason}); failed after "
                    f"{earlier + 1} in a row")
        self._finish(job_id, Job.fail, error={"type": "LostTasks", "message": message, "stage": "watchdog"})
        self.kick()

    def _paused_workers(self) -> str:
        """Why no worker may be running anything: the workers paused for memory, as the scheduler last said."""
        workers = self.sampler.latest.get("workers") or []
        paused = [w for w in workers if w.get("status") == "paused"]
        if not paused:
            return ""
        named = ", ".join(f"{w.get('name')} ({float(w.get('memory_bytes') or 0) / 1e9:.2f} of "
                          f"{float(w.get('memory_limit_bytes') or 0) / 1e9:.2f} GB)" for w in paused[:5])
        return (f"; {len(paused)} of {len(workers)} workers are paused for memory: {named}. Give the workers "
                "more memory (DASK_MEMORY_LIMIT) or fewer per host")

    def fail_orphan(self, job_id: str, attempts: list[dict[str, Any]]) -> None:
        """A job the store says is running, with no live attempt: fail it with the reason.
        ``attempts``: its attempt rows, read off the loop by the caller."""
        message = "the job was marked running but no attempt of it was alive in the engine; failed by the watchdog"
        for attempt in attempts:
            if attempt["ended_at"] is None:
                self.store.end_attempt(attempt["id"], Outcome.FAILED.value, message)
                self.journal.attempt_ended(job_id, attempt["number"], Outcome.FAILED, message)
        self.report(f"job {job_id} was running with no live attempt; failed")
        self._finish(job_id, Job.fail, error={"type": "Orphaned", "message": message, "stage": "watchdog"})

    def report(self, message: str) -> None:
        """Something the engine repaired: logged, and shown by /health for a while."""
        log.warning("%s", message)
        self.incidents.append((self.clock(), message))

    def incidents_since(self, moment: float) -> list[str]:
        return [message for at, message in self.incidents if at >= moment]

    def _interrupt_attempt(self, attempt: Attempt, reason: Interrupt) -> None:
        with attempt.lock:
            attempt.stop_reason = reason
            futures = list(attempt.futures)
        # identical jobs share task keys (Dask names tasks by their inputs) and this client's
        # futures: cancelling a shared key would cancel the other job's work too
        shared = {f.key for _, other, _ in self.running.values() if other is not attempt for f in list(other.futures)}
        futures = [f for f in futures if f.key not in shared]
        if futures and self._client is not None:
            asyncio.get_running_loop().run_in_executor(self.executor, _cancel, self._client, futures)


def job_error(exc: BaseException, stage: str) -> dict[str, Any]:
    """The job's ``error``: type, one clean message, and the stage it happened in."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    name = type(exc).__name__
    if not message.startswith(name):
        message = f"{name}: {message}"
    return {"type": name, "message": f"{message} (during {stage})", "stage": stage}


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _cancel(client: Any, futures: list[Any]) -> None:
    try:
        client.cancel(futures, force=True)
    except Exception:
        log.debug("cancelling futures failed", exc_info=True)
