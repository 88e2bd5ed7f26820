"""Partition planning and balanced Parquet rewriting, run on a real distributed client."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import Conflict, InvalidRequest, Unprocessable
from app.partition import MB, arrow_schema, plan_partitions, row_spans, write_partitions
from app.readers import read_ddf


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with Client(processes=False, n_workers=2, threads_per_worker=1,
                dashboard_address=None) as c:
        yield c


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "gene_id": [f"GENE{i % 97:05d}" for i in range(rows)],
        "count": rng.integers(0, 1000, rows),
        "level": rng.lognormal(size=rows),
    })


def assert_balanced(rows: list[int]) -> None:
    mean = sum(rows) / len(rows)
    assert all(abs(r - mean) <= 0.25 * mean for r in rows), rows


def read_back(files: list[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


# --------------------------------------------------------------------------- plan_partitions

@pytest.mark.parametrize("size, n, mb, expected", [
    (10 * MB, 7, None, 7),          # an explicit count wins
    (10 * MB, 7, 1.0, 7),           # ... even when a size is given too
    (10 * MB, None, 1.0, 10),
    (10 * MB + 1, None, 1.0, 11),   # ceil
    (1, None, 64.0, 1),
    (0, None, 64.0, 1),             # at least one
    (1000 * MB, None, None, 8),     # default 128 MB
    (5 * MB, None, 0.5, 10),
])
def test_plan_partitions_rule(size: int, n: int | None, mb: float | None, expected: int) -> None:
    assert plan_partitions(size, n, mb) == expected


@pytest.mark.parametrize("n, mb, message", [
    (0, None, "from 1 to 10000"),
    (-3, None, "from 1 to 10000"),
    (10_001, None, "from 1 to 10000"),
    (True, None, "from 1 to 10000"),
    (2.5, None, "from 1 to 10000"),
    (None, 0, "greater than 0"),
    (None, -1.0, "greater than 0"),
    (None, float("nan"), "greater than 0"),
    (None, 0.0001, "more than 10000"),
])
def test_plan_partitions_rejects_bad_values(n: object, mb: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan_partitions(10 * MB, n, mb)  # type: ignore[arg-type]


def test_plan_partitions_custom_maximum() -> None:
    assert plan_partitions(100, 5, None, max_partitions=5) == 5
    with pytest.raises(InvalidRequest, match="from 1 to 4"):
        plan_partitions(100, 5, None, max_partitions=4)


# --------------------------------------------------------------------------- write_partitions

def test_single_parquet_file_is_split_evenly(client: Client, tmp_path: Path) -> None:
    source = frame(10_001)
    source.to_parquet(tmp_path / "one.parquet", index=False)
    ddf = read_ddf(str(tmp_path / "one.parquet"), "parquet", {})
    assert ddf.npartitions == 1  # so all the balancing is done by write_partitions
    result = write_partitions(ddf, tmp_path / "out", 4)
    assert result["n_partitions"] == 4
    assert result["files"] == [str(tmp_path / "out" / f"part-{i:05d}.parquet") for i in range(4)]
    assert all(Path(f).exists() for f in result["files"])
    assert result["rows"] == len(source) == sum(result["partition_rows"])
    assert max(result["partition_rows"]) - min(result["partition_rows"]) <= 1
    assert_balanced(result["partition_bytes"])
    assert result["size_bytes"] == sum(Path(f).stat().st_size for f in result["files"])
    assert result["columns"] == ["gene_id", "count", "level"]
    back = read_back(result["files"])
    assert back["count"].sum() == source["count"].sum()
    assert back["level"].sum() == pytest.approx(source["level"].sum())
    pd.testing.assert_frame_equal(back, source, check_dtype=False)  # order is kept


def test_unbalanced_csv_input_is_rebalanced(client: Client, tmp_path: Path) -> None:
    sizes = [30, 4000, 5, 900, 2500]
    parts = [frame(n, seed=i) for i, n in enumerate(sizes)]
    for i, part in enumerate(parts):
        part.to_csv(tmp_path / f"in-{i}.csv", index=False)
    ddf = read_ddf(str(tmp_path / "in-*.csv"), "csv", {})
    assert ddf.npartitions == len(sizes)
    result = write_partitions(ddf, tmp_path / "out", 6)
    assert_balanced(result["partition_rows"])
    source = pd.concat(parts, ignore_index=True)
    assert result["rows"] == len(source)
    back = read_back(result["files"])
    assert back["count"].sum() == source["count"].sum()
    assert back["level"].sum() == pytest.approx(source["level"].sum())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_empty_input_partitions_and_more_partitions_than_rows(client: Client,
                                                              tmp_path: Path) -> None:
    source = frame(7)
    ddf = dd.concat([dd.from_pandas(source.iloc[:0], npartitions=1),
                     dd.from_pandas(source, npartitions=2),
                     dd.from_pandas(source.iloc[:0], npartitions=1)])
    result = write_partitions(ddf, tmp_path / "out", 3)
    assert result["partition_rows"] == [2, 3, 2]
    result = write_partitions(ddf, tmp_path / "many", 50)
    assert result["n_partitions"] == 7 and result["partition_rows"] == [1] * 7


def test_named_index_is_kept_as_a_column(client: Client, tmp_path: Path) -> None:
    source = frame(100).set_index("gene_id")
    result = write_partitions(dd.from_pandas(source, npartitions=3, sort=False),
                              tmp_path / "out", 2)
    assert "gene_id" in result["columns"]
    assert read_back(result["files"])["gene_id"].tolist() == source.index.tolist()


def test_refuses_non_empty_output_and_no_rows(client: Client, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    ddf = dd.from_pandas(frame(10), npartitions=2)
    with pytest.raises(Conflict):
        write_partitions(ddf, tmp_path / "out", 2)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(Unprocessable, match="no rows"):
        write_partitions(dd.from_pandas(frame(0), npartitions=1), tmp_path / "empty", 2)
    with pytest.raises(InvalidRequest):
        write_partitions(ddf, tmp_path / "zero", 0)
    (tmp_path / "ready").mkdir()  # an empty folder may be replaced
    assert write_partitions(ddf, tmp_path / "ready", 2)["rows"] == 10


def test_failure_leaves_nothing_behind(client: Client, tmp_path: Path) -> None:
    ddf = dd.from_pandas(frame(100), npartitions=4)
    seen = itertools.count()

    def fail_in_write_pass(df: pd.DataFrame) -> pd.DataFrame:
        # The row-counting pass sees each of the 4 partitions once; the write pass fails.
        if len(df) and next(seen) >= 4:
            raise RuntimeError("disk on fire")
        return df

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_partitions(ddf.map_partitions(fail_in_write_pass), tmp_path / "out", 2)
    assert next(seen) > 4  # the failure really happened while writing
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(1, 20))
def test_row_spans_cover_every_row_once_in_order(lengths, n):
    total = sum(lengths)
    n = max(1, min(n, total or 1))
    cuts = [round(k * total / n) for k in range(n + 1)]
    plans = row_spans(lengths, cuts)
    assert len(plans) == n
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    covered = [starts[i] + r for spans in plans for i, a, b in spans for r in range(a, b)]
    assert covered == list(range(total))
    for k, spans in enumerate(plans):
        assert sum(b - a for _, a, b in spans) == cuts[k + 1] - cuts[k]
        assert all(0 <= a < b <= lengths[i] for i, a, b in spans)
        assert [i for i, _, _ in spans] == sorted({i for i, _, _ in spans})


def test_each_file_is_written_slice_by_slice_as_row_groups(client: Client, tmp_path: Path) -> None:
    """An output file is appended to from each input partition in turn, not built whole."""
    parts = [frame(n, seed=i) for i, n in enumerate([400, 400, 400, 400, 400, 400])]
    for i, part in enumerate(parts):
        part.to_parquet(tmp_path / f"in-{i}.parquet", index=False)
    ddf = read_ddf(str(tmp_path / "in-*.parquet"), "parquet", {})
    assert ddf.npartitions == 6
    result = write_partitions(ddf, tmp_path / "out", 2)
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in result["files"]]
    assert groups == [3, 3]  # three input partitions per output file, one row group each
    pd.testing.assert_frame_equal(read_back(result["files"]), pd.concat(parts, ignore_index=True),
                                  check_dtype=False)
    schemas = {pq.read_schema(f).remove_metadata() for f in result["files"]}
    assert len(schemas) == 1  # every file has the one schema


def test_arrow_schema_gives_text_columns_one_string_type() -> None:
    meta = pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype="string[pyarrow]"),
                         "c": pd.Series([], dtype="float64")})
    schema = arrow_schema(meta)
    assert [schema.field(c).type for c in "abc"] == [pa.large_string(), pa.large_string(), pa.float64()]


def test_a_replaced_copy_stays_while_a_running_job_reads_it(tmp_path: Path) -> None:
    """Repartitioning retires the previous copy; it is removed once no attempt reads it."""
    from concurrent.futures import ThreadPoolExecutor

    from app.datasets import DatasetRegistry
    from app.settings import Settings
    from app.store import Store, utcnow

    settings = Settings.from_env({}, data_dir=tmp_path)
    store = Store(settings.db_path)
    with ThreadPoolExecutor(1) as pool:
        registry = DatasetRegistry(settings, store, pool)
        root = registry.partitions_root("genes")
        first, second, third = (root / name for name in ("job_a", "job_b", "job_c"))
        for path in (first, second, third):
            path.mkdir(parents=True)
            (path / "part-00000.parquet").write_bytes(b"x")
        store.insert_dataset({"dataset_id": "genes", "name": "genes", "description": "", "source": "x.csv",
                              "format": "csv", "options": {}, "schema": [], "files": [], "file_count": 1,
                              "size_bytes": 1, "estimated_rows": 1, "managed": 0, "created_at": utcnow(),
                              "partitions": {"path": str(first)}, "origin_job_id": None})

        registry.set_partitions("genes", {"path": str(second)}, in_use={str(first)})  # a job reads the first
        assert registry.read_source(registry.get("genes"))[0] == str(second)  # new jobs read the new copy
        pool.submit(lambda: None).result()
        assert first.exists()
        assert registry.release_retired({str(first)}) == []  # still read
        assert first.exists()
        assert registry.release_retired(set()) == [str(first)]  # that job ended
        pool.submit(lambda: None).result()  # the removal runs in the executor
        assert not first.exists() and second.exists()

        registry.set_partitions("genes", {"path": str(third)})  # nobody reads the second: removed at once
        pool.submit(lambda: None).result()
        assert not second.exists() and third.exists()
    store.close()


def test_the_row_count_runs_apart_and_the_writes_are_one_task_per_file(tmp_path: Path) -> None:
    """A partition job's progress counts its output files: the count phase goes to ``count``
    (annotated apart by the runner), and the write phase is exactly one task per file."""
    import dask

    ddf = dd.from_pandas(pd.DataFrame({"x": range(1000)}), npartitions=5)
    phases: list[int] = []

    def count(objs: list) -> list:
        phases.append(-len(objs))
        return dask.compute(*objs, scheduler="sync")

    def compute(objs: list) -> list:
        phases.append(len(dask.base.collections_to_expr(objs).__dask_graph__()))
        return dask.compute(*objs, scheduler="sync")

    info = write_partitions(ddf, tmp_path / "out", 4, compute, count)
    assert info["n_partitions"] == 4 and info["rows"] == 1000
    assert phases == [-1, 4], phases  # one count (of every input partition), then 4 writes
