"""Runs one attempt of a job in an executor thread, on the Dask cluster.

The thread builds the graph (reading metadata is I/O, so never on the server loop),
submits it with a ``job`` annotation the progress plugin counts, and waits. It
returns a plain outcome; the engine on the loop records it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import warnings
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import kernels, readers, task_graph
from .fragment_io import dictionary_columns
from .json_text import json_kind
from .errors import ProcessingError
from .expr_lock import GRAPH_LOCK
from .models import PRIORITIES, public_params
from .operations import get as get_operation
from .operations.base import Operation, Schema, jsonable
from .operations.partition import OPERATION as PARTITION
from .operations.sql import OPERATION as SQL
from .partition import plan_partitions, write_partitions
from .sources import is_url


PRIORITY_WEIGHT = {p: 10 * i for i, p in enumerate(PRIORITIES)}
# dask-expr warns that annotations are ignored; distributed's client applies them on compute,
# which is what the progress plugin counts (checked: every task of a job carried its annotation)
warnings.filterwarnings("ignore", message="Dask annotations .* detected")


@dataclass
class Attempt:
    """What one running attempt needs, and what the engine may do to it from the loop."""

    job_id: str
    number: int
    operation: str
    parameters: dict[str, Any]
    priority: str
    dataset: dict[str, Any]
    read: tuple[str, str, dict[str, Any]]
    data_dir: Path
    inline_rows: int
    attempt_id: int = 0
    started_at: float = 0.0
    stop_reason: str | None = None  # why the engine stopped it: an Interrupt value, or "shutdown"
    recorded: bool = False  # the engine already recorded the attempt's outcome when it stopped it
    oom_evidence: str | None = None  # a nanny restarted a worker for memory during the attempt
    use_cache: bool = True  # the job may be answered from an earlier one's result
    kernels: bool = True  # KERNELS: run as kernels where the operation has a plan
    one_task_bytes: int = 32_000_000  # KERNEL_ONE_TASK_MB: a smaller input is one task
    one_host_bytes: int = 0  # KERNEL_ONE_HOST_MB on an embedded cluster, else 0 (see one_task)
    cached: Any = None  # cache key -> the newest completed job with it (the store's reader)
    max_memory_gb: float = 0.0  # the job's reservation (a SQL job's DuckDB limits)
    max_cores: float = 0.0
    threads: int = 0  # the cluster's worker threads when the attempt started (kernel tasks per thread)
    error: BaseException | None = None  # what ended it, for the job's log (its traceback)
    stage: str = "start"  # the step under way: start, metadata, build, compute, finalize, write, register, record
    futures: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    listed: list[str] | None = None  # the dataset's files, listed once per attempt (see files())

    @property
    def annotation(self) -> str:
        return f"{self.job_id}/{self.number}"

    def files(self) -> list[str]:
        """The dataset's files, listed at the attempt's first need: its cache key (the
        version) and its fragments are then made from the same listing."""
        if self.listed is None:
            source, fmt, _ = self.read
            self.listed = readers.list_files(source, fmt)
        return self.listed


class Stopped(Exception):
    """The engine stopped this attempt (cancel, preemption, memory, shutdown)."""


def execute(client: Any, attempt: Attempt) -> dict[str, Any]:
    """Run the attempt to completion; returns ``{"result": …, "dataset": …}``.

    ``attempt.stage`` names the step under way, so a failure says where it happened.
    """
    attempt.stage = "metadata"
    op = get_operation(attempt.operation)
    schema: Schema = {c["name"]: c["dtype"] for c in attempt.dataset.get("schema") or []}
    p = op.parse(attempt.parameters, schema)
    weight = PRIORITY_WEIGHT[attempt.priority]
    with dask.annotate(job=attempt.annotation, priority=weight):
        if op is PARTITION:
            return _partition(client, attempt, p)
        source, fmt, options = attempt.read
        key = cache_key(attempt, op, p)
        earlier = attempt.cached(key) if key and attempt.use_cache and attempt.cached else None
        if earlier is not None:
            return {"result": earlier["result"], "kind": earlier["result_kind"], "cache_key": key,
                    "cached_from": earlier["job_id"]}
        outcome = _run_operation(client, attempt, op, p, schema, weight)
        if key and "dataset_path" not in outcome:  # a result written as a dataset is that job's own
            outcome["cache_key"] = key
        return outcome


def cache_key(attempt: Attempt, op: Operation, p: Any) -> str | None:
    """Operation, parameters and the dataset's version (its files' names, sizes and mtimes).

    None when the answer cannot be reused: operations that write datasets, remote sources.
    """
    source, fmt, options = attempt.read
    if op.writes_dataset or is_url(source):
        return None
    try:
        version = [(f, st.st_size, st.st_mtime_ns) for f in attempt.files() for st in (os.stat(f),)]
    except (OSError, ProcessingError):
        return None
    params = {k: getattr(p, k) for k in public_params(type(p))}
    text = json.dumps([attempt.dataset["dataset_id"], fmt, options, version, attempt.operation, params],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _run_operation(client: Any, attempt: Attempt, op: Operation, p: Any, schema: Schema, weight: int) -> dict[str, Any]:
    """Compute the operation: kernels when it has a plan, else its Dask DataFrame graph."""
    with dask.annotate(job=attempt.annotation, priority=weight):
        if op is SQL:
            return _sql(client, attempt, p, schema, weight)
        source, fmt, options = attempt.read
        frags = _kernel_fragments(op, p, attempt, schema)
        if frags is not None and op.writes_dataset:
            return _write_kernels(client, attempt, frags[0], frags[1], weight)
        if frags is not None:
            plan, frags, small = frags
            attempt.stage = "build"
            graph = task_graph.graph(frags, plan, small, int(attempt.max_cores or 1))
            attempt.stage = "compute"
            value = _compute(client, attempt, graph, weight)
            attempt.stage = "finalize"
            return _maybe_spill(attempt, op.kind(p), op.finalize(value, p))
        with GRAPH_LOCK:
            ddf = readers.read_ddf(source, fmt, options, columns=op.columns(p))
            attempt.stage = "build"
            graph = op.build(ddf, p)
        if op.writes_dataset:
            return _write_dataset(client, attempt, graph)
        attempt.stage = "compute"
        value = _compute(client, attempt, graph, weight)
    attempt.stage = "finalize"
    result = op.finalize(value, p)
    return _maybe_spill(attempt, op.kind(p), result)


def _sql(client: Any, attempt: Attempt, p: Any, schema: Schema, weight: int) -> dict[str, Any]:
    """A SQL job: one task over all the dataset's files (see app.operations.sql)."""
    attempt.stage = "build"
    out = str(results_dir(attempt.data_dir, attempt.job_id))
    task = SQL.task(p, schema, attempt.read, out, attempt.inline_rows, attempt.max_memory_gb, attempt.max_cores,
                    attempt.annotation)
    try:
        value = _compute(client, attempt, dask.delayed(task, pure=False)(), weight)
    except BaseException:
        if attempt.stop_reason:  # cancelled or preempted: its future is gone, DuckDB runs on until interrupted
            SQL.interrupt(client, task.key)
        raise
    attempt.stage = "finalize"
    return SQL.outcome(value, out)


def _kernel_fragments(op: Operation, p: Any, attempt: Attempt, schema: Schema) -> tuple[Any, list[Any], bool] | None:
    """(plan, fragments, small) when the operation runs as kernels over local files, else None."""
    if not attempt.kernels:
        return None
    plan = op.plan(p, schema)
    source, fmt, options = attempt.read
    if plan is None or is_url(source) or (options or {}).get("columns") or fmt not in ("parquet", "csv", "json"):
        return None
    files = attempt.files()
    if fmt == "json" and any(json_kind(f) != "lines" or kernels._compressed(f) for f in files):
        return None  # JSON arrays and compressed JSON keep the Dask reader
    frags = kernels.fragments(files, fmt, dict(options or {}), schema, attempt.threads)
    return plan, frags, one_task(sum(os.path.getsize(f) for f in files), plan, attempt)


def one_task(size: int, plan: Any, attempt: Attempt) -> bool:
    """Whether an input of ``size`` bytes runs as one task: under ``KERNEL_ONE_TASK_MB``; or,
    on one host, under ``KERNEL_ONE_HOST_MB`` when the job's cores cover every thread of the
    cluster, so one task on that many DuckDB threads uses the cores its fragments would have
    used, without a task each and a merge after them (the tree's extra round trips were
    20-40 ms of a 10M-row mean's 130 ms). A bucketed merge (median, nunique) keeps its
    fragments: that merge is most of such a job's time, and its progress shows it."""
    if size <= attempt.one_task_bytes:
        return True
    covers = attempt.threads > 0 and attempt.max_cores >= attempt.threads
    return covers and plan.buckets is None and size <= attempt.one_host_bytes


def _compute(client: Any, attempt: Attempt, graph: Any, weight: int) -> Any:
    """Submit ``graph`` (a collection, or a :class:`task_graph.OneTask`) and wait for its value."""
    attempt.stage = "compute"
    _check_stopped(attempt)
    with GRAPH_LOCK:  # Client.compute optimizes the expression (see app.expr_lock); submit builds one too
        if isinstance(graph, task_graph.OneTask):
            submitted = client.submit(task_graph.run_all, graph.frags, graph.plan, graph.threads, priority=weight,
                                      pure=False, key=f"run_all-{attempt.annotation}")
        else:
            submitted = client.compute(graph, priority=weight)
    many = isinstance(submitted, list)
    futures = submitted if many else [submitted]
    with attempt.lock:
        attempt.futures.extend(futures)
        stopped = attempt.stop_reason
    if stopped:  # stopped while submitting: the engine cancelled what it knew of, not these
        client.cancel(futures, force=True)
        raise Stopped(stopped)
    if not many:
        return submitted.result()
    values = client.gather(submitted)
    return tuple(values) if isinstance(graph, tuple) else values


def _check_stopped(attempt: Attempt) -> None:
    with attempt.lock:
        if attempt.stop_reason:
            raise Stopped(attempt.stop_reason)


def _read_block(client: Any) -> int:
    """Bytes of text per read task: 1/20 of the smallest worker's memory limit, at most 64 MB.

    Parsing a 64 MB CSV block took ~7× that in a worker, so 512MB workers were killed
    by their nanny; a 25 MB block fits.
    """
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    smallest = min([m for m in limits if m > 0], default=0)
    return int(min(64e6, max(4e6, smallest / 20))) if smallest else 64_000_000


def _partition(client: Any, attempt: Attempt, p: Any) -> dict[str, Any]:
    ds = attempt.dataset
    attempt.stage = "metadata"
    n = plan_partitions(int(ds.get("size_bytes") or 0), p.n_partitions, p.partition_size_mb)
    # a read block no bigger than an output file, so each input block is read about once
    size = int(ds.get("size_bytes") or 0)
    block = min(_read_block(client), max(1_000_000, size // n + 1))
    with GRAPH_LOCK:
        ddf = readers.read_ddf(ds["source"], ds["format"], ds.get("options") or {}, blocksize=block)
    out = attempt.data_dir / "managed" / "partitions" / ds["dataset_id"] / attempt.job_id
    if out.exists():  # a previous attempt's partial output
        shutil.rmtree(out)
    # as_current is this thread's alone; dask.config.set(scheduler=client) was process-wide,
    # and a nanny restarting a worker then failed to pickle the config holding the client
    attempt.stage = "compute"
    with client.as_current():
        _check_stopped(attempt)
        weight = PRIORITY_WEIGHT[attempt.priority]

        def count(objs: Any) -> Any:  # annotated apart: the job's progress is its output files written
            with dask.annotate(job=f"{attempt.annotation}/count"):
                return _compute(client, attempt, objs, weight)

        info = write_partitions(ddf, out, n, lambda objs: _compute(client, attempt, objs, weight), count)
    partitions = {
        "path": str(out), "n_partitions": info["n_partitions"], "rows": info["rows"],
        "size_bytes": info["size_bytes"], "columns": info["columns"],
        "partition_rows": info["partition_rows"], "partition_bytes": info["partition_bytes"],
        "job_id": attempt.job_id,
    }
    result = {"n_partitions": info["n_partitions"], "columns": info["columns"],
              "estimated_size_mb": round(int(ds.get("size_bytes") or 0) / 1e6, 2),
              "written_size_mb": round(info["size_bytes"] / 1e6, 2), "rows": info["rows"],
              "partition_rows": info["partition_rows"]}
    return {"result": result, "partitions": partitions, "kind": "record"}


# -- datasets written by jobs, partition by partition (the checkpoint) ------------

def results_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "managed" / "results" / job_id


def _write_part(frame: pd.DataFrame, path: str) -> int:
    """Write one output partition atomically: a present file is a complete one."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    frame = frame.reset_index(drop=frame.index.name is None)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary_columns(table.schema))
    os.replace(tmp, path)
    return len(frame)


def _write_dataset(client: Any, attempt: Attempt, ddf: Any) -> dict[str, Any]:
    out = results_dir(attempt.data_dir, attempt.job_id)
    out.mkdir(parents=True, exist_ok=True)
    with GRAPH_LOCK:
        parts = ddf.to_delayed()
        columns = [str(c) for c in ddf.columns]
    paths = [str(out / f"part-{i:05d}.parquet") for i in range(len(parts))]
    todo = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    writes = [dask.delayed(_write_part)(parts[i], paths[i]) for i in todo]
    if writes:
        _compute(client, attempt, writes, PRIORITY_WEIGHT[attempt.priority])
    attempt.stage = "write"
    rows = sum(pq.read_metadata(p).num_rows for p in paths)
    result = {"rows": rows, "n_partitions": len(paths), "partitions_written": len(todo),
              "partitions_reused": len(paths) - len(todo), "columns": columns}
    return {"result": result, "dataset_path": str(out), "kind": "dataset"}


def _write_kernels(client: Any, attempt: Attempt, plan: Any, frags: list[Any], weight: int) -> dict[str, Any]:
    """One Parquet file per fragment; files a previous attempt finished are kept."""
    import dask

    if plan.before:  # statistics first (one graph), then every fragment's rows with them
        first = [task_graph.as_delayed(task_graph.graph(frags, step, False)) for step in plan.before]
        plan = replace(plan, args={**plan.args, "before": list(_compute(client, attempt, first, weight))})
    out = results_dir(attempt.data_dir, attempt.job_id)
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(out / f"part-{i:05d}.parquet") for i in range(len(frags))]
    todo = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    writes = [dask.delayed(kernels.write_fragment, pure=False)(frags[i], plan, paths[i]) for i in todo]
    if writes:
        _compute(client, attempt, writes, weight)
    attempt.stage = "write"
    rows = sum(pq.read_metadata(p).num_rows for p in paths)
    columns = pq.read_schema(paths[0]).names if paths else list(plan.columns)
    result = {"rows": rows, "n_partitions": len(paths), "partitions_written": len(todo),
              "partitions_reused": len(paths) - len(todo), "columns": columns}
    return {"result": result, "dataset_path": str(out), "kind": "dataset"}


def _maybe_spill(attempt: Attempt, kind: str, result: Any) -> dict[str, Any]:
    """Large table results become a managed dataset; small ones stay inline."""
    rows = result.get("rows") if isinstance(result, dict) else None
    if not isinstance(rows, list) or len(rows) <= attempt.inline_rows:
        return {"result": result, "kind": kind}
    attempt.stage = "write"
    out = results_dir(attempt.data_dir, attempt.job_id)
    out.mkdir(parents=True, exist_ok=True)
    _write_part(pd.DataFrame.from_records(rows), str(out / "part-00000.parquet"))
    head = {**result, "rows": rows[: attempt.inline_rows], "truncated": True, "total_rows": len(rows)}
    return {"result": head, "kind": kind, "dataset_path": str(out)}


def read_rows(path: str, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Rows ``offset``..``offset+limit`` of a managed Parquet folder, reading only the files needed."""
    files = sorted(str(p) for p in Path(path).glob("*.parquet"))
    counts = [pq.read_metadata(f).num_rows for f in files]
    total, frames, start = sum(counts), [], 0
    for f, n in zip(files, counts):
        end = start + n
        if end > offset and start < offset + limit:
            table = pq.read_table(f)
            lo = max(0, offset - start)
            frames.append(table.slice(lo, offset + limit - start - lo).to_pandas())
        start = end
    if not frames:
        return total, []
    return total, jsonable(readers.records(pd.concat(frames, ignore_index=True)))


def is_transient(exc: BaseException) -> bool:
    """Worker or scheduler loss: worth another attempt. Data and code errors are not."""
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    if isinstance(exc, ProcessingError):
        return False
    return isinstance(exc, (KilledWorker, CommClosedError, ConnectionError, TimeoutError, OSError)) \
        and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))
