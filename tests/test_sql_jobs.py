"""SQL jobs: the submit-time check and sandbox (the real planner process, no cluster), the
worker's task run in this process on real files (no cluster: the same code a worker runs),
and jobs end to end on the shared server (slow)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tornado.testing import AsyncHTTPTestCase

from app.errors import InvalidRequest, ProcessingError, Unprocessable
from app.operations import get
from app.operations._sql import SqlTask, run
from app.operations.sql import MAX_QUERY_CHARS, OPERATION as SQL, locate
from tests import test_api_inprocess as inprocess  # the module, so its tests are not collected here too

SCHEMA = {"gene": "object", "level": "float64", "n": "int64", "when": "datetime64[ns]", 'odd "name"': "object",
          "with space": "float64"}

# Each one must be refused at submit (400) and again on the worker.
ESCAPES = [
    "ATTACH '/tmp/other.db' AS other",
    "COPY data TO '/tmp/stolen.csv'",
    "EXPORT DATABASE '/tmp/exported'",
    "PRAGMA version",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CALL pragma_version()",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT getenv('HOME')",
    "SELECT * FROM data; SELECT 1",
    "SELECT 1; DROP TABLE data",
    "WITH w AS (INSERT INTO data VALUES (1) RETURNING *) SELECT * FROM w",
    "CREATE TABLE copy AS SELECT * FROM data",
    "SELECT * FROM query('ATTACH ''/tmp/x.db''')",
    "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')",
    "SELECT * FROM '/etc/passwd'",
    "USE memory",
    "CHECKPOINT",
    "DETACH memory",
]
# Planning does not touch these functions' files (binding them is enough to be accepted):
# the worker's sandbox refuses them when they run.
AT_RUN_TIME = ["SELECT * FROM sniff_csv('/etc/passwd')", "SELECT * FROM duckdb_secrets()"]


def refused(query: str, schema: dict[str, str] = SCHEMA) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        get("sql").parse({"query": query}, schema)
    assert info.value.status == 400 and info.value.details["field"] == "query"
    return info.value


# -- submit: the planner ---------------------------------------------------------------

@pytest.mark.parametrize("query", ESCAPES)
def test_each_escape_is_refused_at_submit(query):
    err = refused(query)
    assert err.code in ("sql_not_allowed", "invalid_sql"), err.message


def test_a_query_on_data_is_planned_and_hostile_names_are_columns():
    p = get("sql").parse({"query": 'SELECT gene, avg("with space"), max("odd ""name""") FROM data GROUP BY gene'},
                         SCHEMA)
    assert p.timeout_s == 300


@pytest.mark.parametrize("query, line, column, position", [
    ("SELECT nope FROM data", 1, 8, 7),
    ("SELEC 1", 1, 1, 0),
    ("SELECT gene\nFROM data\nWHERE  zz > 1", 3, 8, 29),
    ("SELECT gene FROM data WHERE", 1, 23, 22),
])
def test_syntax_and_binding_errors_name_the_position(query, line, column, position):
    err = refused(query)
    assert err.code == "invalid_sql"
    assert (err.details["line"], err.details["column"], err.details["position"]) == (line, column, position)
    assert f"line {line}, column {column}" in err.message


def test_the_position_in_a_long_line_that_duckdb_cuts():
    query = "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(80)) + ", nope, " + \
        ", ".join(f"{i} AS d{i}" for i in range(80)) + " FROM data"
    err = refused(query)
    assert err.details["position"] == query.index("nope")


def test_locate_without_a_caret_is_empty():
    assert locate("Catalog Error: no such thing", "SELECT 1") == {}


def test_a_query_of_100000_characters_is_a_400():
    err = refused("SELECT " + "1+" * 50_000 + "1")
    assert err.details["max"] == MAX_QUERY_CHARS and "characters" in err.message


@pytest.mark.parametrize("query", [
    "SELECT " + "(" * 4000 + "1" + ")" * 4000,  # deeper than DuckDB's expression depth
    "SELECT * FROM range(length(repeat('x', 1500000000)))",  # folded while binding: ~1.5 GB
])
def test_costly_or_deep_plans_are_a_400_and_the_planner_recovers(query):
    err = refused(query)
    assert err.code in ("invalid_sql", "sql_too_costly"), err.message
    get("sql").parse({"query": "SELECT count(*) FROM data"}, SCHEMA)


def test_empty_and_missing_queries_are_refused():
    refused("   ")
    with pytest.raises(InvalidRequest):
        get("sql").parse({}, SCHEMA)
    with pytest.raises(ProcessingError):
        get("sql").parse({"query": "SELECT 1", "timeout_s": 0}, SCHEMA)


def test_the_catalogue_entry_describes_the_query():
    entry = get("sql").entry()
    assert entry["result_kind"] == "table" and "query" in entry["parameters"]["required"]


# -- the worker's task, run here on real files ------------------------------------------

@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 5000
    return pd.DataFrame({
        "gene": [f"G{i % 37}" for i in range(n)], "level": rng.normal(10, 3, n), "n": np.arange(n) % 11,
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), unit="min"),
        'odd "name"': ["x'y" if i % 2 else 'q"z' for i in range(n)], "with space": rng.random(n),
    })


@pytest.fixture(scope="module")
def parquet_dir(frame, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sqldata") / "parts"
    out.mkdir()
    for i, part in enumerate(np.array_split(frame, 3)):
        part.to_parquet(out / f"part-{i}.parquet", index=False)
    return out


def task(source: Path, query: str, out: Path, fmt: str = "parquet", inline_rows: int = 1000,
         timeout_s: float = 60, schema: dict[str, str] = SCHEMA) -> SqlTask:
    p = get("sql").parse({"query": query, "timeout_s": timeout_s}, schema)
    return SQL.task(p, schema, (str(source), fmt, {}), str(out), inline_rows, 0.5, 1)


def table_of(value: dict) -> pd.DataFrame:
    return value["table"].to_pandas()


def test_group_by_equals_pandas(frame, parquet_dir, tmp_path):
    got = table_of(run(task(parquet_dir, "SELECT gene, avg(level) AS m, count(*) AS c FROM data "
                                         "GROUP BY gene ORDER BY gene", tmp_path / "r")))
    want = frame.groupby("gene").agg(m=("level", "mean"), c=("level", "size")).reset_index().sort_values("gene")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)


def test_where_order_by_limit_equals_pandas(frame, parquet_dir, tmp_path):
    got = table_of(run(task(parquet_dir, 'SELECT gene, level, "with space" FROM data WHERE n = 3 AND level > 10 '
                                         "ORDER BY level DESC LIMIT 25", tmp_path / "r")))
    want = frame[(frame.n == 3) & (frame.level > 10)].nlargest(25, "level")[["gene", "level", "with space"]]
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))


def test_a_self_join_equals_pandas(frame, parquet_dir, tmp_path):
    query = ("SELECT a.gene, count(*) AS pairs FROM data a JOIN data b ON a.gene = b.gene AND a.n = b.n "
             "WHERE a.n < 2 GROUP BY a.gene ORDER BY a.gene")
    got = table_of(run(task(parquet_dir, query, tmp_path / "r")))
    small = frame[frame.n < 2]
    joined = small.merge(small, on=["gene", "n"])
    want = joined.groupby("gene").size().rename("pairs").reset_index()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_hostile_column_names_read_back(frame, parquet_dir, tmp_path):
    got = table_of(run(task(parquet_dir, 'SELECT "odd ""name""", count(*) AS c FROM data GROUP BY 1 ORDER BY 1',
                            tmp_path / "r")))
    assert got.to_dict("records") == [{'odd "name"': 'q"z', "c": 2500}, {'odd "name"': "x'y", "c": 2500}]


def test_a_zero_row_result_is_an_empty_table(parquet_dir, tmp_path):
    value = run(task(parquet_dir, "SELECT gene, level FROM data WHERE level > 1e9", tmp_path / "r"))
    outcome = SQL.outcome(value, str(tmp_path / "r"))
    assert outcome == {"result": {"columns": ["gene", "level"], "rows": []}, "kind": "table"}


def test_a_large_result_is_written_as_parquet(frame, parquet_dir, tmp_path, monkeypatch):
    import app.operations._sql as sql_task

    monkeypatch.setattr(sql_task, "PART_ROWS", 2000)  # several files from a small frame
    monkeypatch.setattr(sql_task, "BATCH_ROWS", 500)
    out = tmp_path / "result"
    out.mkdir()
    (out / "part-00009.parquet").write_text("left by an earlier attempt")
    value = run(task(parquet_dir, "SELECT gene, n FROM data ORDER BY n, gene", out, inline_rows=100))
    outcome = SQL.outcome(value, str(out))
    assert outcome["kind"] == "dataset" and outcome["dataset_path"] == str(out)
    assert outcome["result"]["rows"] == len(frame) and outcome["result"]["columns"] == ["gene", "n"]
    files = sorted(out.glob("*.parquet"))
    assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(outcome["result"]["n_partitions"])]
    assert len(files) >= 3 and not list(out.glob("*.tmp"))
    got = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    want = frame[["gene", "n"]].sort_values(["n", "gene"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)


def test_a_csv_dataset_is_read_with_its_registered_types(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("k,v\na,1.5\nb,NA\na,2.5\n")
    schema = {"k": "object", "v": "float64"}
    value = run(task(csv, "SELECT k, sum(v) AS s, count(v) AS c FROM data GROUP BY k ORDER BY k",
                     tmp_path / "r", fmt="csv", schema=schema))
    rows = SQL.outcome(value, str(tmp_path / "r"))["result"]["rows"]
    assert rows == [{"k": "a", "s": 4.0, "c": 2}, {"k": "b", "s": None, "c": 0}]


@pytest.mark.parametrize("query", ESCAPES + AT_RUN_TIME)
def test_each_escape_is_refused_on_the_worker_too(parquet_dir, tmp_path, query):
    """The task is built without the submit check: the worker's own checks and sandbox refuse."""
    bare = SqlTask(query, str(parquet_dir), "parquet", {}, SCHEMA, str(tmp_path / "r"), 100, 0, 1, 30)
    with pytest.raises((InvalidRequest, Unprocessable)):
        run(bare)
    assert not Path("/tmp/stolen.csv").exists() and not Path("/tmp/exported").exists()


def test_the_worker_reads_the_datasets_files_and_no_others(parquet_dir, tmp_path):
    other = tmp_path / "other.parquet"
    pd.DataFrame({"secret": [1]}).to_parquet(other)
    own = sorted(parquet_dir.glob("*.parquet"))[0]
    ok = SqlTask(f"SELECT count(*) AS c FROM read_parquet('{own}')", str(parquet_dir), "parquet", {}, SCHEMA,
                 str(tmp_path / "r"), 100, 0, 1, 30)
    assert table_of(run(ok))["c"][0] > 0
    with pytest.raises(InvalidRequest, match="sandbox"):
        run(SqlTask(f"SELECT * FROM read_parquet('{other}')", str(parquet_dir), "parquet", {}, SCHEMA,
                    str(tmp_path / "r"), 100, 0, 1, 30))


def test_a_query_past_its_time_limit_is_interrupted(parquet_dir, tmp_path):
    slow = SqlTask("SELECT count(*) FROM range(100000000000) a(x) WHERE x % 7 = 3", str(parquet_dir), "parquet",
                   {}, SCHEMA, str(tmp_path / "r"), 100, 0, 1, 1)
    with pytest.raises(Unprocessable, match="timeout_s=1"):
        run(slow)


def test_data_errors_at_run_time_fail_plainly(parquet_dir, tmp_path):
    bad = SqlTask("SELECT CAST(gene AS INTEGER) FROM data", str(parquet_dir), "parquet", {}, SCHEMA,
                  str(tmp_path / "r"), 100, 0, 1, 30)
    with pytest.raises(Unprocessable, match="the query failed"):
        run(bad)


def test_the_result_is_json_safe(parquet_dir, tmp_path):
    value = run(task(parquet_dir, "SELECT min(\"when\") AS first, sum(n) AS total FROM data", tmp_path / "r"))
    json.dumps(SQL.outcome(value, str(tmp_path / "r"))["result"])


# -- the API in-process (no cluster): a 400 in the one error shape, nothing written -----

class SqlSubmitAPI(AsyncHTTPTestCase):
    """The in-process tier's service and helpers (borrowed, so its own tests do not run twice)."""

    get_app = inprocess.InProcessAPI.get_app
    call = inprocess.InProcessAPI.call
    error = inprocess.InProcessAPI.error
    jobs_total = inprocess.InProcessAPI.jobs_total
    register_levels = inprocess.InProcessAPI.register_levels

    def tearDown(self) -> None:
        super().tearDown()
        self.service.executor.shutdown(wait=True)
        self.service.store.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def test_escapes_and_errors_are_400_and_nothing_is_written(self) -> None:
        self.register_levels()
        before = self.jobs_total()
        for query in ["COPY data TO '/tmp/stolen.csv'", "SELECT * FROM read_csv('/etc/passwd')",
                      "SELECT * FROM glob('/*')", "SELECT nope FROM data", "SELECT " + "1+" * 50_000 + "1"]:
            r = self.call("POST", "/api/processing/jobs/submit",
                          {"operation": "sql", "dataset_id": "levels", "parameters": {"query": query}})
            err = self.error(r, 400)
            assert err["code"] in ("sql_not_allowed", "invalid_sql", "invalid_request")
            assert err["details"]["field"] == "query"
        err = self.error(self.call("POST", "/api/processing/jobs/submit", {
            "operation": "sql", "dataset_id": "levels", "parameters": {"query": "SELECT gene, lvl FROM data"}}), 400)
        assert err["details"]["position"] == 13 and "line 1, column 14" in err["message"]
        assert self.jobs_total() == before

    def test_a_valid_query_is_accepted_and_listed_in_the_catalogue(self) -> None:
        self.register_levels()
        r = self.call("POST", "/api/processing/jobs/submit", {
            "operation": "sql", "dataset_id": "levels",
            "parameters": {"query": "SELECT gene, level * 2 AS twice FROM data ORDER BY level DESC"}})
        assert r.code == 201, r.body
        names = [op["name"] for op in json.loads(self.call("GET", "/api/processing/operations").body)["operations"]]
        assert "sql" in names


# -- end to end on the shared server (slow) ------------------------------------------------

@pytest.mark.slow
def test_sql_jobs_on_the_cluster_equal_pandas_and_large_results_are_datasets(server):
    from tests.helpers import register_generated, submit, wait_job

    ds = register_generated(server, 40_000, 4, "parquet")
    frame = pd.concat([pd.read_parquet(f) for f in sorted(Path(ds["source"]).glob("*.parquet"))])
    query = ("SELECT gene_id, avg(expression_level) AS mean, count(*) AS n FROM data "
             "GROUP BY gene_id ORDER BY mean DESC LIMIT 5")
    job = wait_job(server, submit(server, "sql", ds["dataset_id"], {"query": query}))
    assert job["status"] == "completed" and job["result_kind"] == "table", job
    want = frame.groupby("gene_id")["expression_level"].agg(["mean", "size"]).nlargest(5, "mean")
    got = job["result"]
    assert [r["gene_id"] for r in got["rows"]] == list(want.index)
    assert [r["n"] for r in got["rows"]] == list(want["size"])
    assert np.allclose([r["mean"] for r in got["rows"]], want["mean"])

    empty = wait_job(server, submit(server, "sql", ds["dataset_id"], {"query": "SELECT * FROM data WHERE false"}))
    assert empty["status"] == "completed" and empty["result"]["rows"] == [], empty

    big = wait_job(server, submit(server, "sql", ds["dataset_id"],
                                  {"query": "SELECT gene_id, sample_id FROM data ORDER BY sample_id, gene_id"}))
    assert big["status"] == "completed" and big["result_kind"] == "dataset", big
    assert big["result"]["rows"] == len(frame) and big["result_dataset_id"]
    page = server.get(f"/api/processing/jobs/{big['job_id']}/result?offset=0&limit=3").json()
    assert page["total"] == len(frame) and len(page["rows"]) == 3


def test_interrupt_stops_a_running_query_and_one_that_starts_after_it(parquet_dir, tmp_path):
    import threading

    from app.operations._sql import interrupt

    endless = "SELECT count(*) FROM range(10000000000000) a(x) WHERE x % 7 = 3"
    slow = SqlTask(endless, str(parquet_dir), "parquet", {}, SCHEMA, str(tmp_path / "r"), 100, 0, 1, 3600, "job_t/1")
    raised: list[BaseException] = []
    thread = threading.Thread(target=lambda: raised.append(pytest.raises(Unprocessable, run, slow).value))
    thread.start()
    from tests.helpers import wait_until
    from app.operations import _sql
    wait_until(lambda: "job_t/1" in _sql._running, 30, 0.01, "the query registered")
    assert interrupt("job_t/1") is True
    thread.join(60)
    assert not thread.is_alive() and "its job was stopped" in str(raised[0])
    with pytest.raises(Unprocessable, match="its job was stopped"):  # cancelled before it started here
        run(slow)
    assert "job_t/1" not in _sql._running and interrupt("job_other/1") is False


@pytest.mark.slow
def test_cancelling_sql_jobs_interrupts_their_queries_and_frees_the_workers(server):
    from tests.helpers import submit, wait_job, wait_status, wait_until

    endless = {"query": "SELECT count(*) FROM range(10000000000000) a(x) WHERE x % 7 = 3", "timeout_s": 900}
    jobs = [submit(server, "sql", "demo_expression", endless, max_cores=1, max_memory_gb=0.4) for _ in range(2)]
    for job_id in jobs:
        wait_status(server, job_id, {"running"})

    def executing() -> int:
        return sum(w["executing"] for w in server.get("/api/processing/metrics/workers").json()["workers"])

    wait_until(lambda: executing() == 2, 60, 0.2, "both queries executing, one on each worker")
    for job_id in jobs:
        assert server.post(f"/api/processing/jobs/{job_id}/cancel").status_code == 200
        assert wait_job(server, job_id)["status"] == "cancelled"
    # without the interrupt both worker threads stay in DuckDB for the query's 900 s (the
    # scheduler counts the cancelled tasks out at once): this job would wait for one
    after = wait_job(server, submit(server, "sql", "demo_expression", {"query": "SELECT count(*) AS n FROM data"}),
                     timeout=60)
    assert after["status"] == "completed" and after["result"]["rows"] == [{"n": 20000}], after
