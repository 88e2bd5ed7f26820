"""All configuration, read once from the environment into a frozen object.

Each setting is declared once, as a field of :class:`Settings`: its attribute and type,
its environment variable, its default, its help and the values it accepts. ``SETTINGS``
(one :class:`Var` per field) and the README's configuration table are derived from it:
``python -m app.settings`` prints the table and ``tests/test_settings.py`` checks that the
README holds it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, get_type_hints


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, on/off), got {value!r}")


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


PARSERS: dict[Any, Callable[[str], Any]] = {
    str: str, int: int, float: float, bool: _bool, Path: Path, tuple[str, ...]: _list,
}


def setting(env: str, default: Any, *, help: str, valid: Callable[[Any], bool] | None = None,
            secret: bool = False) -> Any:
    """A field of :class:`Settings` read from ``env``; ``valid`` says which values work."""
    return field(default=default, repr=not secret, metadata={"env": env, "help": help, "valid": valid})


@dataclass(frozen=True)
class Settings:
    host: str = setting("PROCESSING_HOST", "127.0.0.1",
        help="Address the server binds to.")
    port: int = setting("PROCESSING_PORT", 8001, valid=lambda n: 0 <= n < 65536,
        help="Port of the dashboard and the JSON API.")
    data_dir: Path = setting("PROCESSING_DATA_DIR", Path("./data"),
        help="Holds the SQLite file and managed data (uploads, partitions, results); a relative path is taken from the directory the server starts in, once.")
    data_roots: tuple[str, ...] = setting("DATA_ROOTS", (),
        help="Comma-separated extra directories datasets may be registered from (besides the data dir).")
    remote_protocols: tuple[str, ...] = setting("REMOTE_PROTOCOLS", ("s3", "gs", "gcs", "az", "abfs", "abfss", "https"),
        help="URL protocols datasets may be registered from; empty disables remote sources.")
    remote_allow_private: bool = setting("REMOTE_ALLOW_PRIVATE", False,
        help="Allow http(s)/ftp URLs whose host is a loopback, private or link-local address.")
    scheduler_address: str = setting("DASK_SCHEDULER_ADDRESS", "",
        help="Attach to this existing Dask scheduler instead of starting a LocalCluster.")
    cluster_factory: str = setting("CLUSTER_FACTORY", "",
        help="Dotted path `module:function` returning a Dask cluster object (dask-jobqueue, dask-kubernetes, Gateway…).")
    n_workers: int = setting("DASK_N_WORKERS", 4, valid=lambda n: n >= 0,
        help="Worker processes of the embedded LocalCluster.")
    threads_per_worker: int = setting("DASK_THREADS_PER_WORKER", 2, valid=lambda n: n >= 1,
        help="Threads per worker.")
    memory_limit: str = setting("DASK_MEMORY_LIMIT", "2GB",
        help="Memory limit per worker (e.g. 2GB, 512MiB).")
    worker_nice: int = setting("DASK_WORKER_NICE", 10, valid=lambda n: 0 <= n <= 19,
        help="CPU niceness (0-19) of the embedded cluster's workers: the API and dashboard come first on a shared machine; 0 keeps the default.")
    dashboard_address: str = setting("DASK_DASHBOARD_ADDRESS", "127.0.0.1:8787",
        help="Where the Dask dashboard binds (the real link is reported if the port moves).")
    autostart: bool = setting("CLUSTER_AUTOSTART", True,
        help="Start (or attach to) the cluster when the server starts.")
    max_workers: int = setting("MAX_WORKERS", 32,
        help="Upper bound accepted by the scale endpoint.")
    max_concurrent_jobs: int = setting("MAX_CONCURRENT_JOBS", 4, valid=lambda n: n >= 1,
        help="Jobs that may run at the same time.")
    job_check_interval: float = setting("JOB_CHECK_INTERVAL", 5.0,
        help="Safety-net interval (s) of the dispatcher; dispatch is event-driven.")
    default_max_memory_gb: float = setting("DEFAULT_MAX_MEMORY_GB", 2.0, valid=lambda x: x > 0,
        help="Memory a job reserves when it does not say.")
    default_max_cores: int = setting("DEFAULT_MAX_CORES", 2, valid=lambda n: n > 0,
        help="Cores a job reserves when it does not say.")
    queue_aging_s: float = setting("QUEUE_AGING_S", 600.0,
        help="A waiting job's priority rises one level per this many seconds.")
    queue_backfill_s: float = setting("QUEUE_BACKFILL_S", 60.0,
        help="How long smaller jobs may start ahead of a blocked bigger one.")
    preemption: bool = setting("PREEMPTION", True,
        help="CRITICAL jobs requeue lower-priority running jobs when they need room.")
    job_max_attempts: int = setting("JOB_MAX_ATTEMPTS", 3,
        help="Attempts for transient failures (worker or scheduler loss).")
    job_max_lost_tasks: int = setting("JOB_MAX_LOST_TASKS", 5, valid=lambda n: n >= 1,
        help="Attempts in a row the watchdog may requeue for lost tasks (no worker ran them) before the job fails.")
    enforce_job_memory: bool = setting("ENFORCE_JOB_MEMORY", True,
        help="Stop a job holding 1.5× more memory on the workers than its max_memory_gb.")
    result_inline_rows: int = setting("RESULT_INLINE_ROWS", 1000,
        help="Larger table results are written as a dataset instead of inline.")
    kernels: bool = setting("KERNELS", True,
        help="Run operations as DuckDB kernels inside Dask tasks where they have one; 0 runs every operation as a Dask DataFrame graph.")
    kernel_one_task_mb: float = setting("KERNEL_ONE_TASK_MB", 32.0,
        help="A dataset smaller than this (MB on disk) runs as one task for the whole job, whatever its cores; larger ones "
             "as one task per fragment (see KERNEL_ONE_HOST_MB for mid-sized inputs on one machine). A one-task job shows "
             "no progress until it ends.")
    kernel_one_host_mb: float = setting("KERNEL_ONE_HOST_MB", 256.0,
        help="On the embedded cluster (every worker on this machine), a job whose max_cores cover all the cluster's threads "
             "and whose input is smaller than this (MB on disk) runs as one task on that many DuckDB threads: the same cores "
             "as its fragments would use, without a task per fragment and the merge after them (10M Parquet rows, 160 MB: "
             "see bench_operations). Median and nunique keep their fragments and their progress; 0 turns this off.")
    max_queued_jobs: int = setting("MAX_QUEUED_JOBS", 10000,
        help="Pending jobs accepted before submissions get 429.")
    metrics_interval: float = setting("METRICS_INTERVAL", 2.0, valid=lambda x: x > 0,
        help="Seconds between metric rows written to SQLite.")
    live_interval: float = setting("LIVE_INTERVAL", 1.0, valid=lambda x: x > 0,
        help="Seconds between samples of the live view (one sampler per process).")
    loop_lag_interval: float = setting("LOOP_LAG_INTERVAL", 0.1, valid=lambda x: 0.001 <= x <= 10,
        help="Seconds between the server's checks of its event loop's lag (/health); a stall shows when it spans a check, so a smaller value catches shorter ones, at more CPU (0.3 % of a core at 0.1, 1.3 % at 0.02).")
    session_expiry_s: float = setting("SESSION_EXPIRY_S", 15.0, valid=lambda x: 1 <= x <= 3600,
        help="Seconds a dashboard session is kept after its tab closed (its websocket gone) before its memory is freed; a tab's page must connect its websocket within this (1-3600).")
    stale_heartbeat_s: float = setting("STALE_HEARTBEAT_S", 30.0, valid=lambda x: x > 0,
        help="A worker whose last heartbeat is older than this many seconds makes health degraded (Dask workers beat every 0.5-2 s; a busy one may lag, a frozen one stops).")
    metrics_retention_hours: float = setting("METRICS_RETENTION_HOURS", 72.0,
        help="Metric history older than this is pruned.")
    max_upload_mb: float = setting("MAX_UPLOAD_MB", 1024.0,
        help="Largest accepted upload.")
    max_request_kb: float = setting("MAX_REQUEST_KB", 1024.0,
        help="Largest accepted JSON body.")
    partition_wait_s: float = setting("PARTITION_WAIT_S", 30.0,
        help="The partition endpoint answers synchronously within this bound, else 202 with a job.")
    api_token: str = setting("PROCESSING_API_TOKEN", "", secret=True,
        help="Bearer token required by the API and the dashboard when set.")
    read_token: str = setting("PROCESSING_READ_TOKEN", "", secret=True,
        help="Optional read-only token for GET endpoints.")
    wall_token: str = setting("WALL_TOKEN", "", secret=True,
        help="Read-only token accepted in the /wall URL.")
    allow_insecure: bool = setting("PROCESSING_ALLOW_INSECURE", False,
        help="Allow binding a non-loopback address without a token.")
    cors_origins: tuple[str, ...] = setting("CORS_ALLOWED_ORIGINS", (),
        help="Comma-separated origins allowed to call the API from a browser.")
    allowed_hosts: tuple[str, ...] = setting("PROCESSING_ALLOWED_HOSTS", (),
        help="Comma-separated extra host names the server answers to (besides the bound host, and localhost on a loopback bind); any other Host header gets 421.")
    idle_timeout_s: float = setting("IDLE_TIMEOUT_S", 10.0, valid=lambda x: x > 0,
        help="A connection must deliver a complete request header within this many seconds of opening or of its previous answer, else it is closed.")
    body_timeout_s: float = setting("BODY_TIMEOUT_S", 30.0, valid=lambda x: x > 0,
        help="Time allowed to receive a request body (uploads: at least 1 s per MB of MAX_UPLOAD_MB).")
    max_connections: int = setting("MAX_CONNECTIONS", 4000, valid=lambda n: n >= 1,
        help="Open HTTP connections in total; over it the oldest connection that never sent a request is closed, else the new one gets 503.")
    max_connections_per_client: int = setting("MAX_CONNECTIONS_PER_CLIENT", 1200, valid=lambda n: n >= 1,
        help="Open HTTP connections per client address, with the same rule.")
    auth_max_failures: int = setting("AUTH_MAX_FAILURES", 10, valid=lambda n: n >= 1,
        help="Wrong tokens from one client address (API, sign-in, wall) before it is locked out.")
    auth_lockout_s: float = setting("AUTH_LOCKOUT_S", 60.0, valid=lambda x: x >= 0,
        help="How long a client address stays locked out (429 with Retry-After) after AUTH_MAX_FAILURES.")
    webhook_url: str = setting("WEBHOOK_URL", "",
        help="URL that receives a POST of every job's status when it ends, for jobs submitted without a notify_url; it passes the remote-URL policy (REMOTE_PROTOCOLS, REMOTE_ALLOW_PRIVATE).")
    webhook_secret: str = setting("WEBHOOK_SECRET", "", secret=True,
        help="Key of the HMAC-SHA256 signature of each webhook body (header X-Processing-Signature: sha256=<hex>); unset sends no signature.")
    webhook_tries: int = setting("WEBHOOK_TRIES", 5, valid=lambda n: n >= 1,
        help="Attempts to deliver one webhook before giving up (each failure is written to the job's log).")
    webhook_backoff_s: float = setting("WEBHOOK_BACKOFF_S", 2.0, valid=lambda x: x >= 0,
        help="Wait before the second delivery attempt; it doubles after each failure.")
    webhook_timeout_s: float = setting("WEBHOOK_TIMEOUT_S", 10.0, valid=lambda x: x > 0,
        help="Time allowed to connect to a webhook receiver and get its answer.")
    demo_dataset: bool = setting("DEMO_DATASET", True,
        help="Register the demo_expression dataset on first start.")
    demo_rows: int = setting("DEMO_ROWS", 500_000,
        help="Rows of the generated demo dataset.")
    log_level: str = setting("LOG_LEVEL", "INFO",
        help="Python logging level.")
    store_loop_guard: bool = setting("STORE_LOOP_GUARD", False,
        help="Log an ERROR line 'store read on the event loop', with a short stack, once for each place that reads SQLite on a thread running an event loop (a check for development and tests: reads belong on the store's read pool).")

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
        bad = [var.env for var in SETTINGS if var.valid is not None and not var.valid(getattr(self, var.attr))]
        if bad:
            raise ValueError(f"invalid configuration: {', '.join(bad)} out of range")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "processing.db"

    @property
    def allowed_roots(self) -> list[Path]:
        """Directories datasets may be read from: the data dir and DATA_ROOTS."""
        return [self.data_dir.resolve(), *(Path(r).expanduser().resolve() for r in self.data_roots)]


@dataclass(frozen=True)
class Var:
    """One setting as the environment sees it, derived from its field of :class:`Settings`."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    valid: Callable[[Any], bool] | None = None

    @property
    def text(self) -> str:
        """The default as it would be written in the environment; "" when unset."""
        if isinstance(self.default, bool):
            return str(int(self.default))
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        if isinstance(self.default, Path) and not self.default.is_absolute():
            return f"./{self.default}"  # Path drops the "./" it was written with
        return str(self.default)


def _vars() -> tuple[Var, ...]:
    types = get_type_hints(Settings)
    return tuple(Var(f.metadata["env"], f.name, PARSERS[types[f.name]], f.default, f.metadata["help"],
                     f.metadata["valid"]) for f in fields(Settings))


SETTINGS: tuple[Var, ...] = _vars()


def markdown_table() -> str:
    """The README's configuration table, one row per setting."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for var in SETTINGS:
        default = f"`{var.text}`" if var.text else "(unset)"
        rows.append(f"| `{var.env}` | {default} | {var.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
