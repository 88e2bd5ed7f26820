"""Numbers in tables are formatted by dtype: small values (p- and q-values) in scientific notation, never 0.0000."""
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


def cells(page, table: str, field: str) -> list[str]:
    return page.locator(f".{table} .tabulator-cell[tabulator-field='{field}']").all_inner_texts()


def test_small_floats_are_scientific_in_preview_and_results(srv: ServerProcess, page) -> None:
    body = "k,p\n" + "".join(f"{'ab'[i % 2]},{(i + 1) * 1e-6}\n" for i in range(10))
    r = requests.post(f"{srv.url}/api/processing/datasets/upload", params={"filename": "p.csv", "dataset_id": "pvals"},
                      data=body.encode(), headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 201, r.text
    page.goto(srv.url + "/data?dataset=pvals")
    expect(page.locator(".dataset-preview .tabulator-cell[tabulator-field='p']").first).to_have_text("1.0000e-6",
                                                                                                    timeout=30_000)
    assert all("e-" in c for c in cells(page, "dataset-preview", "p")), cells(page, "dataset-preview", "p")
    r = srv.post("/api/processing/jobs/submit", {"operation": "aggregate", "dataset_id": "pvals", "max_cores": 1,
                                                 "max_memory_gb": 0.25,
                                                 "parameters": {"column": "p", "operation": "mean", "group_by": "k"}})
    job = srv.get(f"/api/processing/jobs/{r.json()['job_id']}/wait", params={"timeout": 120}, timeout=130).json()
    assert job["status"] == "completed", job
    page.goto(f"{srv.url}/jobs?job={job['job_id']}")
    page.locator(".result-table .tabulator-row").first.wait_for(timeout=30_000)
    value_field = [c for c in job["result"]["columns"] if c != "k"][0]
    shown = cells(page, "result-table", value_field)
    assert shown and all(c.endswith(("e-6", "e-5")) and c != "0.0000" for c in shown), shown
    shot(page, "result-scientific-1280x800")
