"""Summary statistics of the numeric columns, like ``pandas.DataFrame.describe``."""
from __future__ import annotations

from functools import partial
from typing import Any

import dask.dataframe as dd
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source
from ._partials import merge_counts, merge_moments, moments, statistic, value_counts
from ._stats import quantiles_from_counts, exact_quantiles
from .base import Operation, Schema, kind_of, require_names, require_numeric, table

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


def _column_partials(src: Source, columns: list[str]) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    return {c: (moments(src, {"column": c, "keys": [], "integer": False}),
                value_counts(src, {"column": c, "keys": []})) for c in columns}


def _merge_columns(parts: list[dict[str, tuple[pd.DataFrame, pd.DataFrame]]]) -> dict[str, tuple]:
    return {c: (merge_moments([p[c][0] for p in parts], []), merge_counts([p[c][1] for p in parts], [c]))
            for c in parts[0]}


def _described(merged: dict[str, tuple[pd.DataFrame, pd.DataFrame]], columns: list[str]) -> tuple:
    """What the Dask graph computes: count, mean, std, min, max Series and one quartile Series per column."""
    stats = {}
    for c in columns:
        m = merged[c][0]
        if m.empty:
            m = pd.DataFrame({"n": [0], "s": [None], "m": [None], "m2": [None], "mn": [None], "mx": [None]})
        stats[c] = {name: statistic(m, name).iloc[0] for name in ("count", "mean", "std", "min", "max")}
    series = tuple(pd.Series({c: stats[c][name] for c in columns}) for name in ("count", "mean", "std", "min", "max"))
    quartiles = []
    for c in columns:
        counts = merged[c][1]
        counts = counts[counts[c].notna()] if not counts.empty else counts
        table = pd.Series(counts["c"].to_numpy() if not counts.empty else [], dtype="int64",
                          index=pd.Index(counts[c].to_numpy(dtype="float64") if not counts.empty else [], name=c))
        quartiles.append(quantiles_from_counts(table, PROBS))
    return series + tuple(quartiles)


OPERATION = Describe()
