"""CLUSTER_FACTORY: the server builds its cluster with a user's function and then
starts, scales, adapts and stops it through that object's own API."""
from __future__ import annotations

import importlib
import time

import pytest

from tests.factories import RETIRE_DELAY_S, SMALL_WORKER_MEMORY
from tests.server import ROOT

pytestmark = pytest.mark.slow
FACTORY = "tests.factories:small_cluster"
API = "/api/processing"


def test_the_factory_module_is_importable_from_the_servers_working_directory():
    # ServerProcess runs `python -m app serve` with cwd=ROOT, and -m puts the cwd on sys.path
    assert (ROOT / "tests" / "__init__.py").is_file() and (ROOT / "tests" / "factories.py").is_file()
    module, _, attr = FACTORY.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def _memory_limits(srv) -> set[int]:
    return {w["memory_limit_bytes"] for w in srv.get(f"{API}/metrics/workers").json()["workers"]}


def test_factory_cluster_starts_scales_adapts_and_stops(make_server):
    # DASK_N_WORKERS=3 would be the embedded cluster's size: the factory's 1 worker must win
    srv = make_server({"CLUSTER_FACTORY": FACTORY, "DASK_N_WORKERS": "3", "DEMO_DATASET": "0"})
    status = srv.wait_workers(1)
    assert status["mode"] == "factory" and status["can_scale"] is True
    assert status["status"] == "running" and status["total_cores"] == 1
    assert _memory_limits(srv) == {600_000_000}, f"workers of {SMALL_WORKER_MEMORY} come from the factory"

    r = srv.post(f"{API}/cluster/scale", {"n_workers": 2})
    assert r.status_code == 200, r.text
    assert srv.wait_workers(2)["mode"] == "factory"
    assert _memory_limits(srv) == {600_000_000}, "the new worker was made by the factory's cluster object"

    r = srv.post(f"{API}/cluster/scale", {"adaptive": {"minimum": 3, "maximum": 4}})
    assert r.status_code == 200, r.text
    assert r.json()["adaptive"] == {"minimum": 3, "maximum": 4}
    status = srv.wait_workers(3)
    assert status["adaptive"] == {"minimum": 3, "maximum": 4}

    r = srv.post(f"{API}/cluster/scale", {"n_workers": 1})  # a fixed size ends adaptive scaling
    assert r.status_code == 200, r.text
    assert srv.wait_workers(1)["adaptive"] is None

    r = srv.post(f"{API}/cluster/stop")
    assert r.status_code == 200 and r.json()["message"] == "Cluster stopped successfully", r.text
    stopped = srv.wait_for(lambda: (s := srv.get(f"{API}/cluster/status").json())["status"] == "stopped" and s)
    assert stopped["n_workers"] == 0

    r = srv.post(f"{API}/cluster/start")  # a second call of the factory
    assert r.status_code == 200, r.text
    assert r.json()["cluster_info"]["mode"] == "factory"
    assert srv.wait_workers(1)["status"] == "running"


def test_a_factory_that_cannot_be_imported_is_reported(make_server):
    srv = make_server({"CLUSTER_FACTORY": "tests.factories:no_such_function", "DEMO_DATASET": "0"})
    status = srv.wait_for(lambda: (s := srv.get(f"{API}/cluster/status").json())["status"] == "error" and s)
    assert "no_such_function" in status["error"]
    r = srv.post(f"{API}/cluster/start")
    assert r.status_code == 409 and r.json()["error"]["code"] == "cluster_start_failed", r.text


def test_a_fixed_scale_waits_for_an_adaptive_step_under_way(make_server):
    # adaptive scaling may be retiring a worker when a fixed size is asked for; that step
    # ends after the answer and must not leave the cluster one worker short (a CI failure)
    srv = make_server({"CLUSTER_FACTORY": "tests.factories:slow_retiring_cluster", "DEMO_DATASET": "0"})
    srv.wait_workers(2)
    r = srv.post(f"{API}/cluster/scale", {"adaptive": {"minimum": 1, "maximum": 2}})
    assert r.status_code == 200, r.text
    srv.wait_for(lambda: "slow retire of" in srv.log_path.read_text(), 30, 0.05)  # idle: one worker is being retired
    r = srv.post(f"{API}/cluster/scale", {"n_workers": 2})
    assert r.status_code == 200, r.text
    srv.wait_for(lambda: "Retiring workers" in srv.log_path.read_text(), 30)  # the step has gone on to retire
    srv.wait_workers(2)
    time.sleep(2 * RETIRE_DELAY_S)  # the step, had it outlived the answer, has shrunk the cluster by now
    status = srv.get(f"{API}/cluster/status").json()
    assert status["n_workers"] == 2 and status["adaptive"] is None, status
