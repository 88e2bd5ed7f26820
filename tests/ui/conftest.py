"""Headless Debian Chromium through Playwright; screenshots go to test-artifacts/. Servers the
browser modules share (a start each saved): ``ui_server`` (the default settings, a small
demo; its cluster left as it is), ``big_demo_server`` (2M demo rows) and ``stopped_server``."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import check_shared_cluster

# The helpers live in tests/ui/helpers.py; they are re-exported here for modules that still
# import them from this conftest.
from tests.ui.helpers import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, bar_value, fill, module_server,  # noqa: F401
                              pick, shot, watch_bar)

# the shared servers log any store read made on the event loop (tests/ui/test_loop_guard.py reads it)
LOOP_GUARD = {"STORE_LOOP_GUARD": "1"}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Chromium, one per module. Not one per session: Playwright's sync API runs an event
    loop in the main thread while it is open, and a test of another module that runs a loop
    of its own (``asyncio.run``, Tornado's ``AsyncTestCase``) fails inside it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run the README's test command, which installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One server for the browser modules that need no settings of their own and leave its
    cluster as it is (2 workers, running): one start for them all. Their dataset ids differ."""
    yield from module_server(tmp_path_factory, "ui-shared", {"DEMO_ROWS": "2000", **LOOP_GUARD})


@pytest.fixture(autouse=True)
def ui_server_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the shared browser-test server: still running, 2 fixed workers."""
    yield
    check_shared_cluster(request, "ui_server", "ui_server", "give it a server of its own")


@pytest.fixture(scope="session")
def big_demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A server whose demo dataset has 2M rows (jobs on it run for seconds: long enough to
    watch, stop and cancel), shared by the modules that need one; each hands it on with
    its cluster running on its 2 workers."""
    yield from module_server(tmp_path_factory, "big-demo", {"DEMO_ROWS": "2000000", **LOOP_GUARD})


@pytest.fixture(scope="session")
def _stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    yield from module_server(tmp_path_factory, "stopped", {"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0", **LOOP_GUARD})


@pytest.fixture
def stopped_server(_stopped):
    """A server (no demo dataset) whose cluster is stopped, for the tests that start it from a
    page: they share it, and a cluster an earlier one started is stopped again first."""
    if _stopped.get("/api/processing/cluster/status").json()["status"] != "stopped":
        assert _stopped.post("/api/processing/cluster/stop").status_code == 200
    _stopped.wait_for(lambda: _stopped.get("/api/processing/cluster/status").json()["status"] == "stopped", 60)
    return _stopped


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def wide_page(browser) -> Iterator:
    """A 1920×1080 page (the wall's screen)."""
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    pg = context.new_page()
    yield pg
    context.close()
