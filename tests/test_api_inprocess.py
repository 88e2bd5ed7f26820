"""The JSON API in-process, through Tornado's test client: no server subprocess, no cluster.

The real handlers and the real service (store, dataset registry, job engine) on a temporary
data dir, never started: what the API validates and refuses needs no Dask. Part of the
fast tier (``pytest -m "not slow and not ui"``).
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tornado import web
from tornado.httpclient import HTTPResponse
from tornado.testing import AsyncHTTPTestCase, gen_test

from app.api.routes import api_routes
from app.service import ProcessingService
from app.settings import Settings
from tests.test_store_reads import seed as seed_finished_jobs

MEAN = {"column": "level", "operation": "mean"}


class InProcessAPI(AsyncHTTPTestCase):
    """One service and application per test, on a fresh data dir."""

    def get_app(self) -> web.Application:
        self.data_dir = Path(tempfile.mkdtemp(prefix="api-inprocess-"))
        self.service = ProcessingService(Settings(data_dir=self.data_dir, autostart=False, demo_dataset=False))
        return web.Application(api_routes(self.service))

    def tearDown(self) -> None:
        super().tearDown()
        self.service.executor.shutdown(wait=True)
        self.service.store.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             raw: bytes | None = None) -> HTTPResponse:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        headers = {"Content-Type": content_type} if data is not None else {}
        return self.fetch(path, method=method, body=data, headers=headers, raise_error=False)

    def error(self, r: HTTPResponse, status: int) -> dict[str, Any]:
        """The one error shape, with ``status``."""
        assert r.code == status, (r.code, r.body[:300])
        assert r.headers["Content-Type"].startswith("application/json")
        body = json.loads(r.body)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details", "request_id"}
        assert re.fullmatch(r"[0-9a-f]{12}", body["error"]["request_id"]) and b"Traceback" not in r.body
        return body["error"]

    def jobs_total(self) -> int:
        return json.loads(self.call("GET", "/api/processing/jobs/list?limit=1").body)["total"]

    def register_levels(self) -> None:
        csv = self.data_dir / "levels.csv"
        csv.write_text("gene,level\nG1,1.5\nG2,2.5\nG3,4.0\n")
        r = self.call("POST", "/api/processing/datasets", {"source": str(csv), "dataset_id": "levels", "format": "csv"})
        assert r.code == 201, r.body

    # -- tests ---------------------------------------------------------------------
    def test_health_without_a_cluster(self) -> None:
        r = self.call("GET", "/api/processing/health")
        assert r.code == 200, r.body
        body = json.loads(r.body)
        assert body["cluster_running"] is False and body["timestamp"].endswith("Z")

    def test_unknown_routes_and_wrong_methods_have_the_error_shape(self) -> None:
        assert self.error(self.call("GET", "/api/processing/nope"), 404)["code"] == "not_found"
        assert self.error(self.call("PUT", "/api/processing/jobs/submit", {}), 405)["code"] == "method_not_allowed"
        assert self.error(self.call("DELETE", "/api/processing/cluster/scale"), 405)["code"] == "method_not_allowed"

    def test_submit_validation_writes_nothing(self) -> None:
        self.register_levels()
        cases = [
            (b"{not json", 400, "not valid JSON"),
            (b"[1, 2]", 400, "JSON object"),
            (json.dumps({"dataset_id": "levels"}).encode(), 400, "missing required field(s): operation"),
            (json.dumps({"operation": "explode", "dataset_id": "levels"}).encode(), 400, "available: aggregate"),
            (json.dumps({"operation": "aggregate", "dataset_id": "nope", "parameters": MEAN}).encode(), 404,
             "no dataset 'nope'"),
            (json.dumps({"operation": "aggregate", "dataset_id": "levels",
                         "parameters": {"column": "gene", "operation": "mean"}}).encode(), 400, "numeric"),
            (json.dumps({"operation": "aggregate", "dataset_id": "levels", "parameters": MEAN,
                         "priority": "URGENT"}).encode(), 400, "LOW, NORMAL, HIGH, CRITICAL"),
            (json.dumps({"operation": "aggregate", "dataset_id": "levels", "parameters": MEAN,
                         "max_cores": 0}).encode(), 400, "max_cores"),
        ]
        for raw, status, needle in cases:
            err = self.error(self.call("POST", "/api/processing/jobs/submit", raw=raw), status)
            assert needle in err["message"], (raw, err["message"])
        assert self.jobs_total() == 0, "a refused submission writes nothing"

    def test_a_valid_submission_waits_for_a_cluster(self) -> None:
        self.register_levels()
        r = self.call("POST", "/api/processing/jobs/submit",
                      {"operation": "aggregate", "dataset_id": "levels", "parameters": MEAN, "priority": "HIGH"})
        assert r.code == 201, r.body
        job = json.loads(r.body)
        assert job["status"] == "pending" and job["job_id"].startswith("job_")
        status = json.loads(self.call("GET", f"/api/processing/jobs/{job['job_id']}/status").body)
        assert status["status"] == "pending" and status["priority"] == "HIGH"
        r = self.call("GET", f"/api/processing/jobs/{job['job_id']}/result")
        assert self.error(r, 409)["code"] == "job_not_completed"
        cancelled = self.call("POST", f"/api/processing/jobs/{job['job_id']}/cancel")
        assert cancelled.code == 200 and json.loads(cancelled.body)["status"] == "cancelled"
        assert self.error(self.call("POST", f"/api/processing/jobs/{job['job_id']}/cancel"), 409)["code"] == "job_finished"

    def test_scaling_a_stopped_cluster_is_409(self) -> None:
        err = self.error(self.call("POST", "/api/processing/cluster/scale", {"n_workers": 2}), 409)
        assert err["code"] == "cluster_not_running"
        err = self.error(self.call("POST", "/api/processing/cluster/scale", {"n_workers": -1}), 400)
        assert "at least 0" in err["message"]

    def test_catalogue_and_openapi(self) -> None:
        ops = json.loads(self.call("GET", "/api/processing/operations").body)["operations"]
        assert {"aggregate", "filter", "partition"} <= {o["name"] for o in ops}
        spec = json.loads(self.call("GET", "/api/processing/openapi.json").body)
        assert "/api/processing/jobs/submit" in spec["paths"]

    @gen_test(timeout=60)
    async def test_health_answers_while_a_costly_sql_query_is_checked(self) -> None:
        """The SQL check plans in a child process (up to its time limit): off the loop."""
        csv = self.data_dir / "levels.csv"
        csv.write_text("gene,level\nG1,1.5\nG2,2.5\n")
        r = await self.http_client.fetch(self.get_url("/api/processing/datasets"), method="POST", headers={
            "Content-Type": "application/json"}, body=json.dumps({"source": str(csv), "dataset_id": "levels"}))
        assert r.code == 201
        body = {"operation": "sql", "dataset_id": "levels",
                "parameters": {"query": "SELECT * FROM range(length(repeat('x', 1500000000)))"}}
        events: list[str] = []
        submit = asyncio.ensure_future(self.http_client.fetch(
            self.get_url("/api/processing/jobs/submit"), method="POST", body=json.dumps(body),
            headers={"Content-Type": "application/json"}, raise_error=False))
        submit.add_done_callback(lambda _: events.append("submit"))
        while not submit.done():
            await self.http_client.fetch(self.get_url("/api/processing/health"))
            events.append("health")
        assert (await submit).code == 400
        assert events.index("submit") >= 2, events

    @gen_test(timeout=120)
    async def test_health_answers_while_a_heavy_list_query_runs(self) -> None:
        seed_finished_jobs(self.service.store, 50_000)
        events: list[str] = []
        # two filters of several values and a deep offset: the page is sorted from many rows
        heavy = self.get_url("/api/processing/jobs/list?status=failed,cancelled&priority=HIGH,LOW"
                             "&offset=9000&limit=1000")
        listing = asyncio.ensure_future(self.http_client.fetch(heavy))
        listing.add_done_callback(lambda _: events.append("list"))
        while not listing.done():
            r = await self.http_client.fetch(self.get_url("/api/processing/health"))
            assert json.loads(r.body)["status"] in ("healthy", "degraded")
            events.append("health")
        body = json.loads((await listing).body)
        assert body["total"] == 10_000 and len(body["jobs"]) == 1000
        # health is asked again only once answered: a loop blocked by the list answers at most
        # the one health request it took before the list, so two answers mean one came mid-query
        assert events.index("list") >= 2, events
