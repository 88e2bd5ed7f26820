"""Datasets through the real API: register, upload, list, show, delete and partition.

Files are written into the server's data dir (an allowed root); every test uses its
own dataset ids because the ``server`` fixture is shared.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

from app.demo import generate_expression
from tests.helpers import error_of as shared_error_of
from tests.helpers import wait_job as shared_wait_job
from tests.server import ServerProcess

API = "/api/processing"
ERROR_KEYS = {"code", "message", "details", "request_id"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def table(rows: int = 600, seed: int = 7) -> pd.DataFrame:
    """The demo shape plus an integer column and some missing values."""
    frame = generate_expression(rows, seed)
    frame["count"] = np.arange(rows, dtype="int64") % 97
    frame.loc[frame.index[::11], "p_value"] = np.nan
    return frame


def pieces(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    cuts = np.linspace(0, len(frame), n + 1).round().astype(int)
    return [frame.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def folder(srv: ServerProcess, name: str) -> Path:
    path = srv.data_dir / "inputs" / new_id(name)
    path.mkdir(parents=True)
    return path


def register(srv: ServerProcess, source: Any, **body: Any) -> Any:
    return srv.post(f"{API}/datasets", {"source": str(source), **body})


def total(srv: ServerProcess) -> int:
    return srv.get(f"{API}/datasets?limit=1").json()["total"]


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The error object of a ``status`` answer, in the one error shape."""
    assert response.status_code == status, response.text
    error = shared_error_of(response)
    assert set(error) == ERROR_KEYS and error["message"]
    return error


def cells_equal(got: list[dict[str, Any]], expected: pd.DataFrame) -> None:
    """Preview records against pandas: same keys, strings equal, numbers to 1e-12."""
    assert len(got) == len(expected)
    for row, (_, want) in zip(got, expected.iterrows()):
        assert list(row) == [str(c) for c in expected.columns]
        for column, value in want.items():
            if pd.isna(value):
                assert row[column] is None, (column, row)
            elif isinstance(value, (float, np.floating)):
                assert row[column] == pytest.approx(float(value), rel=1e-12), (column, row)
            else:
                assert row[column] == (value.item() if hasattr(value, "item") else value), (column, row)


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A private server with a 1 MB upload limit, no partition wait, the cluster off, and
    http(s) sources from private hosts allowed (so a loopback web server can stand in)."""
    srv = ServerProcess(tmp_path_factory.mktemp("idle-server"), {
        "MAX_UPLOAD_MB": "1", "PARTITION_WAIT_S": "0", "CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0",
        "REMOTE_PROTOCOLS": "http,https", "REMOTE_ALLOW_PRIVATE": "1"})
    yield srv.start()
    srv.cleanup()


def wait_job(srv: ServerProcess, job_id: str) -> dict[str, Any]:
    status = shared_wait_job(srv, job_id, 60)
    assert status["status"] == "completed", status
    return status


def partition(srv: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    """Partition and return ``partition_info``, following the job if it answers 202."""
    r = srv.post(f"{API}/data/partition", body, timeout=120)
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        return wait_job(srv, r.json()["job_id"])["result"]
    return r.json()["partition_info"]


# --------------------------------------------------------------------------- registration

def _csv(out: Path, frame: pd.DataFrame) -> tuple[str, pd.DataFrame, list[Path]]:
    frame.to_csv(out / "data.csv", index=False)
    return "data.csv", pd.read_csv(out / "data.csv"), [out / "data.csv"]


def _csv_glob(out: Path, frame: pd.DataFrame) -> tuple[str, pd.DataFrame, list[Path]]:
    files = [out / f"part-{i}.csv" for i in range(3)]
    for path, chunk in zip(files, pieces(frame, 3)):
        chunk.to_csv(path, index=False)
    return "part-*.csv", pd.concat([pd.read_csv(f) for f in files], ignore_index=True), files


def _parquet_file(out: Path, frame: pd.DataFrame) -> tuple[str, pd.DataFrame, list[Path]]:
    frame.to_parquet(out / "data.parquet", index=False)
    return "data.parquet", pd.read_parquet(out / "data.parquet"), [out / "data.parquet"]


def _parquet_dir(out: Path, frame: pd.DataFrame) -> tuple[str, pd.DataFrame, list[Path]]:
    (out / "pq").mkdir()
    files = [out / "pq" / f"part-{i}.parquet" for i in range(4)]
    for path, chunk in zip(files, pieces(frame, 4)):
        chunk.to_parquet(path, index=False)
    return "pq", pd.read_parquet(out / "pq"), files


def _json_lines(out: Path, frame: pd.DataFrame) -> tuple[str, pd.DataFrame, list[Path]]:
    frame.to_json(out / "data.jsonl", orient="records", lines=True, double_precision=15)
    return "data.jsonl", pd.read_json(out / "data.jsonl", lines=True, precise_float=True), [out / "data.jsonl"]


def _json_array(out: Path, frame: pd.DataFrame) -> tuple[str, pd.DataFrame, list[Path]]:
    frame.to_json(out / "data.json", orient="records", double_precision=15)
    return "data.json", pd.read_json(out / "data.json", orient="records", precise_float=True), [out / "data.json"]


@pytest.mark.parametrize("write, fmt", [
    (_csv, "csv"), (_csv_glob, "csv"), (_parquet_file, "parquet"), (_parquet_dir, "parquet"),
    (_json_lines, "json"), (_json_array, "json"),
], ids=["csv", "csv-glob", "parquet-file", "parquet-dir", "json-lines", "json-array"])
def test_register_each_format_matches_pandas(server, write, fmt):
    out = folder(server, fmt)
    relative, expected, files = write(out, table())
    dataset_id = new_id(f"reg_{fmt}")
    r = register(server, out / relative, dataset_id=dataset_id, name="Measured expression")
    assert r.status_code == 201, r.text
    ds = r.json()["dataset"]
    assert (ds["dataset_id"], ds["name"], ds["format"], ds["managed"]) == (dataset_id, "Measured expression", fmt, False)

    shown = server.get(f"{API}/datasets/{dataset_id}?preview_rows=7").json()
    assert shown["schema"] == [{"name": str(c), "dtype": str(t)} for c, t in expected.dtypes.items()]
    assert shown["columns"] == list(expected.columns)
    assert shown["file_count"] == len(files)
    assert shown["size_bytes"] == sum(f.stat().st_size for f in files)
    assert shown["estimated_rows"] == len(expected)  # small files: counted exactly
    assert shown["partitioned"] is None
    cells_equal(shown["preview"], expected.head(7))


def test_register_options_and_format_override(server):
    out = folder(server, "semicolon")
    (out / "export.txt").write_text("gene;level\nA;1.5\nB;2.5\n")
    r = register(server, out / "export.txt", dataset_id=new_id("opts"), format="csv",
                 options={"delimiter": ";"})
    assert r.status_code == 201, r.text
    ds = r.json()["dataset"]
    assert ds["schema"] == [{"name": "gene", "dtype": "object"}, {"name": "level", "dtype": "float64"}]
    assert ds["name"] == ds["dataset_id"]  # no name given: the id
    shown = server.get(f"{API}/datasets/{ds['dataset_id']}?preview_rows=5").json()
    assert shown["preview"] == [{"gene": "A", "level": 1.5}, {"gene": "B", "level": 2.5}]
    assert server.get(f"{API}/datasets/{ds['dataset_id']}?preview_rows=0").json()["preview"] == []

    taken = register(server, out / "export.txt", dataset_id=ds["dataset_id"], format="csv",
                     options={"delimiter": ";"})
    assert error_of(taken, 409)["code"] == "dataset_exists"
    for body, needle in (({"format": "xlsx"}, "does not accept 'xlsx'"), ({}, "cannot tell the format"),
                         ({"format": "csv", "options": {"sheet": 1}}, "unknown reader option"),
                         ({"format": "csv", "dataset_id": "bad id!"}, "dataset_id")):
        assert needle in error_of(register(server, out / "export.txt", **body), 400)["message"]


def _escapes(srv: ServerProcess, outside: Path) -> list[str]:
    """Sources that try to leave the data dir; each names a file that exists."""
    inside = folder(srv, "escape")
    (inside / "link.csv").symlink_to(outside / "secret.csv")
    (inside / "linkdir").symlink_to(outside, target_is_directory=True)
    (inside / "tree").mkdir()
    (inside / "tree" / "ok.csv").write_text("a\n1\n")
    (inside / "tree" / "sneaky.csv").symlink_to(outside / "secret.csv")
    up = os.path.relpath(outside / "secret.csv", srv.data_dir)  # "../test_x0/outside/secret.csv"
    return [
        up,
        str(srv.data_dir / up),
        str(inside / ".." / ".." / up),
        str(outside / "secret.csv"),
        "/etc/passwd",
        str(inside / "link.csv"),
        str(inside / "linkdir" / "secret.csv"),
        str(inside / "linkdir" / "*.csv"),
        str(inside / "tree"),
        str(inside / "*" / "*.csv"),
    ]


def test_paths_outside_the_roots_are_forbidden_and_nothing_is_written(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("password\nhunter2\n")
    before = total(server)
    files_before = sorted(p for p in server.data_dir.rglob("*") if "managed" in p.parts)
    for source in _escapes(server, outside):
        dataset_id = new_id("escape")
        error = error_of(register(server, source, dataset_id=dataset_id), 403)
        assert error["code"] == "forbidden" and "outside the allowed data roots" in error["message"], source
        assert server.get(f"{API}/datasets/{dataset_id}").status_code == 404
    assert total(server) == before
    assert sorted(p for p in server.data_dir.rglob("*") if "managed" in p.parts) == files_before
    assert (outside / "secret.csv").read_text() == "password\nhunter2\n"


@pytest.mark.parametrize("name, content, needle", [
    ("random.parquet", os.urandom(4096), "Parquet magic bytes"),
    ("empty.csv", b"", "No columns to parse"),
    ("header_only.csv", b"a,b\n", "has no rows"),
    ("broken.jsonl", b'{"a": 1}\n{"a": oops}\n', "JSON"),
    ("broken.json", b'[{"a": 1}, {"a": ', "JSON"),
    ("empty.json", b"", "empty"),
])
def test_corrupt_files_are_422_and_not_registered(server, name, content, needle):
    out = folder(server, "corrupt")
    (out / name).write_bytes(content)
    before = total(server)
    dataset_id = new_id("corrupt")
    error = error_of(register(server, out / name, dataset_id=dataset_id), 422)
    assert error["code"] == "unprocessable" and needle in error["message"], error
    assert total(server) == before
    assert server.get(f"{API}/datasets/{dataset_id}").status_code == 404


def test_missing_path_is_404(server):
    error = error_of(register(server, "no/such/file.csv"), 404)
    assert "does not exist" in error["message"]


@pytest.fixture
def web_files(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    """A loopback HTTP server over ``tmp_path``: (base URL, paths it was asked for, folder)."""
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any):
            super().__init__(*args, directory=str(tmp_path), **kw)

        def send_head(self):  # noqa: ANN201 - the base class's signature
            asked.append(self.path)
            return super().send_head()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", asked, tmp_path
    httpd.shutdown()
    httpd.server_close()


def test_urls_into_the_servers_own_network_are_refused_without_a_request(server, web_files):
    """Server-side request forgery: by default only public hosts over allowed protocols."""
    base, asked, folder_ = web_files
    table(50).to_csv(folder_ / "secret.csv", index=False)
    port = base.rsplit(":", 1)[1]
    before = total(server)
    refused = {
        f"{base}/secret.csv": "not an allowed remote protocol",  # plain http is not in the default list
        f"https://127.0.0.1:{port}/secret.csv": "not a public address",
        f"https://localhost:{port}/secret.csv": "not a public address",
        f"https://2130706433:{port}/secret.csv": "not a public address",  # 127.0.0.1 as one number
        "https://169.254.169.254/latest/meta-data/iam.csv": "not a public address",
        "https://[::1]/secret.csv": "not allowed",
        "dask://127.0.0.1:8786/secret.csv": "not an allowed remote protocol",
        "ftp://127.0.0.1/secret.csv": "not an allowed remote protocol",
        "memory://anything/secret.csv": "not an allowed remote protocol",
        "file:///etc/passwd.csv": "not allowed",
        f"simplecache::{base}/secret.csv": "not allowed",
    }
    for source, needle in refused.items():
        dataset_id = new_id("ssrf")
        error = error_of(register(server, source, dataset_id=dataset_id), 403)
        assert error["code"] == "forbidden" and needle in error["message"], (source, error)
        assert server.get(f"{API}/datasets/{dataset_id}").status_code == 404
    assert asked == [], "the server connected to a refused URL"
    assert total(server) == before


def test_allowed_remote_urls_register_and_unreachable_ones_are_422(idle_server, web_files):
    base, asked, folder_ = web_files
    frame = table(120)
    frame.to_csv(folder_ / "counts.csv", index=False)
    dataset_id = new_id("web")
    r = register(idle_server, f"{base}/counts.csv", dataset_id=dataset_id)
    assert r.status_code == 201, r.text
    ds = r.json()["dataset"]
    assert (ds["source"], ds["format"], ds["estimated_rows"]) == (f"{base}/counts.csv", "csv", 120)
    assert "/counts.csv" in asked
    assert [c["name"] for c in ds["schema"]] == list(frame.columns)

    before = total(idle_server)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    assert error_of(register(idle_server, f"{base}/missing.csv"), 404)["code"] == "not_found"
    error = error_of(register(idle_server, f"http://127.0.0.1:{dead}/counts.csv"), 422)
    assert error["code"] == "unprocessable" and "could not read" in error["message"], error
    assert error_of(register(idle_server, "dask://127.0.0.1:8786/a.csv"), 403)["code"] == "forbidden"
    assert total(idle_server) == before


# --------------------------------------------------------------------------- uploads

def incoming(srv: ServerProcess) -> list[str]:
    path = srv.data_dir / "managed" / "uploads" / ".incoming"
    return sorted(os.listdir(path)) if path.exists() else []


def test_upload_streams_a_file_into_a_managed_dataset(server):
    frame = table(400)
    body = frame.to_csv(index=False).encode()
    dataset_id = new_id("up")
    r = server.post(f"{API}/datasets/upload?filename=Counts.CSV&dataset_id={dataset_id}&name=Uploaded%20counts",
                    data=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["received_bytes"] == len(body)
    ds = answer["dataset"]
    assert (ds["dataset_id"], ds["name"], ds["format"], ds["managed"]) == (dataset_id, "Uploaded counts", "csv", True)
    stored = Path(ds["source"])
    assert stored.parent == (server.data_dir / "managed" / "uploads" / dataset_id).resolve()
    assert stored.read_bytes() == body
    expected = pd.read_csv(stored)
    assert ds["schema"] == [{"name": str(c), "dtype": str(t)} for c, t in expected.dtypes.items()]
    assert ds["estimated_rows"] == 400
    cells_equal(server.get(f"{API}/datasets/{dataset_id}?preview_rows=3").json()["preview"], expected.head(3))
    assert incoming(server) == []

    again = server.post(f"{API}/datasets/upload?filename=x.csv&dataset_id={dataset_id}", data=body)
    assert error_of(again, 409)["code"] == "dataset_exists"
    assert stored.read_bytes() == body and incoming(server) == []


def test_upload_refusals(server):
    before = total(server)
    url = f"{API}/datasets/upload"
    multipart = server.post(f"{url}?filename=x.csv", files={"file": ("x.csv", b"a\n1\n")})
    assert "multipart" in error_of(multipart, 415)["message"]
    assert ".csv" in error_of(server.post(f"{url}?filename=x.exe", data=b"a\n1\n"), 400)["message"]
    assert "filename" in error_of(server.post(url, data=b"a\n1\n"), 400)["message"]
    assert "empty" in error_of(server.post(f"{url}?filename=x.csv", data=b""), 400)["message"]
    assert "reserved" in error_of(server.post(f"{url}?filename=x.csv&dataset_id=upload", data=b"a\n1\n"), 400)["message"]
    corrupt = server.post(f"{url}?filename=x.parquet&dataset_id={new_id('bad')}", data=os.urandom(2048))
    assert "Parquet magic bytes" in error_of(corrupt, 422)["message"]
    assert total(server) == before
    assert incoming(server) == []
    uploads = server.data_dir / "managed" / "uploads"
    assert not [p for p in uploads.iterdir() if p.name.startswith("bad_")]


def test_upload_limit_with_and_without_content_length(idle_server):
    srv = idle_server
    body = b"gene,level\n" + b"GENE00001,1.25\n" * 140_000  # ~2.1 MB

    def chunks() -> Iterator[bytes]:  # a generator: requests sends it chunked, without Content-Length
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    started = time.perf_counter()
    sized = srv.post(f"{API}/datasets/upload?filename=big.csv&dataset_id=sized", data=body)
    assert error_of(sized, 413)["details"] == {"limit_bytes": 1_000_000}
    assert time.perf_counter() - started < 5
    chunked = srv.post(f"{API}/datasets/upload?filename=big.csv&dataset_id=chunked", data=chunks())
    assert error_of(chunked, 413)["code"] == "payload_too_large"
    small = srv.post(f"{API}/datasets/upload?filename=small.csv&dataset_id=small", data=body[:500_000])
    assert small.status_code == 201, small.text  # under the limit: accepted

    ids = [d["dataset_id"] for d in srv.get(f"{API}/datasets").json()["datasets"]]
    assert "small" in ids and not {"sized", "chunked"} & set(ids)
    left = sorted(str(p.relative_to(srv.data_dir)) for p in (srv.data_dir / "managed" / "uploads").rglob("*"))
    assert left == ["managed/uploads/.incoming", "managed/uploads/small", "managed/uploads/small/data.csv"]


def test_aborted_upload_leaves_nothing(server):
    dataset_id = new_id("aborted")
    head = (f"POST {API}/datasets/upload?filename=part.csv&dataset_id={dataset_id} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + b"gene,level\n" + b"GENE00001,1.25\n" * 70_000)
        server.wait_for(lambda: incoming(server), timeout=10)  # the upload is being written
    server.wait_for(lambda: incoming(server) == [], timeout=10)
    assert server.get(f"{API}/datasets/{dataset_id}").status_code == 404
    assert not (server.data_dir / "managed" / "uploads" / dataset_id).exists()


# --------------------------------------------------------------------------- list, show, delete

def test_list_is_paginated_newest_first(server):
    out = folder(server, "listing")
    (out / "x.csv").write_text("a\n1\n")
    ids = [new_id("page") for _ in range(3)]
    for dataset_id in ids:
        assert register(server, out / "x.csv", dataset_id=dataset_id).status_code == 201
    first = server.get(f"{API}/datasets?limit=2").json()
    second = server.get(f"{API}/datasets?limit=2&offset=2").json()
    assert (first["limit"], first["offset"], second["offset"]) == (2, 0, 2)
    assert first["total"] == second["total"] >= 4
    assert [d["dataset_id"] for d in first["datasets"]] == ids[::-1][:2]
    assert second["datasets"][0]["dataset_id"] == ids[0]
    beyond = server.get(f"{API}/datasets?offset={first['total']}").json()
    assert beyond["datasets"] == [] and beyond["total"] == first["total"]
    for query in ("limit=0", "limit=5000", "offset=-1", "limit=x", "sort=name"):
        error_of(server.get(f"{API}/datasets?{query}"), 400)
    error_of(server.get(f"{API}/datasets/{ids[0]}?preview_rows=-1"), 400)


def test_unknown_dataset_is_404_everywhere(server):
    for response in (server.get(f"{API}/datasets/nope"), server.delete(f"{API}/datasets/nope"),
                     server.post(f"{API}/data/partition", {"dataset_id": "nope", "n_partitions": 2})):
        error = error_of(response, 404)
        assert error["code"] == "dataset_not_found" and error["details"] == {"dataset_id": "nope"}


def test_delete_removes_managed_files_but_never_the_source(server):
    out = folder(server, "delete")
    table(3000).to_csv(out / "mine.csv", index=False)
    by_path = register(server, out / "mine.csv", dataset_id=new_id("mine")).json()["dataset"]
    info = partition(server, {"dataset_id": by_path["dataset_id"], "n_partitions": 2})
    assert info["n_partitions"] == 2
    copy = Path(server.get(f"{API}/datasets/{by_path['dataset_id']}").json()["partitioned"]["path"])
    assert len(list(copy.glob("*.parquet"))) == 2
    uploaded = server.post(f"{API}/datasets/upload?filename=u.csv&dataset_id={new_id('upl')}",
                           data=(out / "mine.csv").read_bytes()).json()["dataset"]

    r = server.delete(f"{API}/datasets/{by_path['dataset_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["dataset_id"] == by_path["dataset_id"]
    assert (out / "mine.csv").exists()  # the user's own file stays
    assert not copy.exists() and not copy.parent.exists()
    assert server.delete(f"{API}/datasets/{uploaded['dataset_id']}").status_code == 200
    assert not Path(uploaded["source"]).parent.exists()
    for ds in (by_path, uploaded):
        error_of(server.get(f"{API}/datasets/{ds['dataset_id']}"), 404)
        error_of(server.delete(f"{API}/datasets/{ds['dataset_id']}"), 404)


def test_delete_of_a_dataset_with_a_pending_job_is_409(idle_server):
    srv = idle_server
    assert srv.post(f"{API}/cluster/stop").status_code == 200  # the job below stays pending
    (srv.data_dir / "d.csv").write_text("expression_level\n1.0\n2.0\n")
    assert register(srv, "d.csv", dataset_id="busy").status_code == 201
    job = srv.post(f"{API}/jobs/submit", {"operation": "aggregate", "dataset_id": "busy",
                                          "parameters": {"column": "expression_level", "operation": "mean"}})
    assert job.status_code == 201, job.text
    error = error_of(srv.delete(f"{API}/datasets/busy"), 409)
    assert error["code"] == "dataset_in_use"
    assert srv.get(f"{API}/datasets/busy").status_code == 200
    assert srv.post(f"{API}/jobs/{job.json()['job_id']}/cancel").status_code == 200
    assert srv.delete(f"{API}/datasets/busy").status_code == 200
    assert (srv.data_dir / "d.csv").exists()


# --------------------------------------------------------------------------- partitioning

def test_partition_contract_and_balanced_copy(server):
    out = folder(server, "part")
    table(120_000, seed=3).to_csv(out / "source.csv", index=False)
    source = pd.read_csv(out / "source.csv")
    ds = register(server, out / "source.csv", dataset_id=new_id("part")).json()["dataset"]

    r = server.post(f"{API}/data/partition", {"dataset_id": ds["dataset_id"], "partition_size_mb": 1,
                                               "n_partitions": 4}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"] == "Data partitioned successfully" and body["dataset_id"] == ds["dataset_id"]
    info = body["partition_info"]
    assert info["n_partitions"] == 4  # n_partitions wins over partition_size_mb
    assert info["columns"] == list(source.columns)
    assert info["estimated_size_mb"] == pytest.approx(ds["size_bytes"] / 1e6, abs=0.01)

    shown = server.get(f"{API}/datasets/{ds['dataset_id']}").json()["partitioned"]
    files = sorted(Path(shown["path"]).glob("*.parquet"))
    assert len(files) == shown["n_partitions"] == 4
    copy = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(copy) == len(source) == shown["rows"]
    for column in ("expression_level", "p_value", "count"):
        assert copy[column].sum() == pytest.approx(source[column].sum(), rel=1e-12)
    assert copy["gene_id"].tolist() == source["gene_id"].tolist()  # rows keep their order
    sizes = [f.stat().st_size for f in files]
    mean = sum(sizes) / len(sizes)
    assert all(abs(size - mean) <= 0.25 * mean for size in sizes), sizes

    by_size = partition(server, {"dataset_id": ds["dataset_id"], "partition_size_mb": 3})
    assert by_size["n_partitions"] == math.ceil(ds["size_bytes"] / 3e6)
    again = server.get(f"{API}/datasets/{ds['dataset_id']}").json()["partitioned"]
    assert again["n_partitions"] == by_size["n_partitions"] and again["path"] != shown["path"]
    server.wait_for(lambda: not Path(shown["path"]).exists(), timeout=10)  # the old copy goes


DEMO = "demo_expression"


@pytest.mark.parametrize("body, needle", [
    ({"dataset_id": DEMO, "n_partitions": 0}, "n_partitions"),
    ({"dataset_id": DEMO, "n_partitions": -3}, "n_partitions"),
    ({"dataset_id": DEMO, "n_partitions": 10**9}, "n_partitions"),
    ({"dataset_id": DEMO, "n_partitions": 2.5}, "n_partitions"),
    ({"dataset_id": DEMO, "n_partitions": "4"}, "n_partitions"),
    ({"dataset_id": DEMO, "partition_size_mb": 0}, "partition_size_mb"),
    ({"dataset_id": DEMO, "partition_size_mb": -1}, "partition_size_mb"),
    ({"dataset_id": DEMO, "partition_size_mb": 1e-12}, "more than 10000"),
    ({"dataset_id": DEMO, "partition_size_mb": 1e12}, "partition_size_mb"),
    ({"dataset_id": DEMO, "partition_size_mb": 64, "rows": 3}, "unknown field"),
    ({"n_partitions": 2}, "missing required field(s): dataset_id"),
])
def test_partition_rejects_bad_values(server, body, needle):
    before = server.get(f"{API}/jobs/list?limit=1").json()["total"]
    r = server.post(f"{API}/data/partition", body)
    assert needle in error_of(r, 400)["message"]
    assert server.get(f"{API}/jobs/list?limit=1").json()["total"] == before  # no job was queued


def test_partition_answers_202_when_it_outlasts_the_wait(idle_server):
    srv = idle_server  # PARTITION_WAIT_S=0, and no cluster yet: the job cannot finish at once
    assert srv.post(f"{API}/cluster/stop").status_code == 200
    table(5000).to_csv(srv.data_dir / "slow.csv", index=False)
    assert register(srv, "slow.csv", dataset_id="slow").status_code == 201
    r = srv.post(f"{API}/data/partition", {"dataset_id": "slow", "n_partitions": 3})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["dataset_id"], body["status"]) == ("slow", "pending") and body["job_id"].startswith("job_")
    assert body["status_url"] == f"{API}/jobs/{body['job_id']}/status"
    assert srv.post(f"{API}/cluster/start", timeout=120).status_code == 200
    final = wait_job(srv, body["job_id"])
    assert final["result"]["n_partitions"] == 3 and final["result"]["rows"] == 5000
    assert srv.get(f"{API}/datasets/slow").json()["partitioned"]["n_partitions"] == 3


def test_jobs_read_the_partitioned_copy(server):
    out = folder(server, "reads")
    table(30_000, seed=11).to_csv(out / "levels.csv", index=False)
    expected = pd.read_csv(out / "levels.csv")["expression_level"].mean()
    ds = register(server, out / "levels.csv", dataset_id=new_id("reads")).json()["dataset"]
    partition(server, {"dataset_id": ds["dataset_id"], "n_partitions": 3})
    # with the source moved away, only the partitioned copy can answer
    (out / "levels.csv").rename(out / "moved.csv")
    r = server.post(f"{API}/jobs/submit", {"operation": "aggregate", "dataset_id": ds["dataset_id"],
                                           "parameters": {"column": "expression_level", "operation": "mean"}})
    assert r.status_code == 201, r.text
    wait_job(server, r.json()["job_id"])
    status = server.get(f"{API}/jobs/{r.json()['job_id']}/status").json()
    assert status["result"]["value"] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- the loop stays free

class LatencyProbe:
    """Times GET /health in a thread until stopped."""

    def __init__(self, srv: ServerProcess):
        self.srv = srv
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                ok = self.srv.get(f"{API}/health", timeout=10).status_code == 200
            except Exception:
                ok = False
            self.latencies.append(time.perf_counter() - started if ok else math.inf)
            self._stop.wait(0.05)

    def __enter__(self) -> "LatencyProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(15)


def _write_large_csv(path: Path, target_bytes: int) -> int:
    block = generate_expression(200_000, seed=5).to_csv(index=False).encode()
    header, rows = block.split(b"\n", 1)
    copies = max(1, math.ceil(target_bytes / len(rows)))
    with open(path, "wb") as f:
        f.write(header + b"\n")
        for _ in range(copies):
            f.write(rows)
    return copies * 200_000


def test_the_loop_answers_while_a_large_csv_is_registered_and_partitioned(server):
    out = folder(server, "large")
    rows = _write_large_csv(out / "large.csv", 150_000_000)
    dataset_id = new_id("large")
    with LatencyProbe(server) as probe:
        time.sleep(1.5)
        idle = len(probe.latencies)  # for the message: what the machine gives before the work
        r = register(server, out / "large.csv", dataset_id=dataset_id)
        assert r.status_code == 201, r.text
        info = partition(server, {"dataset_id": dataset_id, "n_partitions": 4})
    assert info["rows"] == rows and info["n_partitions"] == 4
    busy = probe.latencies[idle:]
    assert len(busy) > 20
    assert max(busy) < 1.5, (f"slowest during the work: {sorted(busy)[-5:]}; slowest before it: "
                             f"{max(probe.latencies[:idle], default=0):.3f} s; load average {os.getloadavg()}")
    assert server.delete(f"{API}/datasets/{dataset_id}").status_code == 200
    (out / "large.csv").unlink()


# --------------------------------------------------------------------------- hostile input (issue 14 item 7, issue 15 item 11)

def _deep_lines(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels + b"\n"


def _deep_array(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_hostile_sources_and_options_are_4xx_and_logged_short(server):
    out = folder(server, "hostile")
    (out / "ok.csv").write_text("a,b\n1,2\n")
    before = total(server)
    error = error_of(register(server, out / "ok.csv", options={"encoding": "rot13"}), 400)
    assert "not a text encoding" in error["message"]
    for options, needle in [({"encoding": 7}, "encoding"), ({"encoding": "no-such-codec"}, "unknown encoding"),
                            ({"header": "yes"}, "header"), ({"delimiter": "ab"}, "delimiter"),
                            ({"columns": "a"}, "columns"), ({"compression": "zip"}, "unknown reader option")]:
        assert needle in error_of(register(server, out / "ok.csv", options=options), 400)["message"], options
    long_source = "a" * 100_000
    error = error_of(register(server, long_source), 400)
    assert "at most 4096" in error["message"] and len(error["message"]) < 500
    error = error_of(register(server, str(out / ("n" * 300 + ".csv"))), 400)  # one name over NAME_MAX
    assert "longer than the file system allows" in error["message"] and len(error["message"]) < 500
    assert total(server) == before
    assert long_source not in server.log_path.read_text(errors="replace")


@pytest.mark.parametrize("name, content, needle", [
    ("deep_lines.jsonl", _deep_lines(50_000), "50000 levels deep"),
    ("deep_array.json", _deep_array(50_000), "too deeply"),
    ("deep_records.json", b"[" + _deep_lines(200).strip() + b"]", "200 levels deep"),
])
def test_deeply_nested_json_uploads_are_422_and_the_server_lives(server, name, content, needle):
    dataset_id = new_id("deep")
    r = server.post(f"{API}/datasets/upload?filename={name}&dataset_id={dataset_id}", data=content,
                    headers={"Content-Type": "application/octet-stream"})
    error = error_of(r, 422)
    assert needle in error["message"], error
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    assert server.get(f"{API}/health").status_code == 200
    assert server.get(f"{API}/datasets/{dataset_id}").status_code == 404


def test_json_nested_within_the_limit_still_registers(server):
    out = folder(server, "nested")
    (out / "ok.jsonl").write_bytes(b'{"a": [[1, 2]], "b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}\n' * 3)
    r = register(server, out / "ok.jsonl")
    assert r.status_code == 201, r.text
    assert r.json()["dataset"]["columns"] == ["a", "b"]


def test_the_managed_folder_cannot_be_a_source(server):
    managed = server.data_dir / "managed"
    server.wait_for(lambda: server.get(f"{API}/datasets/demo_expression").status_code == 200)
    link_dir = folder(server, "sneaky")
    (link_dir / "to_managed").symlink_to(managed / "demo")
    before = total(server)
    sources = ["managed", "managed/demo/demo_expression", str(managed / "demo" / "demo_expression"),
               "managed/*/*", "managed/demo/demo_expression/*.parquet", str(link_dir / "to_managed"),
               str(link_dir / "to_managed" / "demo_expression"), ".", "*", "**/*.parquet", "inputs/../managed"]
    for source in sources:
        error = error_of(register(server, source, dataset_id=new_id("managed")), 403)
        assert error["code"] == "forbidden" and "managed data" in error["message"], (source, error)
    assert total(server) == before
    # the service's own registrations of managed files still work: an upload lands there
    r = server.post(f"{API}/datasets/upload?filename=fine.csv&dataset_id={new_id('fine')}", data=b"a\n1\n",
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text


def test_a_partial_upload_of_a_killed_server_is_removed_at_start(make_server):
    srv = make_server({"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0"})
    stop = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"gene,level\n"
        while not stop.is_set():
            yield b"GENE00001,1.25\n" * 2000
            time.sleep(0.05)

    def upload() -> None:
        try:
            srv.post(f"{API}/datasets/upload?filename=slow.csv", data=slow_body(),
                     headers={"Content-Type": "application/octet-stream"}, timeout=60)
        except Exception:
            pass  # the server is killed under it

    client = threading.Thread(target=upload, daemon=True)
    client.start()
    try:
        partial = srv.wait_for(lambda: incoming(srv), timeout=20)
        srv.wait_for(lambda: (srv.data_dir / "managed/uploads/.incoming" / partial[0]).stat().st_size > 0)
        srv.kill()  # kill -9 of the server, by its PID, mid-upload
    finally:
        stop.set()
        client.join(10)
    assert incoming(srv) == partial, "the killed server left its partial upload behind"
    again = ServerProcess(srv.data_dir, {"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0"}, port=srv.port)
    try:
        again.start()
        again.wait_for(lambda: incoming(again) == [], timeout=20)
        assert again.get(f"{API}/health").json()["status"] == "healthy"
    finally:
        again.cleanup()
