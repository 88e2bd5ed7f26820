"""The job engine: validates submissions, keeps the priority queue, starts attempts
on Dask, follows their progress from the scheduler (:mod:`app.job_progress`), and
records every change in the store before reporting it: a job's status changes only by
a named transition of its record (:class:`app.job_model.Job`), written through the job
repository (``store.jobs``).

Dispatch is event-driven (submit, completion, cancel, scale, cluster start and a
new sample all ask for a pass); ``JOB_CHECK_INTERVAL`` is a safety net only.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Callable

from . import queue as q
from . import webhooks
from .batching import BatchWriter, Turns
from .errors import InvalidRequest, NotFound, TooManyRequests
from .models import JobRequest
from .operations import get as get_operation
from .dependencies import Dependencies
from .outcomes import AttemptOutcomes, job_error
from .runner import Attempt, execute, is_transient
from .job_model import Job
from .job_progress import ProgressTracking
from .job_views import JobViews
from .journal import Journal
from .lifecycle import Interrupt, JobStatus, Outcome
from .ids import new_id
from .times import epoch as _ts
from .times import iso
from .watchdog import Watchdog

if TYPE_CHECKING:
    from .cluster import ClusterManager
    from .datasets import DatasetRegistry
    from .metrics import Sampler
    from .settings import Settings
    from .store import Store

log = logging.getLogger(__name__)
INCIDENT_WINDOW_S = 60.0  # /health stays degraded this long after the engine repaired something
DISPATCH_WINDOW = 64  # jobs considered per pass; the rest keep their place (bounds loop time)
DISPATCH_SHARE = 0.25  # at most this share of the loop's time goes to dispatch passes under a burst


class JobEngine(AttemptOutcomes, ProgressTracking, Dependencies, JobViews):
    """Owns the queue and the running attempts of this process; reads are in ``JobViews``."""

    def __init__(self, *, settings: "Settings", store: "Store", cluster: "ClusterManager",
                 datasets: "DatasetRegistry", sampler: "Sampler", executor: Executor,
                 clock: Callable[[], float] = time.time):
        """The engine from its parts; ``clock`` (seconds since the epoch) is what aging,
        backfill, timestamps and grace periods read, so tests can move time."""
        self.settings = settings
        self.store = store
        self.cluster = cluster
        self.datasets = datasets
        self.sampler = sampler
        self.executor = executor
        self.clock = clock
        self.journal = Journal(store.log_job)
        self._init_dependencies()
        self.policy = q.QueuePolicy(aging_s=self.settings.queue_aging_s, preemption=self.settings.preemption,
                                    backfill_window_s=self.settings.queue_backfill_s)
        self.pending: dict[str, q.QueuedJob] = {}
        self.running: dict[str, tuple[q.RunningJob, Attempt, asyncio.Task]] = {}
        self.completed_attempts: dict[str, str] = {}  # job -> its last attempt, until its final counts are read
        self.waiting: dict[str, q.WaitInfo] = {}
        self.done_events: dict[str, asyncio.Event] = {}
        self._client: Any = None
        self._client_address: str | None = None
        self._dispatch_scheduled = False
        self._dispatch_ready_at = 0.0  # monotonic time before which a new pass waits
        self._turns = Turns()  # validations of a burst share the loop with everything else
        self._inserts: BatchWriter[dict[str, Any], dict[str, Any]] = BatchWriter(
            self.store.jobs.insert, self._accepted, name="job-writer")
        self._safety: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self.watchdog = Watchdog(self)
        self._stopping = False
        self._client_lock = asyncio.Lock()
        self.incidents: collections.deque[tuple[float, str]] = collections.deque(maxlen=100)
        self.scaled_down_at = 0.0

    # -- lifecycle ---------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Re-queue in the store what a crash interrupted: running → pending with a ``server_restart``
        attempt. Runs off the loop (it reads and writes SQLite); returns every unfinished job."""
        jobs = self.store.jobs.unfinished()
        for job in jobs:
            if job["status"] == JobStatus.RUNNING:
                for attempt in self.store.attempts(job["job_id"]):
                    if attempt["ended_at"] is None:
                        self.store.end_attempt(attempt["id"], Outcome.SERVER_RESTART.value,
                                               "the server stopped during the attempt")
                        self.journal.attempt_ended(job["job_id"], attempt["number"], Outcome.SERVER_RESTART,
                                                   "the server stopped during the attempt; it runs again")
                self._change(job["job_id"], Job.requeue)
            self.store.jobs.get(job["job_id"])  # held in memory from now on: the loop reads it there
        return jobs

    async def start(self) -> None:
        """Recover what a crash interrupted (in the executor), then dispatch and watch."""
        for job in await asyncio.get_running_loop().run_in_executor(self.executor, self.recover):
            now = self.store.jobs.get(job["job_id"])
            if now is not None and now["status"] == JobStatus.PENDING:  # not cancelled meanwhile
                self.pending[job["job_id"]] = self._queued(now)
        if self.pending:
            log.info("recovered %d unfinished job(s)", len(self.pending))
        self.sampler.listeners.append(self._on_sample)
        loop = asyncio.get_running_loop()
        self._safety = loop.create_task(self._safety_net())
        self._watch = loop.create_task(self.watchdog.run())
        self.kick()

    async def stop(self) -> None:
        """Stop without recording outcomes: interrupted attempts are recovered at next start."""
        self._stopping = True
        for task in filter(None, (self._safety, self._watch)):
            task.cancel()
        await self._inserts.close()  # submissions being committed are answered, and recovered at next start
        for _, attempt, task in list(self.running.values()):
            attempt.stop_reason = Interrupt.SHUTDOWN
            task.cancel()
        await self.release_client()

    async def release_client(self) -> None:
        """Close the job threads' client (the cluster stopped): else it retries the gone scheduler 20 s."""
        async with self._client_lock:
            client, self._client, self._client_address = self._client, None, None
        if client is not None:
            try:
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, client.close, 2), 4)
            except Exception:
                log.debug("compute client close failed", exc_info=True)

    async def _safety_net(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_check_interval)
            self.kick()

    # -- submission --------------------------------------------------------------
    def capacity(self) -> q.Capacity:
        snap, cluster = self.sampler.latest, self.cluster
        up = cluster.running and snap.get("n_workers", 0) > 0
        return q.Capacity(total_cores=snap.get("total_cores", 0) if up else 0,
                          total_memory_gb=(snap.get("total_memory_bytes", 0) / 1e9) if up else 0.0,
                          max_concurrent=self.settings.max_concurrent_jobs, running=up)

    def _ceiling(self) -> q.Capacity | None:
        """What the cluster could give a job: the embedded cluster's planned size (a worker away
        restarting still counts; the configured size while stopped) or more if it has more now;
        another cluster's capacity now, or None while it is not running."""
        cap = self.capacity()
        planned = self.cluster.planned()
        if planned is None:
            return cap if cap.running else None
        return q.Capacity(max(cap.total_cores, planned[0]), max(cap.total_memory_gb, planned[1] / 1e9),
                          self.settings.max_concurrent_jobs)

    async def rerun(self, job_id: str) -> dict[str, Any]:
        """A new job with the same operation, dataset, parameters, priority and reservation
        as ``job_id`` (any status), recording ``rerun_of``; validated again like any submission."""
        job = self.get(job_id)
        return await self.submit({
            "operation": job["operation"], "dataset_id": job["dataset_id"], "parameters": job["parameters"] or {},
            "priority": job["priority"], "max_cores": job["max_cores"], "max_memory_gb": job["max_memory_gb"],
            "cache": not job.get("no_cache"), "depends_on": [],
            **({"notify_url": job["notify_url"]} if job.get("notify_url") else {}),
        }, rerun_of=job_id)

    async def submit(self, body: Any, rerun_of: str | None = None) -> dict[str, Any]:
        """Validate everything, then record the job as pending; answered once it is committed.

        A full queue is refused before validation (cheap under a burst). Validations
        take turns on the loop and submissions arriving together are committed
        together (see :mod:`app.batching`).
        """
        self._refuse_when_full()
        if self._blocking_check(body):
            req = await asyncio.get_running_loop().run_in_executor(self.executor, self._validate, body)
        else:
            req = await self._turns.run(self._validate, body)
        self._refuse_when_full()
        return await self._inserts.write({
            "job_id": f"job_{new_id()}", "operation": req.operation, "dataset_id": req.dataset_id,
            "parameters": req.parameters, "priority": req.priority, "max_memory_gb": req.max_memory_gb,
            "max_cores": req.max_cores, "status": JobStatus.PENDING.value, "progress": 0.0, "created_at": iso(self.clock()),
            "no_cache": 0 if req.cache else 1, "rerun_of": rerun_of, "depends_on": req.depends_on or None,
            "notify_url": req.notify_url,
            "attempt_count": 0, "eta_history": {},
        })

    def _refuse_when_full(self) -> None:
        waiting = len(self.pending) + self._inserts.in_flight
        if waiting >= self.settings.max_queued_jobs:
            raise TooManyRequests(f"{waiting} jobs are waiting (MAX_QUEUED_JOBS); retry later",
                                  retry_after=max(1, int(self.settings.job_check_interval)))

    def _accepted(self, job: dict[str, Any]) -> None:
        """A committed submission joins the queue (even if its request has gone away)."""
        self.pending[job["job_id"]] = self._queued(job)
        self.journal.queued(job)
        self.kick()

    @staticmethod
    def _blocking_check(body: Any) -> bool:
        """Whether the submission names an operation whose check must not run on the loop."""
        name = body.get("operation") if isinstance(body, dict) else None
        if isinstance(body, dict) and body.get("notify_url"):
            return True  # its host is resolved (app.webhooks.check_url)
        try:
            return isinstance(name, str) and get_operation(name).blocking_check
        except Exception:  # noqa: BLE001 - an unknown operation is refused by the check itself
            return False

    def _validate(self, body: Any) -> JobRequest:
        from .models import build

        req = build(JobRequest, body)
        get_operation(req.operation)  # an unknown one is a 400 before the dataset is looked at
        self.check_parameters(req.operation, req.parameters, self.input_schema(req.dataset_id))
        req.depends_on = self.dependencies_of(req.dataset_id, list(req.depends_on or []))
        if req.notify_url:
            webhooks.check_url(req.notify_url, webhooks.policy_of(self.settings))
        req.max_memory_gb = req.max_memory_gb or self.settings.default_max_memory_gb
        req.max_cores = req.max_cores or self.settings.default_max_cores
        ceiling = self._ceiling()
        if ceiling is not None:
            problem = q.fits_ever(req.max_cores, req.max_memory_gb, ceiling)
            if problem:
                raise InvalidRequest(f"this job {problem}", {"total_cores": ceiling.total_cores,
                                                             "total_memory_gb": round(ceiling.total_memory_gb, 2)})
        return req

    def _queued(self, job: dict[str, Any]) -> q.QueuedJob:
        self.track(job)
        return q.QueuedJob(job["job_id"], job["priority"], float(job["max_cores"]), float(job["max_memory_gb"]),
                           _ts(job["created_at"]) or self.clock(), int(job["seq"]))

    # -- dispatch ----------------------------------------------------------------
    def kick(self) -> None:
        """Ask for one dispatch pass soon (coalesced).

        A pass that took ``t`` seconds delays the next by ``t / DISPATCH_SHARE - t``: with
        hundreds of jobs waiting and a burst arriving, passes cannot crowd out requests.
        """
        if self._dispatch_scheduled or self._stopping:
            return
        self._dispatch_scheduled = True
        loop = asyncio.get_running_loop()
        delay = self._dispatch_ready_at - time.monotonic()
        if delay > 0:
            loop.call_later(delay, self._dispatch)
        else:
            loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._stopping:
            return
        started = time.monotonic()
        running = [r for r, _, _ in self.running.values()]
        free, blocked, doomed = self.split_blocked(list(self.pending.values()))
        for job_id in doomed:
            self._dependency_failed(job_id)
        plan = q.plan(free, running, self.capacity(), self.clock(), self.policy, window=DISPATCH_WINDOW)
        for job_id in plan.preempt:
            self._interrupt(job_id, Interrupt.PREEMPTED)
        for job_id in plan.start:
            self._start(job_id)
        self.waiting = {**plan.waiting, **{
            job_id: q.WaitInfo(len(free) + i + 1, f"waiting for {dep}", self.pending[job_id].priority, None)
            for i, (job_id, dep) in enumerate(blocked.items()) if job_id in self.pending}}
        took = time.monotonic() - started
        self._dispatch_ready_at = started + took / DISPATCH_SHARE

    def _start(self, job_id: str) -> None:
        queued = self.pending.pop(job_id)
        try:
            self._start_attempt(job_id, queued)
        except Exception as exc:  # noqa: BLE001 - a job must never be left between queue and attempt
            log.exception("job %s could not start", job_id)
            self.running.pop(job_id, None)
            self._finish(job_id, Job.fail, error=job_error(exc, "start"))

    def _start_attempt(self, job_id: str, queued: q.QueuedJob) -> None:
        job = self.store.jobs.get(job_id)
        try:
            source = self.resolve_source(job)
        except NotFound as exc:
            self._finish(job_id, Job.fail, error={"type": "NotFound", "message": exc.message, "stage": "start"})
            return
        if source != job["dataset_id"]:  # "@job_x": that job's result dataset, named from now on
            self.store.jobs.update(job_id, dataset_id=source)
            job["dataset_id"] = source
        ds = self.store.get_dataset(job["dataset_id"])
        if ds is None:
            self._finish(job_id, Job.fail,
                         error={"type": "NotFound", "message": f"dataset '{job['dataset_id']}' no longer exists"})
            return
        number = int(job["attempt_count"] or 0) + 1
        attempt = Attempt(job_id, number, job["operation"], job["parameters"] or {}, job["priority"], ds,
                          self.datasets.read_source(ds), self.settings.data_dir, self.settings.result_inline_rows,
                          started_at=self.clock(), use_cache=not job.get("no_cache"), cached=self.store.jobs.cached_result,
                          kernels=self.settings.kernels, one_task_bytes=int(self.settings.kernel_one_task_mb * 1e6),
                          one_host_bytes=int(self.settings.kernel_one_host_mb * 1e6) if self.cluster.mode == "local" else 0,
                          max_memory_gb=float(job["max_memory_gb"] or 0), max_cores=float(job["max_cores"] or 0),
                          threads=int(self.capacity().total_cores))
        now = iso(self.clock())
        wait = self.waiting.get(job_id)
        attempt.attempt_id = self.store.add_attempt(job_id, number, now)
        self.journal.started(job, number, self.clock() - queued.submitted_at, wait.reason if wait else None)
        self._change(job_id, Job.start, number, now)
        running = q.RunningJob(job_id, queued.priority, queued.cores, queued.memory_gb, attempt.started_at)
        task = asyncio.get_running_loop().create_task(self._run(attempt))
        self.running[job_id] = (running, attempt, task)

    async def _run(self, attempt: Attempt) -> None:
        """One attempt, supervised: whatever stage raises, the job ends terminal or requeued."""
        loop = asyncio.get_running_loop()
        try:
            client = await self._compute_client()
            outcome = await loop.run_in_executor(self.executor, execute, client, attempt)
            await self._succeeded(attempt, outcome)
        except asyncio.CancelledError:
            if self._stopping:
                return  # shutdown: the store still says running; recovery re-queues it
            self._settle(attempt, RuntimeError("the attempt's task was cancelled"))
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded
            if is_transient(exc) and not attempt.stop_reason:
                attempt.oom_evidence = await self._memory_evidence(attempt)
            self._settle(attempt, exc)
        finally:
            if not self._stopping:
                entry = self.running.get(attempt.job_id)
                if entry is not None and entry[1] is attempt:  # a requeued job may already run again
                    del self.running[attempt.job_id]
                self.datasets.release_retired(self._reading())
                self.kick()

    def _reading(self) -> set[str]:
        """The paths running attempts read (a partitioned copy stays while one does)."""
        return {attempt.read[0] for _, attempt, _ in self.running.values()}

    async def _compute_client(self) -> Any:
        """A synchronous client for the job threads, made once per scheduler address (under
        a lock: attempts starting together used to make one client each)."""
        address = self.cluster.scheduler_address
        if address is None:
            raise ConnectionError("the cluster is not running")
        async with self._client_lock:
            if self._client is None or self._client_address != address:
                from distributed import Client

                old = self._client
                # embedded workers are on this host: results come from them, not relayed by the scheduler
                direct = self.cluster.mode == "local"
                self._client = await asyncio.get_running_loop().run_in_executor(
                    self.executor, lambda: Client(address, set_as_default=False, timeout="20s",
                                                  direct_to_workers=direct))
                self._client_address = address
                if old is not None:
                    asyncio.get_running_loop().run_in_executor(None, old.close)
        return self._client

    def _finish(self, job_id: str, end: Callable[..., dict[str, Any]], **values: Any) -> None:
        """Record a terminal state (``Job.complete``, ``Job.fail`` or ``Job.cancel``), then wake whoever waits for it."""
        job = self._change(job_id, end, iso(self.clock()), **values)
        began = _ts(job.started_at)
        self.journal.ended(job, None if began is None else self.clock() - began)
        self._forget(job_id)
        event = self.done_events.pop(job_id, None)
        if event:
            event.set()
        self.forget_dependencies(job_id)
        for waiting in self.dependency_ended(job_id, job.status):
            self._dependency_failed(waiting, job_id, job.status)

    def _change(self, job_id: str, transition: Callable[..., dict[str, Any]], *args: Any, **values: Any) -> Job:
        """The one place a job's status changes: a named transition of its record (``Job.start``,
        ``requeue``, ``complete``, ``fail`` or ``cancel``, each checked against the lifecycle), written
        through; returns the record as written."""
        job = self.store.jobs.job(job_id)
        if job is None:
            raise NotFound(f"no job '{job_id}'", {"job_id": job_id}, code="job_not_found")
        self.store.jobs.update(job_id, **transition(job, *args, **values))
        return job

    def _forget(self, job_id: str) -> None:
        self.pending.pop(job_id, None)
        self.waiting.pop(job_id, None)
        if not self._stopping:
            # every attempt's counts, including ones too short for any sample to have seen them
            self.sampler.forget_job(job_id)
