"""Screenshots of every page at 1920×1080 and 1280×800 in both themes (run by hand, not collected by pytest).

    .venv/bin/python -m tests.ui.screenshots OUT_DIR [--url http://127.0.0.1:8001] [--busy] [--pages data,job]

Without ``--url`` a private server is started (and stopped) for the run. ``--busy``
submits a longer job first, so the pages are also seen under a running job. The "job"
page is a filter job's (run first), with the link to its result dataset.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

from tests.server import ServerProcess
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS

PAGES = {"overview": "/", "cluster": "/cluster", "jobs": "/jobs", "data": "/data?dataset=demo_expression",
         "monitoring": "/monitoring", "wall": "/wall", "job": "/jobs?job={job}"}
SIZES = ((1920, 1080), (1280, 800))
THEMES = ("default", "dark")


def busy(url: str) -> None:
    """Submit jobs that run for a while (exact distinct counts per sample over the demo dataset)."""
    for _ in range(60):  # the demo dataset is written in the background at start
        if requests.get(f"{url}/api/processing/datasets/demo_expression", timeout=10).status_code == 200:
            break
        time.sleep(1)
    for _ in range(3):
        requests.post(f"{url}/api/processing/jobs/submit", timeout=30, json={
            "operation": "aggregate", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.5,
            "parameters": {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"}})


def filter_job(url: str) -> str:
    """A completed filter job (it writes a result dataset), for the job page."""
    for _ in range(60):  # the demo dataset is written in the background at start
        if requests.get(f"{url}/api/processing/datasets/demo_expression", timeout=10).status_code == 200:
            break
        time.sleep(1)
    job_id = requests.post(f"{url}/api/processing/jobs/submit", timeout=30, json={
        "operation": "filter", "dataset_id": "demo_expression", "max_cores": 1, "max_memory_gb": 0.5,
        "parameters": {"conditions": [{"column": "expression_level", "op": ">", "value": 5},
                                      {"column": "condition", "op": "in", "value": ["treated"]}]}}).json()["job_id"]
    requests.get(f"{url}/api/processing/jobs/{job_id}/wait?timeout=60", timeout=70)
    return job_id


def capture(url: str, out: Path, names: list[str] | None = None) -> list[Path]:
    """One full-page PNG per page, size and theme."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    pages = {name: path for name, path in PAGES.items() if not names or name in names}
    if "job" in pages:
        pages["job"] = pages["job"].format(job=filter_job(url))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for width, height in SIZES:
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            for theme in THEMES:
                for name, path in pages.items():
                    sep = "&" if "?" in path else "?"
                    page.goto(f"{url}{path}{sep}theme={theme}")
                    page.wait_for_timeout(3500)  # the session renders, the first samples arrive
                    target = out / f"{name}-{theme}-{width}x{height}.png"
                    page.screenshot(path=str(target), full_page=name != "wall")
                    made.append(target)
            context.close()
        browser.close()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--url", default=None)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: all)")
    args = parser.parse_args()
    srv = None
    url = args.url
    if url is None:
        srv = ServerProcess(Path(tempfile.mkdtemp(prefix="screens-")), {"DEMO_ROWS": "1500000"}).start(timeout=120)
        url = srv.url
    try:
        if args.busy:
            busy(url)
        for path in capture(url, args.out, [n for n in args.pages.split(",") if n]):
            print(path)
    finally:
        if srv is not None:
            srv.cleanup()


if __name__ == "__main__":
    main()
