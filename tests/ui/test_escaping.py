"""Stored XSS: markup planted in every user-controlled field is shown as text on every page.

Planted through the API: a CSV whose header and group keys are markup, a dataset
name and description, a transform whose output column is markup, a job whose
error quotes markup, job parameters with markup. Each page is opened in Chromium
with a guard: no dialog may open, no ``<img src=x>`` may exist, and no request may
leave the server.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests
from playwright.sync_api import expect

from tests.server import ServerProcess
from tests.ui.conftest import module_server
from tests.ui.guard import PageGuard, injected_images

pytestmark = pytest.mark.ui


def payload(tag: str) -> str:
    return f"<img src=x onerror=alert('{tag}')>"


COLUMN, KEY, NAME, DESCRIPTION = payload("column"), payload("key"), payload("name"), payload("description")
OUTPUT, ERROR = payload("output"), payload("error")
API = "/api/processing"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "escaping", {"DEMO_ROWS": "2000"})


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
        page.wait_for_timeout(1500)  # an injected image's onerror fires within this
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
