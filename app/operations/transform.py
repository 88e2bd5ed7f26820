"""Add derived numeric columns; writes a new dataset.

Every transform is one partition-wise step, so rows never move. The global (or
per-group) statistics a transform needs are lazy Dask values handed to that
step: mean/std or min/max as Dask scalars (per group: a small one-partition
aggregate), and for ``rank`` the value-count table of ``_stats`` (exact, ties
get the average rank as in pandas ``rank(method="average")``). The kernels keep each
fragment as Arrow: its other columns are written with the types they were read with.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source
from ..models import required
from ._partials import merge_moments, moments, statistic
from ._stats import lookup, lookup_ranks, rank_table
from .base import Operation, Schema, dataset_summary, parse_items, require_column, require_numeric, unique

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

FUNCTIONS = ("log2", "log10", "log1p", "zscore", "minmax", "rank")
_GROUPABLE = ("zscore", "minmax", "rank")
_LOGS = {"log2": np.log2, "log10": np.log10, "log1p": np.log1p}


class Transform(param.Parameterized):
    """One derived column."""

    column = required(param.String(default=None, doc="The numeric column to transform."))
    fn = required(
        param.Selector(
            objects=list(FUNCTIONS),
            default=None,
            doc="log2/log10/log1p (numpy semantics: log of 0 is -inf, of a negative NaN); "
            "zscore (x - mean) / std with ddof=1; minmax (x - min) / (max - min); "
            "rank: average rank of ties, from 1. A constant column gives NaN for zscore and minmax.",
        )
    )
    group_by = param.String(
        default=None,
        allow_None=True,
        doc="For zscore, minmax and rank: compute the statistics within each group of this "
        "column (rows with a null key get NaN).",
    )
    output = param.String(
        default=None, allow_None=True, doc="The new column's name; '<column>_<fn>' when omitted."
    )


class TransformParams(param.Parameterized):
    """Columns to derive, in order; a later transform may use an earlier output."""

    transforms = required(
        param.List(
            default=None,
            allow_None=True,
            item_type=dict,
            bounds=(1, 50),
            doc="Transforms, each {column, fn, group_by?, output?}.",
        )
    )


class TransformOperation(Operation):
    """The dataset with the new columns, written as a new dataset."""

    name = "transform"
    title = "Transform columns"
    description = "Add log, z-score, min-max or rank columns, globally or within groups; writes a new dataset."
    Params = TransformParams
    result_kind = "dataset"
    writes_dataset = True
    item_models = {"transforms": Transform}

    def output_schema(self, p: Any, schema: Schema) -> Schema | None:
        return {**schema, **{t["output"]: "float64" for t in p.transforms}}  # outputs filled by check

    def check(self, p: Any, schema: Schema) -> None:
        """Inputs are numeric, group keys exist, outputs are new names; fills default outputs."""
        p.transforms = parse_items(Transform, p.transforms, "transforms")
        columns = dict(schema)
        for i, t in enumerate(p.transforms):
            where = f"transforms[{i}]"
            require_numeric(columns, t["column"], f"{where}.column")
            if t["group_by"] is not None:
                if t["fn"] not in _GROUPABLE:
                    raise InvalidRequest(
                        f"{where}: 'group_by' applies to {', '.join(_GROUPABLE)} only", {"field": f"{where}.group_by"}
                    )
                require_column(columns, t["group_by"], f"{where}.group_by")
            t["output"] = t["output"] or f"{t['column']}_{t['fn']}"
            if t["output"] in columns:
                raise InvalidRequest(
                    f"{where}: the dataset already has a column '{t['output']}'; choose another 'output'",
                    {"field": f"{where}.output"},
                )
            columns[t["output"]] = "float64"

    def build(self, ddf: dd.DataFrame, p: Any) -> dd.DataFrame:
        for t in p.transforms:
            meta = ddf._meta.assign(**{t["output"]: pd.Series([], dtype="float64")})
            ddf = ddf.map_partitions(_apply, t, *_statistics(ddf, t), meta=meta, align_dataframes=False)
        return ddf

    def plan(self, p: Any, schema: Schema) -> KernelPlan | None:
        """Group statistics as kernels first, then each fragment's rows with the new columns.

        Rank (a global pass over sorted values) and transforms of an earlier transform's
        output keep the Dask graph.
        """
        outputs = {t["output"] for t in p.transforms}
        if any(t["fn"] == "rank" or t["column"] in outputs or t["group_by"] in outputs for t in p.transforms):
            return None
        before = tuple(_statistics_plan(t) for t in p.transforms if t["fn"] in ("zscore", "minmax"))
        return KernelPlan(list(schema), _transformed, _only, _only, {"transforms": p.transforms}, before)

    def finalize(self, computed: Any, p: Any) -> Any:
        return dataset_summary(self.name, p, computed)


def _statistics(ddf: dd.DataFrame, t: dict) -> tuple:
    """The lazy statistics ``_apply`` needs for one transform."""
    fn, column, key = t["fn"], t["column"], t["group_by"]
    if fn == "rank":
        return (rank_table(ddf, column, [key] if key else []),)
    pair = ("mean", "std") if fn == "zscore" else ("min", "max")
    if key:
        per_group = ddf.groupby(key, dropna=True)[column].agg(list(pair), split_out=1)
        # Private names, so that the group key can never clash with them in ``lookup``.
        return (per_group.rename(columns=dict(zip(pair, ("__a", "__b")))),)
    return tuple(getattr(ddf[column], stat)() for stat in pair)


def _apply(part: pd.DataFrame, t: dict, *stats: Any) -> pd.DataFrame:
    fn, key = t["fn"], t["group_by"]
    x = part[t["column"]].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        if fn in _LOGS:
            out = _LOGS[fn](x)
        elif fn == "rank":
            out = lookup_ranks(part, stats[0])
        else:
            if key:
                per_row = lookup(part, stats[0])
                a, b = (per_row.iloc[:, i].to_numpy(dtype="float64") for i in (0, 1))
            else:
                a, b = float(stats[0]), float(stats[1])
            out = (x - a) / b if fn == "zscore" else (x - a) / (b - a)
    return part.assign(**{t["output"]: out})


def _statistics_plan(t: dict) -> KernelPlan:
    keys = [t["group_by"]] if t["group_by"] else []
    return KernelPlan(unique([*keys, t["column"]]), moments, partial(merge_moments, keys=keys),
                      partial(_pair, fn=t["fn"], keys=keys), {"column": t["column"], "keys": keys, "integer": False})


def _pair(merged: pd.DataFrame, fn: str, keys: list[str]) -> tuple:
    """What ``_apply`` takes: (mean, std) or (min, max); per group, a frame indexed by the key."""
    names = ("mean", "std") if fn == "zscore" else ("min", "max")
    if merged.empty:  # no rows, or no row with a key
        if not keys:
            return (np.nan, np.nan)
        return (pd.DataFrame({"__a": [], "__b": []}, index=pd.Index([], name=keys[0]), dtype="float64"),)
    a, b = (statistic(merged, name).astype("float64").to_numpy() for name in names)
    if not keys:
        return (float(a[0]), float(b[0]))
    return (pd.DataFrame({"__a": a, "__b": b}, index=pd.Index(merged[keys[0]].to_numpy(), name=keys[0])),)


def _transformed(src: Source, args: dict[str, Any]) -> pa.Table:
    """This fragment's rows with every transform's column, in order.

    The rows stay Arrow (no pandas frame of the whole fragment): each new column is
    numpy over the one input column, a group's statistics found by ``pc.index_in`` on
    its key. A null (or NaN) result is a null, as ``Table.from_pandas`` writes it.
    """
    table = src.cur.sql("SELECT * FROM frag").to_arrow_table()
    stats = iter(args.get("before", []))
    for t in args["transforms"]:
        out = _column(table, t, *(next(stats) if t["fn"] in ("zscore", "minmax") else ()))
        table = table.append_column(t["output"], pa.array(out, type=pa.float64(), from_pandas=True))
    return table


def _column(table: pa.Table, t: dict, *stats: Any) -> np.ndarray:
    """``_apply``'s new column for an Arrow table."""
    fn, key = t["fn"], t["group_by"]
    x = pc.cast(table[t["column"]], pa.float64()).to_numpy()  # nulls become NaN
    with np.errstate(divide="ignore", invalid="ignore"):
        if fn in _LOGS:
            return _LOGS[fn](x)
        if key:
            a, b = _per_row(table[key], stats[0])
        else:
            a, b = float(stats[0]), float(stats[1])
        return (x - a) / b if fn == "zscore" else (x - a) / (b - a)


def _per_row(keys: pa.ChunkedArray, per_group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group statistics (NaN for a null key or a group without statistics)."""
    try:
        known = pa.array(per_group.index.to_numpy(), from_pandas=True).cast(keys.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # keys Arrow cannot compare as they are
        per_row = lookup(pd.DataFrame({per_group.index.name: keys.to_pandas()}), per_group)
        return per_row["__a"].to_numpy(dtype="float64"), per_row["__b"].to_numpy(dtype="float64")
    where = pc.index_in(keys, value_set=known)
    found = pc.is_valid(where).to_numpy(zero_copy_only=False)
    at = pc.fill_null(where, 0).to_numpy(zero_copy_only=False)
    return tuple(np.where(found, per_group[c].to_numpy(dtype="float64")[at], np.nan) if len(per_group)
                 else np.full(len(keys), np.nan) for c in ("__a", "__b"))


def _only(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


OPERATION = TransformOperation()
