"""Per-feature Welch t-test between two levels of a group column, for a volcano plot.

The distributed part is ONE grouped sum over (feature, group) of the value, its
square and a row count: the moments every test needs. Everything after that
works on one row per feature in ``finalize``: means, variances (ddof=1, from
the moments, so values of very large magnitude with tiny spread lose
precision), Welch's t and Welch–Satterthwaite degrees of freedom, two-sided
p-values from ``scipy.stats.t.sf`` and Benjamini–Hochberg q-values.

Direction: ``log2_fold_change = log2((mean_b + pseudo_count) / (mean_a + pseudo_count))``,
so positive means higher in ``b``; ``t`` has the same sign (b minus a).
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..kernels import KernelPlan, Source, ident
from ..models import required
from .base import Operation, Schema, jsonable, records, require_column, require_numeric

if TYPE_CHECKING:  # annotations only (see app/readers.py: dask.dataframe is imported where it is used)
    import dask.dataframe as dd

_SUM, _SQUARES, _ROWS = "__sum", "__squares", "__rows"
COLUMNS = [
    "feature", "n_a", "n_b", "mean_a", "mean_b", "var_a", "var_b",
    "log2_fold_change", "t", "df", "p_value", "q_value", "neg_log10_q",
]  # fmt: skip
_TINY = np.finfo("float64").tiny  # q-values that underflow to 0 plot at -log10(tiny) ~ 307.7


class DifferentialExpressionParams(param.Parameterized):
    """Welch t-test of each feature's values between group levels a and b."""

    feature_column = required(param.String(default=None, doc="The feature identifier, e.g. gene_id."))
    group_column = required(param.String(default=None, doc="The column holding the condition, e.g. condition."))
    a = required(
        param.ClassSelector(
            class_=(str, int, float), default=None, doc="The reference level of group_column (the denominator)."
        )
    )
    b = required(
        param.ClassSelector(
            class_=(str, int, float), default=None, doc="The compared level of group_column (the numerator)."
        )
    )
    value_column = required(param.String(default=None, doc="The numeric measurement, e.g. expression_level."))
    pseudo_count = param.Number(
        default=1.0,
        bounds=(0, None),
        doc="Added to both group means before the log2 ratio, so a feature absent from one "
        "group keeps a finite fold change; 0 gives the plain ratio (null where a mean is 0).",
    )


class DifferentialExpression(Operation):
    """One row per feature, sorted by q then p; plotted as log2_fold_change vs -log10(q)."""

    name = "differential_expression"
    title = "Differential expression"
    description = (
        "Per feature, Welch's t-test of a value between two levels of a group column, with "
        "log2 fold change and Benjamini–Hochberg q-values, for a volcano plot."
    )
    Params = DifferentialExpressionParams
    result_kind = "volcano"

    def check(self, p: Any, schema: Schema) -> None:
        require_column(schema, p.feature_column, "feature_column")
        kind = require_column(schema, p.group_column, "group_column")
        require_numeric(schema, p.value_column, "value_column")
        names = [p.feature_column, p.group_column, p.value_column]
        if len(set(names)) != 3:
            raise InvalidRequest("feature_column, group_column and value_column must differ", {"field": "value_column"})
        if kind == "bool":
            raise InvalidRequest(
                "'group_column' must not be boolean; use a string or number column", {"field": "group_column"}
            )
        for field in ("a", "b"):
            level = getattr(p, field)
            numeric = isinstance(level, (int, float)) and not isinstance(level, bool)
            if (kind == "numeric") != numeric or isinstance(level, bool):
                want = "a number" if kind == "numeric" else "a string"
                raise InvalidRequest(
                    f"'{field}' must be {want} for column '{p.group_column}' (dtype {schema[p.group_column]})",
                    {"field": field, "dtype": schema[p.group_column]},
                )
        if p.a == p.b:
            raise InvalidRequest("'a' and 'b' must be different levels", {"field": "b"})

    def columns(self, p: Any) -> list[str] | None:
        return [p.feature_column, p.group_column, p.value_column]

    def build(self, ddf: dd.DataFrame, p: Any) -> dd.DataFrame:
        meta = _moments_input(ddf._meta, p)
        rows = ddf.map_partitions(_moments_input, p, meta=meta)
        return rows.groupby([p.feature_column, p.group_column], dropna=True)[[_SUM, _SQUARES, _ROWS]].sum()

    def plan(self, p: Any, schema: Schema) -> KernelPlan:
        """n, sum and sum of squares per feature and level per fragment, added up."""
        return KernelPlan([p.feature_column, p.group_column, p.value_column], _sums,
                          partial(_merge_sums, keys=[p.feature_column, p.group_column]),
                          partial(_indexed_sums, keys=[p.feature_column, p.group_column]),
                          {"feature": p.feature_column, "group": p.group_column, "value": p.value_column,
                           "levels": [p.a, p.b]})

    def finalize(self, computed: pd.DataFrame, p: Any) -> Any:
        levels = set(computed.index.get_level_values(1))
        for field in ("a", "b"):
            if getattr(p, field) not in levels:
                raise InvalidRequest(
                    f"level {getattr(p, field)!r} of '{field}' has no rows with a value in '{p.group_column}'",
                    {"field": field},
                )
        frame = welch(computed, p.a, p.b, p.pseudo_count)
        return {
            "columns": COLUMNS,
            "rows": records(frame[COLUMNS]),
            "x": "log2_fold_change",
            "y": "neg_log10_q",
            "a": jsonable(p.a),
            "b": jsonable(p.b),
            "feature_column": p.feature_column,
        }


def _moments_input(part: pd.DataFrame, p: Any) -> pd.DataFrame:
    keep = part[p.group_column].isin([p.a, p.b]) & part[p.value_column].notna() & part[p.feature_column].notna()
    x = part.loc[keep, p.value_column].astype("float64")
    out = part.loc[keep, [p.feature_column, p.group_column]]
    return out.assign(**{_SUM: x, _SQUARES: x * x, _ROWS: np.ones(len(x), dtype="int64")})


def _sums(src: Source, args: dict[str, Any]) -> pd.DataFrame:
    f, g, x = (ident(args[k]) for k in ("feature", "group", "value"))
    return src.df(
        f"SELECT {f}, {g}, sum({x}::DOUBLE) AS {ident(_SUM)}, sum(({x}::DOUBLE) * ({x}::DOUBLE)) AS "
        f"{ident(_SQUARES)}, count({x}) AS {ident(_ROWS)} FROM frag WHERE {g} IN (?, ?) AND {x} IS NOT NULL "
        f"AND {f} IS NOT NULL GROUP BY ALL", args["levels"])


def _merge_sums(parts: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True)
    return frame.groupby(keys, sort=False, as_index=False)[[_SUM, _SQUARES, _ROWS]].sum() if len(frame) else frame


def _indexed_sums(merged: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Indexed by (feature, level), as the Dask graph gives it."""
    return merged.set_index(keys)[[_SUM, _SQUARES, _ROWS]].astype({_ROWS: "int64"})


def welch(moments: pd.DataFrame, a: Any, b: Any, pseudo_count: float) -> pd.DataFrame:
    """Per-feature statistics from (feature, group)-indexed sums; sorted by q, then p."""
    wide = moments.unstack(level=1)
    out = pd.DataFrame({"feature": wide.index})
    for side, level in (("a", a), ("b", b)):
        n, s, ss = (_level(wide, col, level) for col in (_ROWS, _SUM, _SQUARES))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n > 0, s / n, np.nan)
            var = np.where(n > 1, np.maximum(ss - s * mean, 0.0) / (n - 1), np.nan)
        out[f"n_{side}"], out[f"mean_{side}"], out[f"var_{side}"] = n.astype("int64"), mean, var
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (out["mean_b"] + pseudo_count) / (out["mean_a"] + pseudo_count)
        out["log2_fold_change"] = np.where(ratio > 0, np.log2(ratio.where(ratio > 0)), np.nan)
        se_a, se_b = out["var_a"] / out["n_a"], out["var_b"] / out["n_b"]
        se2 = se_a + se_b
        out["t"] = np.where(se2 > 0, (out["mean_b"] - out["mean_a"]) / np.sqrt(se2), np.nan)
        out["df"] = np.where(se2 > 0, se2**2 / (se_a**2 / (out["n_a"] - 1) + se_b**2 / (out["n_b"] - 1)), np.nan)
    tested = out["t"].notna().to_numpy()
    p_value = np.full(len(out), np.nan)
    from scipy import stats  # here, not at import: scipy.stats costs 0.5 s in every process that imports the operations

    p_value[tested] = 2.0 * stats.t.sf(np.abs(out["t"].to_numpy()[tested]), out["df"].to_numpy()[tested])
    out["p_value"] = p_value
    out["q_value"] = benjamini_hochberg(p_value)
    out["neg_log10_q"] = -np.log10(np.maximum(out["q_value"], _TINY))
    return out.sort_values(["q_value", "p_value"], kind="stable", na_position="last").reset_index(drop=True)


def _level(wide: pd.DataFrame, column: str, level: Any) -> np.ndarray:
    if (column, level) not in wide.columns:
        return np.zeros(len(wide))
    return wide[(column, level)].fillna(0).to_numpy(dtype="float64")


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (monotone, at most 1); NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype="float64")
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return q
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    # The q-value of the k-th smallest p is the smallest scaled p at rank k or above.
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


OPERATION = DifferentialExpression()
