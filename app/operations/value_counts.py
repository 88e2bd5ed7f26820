"""The most frequent values of a column."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import pandas as pd
import param
import pyarrow as pa

from ..kernels import KernelPlan
from ..models import required
from ._partials import merge_counts, summed, value_counts
from .base import Operation, Schema, jsonable, require_column, table

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd


class ValueCountsParams(param.Parameterized):
    """The most frequent values of one column."""

    column = required(param.String(default=None, doc="The column whose values to count."))
    top = param.Integer(default=20, bounds=(1, 10_000), doc="How many of the most frequent values to return.")
    normalize = param.Boolean(
        default=False, doc="Also give each value's share of the non-null values ('proportion')."
    )


class ValueCounts(Operation):
    """A table of value, count (and proportion), most frequent first."""

    name = "value_counts"
    title = "Value counts"
    description = "The most frequent values of a column with their counts; nulls are counted apart."
    Params = ValueCountsParams
    result_kind = "table"

    def check(self, p: Any, schema: Schema) -> None:
        require_column(schema, p.column, "column")

    def columns(self, p: Any) -> list[str] | None:
        return [p.column]

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        series = ddf[p.column]
        counts = series.value_counts(split_out=1)
        # Values tied with the last one kept may be cut either way; finalize orders ties by value.
        return counts.nlargest(p.top), series.count(), series.isna().sum(), counts.size

    def plan(self, p: Any, schema: Schema) -> KernelPlan:
        """Counts per value (nulls as one row) per fragment, added up."""
        return KernelPlan([p.column], value_counts, partial(merge_counts, columns=[p.column]),
                          partial(_from_counts, column=p.column, top=p.top), {"column": p.column, "keys": []})

    def finalize(self, computed: Any, p: Any) -> Any:
        top, total, nulls, distinct = computed
        frame = top.rename("count").rename_axis("value").reset_index()
        frame = frame.sort_values(["count", "value"], ascending=[False, True], kind="stable", key=_sortable)
        if p.normalize:
            frame["proportion"] = frame["count"] / total if total else float("nan")
        return table(
            frame.reset_index(drop=True),
            column=p.column,
            total=jsonable(total),
            nulls=jsonable(nulls),
            distinct=jsonable(distinct),
        )


def _sortable(column: Any) -> Any:
    # Mixed-type object columns cannot be compared; order their values by text.
    return column if column.name == "count" or column.dtype != object else column.astype(str)


def _from_counts(merged: Any, column: str, top: int) -> tuple[pd.Series, int, int, int]:
    """What the Dask graph computes: (top counts by value, non-null total, nulls, distinct)."""
    if isinstance(merged, pa.Table):  # the kernels' counts: added up here, once
        merged = summed(merged, [column]).to_pandas()
    if merged.empty:
        return pd.Series([], dtype="int64", name="count"), 0, 0, 0
    present = merged[merged[column].notna()]
    nulls = int(merged.loc[merged[column].isna(), "c"].sum())
    counts = pd.Series(present["c"].to_numpy(dtype="int64"), index=present[column].to_numpy(), name="count")
    return counts.nlargest(top), int(counts.sum()), nulls, len(counts)


OPERATION = ValueCounts()
