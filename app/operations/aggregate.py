"""One statistic of a column, over the whole dataset or per group."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd
import param
import pyarrow as pa

from ..errors import InvalidRequest
from ..models import required
from ..kernels import Buckets, KernelPlan
from ._partials import NEEDS, counted, merge_counts, merge_moments, moments, statistic, value_counts, value_counts_cut
from ._stats import exact_quantiles
from .base import (Operation, Schema, as_list, jsonable, kind_of, require_column, require_kind, require_names,
                   table, unique)

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

STATISTICS = ("mean", "sum", "min", "max", "std", "var", "count", "median", "nunique")
_NUMERIC_ONLY = {"mean", "sum", "std", "var", "median"}
_ORDERED = {"min", "max"}


class AggregateParams(param.Parameterized):
    """One statistic of a column, optionally per group."""

    column = required(param.String(default=None, doc="The column to summarise."))
    operation = param.Selector(
        objects=list(STATISTICS),
        default="mean",
        doc="The statistic. std and var use ddof=1 like pandas; count counts non-null "
        "values; median and nunique are exact.",
    )
    group_by = param.ClassSelector(
        class_=(str, list),
        default=None,
        doc="A column name or a list of names to group by; one row per group "
        "(rows with a null key are left out, as in pandas).",
    )


class Aggregate(Operation):
    """A scalar, or a table with one row per group."""

    name = "aggregate"
    title = "Aggregate"
    description = (
        "Mean, sum, min, max, std, var, count, median or distinct count of one column, "
        "for the whole dataset or per group."
    )
    Params = AggregateParams
    result_kind = "scalar"

    def check(self, p: Any, schema: Schema) -> None:
        """Numeric statistics need a numeric column; min/max need an ordered one."""
        if p.operation in _NUMERIC_ONLY:
            require_kind(schema, p.column, "column", ("numeric",), "a numeric")
        elif p.operation in _ORDERED:
            require_kind(schema, p.column, "column", ("numeric", "datetime"), "a numeric or datetime")
        else:
            require_column(schema, p.column, "column")
        keys = as_list(p.group_by)
        if p.group_by is not None and not keys:
            raise InvalidRequest("'group_by' must name at least one column", {"field": "group_by"})
        require_names(keys, "group_by")
        for key in keys:
            require_column(schema, key, "group_by")
        if p.column in keys:
            raise InvalidRequest(f"'{p.column}' cannot be both the column and a group key", {"field": "group_by"})

    def kind(self, p: Any) -> str:
        """A table when grouped, else a scalar."""
        return "table" if p.group_by is not None else "scalar"

    def columns(self, p: Any) -> list[str] | None:
        return unique([*as_list(p.group_by), p.column])

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        keys = as_list(p.group_by)
        series = ddf[p.column]
        if keys:
            # dask's grouped median shuffles each group to one task: exact.
            return getattr(ddf.groupby(keys, dropna=True)[p.column], p.operation)()
        if p.operation == "median":
            # dask's Series.median refuses (only median_approximate); count values instead.
            return exact_quantiles(series, [0.5])
        return getattr(series, p.operation)()

    def plan(self, p: Any, schema: Schema) -> KernelPlan:
        """Moments per group (mean … max, count) or value counts (median, nunique) per fragment."""
        keys = as_list(p.group_by)
        columns = unique([*keys, p.column])
        if p.operation in ("median", "nunique"):
            # the merge is spread over tasks: by the values for nunique (a value's distinct
            # count is whole in one bucket), by the groups for a median (a group's values are)
            by = [p.column] if p.operation == "nunique" else keys
            buckets = Buckets(partial(value_counts_cut, by=by),
                              partial(_bucket_counted, operation=p.operation, column=p.column, keys=keys),
                              partial(_gathered, operation=p.operation, column=p.column, keys=keys)) if by else None
            return KernelPlan(columns, value_counts, partial(merge_counts, columns=columns),
                              partial(_from_counts, operation=p.operation, column=p.column, keys=keys),
                              {"column": p.column, "keys": keys}, buckets=buckets)
        dtype = schema[p.column]
        numeric = kind_of(dtype) == "numeric"
        args = {"column": p.column, "keys": keys, "integer": numeric and "int" in dtype.lower(),
                "ordered_only": not numeric, "extremes": p.operation in ("min", "max"), "needs": NEEDS[p.operation]}
        return KernelPlan(columns, moments, partial(merge_moments, keys=keys),
                          partial(_from_moments, operation=p.operation, column=p.column, keys=keys), args)

    def finalize(self, computed: Any, p: Any) -> Any:
        keys = as_list(p.group_by)
        if not keys:
            value = computed.iloc[0] if isinstance(computed, pd.Series) else computed
            return {"value": jsonable(value), "column": p.column, "operation": p.operation}
        frame = computed.rename(p.operation).sort_index().reset_index()
        return table(frame, column=p.column, operation=p.operation, group_by=keys)


def _indexed(values: pd.Series, merged: pd.DataFrame, keys: list[str], column: str) -> pd.Series:
    """Per-group values indexed by the group keys, as Dask's groupby gives them."""
    index = pd.MultiIndex.from_frame(merged[keys]) if len(keys) > 1 else pd.Index(merged[keys[0]], name=keys[0])
    return pd.Series(values.to_numpy(), index=index, name=column)


def _from_moments(merged: pd.DataFrame, operation: str, column: str, keys: list[str]) -> Any:
    if not keys:
        if merged.empty:
            merged = pd.DataFrame({"n": [0], "s": [None], "m": [None], "m2": [None], "mn": [None], "mx": [None]})
        return statistic(merged, operation).iloc[0]
    if merged.empty:
        merged = pd.DataFrame({**{k: [] for k in keys}, "n": [], "s": [], "m": [], "m2": [], "mn": [], "mx": []})
    return _indexed(statistic(merged, operation), merged, keys, column)


def _from_counts(merged: pa.Table, operation: str, column: str, keys: list[str]) -> Any:
    """nunique or median (overall, or a Series per group) from merged counts, found in DuckDB."""
    return _as_result(counted(merged, column, keys, operation).to_pandas(), operation, column, keys)


def _bucket_counted(pieces: list[pa.Table], operation: str, column: str, keys: list[str]) -> pd.DataFrame:
    """One bucket: its pieces' nunique or median per group (a bucket holds whole values or groups)."""
    return counted(merge_counts(pieces, [*keys, column]), column, keys, operation).to_pandas()


def _gathered(results: list[pd.DataFrame], operation: str, column: str, keys: list[str]) -> Any:
    """The buckets' results as ``_from_counts`` gives them: distinct counts added per group
    (a group's values are spread over buckets), medians put together (a group is in one)."""
    values = pd.concat(results, ignore_index=True)
    if operation == "nunique" and len(values):
        values = (values.groupby(keys, sort=False, dropna=False)["v"].sum().reset_index() if keys
                  else pd.DataFrame({"v": [values["v"].sum()]}))
    return _as_result(values, operation, column, keys)


def _as_result(values: pd.DataFrame, operation: str, column: str, keys: list[str]) -> Any:
    if not keys:
        value = values["v"].iloc[0] if len(values) else None
        if operation == "nunique":
            return int(value or 0)
        return float("nan") if value is None or pd.isna(value) else float(value)
    if values.empty:
        return pd.Series([], dtype="float64", index=pd.MultiIndex.from_arrays([[]] * len(keys), names=keys)
                         if len(keys) > 1 else pd.Index([], name=keys[0]), name=column)
    series = values["v"].astype("int64" if operation == "nunique" else "float64")
    return _indexed(series, values, keys, column)


OPERATION = Aggregate()
