"""Cluster lifecycle through the real API: start, status, scale, stop."""
from __future__ import annotations

import os

import psutil
import pytest

CONTRACT_STATUS_FIELDS = {"status", "n_workers", "total_cores", "total_memory", "used_memory",
                          "memory_usage_percent", "active_tasks"}


def test_health_has_contract_shape(server):
    body = server.get("/api/processing/health").json()
    assert body["status"] in {"healthy", "degraded"}
    assert body["cluster_running"] is True
    assert body["timestamp"].endswith("Z")
    # how late the loop wakes, measured inside the server (a LOOP_LAG_INTERVAL timer): present once it has run
    server.wait_for(lambda: server.get("/api/processing/health").json()["loop_lag_max_ms"] is not None, 10)
    lag = server.get("/api/processing/health").json()
    assert 0 <= lag["loop_lag_ms"] <= lag["loop_lag_max_ms"], lag
    assert "processing_event_loop_lag_max_seconds " in server.get("/metrics").text


def test_status_has_contract_fields_and_real_dashboard(server):
    body = server.get("/api/processing/cluster/status").json()
    assert CONTRACT_STATUS_FIELDS <= set(body)
    assert body["status"] == "running"
    assert body["n_workers"] == 2 and body["total_cores"] == 2
    assert body["total_memory"] == "2.00GB" and body["total_memory_bytes"] == 2_000_000_000
    assert body["used_memory"].endswith("GB") and body["used_memory_bytes"] > 0
    # the test asked Dask for a random dashboard port: the real one must be reported
    assert body["dashboard_url"].startswith("http://127.0.0.1:") and ":8787" not in body["dashboard_url"]


def test_start_is_idempotent(server):
    r = server.post("/api/processing/cluster/start")
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "Cluster is already running"
    info = body["cluster_info"]
    assert {"status", "scheduler_address", "dashboard_url", "n_workers", "total_cores", "total_memory"} <= set(info)
    assert info["scheduler_address"].startswith("tcp://127.0.0.1:")


@pytest.mark.parametrize("body, needle", [
    ({"n_workers": -1}, "at least 0"),
    ({"n_workers": 33}, "allowed 0..32"),
    ({"n_workers": "3"}, "must be an integer"),
    ({"n_workers": 2.5}, "must be an integer"),
    ({}, "either 'n_workers' or 'adaptive'"),
    ({"n_workers": 2, "adaptive": {"minimum": 1, "maximum": 2}}, "either"),
    ({"adaptive": {"minimum": 3, "maximum": 1}}, "must not exceed"),
    ({"adaptive": {"minimum": 1}}, "missing required field(s): maximum"),
    ({"adaptive": {"minimum": 0, "maximum": 99}}, "allowed 0..32"),
    ({"workers": 3}, "unknown field"),
])
def test_scale_rejects_bad_bodies(server, body, needle):
    r = server.post("/api/processing/cluster/scale", json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_scale_up_down_and_adaptive(scratch_server):
    server = scratch_server  # not the shared server, which keeps its 2 workers
    r = server.post("/api/processing/cluster/scale", json={"n_workers": 3})
    assert r.status_code == 200, r.text
    server.wait_workers(3)
    r = server.post("/api/processing/cluster/scale", json={"adaptive": {"minimum": 1, "maximum": 2}})
    assert r.status_code == 200 and r.json()["adaptive"] == {"minimum": 1, "maximum": 2}
    status = server.wait_for(lambda: (s := server.get("/api/processing/cluster/status").json())["n_workers"] <= 2 and s)
    assert status["adaptive"] == {"minimum": 1, "maximum": 2}
    r = server.post("/api/processing/cluster/scale", json={"n_workers": 2})
    assert r.status_code == 200
    server.wait_workers(2)
    assert server.get("/api/processing/cluster/status").json()["adaptive"] is None
    events = server.get("/api/processing/cluster/events").json()["events"]
    assert [e["event"] for e in events[:3]] == ["scale", "adapt", "scale"]


def test_workers_endpoint_lists_each_worker(server):
    body = server.get("/api/processing/metrics/workers").json()
    assert body["total"] == len(body["workers"]) >= 1
    w = body["workers"][0]
    assert {"address", "nthreads", "memory_limit_bytes", "memory_bytes", "cpu_percent", "heartbeat_age_s"} <= set(w)


def _nice_of_threads(pid: int) -> set[int]:
    """The nice value of every thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            values.add(int(f.read().rsplit(")", 1)[1].split()[16]))
    return values


def test_embedded_workers_run_at_lower_cpu_priority_than_the_server(server):
    server.wait_workers(2)
    workers = [p for p in psutil.Process(server.proc.pid).children(recursive=True)
               if any("spawn_main" in part for part in p.cmdline())]
    assert len(workers) == 2
    for worker in workers:
        assert _nice_of_threads(worker.pid) == {10}  # DASK_WORKER_NICE, every thread
    assert _nice_of_threads(server.proc.pid) == {0}  # the API and dashboard keep their priority


def test_stop_then_start_again(scratch_server):
    srv = scratch_server  # running with its configured 1 worker
    events_before = srv.get("/api/processing/cluster/events").json()["total"]
    r = srv.post("/api/processing/cluster/stop")
    assert r.status_code == 200 and r.json()["message"] == "Cluster stopped successfully"
    status = srv.get("/api/processing/cluster/status").json()
    assert status["status"] == "stopped"
    assert (status["n_workers"], status["total_cores"], status["active_tasks"]) == (0, 0, 0)
    assert status["total_memory"] == "0.00GB" and status["memory_usage_percent"] == 0
    assert srv.get("/api/processing/health").json()["cluster_running"] is False
    r = srv.post("/api/processing/cluster/scale", json={"n_workers": 2})
    assert r.status_code == 409 and r.json()["error"]["code"] == "cluster_not_running"
    assert srv.post("/api/processing/cluster/stop").json()["message"] == "Cluster is not running"
    r = srv.post("/api/processing/cluster/start")
    assert r.status_code == 200 and r.json()["message"] == "Cluster started successfully"
    assert r.json()["cluster_info"]["n_workers"] == 1  # the configured count again
    body = srv.get("/api/processing/cluster/events?limit=1000").json()
    events = [e["event"] for e in body["events"]]
    new = body["total"] - events_before
    assert events[:new] == ["start", "stop"]  # newest first: this test's two
    assert "start" in events[new:]  # and before them the server's own start
