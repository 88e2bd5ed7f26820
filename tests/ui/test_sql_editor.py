"""The SQL query editor in a real browser: the column list beside it, a query typed and
submitted and its table shown, a binding error shown under the editor with its position."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.helpers import pick, shot

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


def test_type_a_query_submit_and_see_the_result(srv: ServerProcess, page) -> None:
    srv.wait_workers(2)
    srv.wait_for(lambda: srv.get("/api/processing/datasets/demo_expression?preview_rows=0").status_code == 200, 60)
    page.goto(srv.url + "/jobs?dataset=demo_expression")  # the shared server holds other datasets too
    page.locator(".pc-field-job_operation select").wait_for(timeout=30_000)
    pick(page, "job_operation", "SQL query")
    editor = page.locator(".pc-sql-editor textarea")
    editor.wait_for(timeout=15_000)
    expect(page.get_by_test_id("sql-columns")).to_contain_text("expression_level", timeout=15_000)
    assert editor.evaluate("e => getComputedStyle(e).fontFamily").lower().find("mono") >= 0

    editor.fill("SELECT gene_id, count(*) AS n\nFROM data\nWHERE expresion_level > 0\nGROUP BY gene_id")
    editor.press("Tab")
    page.get_by_role("button", name="Submit job").click()
    error = page.get_by_test_id("error-query")
    expect(error).to_contain_text("line 3, column 7", timeout=15_000)
    expect(error).to_contain_text("expresion_level")

    editor.fill("SELECT gene_id, count(*) AS n\nFROM data\nGROUP BY gene_id\nORDER BY gene_id\nLIMIT 3")
    editor.press("Tab")
    page.get_by_role("button", name="Submit job").click()
    page.get_by_text("Submitted job_").wait_for(timeout=15_000)
    expect(error).to_have_text("")
    job_id = page.get_by_test_id("job-id").inner_text(timeout=15_000)
    expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=90_000)
    table = page.locator(".result-table")
    expect(table).to_contain_text("GENE00001", timeout=15_000)
    api = srv.get(f"/api/processing/jobs/{job_id}/status").json()
    assert api["result_kind"] == "table" and [r["gene_id"] for r in api["result"]["rows"]] == \
        ["GENE00001", "GENE00002", "GENE00003"]
    expect(table.locator(".tabulator-row")).to_have_count(3)
    shot(page, "sql-editor-1280x800")
