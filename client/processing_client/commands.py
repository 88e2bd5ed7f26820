"""The commands of ``processing``: each takes the API client and the parsed arguments,
prints its answer (a table, or the API's JSON with ``--json``) and returns the exit code.
:mod:`processing_client.cli` builds the parser that dispatches to them."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .client import TERMINAL, Client
from .output import megabytes, pairs, show, table

OK, API_ERROR, USAGE, UNREACHABLE, TIMED_OUT, INTERRUPTED = 0, 1, 2, 3, 4, 130


class UsageError(Exception):
    """A command line that parses but cannot be sent (a bad --param, say)."""


# -- cluster -----------------------------------------------------------------
STATUS_KEYS = ("status", "mode", "n_workers", "total_cores", "total_memory", "used_memory",
               "memory_usage_percent", "active_tasks", "adaptive", "scheduler_address", "dashboard_url", "error")


def cluster_start(api: Client, args: argparse.Namespace) -> int:
    answer = api.cluster_start()
    show(args, answer, lambda a: f"{a['message']}\n{pairs(a['cluster_info'], STATUS_KEYS)}")
    return OK


def cluster_status(api: Client, args: argparse.Namespace) -> int:
    show(args, api.cluster_status(), lambda s: pairs(s, STATUS_KEYS))
    return OK


def cluster_scale(api: Client, args: argparse.Namespace) -> int:
    if args.n_workers is None and args.min is None and args.max is None:
        raise UsageError("give a number of workers, or --min A --max B for adaptive scaling")
    if args.n_workers is not None and (args.min is not None or args.max is not None):
        raise UsageError("give either a number of workers or --min/--max, not both")
    answer = api.cluster_scale(args.n_workers, args.min, args.max)
    show(args, answer, lambda a: a["message"])
    return OK


def cluster_stop(api: Client, args: argparse.Namespace) -> int:
    show(args, api.cluster_stop(), lambda a: a["message"])
    return OK


def health(api: Client, args: argparse.Namespace) -> int:
    show(args, api.health(), pairs)
    return OK


def workers(api: Client, args: argparse.Namespace) -> int:
    cols = ("name", "address", "nthreads", "memory_bytes", "memory_limit_bytes", "cpu_percent", "active_tasks",
            "heartbeat_age_s", "status")
    show(args, api.workers(), lambda a: table(a["workers"], cols))
    return OK


# -- datasets ----------------------------------------------------------------
DATASET_KEYS = ("dataset_id", "name", "format", "source", "estimated_rows", "file_count", "size_bytes",
                "partitioned", "created_at", "description")


def _dataset(ds: dict[str, Any]) -> str:
    parts = [pairs(ds, DATASET_KEYS)]
    if ds.get("schema"):
        parts.append("\nschema:\n" + table(ds["schema"], ("name", "dtype")))
    if ds.get("preview"):
        parts.append(f"\npreview ({len(ds['preview'])} rows):\n" + table(ds["preview"], ds["columns"], 24))
    return "\n".join(parts)


def datasets_add(api: Client, args: argparse.Namespace) -> int:
    ds = api.datasets_register(args.path, args.id, args.name, args.format, description=args.description)
    show(args, ds, lambda d: f"Dataset registered: {d['dataset_id']}\n{pairs(d, DATASET_KEYS)}")
    return OK


def datasets_upload(api: Client, args: argparse.Namespace) -> int:
    if not os.path.isfile(args.path):
        raise UsageError(f"no such file: {args.path}")
    ds = api.datasets_upload(args.path, args.id, args.name)
    show(args, ds, lambda d: f"Dataset uploaded: {d['dataset_id']}\n{pairs(d, DATASET_KEYS)}")
    return OK


def datasets_list(api: Client, args: argparse.Namespace) -> int:
    def human(a: dict[str, Any]) -> str:
        rows = [{**d, "size": megabytes(d.get("size_bytes"))} for d in a["datasets"]]
        cols = ("dataset_id", "name", "format", "estimated_rows", "size", "created_at")
        return f"{table(rows, cols, 40)}\n({len(rows)} of {a['total']})"

    show(args, api.datasets_list(args.limit, args.offset), human)
    return OK


def datasets_show(api: Client, args: argparse.Namespace) -> int:
    show(args, api.dataset(args.id, args.rows), _dataset)
    return OK


def datasets_delete(api: Client, args: argparse.Namespace) -> int:
    show(args, api.dataset_delete(args.id), lambda a: a["message"])
    return OK


def partition(api: Client, args: argparse.Namespace) -> int:
    def human(a: dict[str, Any]) -> str:
        if "partition_info" in a:
            return f"{a['message']}\n{pairs(a['partition_info'])}"
        return f"{a['message']}: processing jobs wait {a['job_id']}"

    show(args, api.partition(args.id, args.n, args.size_mb), human)
    return OK


# -- jobs --------------------------------------------------------------------
JOB_KEYS = ("job_id", "operation", "dataset_id", "status", "priority", "progress", "eta_seconds",
            "queue_position", "pending_reason", "created_at", "started_at", "completed_at", "attempt_count",
            "max_memory_gb", "max_cores", "result_dataset_id", "result", "error")


def _job(s: dict[str, Any]) -> str:
    """A job's fields; a table result (inline rows) as a table of its first rows."""
    result = s.get("result")
    rows = result.get("rows") if isinstance(result, dict) else None
    if not isinstance(rows, list):
        return pairs(s, JOB_KEYS)
    text = pairs(s, [k for k in JOB_KEYS if k != "result"])
    columns = result.get("columns") or list(dict.fromkeys(k for r in rows for k in r))
    return f"{text}\n\nresult ({len(rows)} rows):\n{table(rows[:20], columns, 30)}"


def parse_params(items: list[str], params_json: str | None) -> dict[str, Any]:
    """``--params-json`` first, then each ``--param k=v`` (JSON when it parses, else a string)."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            params = json.loads(params_json)
        except ValueError as exc:
            raise UsageError(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise UsageError("--params-json must be a JSON object")
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects key=value, got {item!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def jobs_submit(api: Client, args: argparse.Namespace) -> int:
    params = parse_params(args.param, args.params_json)
    job = api.submit(args.operation, args.dataset, params, args.priority, args.memory_gb, args.cores)
    if args.wait:
        if not args.json:
            print(f"Job submitted: {job.id}", file=sys.stderr)
        return _wait(api, args, job.id)
    show(args, job.submitted, lambda a: f"Job submitted: {a['job_id']} ({a['status']}, {a['priority']})")
    return OK


def _wait(api: Client, args: argparse.Namespace, job_id: str) -> int:
    status = api.job(job_id).wait(timeout=args.timeout_wait, progress=not args.json and not args.no_progress)
    show(args, status, _job)
    if status["status"] != "completed":
        reason = (status.get("error") or {}).get("message") or status["status"]
        print(f"processing: job {job_id} {status['status']}: {reason}", file=sys.stderr)
        return API_ERROR
    return OK


def jobs_wait(api: Client, args: argparse.Namespace) -> int:
    return _wait(api, args, args.id)


def jobs_list(api: Client, args: argparse.Namespace) -> int:
    cols = ("job_id", "operation", "dataset_id", "status", "priority", "progress", "created_at")
    answer = api.jobs_list(args.status, args.priority, args.limit, args.offset, q=args.q,
                           created_after=args.after, created_before=args.before)
    show(args, answer, lambda a: f"{table(a['jobs'], cols, 40)}\n({len(a['jobs'])} of {a['total']})")
    return OK


def jobs_status(api: Client, args: argparse.Namespace) -> int:
    show(args, api.job_status(args.id), _job)
    return OK


def jobs_cancel(api: Client, args: argparse.Namespace) -> int:
    show(args, api.cancel(args.id), lambda a: f"{a['message']}: {a['job_id']} ({a['status']})")
    return OK


def _result(a: dict[str, Any]) -> str:
    if "rows" not in a:
        return pairs(a.get("result") or {})
    columns = (a.get("result") or {}).get("columns") or list(dict.fromkeys(k for r in a["rows"] for k in r))
    end = a["offset"] + len(a["rows"])
    return f"{table(a['rows'], columns, 30)}\n(rows {a['offset'] + 1}–{end} of {a['total']})"


def jobs_result(api: Client, args: argparse.Namespace) -> int:
    show(args, api.result(args.id, args.offset, args.limit), _result)
    return OK


def _log_lines(a: dict[str, Any]) -> str:
    return "\n".join(f"{line['timestamp']} {line['level']:<7} {line['message']}"
                     + (f"\n{line['details']['traceback']}" if line["details"].get("traceback") else "")
                     for line in a["lines"])


def jobs_logs(api: Client, args: argparse.Namespace) -> int:
    """Print the log; with --follow, keep printing new lines until the job ends."""
    since = 0
    while True:
        answer = api.logs(args.id, since)
        if answer["lines"]:
            show(args, answer, _log_lines)
        since = answer["next_since"]
        if not args.follow or (not answer["more"] and api.job_status(args.id)["status"] in TERMINAL):
            return OK
        if not answer["more"]:
            time.sleep(1.0)


def jobs_rerun(api: Client, args: argparse.Namespace) -> int:
    job = api.rerun(args.id)
    show(args, job.submitted, lambda a: f"{a['message']}: {a['job_id']} (a re-run of {a['rerun_of']})")
    return OK


def jobs_download(api: Client, args: argparse.Namespace) -> int:
    path = api.download(args.id, args.path, args.format)
    print(f"saved the result of {args.id} to {path}")
    return OK


# -- queue, operations, metrics ----------------------------------------------
def queue(api: Client, args: argparse.Namespace) -> int:
    def human(a: dict[str, Any]) -> str:
        flat = {"scheduler_running": a["scheduler_running"], **a["queue_status"],
                **a["resource_usage"]["cluster_resources"]}
        return pairs(flat)

    show(args, api.queue_status(), human)
    return OK


def operations(api: Client, args: argparse.Namespace) -> int:
    cols = ("name", "result_kind", "description")
    show(args, api.operations(), lambda a: table(a["operations"], cols, 90))
    return OK


def metrics(api: Client, args: argparse.Namespace) -> int:
    query = {"limit": args.limit, "window": args.window, "since": args.since, "until": args.until, "step": args.step}
    cols = ("timestamp", "n_workers", "total_cores", "used_memory", "total_memory", "memory_usage_percent",
            "active_tasks")
    show(args, api.metrics(**query), lambda a: f"{table(a['metrics'], cols)}\n({len(a['metrics'])} of {a['total']})")
    return OK


# -- the parser --------------------------------------------------------------
