"""Choices the pages read from the store after they are up, on its read pool (nothing is read on
the event loop while a page is built): the jobs page's dataset filter and the pipeline picker."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

JOB = {"operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
       "parameters": {"column": "expression_level", "operation": "count"}}


def select_with(page, option: str):
    """The <select> that offers ``option`` (Panel draws each in a shadow root, which locators pierce)."""
    return page.locator("select", has=page.locator("option", has_text=option))


def test_the_jobs_dataset_filter_offers_the_datasets_read_after_the_page_is_up(ui_server, page):
    job_id = ui_server.post("/api/processing/jobs/submit", JOB).json()["job_id"]
    page.goto(ui_server.url + "/jobs")
    datasets = select_with(page, "All datasets")
    expect(datasets.locator("option", has_text="demo_expression")).to_have_count(1, timeout=20_000)
    datasets.select_option(label="demo_expression")
    expect(page.get_by_text(job_id).first).to_be_visible(timeout=20_000)


def test_the_pipeline_picker_lists_recent_pipelines_and_shows_the_one_chosen(ui_server, page):
    name = "picked <b>later</b>"
    created = ui_server.post("/api/processing/pipelines", {"name": name, "steps": [{**JOB, "name": "count"}]}).json()
    label = f"{name} ({created['pipeline_id']})"
    page.goto(ui_server.url + "/pipelines")
    picker = select_with(page, "Choose a pipeline")
    expect(picker.locator("option", has_text=label)).to_have_count(1, timeout=20_000)  # the name as text
    picker.select_option(label=label)
    expect(page.get_by_test_id("pipeline-name")).to_have_text(name, timeout=20_000)
    expect(page.get_by_test_id("pipeline-step")).to_have_count(1)
