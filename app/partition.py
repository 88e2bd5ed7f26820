"""Plan and write balanced Parquet partitions of a Dask DataFrame."""
from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .errors import Conflict, InvalidRequest, Unprocessable

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


def write_partitions(ddf: dd.DataFrame, out_dir: Path, n_partitions: int) -> dict[str, Any]:
    """Rewrite ``ddf`` as ``n_partitions`` Parquet files of equal row counts (±1 row).

    Files are ``part-00000.parquet``… written to a sibling temp folder and renamed
    into ``out_dir`` at the end. Uses the active Dask scheduler; the input is read
    twice (once to count rows per partition, once to write). A named index is kept
    as a column; a default index is dropped. Fewer rows than ``n_partitions`` give
    one row per file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise Conflict(f"output folder {out_dir} already exists and is not empty")
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, int) or n_partitions < 1:
        raise InvalidRequest("n_partitions must be a positive integer")
    if ddf.index.name is not None:
        ddf = ddf.reset_index()
    lengths = [int(n) for n in ddf.map_partitions(len).compute().tolist()]
    total = sum(lengths)
    if total == 0:
        raise Unprocessable("the data has no rows to partition")
    balanced = _rebalance(ddf, lengths, min(n_partitions, total))
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        balanced.to_parquet(str(tmp), write_index=False, compression=COMPRESSION,
                            name_function=_part_name, write_metadata_file=False)
        names = sorted(p.name for p in tmp.glob("part-*.parquet"))
        partition_rows = [pq.read_metadata(tmp / name).num_rows for name in names]
        partition_bytes = [(tmp / name).stat().st_size for name in names]
        os.replace(tmp, out_dir)  # atomic on one filesystem; replaces an empty out_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "n_partitions": len(names),
        "files": [str(out_dir / name) for name in names],
        "rows": sum(partition_rows),
        "size_bytes": sum(partition_bytes),
        "columns": [str(c) for c in balanced.columns],
        "partition_rows": partition_rows,
        "partition_bytes": partition_bytes,
    }


def _part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _rebalance(ddf: dd.DataFrame, lengths: list[int], n: int) -> dd.DataFrame:
    """One lazy collection whose ``n`` partitions hold equal runs of the global row order.

    Each row gets its global number as a sorted index with known divisions, then
    ``repartition(divisions=...)`` cuts at ``round(k * total / n)``: one graph,
    whatever the number of input or output partitions.
    """
    keep = [i for i, length in enumerate(lengths) if length]
    # Known divisions must increase strictly, so empty input partitions are left out.
    ddf = ddf.partitions[keep] if len(keep) < len(lengths) else ddf
    starts = np.concatenate([[0], np.cumsum([lengths[i] for i in keep])]).tolist()
    total = starts[-1]
    row = "__dpc_row__"
    while row in ddf.columns:
        row += "_"
    meta = ddf._meta.assign(**{row: np.array([], dtype="int64")})
    numbered = ddf.map_partitions(_number_rows, starts, row, meta=meta, clear_divisions=True)
    indexed = numbered.set_index(row, sorted=True, divisions=tuple(starts[:-1]) + (total - 1,))
    cuts = [round(k * total / n) for k in range(n)] + [total - 1]
    return indexed.repartition(divisions=cuts)


def _number_rows(df: pd.DataFrame, starts: list[int], row: str,
                 partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    start = starts[partition_info["number"]] if partition_info else 0
    return df.assign(**{row: np.arange(start, start + len(df), dtype="int64")})
