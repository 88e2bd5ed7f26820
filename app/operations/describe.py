"""Summary statistics of the numeric columns, like ``pandas.DataFrame.describe``."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ._partials import merge_moments, moments, statistic
from ._stats import exact_quantiles
from .base import Operation, Schema, kind_of, require_names, require_numeric, table

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

PROBS = [0.25, 0.5, 0.75]
MAX_COLUMNS = 200


class DescribeParams(param.Parameterized):
    """Count, mean, std, min, quartiles and max of numeric columns."""

    columns = param.List(
        default=None,
        allow_None=True,
        item_type=str,
        bounds=(1, MAX_COLUMNS),
        doc="The numeric columns to describe; all numeric columns when omitted.",
    )
    quantiles = param.Selector(
        objects=["exact", "approximate"],
        default="exact",
        doc="exact counts each distinct value (memory grows with the number of distinct "
        "values); approximate uses Dask's sketch-based percentiles.",
    )


class Describe(Operation):
    """One row per numeric column."""

    name = "describe"
    title = "Describe"
    description = "Count, mean, standard deviation, min, quartiles and max of numeric columns."
    Params = DescribeParams
    result_kind = "table"

    def check(self, p: Any, schema: Schema) -> None:
        """Named columns must be numeric; without names, the dataset needs one numeric column."""
        if p.columns is None:
            numeric = [c for c, dtype in schema.items() if kind_of(dtype) == "numeric"]
            if not numeric:
                raise InvalidRequest("the dataset has no numeric columns to describe", {"field": "columns"})
            if len(numeric) > MAX_COLUMNS:
                raise InvalidRequest(
                    f"the dataset has {len(numeric)} numeric columns; name at most {MAX_COLUMNS} in 'columns'",
                    {"field": "columns"},
                )
            p.columns = numeric
            return
        require_names(p.columns, "columns")
        for column in p.columns:
            require_numeric(schema, column, "columns")

    def columns(self, p: Any) -> list[str] | None:
        return list(p.columns)

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        frame = ddf[list(p.columns)]
        moments = (frame.count(), frame.mean(), frame.std(), frame.min(), frame.max())
        if p.quantiles == "exact":
            quartiles = tuple(exact_quantiles(frame[c], PROBS) for c in p.columns)
        else:
            quartiles = (frame.quantile(PROBS),)
        return moments + quartiles

    def plan(self, p: Any, schema: Schema) -> KernelPlan | None:
        """Exact quartiles: moments and value counts per column per fragment, merged."""
        if p.quantiles != "exact":
            return None
        return KernelPlan(list(p.columns), _column_partials, _merge_columns,
                          partial(_described, columns=list(p.columns)), list(p.columns))

    def finalize(self, computed: Any, p: Any) -> Any:
        count, mean, std, low, high, *quartiles = computed
        if p.quantiles == "exact":
            q = pd.DataFrame({c: s.to_numpy() for c, s in zip(p.columns, quartiles)}, index=PROBS)
        else:
            q = quartiles[0]
        frame = pd.DataFrame(
            {
                "column": list(p.columns),
                "count": count[p.columns].to_numpy(),
                "mean": mean[p.columns].to_numpy(),
                "std": std[p.columns].to_numpy(),
                "min": low[p.columns].to_numpy(),
                "25%": q.loc[0.25, p.columns].to_numpy(),
                "50%": q.loc[0.5, p.columns].to_numpy(),
                "75%": q.loc[0.75, p.columns].to_numpy(),
                "max": high[p.columns].to_numpy(),
            }
        )
        return table(frame, quantiles=p.quantiles)


Run = tuple[np.ndarray, np.ndarray]  # distinct values sorted, and the count of values up to each
SAMPLE = 2_048  # a fragment whose first values repeat this much is sent as value counts


def _column_partials(src: Source, columns: list[str]) -> dict[str, tuple[pd.DataFrame, list, list]]:
    """Per column: moments, and the fragment's values: as they are (unsorted), or as value
    counts when its first ``SAMPLE`` values hold fewer than half as many distinct ones."""
    out = {}
    for c in columns:
        x = ident(c)
        values = src.cur.execute(f"SELECT {x}::DOUBLE AS v FROM frag WHERE {x} IS NOT NULL").fetchnumpy()["v"]
        values = np.asarray(values, dtype="float64")
        values = values[~np.isnan(values)]
        raw, runs = [values], []
        if len(values) > SAMPLE and len(np.unique(values[:SAMPLE])) < SAMPLE // 2:
            counts = pd.Series(values).value_counts(sort=False).sort_index()
            raw, runs = [], [(counts.index.to_numpy(dtype="float64"), np.cumsum(counts.to_numpy(dtype="int64")))]
        out[c] = (moments(src, {"column": c, "keys": [], "integer": False}), raw, runs)
    return out


def _merge_columns(parts: list[dict[str, tuple[pd.DataFrame, list, list]]]) -> dict[str, tuple]:
    return {c: (merge_moments([p[c][0] for p in parts], []), [a for p in parts for a in p[c][1] if len(a)],
                [r for p in parts for r in p[c][2]]) for c in parts[0]}


def _at_most(runs: list[Run], t: np.ndarray) -> np.ndarray:
    """How many values of all runs are <= each of ``t``."""
    total = np.zeros(len(t), dtype="int64")
    for values, ends in runs:
        p = np.searchsorted(values, t, side="right")
        total += np.where(p > 0, ends[np.maximum(p - 1, 0)], 0)
    return total


def _order_statistic(runs: list[Run], r: int) -> float:
    """The r-th smallest value (from 0) of all runs together: a binary search in every run at
    once for its smallest value with more than r values at most it; the least of those."""
    holding = [run for run in runs if _at_most(runs, run[0][-1:])[0] > r]  # runs with a candidate
    lo = np.zeros(len(holding), dtype="int64")
    hi = np.array([len(values) - 1 for values, _ in holding], dtype="int64")
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        enough = _at_most(runs, np.array([values[m] for (values, _), m in zip(holding, mid)])) > r
        hi, lo = np.where(enough, mid, hi), np.where(enough, lo, mid + 1)
    return float(min(values[i] for (values, _), i in zip(holding, lo)))


def _quartiles(raw: list[np.ndarray], runs: list[Run], name: str) -> pd.Series:
    """``quantiles_from_counts`` of all the values: pandas' linear interpolation between the
    order statistics, found by ``np.partition`` (values as they are) or by a search of sorted
    value counts (when a fragment sent counts, the plain values join them sorted, once)."""
    n = int(sum(len(a) for a in raw) + sum(int(ends[-1]) for _, ends in runs))
    spots = [(n - 1) * q for q in PROBS]
    ranks = sorted({int(f(h)) for h in spots for f in (np.floor, np.ceil)}) if n else []
    if ranks and not runs:
        every = np.partition(np.concatenate(raw), ranks)
        at = {r: float(every[r]) for r in ranks}
    elif ranks:
        if raw:
            values = np.sort(np.concatenate(raw))
            runs = [*runs, (values, np.arange(1, len(values) + 1, dtype="int64"))]
        at = {r: _order_statistic(runs, r) for r in ranks}
    out = []
    for h in spots:
        if n == 0:
            out.append(np.nan)
            continue
        lo, hi = int(np.floor(h)), int(np.ceil(h))
        out.append(at[lo] + (h - lo) * (at[hi] - at[lo]))
    return pd.Series(out, index=PROBS, dtype="float64", name=name)


def _described(merged: dict[str, tuple[pd.DataFrame, list[Run]]], columns: list[str]) -> tuple:
    """What the Dask graph computes: count, mean, std, min, max Series and one quartile Series per column."""
    stats = {}
    for c in columns:
        m = merged[c][0]
        if m.empty:
            m = pd.DataFrame({"n": [0], "s": [None], "m": [None], "m2": [None], "mn": [None], "mx": [None]})
        stats[c] = {name: statistic(m, name).iloc[0] for name in ("count", "mean", "std", "min", "max")}
    series = tuple(pd.Series({c: stats[c][name] for c in columns}) for name in ("count", "mean", "std", "min", "max"))
    return series + tuple(_quartiles(merged[c][1], merged[c][2], c) for c in columns)


OPERATION = Describe()
