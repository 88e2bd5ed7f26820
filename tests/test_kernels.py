"""The columnar kernels give what the Dask DataFrame graphs give (which test_operations
checks against pandas/scipy), on CSV, Parquet and JSON lines, split into many
fragments, with nulls, empty fragments, one-row fragments, unicode keys, all-null
columns and hostile column names — in one task (the small-input path) and as a tree.

No cluster: the kernels run in this process, as a worker thread would run them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import kernels, readers, task_graph
from app.operations import get

HOSTILE = 'we"ird; DROP TABLE x;--`ç'


def make_frame(rows: int = 600, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    genes = np.array(["G1", "G2", "Gé✓", "G 4", "G'5"], dtype=object)
    frame = pd.DataFrame({
        "gene_id": genes[rng.integers(0, len(genes), rows)],
        "condition": rng.choice(np.array(["ctrl", "treat"], dtype=object), rows),
        "expression_level": rng.lognormal(2, 1, rows),
        "count": rng.poisson(5, rows).astype("int64"),
        HOSTILE: rng.normal(0, 1, rows),
        "empty": np.full(rows, np.nan),
    })
    frame.loc[frame.index % 11 == 0, "expression_level"] = np.nan
    frame.loc[frame.index % 13 == 0, "gene_id"] = None
    return frame


def write(frame: pd.DataFrame, folder: Path, fmt: str, parts: int) -> list[str]:
    """``parts`` files (some empty, one of one row) in ``fmt``."""
    folder.mkdir(parents=True, exist_ok=True)
    cuts = np.linspace(0, len(frame), parts + 1).astype(int)
    # a header-only CSV reads its columns as text in Dask's reference path: CSV gets no empty file
    # (an empty JSON file is refused by the reader: JSON gets none either)
    empty = [] if fmt in ("csv", "json") else [frame.iloc[:0]]
    pieces = [frame.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])] + empty + [frame.iloc[:1]]
    paths = []
    for i, piece in enumerate(pieces):
        path = folder / f"part-{i:03d}.{ 'jsonl' if fmt == 'json' else fmt}"
        if fmt == "csv":
            piece.to_csv(path, index=False)
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(piece, preserve_index=False), path, row_group_size=50)
        else:
            piece.to_json(path, orient="records", lines=True)
        paths.append(str(path))
    return paths


def both_paths(op_name: str, params: dict[str, Any], folder: Path, fmt: str) -> tuple[Any, Any, Any]:
    """(kernels in one task, kernels as fragments combined in a tree, the Dask graph), finalized."""
    op = get(op_name)
    source = str(folder / "*")
    info = readers.inspect(source, fmt, {})
    schema = {c["name"]: c["dtype"] for c in info["schema"]}
    p = op.parse(params, schema)
    plan = op.plan(p, schema)
    assert plan is not None
    frags = kernels.fragments(readers.list_files(source, fmt), fmt, {}, schema)
    small = task_graph.graph(frags, plan, small=True, threads=2)  # what a small input runs: Parquet in one scan
    assert isinstance(small, task_graph.OneTask) and (len(small.frags) == 1 or fmt != "parquet")
    one = op.finalize(small(), p)
    graph = task_graph.graph(frags, plan, small=False)  # one fragment: the one task, else the tree
    tree = op.finalize(graph() if isinstance(graph, task_graph.OneTask) else dask.compute(graph, scheduler="threads")[0], p)
    ddf = readers.read_ddf(source, fmt, {}, columns=op.columns(op.parse(params, schema)))
    graph = op.build(ddf, p)
    reference = op.finalize(dask.compute(graph, scheduler="sync")[0] if not isinstance(graph, tuple)
                            else dask.compute(*graph, scheduler="sync"), p)
    return one, tree, reference


def close(a: Any, b: Any, abs_tol: float = 1e-12) -> bool:
    """Equal JSON, floats to 1e-9 relative (or ``abs_tol``, for results near zero)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], abs_tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, abs_tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=abs_tol)
    return a == b


AGGREGATES = [
    {"column": c, "operation": o, **({"group_by": g} if g else {})}
    for c, o in [("expression_level", "mean"), ("expression_level", "sum"), ("expression_level", "std"),
                 ("expression_level", "var"), ("expression_level", "min"), ("expression_level", "max"),
                 ("expression_level", "count"), ("expression_level", "median"), ("count", "sum"),
                 ("count", "nunique"), ("gene_id", "count"), ("gene_id", "nunique"), ("empty", "mean"),
                 ("empty", "median"), (HOSTILE, "mean")]
    for g in (None, "gene_id", ["gene_id", "condition"])
    if g is None or (c not in (g if isinstance(g, list) else [g]))
]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_aggregate_matches_the_dask_graph(tmp_path: Path, fmt: str) -> None:
    write(make_frame(), tmp_path / "data", fmt, parts=5)
    for params in AGGREGATES:
        if fmt != "parquet" and params["column"] == "empty":
            continue  # an all-empty column in text formats is text: no numeric statistic applies
        one, tree, reference = both_paths("aggregate", params, tmp_path / "data", fmt)
        assert close(one, reference), (params, one, reference)
        assert close(tree, reference), (params, tree, reference)


OTHERS = [
    ("value_counts", {"column": "gene_id", "top": 3}),
    ("value_counts", {"column": "count", "normalize": True}),
    ("value_counts", {"column": "empty"}),
    ("differential_expression", {"feature_column": "gene_id", "group_column": "condition",
                                 "value_column": "expression_level", "a": "ctrl", "b": "treat"}),
    ("correlation", {"columns": ["expression_level", "count", HOSTILE]}),
    ("correlation", {"columns": ["expression_level", "empty"]}),
    ("sort_top", {"column": "expression_level", "n": 7}),
    ("sort_top", {"column": HOSTILE, "n": 3, "ascending": True, "group_by": "gene_id"}),
    ("histogram", {"column": "expression_level", "bins": 12, "range": [0, 40]}),
    ("histogram", {"column": "count", "bins": [0, 2, 5, 9, 30]}),
    ("histogram", {"column": "empty", "bins": 4, "range": [0, 1]}),
    ("describe", {}),
    ("describe", {"columns": ["count", HOSTILE]}),
    ("validate", {}),
    ("validate", {"columns": ["gene_id", "count"]}),
]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_other_operations_match_the_dask_graph(tmp_path: Path, fmt: str) -> None:
    write(make_frame(), tmp_path / "data", fmt, parts=4)
    for name, params in OTHERS:
        if fmt == "csv" and "empty" in json.dumps(params):
            continue
        one, tree, reference = both_paths(name, params, tmp_path / "data", fmt)
        if name == "validate":
            one, tree, reference = (_exact_profile(r, fmt) for r in (one, tree, reference))
        assert close(one, reference), (name, params, one, reference)
        assert close(tree, reference), (name, params, tree, reference)


def _exact_profile(result: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Validate's profile without what the two ways state differently by design: the Dask graph
    names dtypes as Dask reads them and estimates distinct counts (HyperLogLog, a null may count);
    the kernels give the registered dtype and exact counts below 4,096 values. The exact count
    is checked against pandas here instead."""
    frame = make_frame()
    frame = pd.concat([frame, frame.iloc[:1]])  # the one-row file
    rows = []
    for row in result["rows"]:
        if row["distinct_approx"] is not None and row["column"] in frame:
            exact = frame[row["column"]].nunique()
            assert abs(row["distinct_approx"] - exact) <= max(1, 0.02 * exact), (row, exact)
        rows.append({k: v for k, v in row.items() if k not in ("dtype", "distinct_approx")})
    return {**result, "rows": rows}


def test_a_big_csv_splits_into_byte_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "CSV_BLOCK", 2_000)
    frame = make_frame(3000)
    folder = tmp_path / "big"
    folder.mkdir()
    frame.to_csv(folder / "one.csv", index=False)
    frags = kernels.fragments([str(folder / "one.csv")], "csv", {}, {c: "float64" for c in frame})
    assert len(frags) > 10 and all(f.length for f in frags)
    for params in ({"column": "expression_level", "operation": "mean", "group_by": "gene_id"},
                   {"column": "count", "operation": "median"}):
        one, tree, reference = both_paths("aggregate", params, folder, "csv")
        assert close(one, reference) and close(tree, reference), params


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=40),
       keys=st.lists(st.sampled_from(["a", "β", "c c", None]), min_size=40, max_size=40),
       parts=st.integers(1, 4))
def test_any_data_gives_the_same_aggregates(tmp_path_factory: pytest.TempPathFactory, values: list,
                                            keys: list, parts: int) -> None:
    frame = pd.DataFrame({"x": pd.Series(values, dtype="float64"), "k": pd.Series(keys[:len(values)], dtype=object)})
    folder = tmp_path_factory.mktemp("hyp") / "data"
    write(frame, folder, "parquet", parts)
    for params in ({"column": "x", "operation": "mean"}, {"column": "x", "operation": "std", "group_by": "k"},
                   {"column": "x", "operation": "median", "group_by": "k"}, {"column": "x", "operation": "sum"},
                   {"column": "x", "operation": "nunique", "group_by": "k"}):
        try:
            one, tree, reference = both_paths("aggregate", params, folder, "parquet")
        except Exception as exc:  # an all-empty dataset is refused by both readers alike
            assert "no rows" in str(exc) or "no columns" in str(exc), exc
            return
        # Summation order differs between the readers: a sum that cancels to ~0, or a std far
        # below the values' magnitude, is only as exact as the magnitude allows (a std
        # within sqrt(eps) of it, a sum within a few eps of the sum of magnitudes).
        magnitude = max((abs(v) for v in values if v is not None), default=1.0)
        tol = 1e-7 * magnitude if params["operation"] == "std" else 1e-13 * magnitude * max(len(values), 1)
        assert close(one, reference, tol), (params, one, reference)
        assert close(tree, reference, tol), (params, tree, reference)


@pytest.mark.parametrize("params", [{"column": "x", "operation": "nunique", "group_by": "k"},
                                    {"column": "x", "operation": "nunique"},
                                    {"column": "x", "operation": "median", "group_by": "k"}])
def test_a_merge_of_value_counts_is_spread_over_bucket_tasks(tmp_path: Path, params: dict) -> None:
    """nunique and grouped medians merge in bucket tasks (by value, by group), and the result
    equals the one task's and pandas' (0.0 and -0.0 are one value in whichever bucket)."""
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(0, 3, 4000), 1)
    x[::97] = 0.0
    x[1::89] = -0.0
    frame = pd.DataFrame({"x": np.where(np.arange(4000) % 31 == 0, np.nan, x),
                          "k": rng.choice(["a", "β", "c c", "all-null"], 4000)})
    frame.loc[frame["k"] == "all-null", "x"] = np.nan
    write(frame, tmp_path / "data", "parquet", parts=6)
    op = get("aggregate")
    source = str(tmp_path / "data" / "*")
    schema = {c["name"]: c["dtype"] for c in readers.inspect(source, "parquet", {})["schema"]}
    p = op.parse(params, schema)
    plan = op.plan(p, schema)
    frags = kernels.fragments(readers.list_files(source, "parquet"), "parquet", {}, schema)
    graph = task_graph.graph(frags, plan, small=False, threads=2)
    names = [str(key) for key in dict(graph.__dask_graph__())]
    assert sum(name.startswith("reduce_bucket") for name in names) == 4, names
    spread = op.finalize(dask.compute(graph, scheduler="threads")[0], p)
    one = op.finalize(task_graph.run_all(frags, plan), p)
    column = frame.groupby("k")["x"] if "group_by" in params else frame["x"]
    expected = getattr(column, params["operation"])()
    assert close(spread, one)
    if "group_by" in params:
        got = {row["k"]: row[params["operation"]] for row in spread["rows"]}
        assert close(got, {k: (None if pd.isna(v) else v) for k, v in expected.items()}), (got, expected)
    else:
        assert spread["value"] == expected


def test_hostile_names_and_values_stay_data(tmp_path: Path) -> None:
    """A column named like SQL, keys with quotes: read as names and values, never run."""
    frame = pd.DataFrame({HOSTILE: [1.0, 2.0, 3.0], "k'); DROP TABLE frag; --": ["x'y", 'a"b', "x'y"]})
    write(frame, tmp_path / "h", "parquet", 1)
    one, tree, reference = both_paths(
        "aggregate", {"column": HOSTILE, "operation": "sum", "group_by": "k'); DROP TABLE frag; --"},
        tmp_path / "h", "parquet")
    assert close(one, reference) and json.dumps(one)
    assert {r["k'); DROP TABLE frag; --"]: r["sum"] for r in one["rows"]} == {"x'y": 5.0, 'a"b': 2.0}  # the one-row file repeats the first row


FILTERS = [
    {"conditions": [{"column": "expression_level", "op": ">", "value": 10}]},
    {"conditions": [{"column": "gene_id", "op": "in", "value": ["G1", "Gé✓"]},
                    {"column": "count", "op": "between", "value": [3, 6]}]},
    {"conditions": [{"column": "gene_id", "op": "not_in", "value": ["G1"]},
                    {"column": "expression_level", "op": "is_null"}], "combine": "any"},
    {"conditions": [{"column": "gene_id", "op": "contains", "value": "'"}]},
    {"conditions": [{"column": "gene_id", "op": "!=", "value": "G2"}, {"column": HOSTILE, "op": "<=", "value": 0}]},
    {"conditions": [{"column": "gene_id", "op": "contains", "value": ".*"}]},  # nothing: a literal, not a pattern
]


def written_rows(name: str, cases: list[dict[str, Any]], folder: Path, fmt: str) -> None:
    """An operation that writes a dataset: the rows its kernels write equal the Dask graph's."""
    from app.operations.base import records

    write(make_frame(), folder, fmt, parts=4)
    op = get(name)
    source = str(folder / "*")
    schema = {c["name"]: c["dtype"] for c in readers.inspect(source, fmt, {})["schema"]}
    frags = kernels.fragments(readers.list_files(source, fmt), fmt, {}, schema)
    for params in cases:
        p = op.parse(params, schema)
        plan = op.plan(p, schema)
        before = [task_graph.run_all(frags, step) for step in plan.before]  # a transform's statistics
        plan = dataclasses.replace(plan, args={**plan.args, "before": before}) if before else plan
        got = pd.concat([kernels.run_fragment(f, plan).to_pandas() for f in frags], ignore_index=True)
        reference = dask.compute(op.build(readers.read_ddf(source, fmt, {}), p), scheduler="sync")[0]
        want = records(reference.reset_index(drop=True))
        assert close(records(got), want), (params, len(got), len(want))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_filter_keeps_the_rows_the_dask_graph_keeps(tmp_path: Path, fmt: str) -> None:
    written_rows("filter", FILTERS, tmp_path / "data", fmt)


TRANSFORMS = [
    {"transforms": [{"column": "expression_level", "fn": "zscore", "group_by": "gene_id"}]},
    {"transforms": [{"column": "count", "fn": "minmax"}, {"column": HOSTILE, "fn": "log1p", "output": "l"},
                    {"column": "expression_level", "fn": "zscore"}]},
    {"transforms": [{"column": "expression_level", "fn": "minmax", "group_by": "condition", "output": "m m"}]},
    {"transforms": [{"column": HOSTILE, "fn": "zscore", "group_by": "count"},  # integer keys, some one-row groups
                    {"column": "count", "fn": "minmax", "group_by": "expression_level"}]},  # float keys, nulls
]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_transform_adds_what_the_dask_graph_adds(tmp_path: Path, fmt: str) -> None:
    written_rows("transform", TRANSFORMS, tmp_path / "data", fmt)


def test_validate_bottom_hashes_equal_a_full_distinct(tmp_path: Path) -> None:
    """Validate's thresholded distinct hashes are exactly the bottom 4,096 of a full DISTINCT,
    for columns of every cardinality (the threshold holds, or the rerun without it)."""
    from app.operations import validate

    rng = np.random.default_rng(3)
    rows = 40_000
    floats = rng.normal(size=rows)
    floats[::7] = np.nan
    frame = pd.DataFrame({
        "unique": floats,  # NaN counts as one value, as in a full DISTINCT
        "twice": np.repeat(np.arange(rows // 2), 2).astype("float64"),  # enough survive the threshold
        "some": rng.integers(0, 6_000, rows),  # too few survive: rerun without it
        HOSTILE: rng.choice(np.array(["a", "β", "c c"], dtype=object), rows),
        "none": pd.Series([None] * rows, dtype="float64"),
    })
    frame.loc[frame.index % 5 == 0, "unique"] = None
    path = tmp_path / "v.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=10_000)
    cur = kernels.connection().cursor()
    kernels.open_fragment(cur, kernels.Fragment(str(path), "parquet"), list(frame))
    src = kernels.Source(cur)
    present = [int(frame[c].notna().sum()) for c in frame]
    got = validate._bottom_hashes(src, list(frame), present)
    for column, hashes in zip(frame, got):
        x = kernels.ident(column)
        want = cur.execute(f"SELECT DISTINCT hash({x}) AS h FROM frag WHERE {x} IS NOT NULL ORDER BY h "
                           f"LIMIT {validate.DISTINCT_K}").fetchnumpy()["h"]
        assert np.array_equal(hashes, np.asarray(want, dtype="uint64")), column
    assert [len(h) for h in got] == [validate.DISTINCT_K] * 3 + [3, 0]
    cur.close()


@pytest.mark.parametrize("on_edges", [True, False])
@pytest.mark.parametrize("bins", [7, 50, [0.0, 0.1, 0.2, 0.30000000000000004, 0.4], [0, 1, 5, 6]])
def test_histogram_bins_in_sql_equal_numpy(tmp_path: Path, bins: Any, on_edges: bool) -> None:
    """Values on every edge (the last one counts, as in numpy), just beside them (each bin
    checked one by one), or none there (the bins guessed from the width hold); outside the range."""
    from app.operations import histogram

    rng = np.random.default_rng(5)
    edges = (np.asarray(bins, dtype="float64") if isinstance(bins, list)
             else np.histogram_bin_edges(np.empty(0), bins=bins, range=(0.0, 0.7)))
    near = [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), np.arange(0, 70) / 100]
    values = np.concatenate([*(near if on_edges else []), rng.uniform(-0.2, edges[-1] + 0.2, 5_000), [np.nan] * 3])
    frame = pd.DataFrame({"x": values, "i": np.round(values * 10).astype("int64")})
    path = tmp_path / "h.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    cur = kernels.connection().cursor()
    kernels.open_fragment(cur, kernels.Fragment(str(path), "parquet"), ["x", "i"])
    for column in ("x", "i"):
        counts, low, high = histogram._bin_counts(kernels.Source(cur), {"column": column, "edges": edges.tolist()})
        present = frame[column].dropna().to_numpy(dtype="float64")
        assert counts.tolist() == np.histogram(present, bins=edges)[0].tolist(), column
        assert (low, high) == (present.min(), present.max())
    cur.close()


@settings(max_examples=40, deadline=None)
@given(pieces=st.lists(st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(-1e9, 1e9)), max_size=30),
                       min_size=1, max_size=6), counted=st.lists(st.booleans(), min_size=6, max_size=6))
def test_describe_quartiles_equal_value_count_quartiles(pieces: list[list[float]], counted: list[bool]) -> None:
    """Exact quartiles from each fragment's values, sent as they are or as value counts (in any
    mix), equal the quartiles of the value counts of all of them, whatever the ties."""
    from app.operations import describe
    from app.operations._stats import quantiles_from_counts

    arrays = [np.asarray(p, dtype="float64") for p in pieces]
    raw = [a for a, c in zip(arrays, counted) if not c and len(a)]
    runs = []
    for a in (a for a, c in zip(arrays, counted) if c and len(a)):
        values, counts = np.unique(a, return_counts=True)
        runs.append((values, np.cumsum(counts)))
    got = describe._quartiles(raw, runs, "x")
    every = pd.Series(np.concatenate(arrays))
    want = quantiles_from_counts(every.value_counts(), describe.PROBS)
    assert np.array_equal(got.to_numpy(), want.to_numpy(), equal_nan=True)


def test_a_thread_count_keeps_its_own_connection():
    # SET threads starts or joins DuckDB's pool: a one-task job on 2 threads must not pay it
    # each time, nor leave a worker thread's 1-thread connection with 2 threads
    two, one = kernels.connection(2), kernels.connection(1)
    assert two is kernels.connection(2) and one is kernels.connection() and one is not two
    assert two.execute("SELECT current_setting('threads')").fetchone()[0] == 2
    assert one.execute("SELECT current_setting('threads')").fetchone()[0] == 1


@pytest.mark.parametrize("size_mb, max_cores, threads, one_host_mb, operation, one", [
    (10, 1, 2, 256, "mean", True),  # under KERNEL_ONE_TASK_MB: always one task
    (160, 2, 2, 256, "mean", True),  # the job's cores cover the cluster: one task on them
    (160, 4, 2, 256, "mean", True),
    (160, 1, 2, 256, "mean", False),  # one core of two: its fragments spread over both
    (160, 2, 2, 0, "mean", False),  # not one host (an external cluster), or turned off
    (300, 2, 2, 256, "mean", False),  # too big: fragments, and progress while they run
    (160, 2, 2, 256, "nunique", False),  # a bucketed merge keeps its fragments
    (160, 2, 0, 256, "mean", False),  # no worker yet: nothing to cover
])
def test_one_task_covers_the_cluster_on_one_host(size_mb: int, max_cores: float, threads: int, one_host_mb: int,
                                                 operation: str, one: bool) -> None:
    from app.runner import Attempt, one_task

    op = get("aggregate")
    schema = {"k": "object", "x": "float64"}
    plan = op.plan(op.parse({"column": "x", "operation": operation, "group_by": "k"}, schema), schema)
    attempt = Attempt("job_x", 1, "aggregate", {}, "NORMAL", {}, ("", "parquet", {}), Path("."), 10,
                      one_task_bytes=32_000_000, one_host_bytes=one_host_mb * 1_000_000, max_cores=max_cores,
                      threads=threads)
    assert one_task(size_mb * 1_000_000, plan, attempt) is one


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_correlation_sums_give_way_to_welford_far_from_zero(tmp_path: Path, fmt: str) -> None:
    # plain sums lose a variance far from zero for its spread (1e6 + N(0, 1): sum of squares
    # ~1e12 times the centred one, so ~1e-3 off) and call a constant column's variance
    # rounding noise: such fragments take DuckDB's Welford aggregates, and every result
    # equals pandas' (to 1e-7: values near 1e6 carry ~1e-10 of rounding themselves)
    rng = np.random.default_rng(3)
    rows = 500
    frame = pd.DataFrame({"near": rng.normal(0, 1, rows), "far": 1e6 + rng.normal(0, 1, rows),
                          "const": np.full(rows, 7.25), "mixed": rng.normal(5, 2, rows)})
    frame["far"] += frame["near"] * 0.5  # correlated, so an error shows in r
    frame.loc[frame.index % 7 == 0, "mixed"] = np.nan
    write(frame, tmp_path / "data", fmt, parts=3)
    for columns in (["near", "far", "mixed"], ["near", "const", "mixed"]):
        expected = pd.concat([frame, frame.iloc[:1]])[columns].corr().to_numpy()  # write() adds the first row again
        one, tree, _ = both_paths("correlation", {"columns": columns}, tmp_path / "data", fmt)
        for got in (one, tree):
            np.testing.assert_allclose(np.array(got["matrix"], dtype=float), expected, rtol=1e-7, atol=1e-10)
    from app.operations.correlation import ILL_CONDITIONED, _sums

    con = kernels.connection(1).cursor()
    con.execute("CREATE TEMP VIEW frag AS SELECT * FROM (VALUES (1e9 + 1.0), (1e9 - 1.0), (1e9)) t(x)")
    assert _sums(kernels.Source(con), ["x"], []) is None  # ill-conditioned: 1e18 > 1e3 * 2
    con.execute("CREATE OR REPLACE TEMP VIEW frag AS SELECT * FROM (VALUES (1.0), (-1.0), (0.5)) t(x)")
    assert _sums(kernels.Source(con), ["x"], []) is not None and ILL_CONDITIONED >= 100


@pytest.mark.parametrize("values", [[0.0, 3.5, 7.0, 7.0, 9.5, -1.0], [7.0, 7.0], [7.0, 8.0, 8.5], [float("inf"), -float("inf"), 1.0]])
def test_histogram_counts_the_last_edge_and_nothing_past_it(values: list[float]) -> None:
    # the group just past the last bin holds the last edge itself (counted, as numpy does) and
    # values beyond it (not counted); infinities are out of every bin
    from app.operations import histogram

    cur = kernels.connection().cursor()
    cur.execute("CREATE TEMP TABLE vals (x DOUBLE)")
    cur.executemany("INSERT INTO vals VALUES (?)", [[v] for v in values])
    cur.execute("CREATE TEMP VIEW frag AS SELECT x FROM vals")
    edges = np.histogram_bin_edges(np.empty(0), bins=7, range=(0.0, 7.0))
    counts, low, high = histogram._bin_counts(kernels.Source(cur), {"column": "x", "edges": edges.tolist()})
    assert counts.tolist() == np.histogram(np.asarray(values), bins=edges)[0].tolist()
    assert (low, high) == (min(values), max(values))
    cur.close()


def test_parquet_footers_are_read_again_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # footers are kept per (path, size, mtime): a file rewritten in place gets its new row groups
    monkeypatch.setattr(kernels, "FRAGMENT_ROWS", 10)
    path = tmp_path / "f.parquet"
    frame = pd.DataFrame({"x": np.arange(40.0)})
    pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=20)
    before = kernels.fragments([str(path)], "parquet", {}, {"x": "float64"})
    assert [f.row_groups for f in before] == [(0,), (1,)]
    assert kernels.fragments([str(path)], "parquet", {}, {"x": "float64"}) == before  # from the kept footer
    pq.write_table(pa.Table.from_pandas(pd.concat([frame, frame])), path, row_group_size=10)
    after = kernels.fragments([str(path)], "parquet", {}, {"x": "float64"})
    assert [f.row_groups for f in after] == [(i,) for i in range(8)]


def test_written_files_keep_dictionaries_for_text_only(tmp_path: Path) -> None:
    # a float column of distinct values made pyarrow build a dictionary and give it up: half
    # of a filter's write time
    write(make_frame(), tmp_path / "data", "parquet", parts=1)
    op = get("filter")
    schema = {c["name"]: c["dtype"] for c in readers.inspect(str(tmp_path / "data" / "*"), "parquet", {})["schema"]}
    p = op.parse({"conditions": [{"column": "count", "op": ">", "value": 2}]}, schema)
    frag = kernels.fragments(readers.list_files(str(tmp_path / "data" / "*"), "parquet"), "parquet", {}, schema)[0]
    out = str(tmp_path / "out.parquet")
    assert kernels.write_fragment(frag, op.plan(p, schema), out) == pq.read_metadata(out).num_rows > 0
    group = pq.read_metadata(out).row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["gene_id"])
    assert not any("DICTIONARY" in e for e in encodings["expression_level"])
