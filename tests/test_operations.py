"""The operation catalogue against pandas/scipy on a small synthetic dataset.

Every test goes the way the job runner will: parse against the schema, project
the columns, build the lazy graph, ``client.compute`` it on a real (in-process)
distributed cluster inside ``dask.annotate``, then finalize.
"""
from __future__ import annotations

import json
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client
from scipy import stats

from app.errors import InvalidRequest
from app.operations import REGISTRY, catalogue, get
from app.operations.base import RESULT_KINDS
from app.operations.differential_expression import benjamini_hochberg

N = 480
GENES = [f"G{i:02d}" for i in range(12)]


def make_frame() -> pd.DataFrame:
    rng = np.random.default_rng(20240601)
    gene = np.repeat(GENES, N // len(GENES))
    condition = np.tile(["ctrl", "treat", "ctrl", "treat", "other"], N // 5)
    base = np.repeat(rng.uniform(2, 50, len(GENES)), N // len(GENES))
    effect = np.where((condition == "treat") & np.isin(gene, GENES[:4]), 2.5, 1.0)
    expression = base * effect * rng.lognormal(0, 0.3, N)
    expression[::17] = np.nan
    tissue = rng.choice(np.array(["liver", "brain", "lung", None], dtype=object), N, p=[0.4, 0.3, 0.2, 0.1])
    batch = rng.permutation(np.repeat(["b1", "b2", "b3", "b4"], [200, 150, 80, 50]))
    frame = pd.DataFrame(
        {
            "row_id": np.arange(N, dtype="int64"),
            "gene_id": gene,
            "condition": condition,
            "expression_level": expression,
            "count": rng.poisson(7, N).astype("int64"),
            "score": rng.normal(0, 1, N) + 0.02 * np.nan_to_num(expression),
            "tissue": tissue,
            "batch": batch,
            "flag": rng.random(N) < 0.3,
            "sampled_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 30, N), unit="D"),
        }
    )
    # Repeat the index per partition, as read_csv does: nothing may rely on a unique index.
    frame.index = np.arange(N) % (N // 4)
    return frame


DDF = dd.from_pandas(make_frame(), npartitions=4, sort=False)
DF = DDF.compute()  # the pandas reference, with the dtypes Dask gives (text becomes "string")
SCHEMA = {c: str(t) for c, t in DDF.dtypes.items()}


@pytest.fixture(scope="module")
def client():
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def run(client: Client, name: str, params: dict, ddf: dd.DataFrame = DDF) -> Any:
    """Parse, project, build, compute and finalize as the job runner does."""
    op = get(name)
    p = op.parse(params, {c: str(t) for c, t in ddf.dtypes.items()})
    columns = op.columns(p)
    lazy = op.build(ddf[columns] if columns else ddf, p)
    with dask.annotate(job="test"):
        futures = client.compute(lazy)
    computed = client.gather(futures)
    if op.writes_dataset:
        summary = op.finalize(len(computed), p)
        assert summary["operation"] == name and summary["rows"] == len(computed)
        json.dumps(summary, allow_nan=False)
        return computed
    result = op.finalize(computed, p)
    json.dumps(result, allow_nan=False)  # JSON-safe: no NaN, no numpy types
    return result


def fails(name: str, params: dict, match: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest, match=match) as info:
        get(name).parse(params, SCHEMA)
    return info.value


def column_of(result: dict, name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else r[name] for r in result["rows"]], dtype="float64")


# -- registry ---------------------------------------------------------------

def test_catalogue_lists_every_operation_with_a_schema():
    entries = {e["name"]: e for e in catalogue()}
    assert set(entries) == {
        "aggregate", "correlation", "describe", "differential_expression", "filter",
        "histogram", "partition", "sort_top", "sql", "transform", "validate", "value_counts",
    }  # fmt: skip
    for name, entry in entries.items():
        assert entry["title"] and entry["description"]
        assert entry["result_kind"] in RESULT_KINDS
        assert entry["writes_dataset"] == (name in ("filter", "transform"))
        schema = entry["parameters"]
        assert schema["type"] == "object" and schema["properties"] and "name" not in schema["properties"]
        for spec in schema["properties"].values():
            assert spec.get("description")
        json.dumps(entry)
    items = entries["filter"]["parameters"]["properties"]["conditions"]["anyOf"][0]["items"]
    assert items["properties"]["op"]["enum"][:2] == ["==", "!="]
    assert {"type": "boolean"} in items["properties"]["value"]["anyOf"]


def test_unknown_operation_lists_the_available_ones():
    with pytest.raises(InvalidRequest) as info:
        get("nope")
    assert info.value.message == f"unknown operation 'nope'; available: {', '.join(sorted(REGISTRY))}"
    assert info.value.details == {"operations": sorted(REGISTRY)}


def test_unknown_column_lists_the_columns():
    error = fails("aggregate", {"column": "nope", "operation": "mean"}, "unknown column 'nope'")
    assert error.message == f"unknown column 'nope'; the dataset's columns are: {', '.join(DF.columns)}"
    assert error.details == {"field": "column", "columns": list(DF.columns)}


def test_unknown_and_missing_fields():
    fails("aggregate", {"column": "count", "colour": "red"}, "unknown field")
    fails("aggregate", {"operation": "mean"}, "missing required field\\(s\\): column")
    fails("aggregate", {"column": None}, "'column' is required")
    fails("value_counts", {"column": "tissue", "top": "5"}, "'top' must be an integer")
    fails("value_counts", {"column": "tissue", "top": 0}, "top")


# -- aggregate --------------------------------------------------------------

@pytest.mark.parametrize("operation", ["mean", "sum", "min", "max", "std", "var", "count", "median", "nunique"])
def test_aggregate_scalar_matches_pandas(client, operation):
    result = run(client, "aggregate", {"column": "expression_level", "operation": operation})
    assert result["column"] == "expression_level" and result["operation"] == operation
    np.testing.assert_allclose(result["value"], getattr(DF["expression_level"], operation)(), rtol=1e-12)


def test_aggregate_median_is_exact_on_integers_and_datetimes_min(client):
    assert run(client, "aggregate", {"column": "count", "operation": "median"})["value"] == DF["count"].median()
    result = run(client, "aggregate", {"column": "sampled_at", "operation": "min"})
    assert result["value"] == DF["sampled_at"].min().isoformat()
    assert run(client, "aggregate", {"column": "tissue", "operation": "nunique"})["value"] == DF["tissue"].nunique()


@pytest.mark.parametrize("operation", ["mean", "median", "std", "count", "nunique"])
def test_aggregate_grouped_matches_pandas(client, operation):
    keys = ["tissue", "condition"]
    result = run(client, "aggregate", {"column": "expression_level", "operation": operation, "group_by": keys})
    expected = getattr(DF.groupby(keys)["expression_level"], operation)().sort_index().reset_index()
    assert result["columns"] == [*keys, operation]
    assert [[r[k] for k in keys] for r in result["rows"]] == expected[keys].values.tolist()
    np.testing.assert_allclose(column_of(result, operation), expected["expression_level"], rtol=1e-12)
    assert get("aggregate").kind(get("aggregate").parse({"column": "count", "group_by": "tissue"}, SCHEMA)) == "table"


def test_aggregate_rejects_bad_requests():
    error = fails("aggregate", {"column": "tissue", "operation": "mean"}, "dtype string")
    assert error.message == "column 'tissue' has dtype string; 'column' needs a numeric column"
    fails("aggregate", {"column": "count", "operation": "mode"}, "does not accept 'mode'")
    fails("aggregate", {"column": "count", "group_by": 5}, "group_by")
    fails("aggregate", {"column": "count", "group_by": ["tissue", "nope"]}, "unknown column 'nope'")
    fails("aggregate", {"column": "count", "group_by": "count"}, "both the column and a group key")


# -- describe ---------------------------------------------------------------

def test_describe_matches_pandas(client):
    result = run(client, "describe", {})
    expected = DF[["row_id", "expression_level", "count", "score"]].describe().T
    assert [r["column"] for r in result["rows"]] == list(expected.index)
    assert result["columns"] == ["column", "count", "mean", "std", "min", "25%", "50%", "75%", "max"]
    for stat in expected.columns:
        np.testing.assert_allclose(column_of(result, stat), expected[stat], rtol=1e-12, err_msg=stat)


def test_describe_approximate_quartiles_are_close(client):
    result = run(client, "describe", {"columns": ["score"], "quantiles": "approximate"})
    row = result["rows"][0]
    assert row["count"] == DF["score"].count()
    np.testing.assert_allclose(row["mean"], DF["score"].mean(), rtol=1e-12)
    # Dask's sketch is coarse on small data: only check the quartiles are ordered and in range.
    assert row["min"] <= row["25%"] <= row["50%"] <= row["75%"] <= row["max"]


def test_describe_rejects_non_numeric():
    fails("describe", {"columns": ["score", "tissue"]}, "'tissue' has dtype string")
    fails("describe", {"columns": ["flag"]}, "'flag' has dtype bool")


# -- filter -----------------------------------------------------------------

def filtered(client, conditions: list, combine: str = "all") -> pd.DataFrame:
    return run(client, "filter", {"conditions": conditions, "combine": combine})


def same_rows(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = result.sort_values("row_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.sort_values("row_id").reset_index(drop=True))


def test_filter_all_and_any(client):
    conditions = [
        {"column": "expression_level", "op": ">", "value": 10},
        {"column": "tissue", "op": "in", "value": ["liver", "brain"]},
    ]
    high = DF["expression_level"] > 10
    tissue = DF["tissue"].isin(["liver", "brain"])
    same_rows(filtered(client, conditions), DF[high & tissue])
    same_rows(filtered(client, conditions, "any"), DF[high | tissue])


@pytest.mark.parametrize(
    "condition, expected",
    [
        ({"column": "count", "op": "between", "value": [5, 8]}, lambda d: d["count"].between(5, 8)),
        ({"column": "score", "op": "<=", "value": -0.5}, lambda d: d["score"] <= -0.5),
        ({"column": "count", "op": "not_in", "value": [6, 7]}, lambda d: ~d["count"].isin([6, 7])),
        ({"column": "gene_id", "op": "contains", "value": "G0"}, lambda d: d["gene_id"].str.contains("G0")),
        ({"column": "tissue", "op": "is_null"}, lambda d: d["tissue"].isna()),
        ({"column": "expression_level", "op": "not_null"}, lambda d: d["expression_level"].notna()),
        # Nulls meet no comparison, not even "!=".
        ({"column": "tissue", "op": "!=", "value": "lung"}, lambda d: d["tissue"].notna() & (d["tissue"] != "lung")),
        ({"column": "flag", "op": "==", "value": True}, lambda d: d["flag"]),
        ({"column": "sampled_at", "op": ">=", "value": "2024-01-20"}, lambda d: d["sampled_at"] >= "2024-01-20"),
        ({"column": "condition", "op": "==", "value": "treat"}, lambda d: d["condition"] == "treat"),
    ],
)
def test_filter_ops_match_pandas(client, condition, expected):
    same_rows(filtered(client, [condition]), DF[expected(DF)])


def test_filter_values_are_data_not_code(client):
    payload = "__import__('os').system('false')"
    assert len(filtered(client, [{"column": "tissue", "op": "==", "value": payload}])) == 0
    assert len(filtered(client, [{"column": "gene_id", "op": "contains", "value": "') or True or ('"}])) == 0
    sneaky = make_frame()
    sneaky.loc[sneaky["row_id"] == 3, "tissue"] = payload
    with dask.config.set({"dataframe.convert-string": False}):  # text stays object dtype
        objects = dd.from_pandas(sneaky, npartitions=3, sort=False)
    assert objects.dtypes["tissue"] == object
    result = run(client, "filter", {"conditions": [{"column": "tissue", "op": "==", "value": payload}]}, objects)
    assert result["row_id"].tolist() == [3]
    result = run(client, "filter", {"conditions": [{"column": "tissue", "op": "!=", "value": "lung"}]}, objects)
    expected = sneaky.loc[sneaky["tissue"].notna() & (sneaky["tissue"] != "lung"), "row_id"]
    assert sorted(result["row_id"]) == sorted(expected)


@pytest.mark.parametrize(
    "condition, match",
    [
        ({"column": "count", "op": "~", "value": 1}, r"conditions\[0\]: .*does not accept '~'"),
        ({"column": "count", "op": "between", "value": [1]}, "list of two values"),
        ({"column": "count", "op": "between", "value": [9, 1]}, "low <= high"),
        ({"column": "count", "op": "in", "value": 3}, "non-empty list"),
        ({"column": "count", "op": "contains", "value": "3"}, "needs a string column; 'count' has dtype int64"),
        ({"column": "count", "op": "==", "value": "3"}, r"does not fit column 'count' \(dtype int64\); give a number"),
        ({"column": "count", "op": "==", "value": True}, "give a number"),
        ({"column": "score", "op": ">", "value": float("nan")}, "give a number"),
        ({"column": "flag", "op": "<", "value": True}, "needs an ordered column"),
        ({"column": "tissue", "op": "is_null", "value": "x"}, "takes no value"),
        ({"column": "sampled_at", "op": ">", "value": "soon"}, "not an ISO 8601"),
        ({"column": "sampled_at", "op": ">", "value": ""}, "not an ISO 8601"),
        ({"column": "count", "op": "=="}, "needs a single value"),
        ({"column": "count"}, r"conditions\[0\]: missing required field\(s\): op"),
    ],
)
def test_filter_rejects_bad_conditions(condition, match):
    fails("filter", {"conditions": [condition]}, match)


def test_filter_rejects_bad_lists():
    error = fails("filter", {"conditions": [{"column": "nope", "op": "==", "value": 1}]}, "unknown column 'nope'")
    assert error.details["field"] == "conditions[0].column"
    fails("filter", {"conditions": ["count > 3"]}, "'conditions' items must be objects")
    fails("filter", {"conditions": []}, "conditions")


# -- transform --------------------------------------------------------------

def test_transform_matches_pandas(client):
    transforms = [
        {"column": "expression_level", "fn": "log2"},
        {"column": "count", "fn": "log1p", "output": "log_count"},
        {"column": "count", "fn": "log10"},
        {"column": "expression_level", "fn": "zscore"},
        {"column": "score", "fn": "minmax"},
        {"column": "expression_level", "fn": "zscore", "group_by": "gene_id", "output": "z_gene"},
        {"column": "score", "fn": "minmax", "group_by": "tissue", "output": "mm_tissue"},
        {"column": "count", "fn": "rank"},
        {"column": "expression_level", "fn": "rank", "group_by": "tissue", "output": "rank_tissue"},
        {"column": "z_gene", "fn": "rank", "output": "rank_of_z"},  # uses an earlier output
    ]
    result = run(client, "transform", {"transforms": transforms})
    x, c, s = DF["expression_level"], DF["count"], DF["score"]
    z_gene = DF.groupby("gene_id")["expression_level"].transform(lambda v: (v - v.mean()) / v.std())
    expected = {
        "expression_level_log2": np.log2(x),
        "log_count": np.log1p(c),
        "count_log10": np.log10(c.where(c > 0)).fillna(-np.inf),
        "expression_level_zscore": (x - x.mean()) / x.std(),
        "score_minmax": (s - s.min()) / (s.max() - s.min()),
        "z_gene": z_gene,
        "mm_tissue": DF.groupby("tissue")["score"].transform(lambda v: (v - v.min()) / (v.max() - v.min())),
        "count_rank": c.rank(method="average"),
        "rank_tissue": DF.groupby("tissue")["expression_level"].rank(method="average"),
        "rank_of_z": z_gene.rank(method="average"),
    }
    assert list(result.columns) == [*DF.columns, *expected]
    pd.testing.assert_frame_equal(result[list(DF.columns)], DF)  # rows stay in place
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].to_numpy(), values.to_numpy(dtype="float64"), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "transform, match",
    [
        ({"column": "tissue", "fn": "log2"}, "'tissue' has dtype string"),
        ({"column": "count", "fn": "sqrt"}, "does not accept 'sqrt'"),
        ({"column": "count", "fn": "log2", "group_by": "tissue"}, "'group_by' applies to"),
        ({"column": "count", "fn": "rank", "output": "score"}, "already has a column 'score'"),
        ({"column": "count", "fn": "zscore", "group_by": "nope"}, "unknown column 'nope'"),
    ],
)
def test_transform_rejects_bad_requests(transform, match):
    fails("transform", {"transforms": [transform]}, match)


# -- value_counts -----------------------------------------------------------

def test_value_counts_top_and_normalize(client):
    result = run(client, "value_counts", {"column": "batch", "top": 3, "normalize": True})
    expected = DF["batch"].value_counts().head(3)
    assert [r["value"] for r in result["rows"]] == list(expected.index)
    assert [r["count"] for r in result["rows"]] == list(expected)
    np.testing.assert_allclose(column_of(result, "proportion"), DF["batch"].value_counts(normalize=True).head(3))
    assert (result["total"], result["nulls"], result["distinct"]) == (N, 0, 4)


def test_value_counts_with_nulls_and_numbers(client):
    result = run(client, "value_counts", {"column": "tissue"})
    assert {r["value"]: r["count"] for r in result["rows"]} == DF["tissue"].value_counts().to_dict()
    assert result["nulls"] == DF["tissue"].isna().sum()
    counts = run(client, "value_counts", {"column": "count", "top": 10_000})
    assert {r["value"]: r["count"] for r in counts["rows"]} == DF["count"].value_counts().to_dict()
    assert [r["count"] for r in counts["rows"]] == sorted(DF["count"].value_counts(), reverse=True)


# -- histogram --------------------------------------------------------------

@pytest.mark.parametrize(
    "params, np_kwargs",
    [
        ({"bins": 10}, {"bins": 10}),
        ({"bins": 7, "range": [5, 40]}, {"bins": 7, "range": (5, 40)}),
        ({"bins": [0, 5, 10, 20, 100]}, {"bins": [0, 5, 10, 20, 100]}),
    ],
)
def test_histogram_matches_numpy(client, params, np_kwargs):
    result = run(client, "histogram", {"column": "expression_level", **params})
    counts, edges = np.histogram(DF["expression_level"].dropna(), **np_kwargs)
    assert result["counts"] == counts.tolist()
    np.testing.assert_allclose(result["edges"], edges, rtol=0, atol=0)
    assert result["column"] == "expression_level" and result["min"] == DF["expression_level"].min()


def test_histogram_rejects_bad_bins():
    fails("histogram", {"column": "tissue"}, "'tissue' has dtype string")
    fails("histogram", {"column": "score", "bins": 0}, "'bins' must be an integer from 1")
    fails("histogram", {"column": "score", "bins": True}, "'bins' must be an integer")
    fails("histogram", {"column": "score", "bins": [1, 1, 2]}, "strictly increasing")
    fails("histogram", {"column": "score", "range": [3, 1]}, "low < high")
    fails("histogram", {"column": "score", "range": [1]}, "range")


# -- correlation ------------------------------------------------------------

@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_matches_pandas(client, method):
    columns = ["expression_level", "count", "score"]
    result = run(client, "correlation", {"columns": columns, "method": method})
    assert result["labels"] == columns
    expected = DF[columns].corr(method=method).to_numpy()
    np.testing.assert_allclose(np.array(result["matrix"], dtype=float), expected, rtol=1e-10)


def test_correlation_rejects_bad_columns():
    fails("correlation", {"columns": ["score"]}, "columns")
    fails("correlation", {"columns": ["score", "tissue"]}, "'tissue' has dtype string")
    fails("correlation", {"columns": ["score", "score"]}, "more than once")
    fails("correlation", {"columns": ["score", 3]}, "'columns' items must be strings")
    fails("correlation", {"columns": ["score", "count"], "method": "kendall"}, "does not accept 'kendall'")


# -- differential expression ------------------------------------------------

DE = {
    "feature_column": "gene_id",
    "group_column": "condition",
    "a": "ctrl",
    "b": "treat",
    "value_column": "expression_level",
}


def test_differential_expression_matches_scipy(client):
    result = run(client, "differential_expression", {**DE, "pseudo_count": 0})
    assert (result["x"], result["y"]) == ("log2_fold_change", "neg_log10_q")
    rows = {r["feature"]: r for r in result["rows"]}
    assert set(rows) == set(GENES)
    for gene in GENES:
        values = DF[DF["gene_id"] == gene]
        a = values.loc[values["condition"] == "ctrl", "expression_level"].dropna()
        b = values.loc[values["condition"] == "treat", "expression_level"].dropna()
        test = stats.ttest_ind(b, a, equal_var=False)
        row = rows[gene]
        assert (row["n_a"], row["n_b"]) == (len(a), len(b))
        np.testing.assert_allclose([row["mean_a"], row["mean_b"]], [a.mean(), b.mean()], rtol=1e-12)
        np.testing.assert_allclose([row["var_a"], row["var_b"]], [a.var(), b.var()], rtol=1e-9)
        np.testing.assert_allclose(row["t"], test.statistic, rtol=1e-9)
        np.testing.assert_allclose(row["df"], test.df, rtol=1e-9)
        np.testing.assert_allclose(row["p_value"], test.pvalue, rtol=1e-8)
        np.testing.assert_allclose(row["log2_fold_change"], np.log2(b.mean() / a.mean()), rtol=1e-12)
    p = np.array([r["p_value"] for r in result["rows"]])
    q = np.array([r["q_value"] for r in result["rows"]])
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    np.testing.assert_allclose([r["neg_log10_q"] for r in result["rows"]], -np.log10(q), rtol=1e-12)
    assert list(q) == sorted(q)
    assert {r["feature"] for r in result["rows"][:4]} == set(GENES[:4])  # the planted effects come first


def test_differential_expression_pseudo_count(client):
    result = run(client, "differential_expression", DE)
    for row in result["rows"]:
        expected = np.log2((row["mean_b"] + 1) / (row["mean_a"] + 1))
        np.testing.assert_allclose(row["log2_fold_change"], expected, rtol=1e-12)


def reference_bh(p: np.ndarray) -> np.ndarray:
    """q_i = min over every p_j >= p_i of p_j * m / rank_j, at most 1."""
    m = len(p)
    rank = {j: sum(p <= p[j]) for j in range(m)}  # ties share the largest rank
    return np.array([min(1.0, min(p[j] * m / rank[j] for j in range(m) if p[j] >= p[i])) for i in range(m)])


def test_benjamini_hochberg_against_a_reference():
    rng = np.random.default_rng(7)
    for p in (rng.uniform(0, 1, 50), rng.uniform(0, 0.05, 30), np.array([0.01, 0.01, 0.04, 0.04, 0.9, 1.0])):
        np.testing.assert_allclose(benjamini_hochberg(p), reference_bh(p), rtol=1e-12)
    with_nan = benjamini_hochberg(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], [0.02, 0.02])


def test_differential_expression_rejects_bad_requests(client):
    fails("differential_expression", {**DE, "b": "ctrl"}, "must be different levels")
    fails("differential_expression", {**DE, "a": 1}, "'a' must be a string for column 'condition' \\(dtype string\\)")
    fails("differential_expression", {**DE, "value_column": "tissue"}, "'tissue' has dtype string")
    fails("differential_expression", {**DE, "group_column": "nope"}, "unknown column 'nope'")
    with pytest.raises(InvalidRequest, match="level 'missing'"):
        run(client, "differential_expression", {**DE, "b": "missing"})


# -- validate ---------------------------------------------------------------

def test_validate_profile_matches_pandas(client):
    result = run(client, "validate", {})
    assert result["row_count"] == N and [r["column"] for r in result["rows"]] == list(DF.columns)
    for row in result["rows"]:
        column = DF[row["column"]]
        assert row["dtype"] == str(column.dtype)
        assert row["null_count"] == column.isna().sum()
        np.testing.assert_allclose(row["null_share"], column.isna().mean())
        assert abs(row["distinct_approx"] - column.nunique()) <= max(1, 0.05 * column.nunique()) + column.hasnans
    by_name = {r["column"]: r for r in result["rows"]}
    assert by_name["score"]["min"] == DF["score"].min() and by_name["count"]["max"] == DF["count"].max()
    assert by_name["sampled_at"]["max"] == DF["sampled_at"].max().isoformat()
    assert by_name["tissue"]["min"] is None
    assert result["rules"] == [] and result["passed"] is True


def test_validate_rules(client):
    rules = [
        {"column": "expression_level", "rule": "not_null"},
        {"column": "row_id", "rule": "unique"},
        {"column": "gene_id", "rule": "unique"},
        {"column": "score", "rule": "range", "min": -1, "max": 1},
        {"column": "sampled_at", "rule": "range", "max": "2024-01-15"},
        {"column": "tissue", "rule": "allowed_values", "values": ["liver", "brain"]},
    ]
    result = run(client, "validate", {"columns": ["score"], "rules": rules})
    expected = [
        DF["expression_level"].isna(),
        DF["row_id"].duplicated(keep=False),
        DF["gene_id"].duplicated(keep=False),
        (DF["score"] < -1) | (DF["score"] > 1),
        DF["sampled_at"] > "2024-01-15",
        DF["tissue"].notna() & ~DF["tissue"].isin(["liver", "brain"]),
    ]
    assert [r["violations"] for r in result["rules"]] == [int(m.sum()) for m in expected]
    for rule, mask in zip(result["rules"], expected):
        assert len(rule["examples"]) == min(5, int(mask.sum()))
        assert {e["row_id"] for e in rule["examples"]} <= set(DF.loc[mask.to_numpy(), "row_id"])
    assert result["rules"][0]["rule"] == "not_null" and result["passed"] is False
    assert [r["column"] for r in result["rows"]] == ["score"]


def test_validate_rejects_bad_rules():
    fails("validate", {"rules": [{"column": "tissue", "rule": "range", "min": 1}]}, "'tissue' has dtype string")
    fails("validate", {"rules": [{"column": "score", "rule": "range"}]}, "needs 'min', 'max' or both")
    fails("validate", {"rules": [{"column": "score", "rule": "range", "min": 2, "max": 1}]}, "must not be above")
    fails("validate", {"rules": [{"column": "score", "rule": "range", "min": "low"}]}, "give a number")
    fails("validate", {"rules": [{"column": "tissue", "rule": "allowed_values"}]}, "needs 'values'")
    fails("validate", {"rules": [{"column": "tissue", "rule": "not_null", "values": ["a"]}]}, "takes no values")
    fails("validate", {"rules": [{"column": "tissue", "rule": "sorted"}]}, "does not accept 'sorted'")
    fails("validate", {"columns": ["nope"]}, "unknown column 'nope'")


# -- sort_top ---------------------------------------------------------------

@pytest.mark.parametrize("ascending", [False, True])
def test_sort_top_matches_pandas(client, ascending):
    result = run(client, "sort_top", {"column": "score", "n": 5, "ascending": ascending})
    expected = DF.nsmallest(5, "score") if ascending else DF.nlargest(5, "score")
    assert [r["row_id"] for r in result["rows"]] == expected["row_id"].tolist()
    assert result["columns"] == list(DF.columns)


def test_sort_top_per_group_matches_pandas(client):
    result = run(client, "sort_top", {"column": "expression_level", "n": 3, "group_by": "tissue"})
    expected = (
        DF.dropna(subset=["tissue"])
        .groupby("tissue", group_keys=False)[list(DF.columns)]
        .apply(lambda g: g.nlargest(3, "expression_level"))
        .sort_values(["tissue", "expression_level"], ascending=[True, False])
    )
    assert [r["row_id"] for r in result["rows"]] == expected["row_id"].tolist()


def test_sort_top_rejects_bad_requests():
    fails("sort_top", {"column": "tissue"}, "'tissue' has dtype string")
    fails("sort_top", {"column": "score", "n": 0}, "n")
    fails("sort_top", {"column": "score", "n": 20_000}, "n")
    fails("sort_top", {"column": "score", "group_by": "nope"}, "unknown column 'nope'")
