"""Completion webhooks through the real API and service in-process (no cluster: a cancelled
job ends too), delivered to a real HTTP receiver on 127.0.0.1 in a thread of the test.

The remote-URL policy allows the loopback receiver here through its own setting
(REMOTE_ALLOW_PRIVATE, with http in REMOTE_PROTOCOLS); with the default policy the same
URL is refused at submit with 400 and nothing is written.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tornado import web
from tornado.testing import AsyncHTTPTestCase

from app.api.routes import api_routes
from app.service import ProcessingService
from app.settings import Settings
from tests import test_api_inprocess as inprocess  # its helpers (the module: its tests stay there)

SECRET = "webhook-test-secret"
MEAN = {"column": "level", "operation": "mean"}


class Receiver:
    """A tiny HTTP server that records each POST and answers the next code of ``codes`` (then 200)."""

    def __init__(self, codes: list[int]):
        self.codes, self.seen = list(codes), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.seen.append((dict(self.headers), body))
                self.send_response(outer.codes.pop(0) if outer.codes else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WebhookAPI(AsyncHTTPTestCase):
    allow_private = True
    _api = inprocess.InProcessAPI
    call, error, register_levels = _api.call, _api.error, _api.register_levels

    def get_app(self) -> web.Application:
        self.data_dir = Path(tempfile.mkdtemp(prefix="webhooks-"))
        self.service = ProcessingService(Settings(
            data_dir=self.data_dir, autostart=False, demo_dataset=False, remote_protocols=("http", "https"),
            remote_allow_private=self.allow_private, webhook_secret=SECRET, webhook_backoff_s=0.05, webhook_tries=3))
        return web.Application(api_routes(self.service))

    def setUp(self) -> None:
        super().setUp()

        async def start() -> None:
            self.service.webhooks.start()
        self.io_loop.run_sync(start)
        self.register_levels()

    def tearDown(self) -> None:
        self.io_loop.run_sync(self.service.webhooks.stop)
        super().tearDown()
        self.service.executor.shutdown(wait=True)
        self.service.store.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def submit(self, **extra: Any) -> Any:
        return self.call("POST", "/api/processing/jobs/submit",
                         {"operation": "aggregate", "dataset_id": "levels", "parameters": MEAN, **extra})

    def jobs_total(self) -> int:
        return json.loads(self.call("GET", "/api/processing/jobs/list?limit=1").body)["total"]

    def log_events(self, job_id: str, until: str, level: str | None = None,
                   timeout: float = 20) -> list[dict[str, Any]]:
        """The job's webhook log lines, once one of event ``until`` (and ``level``) is there (the loop
        runs meanwhile)."""
        async def wait() -> list[dict[str, Any]]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                lines = [line for line in self.service.store.job_log(job_id) if line["event"].startswith("webhook")]
                if any(line["event"] == until and level in (None, line["level"]) for line in lines):
                    return lines
                await asyncio.sleep(0.02)
            raise AssertionError(f"no {until} in the log of {job_id}: {self.service.store.job_log(job_id)}")
        return self.io_loop.run_sync(wait)


class TestDelivery(WebhookAPI):
    def answering(self, codes: list[int]) -> Receiver:
        self.receiver = Receiver(codes)
        self.addCleanup(self.receiver.close)
        return self.receiver

    def test_a_cancelled_job_posts_its_signed_status_after_a_retry(self) -> None:
        self.answering([500])
        r = self.submit(notify_url=self.receiver.url)
        assert r.code == 201, r.body
        job_id = json.loads(r.body)["job_id"]
        assert self.call("POST", f"/api/processing/jobs/{job_id}/cancel").code == 200
        lines = self.log_events(job_id, "webhook_delivered")
        assert [(line["event"], line["level"]) for line in lines] == [("webhook_failed", "warning"),
                                                                     ("webhook_delivered", "info")]
        assert "HTTP 500" in lines[0]["message"] and lines[1]["details"]["attempt"] == 2

        assert len(self.receiver.seen) == 2, "the receiver answered 500 once, then took the retry"
        headers, body = self.receiver.seen[-1]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Processing-Signature"], expected)
        assert headers["Content-Type"] == "application/json" and headers["X-Processing-Event"] == "job.cancelled"
        sent = json.loads(body)
        status = json.loads(self.call("GET", f"/api/processing/jobs/{job_id}/status").body)
        assert sent == status and sent["status"] == "cancelled" and sent["job_id"] == job_id
        assert self.service.store.get_job(job_id)["notify_url"] == self.receiver.url

    def test_the_server_wide_url_is_used_and_failures_give_up_after_the_tries(self) -> None:
        self.answering([500, 502, 503, 500])
        self.service.webhooks.settings = dataclasses.replace(self.service.settings, webhook_url=self.receiver.url)
        r = self.submit()
        job_id = json.loads(r.body)["job_id"]
        self.call("POST", f"/api/processing/jobs/{job_id}/cancel")
        lines = self.log_events(job_id, "webhook_failed", level="error")
        assert [line["level"] for line in lines] == ["warning", "warning", "error"], lines
        assert "giving up" in lines[-1]["message"] and len(self.receiver.seen) == 3


class TestRefused(WebhookAPI):
    allow_private = False  # the default policy: loopback and private hosts are refused

    def test_a_url_the_policy_refuses_is_400_and_nothing_is_written(self) -> None:
        receiver = Receiver([])
        try:
            for url, words in ((receiver.url, "not a public address"), ("http://localhost:9/x", "not a public"),
                               ("ftp://example.org/x", "http:// or https://"), ("not a url", "http:// or https://"),
                               ("http://10.1.2.3/hook", "not a public address"),
                               ("https://example.org/" + "a" * 3000, "at most 2048")):
                error = self.error(self.submit(notify_url=url), 400)
                assert error["details"]["field"] == "notify_url" and words in error["message"], (url, error)
            assert self.jobs_total() == 0 and receiver.seen == []
        finally:
            receiver.close()


def test_a_delivery_owed_when_the_server_is_killed_is_made_by_the_next_start(make_server, tmp_path):
    """The receiver refuses at first (its port bound, not listening); the server is killed (-9)
    between retries, the receiver starts listening on that port, and the server restarted on
    the same data dir delivers the job's signed status."""
    import socket

    from tests.helpers import register, wait_until, write_csv

    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))  # connecting is refused, and no one else takes the port meanwhile
    port = hold.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    env = {"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0", "REMOTE_ALLOW_PRIVATE": "1",
           "REMOTE_PROTOCOLS": "http,https", "WEBHOOK_SECRET": SECRET, "WEBHOOK_TRIES": "50",
           "WEBHOOK_BACKOFF_S": "0.2"}
    data = tmp_path / "data"
    srv = make_server(env, data_dir=data)
    register(srv, write_csv(data / "inputs" / "levels.csv"), "levels")
    r = srv.post("/api/processing/jobs/submit", {"operation": "aggregate", "dataset_id": "levels",
                                                  "parameters": {"column": "expression_level", "operation": "mean"},
                                                  "notify_url": url})
    assert r.status_code == 201, r.text
    job_id = r.json()["job_id"]
    assert srv.post(f"/api/processing/jobs/{job_id}/cancel").status_code == 200  # no cluster: it was pending

    def failures() -> list[dict]:
        lines = srv.get(f"/api/processing/jobs/{job_id}/logs").json()["lines"]
        return [line for line in lines if line["event"] == "webhook_failed"]
    wait_until(lambda: len(failures()) >= 2, 60, 0.1, "two refused tries")
    srv.kill()

    hold.close()
    receiver = Receiver([])
    receiver.server.server_close()  # rebound on the port the server kept trying
    receiver.server = ThreadingHTTPServer(("127.0.0.1", port), receiver.server.RequestHandlerClass)
    receiver.thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    receiver.thread.start()
    try:
        again = make_server(env, data_dir=data)
        wait_until(lambda: receiver.seen, 60, 0.1, "the owed delivery")
        headers, body = receiver.seen[0]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Processing-Signature"], expected)
        sent = json.loads(body)
        assert sent["job_id"] == job_id and sent["status"] == "cancelled"
        lines = wait_until(lambda: (ls := again.get(f"/api/processing/jobs/{job_id}/logs").json()["lines"])
                           and ls[-1]["event"] == "webhook_delivered" and ls, 30, 0.1, "the delivery logged")
        events = [line["event"] for line in lines]
        assert "webhook_resumed" in events and events.index("webhook_resumed") < events.index("webhook_delivered")
        tried = [line["details"]["attempt"] for line in lines if line["event"] == "webhook_failed"]
        assert lines[-1]["details"]["attempt"] > max(tried), "the tries go on from where they were"
        assert len(receiver.seen) == 1
    finally:
        receiver.close()


def test_an_old_data_dir_gains_the_owed_deliveries_table_and_keeps_them_across_opens(tmp_path):
    from app.store import Store
    from tests.test_upgrade import write_old_data_dir

    data = tmp_path / "old"
    write_old_data_dir(data)
    store = Store(data / "processing.db")
    try:
        store.add_delivery("job_old_done", "https://example.org/hook")
        store.add_delivery("job_old_done", "https://example.org/other")  # a job ends once: still one debt
        store.delivery_tried("job_old_done", 2, 123.0)
    finally:
        store.close()
    store = Store(data / "processing.db")
    try:
        assert store.pending_deliveries() == ["job_old_done"]
        assert store.delivery("job_old_done") == {"url": "https://example.org/hook", "attempts": 2, "next_at": 123.0}
        store.end_delivery("job_old_done")
        assert store.pending_deliveries() == [] and store.delivery("job_old_done") is None
    finally:
        store.close()
