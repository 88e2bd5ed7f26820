"""Exact order statistics on Dask frames without a global sort.

Ranks and quantiles both come from a value-count table: one distributed
reduction counts each distinct value (per group), the small sorted table
gives every value's average rank or the quantile positions, and a
partition-wise lookup maps ranks back onto the rows, which keeps the rows in
place (no shuffle, no reliance on a unique index). The table holds one row
per distinct value, so memory in its one task grows with the number of
distinct values; that is the price of an exact answer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

RANK = "__rank"


def rank_table(ddf: dd.DataFrame, column: str, by: list[str]) -> dd.Series:
    """A one-partition lazy Series: the average rank of each (group…, value)."""
    counts = ddf.groupby([*by, column], dropna=True).size(split_out=1)
    meta = pd.Series([], dtype="float64", name=RANK)
    return counts.map_partitions(_average_ranks, len(by), meta=meta)


def _average_ranks(counts: pd.Series, n_by: int) -> pd.Series:
    counts = counts.sort_index()
    if n_by:
        before = counts.groupby(level=list(range(n_by))).cumsum() - counts
    else:
        before = counts.cumsum() - counts
    # Rows tied on a value share the mean of the positions they occupy.
    return (before + (counts + 1) / 2.0).astype("float64").rename(RANK)


def lookup_ranks(part: pd.DataFrame, table: pd.Series) -> np.ndarray:
    """The rank of each row of ``part`` from ``rank_table``; NaN where the value or a group key is null."""
    return lookup(part, table).iloc[:, 0].to_numpy(dtype="float64")


def lookup(part: pd.DataFrame, table: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """The row of ``table`` (indexed by columns of ``part``) for each row of ``part``, NaN if none.

    A merge builds its own hash tables. ``table.reindex`` would build the index's
    lookup engine lazily on the one table object that all of a worker's threads
    share, and pandas does not guard that: concurrent first use has failed with
    "cannot reindex on an axis with duplicate labels".
    """
    right = table.reset_index()
    names = list(table.index.names)
    left = pd.DataFrame({name: part[name].to_numpy() for name in names})
    matched = left.merge(right, how="left", on=names, sort=False)
    return matched.drop(columns=names)


def exact_quantiles(series: dd.Series, probs: list[float]) -> dd.Series:
    """A one-partition lazy Series of quantiles (pandas' linear interpolation), index ``probs``."""
    counts = series.value_counts(split_out=1)
    meta = pd.Series([], dtype="float64", name=series.name)
    return counts.map_partitions(quantiles_from_counts, list(probs), meta=meta)


def quantiles_from_counts(counts: pd.Series, probs: list[float]) -> pd.Series:
    counts = counts.sort_index()
    values = counts.index.to_numpy(dtype="float64")
    ends = np.cumsum(counts.to_numpy())  # sorted position just past each value
    n = int(ends[-1]) if len(ends) else 0
    out = []
    for q in probs:
        if n == 0:
            out.append(np.nan)
            continue
        h = (n - 1) * q
        lo, hi = int(np.floor(h)), int(np.ceil(h))
        x_lo = values[np.searchsorted(ends, lo, side="right")]
        x_hi = values[np.searchsorted(ends, hi, side="right")]
        out.append(x_lo + (h - lo) * (x_hi - x_lo))
    return pd.Series(out, index=probs, dtype="float64", name=counts.index.name)
