"""Merging moment partials: the keyless merge (column reductions) agrees with the grouped one."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from app.operations._partials import merge_moments

counts = st.sampled_from([0, 1, 2, 7, 1000])
finite = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def partial(draw: st.DrawFn, needs_spread: bool) -> pd.DataFrame:
    """One fragment's moments row, as a kernel returns it (nulls where the fragment had no rows
    or the statistic needs no such moment)."""
    n = draw(counts)
    if n == 0:
        row = {"n": 0, "s": np.nan, "m": np.nan, "m2": np.nan, "mn": np.nan, "mx": np.nan}
    else:
        low = draw(finite)
        row = {"n": n, "s": draw(finite), "m": draw(finite) if needs_spread else np.nan,
               "m2": draw(st.floats(0, 1e6)) if needs_spread else np.nan, "mn": low, "mx": low + draw(st.floats(0, 10))}
    return pd.DataFrame([row]).astype({"n": "int64"})


@st.composite
def partials(draw: st.DrawFn) -> list[pd.DataFrame]:
    needs_spread = draw(st.booleans())
    return draw(st.lists(partial(needs_spread), min_size=2, max_size=6))


def same(a: object, b: object) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    return bool(a == b) or math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-9)


@given(partials())
def test_keyless_merge_equals_the_grouped_merge_of_one_group(parts: list[pd.DataFrame]) -> None:
    keyless = merge_moments(parts, [])
    grouped = merge_moments([p.assign(k="all") for p in parts], ["k"]).drop(columns=["k"])
    assert list(keyless.columns) == list(grouped.columns) and len(keyless) == 1
    for column in grouped.columns:
        assert keyless[column].dtype == grouped[column].dtype, column
        assert same(keyless[column].iloc[0], grouped[column].iloc[0]), (column, keyless, grouped)


def test_a_mean_over_fragments_with_an_empty_one() -> None:
    parts = [pd.DataFrame([{"n": 2, "s": 3.0, "m": 1.5, "m2": 0.5, "mn": 1.0, "mx": 2.0}]),
             pd.DataFrame([{"n": 0, "s": np.nan, "m": np.nan, "m2": np.nan, "mn": np.nan, "mx": np.nan}]),
             pd.DataFrame([{"n": 1, "s": 6.0, "m": 6.0, "m2": 0.0, "mn": 6.0, "mx": 6.0}])]
    out = merge_moments(parts, []).iloc[0]
    values = [1.0, 2.0, 6.0]
    assert out["n"] == 3 and out["m"] == 3.0 and out["mn"] == 1.0 and out["mx"] == 6.0
    assert math.isclose(out["m2"], float(np.var(values) * 3))
