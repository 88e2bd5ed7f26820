"""Counts of a numeric column's values in bins, with ``numpy.histogram`` semantics.

Each partition runs ``np.histogram`` against the same bins and a grouped sum
adds the counts. Without a ``range`` the column's min and max are lazy Dask
scalars fed to that step, so one graph does both passes. Bins are closed on
the left except the last; values outside an explicit range or edges are not
counted; nulls are never counted. The kernels (edges known up front) bin in DuckDB
when the edges are evenly spaced: by the offset over the width, checked per bin by its
least and greatest value against the edges (a value within rounding of an edge sends the
fragment through a value-by-value check), so a value on an edge lands where numpy puts
it; uneven edges are binned by numpy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ..models import required
from .base import Operation, Schema, jsonable, require_numeric

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

MAX_BINS = 10_000


class HistogramParams(param.Parameterized):
    """Binned counts of one numeric column."""

    column = required(param.String(default=None, doc="The numeric column."))
    bins = param.ClassSelector(
        class_=(int, list),
        default=20,
        doc=f"A number of equal-width bins (1..{MAX_BINS}) or a list of increasing bin edges.",
    )
    range = param.List(
        default=None,
        allow_None=True,
        bounds=(2, 2),
        doc="[low, high] for equal-width bins; the column's min and max when omitted.",
    )


class Histogram(Operation):
    """{"column", "edges", "counts", "min", "max"}; edges has one more entry than counts."""

    name = "histogram"
    title = "Histogram"
    description = "Counts of a numeric column's values in equal-width bins or between given edges."
    Params = HistogramParams
    result_kind = "histogram"

    def check(self, p: Any, schema: Schema) -> None:
        require_numeric(schema, p.column, "column")
        if isinstance(p.bins, list):
            if not 2 <= len(p.bins) <= MAX_BINS + 1 or not all(_is_number(e) for e in p.bins):
                raise InvalidRequest(f"'bins' as a list needs 2 to {MAX_BINS + 1} numbers", {"field": "bins"})
            if any(b <= a for a, b in zip(p.bins, p.bins[1:])):
                raise InvalidRequest("'bins' edges must be strictly increasing", {"field": "bins"})
            if p.range is not None:
                raise InvalidRequest("give either 'range' or a list of 'bins' edges, not both", {"field": "range"})
        elif isinstance(p.bins, bool) or not 1 <= p.bins <= MAX_BINS:
            raise InvalidRequest(
                f"'bins' must be an integer from 1 to {MAX_BINS} or a list of edges", {"field": "bins"}
            )
        if p.range is not None:
            if not all(_is_number(v) for v in p.range) or not p.range[0] < p.range[1]:
                raise InvalidRequest("'range' must be [low, high] numbers with low < high", {"field": "range"})

    def columns(self, p: Any) -> list[str] | None:
        return [p.column]

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        series = ddf[p.column]
        low, high = series.min(), series.max()
        bounds = (low, high) if p.range is None else tuple(float(v) for v in p.range)
        meta = pd.DataFrame({"bin": pd.Series([], dtype="int64"), "count": pd.Series([], dtype="int64")})
        counts = series.map_partitions(_counts, p.bins, *bounds, meta=meta)
        return counts.groupby("bin")["count"].sum(split_out=1), low, high

    def plan(self, p: Any, schema: Schema) -> KernelPlan | None:
        """Counts per bin when the edges are known up front (bins as edges, or a range); else None."""
        if not isinstance(p.bins, list) and p.range is None:
            return None  # equal-width bins over the data's own range need a pass for min and max first
        edges = (np.asarray(p.bins, dtype="float64") if isinstance(p.bins, list)
                 else np.histogram_bin_edges(np.empty(0), bins=p.bins, range=tuple(float(v) for v in p.range)))
        return KernelPlan([p.column], _bin_counts, _merge_bins, _as_computed, {"column": p.column,
                                                                              "edges": edges.tolist()})

    def finalize(self, computed: Any, p: Any) -> Any:
        counts, low, high = computed
        result = {"column": p.column, "min": jsonable(low), "max": jsonable(high)}
        if isinstance(p.bins, list):
            edges = np.asarray(p.bins, dtype="float64")
        elif p.range is not None:
            edges = np.histogram_bin_edges(np.empty(0), bins=p.bins, range=tuple(p.range))
        elif pd.isna(low):
            return {**result, "edges": [], "counts": []}  # the column holds no values
        else:
            edges = np.histogram_bin_edges(np.empty(0), bins=p.bins, range=(float(low), float(high)))
        full = counts.reindex(range(len(edges) - 1), fill_value=0)
        return {**result, "edges": jsonable(edges), "counts": jsonable(full.to_numpy())}


def _counts(values: pd.Series, bins: int | list, low: float, high: float) -> pd.DataFrame:
    x = values.dropna().to_numpy(dtype="float64")
    if isinstance(bins, list):
        counts, _ = np.histogram(x, bins=np.asarray(bins, dtype="float64"))
    elif not (pd.isna(low) or pd.isna(high)):
        counts, _ = np.histogram(x, bins=bins, range=(float(low), float(high)))
    else:
        counts = np.zeros(0, dtype="int64")
    return pd.DataFrame({"bin": np.arange(len(counts), dtype="int64"), "count": counts.astype("int64")})


def _bin_counts(src: Source, args: dict[str, Any]) -> tuple[np.ndarray, Any, Any]:
    """np.histogram's counts over this fragment's values, with its min and max."""
    x = ident(args["column"])
    edges = args["edges"]
    if not _even(edges):
        low, high = (None if v is None else float(v) for v in src.row(f"SELECT min({x}), max({x}) FROM frag"))
        values = src.cur.execute(f"SELECT {x}::DOUBLE AS v FROM frag WHERE {x} IS NOT NULL").fetchnumpy()["v"]
        counts, _ = np.histogram(np.asarray(values, dtype="float64"), bins=np.asarray(edges))
        return counts.astype("int64"), low, high
    n = len(edges) - 1
    e = np.asarray(edges, dtype="float64")
    got = src.cur.execute(_GUESSED_BINS.format(x=x), {"lo": edges[0], "norm": n / (edges[-1] - edges[0])}).fetchnumpy()
    guess = np.asarray(np.ma.filled(got["g"], np.nan) if np.ma.isMaskedArray(got["g"]) else got["g"], dtype="float64")
    least, most, c = (np.asarray(got[k], dtype="float64") for k in ("mn", "mx", "c"))
    low, high = _duck_min_max(least, most)
    inside = (guess >= 0) & (guess <= n - 1)  # NaN and infinities are out
    g = guess[inside].astype("int64")
    exact = bool(np.all((least[inside] >= e[g]) & ((most[inside] < e[g + 1]) | ((g == n - 1) & (most[inside] <= e[n])))))
    # the group just past the last bin: the last edge itself belongs to the last bin
    past = guess == n
    exact = exact and not np.any(past & (least <= e[n]) & (most > e[n]))
    if not exact:  # a value within rounding of an edge got the neighbouring bin: every value checked
        params = {"n": n, "lo": edges[0], "hi": edges[-1], "norm": n / (edges[-1] - edges[0]), "e": edges}
        got = src.cur.execute(_EVEN_BINS.format(x=x), params).fetchnumpy()
        counts = np.zeros(n, dtype="int64")
        counts[np.asarray(got["i"], dtype="int64")] = np.asarray(got["c"], dtype="int64")
        return counts, low, high
    counts = np.zeros(n, dtype="int64")
    np.add.at(counts, g, c[inside].astype("int64"))
    counts[n - 1] += int(c[past & (most <= e[n])].sum())
    return counts, low, high


# Each value's bin as its offset over the even width says, unclamped, with the least and
# greatest value each such group got: when those lie within the bin's edges, so does every
# value. Groups below 0 or past the last bin are outside (NaN and infinities form their own),
# but for values equal to the last edge, which numpy counts in the last bin. The fragment's
# min and max come from the same pass. (A CASE clamping the offset into the bins cost a
# 10M-row histogram ~70 ms of its ~250 ms.)
_GUESSED_BINS = """
SELECT floor((v - $lo::DOUBLE) * $norm::DOUBLE) AS g, count(*) AS c, min(v) AS mn, max(v) AS mx
FROM (SELECT {x}::DOUBLE AS v FROM frag WHERE {x} IS NOT NULL) GROUP BY g"""

# The bin of each value in [lo, hi] (NaN is above every number in DuckDB, so it is out), as
# np.histogram's searchsorted over the edges gives it: a guess from the even width, then one
# step down or up against the edges themselves (the guess is at most one bin off when every
# edge is within a quarter width of its even place). Bins are [e_i, e_i+1), the last [e_n-1, e_n].
_EVEN_BINS = """
SELECT i, count(*) AS c FROM (
  SELECT CASE WHEN v < ($e::DOUBLE[])[g + 1] THEN g - 1 WHEN g < $n::BIGINT - 1 AND v >= ($e::DOUBLE[])[g + 2]
              THEN g + 1 ELSE g END AS i
  FROM (SELECT v, least(greatest(floor((v - $lo::DOUBLE) * $norm::DOUBLE)::BIGINT, 0), $n::BIGINT - 1) AS g
        FROM (SELECT {x}::DOUBLE AS v FROM frag WHERE {x} >= $lo::DOUBLE AND {x} <= $hi::DOUBLE)))
GROUP BY i"""


def _duck_min_max(least: np.ndarray, most: np.ndarray) -> tuple[float | None, float | None]:
    """min and max over groups' minima and maxima as DuckDB orders doubles (NaN above every
    number): None for no values."""
    if not least.size:
        return None, None
    numbers = least[~np.isnan(least)]
    low = float(numbers.min()) if numbers.size else float("nan")
    high = float("nan") if np.isnan(most).any() else float(most.max())
    return low, high


def _even(edges: list[float]) -> bool:
    """Edges each within a quarter bin width of evenly spaced ones: the SQL binning is exact for them."""
    e = np.asarray(edges, dtype="float64")
    even = np.linspace(e[0], e[-1], len(e))
    width = (e[-1] - e[0]) / (len(e) - 1)
    return bool(np.isfinite(width) and width > 0 and np.all(np.abs(e - even) <= 0.25 * width))


def _merge_bins(parts: list[tuple[np.ndarray, Any, Any]]) -> tuple[np.ndarray, Any, Any]:
    lows = [p[1] for p in parts if p[1] is not None]
    highs = [p[2] for p in parts if p[2] is not None]
    return (np.sum([p[0] for p in parts], axis=0), min(lows) if lows else None, max(highs) if highs else None)


def _as_computed(merged: tuple[np.ndarray, Any, Any]) -> tuple[pd.Series, Any, Any]:
    """What the Dask graph computes: counts indexed by bin, the column's min and max."""
    counts, low, high = merged
    return (pd.Series(counts, index=pd.RangeIndex(len(counts), name="bin"), name="count"),
            np.nan if low is None else low, np.nan if high is None else high)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


OPERATION = Histogram()
