"""The cluster controls: Stop asks first and says how many jobs run; the controls show the cluster's state."""
from __future__ import annotations

import signal

import pytest
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.conftest import shot

pytestmark = pytest.mark.ui

LONG_JOB = {"operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.5,
            "parameters": {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"}}


def running_count(srv: ServerProcess) -> int:
    return srv.get("/api/processing/queue/status").json()["queue_status"]["total_running"]


@pytest.fixture(scope="module")
def srv(big_demo_server: ServerProcess) -> ServerProcess:
    """The shared 2M-row demo server (ui/conftest.py), once no job of an earlier module runs
    on it: the stop dialog counts the running jobs."""
    big_demo_server.wait_for(lambda: running_count(big_demo_server) == 0, 120, 0.5)
    return big_demo_server


def test_stop_asks_with_the_running_count_and_cancel_keeps_the_cluster(srv: ServerProcess, page) -> None:
    srv.wait_workers(2)
    srv.wait_for(lambda: srv.get("/api/processing/datasets/demo_expression").status_code == 200, 120, 0.5)
    # the workers are stopped (SIGSTOP) while the dialog is read: the job is still running
    # however fast the kernels would finish it
    workers = [p for p in srv.descendants() if "multiprocessing" in " ".join(p.cmdline())
               and "resource_tracker" not in " ".join(p.cmdline())]
    for p in workers:
        p.send_signal(signal.SIGSTOP)
    try:
        r = srv.post("/api/processing/jobs/submit", LONG_JOB)
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        srv.wait_for(lambda: srv.get(f"/api/processing/jobs/{job_id}/status").json()["status"] == "running", 60, 0.1)
        page.goto(srv.url + "/cluster")
        expect(page.get_by_test_id("cluster-status")).to_have_text("running", timeout=30_000)
        expect(page.get_by_role("button", name="Start cluster")).to_be_disabled(timeout=10_000)
        page.get_by_role("button", name="Stop cluster").click()
        confirm = page.get_by_test_id("stop-confirm")
        expect(confirm).to_be_visible(timeout=10_000)
        shown = int(page.get_by_test_id("stop-running-count").inner_text())
        assert shown == 1 and running_count(srv) == 1, (shown, running_count(srv))
        shot(page, "cluster-stop-confirmation-1280x800")
        page.get_by_role("button", name="Keep it running").click()
        expect(confirm).to_be_hidden(timeout=10_000)
        page.wait_for_timeout(1500)
        assert srv.get("/api/processing/cluster/status").json()["status"] == "running"
    finally:
        for p in workers:
            p.send_signal(signal.SIGCONT)
    final = srv.get(f"/api/processing/jobs/{job_id}/wait", params={"timeout": 120}, timeout=130).json()
    assert final["status"] == "completed", final


def test_confirmed_stop_stops_and_the_buttons_follow(srv: ServerProcess, page) -> None:
    page.goto(srv.url + "/cluster")
    expect(page.get_by_test_id("cluster-status")).to_have_text("running", timeout=30_000)
    page.get_by_role("button", name="Stop cluster").click()
    expect(page.get_by_test_id("stop-running-count")).to_have_text("0", timeout=10_000)
    page.get_by_role("button", name="Yes, stop the cluster").click()
    expect(page.get_by_test_id("cluster-status")).to_have_text("stopped", timeout=60_000)
    expect(page.get_by_role("button", name="Stop cluster")).to_be_disabled(timeout=10_000)
    expect(page.get_by_role("button", name="Start cluster")).to_be_enabled()
    page.reload()  # a new session shows the same state
    expect(page.get_by_test_id("cluster-status")).to_have_text("stopped", timeout=30_000)
    expect(page.get_by_role("button", name="Stop cluster")).to_be_disabled(timeout=10_000)
    page.get_by_role("button", name="Start cluster").click()
    expect(page.get_by_test_id("cluster-status")).to_have_text("running", timeout=60_000)
    expect(page.get_by_role("button", name="Start cluster")).to_be_disabled(timeout=10_000)


def test_adaptive_mode_is_shown_after_a_reload(srv: ServerProcess, page) -> None:
    srv.wait_for(lambda: srv.get("/api/processing/cluster/status").json()["status"] == "running", 60)
    r = srv.post("/api/processing/cluster/scale", {"adaptive": {"minimum": 1, "maximum": 2}})
    assert r.status_code == 200, r.text
    try:
        page.goto(srv.url + "/cluster")
        page.get_by_test_id("cluster-status").wait_for(timeout=30_000)
        expect(page.locator(".bk-btn-group .bk-btn.bk-active").first).to_have_text("Adaptive", timeout=10_000)
        expect(page.get_by_label("Maximum")).to_have_value("2")
    finally:
        srv.post("/api/processing/cluster/scale", {"n_workers": 2})


def test_scaling_beyond_the_limit_is_refused_with_the_limit(srv: ServerProcess, page) -> None:
    srv.wait_for(lambda: srv.get("/api/processing/cluster/status").json()["status"] == "running", 60)
    srv.wait_workers(2)
    page.goto(srv.url + "/cluster")
    page.get_by_test_id("cluster-status").wait_for(timeout=30_000)
    box = page.locator(".scale-workers input")
    box.fill("99")
    box.press("Tab")
    page.get_by_role("button", name="Scale").click()
    expect(page.get_by_text("(MAX_WORKERS); nothing was changed").first).to_be_visible(timeout=10_000)
    expect(page.get_by_text("Workers (0–")).to_be_visible()
    assert box.input_value() == "99"  # what was typed stays, it is not clamped
    page.wait_for_timeout(1500)
    assert srv.get("/api/processing/cluster/status").json()["n_workers"] == 2
