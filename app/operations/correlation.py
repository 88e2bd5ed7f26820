"""Pairwise correlation of numeric columns, like ``pandas.DataFrame.corr``.

Both methods use, for each pair, the rows where both values are present
(pandas' pairwise-complete rule). Pearson is Dask's own one-pass ``corr``.
Spearman is Pearson on ranks, and the ranks depend on which rows the pair
keeps, so each pair ranks its own complete rows with the exact value-count
ranks of ``_stats``; that is one small graph per pair, hence the lower column
limit for Spearman.
"""
from __future__ import annotations

from functools import partial
from itertools import combinations, combinations_with_replacement
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ..models import required
from ._stats import lookup_ranks, rank_table
from .base import Operation, Schema, jsonable, require_names, require_numeric

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

MAX_PEARSON = 100
MAX_SPEARMAN = 20


class CorrelationParams(param.Parameterized):
    """The correlation matrix of numeric columns."""

    columns = required(
        param.List(
            default=None,
            allow_None=True,
            item_type=str,
            bounds=(2, MAX_PEARSON),
            doc=f"Two or more numeric columns (at most {MAX_PEARSON}; {MAX_SPEARMAN} for spearman).",
        )
    )
    method = param.Selector(
        objects=["pearson", "spearman"], default="pearson", doc="pearson (linear) or spearman (rank)."
    )


class Correlation(Operation):
    """{"labels": [...], "matrix": [[...]]}, symmetric with ones on the diagonal."""

    name = "correlation"
    title = "Correlation matrix"
    description = "Pearson or Spearman correlation between every pair of numeric columns."
    Params = CorrelationParams
    result_kind = "matrix"

    def check(self, p: Any, schema: Schema) -> None:
        require_names(p.columns, "columns")
        for column in p.columns:
            require_numeric(schema, column, "columns")
        if p.method == "spearman" and len(p.columns) > MAX_SPEARMAN:
            raise InvalidRequest(f"spearman takes at most {MAX_SPEARMAN} columns", {"field": "columns"})

    def columns(self, p: Any) -> list[str] | None:
        return list(p.columns)

    def build(self, ddf: dd.DataFrame, p: Any) -> Any:
        frame = ddf[list(p.columns)]
        if p.method == "pearson":
            return frame.corr(method="pearson")
        return tuple(_spearman_pair(frame[[a, b]]) for a, b in combinations(p.columns, 2))

    def plan(self, p: Any, schema: Schema) -> KernelPlan | None:
        """Pearson: co-moments of every pair over its complete rows, merged exactly; Spearman: None."""
        if p.method != "pearson":
            return None
        pairs = list(combinations_with_replacement(p.columns, 2))
        return KernelPlan(list(p.columns), _comoments, _merge_comoments, partial(_matrix, labels=list(p.columns)),
                          pairs)

    def finalize(self, computed: Any, p: Any) -> Any:
        labels = list(p.columns)
        if p.method == "pearson":
            matrix = computed.loc[labels, labels].to_numpy(dtype="float64")
        else:
            matrix = np.eye(len(labels))
            pairs = list(combinations(range(len(labels)), 2))
            for (i, j), pair in zip(pairs, computed):
                matrix[i, j] = matrix[j, i] = pair.iloc[0, 1]
        return {"labels": labels, "matrix": jsonable(matrix), "method": p.method}


def _spearman_pair(pair: dd.DataFrame) -> dd.DataFrame:
    """The lazy 2x2 Pearson matrix of the ranks of a pair's complete rows."""
    a, b = pair.columns
    complete = pair.dropna()
    tables = [rank_table(complete, column, []) for column in (a, b)]
    meta = pd.DataFrame({a: pd.Series([], dtype="float64"), b: pd.Series([], dtype="float64")})
    ranks = complete.map_partitions(_ranks, *tables, meta=meta, align_dataframes=False)
    return ranks.corr(method="pearson")


def _ranks(part: pd.DataFrame, table_a: pd.Series, table_b: pd.Series) -> pd.DataFrame:
    a, b = part.columns
    return pd.DataFrame(
        {a: lookup_ranks(part, table_a), b: lookup_ranks(part, table_b)}, index=part.index
    )


_PAIR = ["n", "mx", "my", "sxx", "syy", "sxy"]


# A column whose sum of squares is over this many times its centred sum of squares is
# ill-conditioned for the one-pass sums (each sum's rounding, times this, lands in the
# variance): its fragment takes DuckDB's Welford aggregates instead. 1e3 keeps the
# relative error of a variance near 1e-13 * sqrt(rows) * 1e3, under 1e-9 up to 10M rows
# in a fragment; data centred near zero (z-scores, logs) is ~1, a mean of 10 standard
# deviations ~100, a constant column infinite.
ILL_CONDITIONED = 1e3


def _comoments(src: Source, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Per pair (x, y) over the rows where both are present: n, means, centred sums.

    One pass over the fragment (a JSON or CSV fragment is parsed again by every query)
    takes the row count and, per column, its count, sum and sum of squares, and one sum of
    products per pair: plain sums, DuckDB's cheapest aggregates (a 10M-row pair: 164 ms,
    against 287 ms for averages, population variances and a covariance; DuckDB's own
    ``corr`` 182 ms). The centred sums follow exactly for a pair whose columns hold no null
    here (and for every (x, x) pair), unless a column is ill-conditioned for them
    (``ILL_CONDITIONED``): then the pass is DuckDB's Welford aggregates. Only pairs with a
    null in this fragment take a second pass, of ``regr_*`` aggregates over their complete
    rows.
    """
    columns = list(dict.fromkeys(c for pair in pairs for c in pair))
    crossed = [(x, y) for x, y in pairs if x != y]
    firsts = _sums(src, columns, crossed) or _welford(src, columns, crossed)
    rows, counted, stats, cross = firsts
    partial_pairs = [(x, y) for x, y in crossed if not (counted[x] == rows == counted[y])]
    regr: dict[tuple[str, str], list[float]] = {}
    if partial_pairs:
        names = ("regr_count", "regr_avgy", "regr_avgx", "regr_syy", "regr_sxx", "regr_sxy")
        more = [f"{f}({ident(x)}, {ident(y)})" for x, y in partial_pairs for f in names]
        got = _floats(src, more)
        regr = {pair: got[i * 6:(i + 1) * 6] for i, pair in enumerate(partial_pairs)}
    values = []
    for x, y in pairs:
        if (x, y) in regr:
            values.append(regr[(x, y)])
            continue
        (mx, sxx), (my, syy) = stats[x], stats[y]
        values.append([counted[x], mx, my, sxx, syy, sxx if x == y else cross[(x, y)]])
    frame = pd.DataFrame(np.array(values, dtype="float64").reshape(len(pairs), 6), columns=_PAIR)
    frame["pair"] = range(len(pairs))
    return frame


def _floats(src: Source, exprs: list[str]) -> list[float]:
    """One pass of aggregates over the fragment, as floats (NaN for NULL)."""
    return [np.nan if v is None else float(v) for v in src.row(f"SELECT {', '.join(exprs)} FROM frag")]


_Firsts = tuple[float, dict[str, float], dict[str, tuple[float, float]], dict[tuple[str, str], float]]


def _sums(src: Source, columns: list[str], crossed: list[tuple[str, str]]) -> _Firsts | None:
    """(rows, count per column, (mean, centred sum of squares) per column, centred sum of
    products per pair whose columns are full) from plain sums; None when a column is
    ill-conditioned for them."""
    exprs = ["count(*)"]
    for c in columns:
        v = f"{ident(c)}::DOUBLE"
        exprs += [f"count({ident(c)})", f"sum({v})", f"sum({v} * {v})"]
    exprs += [f"sum({ident(x)}::DOUBLE * {ident(y)}::DOUBLE)" for x, y in crossed]
    got = _floats(src, exprs)
    rows, counted, stats = got[0], {}, {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, c in enumerate(columns):
            n, total, squares = got[1 + 3 * i: 4 + 3 * i]
            centred = squares - total * total / n if n else np.nan
            if n >= 2 and not (np.isfinite(centred) and centred > 0 and squares <= ILL_CONDITIONED * centred):
                return None  # constant, overflowing or far from zero for its spread: Welford's
            counted[c], stats[c] = n, (total / n if n else np.nan, max(centred, 0.0) if n else np.nan)
        cross = {}
        for j, (x, y) in enumerate(crossed):
            n = counted[x]
            (mx, _), (my, _) = stats[x], stats[y]
            cross[(x, y)] = got[1 + 3 * len(columns) + j] - n * mx * my if n else np.nan
    return rows, counted, stats, cross


def _welford(src: Source, columns: list[str], crossed: list[tuple[str, str]]) -> _Firsts:
    """The same from DuckDB's averages, population variances and covariances (Welford's
    updates: exact however far from zero the values lie)."""
    exprs = ["count(*)"]
    for c in columns:
        exprs += [f"count({ident(c)})", f"avg({ident(c)})", f"var_pop({ident(c)})"]
    exprs += [f"covar_pop({ident(x)}, {ident(y)})" for x, y in crossed]
    got = _floats(src, exprs)
    counted = {c: got[1 + 3 * i] for i, c in enumerate(columns)}
    # population (co)variances times n are the centred sums
    stats = {c: (got[2 + 3 * i], got[3 + 3 * i] * got[1 + 3 * i]) for i, c in enumerate(columns)}
    cross = {(x, y): got[1 + 3 * len(columns) + j] * counted[x] for j, (x, y) in enumerate(crossed)}
    return got[0], counted, stats, cross


def _merge_comoments(parts: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(parts, ignore_index=True)
    n = df["n"].fillna(0)
    group = df.assign(n=n).groupby("pair", sort=True)
    total = group["n"].transform("sum")
    mx = (n * df["mx"].fillna(0)).groupby(df["pair"]).transform("sum") / total.where(total > 0)
    my = (n * df["my"].fillna(0)).groupby(df["pair"]).transform("sum") / total.where(total > 0)
    dx, dy = df["mx"] - mx, df["my"] - my
    live = n > 0
    df = df.assign(n=n, sxx=np.where(live, df["sxx"].fillna(0) + n * dx * dx, 0.0),
                   syy=np.where(live, df["syy"].fillna(0) + n * dy * dy, 0.0),
                   sxy=np.where(live, df["sxy"].fillna(0) + n * dx * dy, 0.0),
                   mx=np.where(live, n * df["mx"].fillna(0), 0.0), my=np.where(live, n * df["my"].fillna(0), 0.0))
    out = df.groupby("pair", sort=True)[["n", "mx", "my", "sxx", "syy", "sxy"]].sum()
    out["mx"], out["my"] = out["mx"] / out["n"].where(out["n"] > 0), out["my"] / out["n"].where(out["n"] > 0)
    return out.reset_index()


def _matrix(merged: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The symmetric Pearson matrix, as ``DataFrame.corr`` gives it (NaN under two rows)."""
    matrix = pd.DataFrame(np.nan, index=labels, columns=labels)
    pairs = list(combinations_with_replacement(labels, 2))
    for row in merged.itertuples():
        x, y = pairs[int(row.pair)]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = row.sxy / np.sqrt(row.sxx * row.syy) if row.n >= 2 else np.nan
        r = float(np.clip(r, -1.0, 1.0)) if np.isfinite(r) else np.nan
        matrix.loc[x, y] = matrix.loc[y, x] = r
    return matrix


OPERATION = Correlation()
