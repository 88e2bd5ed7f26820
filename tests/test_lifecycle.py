"""The process: loop never blocked while the cluster starts, attaching to an external
scheduler. (A clean and prompt SIGTERM exit is checked in test_children.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.helpers import scheduler_address


PROBE_TIMEOUT_S = 10


def probe_health(url: str, stop: threading.Event, out: list[float], failures: list[str]) -> None:
    """Time /health until ``stop``; a timeout, an error or a non-200 answer is a failure."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            r = requests.get(url + "/api/processing/health", timeout=PROBE_TIMEOUT_S)
        except requests.RequestException as exc:  # a blocked loop ends here: it must fail the test
            failures.append(f"{type(exc).__name__} after {time.perf_counter() - started:.1f} s: {exc}")
            return
        out.append(time.perf_counter() - started)
        if r.status_code != 200:
            failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            return
        time.sleep(0.02)


def test_health_answers_while_cluster_starts_and_scales(make_server):
    srv = make_server({"CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0"})
    stop, latencies, failures = threading.Event(), [], []
    prober = threading.Thread(target=probe_health, args=(srv.url, stop, latencies, failures), daemon=True)
    prober.start()
    try:
        r = srv.post("/api/processing/cluster/start")
        assert r.status_code == 200 and r.json()["cluster_info"]["n_workers"] == 2
        srv.post("/api/processing/cluster/scale", json={"n_workers": 3})
        srv.wait_workers(3)
    finally:
        stop.set()
        prober.join(PROBE_TIMEOUT_S + 5)
    assert not prober.is_alive(), "the health probe hung"
    assert not failures, failures
    assert len(latencies) > 10
    # a sync LocalCluster started on the loop blocks it for seconds; the executor keeps it free
    # (a loaded 2-core machine adds GIL and CPU waits; bench_api reports the real figures)
    assert max(latencies) < 1.5, sorted(latencies)[-5:]


@pytest.fixture
def external_scheduler(tmp_path):
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    bindir = os.path.dirname(sys.executable)
    scheduler_file = tmp_path / "scheduler.json"
    sched = subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                              "--scheduler-file", str(scheduler_file), "--dashboard-address", "127.0.0.1:0"],
                             env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = scheduler_address(scheduler_file, sched)
    except BaseException:
        sched.kill()
        raise
    worker = subprocess.Popen([os.path.join(bindir, "dask"), "worker", address, "--nthreads", "1",
                               "--memory-limit", "1GB", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield address, sched
    for proc in (worker, sched):
        proc.send_signal(signal.SIGTERM)
    for proc in (worker, sched):
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_attach_to_external_scheduler(make_server, external_scheduler):
    address, sched = external_scheduler
    srv = make_server({"DASK_SCHEDULER_ADDRESS": address, "DEMO_DATASET": "0"})
    status = srv.wait_workers(1)
    assert status["mode"] == "external" and status["scheduler_address"] == address
    assert status["can_scale"] is False
    r = srv.post("/api/processing/cluster/scale", json={"n_workers": 3})
    assert r.status_code == 409 and r.json()["error"]["code"] == "cluster_not_scalable"
    assert "external scheduler" in r.json()["error"]["message"]
    r = srv.post("/api/processing/cluster/stop")
    assert r.json()["message"] == "Detached from the external cluster"
    assert sched.poll() is None, "stopping must not kill an external scheduler"
    assert srv.get("/api/processing/cluster/status").json()["status"] == "stopped"
    assert srv.post("/api/processing/cluster/start").json()["cluster_info"]["n_workers"] == 1
