"""A job's page: a short job shows no progress chart and no unknown task counts (issue 15, item 13)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app.times import epoch
from tests.helpers import wait_job
from tests.ui.helpers import shot

pytestmark = pytest.mark.ui


def test_short_job_has_no_chart_and_no_unknown_counts(ui_server, page):
    r = ui_server.post("/api/processing/jobs/submit", json={
        "operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
        "parameters": {"column": "expression_level", "operation": "mean"}})
    assert r.status_code == 201, r.text
    job = wait_job(ui_server, r.json()["job_id"])
    ran_s = epoch(job["completed_at"]) - epoch(job["started_at"])
    page.goto(f"{ui_server.url}/jobs?job={job['job_id']}")
    expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=30_000)
    chart = page.locator(".job-progress-chart")
    if ran_s < 2:  # what the job's own timestamps say, not a guess about this machine's speed
        expect(chart).to_be_hidden()
    else:
        expect(chart).to_be_visible()
    expect(page.locator("table.pc-kv")).to_be_visible()
    expect(page.get_by_text("— of —")).to_have_count(0)
    if job.get("tasks_total"):
        expect(page.get_by_text(f"of {job['tasks_total']} done")).to_be_visible()
    shot(page, "job-short-1280x800")
