"""A start-up step that failed is a health reason, and every analyst page shows it as a banner."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.conftest import shot

pytestmark = pytest.mark.ui

PAGES = ("/", "/cluster", "/jobs", "/data", "/monitoring")


@pytest.fixture(scope="module")
def broken_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose demo dataset cannot be written: a file stands where its folder must go."""
    data_dir = tmp_path_factory.mktemp("banner")
    (data_dir / "managed").mkdir()
    (data_dir / "managed" / "demo").write_text("not a folder")
    srv = ServerProcess(data_dir, {"DEMO_ROWS": "2000", "CLUSTER_AUTOSTART": "0"}).start(timeout=120)
    try:
        yield srv
    finally:
        srv.cleanup()


def test_every_page_shows_the_health_reasons(broken_demo: ServerProcess, page) -> None:
    reasons = broken_demo.wait_for(lambda: broken_demo.get("/api/processing/health").json()["reasons"], 60)
    demo = next(r for r in reasons if "demo dataset" in r)
    for path in PAGES:
        page.goto(broken_demo.url + path)
        banner = page.get_by_test_id("health-banner")
        expect(banner).to_be_visible(timeout=30_000)
        expect(banner).to_contain_text(demo[:60])
    shot(page, "health-banner-1280x800")


def test_no_banner_while_healthy(ui_server: ServerProcess, page) -> None:
    srv = ui_server  # a server with the default settings, shared (ui/conftest.py)
    srv.wait_workers(2)
    srv.wait_for(lambda: srv.get("/api/processing/health").json()["status"] == "healthy", 60)
    page.goto(srv.url + "/")
    page.get_by_test_id("cluster-status").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    assert page.get_by_test_id("health-banner").count() == 0
