"""The job page's log (followed live), downloads, re-run and clone, in the browser."""
from __future__ import annotations

import io

import pandas as pd
import pytest
from playwright.sync_api import expect

from tests.helpers import submit, wait_job
from tests.server import ServerProcess
from tests.ui.conftest import shot

pytestmark = pytest.mark.ui

GROUPED = {"column": "expression_level", "operation": "mean", "group_by": "condition"}


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


def test_log_downloads_and_rerun(srv: ServerProcess, page) -> None:
    job = submit(srv, parameters=GROUPED, priority="HIGH", max_cores=1, max_memory_gb=0.25)
    done = wait_job(srv, job)
    page.goto(f"{srv.url}/jobs?job={job}")
    lines = page.get_by_test_id("job-log-line")
    expect(lines).to_have_count(3, timeout=30_000)
    expect(lines.nth(0)).to_contain_text("queued at priority HIGH")
    expect(lines.nth(2)).to_contain_text("completed")
    with page.expect_download(timeout=30_000) as download:
        page.get_by_test_id("download-csv").click()
    table = pd.read_csv(io.BytesIO(download.value.path().read_bytes()))
    assert sorted(table["condition"]) == sorted(r["condition"] for r in done["result"]["rows"])
    shot(page, "job-log-and-actions")
    page.locator(".rerun-job button").click()
    link = page.get_by_test_id("rerun-link")
    expect(link).to_be_visible(timeout=30_000)
    again = link.inner_text().strip()
    rerun = wait_job(srv, again)
    assert rerun["rerun_of"] == job and rerun["parameters"] == done["parameters"]


def test_clone_fills_the_form_with_the_job(srv: ServerProcess, page) -> None:
    job = submit(srv, parameters={"column": "gene_id", "top": 7}, operation="value_counts", priority="LOW",
                 max_cores=1, max_memory_gb=0.25)
    wait_job(srv, job)
    page.goto(f"{srv.url}/jobs?job={job}")
    page.get_by_test_id("clone-job").click()
    expect(page.get_by_text(f"Cloned from {job}")).to_be_visible(timeout=30_000)
    page.locator(".submit-job button").click()
    expect(page.get_by_text("Submitted job_")).to_be_visible(timeout=30_000)
    listed = srv.get("/api/processing/jobs/list?operation=value_counts&limit=5").json()["jobs"]
    newest = srv.get(f"/api/processing/jobs/{listed[0]['job_id']}/status").json()
    assert newest["job_id"] != job and newest["parameters"]["top"] == 7 and newest["parameters"]["column"] == "gene_id"
    assert newest["priority"] == "LOW"


def test_the_search_box_finds_jobs_by_id_operation_or_parameters(srv: ServerProcess, page) -> None:
    wanted = submit(srv, parameters={"column": "gene_id", "top": 3}, operation="value_counts", cache=False)
    other = submit(srv, cache=False)
    wait_job(srv, wanted), wait_job(srv, other)
    page.goto(f"{srv.url}/jobs")
    rows = page.locator(".job-table .tabulator-row")
    expect(rows.first).to_be_visible(timeout=30_000)
    box = page.locator(".jobs-search input")
    box.fill(wanted)
    box.press("Enter")
    expect(rows).to_have_count(1, timeout=15_000)
    expect(rows.first.locator(".tabulator-cell[tabulator-field=job_id]")).to_have_text(wanted)
    box.fill("value_counts")
    box.press("Enter")
    expect(rows.first.locator(".tabulator-cell[tabulator-field=operation]")).to_have_text("value_counts",
                                                                                            timeout=15_000)
    box.fill('"gene_id" OR *(')  # search syntax is searched as text: no error, no match
    box.press("Enter")
    expect(page.get_by_text("No jobs match.")).to_be_visible(timeout=15_000)


def test_a_pipeline_page_draws_its_steps_with_live_states(srv: ServerProcess, page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    steps = [
        {"name": "high", "operation": "filter", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
         "parameters": {"conditions": [{"column": "expression_level", "op": ">", "value": 40.0}]}},
        {"name": "<b>count</b>", "operation": "aggregate", "dataset_id": "@step:high", "max_cores": 1,
         "max_memory_gb": 0.25, "parameters": {"column": "expression_level", "operation": "count"}},
    ]
    bad = srv.post("/api/processing/pipelines", {"name": "x", "steps": steps})
    assert bad.status_code == 400  # step names are plain words
    steps[1]["name"] = "count"
    created = srv.post("/api/processing/pipelines", {"name": "<img src=x onerror=alert(1)>", "steps": steps}).json()
    page.goto(f"{srv.url}/pipelines?id={created['pipeline_id']}")
    expect(page.get_by_test_id("pipeline-status")).to_have_text("completed", timeout=60_000)
    expect(page.get_by_test_id("pipeline-step")).to_have_count(2)
    expect(page.get_by_test_id("pipeline-name")).to_have_text("<img src=x onerror=alert(1)>")
    expect(page.locator(".bk-Canvas, canvas").first).to_be_visible()
    shot(page, "pipeline-page")
    assert dialogs == []
