"""Soak: steady submissions and status polling with a dashboard open; the server's
memory and open files must stay flat and nothing may fail.

    .venv/bin/python bench/bench_soak.py [--minutes 20] [--rate 2] [--warmup 60]

Starts its own server (token set), signs a headless Chromium in and keeps ``/`` open,
submits ``--rate`` jobs per second and polls their status, the job list and health
from a thread, and samples the server process (psutil) every 5 s. Prints RSS and
open file descriptors at the end of the warm-up and at the end, their trend over
the run, and the errors seen; exits 1 on any error or growth beyond the bounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ServerProcess  # noqa: E402

TOKEN = "bench-soak-token"
SUBMISSION = {"operation": "aggregate", "dataset_id": "demo_expression",
              "parameters": {"column": "expression_level", "operation": "mean"}, "max_cores": 1, "max_memory_gb": 0.5}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


class Load(threading.Thread):
    """Submits jobs at a steady rate and polls what it submitted."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.period = url, 1.0 / rate
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response | None:
        try:
            r = self.session.request(method, self.url + path, timeout=30, **kw)
        except requests.RequestException as exc:
            self.errors.append(f"{method} {path}: {type(exc).__name__}")
            return None
        self.counts[f"{method} {r.status_code}"] += 1
        if r.status_code not in ok:
            self.errors.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r

    def run(self) -> None:
        recent: list[str] = []
        while not self.stop.is_set():
            started = time.perf_counter()
            r = self.call("POST", "/api/processing/jobs/submit", (201, 429), json=SUBMISSION)
            if r is not None and r.status_code == 201:
                recent = [r.json()["job_id"], *recent][:20]
            for job_id in recent[:5]:
                self.call("GET", f"/api/processing/jobs/{job_id}/status")
            self.call("GET", "/api/processing/jobs/list?limit=20")
            self.call("GET", "/api/processing/health")
            self.stop.wait(max(0.0, self.period - (time.perf_counter() - started)))


def sample(proc: psutil.Process) -> dict[str, float]:
    with proc.oneshot():
        return {"t": time.time(), "rss_mb": proc.memory_info().rss / 2**20, "fds": proc.num_fds(),
                "threads": proc.num_threads()}


def slope_per_hour(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares trend of ``key`` per hour."""
    if len(samples) < 3:
        return 0.0
    ts = [s["t"] for s in samples]
    return statistics.linear_regression(ts, [s[key] for s in samples]).slope * 3600


def open_dashboard(url: str) -> tuple[Any, Any, list[str]]:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.goto(url + "/login?next=/")
    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("cluster-status").wait_for(timeout=60_000)
    return pw, browser, page_errors


def soak(minutes: float, rate: float, warmup: float) -> dict[str, Any]:
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-soak-")),
                        {"PROCESSING_API_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"})
    pw = browser = None
    try:
        srv.start()
        proc = psutil.Process(srv.proc.pid)  # type: ignore[union-attr]
        pw, browser, page_errors = open_dashboard(srv.url)
        load = Load(srv.url, rate)
        load.start()
        samples: list[dict[str, float]] = []
        end = time.time() + warmup + minutes * 60
        while time.time() < end:
            samples.append(sample(proc))
            time.sleep(5)
        load.stop.set()
        load.join(30)
        after_warmup = [s for s in samples if s["t"] >= samples[0]["t"] + warmup] or samples
        log_errors = sum(1 for line in srv.log_tail(10**6).splitlines() if " ERROR " in line or "Traceback" in line)
        return {
            "minutes": minutes, "rate_per_s": rate, "requests": dict(load.counts),
            "errors": load.errors[:10], "error_count": len(load.errors), "page_errors": page_errors[:10],
            "server_log_errors": log_errors, "alive": srv.proc.poll() is None,  # type: ignore[union-attr]
            "rss_mb_start": round(after_warmup[0]["rss_mb"], 1), "rss_mb_end": round(after_warmup[-1]["rss_mb"], 1),
            "rss_mb_max": round(max(s["rss_mb"] for s in after_warmup), 1),
            "rss_mb_per_hour": round(slope_per_hour(after_warmup, "rss_mb"), 1),
            "fds_start": int(after_warmup[0]["fds"]), "fds_end": int(after_warmup[-1]["fds"]),
            "fds_max": int(max(s["fds"] for s in after_warmup)),
            "threads_start": int(after_warmup[0]["threads"]), "threads_end": int(after_warmup[-1]["threads"]),
        }
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        srv.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="measured minutes after the warm-up")
    parser.add_argument("--rate", type=float, default=2.0, help="job submissions per second")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline sample")
    parser.add_argument("--rss-growth-mb", type=float, default=50.0, help="allowed RSS end - start")
    parser.add_argument("--fd-growth", type=int, default=10, help="allowed open-file growth")
    args = parser.parse_args()
    result = soak(args.minutes, args.rate, args.warmup)
    print(json.dumps(result, indent=2))
    ok = (result["alive"] and result["error_count"] == 0 and not result["page_errors"]
          and result["server_log_errors"] == 0
          and result["rss_mb_end"] - result["rss_mb_start"] <= args.rss_growth_mb
          and result["fds_end"] - result["fds_start"] <= args.fd_growth)
    print("PASS" if ok else "FAIL", f"— {args.minutes:g} min at {args.rate:g} jobs/s: RSS {result['rss_mb_start']} → "
          f"{result['rss_mb_end']} MB (max {result['rss_mb_max']}, trend {result['rss_mb_per_hour']} MB/h); "
          f"fds {result['fds_start']} → {result['fds_end']}; errors {result['error_count']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
