"""Small whole Parquet files are bundled into one task (one DuckDB scan over several
files), and a bundle gives what the files one by one give; a big JSON-lines file is
read in byte ranges, and the ranges give what the whole file gives."""
from __future__ import annotations

from pathlib import Path

import dask
import pytest

from app import json_text, kernels, readers, task_graph
from app.operations import get
from tests.test_kernels import HOSTILE, both_paths, close, make_frame, write

CASES = [
    ("aggregate", {"column": "expression_level", "operation": "std", "group_by": "gene_id"}),
    ("aggregate", {"column": "count", "operation": "mean"}),
    ("aggregate", {"column": "expression_level", "operation": "min"}),
    ("aggregate", {"column": HOSTILE, "operation": "var"}),
    ("aggregate", {"column": "expression_level", "operation": "median", "group_by": ["gene_id", "condition"]}),
    ("value_counts", {"column": "gene_id", "top": 3}),
    ("validate", {}),
]


def test_files_are_bundled_by_an_equal_share_of_rows(tmp_path: Path) -> None:
    files = write(make_frame(rows=1200), tmp_path, "parquet", parts=12)
    schema = {c["name"]: c["dtype"] for c in readers.inspect(str(tmp_path / "*"), "parquet", {})["schema"]}
    alone = kernels.fragments(files, "parquet", {}, schema)
    assert len(alone) == len(files) and not any(f.more for f in alone)
    kernels_min = kernels.MIN_BUNDLE_ROWS
    try:
        kernels.MIN_BUNDLE_ROWS = 1  # bundle these small files by share alone
        bundled = kernels.fragments(files, "parquet", {}, schema, threads=2)
    finally:
        kernels.MIN_BUNDLE_ROWS = kernels_min
    covered = [p for f in bundled for p in (f.path, *f.more)]
    assert covered == files  # every file once, in order
    assert kernels.TASKS_PER_THREAD * 2 <= len(bundled) < len(files)
    # the default floor keeps tiny datasets in one bundle
    assert len(kernels.fragments(files, "parquet", {}, schema, threads=2)) == 1


@pytest.mark.parametrize("op_name,params", CASES, ids=[f"{o}-{i}" for i, (o, _) in enumerate(CASES)])
def test_a_bundle_gives_what_its_files_give(tmp_path: Path, op_name: str, params: dict) -> None:
    files = write(make_frame(rows=900, seed=3), tmp_path, "parquet", parts=9)
    schema = {c["name"]: c["dtype"] for c in readers.inspect(str(tmp_path / "*"), "parquet", {})["schema"]}
    op = get(op_name)
    p = op.parse(params, schema)
    plan = op.plan(p, schema)
    one_by_one = task_graph.graph(kernels.fragments(files, "parquet", {}, schema), plan, small=False)
    kernels_min = kernels.MIN_BUNDLE_ROWS
    try:
        kernels.MIN_BUNDLE_ROWS = 1
        frags = kernels.fragments(files, "parquet", {}, schema, threads=2)
    finally:
        kernels.MIN_BUNDLE_ROWS = kernels_min
    assert any(f.more for f in frags)
    bundled = task_graph.graph(frags, plan, small=False)
    a, b = dask.compute(one_by_one, bundled, scheduler="sync")
    assert close(op.finalize(a, p), op.finalize(b, p))


def test_a_big_json_lines_file_splits_into_byte_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "JSON_RANGE", 3_000)
    frame = make_frame(2000)
    folder = tmp_path / "big"
    folder.mkdir()
    frame.to_json(folder / "one.jsonl", orient="records", lines=True)
    frags = kernels.fragments([str(folder / "one.jsonl")], "json", {}, {c: "float64" for c in frame})
    assert len(frags) > 10 and all(f.length for f in frags)
    for params in ({"column": "expression_level", "operation": "mean", "group_by": "gene_id"},
                   {"column": "count", "operation": "median"}, {"column": "empty", "operation": "count"}):
        one, tree, reference = both_paths("aggregate", params, folder, "json")
        assert close(one, reference) and close(tree, reference), params


@pytest.mark.parametrize("ending", ["", "\n"])
def test_one_deep_line_among_flat_ones_is_still_found(ending: str) -> None:
    flat = b'{"a": 1}\n' * 1000
    deep = b'{"a": ' + b"[" * (json_text.MAX_JSON_DEPTH + 5) + b"]" * (json_text.MAX_JSON_DEPTH + 5) + b"}"
    assert json_text.openers_per_line(flat) <= 1
    data = flat + deep + ending.encode()
    assert json_text.openers_per_line(data) == json_text.MAX_JSON_DEPTH + 6
    assert json_text.openers_per_line(b'{"a": 1}\n' + deep + b"\n" + flat) == json_text.MAX_JSON_DEPTH + 6


@pytest.mark.parametrize("text,where", [('{"x": 1.5}\n{"x": "oops"}\n', "line 2"), ('{"x": 1.5}\n{"x": 2\n', "Malformed JSON")])
def test_a_bad_json_line_names_the_file_and_the_line(tmp_path: Path, text: str, where: str) -> None:
    from app.errors import Unprocessable

    path = tmp_path / "a.jsonl"
    path.write_text(text)
    op = get("aggregate")
    p = op.parse({"column": "x", "operation": "mean"}, {"x": "float64"})
    (frag,) = kernels.fragments([str(path)], "json", {}, {"x": "float64"}, threads=2)
    with pytest.raises(Unprocessable) as info:
        kernels.run_fragment(frag, op.plan(p, {"x": "float64"}))
    message = info.value.message
    assert str(path) in message and where in message and "DUCKDB_INTERNAL" not in message, message


def test_json_nested_deeper_than_duckdb_reads_is_a_data_error(tmp_path: Path) -> None:
    from app.errors import Unprocessable

    path = tmp_path / "deep.jsonl"
    path.write_text('{"x": 1.5}\n{"x": 2, "y": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    op = get("aggregate")
    p = op.parse({"column": "x", "operation": "mean"}, {"x": "float64"})
    (frag,) = kernels.fragments([str(path)], "json", {}, {"x": "float64"}, threads=2)
    with pytest.raises(Unprocessable, match="depth"):
        kernels.run_fragment(frag, op.plan(p, {"x": "float64"}))
