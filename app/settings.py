"""All configuration, read once from the environment into a frozen object.

``SETTINGS`` is the one table of variables: name, type, default and help. The
README's configuration table is checked against it by ``tests/test_settings.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, on/off), got {value!r}")


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Var:
    env: str
    attr: str
    parse: Any
    default: Any
    help: str


SETTINGS: tuple[Var, ...] = (
    Var("PROCESSING_HOST", "host", str, "127.0.0.1", "Address the server binds to."),
    Var("PROCESSING_PORT", "port", int, 8001, "Port of the dashboard and the JSON API."),
    Var("PROCESSING_DATA_DIR", "data_dir", Path, "./data", "Holds the SQLite file and managed data (uploads, partitions, results); a relative path is taken from the directory the server starts in, once."),
    Var("DATA_ROOTS", "data_roots", _list, "", "Comma-separated extra directories datasets may be registered from (besides the data dir)."),
    Var("REMOTE_PROTOCOLS", "remote_protocols", _list, "s3,gs,gcs,az,abfs,abfss,https", "URL protocols datasets may be registered from; empty disables remote sources."),
    Var("REMOTE_ALLOW_PRIVATE", "remote_allow_private", _bool, False, "Allow http(s)/ftp URLs whose host is a loopback, private or link-local address."),
    Var("DASK_SCHEDULER_ADDRESS", "scheduler_address", str, "", "Attach to this existing Dask scheduler instead of starting a LocalCluster."),
    Var("CLUSTER_FACTORY", "cluster_factory", str, "", "Dotted path `module:function` returning a Dask cluster object (dask-jobqueue, dask-kubernetes, Gateway…)."),
    Var("DASK_N_WORKERS", "n_workers", int, 4, "Worker processes of the embedded LocalCluster."),
    Var("DASK_THREADS_PER_WORKER", "threads_per_worker", int, 2, "Threads per worker."),
    Var("DASK_MEMORY_LIMIT", "memory_limit", str, "2GB", "Memory limit per worker (e.g. 2GB, 512MiB)."),
    Var("DASK_WORKER_NICE", "worker_nice", int, 10, "CPU niceness (0-19) of the embedded cluster's workers: the API and dashboard come first on a shared machine; 0 keeps the default."),
    Var("DASK_DASHBOARD_ADDRESS", "dashboard_address", str, "127.0.0.1:8787", "Where the Dask dashboard binds (the real link is reported if the port moves)."),
    Var("CLUSTER_AUTOSTART", "autostart", _bool, True, "Start (or attach to) the cluster when the server starts."),
    Var("MAX_WORKERS", "max_workers", int, 32, "Upper bound accepted by the scale endpoint."),
    Var("MAX_CONCURRENT_JOBS", "max_concurrent_jobs", int, 4, "Jobs that may run at the same time."),
    Var("JOB_CHECK_INTERVAL", "job_check_interval", float, 5.0, "Safety-net interval (s) of the dispatcher; dispatch is event-driven."),
    Var("DEFAULT_MAX_MEMORY_GB", "default_max_memory_gb", float, 2.0, "Memory a job reserves when it does not say."),
    Var("DEFAULT_MAX_CORES", "default_max_cores", int, 2, "Cores a job reserves when it does not say."),
    Var("QUEUE_AGING_S", "queue_aging_s", float, 600.0, "A waiting job's priority rises one level per this many seconds."),
    Var("QUEUE_BACKFILL_S", "queue_backfill_s", float, 60.0, "How long smaller jobs may start ahead of a blocked bigger one."),
    Var("PREEMPTION", "preemption", _bool, True, "CRITICAL jobs requeue lower-priority running jobs when they need room."),
    Var("JOB_MAX_ATTEMPTS", "job_max_attempts", int, 3, "Attempts for transient failures (worker or scheduler loss)."),
    Var("ENFORCE_JOB_MEMORY", "enforce_job_memory", _bool, True, "Stop a job holding 1.5× more memory on the workers than its max_memory_gb."),
    Var("RESULT_INLINE_ROWS", "result_inline_rows", int, 1000, "Larger table results are written as a dataset instead of inline."),
    Var("KERNELS", "kernels", _bool, True, "Run operations as DuckDB kernels inside Dask tasks where they have one; 0 runs every operation as a Dask DataFrame graph."),
    Var("KERNEL_ONE_TASK_MB", "kernel_one_task_mb", float, 32.0, "A dataset smaller than this (MB on disk) runs as one task for the whole job; larger ones as one task per fragment."),
    Var("MAX_QUEUED_JOBS", "max_queued_jobs", int, 10000, "Pending jobs accepted before submissions get 429."),
    Var("METRICS_INTERVAL", "metrics_interval", float, 2.0, "Seconds between metric rows written to SQLite."),
    Var("LIVE_INTERVAL", "live_interval", float, 1.0, "Seconds between samples of the live view (one sampler per process)."),
    Var("METRICS_RETENTION_HOURS", "metrics_retention_hours", float, 72.0, "Metric history older than this is pruned."),
    Var("MAX_UPLOAD_MB", "max_upload_mb", float, 1024.0, "Largest accepted upload."),
    Var("MAX_REQUEST_KB", "max_request_kb", float, 1024.0, "Largest accepted JSON body."),
    Var("PARTITION_WAIT_S", "partition_wait_s", float, 30.0, "The partition endpoint answers synchronously within this bound, else 202 with a job."),
    Var("PROCESSING_API_TOKEN", "api_token", str, "", "Bearer token required by the API and the dashboard when set."),
    Var("PROCESSING_READ_TOKEN", "read_token", str, "", "Optional read-only token for GET endpoints."),
    Var("WALL_TOKEN", "wall_token", str, "", "Read-only token accepted in the /wall URL."),
    Var("PROCESSING_ALLOW_INSECURE", "allow_insecure", _bool, False, "Allow binding a non-loopback address without a token."),
    Var("CORS_ALLOWED_ORIGINS", "cors_origins", _list, "", "Comma-separated origins allowed to call the API from a browser."),
    Var("PROCESSING_ALLOWED_HOSTS", "allowed_hosts", _list, "", "Comma-separated extra host names the server answers to (besides the bound host, and localhost on a loopback bind); any other Host header gets 421."),
    Var("IDLE_TIMEOUT_S", "idle_timeout_s", float, 10.0, "A connection must deliver a complete request header within this many seconds of opening or of its previous answer, else it is closed."),
    Var("BODY_TIMEOUT_S", "body_timeout_s", float, 30.0, "Time allowed to receive a request body (uploads: at least 1 s per MB of MAX_UPLOAD_MB)."),
    Var("MAX_CONNECTIONS", "max_connections", int, 4000, "Open HTTP connections in total; over it the oldest connection that never sent a request is closed, else the new one gets 503."),
    Var("MAX_CONNECTIONS_PER_CLIENT", "max_connections_per_client", int, 1200, "Open HTTP connections per client address, with the same rule."),
    Var("AUTH_MAX_FAILURES", "auth_max_failures", int, 10, "Wrong tokens from one client address (API, sign-in, wall) before it is locked out."),
    Var("AUTH_LOCKOUT_S", "auth_lockout_s", float, 60.0, "How long a client address stays locked out (429 with Retry-After) after AUTH_MAX_FAILURES."),
    Var("DEMO_DATASET", "demo_dataset", _bool, True, "Register the demo_expression dataset on first start."),
    Var("DEMO_ROWS", "demo_rows", int, 500_000, "Rows of the generated demo dataset."),
    Var("LOG_LEVEL", "log_level", str, "INFO", "Python logging level."),
)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8001
    data_dir: Path = Path("./data")
    data_roots: tuple[str, ...] = ()
    remote_protocols: tuple[str, ...] = ("s3", "gs", "gcs", "az", "abfs", "abfss", "https")
    remote_allow_private: bool = False
    scheduler_address: str = ""
    cluster_factory: str = ""
    n_workers: int = 4
    threads_per_worker: int = 2
    memory_limit: str = "2GB"
    worker_nice: int = 10
    dashboard_address: str = "127.0.0.1:8787"
    autostart: bool = True
    max_workers: int = 32
    max_concurrent_jobs: int = 4
    job_check_interval: float = 5.0
    default_max_memory_gb: float = 2.0
    default_max_cores: int = 2
    queue_aging_s: float = 600.0
    queue_backfill_s: float = 60.0
    preemption: bool = True
    job_max_attempts: int = 3
    enforce_job_memory: bool = True
    result_inline_rows: int = 1000
    kernels: bool = True
    kernel_one_task_mb: float = 32.0
    max_queued_jobs: int = 10000
    metrics_interval: float = 2.0
    live_interval: float = 1.0
    metrics_retention_hours: float = 72.0
    max_upload_mb: float = 1024.0
    max_request_kb: float = 1024.0
    partition_wait_s: float = 30.0
    api_token: str = field(default="", repr=False)
    read_token: str = field(default="", repr=False)
    wall_token: str = field(default="", repr=False)
    allow_insecure: bool = False
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    idle_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4000
    max_connections_per_client: int = 1200
    auth_max_failures: int = 10
    auth_lockout_s: float = 60.0
    demo_dataset: bool = True
    demo_rows: int = 500_000
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # once, against the cwd at start: a relative data dir was later joined to the
        # allowed roots a second time ("data/data/managed/…"), which broke the demo dataset
        object.__setattr__(self, "data_dir", Path(os.path.abspath(Path(self.data_dir).expanduser())))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var in SETTINGS:
            raw = env.get(var.env)
            if raw is None or raw == "" and var.parse not in (str, _list):
                continue
            try:
                values[var.attr] = var.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{var.env}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values that cannot work, with the variable's name."""
        positive = {
            "DASK_N_WORKERS": self.n_workers >= 0,
            "DASK_THREADS_PER_WORKER": self.threads_per_worker >= 1,
            "DASK_WORKER_NICE": 0 <= self.worker_nice <= 19,
            "MAX_CONCURRENT_JOBS": self.max_concurrent_jobs >= 1,
            "DEFAULT_MAX_CORES": self.default_max_cores > 0,
            "DEFAULT_MAX_MEMORY_GB": self.default_max_memory_gb > 0,
            "PROCESSING_PORT": 0 <= self.port < 65536,
            "LIVE_INTERVAL": self.live_interval > 0,
            "METRICS_INTERVAL": self.metrics_interval > 0,
            "IDLE_TIMEOUT_S": self.idle_timeout_s > 0,
            "BODY_TIMEOUT_S": self.body_timeout_s > 0,
            "MAX_CONNECTIONS": self.max_connections >= 1,
            "MAX_CONNECTIONS_PER_CLIENT": self.max_connections_per_client >= 1,
            "AUTH_MAX_FAILURES": self.auth_max_failures >= 1,
            "AUTH_LOCKOUT_S": self.auth_lockout_s >= 0,
        }
        bad = [name for name, ok in positive.items() if not ok]
        if bad:
            raise ValueError(f"invalid configuration: {', '.join(bad)} out of range")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "processing.db"

    @property
    def allowed_roots(self) -> list[Path]:
        """Directories datasets may be read from: the data dir and DATA_ROOTS."""
        return [self.data_dir.resolve(), *(Path(r).expanduser().resolve() for r in self.data_roots)]


def _check_table_matches_dataclass() -> None:
    names = {f.name for f in fields(Settings)}
    missing = [v.attr for v in SETTINGS if v.attr not in names]
    assert not missing, missing


_check_table_matches_dataclass()
