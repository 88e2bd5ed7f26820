"""Where SQL jobs run: the submit-time planner process, and the one task on a worker.

The worker's DuckDB connection is made for the task and closed after it (never the
kernels' shared per-thread connection, whose settings must stay open):

- ``autoinstall_known_extensions`` / ``autoload_known_extensions`` off: no extension is
  fetched or loaded behind a function name (httpfs for ``read_parquet('http://…')``);
- ``memory_limit`` from the job's reservation (``max_memory_gb``, at most 60% of the
  worker's memory), ``threads`` from ``max_cores`` (at most the worker's threads),
  spilling to the worker's local directory;
- ``allowed_paths``: the dataset's own Parquet files, then ``enable_external_access``
  off: no other file, URL, ``ATTACH``, ``COPY``, ``INSTALL``, glob or secret;
- ``lock_configuration`` on: the query cannot ``SET`` any of it back;
- the statement is checked again (exactly one SELECT) before it runs;
- a watcher thread calls DuckDB's ``interrupt()`` after ``timeout_s``;
- while it runs, the connection is known by the job attempt's annotation, so cancelling the
  job interrupts the query on its worker (:func:`interrupt`, run there by ``client.run``):
  a cancelled Dask task's thread runs on to its end otherwise, holding the worker's thread.
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InvalidRequest, Unprocessable
from ..json_text import json_kind
from ..kernels import _compressed, ident, literal
from ._sql_plan import connect, lock_down, single_select

PLAN_TIMEOUT_S = 1.0  # a query the planner cannot bind in this long is refused (the loop waits for it)
START_TIMEOUT_S = 30.0  # the planner process's start (once)
BATCH_ROWS = 65_536
PART_ROWS = 1_000_000  # rows per Parquet file of a result dataset
WORKER_SHARE = 0.6  # of the worker's memory limit, at most, for DuckDB
STOPPED_KEPT = 256  # interrupted keys remembered per worker, for a task that starts after its cancel

_running: dict[str, threading.Event] = {}  # annotation -> what stops its query
_stopped: collections.deque[str] = collections.deque(maxlen=STOPPED_KEPT)
_registry = threading.Lock()


class Planner:
    """The planner child process (see :mod:`._sql_plan`): started on first use, restarted
    after it was killed for taking too long or died."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def plan(self, query: str, columns: list[list[str]]) -> dict[str, Any]:
        """The planner's answer for ``query`` over ``data(columns)``."""
        with self._lock:
            proc = self._running()
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"query": query, "columns": columns}).encode() + b"\n")
                proc.stdin.flush()
                line = self._line(proc, PLAN_TIMEOUT_S)
            except OSError:
                line = None
            if line is None:
                self._stop()
                return {"error": "too_costly", "prefix": "",
                        "message": f"planning the query took longer than {PLAN_TIMEOUT_S:g} s"}
            return json.loads(line)

    def _running(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._buffer = b""
        script = str(Path(__file__).with_name("_sql_plan.py"))
        # -I: no user site, no environment, not the script's folder on sys.path
        self._proc = subprocess.Popen([sys.executable, "-I", script], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        if self._line(self._proc, START_TIMEOUT_S) is None:
            self._stop()
            raise RuntimeError("the SQL planner process did not start")
        return self._proc

    def _line(self, proc: subprocess.Popen, timeout: float) -> bytes | None:
        """One line from the child within ``timeout`` seconds, else None."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        """Stop the child (at exit); safe to call twice."""
        with self._lock:
            self._stop()


PLANNER = Planner()
atexit.register(PLANNER.close)


@dataclass(frozen=True)
class SqlTask:
    """Everything the worker needs: picklable, built from the validated request."""

    query: str
    source: str
    fmt: str
    options: dict[str, Any]
    schema: dict[str, str]  # registered column -> pandas dtype
    out: str  # the job's result folder, written only for a large result
    inline_rows: int
    memory_bytes: int  # the reservation; 0 when unknown
    threads: int
    timeout_s: float
    key: str = ""  # the job attempt's annotation: what a cancel names (see :func:`interrupt`)

    def __call__(self) -> dict[str, Any]:
        return run(self)


def run(task: SqlTask) -> dict[str, Any]:
    """The query over the whole dataset: ``{"table": pa.Table}`` when it has at most
    ``inline_rows`` rows, else the result dataset's ``rows``, ``n_partitions`` and ``columns``."""
    refused = single_select(task.query)
    if refused:  # submit checked it; a worker never runs anything else
        raise InvalidRequest(f"refused by the SQL sandbox: {refused[1].split(chr(10))[0]}", {"field": "query"})
    memory, threads, scratch = _limits(task)
    con = connect(f"{memory}B" if memory else "80%", threads, scratch)
    stop, done = _register(task.key), threading.Event()
    try:
        allowed = _load(con, task)
        lock_down(con, allowed)
        watch = threading.Thread(target=_watch, args=(con, stop, done, task.timeout_s), daemon=True)
        watch.start()
        try:
            if stop.is_set():
                raise duckdb.InterruptException("stopped before it ran")
            reader = con.sql(task.query).to_arrow_reader(BATCH_ROWS)
            return _collect(reader, task)
        except duckdb.InterruptException:
            if stop.is_set():
                raise Unprocessable("the query was interrupted: its job was stopped (cancelled or preempted)") \
                    from None
            raise Unprocessable(f"the query ran longer than timeout_s={task.timeout_s:g} and was stopped",
                                {"field": "timeout_s"}) from None
        except duckdb.PermissionException as exc:
            raise InvalidRequest(f"refused by the SQL sandbox: {_first(exc)}", {"field": "query"}) from None
        except duckdb.Error as exc:
            raise Unprocessable(f"the query failed: {_first(exc)}", {"field": "query"}) from None
        finally:
            done.set()
    finally:
        with _registry:
            _running.pop(task.key, None)
        con.close()


def _watch(con: duckdb.DuckDBPyConnection, stop: threading.Event, done: threading.Event, timeout_s: float) -> None:
    """Interrupt the query when its job is stopped or its time is up; again and again until the
    run ends, since an interrupt landing between two statements is lost."""
    if done.is_set() or (not stop.wait(timeout_s) and done.is_set()):
        return
    while not done.is_set():
        con.interrupt()
        done.wait(0.05)


def interrupt(key: str) -> bool:
    """Run on every worker when the job attempt ``key`` is stopped: interrupt its query if it
    runs here (True), and stop it at once if it starts here later."""
    with _registry:
        _stopped.append(key)
        stop = _running.get(key)
    if stop is not None:
        stop.set()
    return stop is not None


def _register(key: str) -> threading.Event:
    """The event that stops the query of ``key`` (already set when ``key`` was stopped)."""
    stop = threading.Event()
    with _registry:
        if key:
            _running[key] = stop
        if key and key in _stopped:
            stop.set()
    return stop


def _first(exc: BaseException) -> str:
    return str(exc).split("\n\n", 1)[0]


def _limits(task: SqlTask) -> tuple[int, int, str | None]:
    """DuckDB's memory limit and threads: the reservation, within the worker's means."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not in a worker (tests, the threaded scheduler)
        return task.memory_bytes, task.threads, None
    limit = worker.memory_manager.memory_limit
    memory = task.memory_bytes
    if limit:
        memory = min(memory or limit, int(limit * WORKER_SHARE))
    threads = min(task.threads, max(1, worker.state.nthreads))
    return memory, threads, os.path.join(worker.local_directory, "duckdb-sql")


def _load(con: duckdb.DuckDBPyConnection, task: SqlTask) -> list[str]:
    """Make the dataset the table ``data``; returns the files the query may read."""
    from .. import readers
    from ..sources import is_url

    cols = ", ".join(ident(c) for c in task.schema) or "*"
    local = not is_url(task.source) and not task.options.get("columns")
    if local and task.fmt == "parquet":
        files = readers.list_files(task.source, "parquet")
        listed = ", ".join(literal(f) for f in files)
        con.execute(f"CREATE TEMP VIEW data AS SELECT {cols} FROM read_parquet([{listed}], union_by_name=true)")
        return files
    if local and task.fmt in ("csv", "json"):
        files = readers.list_files(task.source, task.fmt)
        if task.fmt == "csv" or all(json_kind(f) == "lines" and not _compressed(f) for f in files):
            _load_fragments(con, task, files)
            return []
    _load_frame(con, task)
    return []


def _load_fragments(con: duckdb.DuckDBPyConnection, task: SqlTask, files: list[str]) -> None:
    """CSV and JSON lines, typed as registered (as the kernels read them), into a temp table
    one fragment at a time: DuckDB holds it within its memory limit and spills the rest."""
    from .. import fragment_io, kernels

    frags = kernels.fragments(files, task.fmt, task.options, task.schema)
    for i, frag in enumerate(frags):
        con.register("fragment_data", fragment_io.arrow_of(frag, list(task.schema)))
        if i == 0:
            con.execute("CREATE TEMP TABLE data AS SELECT * FROM fragment_data")
        else:
            con.execute("INSERT INTO data BY NAME SELECT * FROM fragment_data")
        con.unregister("fragment_data")


def _load_frame(con: duckdb.DuckDBPyConnection, task: SqlTask) -> None:
    """Anything else (a URL, a JSON array, selected columns): read by the Dask reader in this task."""
    from .. import readers
    from ..expr_lock import GRAPH_LOCK

    with GRAPH_LOCK:
        ddf = readers.read_ddf(task.source, task.fmt, task.options)
    frame = ddf.compute(scheduler="sync")
    con.register("frame_data", pa.Table.from_pandas(frame, preserve_index=False))
    con.execute("CREATE TEMP TABLE data AS SELECT * FROM frame_data")
    con.unregister("frame_data")


def _collect(reader: pa.RecordBatchReader, task: SqlTask) -> dict[str, Any]:
    """Up to ``inline_rows`` rows as a table; past that, everything written as Parquet files."""
    head: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        head.append(batch)
        rows += batch.num_rows
        if rows > task.inline_rows:
            break
    else:
        return {"table": pa.Table.from_batches(head, schema=reader.schema)}
    return _write(reader, head, task)


def _write(reader: pa.RecordBatchReader, head: list[pa.RecordBatch], task: SqlTask) -> dict[str, Any]:
    """Stream the result into ``part-NNNNN.parquet`` files of ``PART_ROWS`` rows (a retried
    attempt starts over: a query's output cannot be resumed part by part)."""
    out = Path(task.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    schema = reader.schema
    parts: list[str] = []
    writer: pq.ParquetWriter | None = None
    in_part = total = 0

    def close() -> None:
        if writer is not None:
            writer.close()
            os.replace(parts[-1] + ".tmp", parts[-1])

    def batches() -> Any:
        yield from head
        yield from reader

    for batch in batches():
        if writer is None or in_part >= PART_ROWS:
            close()
            parts.append(str(out / f"part-{len(parts):05d}.parquet"))
            writer = pq.ParquetWriter(parts[-1] + ".tmp", schema, compression="zstd")
            in_part = 0
        writer.write_batch(batch)
        in_part += batch.num_rows
        total += batch.num_rows
    close()
    return {"rows": total, "n_partitions": len(parts), "columns": schema.names}
