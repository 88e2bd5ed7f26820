"""Jobs that wait for other jobs: ``depends_on`` and ``dataset_id: "@job_x"`` (a mixin of
:class:`app.jobs.JobEngine`).

A job with unfinished dependencies stays pending with ``pending_reason: "waiting for
job_x"`` and is not planned. When a dependency completes, the job becomes eligible; when
one fails or is cancelled, the job is cancelled with that reason (and so, in turn, are
the jobs waiting for it). ``"@job_x"`` reads job_x's result dataset and implies the
dependency; its columns are checked at submit from job_x's output schema when that is
known before job_x runs (a filter keeps its input's columns, a transform adds its
outputs), else from the operation's parameter model only.
"""
from __future__ import annotations

import logging
from typing import Any

from . import queue as q
from .errors import InvalidRequest, NotFound
from .job_model import Job
from .lifecycle import TERMINAL, JobStatus
from .operations import get as get_operation
from .operations.base import parse_model

log = logging.getLogger("app.jobs")
REF = "@"
MAX_CHAIN = 20  # "@job" references followed to find a schema
MAX_DEPENDENCIES = 50


def reference(dataset_id: str) -> str | None:
    """The job id an ``"@job_x"`` dataset reference names, else None."""
    return dataset_id[len(REF):] if dataset_id.startswith(REF) else None


class Dependencies:
    """Dependency bookkeeping; the engine supplies the store, datasets, its queues and ``_finish``."""

    store: Any
    datasets: Any
    pending: dict[str, Any]
    running: dict[str, Any]

    def _init_dependencies(self) -> None:
        self._deps: dict[str, list[str]] = {}  # waiting job -> the jobs it waits for
        self._dependents: dict[str, set[str]] = {}  # job -> the waiting jobs that wait for it

    # -- submit ---------------------------------------------------------------------
    def input_schema(self, dataset_id: str, depth: int = 0) -> dict[str, str] | None:
        """The columns a job on ``dataset_id`` reads: a dataset's schema, or for ``"@job_x"``
        job_x's result dataset's (or, before it ran, its output schema when known; else None)."""
        source = reference(dataset_id)
        if source is None:
            return self.datasets.schema(self.datasets.get(dataset_id))
        job = self.store.jobs.get(source)
        if job is None:
            raise InvalidRequest(f"'{dataset_id}' names no job; '@<job_id>' reads that job's result dataset",
                                 {"field": "dataset_id"}, code="unknown_dependency")
        if job["status"] == JobStatus.COMPLETED:
            if not job.get("result_dataset_id"):
                raise InvalidRequest(f"job {source} completed with a {job.get('result_kind') or 'table'} result, "
                                     "not a dataset: '@' reads result datasets only", {"field": "dataset_id"})
            return self.datasets.schema(self.datasets.get(job["result_dataset_id"]))
        if job["status"] in TERMINAL:
            raise InvalidRequest(f"job {source} is {job['status']}: it will write no dataset", {"field": "dataset_id"})
        op = get_operation(job["operation"])
        if not (op.writes_dataset or op.name == "sql"):
            raise InvalidRequest(f"job {source} ({op.name}) writes no dataset: '@' reads result datasets only",
                                 {"field": "dataset_id"})
        if depth >= MAX_CHAIN:
            return None
        upstream = self.input_schema(job["dataset_id"], depth + 1)
        if upstream is None:
            return None
        return op.output_schema(op.parse(job["parameters"] or {}, upstream), upstream)

    def check_parameters(self, operation: str, parameters: dict[str, Any], schema: dict[str, str] | None) -> Any:
        op = get_operation(operation)
        return op.parse(parameters, schema) if schema is not None else parse_model(op.Params, parameters)

    def dependencies_of(self, dataset_id: str, depends_on: list[str]) -> list[str]:
        """The jobs a submission waits for (its ``depends_on`` and an ``"@job"`` source), checked to exist."""
        deps = list(dict.fromkeys([*depends_on, *filter(None, [reference(dataset_id)])]))
        if len(deps) > MAX_DEPENDENCIES:
            raise InvalidRequest(f"at most {MAX_DEPENDENCIES} jobs in depends_on", {"field": "depends_on"})
        unknown = [d for d in deps if d not in self.pending and d not in self.running and self.store.jobs.get(d) is None]
        if unknown:
            raise InvalidRequest(f"unknown job(s) in depends_on: {', '.join(unknown[:5])}",
                                 {"field": "depends_on", "unknown": unknown[:20]}, code="unknown_dependency")
        return deps

    # -- queue ------------------------------------------------------------------------
    def track(self, job: dict[str, Any]) -> None:
        """A pending job's dependencies, remembered (at accept and at recovery)."""
        deps = [d for d in (job.get("depends_on") or []) if isinstance(d, str)]
        if deps:
            self._deps[job["job_id"]] = deps
            for d in deps:
                self._dependents.setdefault(d, set()).add(job["job_id"])

    def blocked_by(self, job_id: str) -> tuple[str | None, str | None]:
        """(the dependency it still waits for, or None; the one that failed, or None)."""
        for dep in self._deps.get(job_id, ()):
            if dep in self.pending or dep in self.running:
                return dep, None
            job = self.store.jobs.get(dep)
            status = job["status"] if job else JobStatus.CANCELLED
            if status not in TERMINAL:
                return dep, None
            if status != JobStatus.COMPLETED:
                return None, dep
        return None, None

    def split_blocked(self, pending: list[q.QueuedJob]) -> tuple[list[q.QueuedJob], dict[str, str], list[str]]:
        """(jobs free to plan, waiting job -> the job it waits for, jobs whose dependency failed)."""
        free, waiting, doomed = [], {}, []
        for queued in pending:
            if queued.job_id not in self._deps:
                free.append(queued)
                continue
            wait_for, failed = self.blocked_by(queued.job_id)
            if failed:
                doomed.append(queued.job_id)
            elif wait_for:
                waiting[queued.job_id] = wait_for
            else:
                free.append(queued)
        return free, waiting, doomed

    def dependency_ended(self, job_id: str, status: str) -> list[str]:
        """``job_id`` ended: the jobs waiting for it that must now be cancelled (it did not complete)."""
        waiting = self._dependents.pop(job_id, set())
        if status == JobStatus.COMPLETED:
            return []
        return sorted(j for j in waiting if j in self.pending)

    def _dependency_failed(self, job_id: str, dep: str | None = None, status: str | None = None) -> None:
        """Cancel a waiting job whose dependency did not complete (and, through ``_finish``, its own waiters)."""
        if dep is None:
            _, dep = self.blocked_by(job_id)
            status = (self.store.jobs.get(dep) or {}).get("status", "gone") if dep else "gone"
        self.pending.pop(job_id, None)
        self._finish(job_id, Job.cancel, error={"type": "DependencyFailed", "stage": "queue",
                                                "message": f"cancelled because job {dep}, which it depends on, {status}"})

    def forget_dependencies(self, job_id: str) -> None:
        for dep in self._deps.pop(job_id, ()):
            holders = self._dependents.get(dep)
            if holders is not None:
                holders.discard(job_id)
                if not holders:
                    self._dependents.pop(dep, None)

    def resolve_source(self, job: dict[str, Any]) -> str | None:
        """The dataset a starting ``"@job_x"`` job reads (job_x's result dataset); raises NotFound."""
        source = reference(job["dataset_id"])
        if source is None:
            return job["dataset_id"]
        upstream = self.store.jobs.get(source) or {}
        if upstream.get("status") != JobStatus.COMPLETED or not upstream.get("result_dataset_id"):
            raise NotFound(f"job {source} left no result dataset to read ({upstream.get('status', 'unknown')}, "
                           f"{upstream.get('result_kind') or 'no'} result)", code="dataset_not_found")
        return upstream["result_dataset_id"]
