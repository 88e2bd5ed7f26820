"""Columnar kernels inside Dask tasks: the engine's fast path.

An operation that can say so returns a :class:`KernelPlan` (``Operation.plan``):

- ``columns``: the projection, read from each fragment and nothing else;
- ``kernel(source, args)``: runs on a worker over ONE fragment (a Parquet file or a
  range of its row groups, a byte range of a CSV file, a JSON-lines file), visible to
  its SQL as the view ``frag``, and returns a small *partial* (a few numbers or a small
  frame);
- ``combine(partials)``: merges partials (associative: they combine in a tree);
- ``finish(partial)``: turns the last partial into the value the operation's
  ``finalize`` expects, the same value the Dask DataFrame graph computes.

Dask still schedules, retries, prioritises and scales: each fragment is one task, the
partials combine in a tree of ``SPLIT_EVERY``, and a small input is one task for the
whole plan (no graph to speak of). User text never becomes SQL: identifiers go
through :func:`ident`, values are bound as parameters.

Each worker thread keeps one DuckDB connection (``connect()`` costs ~15 ms) with
``threads=1``, a ``memory_limit`` of the worker's memory divided by its threads, and
its spill directory in the worker's local directory.
"""
from __future__ import annotations

import functools
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .fragment_io import arrow_of, dictionary_columns, json_relation

FRAGMENT_ROWS = 1_000_000  # Parquet row groups are grouped into fragments of about this many rows
# Whole Parquet files are bundled into one task (one DuckDB scan over several files) until
# a bundle holds about total rows / (TASKS_PER_THREAD × the cluster's threads) rows, at
# least MIN_BUNDLE_ROWS: fewer statements and fewer tasks, with still a few tasks per
# thread for balance and for progress (see bench_operations).
TASKS_PER_THREAD = 2
MIN_BUNDLE_ROWS = 250_000
CSV_BLOCK = 64_000_000  # bytes of CSV per fragment
# bytes of JSON lines per fragment: DuckDB reads a file itself at ~700 MB/s on one thread,
# a range handed over from memory at a third of that, so only a big file is split
JSON_RANGE = 256_000_000

Kernel = Callable[["Source", Any], Any]


@dataclass(frozen=True)
class KernelPlan:
    """How an operation runs as kernels: projection, per-fragment kernel, combine, finish."""

    columns: list[str]
    kernel: Kernel
    combine: Callable[[list[Any]], Any]
    finish: Callable[[Any], Any]
    args: Any = None  # passed to ``kernel``: picklable, built from the validated parameters
    # plans whose finished values the kernel needs first (a transform's group statistics);
    # the runner computes them and passes them as ``args["before"]``
    before: tuple["KernelPlan", ...] = ()
    # a merge too big for one task (value counts of a column with millions of values):
    # spread over tasks by a hash, instead of the tree
    buckets: "Buckets | None" = None


@dataclass(frozen=True)
class Buckets:
    """A merge spread over tasks: each fragment's kernel cuts its partial in ``n`` pieces by a
    hash (of the values, or of the group keys), piece ``b`` of every fragment goes to bucket
    task ``b``, and the buckets' results are gathered. ``gather([reduce(pieces_b) for b])``
    equals ``finish(combine(partials))``.

    The bucket tasks count in a job's progress like the fragments, so a job whose merge is
    most of its time (nunique of 10M distinct values: 60 %) has an honest ETA, and the
    merge runs on every worker instead of one.
    """

    kernel: Callable[["Source", Any, int], list[Any]]  # the fragment's partial in n pieces
    reduce: Callable[[list[Any]], Any]
    gather: Callable[[list[Any]], Any]


@dataclass(frozen=True)
class Fragment:
    """One piece of a dataset a task reads: a file, a row-group range or a byte range."""

    path: str
    fmt: str
    more: tuple[str, ...] = ()  # further whole Parquet files read in the same scan (a bundle)
    row_groups: tuple[int, ...] | None = None
    offset: int = 0
    length: int | None = None  # CSV byte range; None for the whole file
    header: bytes = b""  # a CSV block after the first carries the header line here
    options: dict[str, Any] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # registered column -> pandas dtype


def ident(name: str) -> str:
    """A SQL identifier for any column name (quotes doubled): never a way to inject SQL."""
    return '"' + str(name).replace('"', '""') + '"'


def where(frag: "Fragment") -> str:
    """The fragment's file(s) for a message: a bundle names its first and how many more."""
    return frag.path + (f" (and {len(frag.more)} more file(s))" if frag.more else "")


# -- fragments ----------------------------------------------------------------------

def fragments(files: Sequence[str], fmt: str, options: dict[str, Any], types: dict[str, str],
              threads: int = 0) -> list[Fragment]:
    """The fragments of a local dataset, about ``FRAGMENT_ROWS`` rows or ``CSV_BLOCK`` bytes each;
    with ``threads`` (the cluster's), small whole Parquet files are bundled (``TASKS_PER_THREAD``)."""
    out: list[Fragment] = []
    sized: list[tuple[Fragment, int]] = []
    for path in files:
        if fmt == "parquet":
            sized += _parquet_fragments(path, options, types)
        elif fmt == "csv" and not _compressed(path) and os.path.getsize(path) > CSV_BLOCK:
            out += _csv_fragments(path, options, types)
        elif fmt == "json" and not _compressed(path) and os.path.getsize(path) > JSON_RANGE:
            out += _json_fragments(path, options, types)
        else:
            out.append(Fragment(path, fmt, options=options, types=types))
    if sized:
        out += _bundled(sized, threads)
    return out


def _bundled(sized: list[tuple[Fragment, int]], threads: int) -> list[Fragment]:
    """Consecutive whole-file fragments joined into bundles of about an equal share of the rows."""
    if threads <= 0:
        return [f for f, _ in sized]
    total = sum(rows for _, rows in sized)
    target = max(MIN_BUNDLE_ROWS, -(-total // (TASKS_PER_THREAD * threads)))
    out: list[Fragment] = []
    group: list[Fragment] = []
    rows = 0
    for frag, n in sized:
        if frag.row_groups is not None or n >= target:
            out.append(frag)
            continue
        if group and rows + n > target:
            out.append(_bundle(group))
            group, rows = [], 0
        group.append(frag)
        rows += n
    if group:
        out.append(_bundle(group))
    return out


def _bundle(group: list[Fragment]) -> Fragment:
    first = group[0]
    return Fragment(first.path, "parquet", tuple(f.path for f in group[1:]), options=first.options, types=first.types)


def one_scan(frags: list[Fragment]) -> list[Fragment]:
    """Whole Parquet files (bundled or not) as one fragment: one task reads them in one DuckDB
    scan, which spreads the files over its threads (a 10M-row mean in 16 files on 2 threads:
    70 ms, against 75 ms for its four bundles one after another). Other fragments as given."""
    if len(frags) < 2 or any(f.fmt != "parquet" or f.row_groups is not None for f in frags):
        return frags
    paths = [p for f in frags for p in (f.path, *f.more)]
    return [Fragment(paths[0], "parquet", tuple(paths[1:]), options=frags[0].options, types=frags[0].types)]


def _parquet_fragments(path: str, options: dict[str, Any], types: dict[str, str]) -> list[tuple[Fragment, int]]:
    st = os.stat(path)
    sizes = _row_groups(path, st.st_size, st.st_mtime_ns)
    if sum(sizes) <= FRAGMENT_ROWS or len(sizes) <= 1:
        return [(Fragment(path, "parquet", options=options, types=types), sum(sizes))]
    groups: list[list[int]] = [[]]
    rows = 0
    for i, n in enumerate(sizes):
        if rows >= FRAGMENT_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += n
    return [(Fragment(path, "parquet", row_groups=tuple(g), options=options, types=types),
             sum(sizes[i] for i in g)) for g in groups]


@functools.lru_cache(maxsize=4096)
def _row_groups(path: str, size: int, mtime_ns: int) -> tuple[int, ...]:
    """The rows of each row group of a Parquet file, read from its footer once per version
    of the file (its size and modification time are in the key): every job on a dataset
    read its files' footers again (16 files: 3.5 ms of a job's start)."""
    meta = pq.ParquetFile(path).metadata
    return tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))


def _csv_fragments(path: str, options: dict[str, Any], types: dict[str, str]) -> list[Fragment]:
    size = os.path.getsize(path)
    header = b""
    if options.get("header", True) is not False:
        with open(path, "rb") as f:
            header = f.readline()
    starts = range(len(header), size, CSV_BLOCK)
    return [Fragment(path, "csv", offset=o, length=CSV_BLOCK, header=header, options=options, types=types)
            for o in starts]


def _json_fragments(path: str, options: dict[str, Any], types: dict[str, str]) -> list[Fragment]:
    """A big JSON-lines file in byte ranges (a range holds the lines that start inside it)."""
    return [Fragment(path, "json", offset=o, length=JSON_RANGE, options=options, types=types)
            for o in range(0, os.path.getsize(path), JSON_RANGE)]


def _compressed(path: str) -> bool:
    return path.lower().endswith((".gz", ".bz2", ".xz", ".zst", ".zip"))


# -- on the worker ------------------------------------------------------------------

_local = threading.local()


def connection(threads: int = 1) -> duckdb.DuckDBPyConnection:
    """This thread's DuckDB connection with ``threads`` threads, limited to its share of the
    worker's memory.

    One database per thread count, each kept: DuckDB starts and joins its thread pool on
    ``SET threads``, which cost a 10M-row mean on 2 threads 16 ms of its 61 ms.
    """
    cons: dict[int, duckdb.DuckDBPyConnection] = _local.__dict__.setdefault("cons", {})
    con = cons.get(threads)
    if con is None:
        con = duckdb.connect(config={"threads": threads})
        limit, scratch = _worker_share()
        if limit:
            con.execute(f"SET memory_limit='{int(limit)}B'")
        if scratch:
            con.execute("SET temp_directory=?", [scratch])
        cons[threads] = con
    return con


def _worker_share() -> tuple[int | None, str | None]:
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not in a worker (tests, the threaded scheduler)
        return None, None
    limit = worker.memory_manager.memory_limit
    share = int(limit * 0.6 / max(1, worker.state.nthreads)) if limit else None
    return share, os.path.join(worker.local_directory, "duckdb")


def literal(text: str) -> str:
    """A SQL string literal (quotes doubled), for a file path the server listed itself."""
    return "'" + str(text).replace("'", "''") + "'"


def open_fragment(cur: duckdb.DuckDBPyConnection, frag: Fragment, columns: list[str]) -> None:
    """Make the fragment's ``columns`` the view ``frag`` of this cursor.

    Plain SQL over ``read_parquet`` (a relation object cost ~4 ms more per task); other
    fragments are read to Arrow and registered.
    """
    cols = ", ".join(ident(c) for c in columns) if columns else "*"
    if frag.fmt == "json":
        json_relation(cur, frag, columns).create_view("frag", replace=True)
        return
    if frag.fmt == "parquet" and frag.row_groups is None:
        listed = ", ".join(literal(p) for p in (frag.path, *frag.more))
        source = f"read_parquet([{listed}], union_by_name=true)" if frag.more else f"read_parquet({literal(frag.path)})"
    else:
        cur.register("fragment_data", arrow_of(frag, columns))
        source = "fragment_data"
    cur.execute(f"CREATE OR REPLACE TEMP VIEW frag AS SELECT {cols} FROM {source}")


class Source:
    """One fragment as the view ``frag`` of a cursor: SQL over it, every value bound."""

    def __init__(self, cur: duckdb.DuckDBPyConnection):
        self.cur = cur

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        # through Arrow: DuckDB's own DataFrame conversion cost ~8 ms per result however small
        # (a tiny job's partial), Arrow's ~4 ms; types agree but for decimals (kept as Decimal
        # objects by Arrow: cast to DOUBLE like DuckDB's conversion does)
        table = self.cur.sql(sql, params=list(params) or None).to_arrow_table()
        if any(pa.types.is_decimal(t) for t in table.schema.types):
            table = pa.table([c.cast(pa.float64()) if pa.types.is_decimal(c.type) else c for c in table.columns],
                             names=table.column_names)
        return table.to_pandas()

    def row(self, sql: str, params: Sequence[Any] = ()) -> tuple:
        return self.cur.execute(sql, list(params)).fetchone()

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        # a relation's Arrow output, not a DB-API result's (that one copies every row once more)
        return self.cur.sql(sql, params=list(params) or None).to_arrow_table()


def run_fragment(frag: Fragment, plan: KernelPlan, kernel: Callable[["Source", Any], Any] | None = None,
                 threads: int = 1) -> Any:
    """One task: the plan's kernel over one fragment, on ``threads`` DuckDB threads.

    Data that cannot be read (a malformed CSV row, a value of the wrong type) is an
    ``Unprocessable`` naming the file and where: a data error, never retried.
    """
    from .errors import Unprocessable

    cur = connection(threads).cursor()
    try:
        open_fragment(cur, frag, plan.columns)
        return (kernel or plan.kernel)(Source(cur), plan.args)
    except (pa.ArrowInvalid, duckdb.ConversionException, duckdb.InvalidInputException) as exc:
        span = f" (bytes from {frag.offset}; lines counted from there)" if frag.length is not None else ""
        reason = re.sub(r'in file "DUCKDB_INTERNAL_OBJECTSTORE://\w+", ', "", str(exc))  # DuckDB's name for the bytes
        reason = "\n".join(line for line in reason.splitlines() if not line.startswith("Try setting"))  # its options
        raise Unprocessable(f"cannot read {where(frag)}{span}: {reason}", {"file": frag.path}) from None
    finally:
        cur.close()


def write_fragment(frag: Fragment, plan: KernelPlan, path: str) -> int:
    """A task of an operation that writes a dataset: the kernel's rows as one Parquet file.

    Written to a temporary name and renamed, so a present file is a complete one (a
    retried attempt keeps the files already written).
    """
    table = run_fragment(frag, plan)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary_columns(table.schema))
    os.replace(tmp, path)
    return table.num_rows
