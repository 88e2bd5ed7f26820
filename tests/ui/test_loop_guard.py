"""No page reads the store on the event loop (issue 17, item 7): the browser tests' servers run
with STORE_LOOP_GUARD on, which logs "store read on the event loop" for any SQLite read made on
a thread that runs an event loop; after a visit of every page, the table's filters and pages,
a job opened and a job cloned, the log holds no such report from the pages' code (components/).
The engine's own reads on the loop (recovery at start, the watchdog) are not the pages' and are
not asserted here. The guard itself is checked on a real store first."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from playwright.sync_api import expect

from app import store_pool
from app.store import Store
from tests.helpers import wait_job
from tests.ui.test_page_reads import select_with

GUARD_LINE = "store read on the event loop"
JOB = {"operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
       "parameters": {"column": "expression_level", "operation": "count"}}
PAGES = ("/", "/cluster", "/data", "/data?dataset=demo_expression", "/monitoring", "/pipelines", "/wall")


def test_the_guard_reports_a_read_on_the_loop_and_not_one_on_the_read_pool(tmp_path, caplog):
    store = Store(tmp_path / "guard.db")
    store_pool.set_loop_guard(True)
    try:
        async def reads() -> None:
            await store.reading(store.list_datasets, 5, 0)  # on the read pool: silent
            store.list_datasets(5, 0)  # on the loop
        def on_a_thread_of_its_own() -> None:  # (the browser tests' Playwright runs a loop on this one)
            store.list_datasets(5, 0)  # no loop on this thread: silent
            asyncio.run(reads())
        with caplog.at_level(logging.ERROR, logger="app.store_pool"):
            worker = threading.Thread(target=on_a_thread_of_its_own)
            worker.start()
            worker.join(60)
    finally:
        store_pool.set_loop_guard(None)
        store.close()
    errors = [r.getMessage() for r in caplog.records if GUARD_LINE in r.getMessage()]
    assert errors, "a read on the loop was not reported"
    # only the read on the loop: its stack names the caller; the read with no loop is not reported
    assert all("tests/ui/test_loop_guard.py" in e and " in reads" in e for e in errors), errors


@pytest.mark.ui
def test_no_page_reads_the_store_on_the_event_loop(ui_server, page):
    jobs = [ui_server.post("/api/processing/jobs/submit", JOB).json()["job_id"] for _ in range(12)]
    for job_id in jobs:
        wait_job(ui_server, job_id)
    job_id = jobs[0]
    for path in PAGES:
        page.goto(ui_server.url + path)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # a few samples: the periodic reads run too

    page.goto(ui_server.url + f"/jobs?job={job_id}")
    expect(page.get_by_test_id("job-id").first).to_contain_text(job_id, timeout=20_000)
    page.goto(ui_server.url + f"/jobs?clone={job_id}")
    page.locator(".submit-job").wait_for(timeout=20_000)
    page.goto(ui_server.url + "/jobs")
    pager = page.get_by_test_id("jobs-pager")
    expect(pager).to_contain_text("1–10", timeout=20_000)
    page.get_by_role("button", name="Older ›").click()
    expect(pager).to_contain_text("11–", timeout=20_000)
    select_with(page, "Oldest first").select_option(label="Oldest first")
    expect(pager).to_contain_text("1–10", timeout=20_000)
    page.locator(".jobs-search input").fill(job_id)
    page.locator(".jobs-search input").press("Enter")
    expect(page.get_by_test_id("jobs-pager")).to_contain_text("1–1 ", timeout=20_000)
    # the pager and the table are drawn separately: click the row once the table shows the found job
    # (CI once clicked the previous page's first row as it was being replaced, and no detail opened)
    row = page.locator(".job-table .tabulator-row").first
    expect(row).to_contain_text(job_id, timeout=20_000)
    row.click()
    expect(page.get_by_test_id("job-id").first).to_contain_text(job_id, timeout=20_000)
    page.wait_for_timeout(2500)

    reports = guard_reports(ui_server.log_path.read_text(errors="replace"))
    by_pages = [r for r in reports if "components/" in r]
    assert not by_pages, "\n\n".join(by_pages)


def guard_reports(log: str) -> list[str]:
    """Each guard report of ``log``: its ERROR line and the stack lines indented under it."""
    reports: list[str] = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if GUARD_LINE in line:
            stack = [line]
            for more in lines[i + 1:]:
                if not more.startswith("  "):
                    break
                stack.append(more)
            reports.append("\n".join(stack))
    return reports
