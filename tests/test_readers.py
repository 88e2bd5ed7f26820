"""Data readers: path checks, format detection, inspect, preview and chunked reads."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import dask
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import json_text, readers
from app.errors import Forbidden, InvalidRequest, NotFound, Unprocessable
from app.readers import detect_format, inspect, preview, read_ddf, resolve_local


@pytest.fixture(autouse=True)
def threaded_dask():
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def sample_frame(rows: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    level = rng.lognormal(size=rows)
    level[::7] = np.nan
    return pd.DataFrame({
        "gene_id": [f"GENE{i % 13:05d}" for i in range(rows)],
        "count": rng.integers(0, 1000, rows),
        "level": level,
        "flag": rng.random(rows) > 0.5,
    })


def schema_of(frame: pd.DataFrame) -> list[dict[str, str]]:
    return [{"name": str(c), "dtype": str(t)} for c, t in frame.dtypes.items()]


def plain(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records as pandas reads them, with NaN as None and numpy scalars as Python."""
    out = []
    for row in frame.to_dict("records"):
        out.append({k: None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
                    for k, v in row.items()})
    return out


# --------------------------------------------------------------------------- paths

def test_resolve_inside_root_returns_real_path(root: Path) -> None:
    (root / "a.csv").write_text("x\n1\n")
    assert resolve_local(str(root / "a.csv"), [root]) == (root / "a.csv").resolve()
    assert resolve_local("a.csv", [root]) == (root / "a.csv").resolve()  # relative to the root


def test_dotdot_traversal_is_forbidden(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("x\n1\n")
    with pytest.raises(Forbidden, match="outside the allowed data roots"):
        resolve_local(str(root / ".." / "secret.csv"), [root])
    with pytest.raises(Forbidden):
        resolve_local("../secret.csv", [root])
    with pytest.raises(Forbidden):
        resolve_local(str(root / ".." / "etc"), [root])
    with pytest.raises(Forbidden):
        resolve_local("/etc/passwd", [root])


def test_symlink_escape_is_forbidden(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n1\n")
    (root / "link.csv").symlink_to(secret)
    with pytest.raises(Forbidden):
        resolve_local(str(root / "link.csv"), [root])
    (root / "ok.csv").write_text("x\n1\n")
    with pytest.raises(Forbidden):  # the glob's base is fine, one match leads outside
        resolve_local(str(root / "*.csv"), [root])


def test_symlink_inside_a_directory_is_checked(root: Path, tmp_path: Path) -> None:
    (root / "ds").mkdir()
    (tmp_path / "outside").mkdir()
    (root / "ds" / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(Forbidden):
        resolve_local(str(root / "ds"), [root])


def test_symlink_within_root_is_allowed(root: Path) -> None:
    (root / "real.csv").write_text("x\n1\n")
    (root / "alias.csv").symlink_to(root / "real.csv")
    assert resolve_local(str(root / "alias.csv"), [root]) == (root / "real.csv").resolve()


def test_glob_keeps_pattern_and_refuses_dotdot_after_wildcard(root: Path) -> None:
    (root / "a.csv").write_text("x\n1\n")
    assert resolve_local(str(root / "*.csv"), [root]) == root.resolve() / "*.csv"
    with pytest.raises(Forbidden):
        resolve_local(str(root / "*" / ".." / ".." / "*.csv"), [root])
    with pytest.raises(Forbidden):
        resolve_local(str(root / ".." / "*.csv"), [root])


def test_missing_and_bad_paths(root: Path) -> None:
    with pytest.raises(NotFound):
        resolve_local(str(root / "nope.csv"), [root])
    with pytest.raises(InvalidRequest):
        resolve_local("", [root])
    with pytest.raises(InvalidRequest):
        resolve_local("a\x00b", [root])
    with pytest.raises(Forbidden):
        resolve_local(str(root / "a.csv"), [])


def test_urls() -> None:
    assert readers.is_url("s3://bucket/key.csv")
    assert readers.is_url("https://example.org/a.csv")
    assert not readers.is_url("/data/a.csv")
    assert not readers.is_url("data/a.csv")
    assert readers.check_url("memory://bucket/a.csv") == "memory://bucket/a.csv"
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidRequest, match="s3fs"):
            readers.check_url("s3://bucket/key.csv")
    with pytest.raises(InvalidRequest, match="unknown URL protocol"):
        readers.check_url("bogus://x/y")
    with pytest.raises(Forbidden):
        readers.check_url("file:///etc/passwd")
    with pytest.raises(Forbidden):
        readers.check_url("zip://passwd::file:///etc/archive.zip")


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/a.csv", "https://localhost:8001/a.csv", "https://[0:0:0:0:0:0:0:1]/a.csv",
    "https://169.254.169.254/latest/meta-data/a.csv", "https://10.0.0.7/a.csv", "https://192.168.1.2/a.csv",
    "https://2130706433/a.csv", "https://0x7f.1/a.csv", "https://0.0.0.0/a.csv", "https://[fe80:0:0:0:0:0:0:1]/a.csv",
])
def test_urls_to_private_hosts_are_refused(url):
    """Server-side request forgery: a dataset URL may not point into the server's own network."""
    policy = readers.RemotePolicy(("https",))
    with pytest.raises(Forbidden, match="not a public address"):
        readers.check_url(url, policy)
    assert readers.check_url(url, readers.RemotePolicy(("https",), allow_private=True)) == url


def test_remote_protocols_follow_the_allow_list():
    with pytest.raises(Forbidden, match="remote sources are disabled"):
        readers.check_url("s3://bucket/a.csv", readers.RemotePolicy(()))
    for url in ("dask://127.0.0.1:8786/a.csv", "ftp://127.0.0.1/a.csv", "memory://x/a.csv", "http://example.org/a.csv"):
        with pytest.raises(Forbidden, match="not an allowed remote protocol"):
            readers.check_url(url, readers.RemotePolicy(("s3", "https")))
    with pytest.raises(Forbidden):  # the local-disk protocols stay refused even when listed
        readers.check_url("file:///etc/passwd", readers.RemotePolicy(("file",)))
    assert readers.check_url("memory://x/a.csv", readers.RemotePolicy(("memory",))) == "memory://x/a.csv"
    with pytest.raises(Forbidden):  # "::" (an abbreviated IPv6 host, or a chain of filesystems)
        readers.check_url("https://[::1]/a.csv", readers.RemotePolicy(("https",), allow_private=True))
    with pytest.raises(InvalidRequest, match="no host"):
        readers.check_url("https:///a.csv", readers.RemotePolicy(("https",)))


def test_settings_parse_the_remote_policy():
    from app.settings import Settings
    default = Settings.from_env({})
    assert "https" in default.remote_protocols and "http" not in default.remote_protocols
    assert not default.remote_allow_private
    assert Settings.from_env({"REMOTE_PROTOCOLS": ""}).remote_protocols == ()
    assert Settings.from_env({"REMOTE_PROTOCOLS": "s3, https"}).remote_protocols == ("s3", "https")


# --------------------------------------------------------------------------- formats

@pytest.mark.parametrize("name, fmt", [
    ("a.csv", "csv"), ("a.TSV", "csv"), ("a.csv.gz", "csv"), ("a.parquet", "parquet"),
    ("a.pq", "parquet"), ("a.json", "json"), ("a.jsonl", "json"), ("a.ndjson", "json"),
    ("dir/*.csv", "csv"), ("s3://b/k.snappy.parquet", "parquet"),
])
def test_detect_format_by_name(name: str, fmt: str) -> None:
    assert detect_format(name, None) == fmt


def test_detect_format_override_directory_and_unknown(root: Path) -> None:
    assert detect_format("data.txt", "TSV") == "csv"
    assert detect_format("data.txt", "ndjson") == "json"
    (root / "ds").mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(root / "ds" / "part-0.parquet")
    (root / "ds" / "_SUCCESS").write_text("")
    assert detect_format(str(root / "ds"), None) == "parquet"
    with pytest.raises(InvalidRequest, match="csv, parquet, json"):
        detect_format("data.xlsx", None)
    with pytest.raises(InvalidRequest, match="csv, parquet, json"):
        detect_format("data.csv", "excel")


def test_list_files_sorted_and_not_found(root: Path) -> None:
    for name in ("b.csv", "a.csv", "c.csv"):
        (root / name).write_text("x\n1\n")
    assert readers.list_files(str(root / "*.csv"), "csv") == [str(root / n) for n in
                                                              ("a.csv", "b.csv", "c.csv")]
    with pytest.raises(NotFound):
        readers.list_files(str(root / "*.json"), "json")
    with pytest.raises(NotFound):
        readers.list_files(str(root / "missing.csv"), "csv")


# --------------------------------------------------------------------------- inspect and preview

def test_inspect_csv_matches_pandas(root: Path) -> None:
    path = root / "genes.csv"
    sample_frame(50).to_csv(path, index=False)
    info = inspect(str(path), "csv", {})
    expected = pd.read_csv(path)
    assert info["format"] == "csv"
    assert info["files"] == [str(path)] and info["file_count"] == 1
    assert info["size_bytes"] == path.stat().st_size
    assert info["schema"] == schema_of(expected)
    assert [c["dtype"] for c in info["schema"]] == ["object", "int64", "float64", "bool"]
    assert info["estimated_rows"] == 50  # the whole file fits in the sample
    assert preview(str(path), "csv", {}, n=10) == plain(expected.head(10))


def test_inspect_tsv_uses_tab(root: Path) -> None:
    path = root / "genes.tsv"
    sample_frame(30).to_csv(path, index=False, sep="\t")
    info = inspect(str(path), "csv", {})
    expected = pd.read_csv(path, sep="\t")
    assert info["schema"] == schema_of(expected)
    assert preview(str(path), "csv", {}, n=5) == plain(expected.head(5))


def test_inspect_csv_glob_of_many_files(root: Path) -> None:
    frames = [sample_frame(12, seed=i) for i in range(5)]
    for i, frame in enumerate(frames):
        frame.to_csv(root / f"part-{i}.csv", index=False)
    (root / "notes.txt").write_text("not data")
    info = inspect(str(root / "*.csv"), "csv", {})
    assert info["file_count"] == 5
    assert info["files"] == sorted(str(root / f"part-{i}.csv") for i in range(5))
    assert info["estimated_rows"] == 60
    expected = pd.concat([pd.read_csv(root / f"part-{i}.csv") for i in range(2)], ignore_index=True)
    assert preview(str(root / "*.csv"), "csv", {}, n=20) == plain(expected.head(20))


def test_csv_row_estimate_on_a_few_mb(root: Path) -> None:
    rng = np.random.default_rng(1)
    rows = 120_000
    frame = pd.DataFrame({"gene_id": [f"GENE{i % 2000:05d}" for i in range(rows)],
                          "level": rng.lognormal(size=rows), "count": rng.integers(0, 10**6, rows)})
    path = root / "big.csv"
    frame.to_csv(path, index=False)
    assert path.stat().st_size > readers.SAMPLE_BYTES  # so the count really is estimated
    info = inspect(str(path), "csv", {})
    assert abs(info["estimated_rows"] - rows) <= 0.2 * rows
    with gzip.open(root / "big.csv.gz", "wb", compresslevel=1) as f:
        f.write(path.read_bytes())
    info = inspect(str(root / "big.csv.gz"), "csv", {})
    assert abs(info["estimated_rows"] - rows) <= 0.2 * rows
    assert info["schema"] == schema_of(frame)


def parquet_frame(rows: int = 40) -> pd.DataFrame:
    frame = sample_frame(rows)
    frame["when"] = pd.date_range("2024-01-01", periods=rows, freq="h")
    return frame


def test_inspect_parquet_file_exact_rows(root: Path) -> None:
    path = root / "genes.parquet"
    parquet_frame(40).to_parquet(path, index=False, row_group_size=10)
    info = inspect(str(path), "parquet", {})
    expected = pd.read_parquet(path)
    assert info["estimated_rows"] == 40
    assert info["schema"] == schema_of(expected)
    assert "datetime64[ns]" in [c["dtype"] for c in info["schema"]]
    records = preview(str(path), "parquet", {}, n=3)
    assert records[0]["when"] == "2024-01-01T00:00:00"
    assert [{k: v for k, v in r.items() if k != "when"} for r in records] == \
        plain(expected.drop(columns="when").head(3))


def test_inspect_parquet_directory(root: Path) -> None:
    ds = root / "ds"
    ds.mkdir()
    for i in range(3):
        parquet_frame(10 + i).to_parquet(ds / f"part-{i}.parquet", index=False)
    (ds / "_SUCCESS").write_text("")
    info = inspect(str(ds), "parquet", {})
    assert info["file_count"] == 3 and info["estimated_rows"] == 33
    assert info["schema"] == schema_of(pd.read_parquet(ds / "part-0.parquet"))
    assert info["size_bytes"] == sum((ds / f"part-{i}.parquet").stat().st_size for i in range(3))


def test_inspect_json_lines(root: Path) -> None:
    path = root / "genes.jsonl"
    sample_frame(25).to_json(path, orient="records", lines=True)
    info = inspect(str(path), "json", {})
    expected = pd.read_json(path, lines=True, precise_float=True)
    assert info["schema"] == schema_of(expected)
    assert info["estimated_rows"] == 25
    assert preview(str(path), "json", {}, n=6) == plain(expected.head(6))


def test_inspect_json_array(root: Path) -> None:
    path = root / "genes.json"
    frame = sample_frame(15)
    path.write_text(json.dumps(plain(frame), indent=1))
    info = inspect(str(path), "json", {})
    expected = pd.read_json(path, precise_float=True)
    assert info["schema"] == schema_of(expected)
    assert info["estimated_rows"] == 15
    assert preview(str(path), "json", {}) == plain(expected)


def test_json_array_over_the_limit(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = root / "big.json"
    path.write_text(json.dumps([{"x": i} for i in range(100)]))
    monkeypatch.setattr(json_text, "JSON_ARRAY_MAX_BYTES", 100)
    with pytest.raises(InvalidRequest, match="JSON lines or Parquet"):
        inspect(str(path), "json", {})


def test_reader_options(root: Path) -> None:
    path = root / "semi.csv"
    path.write_text("1;2.5;a\n3;4.5;b\n")
    info = inspect(str(path), "csv", {"delimiter": ";", "header": False})
    assert [c["name"] for c in info["schema"]] == ["column_1", "column_2", "column_3"]
    assert preview(str(path), "csv", {"delimiter": ";", "header": False}, n=1) == \
        [{"column_1": 1, "column_2": 2.5, "column_3": "a"}]
    latin = root / "latin.csv"
    latin.write_bytes("name,n\nJosé,1\n".encode("latin-1"))
    assert preview(str(latin), "csv", {"encoding": "latin-1"}) == [{"name": "José", "n": 1}]
    subset = inspect(str(path), "csv", {"delimiter": ";", "header": False, "columns": ["column_3"]})
    assert subset["schema"] == [{"name": "column_3", "dtype": "object"}]
    ddf = read_ddf(str(path), "csv", {"delimiter": ";", "header": False})
    assert list(ddf.columns) == ["column_1", "column_2", "column_3"]
    assert ddf["column_1"].sum().compute() == 4
    names = read_ddf(str(latin), "csv", {"encoding": "latin-1"})["name"].compute()
    assert names.tolist() == ["José"]


@pytest.mark.parametrize("options, message", [
    ({"sep": ","}, "unknown reader option"),
    ({"delimiter": ",,"}, "single character"),
    ({"header": "yes"}, "true or false"),
    ({"encoding": "klingon"}, "unknown encoding"),
    ({"encoding": "rot13"}, "not a text encoding"),
    ({"encoding": "base64"}, "not a text encoding"),
    ({"encoding": 8}, "name of a text encoding"),
    ({"columns": []}, "non-empty list"),
    ({"columns": ["nope"]}, "unknown column"),
])
def test_bad_csv_options(root: Path, options: dict[str, Any], message: str) -> None:
    (root / "a.csv").write_text("x,y\n1,2\n")
    with pytest.raises(InvalidRequest, match=message):
        inspect(str(root / "a.csv"), "csv", options)


def test_csv_options_refused_for_parquet(root: Path) -> None:
    parquet_frame(5).to_parquet(root / "a.parquet")
    with pytest.raises(InvalidRequest, match="csv only"):
        inspect(str(root / "a.parquet"), "parquet", {"delimiter": ";"})
    with pytest.raises(InvalidRequest, match="unknown column"):
        inspect(str(root / "a.parquet"), "parquet", {"columns": ["nope"]})
    info = inspect(str(root / "a.parquet"), "parquet", {"columns": ["level", "gene_id"]})
    assert [c["name"] for c in info["schema"]] == ["level", "gene_id"]


# --------------------------------------------------------------------------- unreadable input

def test_corrupt_parquet_is_unprocessable(root: Path) -> None:
    path = root / "bad.parquet"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(Unprocessable, match="Parquet") as err:
        inspect(str(path), "parquet", {})
    assert "magic" in err.value.message.lower()  # the reader's own message is passed on
    with pytest.raises(Unprocessable):
        read_ddf(str(path), "parquet", {})


def test_empty_and_header_only_csv_are_unprocessable(root: Path) -> None:
    (root / "empty.csv").write_bytes(b"")
    with pytest.raises(Unprocessable, match="No columns to parse"):
        inspect(str(root / "empty.csv"), "csv", {})
    (root / "header.csv").write_text("a,b\n")
    with pytest.raises(Unprocessable, match="no rows"):
        inspect(str(root / "header.csv"), "csv", {})
    with pytest.raises(Unprocessable):
        read_ddf(str(root / "empty.csv"), "csv", {})


def test_malformed_csv_is_unprocessable(root: Path) -> None:
    (root / "ragged.csv").write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(Unprocessable, match="Expected 2 fields"):
        inspect(str(root / "ragged.csv"), "csv", {})


@pytest.mark.parametrize("content, message", [
    (b'{"a": 1}\n{"a": \n', "JSON"),
    (b"[1, 2, 3]", "array of objects"),
    (b'[{"a": 1},', "JSON"),
    (b"hello", "neither JSON lines nor"),
    (b"", "empty"),
])
def test_malformed_json_is_unprocessable(root: Path, content: bytes, message: str) -> None:
    (root / "bad.json").write_bytes(content)
    with pytest.raises(Unprocessable, match=message):
        inspect(str(root / "bad.json"), "json", {})


# --------------------------------------------------------------------------- chunked reads

def test_read_csv_in_blocks_equals_pandas(root: Path) -> None:
    frame = sample_frame(20_000)
    frame.iloc[:10_000].to_csv(root / "p0.csv", index=False)
    frame.iloc[10_000:].to_csv(root / "p1.csv", index=False)
    ddf = read_ddf(str(root / "p*.csv"), "csv", {}, blocksize=100_000)
    assert ddf.npartitions > 4
    assert len(ddf) == len(frame)
    assert ddf["count"].sum().compute() == frame["count"].sum()
    assert ddf["level"].sum().compute() == pytest.approx(frame["level"].sum())
    assert list(read_ddf(str(root / "p*.csv"), "csv", {}, columns=["level"]).columns) == ["level"]
    with pytest.raises(InvalidRequest, match="unknown column"):
        read_ddf(str(root / "p*.csv"), "csv", {}, columns=["nope"])


def test_read_gzipped_tsv(root: Path) -> None:
    frame = sample_frame(500)
    frame.to_csv(root / "a.tsv.gz", index=False, sep="\t")
    ddf = read_ddf(str(root / "a.tsv.gz"), "csv", {})
    assert ddf["count"].sum().compute() == frame["count"].sum()


def test_read_single_parquet_file_is_split_by_row_groups(root: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(200_000, dtype="int64"), "y": np.ones(200_000)})
    frame.to_parquet(root / "one.parquet", index=False, row_group_size=20_000)
    ddf = read_ddf(str(root / "one.parquet"), "parquet", {}, blocksize="400kB")
    assert ddf.npartitions > 1
    assert ddf["x"].sum().compute() == frame["x"].sum()
    assert list(read_ddf(str(root / "one.parquet"), "parquet", {}, columns=["y"]).columns) == ["y"]


def test_read_json_lines_in_blocks_and_arrays(root: Path) -> None:
    frame = sample_frame(5_000)
    frame.to_json(root / "a.jsonl", orient="records", lines=True)
    ddf = read_ddf(str(root / "a.jsonl"), "json", {}, blocksize=50_000)
    assert ddf.npartitions > 3
    result = ddf.compute()
    assert len(result) == len(frame)
    assert result["count"].tolist() == frame["count"].tolist()
    (root / "b.json").write_text(json.dumps(plain(frame.head(100))))
    arr = read_ddf(str(root / "b.json"), "json", {}, columns=["count", "flag"]).compute()
    assert list(arr.columns) == ["count", "flag"]
    assert arr["count"].tolist() == frame["count"].head(100).tolist()


def test_remote_url_through_fsspec() -> None:
    fs = fsspec.filesystem("memory")
    with fs.open("/dpc-test/genes.csv", "wb") as f:
        f.write(sample_frame(30).to_csv(index=False).encode())
    try:
        info = inspect("memory://dpc-test/*.csv", "csv", {})
        assert info["estimated_rows"] == 30 and info["files"][0].startswith("memory://")
        assert len(read_ddf("memory://dpc-test/genes.csv", "csv", {})) == 30
    finally:
        fs.rm("/dpc-test", recursive=True)


def test_json_value_conversions() -> None:
    frame = pd.DataFrame({
        "f": [1.5, np.nan], "i": np.array([1, 2], dtype="int64"),
        "t": [pd.Timestamp("2024-05-01 12:30"), pd.NaT], "s": ["a", None],
        "b": [True, False],
    })
    assert readers.records(frame) == [
        {"f": 1.5, "i": 1, "t": "2024-05-01T12:30:00", "s": "a", "b": True},
        {"f": None, "i": 2, "t": None, "s": None, "b": False},
    ]
    assert type(readers.records(frame)[0]["i"]) is int
    assert readers.json_value(np.float32(np.inf)) == "inf"
    assert readers.json_value(pa.scalar(1).as_py()) == 1
    assert readers.json_value(np.datetime64("2024-01-02")) == "2024-01-02T00:00:00"
    assert readers.json_value([np.int64(1), {"k": np.nan}]) == [1, {"k": None}]


def test_parquet_preview_honours_columns(root: Path) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    pq.write_table(table, root / "t.parquet")
    assert preview(str(root / "t.parquet"), "parquet", {"columns": ["b"]}, n=2) == \
        [{"b": "x"}, {"b": "y"}]
    with pytest.raises(InvalidRequest):
        preview(str(root / "t.parquet"), "parquet", {}, n=0)


# --------------------------------------------------------------------------- hostile input (issue 14, 15)

@pytest.mark.parametrize("text, depth", [
    (b"", 0), (b"1", 0), (b"[]", 1), (b'{"a": [1, {"b": [2]}]}', 4),
    (b'{"a": "[[[[{{{{"}', 1), (b'{"a": "x\\"[[[[", "b": [1]}', 2),  # brackets inside strings do not count
    (b'{"a": 1}\n{"b": [[2]]}\n', 3),
])
def test_json_depth_ignores_strings(text: bytes, depth: int) -> None:
    assert json_text.json_depth(text) == depth


@pytest.mark.parametrize("name, content, error, message", [
    ("lines.jsonl", b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n", Unprocessable, "50000 levels deep"),
    ("array.json", b"[" * 50_000 + b"]" * 50_000, Unprocessable, "too deeply"),
    ("record.json", b"[" + b'{"a":' * 100 + b"1" + b"}" * 100 + b"]", Unprocessable, "100 levels deep"),
])
def test_json_nested_too_deep_is_refused_before_parsing(root: Path, name: str, content: bytes,
                                                        error: type, message: str) -> None:
    (root / name).write_bytes(content)
    with pytest.raises(error, match=message):
        inspect(str(root / name), "json")
    with pytest.raises(error, match=message):
        read_ddf(str(root / name), "json").compute()


def test_json_at_the_depth_limit_and_strings_full_of_brackets_are_read(root: Path) -> None:
    deep = b'{"a":' * (json_text.MAX_JSON_DEPTH - 1) + b"[1]" + b"}" * (json_text.MAX_JSON_DEPTH - 1)
    (root / "ok.jsonl").write_bytes(deep + b"\n" + (b'{"a": null, "s": "' + b"[{" * 100 + b'"}\n') * 3)
    info = inspect(str(root / "ok.jsonl"), "json")
    assert [c["name"] for c in info["schema"]] == ["a", "s"] and info["estimated_rows"] == 4
    assert len(read_ddf(str(root / "ok.jsonl"), "json").compute()) == 4


def test_a_deep_block_found_by_a_worker_fails_clearly(root: Path) -> None:
    """Past the sampled head, the depth is still checked in every block a task reads."""
    ok = b'{"a": 1}\n' * (readers.PREVIEW_BYTES // 9 + 1000)  # past the head the plan samples
    (root / "late.jsonl").write_bytes(ok + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n")
    ddf = read_ddf(str(root / "late.jsonl"), "json", blocksize=2**18)  # the plan saw only plain lines
    with pytest.raises(Unprocessable, match="levels deep"):
        ddf.compute()


def test_long_and_managed_sources_are_refused(root: Path) -> None:
    managed = root / "managed"
    (managed / "demo").mkdir(parents=True)
    (managed / "demo" / "a.csv").write_text("x\n1\n")
    (root / "mine.csv").write_text("x\n1\n")
    with pytest.raises(InvalidRequest, match="at most 4096"):
        resolve_local("a" * 5000, [root])
    with pytest.raises(InvalidRequest, match="longer than the file system allows"):
        resolve_local("b" * 300, [root])
    for path in ["managed", "managed/demo/a.csv", "managed/*/*.csv", "*", "**/*.csv", "."]:
        with pytest.raises(Forbidden, match="managed data"):
            resolve_local(path, [root], excluded=[managed])
    assert resolve_local("mine.csv", [root], excluded=[managed]) == (root / "mine.csv").resolve()
    assert resolve_local("managed/demo/a.csv", [root]) == (managed / "demo" / "a.csv").resolve()
