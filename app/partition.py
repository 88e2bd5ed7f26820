"""Plan and write balanced Parquet partitions of a Dask DataFrame."""
from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import dask
import dask.local
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .expr_lock import GRAPH_LOCK
from .fragment_io import dictionary_columns
from .errors import Conflict, InvalidRequest, Unprocessable

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

MB = 1_000_000  # decimal, as Dask reads "64MB"
DEFAULT_PARTITION_SIZE_MB = 128.0
MAX_PARTITIONS = 10_000
COMPRESSION = "zstd"


def plan_partitions(size_bytes: int, n_partitions: int | None, partition_size_mb: float | None,
                    max_partitions: int = MAX_PARTITIONS) -> int:
    """How many output partitions to write.

    Rule: an explicit ``n_partitions`` wins (it must be 1..max_partitions); otherwise
    ``ceil(size_bytes / (partition_size_mb * 1,000,000))``, with ``partition_size_mb``
    defaulting to 128, and never fewer than 1. ``size_bytes`` is the stored input size,
    so output files (re-encoded with zstd) may be smaller than the target. A size that
    would need more than ``max_partitions`` files is refused with the smallest size allowed.
    """
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
        raise InvalidRequest("size_bytes must be a non-negative integer")
    if n_partitions is not None:
        if isinstance(n_partitions, bool) or not isinstance(n_partitions, int) \
                or not 1 <= n_partitions <= max_partitions:
            raise InvalidRequest(f"n_partitions must be an integer from 1 to {max_partitions}",
                                 {"field": "n_partitions", "min": 1, "max": max_partitions})
        return n_partitions
    size_mb = DEFAULT_PARTITION_SIZE_MB if partition_size_mb is None else partition_size_mb
    if isinstance(size_mb, bool) or not isinstance(size_mb, (int, float)) \
            or not math.isfinite(size_mb) or size_mb <= 0:
        raise InvalidRequest("partition_size_mb must be a number greater than 0",
                             {"field": "partition_size_mb"})
    ratio = size_bytes / (size_mb * MB)  # inf for a subnormal size: compare before ceil()
    if ratio > max_partitions:
        smallest = size_bytes / max_partitions / MB
        raise InvalidRequest(
            f"partition_size_mb={size_mb:g} would make more than {max_partitions} partitions; "
            f"use at least {smallest:.3g}",
            {"field": "partition_size_mb", "min": smallest, "max_partitions": max_partitions})
    return max(1, math.ceil(ratio))


Compute = Callable[[list[Any]], Sequence[Any]]


def write_partitions(ddf: dd.DataFrame, out_dir: Path, n_partitions: int,
                     compute: Compute | None = None, count: Compute | None = None) -> dict[str, Any]:
    """Rewrite ``ddf`` as ``n_partitions`` Parquet files of equal row counts (±1 row).

    Two passes: one counts the rows of every input partition, then one task per output
    file reads the input partitions its rows come from, one at a time, and appends
    each slice to the file as a row group. A task therefore holds one input partition
    and one slice, never a whole output file, so output files may be larger than a
    worker's memory. Files are ``part-00000.parquet``… written to a sibling temp folder
    and renamed into ``out_dir`` at the end. ``compute`` runs a list of Dask objects and
    returns their values (default ``dask.compute`` on the active scheduler); the job
    runner passes its own so the tasks carry the job's priority and can be cancelled. A
    named index is kept as a column; a default index is dropped. Fewer rows than
    ``n_partitions`` give one row per file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise Conflict(f"output folder {out_dir} already exists and is not empty")
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, int) or n_partitions < 1:
        raise InvalidRequest("n_partitions must be a positive integer")
    run = compute or (lambda objs: dask.compute(*objs))
    run_count = count or run  # the row count first (apart, so a job's progress counts the files written)
    with GRAPH_LOCK:  # building expressions is not thread-safe (app.expr_lock)
        if ddf.index.name is not None:
            ddf = ddf.reset_index()
        counts = ddf.map_partitions(len)
        schema = arrow_schema(ddf._meta)
        columns = [str(c) for c in ddf.columns]
    lengths = [int(n) for n in run_count([counts])[0].tolist()]
    total = sum(lengths)
    if total == 0:
        raise Unprocessable("the data has no rows to partition")
    n = min(n_partitions, total)
    cuts = [round(k * total / n) for k in range(n + 1)]
    source = _Unseen(ddf)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    try:
        tasks = [dask.delayed(_write_file, pure=False)(source, spans, str(tmp / _part_name(k)), schema)
                 for k, spans in enumerate(row_spans(lengths, cuts))]
        written = run(tasks)
        partition_rows = [rows for rows, _ in written]
        partition_bytes = [size for _, size in written]
        os.replace(tmp, out_dir)  # atomic on one filesystem; replaces an empty out_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "n_partitions": n,
        "files": [str(out_dir / _part_name(k)) for k in range(n)],
        "rows": sum(partition_rows),
        "size_bytes": sum(partition_bytes),
        "columns": columns,
        "partition_rows": partition_rows,
        "partition_bytes": partition_bytes,
    }


def _part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def row_spans(lengths: list[int], cuts: list[int]) -> list[list[tuple[int, int, int]]]:
    """For each output ``[cuts[k], cuts[k+1])``: ``(input partition, start, stop)`` slices.

    Row positions are global (input partitions laid end to end); slices are local to
    their input partition, in order, and empty slices are left out.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int).tolist()
    plans: list[list[tuple[int, int, int]]] = []
    i = 0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        spans: list[tuple[int, int, int]] = []
        while i < len(lengths) and starts[i + 1] <= lo:
            i += 1
        j = i
        while j < len(lengths) and starts[j] < hi:
            a, b = max(lo, starts[j]) - starts[j], min(hi, starts[j + 1]) - starts[j]
            if b > a:
                spans.append((j, a, b))
            j += 1
        plans.append(spans)
    return plans


def arrow_schema(meta: pd.DataFrame) -> pa.Schema:
    """The one Arrow schema every output file is written with, from the collection's meta.

    Text columns become ``large_string`` whether pandas holds them as ``object`` or as
    Arrow strings (an empty ``object`` column would otherwise map to Arrow's null type).
    """
    schema = pa.Schema.from_pandas(meta, preserve_index=False)
    fields = [f.with_type(pa.large_string()) if pa.types.is_null(f.type) or pa.types.is_string(f.type)
              else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


class _Unseen:
    """Carries a collection into a task without Dask computing it as a dependency."""

    def __init__(self, ddf: dd.DataFrame):
        self.ddf = ddf


def _write_file(source: _Unseen, spans: list[tuple[int, int, int]], path: str,
                schema: pa.Schema) -> tuple[int, int]:
    """Append each slice to ``path``, reading one input partition at a time (in this task)."""
    rows = 0
    with pq.ParquetWriter(path, schema, compression=COMPRESSION, use_dictionary=dictionary_columns(schema)) as writer:
        for index, start, stop in spans:
            with GRAPH_LOCK:  # a worker's threads share this process (app.expr_lock)
                part = source.ddf.partitions[index].optimize()
                graph, keys = part.__dask_graph__(), part.__dask_keys__()
            frame = dask.local.get_sync(graph, keys)[0]
            piece = frame.iloc[start:stop]
            del frame
            writer.write_table(pa.Table.from_pandas(piece, schema=schema, preserve_index=False))
            rows += len(piece)
    return rows, os.path.getsize(path)
