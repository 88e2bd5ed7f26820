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
import pyarrow as pa

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
        return _merge_one_group(df)
    group = df.groupby(list(keys), sort=False, dropna=False)
    n = df["n"].astype("float64")
    total_n = group["n"].transform("sum").astype("float64")
    mean = group["s"].transform("sum").astype("float64") / total_n.where(total_n > 0)
    spread = np.where(n > 0, df["m2"].astype("float64").fillna(0) + n * (df["m"].astype("float64") - mean) ** 2, 0.0)
    group = df.assign(m2=spread).groupby(list(keys), sort=False, dropna=False)
    out = group.agg(n=("n", "sum"), s=("s", "sum"), m2=("m2", "sum"), mn=("mn", "min"), mx=("mx", "max"))
    out["m"] = out["s"].astype("float64") / out["n"].where(out["n"] > 0)
    return out.reset_index()


def _merge_one_group(df: pd.DataFrame) -> pd.DataFrame:
    """``merge_moments`` without keys (one partial row per fragment), by column reductions:
    the same formula and the same skipping of nulls as the grouped path, without its
    groupby, which cost ~10 ms per merge however few the rows (a tiny job's whole merge)."""
    n = df["n"].astype("float64")
    total_n = float(n.sum())
    mean = float(df["s"].astype("float64").sum()) / total_n if total_n > 0 else np.nan
    spread = np.where(n > 0, df["m2"].astype("float64").fillna(0) + n * (df["m"].astype("float64") - mean) ** 2, 0.0)
    out = pd.DataFrame({"n": [df["n"].sum()], "s": [df["s"].sum()], "m2": [np.nansum(spread)],
                        "mn": pd.Series([df["mn"].min()], dtype=df["mn"].dtype),
                        "mx": pd.Series([df["mx"].max()], dtype=df["mx"].dtype)})
    out["m"] = out["s"].astype("float64") / out["n"].where(out["n"] > 0)
    return out


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


def counts_sql(column: str, keys: Sequence[str], bucket: str | None = None) -> str:
    """Per-group counts of each value of ``column`` (null too: a group of nulls still exists);
    with ``bucket`` (an expression of the grouped columns) that too, as ``_bucket``."""
    cols = [*keys, column]
    extra = f", {bucket} AS _bucket" if bucket else ""
    return (f"SELECT {', '.join(ident(c) for c in cols)}, count(*) AS c{extra} FROM frag "
            f"WHERE {_not_null(keys)} GROUP BY ALL")


def value_counts(src: Source, args: dict[str, Any]) -> pa.Table:
    """Counts per (keys, value) as Arrow: a few bytes a row where pandas objects took ~80."""
    return src.arrow(counts_sql(args["column"], args["keys"]))


def merge_counts(parts: list[pa.Table], columns: Sequence[str]) -> pa.Table:
    """Partials put together, not yet added up: the finish aggregates once, in DuckDB (a
    (keys, value) may repeat across fragments; every finish counts it as the sum of its
    rows). With many distinct values the adding up is most of the job, so once, not per level."""
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts, promote_options="default")


def summed(merged: pa.Table, columns: Sequence[str]) -> pa.Table:
    """One row per (keys, value) with its total count."""
    cols = ", ".join(ident(c) for c in columns)
    return _on_duckdb(merged, f"SELECT {cols}, sum(c)::BIGINT AS c FROM counts GROUP BY {cols}")


def counted(merged: pa.Table, column: str, keys: Sequence[str], operation: str) -> pa.Table:
    """nunique (distinct non-null values) or the exact median per group (or overall) from
    merged counts (a value may repeat), in DuckDB, as column ``v`` after the keys: the median
    is the mean of the smallest values whose running count passes (n-1)//2 and n//2.
    A group whose values are all null keeps its row (0, or a null median)."""
    x = ident(column)
    by = ", ".join(ident(k) for k in keys)
    group = f" GROUP BY {by}" if keys else ""
    select = f"{by}, " if keys else ""
    if operation == "nunique":
        return _on_duckdb(merged, f"SELECT {select}count(DISTINCT {x})::BIGINT AS v FROM counts{group}")
    part = f"PARTITION BY {by}" if keys else ""
    median = f"""
        WITH run AS (
            SELECT {select}{x}::DOUBLE AS x, sum(c) OVER (w ROWS UNBOUNDED PRECEDING) AS below,
                   sum(c) OVER ({part}) AS n
            FROM counts WHERE {x} IS NOT NULL WINDOW w AS ({part} ORDER BY {x}))
        SELECT {select}(min(x) FILTER (WHERE below > (n - 1) // 2)
                        + min(x) FILTER (WHERE below > n // 2)) / 2 AS v
        FROM run{group}"""
    if not keys:
        return _on_duckdb(merged, median)
    return _on_duckdb(merged, f"SELECT {by}, m.v FROM (SELECT DISTINCT {by} FROM counts) "
                              f"LEFT JOIN ({median}) AS m USING ({by})")


def value_counts_cut(src: Source, args: dict[str, Any], n: int, by: Sequence[str]) -> list[pa.Table]:
    """``value_counts`` in ``n`` pieces by DuckDB's hash of the columns ``by`` (equal values,
    null too, land in the same piece on every worker), the piece numbered in the same query."""
    by_sql = ", ".join(ident(c) for c in by)
    table = src.arrow(counts_sql(args["column"], args["keys"], f"(hash({by_sql}) % {int(n)})::UTINYINT"))
    bucket = table.column("_bucket").to_numpy()
    table = table.drop_columns(["_bucket"]).take(np.argsort(bucket, kind="stable"))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=n))])
    return [table.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b])) for b in range(n)]


def _on_duckdb(table: pa.Table, sql: str) -> pa.Table:
    """``sql`` over ``table`` (as ``counts``) on this thread's DuckDB connection."""
    from ..kernels import connection

    cur = connection().cursor()
    try:
        cur.register("counts", table)
        return cur.sql(sql).to_arrow_table()
    finally:
        cur.close()


