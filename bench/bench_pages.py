"""What opening a dashboard page costs everyone else: how long ``/api/processing/health``
takes to answer while a browser loads each page.

Starts the real server (``python -m app serve``) on a free port with a temporary data
dir and an embedded 2-worker cluster, then, for each page, loads it ``--loads`` times in
headless Chromium (a fresh context each time, waiting until the page's navigation is
drawn) while a thread asks ``/health`` every 10 ms. A page built on the server's event
loop holds every other request for as long as the build takes; built off the loop, the
health answers stay near their idle latency. Prints, per page, the median over loads of
the load time and of the slowest health answer during the load. Asserts nothing.

    .venv/bin/python bench/bench_pages.py [--loads 5] [--pages / /monitoring ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import ServerProcess  # noqa: E402
from tests.ui.helpers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PAGES = ("/", "/cluster", "/jobs", "/data", "/monitoring", "/pipelines", "/wall")
READY = {"/wall": "wall-workers"}


class HealthProbe:
    """Asks ``/health`` every ``every`` seconds in a thread; keeps each answer's latency."""

    def __init__(self, url: str, every: float = 0.01):
        self.url, self.every = url + "/api/processing/health", every
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                http.get(self.url, timeout=30).raise_for_status()
                self.latencies.append((time.perf_counter() - started) * 1000)
                self._stop.wait(self.every)

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load_once(browser, base: str, path: str) -> tuple[float, float, float]:
    """One page load in a fresh context: (load ms, slowest health ms, median health ms)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    ready = READY.get(path, "nav-overview")
    with HealthProbe(base) as probe:
        started = time.perf_counter()
        page.goto(base + path, timeout=180_000, wait_until="domcontentloaded")
        page.get_by_test_id(ready).first.wait_for(timeout=180_000)
        loaded = (time.perf_counter() - started) * 1000
        time.sleep(0.3)  # the live feed's first push lands after the page is drawn
    context.close()
    return loaded, max(probe.latencies), statistics.median(probe.latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="loads per page (default 5)")
    parser.add_argument("--pages", nargs="+", default=list(PAGES), help="pages to load (default: all)")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        srv = ServerProcess(Path(tmp), {"LOG_LEVEL": "WARNING"}).start(timeout=120)
        try:
            srv.wait_workers(2)
            with HealthProbe(srv.url) as idle:
                time.sleep(3)
            print(f"health while no page loads: median {statistics.median(idle.latencies):.1f} ms, "
                  f"max {max(idle.latencies):.1f} ms over {len(idle.latencies)} answers", flush=True)
            print(f"{'page':<12} {'load ms':>9} {'health max ms':>14} {'health p50 ms':>14}   (medians of {args.loads})")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                load_once(browser, srv.url, "/")  # the first load also warms imports
                for path in args.pages:
                    runs = [load_once(browser, srv.url, path) for _ in range(args.loads)]
                    load, worst, typical = (statistics.median(r[i] for r in runs) for i in range(3))
                    print(f"{path:<12} {load:9.0f} {worst:14.1f} {typical:14.1f}", flush=True)
                browser.close()
        finally:
            srv.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
