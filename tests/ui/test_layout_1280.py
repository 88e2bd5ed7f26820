"""At 1280 px the Data page's table shows every column whole, even with long dataset names."""
from __future__ import annotations

import signal

import pytest
import requests

from tests.server import ServerProcess
from tests.ui.conftest import shot

pytestmark = pytest.mark.ui

LONG_NAME = "Expression of the second replicate batch, normalised and filtered by the core facility"

CLIPPED_JS = """
(field) => {
  const found = [];
  const walk = (root) => { root.querySelectorAll(`.tabulator-cell[tabulator-field='${field}']`)
      .forEach(el => found.push(el)); root.querySelectorAll('*').forEach(el => { if (el.shadowRoot) walk(el.shadowRoot); }); };
  walk(document);
  return found.map(cell => {
    const holder = cell.closest('.tabulator-tableholder') || cell.closest('.tabulator');
    const box = cell.getBoundingClientRect(), view = holder.getBoundingClientRect();
    return {text: cell.textContent, clipped: cell.scrollWidth > cell.clientWidth + 1 || box.right > view.right + 1};
  });
}
"""


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


def test_registered_column_is_whole_at_1280(srv: ServerProcess, page) -> None:
    for n in range(3):
        r = requests.post(f"{srv.url}/api/processing/datasets/upload", timeout=60,
                          params={"filename": "l.csv", "dataset_id": f"replicate_batch_{n}_normalised_filtered",
                                  "name": f"{LONG_NAME} {n}"},
                          data=b"a,b\n1,2\n", headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    page.goto(srv.url + "/data")
    page.locator(".dataset-table .tabulator-row").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    shot(page, "data-long-names-1280x800")
    cells = page.evaluate(CLIPPED_JS, "created")
    assert cells and not [c for c in cells if c["clipped"]], cells


def test_partition_form_is_in_view_and_says_what_is_wrong(srv: ServerProcess, wide_page) -> None:
    page = wide_page
    page.goto(srv.url + "/data?dataset=demo_expression")
    page.get_by_test_id("dataset-title").wait_for(timeout=30_000)
    button = page.locator(".partition-dataset button")
    button.wait_for(timeout=15_000)
    box = button.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 1080, box  # no scrolling needed at 1920×1080
    field = page.locator(".pc-field-n_partitions input")
    field.fill("0")
    field.press("Tab")
    button.click()
    message = page.get_by_text("Not partitioned: ")
    message.first.wait_for(timeout=15_000)
    text = message.first.inner_text()
    assert "see the message under the field" not in text and "n_partitions" in text, text


def test_wall_job_names_are_whole_at_1280(srv: ServerProcess, page) -> None:
    body = "gene,condition,value\n" + "".join(f"g{i % 500},{'ab'[i % 2]},{i % 97 + 1}\n" for i in range(400_000))
    r = requests.post(f"{srv.url}/api/processing/datasets/upload", params={"filename": "de.csv", "dataset_id": "de"},
                      data=body.encode(), headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 201, r.text
    page.goto(srv.url + "/wall")
    page.get_by_test_id("wall-status").wait_for(timeout=30_000)
    # the workers are stopped (SIGSTOP) while the wall is read: the job stays running however
    # fast the kernels finish it
    workers = [p for p in srv.descendants() if "multiprocessing" in " ".join(p.cmdline())
               and "resource_tracker" not in " ".join(p.cmdline())]
    for p in workers:
        p.send_signal(signal.SIGSTOP)
    try:
        job = srv.post("/api/processing/jobs/submit", {
            "operation": "differential_expression", "dataset_id": "de", "max_cores": 1, "max_memory_gb": 0.5,
            "parameters": {"feature_column": "gene", "group_column": "condition", "a": "a", "b": "b",
                           "value_column": "value"}})
        assert job.status_code == 201, job.text
        # this job's name (the server is shared: another module's job may be on the wall too)
        name = page.locator(".wall-job-name", has_text="differential_expression").first
        name.wait_for(timeout=60_000)
        size = name.evaluate("el => ({sw: el.scrollWidth, cw: el.clientWidth, sh: el.scrollHeight, ch: el.clientHeight,"
                             " text: el.textContent})")
        shot(page, "wall-long-name-1280x800")
    finally:
        for p in workers:
            p.send_signal(signal.SIGCONT)
    assert size["text"] == "differential_expression" and size["sw"] <= size["cw"] + 1 and size["sh"] <= size["ch"] + 1, size
