"""``processing``: the command line of the JSON API, built on :mod:`processing_client.client`.

Exit codes: 0 success; 1 the API answered with an error (or a waited-for job
failed or was cancelled); 2 usage error; 3 the service cannot be reached;
4 a wait timed out; 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import requests

from .client import DEFAULT_URL, PRIORITIES, Client, ProcessingAPIError
from .commands import (  # noqa: F401 - parse_params and UsageError are read from here too
    API_ERROR, INTERRUPTED, TIMED_OUT, UNREACHABLE, USAGE, UsageError, cluster_scale, cluster_start,
    cluster_status, cluster_stop, datasets_add, datasets_delete, datasets_list, datasets_show, datasets_upload,
    health, jobs_cancel, jobs_download, jobs_list, jobs_logs, jobs_rerun, jobs_result, jobs_status, jobs_submit,
    jobs_wait, metrics, operations, parse_params, partition, queue, workers,
)


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
