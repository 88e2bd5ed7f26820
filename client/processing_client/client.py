"""A small Python client for the JSON API under ``/api/processing/``.

    from processing_client import Client

    api = Client("http://localhost:8001")
    job = api.submit("aggregate", "demo_expression", {"column": "expression_level", "operation": "mean"})
    print(job.wait()["result"])

Every error answer of the API raises :class:`ProcessingAPIError`; a service that
cannot be reached raises ``requests.ConnectionError`` (or ``requests.Timeout``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import requests
from tqdm.auto import tqdm

DEFAULT_URL = "http://localhost:8001"
API = "/api/processing"
TERMINAL = ("completed", "failed", "cancelled")
PRIORITIES = ("LOW", "NORMAL", "HIGH", "CRITICAL")  # the API's job priorities, lowest first
MAX_WAIT_S = 300  # the wait endpoint's upper bound


class ProcessingAPIError(Exception):
    """An error answer of the API, with the fields of its one error shape."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 request_id: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.request_id = request_id

    @classmethod
    def from_response(cls, response: requests.Response) -> "ProcessingAPIError":
        """Read the error shape; a body that is not ours (a proxy page) still gives an error."""
        try:
            error = response.json()["error"]
            return cls(response.status_code, error["code"], error["message"], error.get("details"),
                       error.get("request_id"))
        except (ValueError, KeyError, TypeError):
            text = response.text.strip()[:200] or response.reason or "no body"
            return cls(response.status_code, "http_error", text)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Client:
    """One method per endpoint; answers are the decoded JSON bodies."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_env(cls, timeout: float = 30) -> "Client":
        """A client for ``PROCESSING_URL`` with ``PROCESSING_API_TOKEN``, like the CLI."""
        return cls(os.environ.get("PROCESSING_URL") or DEFAULT_URL, os.environ.get("PROCESSING_API_TOKEN") or None,
                   timeout)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # -- transport -------------------------------------------------------
    def request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``/api/processing{path}``; the decoded body, or ProcessingAPIError."""
        response = self.session.request(method, f"{self.base_url}{API}{path}",
                                        timeout=timeout or self.timeout, **kwargs)
        if response.status_code >= 400:
            raise ProcessingAPIError.from_response(response)
        if "json" not in response.headers.get("Content-Type", ""):
            return response.text
        return response.json()

    def _get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_drop_none(params) or None)

    def _post(self, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    # -- cluster ---------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Service health: ``healthy`` or ``degraded`` with reasons."""
        return self._get("/health")

    def cluster_start(self) -> dict[str, Any]:
        """Start the cluster (idempotent)."""
        return self._post("/cluster/start", timeout=max(self.timeout, 120))

    def cluster_status(self) -> dict[str, Any]:
        """Workers, cores, memory, tasks, mode and dashboard link."""
        return self._get("/cluster/status")

    def cluster_scale(self, n_workers: int | None = None, minimum: int | None = None,
                      maximum: int | None = None) -> dict[str, Any]:
        """Scale to ``n_workers``, or adaptively between ``minimum`` and ``maximum``."""
        body: dict[str, Any] = _drop_none({"n_workers": n_workers})
        if minimum is not None or maximum is not None:
            body["adaptive"] = _drop_none({"minimum": minimum, "maximum": maximum})
        return self._post("/cluster/scale", body, timeout=max(self.timeout, 120))

    def cluster_stop(self) -> dict[str, Any]:
        """Stop the embedded cluster, or detach from an external one."""
        return self._post("/cluster/stop", timeout=max(self.timeout, 60))

    def cluster_events(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Start/scale/stop history, newest first."""
        return self._get("/cluster/events", limit=limit, offset=offset)

    def workers(self) -> dict[str, Any]:
        """Per-worker memory, CPU, tasks and heartbeat."""
        return self._get("/metrics/workers")

    def metrics(self, **query: Any) -> dict[str, Any]:
        """Cluster metric history; ``query`` is since, until, window, limit or step."""
        return self._get("/metrics/cluster", **query)

    def metrics_live(self, seconds: float = 60) -> dict[str, Any]:
        """The sampler's in-memory readings of the last ``seconds``."""
        return self._get("/metrics/live", seconds=seconds)

    def recommendations(self) -> dict[str, Any]:
        """Scale up/down and per-job memory advice, with the evidence."""
        return self._get("/recommendations")

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of the service."""
        return self._get("/openapi.json")

    # -- datasets --------------------------------------------------------
    def datasets_register(self, source: str, dataset_id: str | None = None, name: str | None = None,
                          format: str | None = None, options: dict[str, Any] | None = None,
                          description: str = "") -> dict[str, Any]:
        """Register a file, glob or URL the server can read; returns the dataset."""
        body = _drop_none({"source": source, "dataset_id": dataset_id, "name": name, "format": format,
                           "options": options, "description": description or None})
        return self._post("/datasets", body, timeout=max(self.timeout, 120))["dataset"]

    def datasets_upload(self, path: str | os.PathLike[str], dataset_id: str | None = None,
                        name: str | None = None) -> dict[str, Any]:
        """Send a local file as the raw request body (streamed); returns the dataset."""
        params = _drop_none({"filename": Path(path).name, "dataset_id": dataset_id, "name": name})
        with open(path, "rb") as body:
            answer = self.request("POST", "/datasets/upload", params=params, data=body,
                                  headers={"Content-Type": "application/octet-stream"},
                                  timeout=max(self.timeout, 600))
        return answer["dataset"]

    def datasets_list(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """A page of datasets, newest first: ``{"total", "datasets": [...]}``."""
        return self._get("/datasets", limit=limit, offset=offset)

    def dataset(self, dataset_id: str, preview_rows: int = 20) -> dict[str, Any]:
        """One dataset with its schema and the first ``preview_rows`` rows."""
        return self._get(f"/datasets/{dataset_id}", preview_rows=preview_rows)

    def dataset_delete(self, dataset_id: str) -> dict[str, Any]:
        """Forget a dataset (files the service manages are deleted, never yours)."""
        return self.request("DELETE", f"/datasets/{dataset_id}")

    def partition(self, dataset_id: str, n_partitions: int | None = None,
                  partition_size_mb: float | None = None) -> dict[str, Any]:
        """Rewrite a dataset as balanced partitions; a ``job_id`` to poll when it takes long."""
        body = _drop_none({"dataset_id": dataset_id, "n_partitions": n_partitions,
                           "partition_size_mb": partition_size_mb})
        # the server answers within PARTITION_WAIT_S (30 s by default), then 202
        return self._post("/data/partition", body, timeout=max(self.timeout, 90))

    # -- jobs ------------------------------------------------------------
    def submit(self, operation: str, dataset_id: str, parameters: dict[str, Any] | None = None,
               priority: str = "NORMAL", max_memory_gb: float | None = None,
               max_cores: float | None = None) -> "Job":
        """Queue a job; returns its handle (``Job.submitted`` holds the answer)."""
        body = _drop_none({"operation": operation, "dataset_id": dataset_id, "parameters": parameters or {},
                           "priority": priority, "max_memory_gb": max_memory_gb, "max_cores": max_cores})
        answer = self._post("/jobs/submit", body)
        return Job(self, answer["job_id"], answer)

    def job(self, job_id: str) -> "Job":
        """A handle on an existing job."""
        return Job(self, job_id)

    def job_status(self, job_id: str) -> dict[str, Any]:
        """Status, progress, ETA, queue position, attempts and result."""
        return self._get(f"/jobs/{job_id}/status")

    def job_wait(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """The job's status once it ends, or after ``timeout`` seconds (at most 300)."""
        return self.request("GET", f"/jobs/{job_id}/wait", params={"timeout": timeout},
                            timeout=timeout + self.timeout)

    def jobs_list(self, status: str | list[str] | None = None, priority: str | list[str] | None = None,
                  limit: int = 50, offset: int = 0, q: str | None = None, dataset_id: str | None = None,
                  created_after: str | None = None, created_before: str | None = None) -> dict[str, Any]:
        """A page of jobs, newest first, filtered by status, priority, dataset and creation time
        (ISO-8601), and searched by ``q`` (words of job id, dataset, operation, parameters, error)."""
        return self._get("/jobs/list", status=_csv(status), priority=_csv(priority), limit=limit, offset=offset,
                         q=q, dataset_id=dataset_id, created_after=created_after, created_before=created_before)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a pending or running job."""
        return self._post(f"/jobs/{job_id}/cancel")

    def result(self, job_id: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of a completed job's result rows (or its scalar result)."""
        return self._get(f"/jobs/{job_id}/result", offset=offset, limit=limit)

    def logs(self, job_id: str, since: int = 0, limit: int = 500) -> dict[str, Any]:
        """The job's log lines after line ``since``; poll again with the answer's ``next_since``."""
        return self._get(f"/jobs/{job_id}/logs", since=since, limit=limit)

    def rerun(self, job_id: str) -> "Job":
        """Submit the same operation, dataset, parameters, priority and reservation again."""
        answer = self._post(f"/jobs/{job_id}/rerun")
        return Job(self, answer["job_id"], answer)

    def download(self, job_id: str, path: str | os.PathLike[str], fmt: str | None = None,
                 chunk_bytes: int = 1 << 20) -> str:
        """Save the completed job's whole result to ``path`` as CSV or Parquet (from the file
        extension unless ``fmt`` says); streamed, so any size fits. Returns the path."""
        fmt = fmt or ("parquet" if str(path).endswith(".parquet") else "csv")
        if fmt not in ("csv", "parquet"):
            raise ValueError("fmt must be 'csv' or 'parquet'")
        with self.session.get(f"{self.base_url}{API}/jobs/{job_id}/result.{fmt}", stream=True,
                              timeout=self.timeout) as response:
            if response.status_code >= 400:
                raise ProcessingAPIError.from_response(response)
            with open(path, "wb") as out:
                for chunk in response.iter_content(chunk_bytes):
                    out.write(chunk)
        return str(path)

    def queue_status(self) -> dict[str, Any]:
        """Queue depth by priority and the cluster's reserved and free resources."""
        return self._get("/queue/status")

    def operations(self) -> dict[str, Any]:
        """The operations a job can run, with their parameter schemas."""
        return self._get("/operations")


def _csv(value: str | list[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return ",".join(value) or None


class Job:
    """A handle on one job: its status, a progress-bar wait, its result, cancel."""

    def __init__(self, client: Client, job_id: str, submitted: dict[str, Any] | None = None):
        self.client = client
        self.id = job_id
        self.submitted = submitted or {}

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> dict[str, Any]:
        """The job's current status."""
        return self.client.job_status(self.id)

    def result(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of the result (the job must be completed)."""
        return self.client.result(self.id, offset, limit)

    def cancel(self) -> dict[str, Any]:
        """Cancel the job."""
        return self.client.cancel(self.id)

    def logs(self, since: int = 0) -> dict[str, Any]:
        """The job's log lines after line ``since``."""
        return self.client.logs(self.id, since)

    def download(self, path: str | os.PathLike[str], fmt: str | None = None) -> str:
        """Save the whole result to ``path`` (.csv or .parquet)."""
        return self.client.download(self.id, path, fmt)

    def wait(self, timeout: float | None = None, progress: bool = True, poll: float = 1.0) -> dict[str, Any]:
        """Block until the job ends; its final status. ``TimeoutError`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None  # made after the first answer: an unknown job shows no bar, only the error
        try:
            while True:
                step = min(poll, MAX_WAIT_S)
                if deadline is not None:
                    step = max(0.0, min(step, deadline - time.monotonic()))
                # the server's wait answers as soon as the job ends, else after `step` s
                status = self.client.job_wait(self.id, step)
                if bar is None:
                    bar = tqdm(total=100, desc=self.id, unit="%", disable=not progress,
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")
                _show(bar, status)
                if status["status"] in TERMINAL:
                    return status
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.id} is still {status['status']} "
                                       f"({status.get('progress') or 0:.0f}%) after {timeout} s")
        finally:
            if bar is not None:
                bar.close()


def _show(bar: Any, status: dict[str, Any]) -> None:
    bar.n = min(100.0, float(status.get("progress") or 0.0))
    eta = status.get("eta_seconds")
    postfix = {"status": status["status"]}
    if eta is not None:
        postfix["eta"] = f"{eta:.0f}s"
    bar.set_postfix(postfix, refresh=True)
