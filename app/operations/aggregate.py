"""One statistic of a column, over the whole dataset or per group."""
from __future__ import annotations

from typing import Any

import dask.dataframe as dd
import pandas as pd
import param

from ..errors import InvalidRequest
from ..models import required
from ._stats import exact_quantiles
from .base import Operation, Schema, as_list, jsonable, require_column, require_kind, require_names, table, unique

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

    def finalize(self, computed: Any, p: Any) -> Any:
        keys = as_list(p.group_by)
        if not keys:
            value = computed.iloc[0] if isinstance(computed, pd.Series) else computed
            return {"value": jsonable(value), "column": p.column, "operation": p.operation}
        frame = computed.rename(p.operation).sort_index().reset_index()
        return table(frame, column=p.column, operation=p.operation, group_by=keys)


OPERATION = Aggregate()
