"""What open browser sessions cost the server: CPU of the server process with 1, then 20
headless Chromium pages on a live page, and again after they are closed.

Starts the real server (``python -m app serve``) on a free port with a temporary data
dir and an embedded 2-worker cluster, opens pages with Playwright and Debian's
chromium, and measures the server process's CPU time (psutil ``cpu_times``, user +
system, the Dask workers excluded) over a window at each step. Prints figures; asserts
nothing.

    .venv/bin/python bench/bench_sessions.py [--path /monitoring] [--sessions 20] [--seconds 30]
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import ServerProcess  # noqa: E402
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

LIVE_ENV = {"LIVE_INTERVAL": "1.0", "METRICS_INTERVAL": "2.0", "DEMO_DATASET": "0", "LOG_LEVEL": "INFO"}


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    """CPU used by ``proc`` over the next ``seconds``, in % of one core."""
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    return 100.0 * ((after.user - before.user) + (after.system - before.system)) / seconds


def open_pages(browser, url: str, n: int, ready: str) -> list:
    pages = []
    for _ in range(n):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(url, timeout=180_000, wait_until="domcontentloaded")
        page.get_by_test_id(ready).first.wait_for(timeout=180_000)
        pages.append(page)
    return pages


def closed_feeds(srv: ServerProcess) -> int:
    return len(re.findall(r"live feed stopped", srv.log_path.read_text(errors="replace")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/monitoring", help="page to open (default /monitoring)")
    parser.add_argument("--sessions", type=int, default=20, help="sessions of the second step (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window (default 30)")
    parser.add_argument("--settle", type=float, default=8.0, help="wait after opening pages (default 8)")
    args = parser.parse_args(argv)
    ready = {"/wall": "wall-workers"}.get(args.path, "nav-overview")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        srv = ServerProcess(Path(tmp), LIVE_ENV).start(timeout=120)
        try:
            srv.wait_workers(2)
            proc = psutil.Process(srv.proc.pid)  # type: ignore[union-attr]
            url = srv.url + args.path
            time.sleep(args.settle)
            idle = cpu_percent(proc, args.seconds)
            print(f"server CPU, no session:        {idle:6.1f} % of a core", flush=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                pages = open_pages(browser, url, 1, ready)
                time.sleep(args.settle)
                one = cpu_percent(proc, args.seconds)
                print(f"server CPU, 1 session:         {one:6.1f} % of a core", flush=True)
                pages += open_pages(browser, url, args.sessions - 1, ready)
                time.sleep(args.settle)
                many = cpu_percent(proc, args.seconds)
                print(f"server CPU, {args.sessions} sessions:       {many:6.1f} % of a core", flush=True)
                before = closed_feeds(srv)
                for page in pages:
                    page.context.close()
                browser.close()
            # Bokeh drops a session some seconds after its websocket closes (unused-session check)
            deadline = time.time() + 90
            while closed_feeds(srv) - before < args.sessions and time.time() < deadline:
                time.sleep(1)
            stopped = closed_feeds(srv) - before
            after = cpu_percent(proc, args.seconds)
            print(f"server CPU, after closing all: {after:6.1f} % of a core "
                  f"({stopped} of {args.sessions} session feeds stopped)", flush=True)
            print(f"ratio {args.sessions} sessions / 1 session: {many / one:.2f}  "
                  f"(per extra session: {(many - one) / max(1, args.sessions - 1):.2f} % of a core)")
        finally:
            srv.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
