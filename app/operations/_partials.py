"""Mergeable partials shared by the kernel plans: moments and value counts, per group.

Moments per fragment are (n, sum, mean, M2 = n × population variance, min, max); they
merge exactly with Chan et al.'s parallel formula, so std/var do not lose precision
the way sums of squares would. Value counts merge by adding counts; exact medians and
distinct counts come from them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..kernels import Source, ident

MOMENTS = ["n", "s", "m", "m2", "mn", "mx"]


def _not_null(names: Sequence[str]) -> str:
    return " AND ".join(f"{ident(k)} IS NOT NULL" for k in names) or "TRUE"


# the moments each statistic needs (the rest are NULL in the partial: not computed)
NEEDS = {"count": ("n",), "sum": ("n", "s"), "mean": ("n", "s"), "var": ("n", "s", "m", "m2"),
         "std": ("n", "s", "m", "m2"), "min": ("n", "mn", "mx"), "max": ("n", "mn", "mx")}


def moments_sql(column: str, keys: Sequence[str], integer: bool, ordered_only: bool = False,
                extremes: bool = True, needs: Sequence[str] = tuple(MOMENTS)) -> str:
    """Per-group moments of ``column`` over the fragment; rows with a null key are left out.

    Only the moments in ``needs`` are computed (a mean needs no variance, min or max).
    ``ordered_only``: a column with no arithmetic (text, dates): counts, and min/max when
    ``extremes``.
    """
    x = ident(column)
    if ordered_only:
        low, high = (f"min({x})", f"max({x})") if extremes else ("NULL::DOUBLE", "NULL::DOUBLE")
        exprs = {"n": f"count({x})", "s": "NULL::DOUBLE", "m": "NULL::DOUBLE", "m2": "NULL::DOUBLE",
                 "mn": low, "mx": high}
    else:
        exprs = {"n": f"count({x})", "s": f"sum({x})::BIGINT" if integer else f"sum({x})::DOUBLE",
                 "m": f"avg({x})::DOUBLE", "m2": f"(var_pop({x}) * count({x}))::DOUBLE",
                 "mn": f"min({x})", "mx": f"max({x})"}
    select = [ident(k) for k in keys]
    select += [f"{exprs[name] if name in needs or name == 'n' else 'NULL::DOUBLE'} AS {name}" for name in MOMENTS]
    group = " GROUP BY ALL" if keys else ""
    return f"SELECT {', '.join(select)} FROM frag WHERE {_not_null(keys)}{group}"


def moments(src: Source, args: dict[str, Any]) -> pd.DataFrame:
    """The kernel: one row per group (one row in all without keys)."""
    return src.df(moments_sql(args["column"], args["keys"], args["integer"], args.get("ordered_only", False),
                              args.get("extremes", True), args.get("needs", tuple(MOMENTS))))


def merge_moments(parts: list[pd.DataFrame], keys: Sequence[str]) -> pd.DataFrame:
    """Partials of several fragments as one partial (one row per group)."""
    if len(parts) == 1:  # one fragment's groups are already distinct
        return parts[0]
    df = pd.concat(parts, ignore_index=True)
    if df.empty:
        return df
    if not keys:
        df = df.assign(_g=0)
        keys = ["_g"]
    group = df.groupby(list(keys), sort=False, dropna=False)
    n = df["n"].astype("float64")
    total_n = group["n"].transform("sum").astype("float64")
    mean = group["s"].transform("sum").astype("float64") / total_n.where(total_n > 0)
    spread = np.where(n > 0, df["m2"].astype("float64").fillna(0) + n * (df["m"].astype("float64") - mean) ** 2, 0.0)
    group = df.assign(m2=spread).groupby(list(keys), sort=False, dropna=False)
    out = group.agg(n=("n", "sum"), s=("s", "sum"), m2=("m2", "sum"), mn=("mn", "min"), mx=("mx", "max"))
    out["m"] = out["s"].astype("float64") / out["n"].where(out["n"] > 0)
    out = out.reset_index()
    return out.drop(columns=["_g"]) if "_g" in out.columns else out


def statistic(row: pd.DataFrame, name: str) -> pd.Series:
    """One statistic per group from merged moments, with pandas' conventions."""
    n = row["n"]
    if name == "count":
        return n.astype("int64")
    if name == "sum":
        return row["s"].fillna(0)
    if name == "mean":
        return row["s"].astype("float64") / n.where(n > 0)
    if name in ("var", "std"):
        var = row["m2"].astype("float64") / (n - 1).where(n > 1)
        return np.sqrt(var) if name == "std" else var
    if name == "min":
        return row["mn"]
    return row["mx"]


def counts_sql(column: str, keys: Sequence[str]) -> str:
    """Per-group counts of each value of ``column`` (null too: a group of nulls still exists)."""
    cols = [*keys, column]
    return (f"SELECT {', '.join(ident(c) for c in cols)}, count(*) AS c FROM frag "
            f"WHERE {_not_null(keys)} GROUP BY ALL")


def value_counts(src: Source, args: dict[str, Any]) -> pd.DataFrame:
    return src.df(counts_sql(args["column"], args["keys"]))


def merge_counts(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    if len(parts) == 1:
        return parts[0]
    df = pd.concat(parts, ignore_index=True)
    if df.empty:
        return df
    return df.groupby(list(columns), sort=False, dropna=False, as_index=False)["c"].sum()


def median_of_counts(values: np.ndarray, counts: np.ndarray) -> float:
    """The exact median (average of the middle two) of values repeated ``counts`` times."""
    if len(values) == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    v, c = values[order].astype("float64"), np.cumsum(counts[order])
    total = c[-1]
    lo = v[np.searchsorted(c, (total - 1) // 2, side="right")]
    hi = v[np.searchsorted(c, total // 2, side="right")]
    return float((lo + hi) / 2)
