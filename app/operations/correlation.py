"""Pairwise correlation of numeric columns, like ``pandas.DataFrame.corr``.

Both methods use, for each pair, the rows where both values are present
(pandas' pairwise-complete rule). Pearson is Dask's own one-pass ``corr``.
Spearman is Pearson on ranks, and the ranks depend on which rows the pair
keeps, so each pair ranks its own complete rows with the exact value-count
ranks of ``_stats``; that is one small graph per pair, hence the lower column
limit for Spearman.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import param

from ..errors import InvalidRequest
from ..models import required
from ._stats import lookup_ranks, rank_table
from .base import Operation, Schema, jsonable, require_names, require_numeric

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


OPERATION = Correlation()
