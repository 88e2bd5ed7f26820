"""Headless Debian Chromium through Playwright; screenshots go to test-artifacts/."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

# The helpers live in tests/ui/helpers.py; they are re-exported here for modules that still
# import them from this conftest.
from tests.ui.helpers import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, bar_value, fill, module_server,  # noqa: F401
                              pick, shot, watch_bar)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run the README's test command, which installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


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
