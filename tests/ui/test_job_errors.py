"""A failed job shows one clean message per attempt; the long part (Dask's table) folds under "Details"."""
from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.conftest import shot

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


@pytest.fixture(scope="module")
def failed_job(srv: ServerProcess) -> dict:
    """A text value past the reader's schema sample in a numeric column: Dask fails with a long, tabled message."""
    body = ("k,val\n" + "".join(f"a,{i}\n" for i in range(600_000)) + "a,not a number\n").encode()
    r = requests.post(f"{srv.url}/api/processing/datasets/upload", params={"filename": "bad.csv", "dataset_id": "bad"},
                      data=body, headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 201, r.text
    r = srv.post("/api/processing/jobs/submit", {"operation": "aggregate", "dataset_id": "bad", "max_cores": 1,
                                                 "max_memory_gb": 0.25, "parameters": {"column": "val", "operation": "sum"}})
    assert r.status_code == 201, r.text
    job = srv.get(f"/api/processing/jobs/{r.json()['job_id']}/wait", params={"timeout": 120}, timeout=130).json()
    assert job["status"] == "failed", job
    return job


def test_one_clean_line_and_expandable_details(srv: ServerProcess, failed_job: dict, page) -> None:
    page.goto(f"{srv.url}/jobs?job={failed_job['job_id']}")
    error = page.get_by_test_id("job-error")
    expect(error).to_be_visible(timeout=30_000)
    summary = error.locator(".pc-error-summary").inner_text()
    kind = failed_job["error"]["type"]
    assert summary.startswith(f"{kind}: ") and f"{kind}: {kind}" not in summary, summary
    assert "\n" not in summary.strip() and "+---" not in summary, summary
    assert failed_job["error"]["message"].count(kind) == 1 and error.inner_text().count(f"{kind}:") == 1
    lines = failed_job["error"]["message"].strip().splitlines()
    if len(lines) > 1:  # the reader's message has more lines (e.g. Dask's dtype table): folded until asked for
        rest = error.get_by_text(lines[-1].strip()[:30], exact=False)
        expect(rest).to_be_hidden()
        error.get_by_text("Details").click()
        expect(rest).to_be_visible(timeout=5_000)
    causes = page.get_by_test_id("job-attempts").locator(".pc-error-summary")
    expect(causes.first).to_be_visible()
    assert all("+---" not in c and f"{kind}: {kind}" not in c for c in causes.all_inner_texts())
    shot(page, "job-error-1280x800")
