"""``processing``: the command line of the JSON API, built on :mod:`processing_client.client`.

Exit codes: 0 success; 1 the API answered with an error (or a waited-for job
failed or was cancelled); 2 usage error; 3 the service cannot be reached;
4 a wait timed out; 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import requests

from .client import DEFAULT_URL, PRIORITIES, TERMINAL, Client, ProcessingAPIError
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
def _common(top: bool) -> argparse.ArgumentParser:
    """--url/--token/--json, accepted before or after the command; the top level holds the defaults."""
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--url", default=default(None),
                        help=f"service URL (default: $PROCESSING_URL or {DEFAULT_URL})")
    parser.add_argument("--token", default=default(None), help="API token (default: $PROCESSING_API_TOKEN)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the API's raw JSON instead of a table")
    return parser


class _Commands:
    """Adds sub-commands that share the common options."""

    def __init__(self, parser: argparse.ArgumentParser, title: str):
        self.group = parser.add_subparsers(dest=title, metavar="COMMAND", required=True)
        self.common = _common(top=False)

    def add(self, name: str, handler: Callable[..., int] | None, help: str) -> argparse.ArgumentParser:
        sub = self.group.add_parser(name, help=help, description=help, parents=[self.common])
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", dest="timeout_wait", type=float, default=None, metavar="S",
                        help="give up after S seconds (exit 4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _cluster(top: _Commands) -> None:
    cmds = _Commands(top.add("cluster", None, "start, inspect, scale and stop the Dask cluster"), "cluster_command")
    cmds.add("start", cluster_start, "start the cluster (idempotent)")
    cmds.add("status", cluster_status, "workers, cores, memory and tasks")
    scale = cmds.add("scale", cluster_scale, "scale to N workers, or adaptively with --min/--max")
    scale.add_argument("n_workers", nargs="?", type=int, metavar="N", help="fixed number of workers")
    scale.add_argument("--min", type=int, metavar="A", help="adaptive: fewest workers")
    scale.add_argument("--max", type=int, metavar="B", help="adaptive: most workers")
    cmds.add("stop", cluster_stop, "stop the cluster (or detach from an external one)")


def _datasets(top: _Commands) -> None:
    cmds = _Commands(top.add("datasets", None, "register, upload, inspect and delete datasets"), "datasets_command")
    add = cmds.add("add", datasets_add, "register a file, glob or URL the server can read")
    add.add_argument("path", metavar="PATH", help="path on the server (inside its data roots), glob or URL")
    add.add_argument("--id", required=True, help="dataset id")
    add.add_argument("--format", choices=("csv", "parquet", "json"), help="detected from the extension when absent")
    add.add_argument("--name", help="human name")
    add.add_argument("--description", default="", help="what the data is")
    lst = cmds.add("list", datasets_list, "datasets, newest first")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--offset", type=int, default=0)
    show_ = cmds.add("show", datasets_show, "schema, sizes and the first rows")
    show_.add_argument("id", metavar="ID")
    show_.add_argument("--rows", type=int, default=10, help="preview rows (default 10)")
    upload = cmds.add("upload", datasets_upload, "upload a local file as a new dataset")
    upload.add_argument("path", metavar="PATH")
    upload.add_argument("--id", help="dataset id (generated when absent)")
    upload.add_argument("--name", help="human name")
    cmds.add("delete", datasets_delete, "forget a dataset").add_argument("id", metavar="ID")


def _jobs(top: _Commands) -> None:
    cmds = _Commands(top.add("jobs", None, "submit, follow, cancel jobs and read results"), "jobs_command")
    submit = cmds.add("submit", jobs_submit, "submit a job")
    submit.add_argument("--operation", required=True, metavar="OP", help="see: processing operations")
    submit.add_argument("--dataset", required=True, metavar="ID")
    submit.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="a parameter; V is read as JSON when it parses (2, true, [\"a\",\"b\"]), else text")
    submit.add_argument("--params-json", metavar="JSON", help="all parameters as one JSON object")
    submit.add_argument("--priority", type=str.upper, choices=PRIORITIES, default="NORMAL")
    submit.add_argument("--cores", type=float, help="cores the job reserves")
    submit.add_argument("--memory-gb", type=float, help="memory the job reserves (GB)")
    submit.add_argument("--wait", action="store_true", help="wait for the end (exit 1 if it fails)")
    _add_wait_options(submit)
    lst = cmds.add("list", jobs_list, "jobs, newest first")
    lst.add_argument("--status", help="comma-separated: pending, running, completed, failed, cancelled")
    lst.add_argument("--priority", help="comma-separated priorities")
    lst.add_argument("--q", help="search job id, dataset, operation, parameters and error text")
    lst.add_argument("--after", metavar="ISO", help="only jobs created at or after this time")
    lst.add_argument("--before", metavar="ISO", help="only jobs created before this time")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--offset", type=int, default=0)
    cmds.add("status", jobs_status, "a job's status, progress and result").add_argument("id", metavar="ID")
    cmds.add("cancel", jobs_cancel, "cancel a pending or running job").add_argument("id", metavar="ID")
    wait = cmds.add("wait", jobs_wait, "wait for a job to end (exit 1 if it fails)")
    wait.add_argument("id", metavar="ID")
    _add_wait_options(wait)
    result = cmds.add("result", jobs_result, "a page of a completed job's result")
    result.add_argument("id", metavar="ID")
    result.add_argument("--offset", type=int, default=0)
    result.add_argument("--limit", type=int, default=20)
    logs = cmds.add("logs", jobs_logs, "a job's log: queued, started, attempts, retries, the end")
    logs.add_argument("id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the job ends")
    cmds.add("rerun", jobs_rerun, "submit the same job again").add_argument("id", metavar="ID")
    download = cmds.add("download", jobs_download, "save a completed job's whole result as CSV or Parquet")
    download.add_argument("id", metavar="ID")
    download.add_argument("path", metavar="PATH", help="where to write it; .parquet for Parquet, else CSV")
    download.add_argument("--format", choices=("csv", "parquet"), help="wins over the extension")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="processing", parents=[_common(top=True)],
        description="Command line of the Distributed Processing Cluster API.",
        epilog="exit codes: 0 ok, 1 API error or job failed, 2 usage, 3 service unreachable, "
               "4 wait timed out, 130 interrupted")
    top = _Commands(parser, "command")
    _cluster(top)
    _datasets(top)
    _jobs(top)
    part = top.add("partition", partition, "rewrite a dataset as balanced Parquet partitions")
    part.add_argument("id", metavar="ID")
    part.add_argument("--n", type=int, help="number of partitions (wins over --size-mb)")
    part.add_argument("--size-mb", type=float, help="target partition size in MB")
    top.add("queue", queue, "queue depth and the cluster's reserved and free resources")
    top.add("operations", operations, "operations a job can run")
    met = top.add("metrics", metrics, "cluster metric history")
    met.add_argument("--window", help="e.g. 5m, 1h, 24h")
    met.add_argument("--since")
    met.add_argument("--until")
    met.add_argument("--step", type=float, help="one row per STEP seconds")
    met.add_argument("--limit", type=int, default=20)
    top.add("health", health, "service health")
    top.add("workers", workers, "per-worker memory, CPU and tasks")
    return parser


def _failure(exc: BaseException, url: str) -> tuple[int, str]:
    """The exit code and the stderr line for what went wrong."""
    if isinstance(exc, UsageError):
        return USAGE, f"error: {exc}"
    if isinstance(exc, ProcessingAPIError):
        request = f", request {exc.request_id}" if exc.request_id else ""
        return API_ERROR, f"{exc.message} ({exc.code}, HTTP {exc.status}{request})"
    if isinstance(exc, requests.ConnectionError):
        return UNREACHABLE, (f"cannot connect to the processing service at {url}: is it running? "
                             f"(set --url or PROCESSING_URL) [{type(exc).__name__}]")
    if isinstance(exc, requests.Timeout):
        return UNREACHABLE, f"the processing service at {url} did not answer in time"
    if isinstance(exc, requests.RequestException):  # MissingSchema, InvalidURL…
        return USAGE, f"error: invalid service URL {url!r}: {exc}"
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C while waiting: the job itself goes on
        return INTERRUPTED, "interrupted"
    return TIMED_OUT, str(exc)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    url = (args.url or os.environ.get("PROCESSING_URL") or DEFAULT_URL).rstrip("/")
    api = Client(url, args.token or os.environ.get("PROCESSING_API_TOKEN") or None)
    try:
        return args.handler(api, args)
    except (UsageError, ProcessingAPIError, requests.RequestException, TimeoutError, KeyboardInterrupt) as exc:
        code, message = _failure(exc, url)
        print(f"processing: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
