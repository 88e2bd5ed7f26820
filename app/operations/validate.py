"""A data-quality profile of the columns, and optional rules with their violations.

The profile gives per column the dtype, null count and share, min and max
(numeric and datetime columns) and an approximate distinct count: Dask's
HyperLogLog ``nunique_approx``, one cheap pass per column where an exact count
would shuffle every distinct value (a null may count as one value).
A rule reports how many rows violate it and up to five of them. ``unique``
counts every row whose value occurs more than once; ``range`` and
``allowed_values`` ignore nulls (``not_null`` is the rule for those).
The result kind is "table": the profile is the table, ``rules`` rides along.
"""
from __future__ import annotations

import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ..models import required
from .base import (
    Operation,
    Schema,
    kind_of,
    parse_items,
    records,
    require_column,
    require_kind,
    require_names,
    scalar_for,
    table,
)

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

RULES = ("not_null", "unique", "range", "allowed_values")
EXAMPLES = 5
_ORDERED = ("numeric", "datetime")


class Rule(param.Parameterized):
    """One expectation about one column."""

    column = required(param.String(default=None, doc="The column the rule is about."))
    rule = required(
        param.Selector(
            objects=list(RULES),
            default=None,
            doc="not_null: no missing values; unique: no value twice; range: min <= value <= max; "
            "allowed_values: every value is one of 'values'.",
        )
    )
    min = param.ClassSelector(
        class_=(int, float, str), default=None, doc="For range: the lowest allowed value (ISO text for dates)."
    )
    max = param.ClassSelector(
        class_=(int, float, str), default=None, doc="For range: the highest allowed value (ISO text for dates)."
    )
    values = param.List(
        default=None, allow_None=True, bounds=(1, 10_000), doc="For allowed_values: the allowed values."
    )


class ValidateParams(param.Parameterized):
    """Profile columns and check rules."""

    columns = param.List(
        default=None, allow_None=True, item_type=str, bounds=(1, 500), doc="The columns to profile; all when omitted."
    )
    rules = param.List(
        default=[], item_type=dict, bounds=(0, 100), doc="Rules, each {column, rule, min?, max?, values?}."
    )


class Validate(Operation):
    """The profile table plus, under "rules", each rule's violations and examples."""

    name = "validate"
    title = "Validate data"
    description = (
        "Per column nulls, dtype, min/max and approximate distinct count; optional rules "
        "(not_null, unique, range, allowed_values) with violation counts and example rows."
    )
    Params = ValidateParams
    result_kind = "table"
    item_models = {"rules": Rule}

    def check(self, p: Any, schema: Schema) -> None:
        if p.columns is not None:
            require_names(p.columns, "columns")
            for column in p.columns:
                require_column(schema, column, "columns")
        else:
            p.columns = list(schema)
        p.rules = parse_items(Rule, p.rules, "rules")
        for i, rule in enumerate(p.rules):
            _check_rule(rule, schema, f"rules[{i}]")

    def columns(self, p: Any) -> list[str] | None:
        return None if p.rules else list(p.columns)

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        dtypes = {c: str(t) for c, t in ddf.dtypes.items()}
        profiled = {c: dtypes[c] for c in p.columns}
        meta = pd.DataFrame({"null_count": pd.Series([], dtype="int64"), "dtype": pd.Series([], dtype=object)})
        # The dtypes ride along in the graph so that finalize needs nothing but the results.
        nulls = ddf[list(p.columns)].isna().sum().map_partitions(_with_dtypes, profiled, meta=meta)
        ordered = [c for c in p.columns if kind_of(dtypes[c]) in _ORDERED]
        profile = [ddf.shape[0], nulls]
        profile += [ddf[c].min() for c in ordered] + [ddf[c].max() for c in ordered]
        profile += [ddf[c].nunique_approx() for c in p.columns]
        checks = []
        for rule in p.rules:
            bad = _violating_rows(ddf, rule, dtypes[rule["column"]])
            checks += [bad.shape[0], bad.head(EXAMPLES, npartitions=-1, compute=False)]
        return tuple(profile + checks)

    def plan(self, p: Any, schema: Schema) -> KernelPlan | None:
        """The profile as kernels (rules keep the Dask graph): counts, min/max, bottom-k distinct hashes."""
        if p.rules:
            return None
        profiled = {c: schema[c] for c in p.columns}
        ordered = [c for c in p.columns if kind_of(schema[c]) in _ORDERED]
        args = {"columns": list(p.columns), "ordered": ordered}
        return KernelPlan(list(p.columns), _profile, partial(_merge_profiles, ordered=ordered),
                          partial(_profile_value, dtypes=profiled, ordered=ordered), args)

    def finalize(self, computed: Any, p: Any) -> Any:
        n_rows, nulls, *rest = computed
        ordered = [c for c in p.columns if kind_of(nulls.at[c, "dtype"]) in _ORDERED]
        k, n = len(ordered), len(p.columns)
        lows, highs, distinct, checks = rest[:k], rest[k : 2 * k], rest[2 * k : 2 * k + n], rest[2 * k + n :]
        frame = nulls.loc[list(p.columns), ["dtype", "null_count"]].rename_axis("column").reset_index()
        frame["null_share"] = frame["null_count"] / n_rows if n_rows else None
        frame["min"] = frame["column"].map(dict(zip(ordered, lows))).astype(object)
        frame["max"] = frame["column"].map(dict(zip(ordered, highs))).astype(object)
        frame["distinct_approx"] = [round(float(d)) for d in distinct]
        rules = [
            {**rule, "violations": int(violations), "examples": records(examples)}
            for rule, violations, examples in zip(p.rules, checks[0::2], checks[1::2])
        ]
        result = table(frame, row_count=n_rows, rules=rules)
        result["passed"] = all(r["violations"] == 0 for r in rules)
        return result


DISTINCT_K = 4096  # distinct counts are exact below this many values, else estimated (~1.6 %)


def _profile(src: Source, args: dict[str, Any]) -> dict[str, Any]:
    cols, ordered = args["columns"], args["ordered"]
    parts = ["count(*)"] + [f"count({ident(c)})" for c in cols]
    parts += [f"min({ident(c)})" for c in ordered] + [f"max({ident(c)})" for c in ordered]
    row = src.row(f"SELECT {', '.join(parts)} FROM frag")
    k = len(ordered)
    present = list(row[1:1 + len(cols)])
    return {"rows": row[0], "present": present, "low": list(row[1 + len(cols):1 + len(cols) + k]),
            "high": list(row[1 + len(cols) + k:]), "hashes": _bottom_hashes(src, cols, present)}


def _bottom_hashes(src: Source, cols: list[str], present: list[int]) -> list[np.ndarray]:
    """Each column's DISTINCT_K smallest distinct hashes (all of them when fewer), exactly.

    A full DISTINCT over a column of mostly distinct values is a hash table of every row;
    instead, keep only hashes below a threshold where about 3 × DISTINCT_K of them should
    fall if the values are distinct (every distinct hash below the threshold is kept, so
    when DISTINCT_K or more survive, their smallest DISTINCT_K are the exact answer). A
    column with fewer survivors (many repeated values: its full DISTINCT is small) runs again
    without the threshold. One statement for all columns, one more for any rerun.
    """
    limits = [None if n <= 3 * DISTINCT_K else int(3 * DISTINCT_K / n * 2.0**64) for n in present]
    out = _distinct_hashes(src, list(enumerate(cols)), limits)
    again = [(i, c) for i, c in enumerate(cols) if limits[i] is not None and len(out[i]) < DISTINCT_K]
    if again:
        out.update(_distinct_hashes(src, again, [None] * len(cols)))
    return [out[i] for i in range(len(cols))]


def _distinct_hashes(src: Source, columns: list[tuple[int, str]], limits: list[int | None]) -> dict[int, np.ndarray]:
    """{column index: its smallest distinct hashes (below its limit, when it has one), sorted}."""
    selects, params = [], []
    for i, column in columns:
        x = ident(column)
        below = f" AND hash({x}) < ?" if limits[i] is not None else ""
        params += [limits[i]] if limits[i] is not None else []
        selects.append(f"(SELECT {i} AS col, h FROM (SELECT DISTINCT hash({x}) AS h FROM frag "
                       f"WHERE {x} IS NOT NULL{below} ORDER BY h LIMIT {DISTINCT_K}))")
    got = src.cur.execute(" UNION ALL ".join(selects), params).fetchnumpy()
    col, h = np.asarray(got["col"]), np.asarray(got["h"], dtype="uint64")
    return {i: np.sort(h[col == i]) for i, _ in columns}


def _merge_profiles(parts: list[dict[str, Any]], ordered: list[str]) -> dict[str, Any]:
    """Counts add up, extremes take the extreme, the bottom-k hash lists merge to a bottom-k list."""
    first = parts[0]
    return {
        "rows": sum(p["rows"] for p in parts),
        "present": [sum(values) for values in zip(*(p["present"] for p in parts))],
        "low": [_extreme(values, min) for values in zip(*(p["low"] for p in parts))],
        "high": [_extreme(values, max) for values in zip(*(p["high"] for p in parts))],
        "hashes": [np.unique(np.concatenate(h))[:DISTINCT_K] for h in zip(*(p["hashes"] for p in parts))]
        if first["hashes"] else [],
    }


def _extreme(values: tuple, pick: Any) -> Any:
    present = [v for v in values if v is not None and not pd.isna(v)]
    return pick(present) if present else None


def _distinct(hashes: np.ndarray) -> float:
    """Exact below DISTINCT_K values; else the bottom-k estimate (k - 1) / (k-th smallest hash / 2^64)."""
    if len(hashes) < DISTINCT_K:
        return float(len(hashes))
    return (DISTINCT_K - 1) / (float(hashes[DISTINCT_K - 1]) / 2.0**64)


def _profile_value(merged: dict[str, Any], dtypes: dict[str, str], ordered: list[str]) -> tuple:
    """What the Dask graph computes: (rows, nulls with dtypes, lows…, highs…, distinct…)."""
    rows = int(merged["rows"])
    nulls = pd.Series([rows - int(n) for n in merged["present"]], index=list(dtypes), dtype="int64")
    stamps = [[pd.Timestamp(v) if isinstance(v, (datetime.date, datetime.datetime)) else v for v in merged[side]]
              for side in ("low", "high")]
    return (rows, _with_dtypes(nulls, dtypes), *stamps[0], *stamps[1],
            *[_distinct(h) for h in merged["hashes"]])


def _with_dtypes(nulls: pd.Series, dtypes: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"null_count": nulls.astype("int64"), "dtype": pd.Series(dtypes, dtype=object)})


def _check_rule(rule: dict, schema: Schema, where: str) -> None:
    require_column(schema, rule["column"], f"{where}.column")
    extra = [k for k in ("min", "max", "values") if rule[k] is not None]
    allowed = {"range": ["min", "max"], "allowed_values": ["values"]}.get(rule["rule"], [])
    if set(extra) - set(allowed):
        raise InvalidRequest(
            f"{where}: '{rule['rule']}' takes no {', '.join(sorted(set(extra) - set(allowed)))}",
            {"field": where},
        )
    if rule["rule"] == "range":
        require_kind(schema, rule["column"], f"{where}.column", _ORDERED, "a numeric or datetime")
        if rule["min"] is None and rule["max"] is None:
            raise InvalidRequest(f"{where}: 'range' needs 'min', 'max' or both", {"field": where})
        dtype = schema[rule["column"]]
        bounds = [scalar_for(rule[k], rule["column"], dtype, where) for k in ("min", "max") if rule[k] is not None]
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise InvalidRequest(f"{where}: 'min' must not be above 'max'", {"field": f"{where}.min"})
    if rule["rule"] == "allowed_values":
        if rule["values"] is None:
            raise InvalidRequest(f"{where}: 'allowed_values' needs 'values'", {"field": f"{where}.values"})
        for value in rule["values"]:
            scalar_for(value, rule["column"], schema[rule["column"]], where)


def _violating_rows(ddf: dd.DataFrame, rule: dict, dtype: str) -> dd.DataFrame:
    """The lazy frame of rows that break ``rule``."""
    column = rule["column"]
    args: tuple = ()
    if rule["rule"] == "unique":
        counts = ddf[column].value_counts(split_out=1)
        args = (counts[counts > 1],)
    elif rule["rule"] == "range":
        args = tuple(None if rule[k] is None else scalar_for(rule[k], column, dtype, "") for k in ("min", "max"))
    elif rule["rule"] == "allowed_values":
        args = ([scalar_for(v, column, dtype, "") for v in rule["values"]],)
    return ddf.map_partitions(_select, rule["rule"], column, *args, meta=ddf._meta, align_dataframes=False)


def _select(part: pd.DataFrame, rule: str, column: str, *args: Any) -> pd.DataFrame:
    s = part[column]
    if rule == "not_null":
        return part[s.isna().to_numpy(dtype=bool)]
    present = s.notna()
    if rule == "unique":
        bad = s.isin(args[0].index.to_numpy())
    elif rule == "range":
        low, high = args
        bad = pd.Series(False, index=s.index)
        if low is not None:
            bad |= s < low
        if high is not None:
            bad |= s > high
    else:
        bad = ~s.isin(args[0])
    keep = pd.array(present & bad, dtype="boolean").fillna(False).to_numpy(dtype=bool)
    return part[keep]


OPERATION = Validate()
