"""The n rows with the largest (or smallest) values of a column, overall or per group.

Overall this is Dask's ``nlargest``/``nsmallest``. Per group it is a tree
reduction: each partition keeps its best n rows per group, and combining
keeps the best n of those, so no step holds more than n rows per group per
input. Rows with a null value (or a null group key) are left out; which of
several rows tied at the cut is kept is not specified.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ..models import required
from .base import Operation, Schema, require_column, require_kind, table

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd


class SortTopParams(param.Parameterized):
    """The top (or bottom) rows by one column."""

    column = required(param.String(default=None, doc="The column to rank rows by (numeric or datetime)."))
    n = param.Integer(default=10, bounds=(1, 10_000), doc="How many rows to return (per group with group_by).")
    ascending = param.Boolean(
        default=False, doc="false: the largest values first (top n); true: the smallest first (bottom n)."
    )
    group_by = param.String(
        default=None, allow_None=True, doc="Return the top n rows within each group of this column."
    )


class SortTop(Operation):
    """A table of whole rows, sorted by group then by the column."""

    name = "sort_top"
    title = "Top rows"
    description = "The n rows with the largest or smallest values of a column, overall or within each group."
    Params = SortTopParams
    result_kind = "table"

    def check(self, p: Any, schema: Schema) -> None:
        require_kind(schema, p.column, "column", ("numeric", "datetime"), "a numeric or datetime")
        if p.group_by is not None:
            require_column(schema, p.group_by, "group_by")
            if p.group_by == p.column:
                raise InvalidRequest("'group_by' must differ from 'column'", {"field": "group_by"})

    def build(self, ddf: dd.DataFrame, p: Any) -> dd.DataFrame:
        if p.group_by is None:
            return ddf.nsmallest(p.n, p.column) if p.ascending else ddf.nlargest(p.n, p.column)
        best = {"column": p.column, "key": p.group_by, "n": p.n, "ascending": p.ascending}
        return ddf.reduction(
            chunk=_best_per_group,
            combine=_best_per_group,
            aggregate=_best_per_group,
            chunk_kwargs=best,
            combine_kwargs=best,
            aggregate_kwargs=best,
            meta=ddf._meta,
        )

    def plan(self, p: Any, schema: Schema) -> KernelPlan:
        """The best n rows (per group) of each fragment, then of their union."""
        best = {"column": p.column, "key": p.group_by, "n": p.n, "ascending": p.ascending}
        return KernelPlan(list(schema), _best_rows, partial(_merge_best, **best), _as_frame, best)

    def finalize(self, computed: pd.DataFrame, p: Any) -> Any:
        keys = [p.column] if p.group_by is None else [p.group_by, p.column]
        order = [p.ascending] if p.group_by is None else [True, p.ascending]
        frame = computed.sort_values(keys, ascending=order, kind="stable").reset_index(drop=True)
        return table(frame, column=p.column, n=p.n, ascending=p.ascending, group_by=p.group_by)


def _best_per_group(part: pd.DataFrame, column: str, key: str, n: int, ascending: bool) -> pd.DataFrame:
    ranked = part.dropna(subset=[column, key]).sort_values(column, ascending=ascending, kind="stable")
    return ranked.groupby(key, sort=False, dropna=True).head(n)


def _best_rows(src: Source, best: dict[str, Any]) -> pd.DataFrame:
    column, key = ident(best["column"]), best["key"]
    order = f"{column} {'ASC' if best['ascending'] else 'DESC'}"
    if key is None:
        return src.df(f"SELECT * FROM frag WHERE {column} IS NOT NULL ORDER BY {order} LIMIT ?", [best["n"]])
    k = ident(key)
    return src.df(f"SELECT * FROM frag WHERE {column} IS NOT NULL AND {k} IS NOT NULL "
                  f"QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY {order}) <= ?", [best["n"]])


def _merge_best(parts: list[pd.DataFrame], column: str, key: str | None, n: int, ascending: bool) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True)
    if key is None:
        return frame.sort_values(column, ascending=ascending, kind="stable").head(n)
    return _best_per_group(frame, column, key, n, ascending)


def _as_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


OPERATION = SortTop()
