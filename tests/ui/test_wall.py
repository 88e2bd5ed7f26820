"""The wall in a real browser: live figures that match the API, no controls, no scrolling at
1920×1080, panel selection and rotation from the URL, and recovery after a server restart
without anyone touching the page."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.helpers import shot

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


def live_text(page, testid: str, timeout: float = 15) -> tuple[str, str]:
    """Two different readings of a live element: it is being updated."""
    first = page.get_by_test_id(testid).inner_text(timeout=timeout * 1000)
    deadline = time.time() + timeout
    while time.time() < deadline:
        second = page.get_by_test_id(testid).inner_text()
        if second != first:
            return first, second
        time.sleep(0.2)
    raise AssertionError(f"{testid} stayed at {first!r} for {timeout} s")


def test_wall_shows_live_figures_that_match_the_api(srv, wide_page):
    srv.wait_workers(2)
    wide_page.goto(srv.url + "/wall")
    expect(wide_page.get_by_test_id("wall-status")).to_contain_text("running", ignore_case=True, timeout=30_000)
    expect(wide_page.get_by_test_id("wall-workers")).to_have_text(str(srv.wait_workers(2)["n_workers"]))
    live_text(wide_page, "wall-updated")
    expect(wide_page.get_by_test_id("wall-memory-now")).to_contain_text("GB")
    assert wide_page.locator("button, input, select, textarea").count() == 0  # a kiosk: nothing to click
    height, width = wide_page.evaluate(
        "() => [document.documentElement.scrollHeight, document.documentElement.scrollWidth]")
    assert height <= 1080 and width <= 1920, (height, width)
    live_text(wide_page, "wall-updated")  # charts have drawn another sample
    shot(wide_page, "wall-1920x1080")
    wide_page.set_viewport_size({"width": 1280, "height": 800})
    wide_page.wait_for_function("() => document.documentElement.clientWidth <= 1280", timeout=10_000)
    live_text(wide_page, "wall-updated")  # redrawn at the new size
    expect(wide_page.get_by_test_id("wall-workers")).to_have_text("2")
    shot(wide_page, "wall-1280x800")


def test_wall_panels_and_rotation_from_the_url(srv, wide_page):
    wide_page.goto(srv.url + "/wall?panels=health,cpu")
    expect(wide_page.get_by_test_id("wall-cpu-now")).to_be_visible(timeout=30_000)
    expect(wide_page.get_by_test_id("wall-workers")).to_be_visible()
    assert wide_page.get_by_test_id("wall-memory-now").count() == 0
    assert wide_page.get_by_test_id("wall-queue-normal").count() == 0

    wide_page.goto(srv.url + "/wall?panels=health,jobs,queue|memory,cpu&rotate=3")
    expect(wide_page.get_by_test_id("wall-queue-normal")).to_be_visible(timeout=30_000)
    expect(wide_page.get_by_test_id("wall-cpu-now")).to_be_hidden()
    expect(wide_page.get_by_test_id("wall-cpu-now")).to_be_visible(timeout=10_000)  # the next group
    expect(wide_page.get_by_test_id("wall-queue-normal")).to_be_hidden()
    expect(wide_page.get_by_test_id("wall-workers")).to_be_visible()  # health stays
    expect(wide_page.get_by_test_id("wall-queue-normal")).to_be_visible(timeout=10_000)  # and back


def test_wall_recovers_by_itself_after_a_server_restart(make_server, wide_page):
    srv = make_server({"DEMO_DATASET": "0"})  # its own: it is stopped here, whatever runs after
    wide_page.goto(srv.url + "/wall")
    expect(wide_page.get_by_test_id("wall-workers")).to_have_text("2", timeout=30_000)
    wide_page.evaluate("() => { window.__before_restart = true; }")
    srv.terminate()
    expect(wide_page.get_by_test_id("wall-offline")).to_be_visible(timeout=20_000)
    # the same port: the page reloads from the address it was opened at
    restarted = ServerProcess(srv.data_dir, srv.env, port=srv.port).start(timeout=120)
    try:
        restarted.wait_workers(2)
        # the page reloads itself: wait for that first, since the old page still shows its last figures
        wide_page.wait_for_function("() => window.__before_restart === undefined", timeout=90_000)
        expect(wide_page.get_by_test_id("wall-workers")).to_have_text("2", timeout=60_000)
        expect(wide_page.get_by_test_id("wall-status")).to_contain_text("running", ignore_case=True, timeout=30_000)
        live_text(wide_page, "wall-updated")
        expect(wide_page.get_by_test_id("wall-offline")).to_be_hidden()
    finally:
        restarted.cleanup()


def test_a_health_request_left_hanging_counts_as_the_server_down(srv, wide_page):
    # a health request that is never answered (held here by the browser's router) is given up
    # after its timeout: the banner shows, and the checks after it go on, so the wall still
    # sees the server come back (requests left hanging across a restart once kept a wall from
    # reloading)
    held = []
    wide_page.goto(srv.url + "/wall")
    expect(wide_page.get_by_test_id("wall-workers")).to_have_text("2", timeout=30_000)
    wide_page.route("**/api/processing/health", lambda route: held.append(route))  # never answered
    expect(wide_page.get_by_test_id("wall-offline")).to_be_visible(timeout=20_000)
    assert held, "the wall asked for health"
    wide_page.unroute("**/api/processing/health")
    wide_page.evaluate("() => { window.__before_reload = true; }")
    # the server answers again: the wall takes it as back and reloads itself
    wide_page.wait_for_function("() => window.__before_reload === undefined", timeout=30_000)
    expect(wide_page.get_by_test_id("wall-workers")).to_have_text("2", timeout=30_000)
    for route in held:
        try:
            route.abort()
        except Exception:  # noqa: BLE001 - the page that asked is gone
            pass
