"""Closing browser tabs leaves no traceback in the server's log, and the sampler's reads of
the scheduler are not logged every second (issue 15, item 19)."""
from __future__ import annotations

import time

import pytest

from tests.helpers import wait_job
from tests.ui.helpers import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.ui

PAGES = ("/", "/jobs", "/monitoring", "/cluster")
ROUNDS = 4


def _log(srv, start: int) -> str:
    return srv.log_path.read_bytes()[start:].decode(errors="replace")


def test_closing_tabs_logs_no_traceback(server):
    from playwright.sync_api import sync_playwright

    start = server.log_path.stat().st_size
    jobs = [server.post("/api/processing/jobs/submit", json={
        "operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
        "parameters": {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"}}).json()["job_id"]
        for _ in range(3)]
    opened = 0
    with sync_playwright() as p:
        # a browser of its own: tabs of a killed browser close their sockets without a goodbye
        for round_ in range(ROUNDS):
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for path in PAGES:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.goto(server.url + path)
                opened += 1
            time.sleep(2.5)  # the pages stream samples meanwhile
            if round_ % 2:
                browser.close()
            else:
                for context in browser.contexts:
                    context.close()
                browser.close()
    for job_id in jobs:
        wait_job(server, job_id, timeout=120)
    deadline = time.time() + 60  # Bokeh drops a session some 15-30 s after its socket closed
    while time.time() < deadline and _log(server, start).count("session closed: live feed stopped") < opened:
        time.sleep(1)
    text = _log(server, start)
    assert text.count("session closed: live feed stopped") >= opened, text[-3000:]
    assert "Traceback" not in text and "never retrieved" not in text, text[-6000:]
    assert "out-of-band" not in text
    scheduler_log = server.data_dir / "dask-scratch" / "scheduler.log"
    assert "out-of-band" not in scheduler_log.read_text(errors="replace")
