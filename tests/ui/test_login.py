"""Sign-in in a real browser: with PROCESSING_API_TOKEN set the dashboard asks for the
token, a wrong one is refused, the right one shows the page; the wall opens from
its URL token without signing in, and keeps working (live figures, health polling)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.helpers import shot

pytestmark = pytest.mark.ui

TOKEN = "ui-api-token-41d7"
WALL_TOKEN = "ui-wall-token-a9c3"


class AnalystApp(BaseHTTPRequestHandler):
    """The analyst's own web app: one blank page, on another origin than the API."""

    def do_GET(self) -> None:
        body = b"<!doctype html><html><body>analyst app</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def analyst_app() -> Iterator[str]:
    """Its origin (http://localhost:<port>, port 0 bound first): the server is told to allow it."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), AnalystApp)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, analyst_app: str) -> Iterator[ServerProcess]:
    # a page of the analyst's app (not one of this server's pages, whose CSP allows no other
    # origin) calls the API cross-origin
    server = ServerProcess(tmp_path_factory.mktemp("login"), {"PROCESSING_API_TOKEN": TOKEN, "WALL_TOKEN": WALL_TOKEN,
                                                              "CORS_ALLOWED_ORIGINS": analyst_app})
    server.start(timeout=120)
    yield server
    server.cleanup()


def test_dashboard_asks_for_sign_in_and_the_token_opens_it(srv, page):
    page.goto(srv.url + "/cluster")
    page.wait_for_url("**/login**", timeout=15_000)
    expect(page.get_by_role("heading", name="Distributed Processing Cluster")).to_be_visible()
    field = page.get_by_label("Access token")
    expect(field).to_have_attribute("type", "password")
    assert page.get_by_test_id("cluster-status").count() == 0
    shot(page, "login-1280x800")

    field.fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The token is not valid.", timeout=15_000)
    assert "/login" in page.url

    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(srv.url + "/cluster", timeout=15_000)
    expect(page.get_by_test_id("cluster-status")).to_have_text("running", timeout=60_000)
    shot(page, "login-signed-in-cluster")
    # the session cookie opens the other pages too
    page.goto(srv.url + "/")
    expect(page.get_by_test_id("cluster-status")).to_be_visible(timeout=30_000)


def test_wall_opens_with_its_url_token(srv, wide_page):
    wide_page.goto(srv.url + f"/wall?token={WALL_TOKEN}")
    assert "/login" not in wide_page.url
    expect(wide_page.get_by_test_id("wall-status")).to_contain_text("running", ignore_case=True, timeout=60_000)
    first = wide_page.get_by_test_id("wall-updated").inner_text()
    expect(wide_page.get_by_test_id("wall-updated")).not_to_have_text(first, timeout=15_000)  # the session is live
    health = wide_page.evaluate("async () => (await fetch('/api/processing/health', {cache: 'no-store'})).status")
    assert health == 200  # the wall's watchdog polls this without a token
    expect(wide_page.get_by_test_id("wall-offline")).to_be_hidden()
    shot(wide_page, "wall-with-token-1920x1080")


def test_wall_without_its_token_asks_for_sign_in(srv, page):
    page.goto(srv.url + "/wall?token=wrong")
    page.wait_for_url("**/login**", timeout=15_000)
    expect(page.get_by_label("Access token")).to_be_visible()


SUBMIT_JOB = """async ([base, token]) => {
  // the guide's submitJob(), with the token: a cross-origin POST with JSON (preflighted)
  const response = await fetch(`${base}/api/processing/jobs/submit`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ operation: 'aggregate', dataset_id: 'demo_expression',
      parameters: { column: 'expression_level', operation: 'mean' }, priority: 'HIGH',
      max_memory_gb: 0.5, max_cores: 1 })
  });
  const job = await response.json();
  const status = await (await fetch(`${base}/api/processing/jobs/${job.job_id}/status`,
                                    { headers: { Authorization: `Bearer ${token}` } })).json();
  return [response.status, response.headers.get('X-Request-Id'), job.job_id, status.job_id];
}"""


def test_the_guide_fetch_example_works_from_an_allowed_origin(srv, analyst_app, page):
    page.goto(f"{analyst_app}/index.html")  # a page of the allowed origin
    api = srv.url
    status, request_id, job_id, polled = page.evaluate(SUBMIT_JOB, [api, TOKEN])
    assert status == 201 and request_id and job_id.startswith("job_") and polled == job_id
    page.goto("about:blank")  # an origin not in CORS_ALLOWED_ORIGINS
    blocked = page.evaluate("async (url) => { try { await fetch(url); return 'read'; } catch (e) { return 'blocked'; } }",
                            f"{api}/api/processing/health")
    assert blocked == "blocked"  # the server answered, but the browser keeps the answer from the script
