"""Pipelines: named steps that refer to each other, submitted as jobs that wait for each other.

``POST /api/processing/pipelines`` takes ``{"name", "priority", "steps": [{"name", "operation",
"dataset_id", "parameters", "depends_on": [step names], "max_cores", "max_memory_gb"}]}``;
a step reads an earlier step's result dataset with ``"dataset_id": "@step:<name>"``. The
whole graph is checked before anything is written: unique names, references to steps that
exist, no cycles, each step's parameters against the columns it will read (known from the
previous step's output schema where that can be known). Then the steps are submitted in
order as jobs with ``depends_on``: a step runs once the steps it needs completed, and is
cancelled when one of them fails or is cancelled.
"""
from __future__ import annotations

import re
from typing import Any

import param

from .errors import InvalidRequest, NotFound, ProcessingError
from .ids import new_id
from .lifecycle import TERMINAL, JobStatus
from .models import PRIORITIES, build
from .operations import get as get_operation
from .times import utcnow

STEP_REF = "@step:"
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_STEPS = 50


class StepSpec(param.Parameterized):
    """One step: a job, named so later steps can refer to it."""

    name = param.String(default=None, allow_None=True, doc="The step's name (letters, digits, _ . -; at most 64).")
    operation = param.String(default="", doc="Operation name.")
    dataset_id = param.String(default="", doc="A dataset id, or '@step:<name>' for an earlier step's result dataset.")
    parameters = param.Dict(default={}, doc="The operation's parameters.")
    depends_on = param.List(default=[], item_type=str, bounds=(0, MAX_STEPS), doc="Steps this one waits for.")
    priority = param.Selector(default=None, objects=[None, *PRIORITIES], allow_None=True,
                              doc="This step's priority (default: the pipeline's).")
    max_cores = param.Number(default=None, allow_None=True, doc="Cores the step reserves.")
    max_memory_gb = param.Number(default=None, allow_None=True, doc="Memory the step reserves (GB).")
    cache = param.Boolean(default=True, doc="May be answered from an earlier job's result.")


class PipelineRequest(param.Parameterized):
    """A pipeline: named steps, each a job, that refer to each other."""

    name = param.String(default=None, allow_None=True, doc="A name for people (at most 200 characters).")
    priority = param.Selector(default="NORMAL", objects=list(PRIORITIES), doc="Every step's priority.")
    steps = param.List(default=None, allow_None=True, item_type=dict, bounds=(1, MAX_STEPS), doc="The steps, 1–50.")


def _order(steps: list[StepSpec]) -> list[StepSpec]:
    """Steps so that each comes after what it needs; a 400 naming the cycle if there is one."""
    by_name = {s.name: s for s in steps}
    needs = {s.name: set(s.depends_on) | ({s.dataset_id[len(STEP_REF):]} if s.dataset_id.startswith(STEP_REF) else set())
             for s in steps}
    for name, wanted in needs.items():
        missing = sorted(wanted - set(by_name))
        if missing:
            raise InvalidRequest(f"step '{name}' refers to unknown step(s): {', '.join(missing)}",
                                 {"field": f"steps.{name}", "unknown": missing})
    done: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise InvalidRequest(f"the steps form a cycle: {' -> '.join(cycle)}", {"field": "steps", "cycle": cycle})
        state[name] = 1
        for dep in sorted(needs[name]):
            visit(dep, path + [name])
        state[name] = 2
        done.append(name)

    for s in steps:
        visit(s.name, [])
    return [by_name[n] for n in done]


class Pipelines:
    """Checks and submits pipelines through the engine; their records live in the store."""

    def __init__(self, engine: Any, store: Any):
        """``engine``: the job engine (its submit, cancel and checks); ``store``: where records live."""
        self.engine = engine
        self.store = store

    def _steps(self, body: Any) -> tuple[PipelineRequest, list[StepSpec]]:
        req = build(PipelineRequest, body)
        if not req.steps:
            raise InvalidRequest("'steps' must list 1–50 steps", {"field": "steps"})
        if len(req.name or "") > 200:
            raise InvalidRequest("'name' is at most 200 characters", {"field": "name"})
        steps = []
        for i, raw in enumerate(req.steps):
            try:
                step = build(StepSpec, raw)
            except ProcessingError as exc:
                raise InvalidRequest(f"steps[{i}]: {exc.message}", {"field": f"steps[{i}]", **(exc.details or {})})
            if not step.name or not NAME.fullmatch(step.name):
                raise InvalidRequest(f"steps[{i}]: 'name' must be 1–64 letters, digits, '_', '.' or '-'",
                                     {"field": f"steps[{i}].name"})
            steps.append(step)
        names = [s.name for s in steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidRequest(f"step names must be unique: {', '.join(twice)}", {"field": "steps"})
        return req, _order(steps)

    def check(self, body: Any) -> tuple[PipelineRequest, list[StepSpec]]:
        """The whole graph checked (blocking: it reads schemas); nothing is written."""
        req, ordered = self._steps(body)
        outputs: dict[str, dict[str, str] | None] = {}
        for step in ordered:
            where = f"step '{step.name}'"
            try:
                op = get_operation(step.operation)
                if step.dataset_id.startswith(STEP_REF):
                    source = get_operation(next(s.operation for s in ordered if s.name == step.dataset_id[len(STEP_REF):]))
                    if not (source.writes_dataset or source.name == "sql"):
                        raise InvalidRequest(f"'{step.dataset_id}' ({source.name}) writes no dataset to read",
                                             {"field": "dataset_id"})
                    schema = outputs.get(step.dataset_id[len(STEP_REF):])
                else:
                    schema = self.engine.input_schema(step.dataset_id)
                p = self.engine.check_parameters(step.operation, step.parameters, schema)
                outputs[step.name] = op.output_schema(p, schema) if schema is not None else None
            except ProcessingError as exc:
                raise InvalidRequest(f"{where}: {exc.message}",
                                     {"step": step.name, **(exc.details or {})}, code=exc.code) from None
        return req, ordered

    async def submit(self, req: PipelineRequest, ordered: list[StepSpec]) -> dict[str, Any]:
        """Submit the checked steps in order; if one is refused (a full queue), the others are cancelled."""
        pipeline_id = f"pipe_{new_id()}"
        jobs: dict[str, str] = {}
        try:
            for step in ordered:
                dataset_id = step.dataset_id
                if dataset_id.startswith(STEP_REF):
                    dataset_id = "@" + jobs[dataset_id[len(STEP_REF):]]
                body = {"operation": step.operation, "dataset_id": dataset_id, "parameters": step.parameters,
                        "priority": step.priority or req.priority, "depends_on": [jobs[d] for d in step.depends_on],
                        "cache": step.cache}
                for key in ("max_cores", "max_memory_gb"):
                    if getattr(step, key) is not None:
                        body[key] = getattr(step, key)
                jobs[step.name] = (await self.engine.submit(body))["job_id"]
        except BaseException:
            for job_id in jobs.values():
                try:
                    await self.engine.cancel(job_id)
                except ProcessingError:
                    pass
            raise
        steps = [{"name": s.name, "job_id": jobs[s.name], "depends_on": list(s.depends_on),
                  "dataset_id": s.dataset_id, "operation": s.operation} for s in ordered]
        record = {"pipeline_id": pipeline_id, "name": req.name or "", "priority": req.priority, "created_at": utcnow(),
                  "steps": steps}
        self.store.insert_pipeline(record)
        return self.status(pipeline_id)

    def status(self, pipeline_id: str) -> dict[str, Any]:
        """The pipeline with each step's job status and progress (a blocking read)."""
        record = self.store.get_pipeline(pipeline_id)
        if record is None:
            raise NotFound(f"no pipeline '{pipeline_id}'", {"pipeline_id": pipeline_id}, code="pipeline_not_found")
        steps = []
        for step in record["steps"]:
            job = self.store.jobs.get(step["job_id"]) or {}
            wait = self.engine.waiting.get(step["job_id"])
            steps.append({**step, "status": job.get("status", "unknown"), "progress": job.get("progress") or 0.0,
                          "pending_reason": wait.reason if wait and job.get("status") == JobStatus.PENDING else None,
                          "error": job.get("error"), "result_dataset_id": job.get("result_dataset_id")})
        statuses = {s["status"] for s in steps}
        if statuses <= {JobStatus.COMPLETED}:
            overall = JobStatus.COMPLETED.value
        elif JobStatus.FAILED in statuses:
            overall = JobStatus.FAILED.value if statuses <= set(TERMINAL) else "failing"
        elif statuses <= set(TERMINAL):
            overall = JobStatus.CANCELLED.value
        elif JobStatus.RUNNING in statuses:
            overall = JobStatus.RUNNING.value
        else:
            overall = JobStatus.PENDING.value
        return {**{k: record[k] for k in ("pipeline_id", "name", "priority", "created_at")}, "status": overall,
                "steps": steps}

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest pipelines (id, name, created_at), newest first."""
        return self.store.recent_pipelines(limit)

    async def cancel(self, pipeline_id: str) -> dict[str, Any]:
        """Cancel every step that has not finished."""
        for step in self.status(pipeline_id)["steps"]:
            if step["status"] not in TERMINAL:
                try:
                    await self.engine.cancel(step["job_id"])
                except ProcessingError:
                    pass  # it ended (or was cancelled by its dependency) meanwhile
        return self.status(pipeline_id)
