"""Filter conditions as rows (issue 15, item 12) and the Data list's job results, search, sort
and delete (item 5), on one private server (the last test stops its cluster)."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import register, wait_job, write_csv
from tests.ui.helpers import module_server, shot

pytestmark = pytest.mark.ui
API = "/api/processing"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from module_server(tmp_path_factory, "rows", {})


def row(page, n: int):
    return page.locator(".pc-field-conditions .pc-row").nth(n - 1)


def submitted_id(page) -> str:
    alert = page.get_by_text(re.compile(r"Submitted job_\w+"))
    expect(alert).to_be_visible(timeout=20_000)
    return re.search(r"job_\w+", alert.inner_text()).group(0)


def test_filter_conditions_are_built_as_rows(srv, page):
    srv.wait_workers(2)
    page.goto(srv.url + "/jobs?dataset=demo_expression")
    page.locator(".pc-field-job_operation select").select_option(label="Filter rows", timeout=30_000)
    page.locator(".add-row-conditions button").click()
    expect(page.locator(".pc-field-conditions .pc-row")).to_have_count(2)
    row(page, 1).locator(".pc-row-column select").select_option(label="expression_level (float64)")
    row(page, 1).locator(".pc-row-op select").select_option(">")
    number = row(page, 1).locator(".pc-row-value input")
    expect(row(page, 1).locator(".pc-row-value [class*='spin']").first).to_be_attached()  # a number input: a float column
    number.fill("5.5")
    number.press("Enter")
    page.locator(".submit-job button").click()
    expect(page.get_by_test_id("error-conditions")).to_have_text("Row 2: choose a column", timeout=10_000)
    row(page, 2).locator(".pc-row-column select").select_option(label="condition (object)")
    row(page, 2).locator(".pc-row-op select").select_option("in")
    values = row(page, 2).locator(".pc-row-value input")
    expect(values).to_have_attribute("placeholder", "a, b, c")  # a list for 'in'
    values.fill("treated")
    values.press("Enter")
    page.locator(".submit-job button").click()
    expect(page.get_by_test_id("error-conditions")).to_have_text("", timeout=10_000)
    job_id = submitted_id(page)
    job = srv.get(f"{API}/jobs/{job_id}/status").json()
    assert job["parameters"] == {"conditions": [{"column": "expression_level", "op": ">", "value": 5.5},
                                                {"column": "condition", "op": "in", "value": ["treated"]}],
                                 "combine": "all"}
    done = wait_job(srv, job_id)
    assert done["status"] == "completed", done
    assert srv.get(f"{API}/jobs/{job_id}/status").json()["result"]["rows"] > 0


def test_transform_steps_are_built_as_rows(srv, page):
    page.goto(srv.url + "/jobs?dataset=demo_expression")
    page.locator(".pc-field-job_operation select").select_option(label="Transform columns", timeout=30_000)
    step = page.locator(".pc-field-transforms .pc-row").first
    step.locator(".pc-row-column select").select_option(label="expression_level (float64)")
    step.locator(".pc-row-fn select").select_option("zscore")
    step.locator(".pc-row-group_by select").select_option(label="gene_id (object)")
    page.locator(".submit-job button").click()
    job_id = submitted_id(page)
    job = srv.get(f"{API}/jobs/{job_id}/status").json()
    assert job["parameters"]["transforms"] == [{"column": "expression_level", "fn": "zscore", "group_by": "gene_id"}]
    assert wait_job(srv, job_id)["status"] == "completed"


def cells(page) -> list[str]:
    return page.locator(".dataset-table .tabulator-cell[tabulator-field='dataset_id']").all_inner_texts()


def test_job_results_search_sort_and_delete(srv, page):
    job_id = srv.post(f"{API}/jobs/submit", json={
        "operation": "filter", "dataset_id": "demo_expression",
        "parameters": {"conditions": [{"column": "expression_level", "op": ">", "value": 1}]}}).json()["job_id"]
    assert wait_job(srv, job_id)["status"] == "completed"
    result_id = f"{job_id}_result"
    for name in ("zeta_mine", "alpha_mine"):
        write_csv(srv.data_dir / f"{name}.csv")
        register(srv, srv.data_dir / f"{name}.csv", name)
    page.goto(srv.url + "/data")
    expect(page.locator(".dataset-table .tabulator-row").first).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("dataset-count")).to_contain_text("job result")
    assert "alpha_mine" in cells(page) and not any(c.endswith("_result") for c in cells(page))
    page.locator(".dataset-show-results input").check()
    expect(page.locator(".dataset-table")).to_contain_text(result_id)
    page.locator(".dataset-sort select").select_option("Name (A–Z)")
    expect(page.locator(".dataset-table .tabulator-row").first).to_contain_text("alpha_mine")
    search = page.locator(".dataset-search input")
    search.fill(result_id[4:12])  # part of the id
    expect(page.locator(".dataset-table .tabulator-row")).to_have_count(1)
    expect(page.locator(".dataset-table")).to_contain_text(result_id)
    search.fill("ALPHA")  # names and ids, any case
    expect(page.locator(".dataset-table .tabulator-row")).to_have_count(1)
    shot(page, "data-list-search-1280x800")
    # the job's page links its result dataset
    page.goto(srv.url + f"/jobs?job={job_id}")
    expect(page.get_by_test_id("result-dataset")).to_have_text(result_id, timeout=30_000)
    # delete: a dataset a pending job uses is refused with the API's message, then deleted once free
    assert srv.post(f"{API}/cluster/stop").status_code == 200  # the next job stays pending
    pending = srv.post(f"{API}/jobs/submit", json={"operation": "describe", "dataset_id": "alpha_mine",
                                                   "parameters": {}}).json()["job_id"]
    page.goto(srv.url + "/data")
    page.locator(".dataset-table .tabulator-cell", has_text="alpha_mine").first.click(timeout=30_000)
    page.locator(".delete-dataset button").click()
    expect(page.get_by_test_id("delete-confirm")).to_contain_text("alpha_mine")
    page.locator(".confirm-delete button").click()
    expect(page.get_by_text("is used by pending or running jobs")).to_be_visible(timeout=10_000)
    assert srv.get(f"{API}/datasets/alpha_mine").status_code == 200
    assert srv.post(f"{API}/jobs/{pending}/cancel").status_code == 200
    page.locator(".delete-dataset button").click()
    page.locator(".cancel-delete button").click()  # keeping it changes nothing
    assert srv.get(f"{API}/datasets/alpha_mine").status_code == 200
    page.locator(".delete-dataset button").click()
    page.locator(".confirm-delete button").click()
    expect(page.get_by_text("Deleted alpha_mine.")).to_be_visible(timeout=10_000)
    assert srv.get(f"{API}/datasets/alpha_mine").status_code == 404
    expect(page.locator(".dataset-table")).not_to_contain_text("alpha_mine")
