"""Helpers of the browser tests (tests import them from here, not from conftest.py)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def shot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def module_server(tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]) -> Iterator:
    """A private server for the tests of one module (started once, cleaned up after them)."""
    from tests.server import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp(name), env).start(timeout=120)
    try:
        yield srv
    finally:
        srv.cleanup()


def bar_value(page, testid: str) -> float:
    """The value of a progress bar the pages draw (its ``data-value``)."""
    return float(page.get_by_test_id(testid).first.get_attribute("data-value", timeout=10_000))


def watch_bar(page, testid: str, until: float = 100.0, timeout: float = 60.0) -> list[float]:
    """Values a progress bar showed, in order, until it reaches ``until`` (or raise on timeout)."""
    seen: list[float] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = bar_value(page, testid)
        except Exception:  # being re-rendered
            value = None
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        if value is not None and value >= until:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{testid} stopped at {seen} after {timeout} s")


def pick(page, field: str, label: str) -> None:
    """Choose an option of a generated form field by its label."""
    page.locator(f".pc-field-{field} select").select_option(label=label)


def fill(page, field: str, text: str) -> None:
    box = page.locator(f".pc-field-{field} input, .pc-field-{field} textarea").first
    box.fill(text)
    box.press("Tab")  # Panel sends text inputs on change
