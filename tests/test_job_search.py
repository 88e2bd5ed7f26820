"""Searching the job history (``q=``) and bounding it by creation time, through the real API
in-process (store, views, handlers; no cluster), plus the search index of an upgraded data dir.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from tornado.testing import AsyncHTTPTestCase

from app.store import Store
from app.job_repository import match_expression
from tests import test_api_inprocess as inprocess  # its helpers (the module: its tests stay there)
from tests.test_upgrade import write_old_data_dir

LIST = "/api/processing/jobs/list"


def _job(n: int, operation: str, dataset: str, parameters: dict, status: str = "completed", **values: object) -> dict:
    return {"job_id": f"job_s{n:03d}", "operation": operation, "dataset_id": dataset, "parameters": parameters,
            "priority": "HIGH" if n % 2 else "NORMAL", "status": status, "progress": 0.0,
            "created_at": f"2026-03-{n:02d}T08:00:00.000Z", "attempt_count": 0, **values}


JOBS = [
    _job(1, "aggregate", "expression_2024", {"column": "level", "operation": "mean"}),
    _job(2, "filter", "expression_2024", {"conditions": [{"column": "tissue", "op": "eq", "value": "liver"}]}),
    _job(3, "groupby", "census", {"by": ["region"], "column": "income", "agg": "mean"}, status="failed",
         error={"type": "ValueError", "message": "could not convert 'n/a' to float"}),
    _job(4, "filter", "census", {"conditions": [{"column": "region", "op": "eq", "value": "north \"east\""}]}),
    _job(5, "describe", "expression_2024", {}, status="cancelled"),
]


class SearchAPI(AsyncHTTPTestCase):
    # the in-process API's set-up and helpers, without its own tests
    _api = inprocess.InProcessAPI
    get_app, call, error = _api.get_app, _api.call, _api.error

    def tearDown(self) -> None:
        super().tearDown()
        self.service.executor.shutdown(wait=True)
        self.service.store.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def setUp(self) -> None:
        super().setUp()
        self.service.store.insert_jobs([dict(j) for j in JOBS])

    def ids(self, query: str) -> tuple[int, list[str]]:
        r = self.call("GET", f"{LIST}?{query}")
        assert r.code == 200, r.body[:300]
        body = json.loads(r.body)
        return body["total"], [j["job_id"] for j in body["jobs"]]

    def test_q_searches_id_dataset_operation_parameters_and_error_text(self) -> None:
        assert self.ids("q=job_s003") == (1, ["job_s003"])
        assert self.ids("q=census") == (2, ["job_s004", "job_s003"])
        assert self.ids("q=groupby") == (1, ["job_s003"])
        assert self.ids("q=liver") == (1, ["job_s002"])  # a value inside the parameters' JSON
        assert self.ids("q=convert") == (1, ["job_s003"])  # the error's message
        assert self.ids("q=expr")[0] == 3, "each word is a prefix"
        assert self.ids("q=filter%20census") == (1, ["job_s004"]), "all words are required"
        assert self.ids("q=nothing_like_this") == (0, [])

    def test_q_combines_with_the_other_filters_sort_and_pages(self) -> None:
        assert self.ids("q=expression&status=completed") == (2, ["job_s002", "job_s001"])
        assert self.ids("q=expression&priority=HIGH") == (2, ["job_s005", "job_s001"])
        assert self.ids("q=mean&dataset_id=census") == (1, ["job_s003"])
        assert self.ids("q=region&operation=filter") == (1, ["job_s004"])
        assert self.ids("q=expression&sort=oldest&limit=1&offset=1") == (3, ["job_s002"])
        assert self.ids("q=expression&limit=2&offset=5") == (3, [])

    def test_created_after_and_before_bound_the_list(self) -> None:
        after, before = quote("2026-03-02T00:00:00Z"), quote("2026-03-04T08:00:00+00:00")
        assert self.ids(f"created_after={after}&created_before={before}") == (2, ["job_s003", "job_s002"])
        assert self.ids(f"created_after={after}&q=census") == (2, ["job_s004", "job_s003"])
        assert self.ids("created_before=2026-03-02") == (1, ["job_s001"]), "a date alone is midnight UTC"
        error = self.error(self.call("GET", f"{LIST}?created_after=yesterday"), 400)
        assert error["details"]["field"] == "created_after" and "ISO-8601" in error["message"]

    def test_fts_syntax_is_searched_as_text_never_parsed(self) -> None:
        for text in ['"', '"north', 'east"', "*", "expr*", "dataset_id:census", "(census", "NEAR(census filter)",
                     "-census", "^census", "census OR filter", "AND", "'", "\\", "%", "\x00", "ʼ", "😀", '""""']:
            r = self.call("GET", f"{LIST}?q={quote(text)}")
            assert r.code == 200, (text, r.body[:300])
        assert self.ids("q=" + quote('north "east"')) == (1, ["job_s004"]), "quotes are text"
        assert self.ids(f"q={quote('census OR groupby')}") == (0, []), "OR is a word to find, not an operator"
        assert self.ids(f"q={quote('*')}") == (0, []), "punctuation alone searches nothing"

    def test_q_is_bounded(self) -> None:
        assert self.call("GET", f"{LIST}?q={'a' * 200}").code == 200
        for text in ("a" * 201, "census " * 1500, '"*:(' * 2500):
            error = self.error(self.call("GET", f"{LIST}?q={quote(text)}"), 400)
            assert error["details"] == {"field": "q", "limit": 200}, error

    def test_the_index_follows_updates_and_deletes(self) -> None:
        store = self.service.store
        store.update_job("job_s001", status="failed", error={"message": "worker vanished mid-flight"})
        store.update_job("job_s001", progress=50.0)  # not a searched column: the index is left alone
        assert self.ids("q=vanished") == (1, ["job_s001"])
        store.db.execute("DELETE FROM jobs WHERE job_id = 'job_s001'")
        store.db.conn.commit()
        assert self.ids("q=vanished") == (0, [])
        assert store.db.execute("INSERT INTO jobs_fts(jobs_fts) VALUES ('integrity-check')").fetchall() == []


@pytest.mark.parametrize("text, expected", [
    ("census", '"census"*'), ('a"b', '"a""b"*'), ("x  y", '"x"* "y"*'), ("* : ( ^ -", None), ("", None),
])
def test_match_expression_quotes_every_word(text: str, expected: str | None) -> None:
    assert match_expression(text) == expected


def test_an_older_data_dir_gets_its_search_index_built_from_its_rows(tmp_path: Path) -> None:
    data = write_old_data_dir(tmp_path / "old")
    store = Store(data / "processing.db")
    try:
        assert store.list_jobs(q="convert", columns=["job_id"]) == (1, [{"job_id": "job_old_failed"}])
        assert store.list_jobs(q="old_levels")[0] == 4
        assert "notify_url" in store.db["jobs"].columns_dict
    finally:
        store.close()
