"""Closing browser tabs leaves no traceback in the server's log, and the sampler's reads of
the scheduler are not logged every second (issue 15, item 19)."""
from __future__ import annotations

import time

import pytest

from tests.helpers import wait_job
from tests.ui.helpers import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.ui

PAGES = ("/", "/jobs", "/monitoring", "/cluster")
ROUNDS = 2  # one whose tabs close their contexts first, one whose browser is killed with them open


def _log(srv, start: int) -> str:
    return srv.log_path.read_bytes()[start:].decode(errors="replace")


def test_closing_tabs_logs_no_traceback(ui_server, browser):
    # the shared server may have been started for this test: its workers' start-up lines
    # (and the one question the sampler asks each new worker) come before the window read
    ui_server.wait_workers(2)
    time.sleep(2)
    start = ui_server.log_path.stat().st_size
    jobs = [ui_server.post("/api/processing/jobs/submit", json={
        "operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.25,
        "parameters": {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"}}).json()["job_id"]
        for _ in range(3)]
    opened = 0
    # browsers of its own, from the session's Playwright (a second sync Playwright cannot start
    # in the same thread): tabs of a killed browser close their sockets without a goodbye
    chromium = browser.browser_type
    for round_ in range(ROUNDS):
        own = chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for path in PAGES:
            page = own.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(ui_server.url + path)
            opened += 1
        time.sleep(2.5)  # the pages stream samples meanwhile
        if not round_ % 2:
            for context in own.contexts:
                context.close()
        own.close()
    for job_id in jobs:
        wait_job(ui_server, job_id, timeout=120)
    # Bokeh drops a session SESSION_EXPIRY_S (5 s for test servers) to 1.5x that after its socket
    # closed; repeated log lines are rate limited (counted, not each written), so wait for the
    # line saying no session is left
    deadline = time.time() + 90
    while time.time() < deadline and "(0 still active)" not in _log(ui_server, start):
        time.sleep(1)
    text = _log(ui_server, start)
    assert "(0 still active)" in text, text[-3000:]
    assert opened == ROUNDS * len(PAGES)
    assert "Traceback" not in text and "never retrieved" not in text, text[-6000:]
    # the sampler asks a worker who it is once, when it joins (a nanny's restart may bring one
    # in the window): never once per sample, which logged a line a second per worker
    assert text.count("out-of-band") <= 2, text[-6000:]
    scheduler_log = ui_server.data_dir / "dask-scratch" / "scheduler.log"
    assert "out-of-band" not in scheduler_log.read_text(errors="replace")
