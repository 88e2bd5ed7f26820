"""Stored XSS: markup planted in every user-controlled field is shown as text on every page.

Planted through the API: a CSV whose header and group keys are markup, a dataset
name and description, a transform whose output column is markup, a job whose
error quotes markup, job parameters with markup. Each page is opened in Chromium
with a guard: no dialog may open, no ``<img src=x>`` may exist, and no request may
leave the server.
"""
from __future__ import annotations

from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.guard import PageGuard, injected_images

pytestmark = pytest.mark.ui


def payload(tag: str) -> str:
    return f"<img src=x onerror=alert('{tag}')>"


COLUMN, KEY, NAME, DESCRIPTION = payload("column"), payload("key"), payload("name"), payload("description")
OUTPUT, ERROR = payload("output"), payload("error")
API = "/api/processing"


@pytest.fixture(scope="module")
def srv(ui_server: ServerProcess) -> ServerProcess:
    return ui_server  # shared by the browser tests that keep its cluster as it is (ui/conftest.py)


def upload(srv: ServerProcess, dataset_id: str, body: bytes, **query: str) -> dict[str, Any]:
    r = requests.post(f"{srv.url}{API}/datasets/upload", params={"filename": "x.csv", "dataset_id": dataset_id, **query},
                      data=body, headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["dataset"]


def run(srv: ServerProcess, operation: str, dataset_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    r = srv.post(f"{API}/jobs/submit", {"operation": operation, "dataset_id": dataset_id, "parameters": parameters,
                                        "max_cores": 1, "max_memory_gb": 0.25})
    assert r.status_code == 201, r.text
    return srv.get(f"{API}/jobs/{r.json()['job_id']}/wait", params={"timeout": 120}, timeout=130).json()


@pytest.fixture(scope="module")
def planted(srv: ServerProcess) -> dict[str, Any]:
    """Every field holds markup; returns the jobs and datasets that carry it."""
    rows = [f"{KEY if i % 2 else 'plain'},{i}" for i in range(40)]
    upload(srv, "xssds", "\n".join([f"{COLUMN},val", *rows]).encode() + b"\n", name=NAME, description=DESCRIPTION)
    grouped = run(srv, "aggregate", "xssds", {"column": "val", "operation": "mean", "group_by": [COLUMN]})
    assert grouped["status"] == "completed", grouped
    derived = run(srv, "transform", "xssds", {"transforms": [{"column": "val", "fn": "log1p", "output": OUTPUT}]})
    assert derived["status"] == "completed", derived
    kept = run(srv, "filter", "xssds", {"conditions": [{"column": COLUMN, "op": "contains", "value": KEY}]})
    assert kept["status"] == "completed", kept
    # A value past the reader's schema sample: the job fails with an error that quotes it.
    big = "k,val\n" + "".join(f"a,{i}\n" for i in range(600_000)) + f"a,{ERROR}\n"
    upload(srv, "xssbig", big.encode())
    failed = run(srv, "aggregate", "xssbig", {"column": "val", "operation": "sum"})
    assert failed["status"] == "failed" and "<img" in failed["error"]["message"], failed
    return {"grouped": grouped, "derived": derived, "kept": kept, "failed": failed}


def pages(planted: dict[str, Any]) -> list[tuple[str, str | None, list[str]]]:
    """(path, a test id to wait for, texts that must be visible as text)."""
    result_ds = planted["derived"]["result_dataset_id"]
    return [
        ("/", "cluster-status", []),
        ("/cluster", "cluster-status", []),
        ("/jobs", "jobs-pager", []),
        ("/jobs?dataset=xssds", "jobs-pager", []),
        (f"/jobs?job={planted['grouped']['job_id']}", "job-status", [COLUMN, KEY]),
        (f"/jobs?job={planted['derived']['job_id']}", "job-status", [OUTPUT]),
        (f"/jobs?job={planted['kept']['job_id']}", "job-status", []),
        (f"/jobs?job={planted['failed']['job_id']}", "job-error", []),
        ("/data", None, []),
        ("/data?dataset=xssds", "dataset-title", [NAME, DESCRIPTION, COLUMN]),
        (f"/data?dataset={result_ds}", "dataset-title", [OUTPUT]),
        ("/monitoring", None, []),
        ("/wall", "wall-status", []),
    ]


def test_markup_is_text_on_every_page(srv: ServerProcess, planted: dict[str, Any], page) -> None:
    guard = PageGuard(page, srv.url)
    problems = []
    for path, marker, texts in pages(planted):
        guard.clear()
        page.goto(srv.url + path)
        if marker:
            page.get_by_test_id(marker).first.wait_for(timeout=30_000)
        page.wait_for_timeout(800)  # an injected image's onerror fires within this (src=x: a 404 from this server)
        for text in texts:
            try:
                expect(page.get_by_text(text, exact=False).first).to_be_visible(timeout=10_000)
            except AssertionError:
                problems.append(f"{path}: {text!r} is not shown as text")
        images = injected_images(page)
        if guard.dialogs or images or guard.foreign:
            problems.append(f"{path}: dialogs {guard.dialogs}, injected images {images}, foreign requests {guard.foreign}")
    assert not problems, "\n".join(problems)


def test_form_messages_are_text(srv: ServerProcess, planted: dict[str, Any], page, tmp_path) -> None:
    """The upload form's message lists the new columns: markup in a header is shown as text."""
    guard = PageGuard(page, srv.url)
    csv = tmp_path / "hostile.csv"
    csv.write_text(f"{payload('form')},val\n1,2\n")
    page.goto(srv.url + "/data")
    page.locator(".upload-file input[type=file]").set_input_files(str(csv))
    page.get_by_text("Ready to upload").wait_for(timeout=15_000)
    page.locator(".upload-dataset button").click()
    expect(page.get_by_text(f"({payload('form')}, val)").first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1000)
    assert not guard.dialogs and not injected_images(page), (guard.dialogs, injected_images(page))


# -- chart tooltips: Bokeh's hover shows fields (@x) escaped, unless a {safe} formatter asks not to --

CORR_A, CORR_B, BIN_COLUMN, FEATURE = payload("corr_a"), payload("corr_b"), payload("bins"), payload("feature")
TABLE_NAME = payload("table_name") + " and a long tail so the cell is cut and its whole text shown on hover"


@pytest.fixture(scope="module")
def charted(srv: ServerProcess) -> dict[str, str]:
    """A correlation matrix, a histogram and a volcano whose labels and hovered values are markup."""
    # 600 features, each named with markup, two samples per condition, fold changes and
    # spreads varied: the volcano's points cover its plot, so a grid of hovers lands on some
    rows = []
    for k in range(600):
        base = 10 + k % 13
        for cond, r in (("a", 0), ("a", 1), ("b", 0), ("b", 1)):
            value = base + r * (k % 5) if cond == "a" else base * (1 + (k % 17) / 8) + r * ((k * 7) % 11)
            rows.append(f"{k % 7},{(k * 3 + r) % 11},{k % 5 + 1},{FEATURE}{k},{cond},{value}")
    upload(srv, "xsschart", "\n".join([f"{CORR_A},{CORR_B},{BIN_COLUMN},feature,cond,value", *rows]).encode() + b"\n",
           name=TABLE_NAME)
    jobs = {
        "result-matrix": run(srv, "correlation", "xsschart", {"columns": [CORR_A, CORR_B]}),
        "result-histogram": run(srv, "histogram", "xsschart", {"column": BIN_COLUMN, "bins": 5}),
        "result-volcano": run(srv, "differential_expression", "xsschart", {
            "feature_column": "feature", "group_column": "cond", "a": "a", "b": "b", "value_column": "value"}),
    }
    for job in jobs.values():
        assert job["status"] == "completed", job
    return {chart: job["job_id"] for chart, job in jobs.items()}


def hover_everywhere(page, chart: str, wanted: str, steps: int = 9) -> list[str]:
    """Move the mouse over a grid of points on ``chart``'s plot until a tooltip shows ``wanted``;
    the tooltip texts seen."""
    canvas = page.locator(f".{chart} canvas").first
    canvas.wait_for(timeout=30_000)
    box = canvas.bounding_box()
    assert box, chart
    seen: list[str] = []
    for i in range(1, steps):
        for j in range(1, steps):
            page.mouse.move(box["x"] + box["width"] * i / steps, box["y"] + box["height"] * j / steps)
            page.wait_for_timeout(60)
            seen += page.locator(".bk-tooltip-row-label, .bk-tooltip-row-value").all_inner_texts()
            if any(wanted in text for text in seen):
                return seen
    return seen


@pytest.mark.parametrize("chart, shown", [("result-matrix", CORR_A), ("result-histogram", BIN_COLUMN),
                                          ("result-volcano", FEATURE)])
def test_chart_tooltips_show_markup_as_text(srv: ServerProcess, charted: dict[str, str], page, chart, shown) -> None:
    guard = PageGuard(page, srv.url)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(f"{srv.url}/jobs?job={charted[chart]}")
    page.get_by_test_id("job-status").first.wait_for(timeout=30_000)
    tooltips = hover_everywhere(page, chart, shown)
    page.wait_for_timeout(500)
    assert any(shown in text for text in tooltips), (chart, tooltips[-6:])  # the hover reached the markup: as text
    assert not guard.dialogs and not injected_images(page) and not guard.foreign, (
        guard.dialogs, injected_images(page), guard.foreign)


def test_table_tooltips_show_markup_as_text(srv: ServerProcess, charted: dict[str, str], page) -> None:
    """The dataset table shows a cut cell's whole text on hover (Tabulator's tooltip): as text."""
    guard = PageGuard(page, srv.url)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(f"{srv.url}/data")
    cell = page.locator(".dataset-table .tabulator-cell", has_text="table_name").first
    cell.wait_for(timeout=30_000)
    cell.hover()
    shown = page.locator(".tabulator-tooltip, .tabulator-popup")
    try:
        shown.first.wait_for(timeout=5_000)
        texts = shown.all_inner_texts()
    except Exception:  # noqa: BLE001 - no popup: the browser's own title tooltip, text by nature
        texts = [cell.get_attribute("title") or ""]
    page.wait_for_timeout(1000)
    assert not guard.dialogs and not injected_images(page) and not guard.foreign, (
        guard.dialogs, injected_images(page), guard.foreign)
    assert any(TABLE_NAME in text for text in texts), texts
