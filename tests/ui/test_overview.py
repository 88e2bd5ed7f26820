"""The overview page in a real browser: start the cluster and see the workers."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.ui.helpers import shot

pytestmark = pytest.mark.ui


def test_click_start_shows_workers(stopped_server, page):
    srv = stopped_server  # shared with test_analyst's start from the overview (ui/conftest.py)
    page.goto(srv.url + "/")
    status = page.get_by_test_id("cluster-status")
    status.wait_for(timeout=30_000)
    assert status.inner_text() == "stopped"
    assert page.get_by_test_id("card-workers").inner_text() == "0"
    page.get_by_role("button", name="Start cluster").click()
    page.get_by_role("button", name="Starting…").wait_for(timeout=10_000)  # the button says it is working
    expect(page.get_by_test_id("cluster-status")).to_have_text("running", timeout=60_000)
    expect(page.get_by_test_id("card-workers")).to_have_text("2", timeout=30_000)
    page.get_by_text("Cluster started: 2 workers").wait_for(timeout=10_000)
    shot(page, "overview-running-1280x800")
    assert srv.get("/api/processing/cluster/status").json()["n_workers"] == 2
