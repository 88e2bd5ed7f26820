"""Monitoring through the real API: metric history, the live buffer, Prometheus text
and recommendations (one server seeded with jobs); plus the store's retention and downsampling, without a server."""
from __future__ import annotations

import concurrent.futures as cf
import math
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import recommendations
from app import store_reads
from app.store import Store, iso
from tests.helpers import TOKEN, scheduler_address

CONTRACT_FIELDS = {"timestamp", "n_workers", "total_memory", "used_memory", "total_cores", "active_tasks"}
HISTORY = "/api/processing/metrics/cluster"


def history(server, **params) -> dict:
    r = server.get(HISTORY, params=params)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def until(server) -> float:
    """A fixed end once at least 8 rows exist, so queries in a test see the same rows."""
    server.wait_for(lambda: history(server)["total"] >= 8, timeout=30)
    return time.time()


@pytest.fixture(scope="module")
def since(until) -> float:
    """The last two minutes before ``until``: the shared server may have sampled for half an
    hour by now, more rows than one page (limit 1000) holds."""
    return until - 120


def test_history_is_in_time_order_with_contract_fields(server, until, since):
    body = history(server, since=since, until=until)
    rows = body["metrics"]
    assert body["total"] == len(rows) >= 8 and "step" not in body
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    assert all(r["timestamp"].endswith("Z") for r in rows)
    last = rows[-1]
    assert CONTRACT_FIELDS <= set(last)
    assert last["n_workers"] >= 1 and last["status"] == "running"
    assert last["total_memory"] == f"{last['total_memory_bytes'] / 1e9:.2f}GB"
    assert last["used_memory"].endswith("GB") and isinstance(last["cpu_percent"], float)


def test_limit_keeps_the_newest_rows(server, until, since):
    everything = history(server, since=since, until=until)["metrics"]
    body = history(server, since=since, until=until, limit=3)
    assert body["total"] == len(everything)
    assert [r["ts"] for r in body["metrics"]] == [r["ts"] for r in everything[-3:]]


def test_step_keeps_one_row_per_bucket(server, until, since):
    everything = history(server, since=since, until=until)["metrics"]
    body = history(server, since=since, until=until, step=3)
    rows = body["metrics"]
    assert body["step"] == 3 and body["total"] == len(rows)
    buckets = [math.floor(r["ts"] / 3) for r in rows]
    assert len(set(buckets)) == len(buckets) and 0 < len(rows) < len(everything)
    # each kept row is the newest of its bucket
    newest = {}
    for r in everything:
        newest[math.floor(r["ts"] / 3)] = r["ts"]
    assert [r["ts"] for r in rows] == [newest[b] for b in buckets] and set(buckets) == set(newest)
    limited = history(server, since=since, until=until, step=3, limit=2)
    assert limited["total"] == len(rows) and [r["ts"] for r in limited["metrics"]] == [r["ts"] for r in rows[-2:]]


def test_since_as_iso_or_epoch_and_window(server, until):
    rows = history(server, until=until)["metrics"]
    since = rows[-4]["ts"]
    as_epoch = history(server, since=since, until=until)
    as_iso = history(server, since=iso(since), until=iso(until + 0.001))
    assert len(as_epoch["metrics"]) == 4 and as_epoch["since"] == iso(since)
    assert [r["ts"] for r in as_iso["metrics"]] == [r["ts"] for r in as_epoch["metrics"]]
    recent = history(server, window="5m")
    assert recent["metrics"] and all(r["ts"] >= time.time() - 300 - 5 for r in recent["metrics"])
    assert history(server, window="7d", step=3600)["total"] >= 1


@pytest.mark.parametrize("params, needle", [
    ({"limit": 0}, "at least 1"),
    ({"limit": 10001}, "at most 10000"),
    ({"limit": "many"}, "must be an integer"),
    ({"step": 0.5}, "at least 1"),
    ({"step": "abc"}, "must be a number"),
    ({"since": "yesterday"}, "ISO-8601"),
    ({"until": "1700000000000"}, "not milliseconds"),
    ({"window": "5x"}, "duration such as 5m"),
    ({"window": "0m"}, "duration such as 5m"),
    ({"window": "5m", "since": "1700000000"}, "either 'since' or 'window'"),
    ({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}, "is before"),
    ({"from": "1700000000"}, "unknown query parameter"),
])
def test_bad_history_params_are_400(server, params, needle):
    r = server.get(HISTORY, params=params)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and needle in err["message"], err["message"]


def test_live_returns_recent_samples_without_worker_lists(server):
    body = server.get("/api/processing/metrics/live", params={"seconds": 5}).json()
    samples = body["samples"]
    assert body["total"] == len(samples) >= 2 and body["interval_s"] == 0.5
    assert all(s["ts"] >= time.time() - 10 for s in samples)
    assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)
    assert "workers" not in samples[-1] and samples[-1]["n_workers"] >= 1
    assert samples[-1]["total_memory"].endswith("GB")
    r = server.get("/api/processing/metrics/live", params={"seconds": 0})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def scrape(server, path: str) -> dict:
    r = server.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(r.text)}


@pytest.mark.parametrize("path", ["/metrics", "/api/processing/metrics/prometheus"])
def test_prometheus_exposes_cluster_and_jobs(server, path):
    server.wait_workers(2)
    families = scrape(server, path)
    value = {name: f.samples[0].value for name, f in families.items() if len(f.samples) == 1}
    assert value["processing_cluster_up"] == 1 and value["processing_cluster_workers"] == 2
    assert value["processing_cluster_cores"] == 2 and value["processing_cluster_memory_total_bytes"] == 2e9
    assert value["processing_cluster_memory_used_bytes"] > 0
    assert {"processing_cluster_cpu_percent", "processing_cluster_active_tasks",
            "processing_cluster_tasks_per_second", "processing_sampler_last_sample_age_seconds"} <= set(value)
    assert len(families["processing_worker_memory_used_bytes"].samples) == 2
    jobs = families["processing_jobs"]
    assert len(jobs.samples) == 20 and {s.labels["priority"] for s in jobs.samples} == {"LOW", "NORMAL", "HIGH", "CRITICAL"}
    for name in ("processing_job_queue_wait_seconds", "processing_job_duration_seconds"):
        assert families[name].type == "histogram"
    for name in ("processing_job_retries", "processing_job_preemptions", "processing_job_attempts"):
        assert families[name].type == "counter"


def test_recommendations_have_a_shape(server):
    r = server.get("/api/processing/recommendations")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generated_at"].endswith("Z") and body["thresholds"] == recommendations.thresholds()
    assert body["thresholds"]["pending_wait_s"] == 300
    # the window rules need 15 min of history: a young server advises no scaling (the shape of
    # advice is checked on a seeded store below)
    assert not [x for x in body["recommendations"] if x["action"] in ("scale_down", "scale_up")], body


# -- without a server -------------------------------------------------------------------

def metric_row(ts: float) -> dict:
    return {"ts": ts, "timestamp": iso(ts), "status": "running", "n_workers": 2, "total_cores": 2,
            "total_memory_bytes": 2_000_000_000, "used_memory_bytes": 500_000_000, "cpu_percent": 1.0,
            "active_tasks": 0, "tasks_per_second": 0.0, "queue": {"queued": 0}}


def test_prune_metrics_drops_rows_older_than_retention(tmp_path):
    store = Store(tmp_path / "m.db")
    now = time.time()
    for hours in (100, 80, 73, 71, 1, 0):
        store.insert_metric(metric_row(now - hours * 3600))
    assert store.prune_metrics(now - 72 * 3600) == 3
    total, rows = store.query_metrics()
    assert total == 3 and [round((now - r["ts"]) / 3600) for r in rows] == [71, 1, 0]
    assert rows[0]["queue"] == {"queued": 0}
    assert store.prune_metrics(now - 72 * 3600) == 0
    store.close()


@pytest.mark.parametrize("chunk_buckets, chunk_span_s", [(500, 6 * 3600.0), (3, 50.0)])
def test_downsampling_matches_the_store_and_counts_cut_buckets(tmp_path, monkeypatch, chunk_buckets, chunk_span_s):
    monkeypatch.setattr(store_reads, "CHUNK_BUCKETS", chunk_buckets)
    monkeypatch.setattr(store_reads, "CHUNK_SPAN_S", chunk_span_s)
    store = Store(tmp_path / "m.db")
    start = 1_700_000_000.0
    for i in range(300):
        if not 100 <= i < 150:  # a gap: the server was down
            store.insert_metric(metric_row(start + i * 2 + 0.25))
    for since, until in ((start + 20, start + 500.25), (None, None)):
        for step, limit in ((10, 1000), (10, 7), (60, 1000), (1, 50), (7.5, 20), (1, 1000)):
            expected = store.query_metrics(since=since, until=until, limit=limit, step=step)
            total, rows = store.metric_history(since, until, limit, step)
            assert total == expected[0] and [r["id"] for r in rows] == [r["id"] for r in expected[1]], (step, limit)
    store.close()


def seed_jobs(store: Store, now: float) -> None:
    """Finished, failed and pending jobs with their attempts, as an earlier run left them."""
    timings = [(2, 10), (40, 400), (7200, 3)]  # (queue wait, run) in seconds
    for i, (wait, run) in enumerate(timings):
        created = now - 3600 - wait - run
        store.insert_job({"job_id": f"c{i}", "status": "completed", "priority": "HIGH", "created_at": iso(created),
                          "started_at": iso(created + wait), "completed_at": iso(created + wait + run)})
    old = now - 3 * 86400
    store.insert_job({"job_id": "old", "status": "completed", "priority": "LOW", "created_at": iso(old),
                      "started_at": iso(old + 1), "completed_at": iso(old + 2)})
    store.insert_job({"job_id": "oom", "status": "failed", "priority": "LOW", "created_at": iso(now - 700),
                      "completed_at": iso(now - 650), "max_memory_gb": 1.5,
                      "error": {"type": "KilledWorker", "message": "worker died"}})
    store.insert_job({"job_id": "p", "status": "pending", "priority": "NORMAL", "created_at": iso(now - 400),
                      "operation": "aggregate", "dataset_id": "gone", "parameters": {"column": "x", "operation": "mean"},
                      "max_cores": 1, "max_memory_gb": 1.0})
    outcomes = {"c0": ["worker_lost", "completed"], "c1": ["preempted", "server_restart", "completed"],
                "c2": ["completed"], "oom": ["failed"]}
    for job_id, ends in outcomes.items():
        for number, outcome in enumerate(ends, 1):
            store.end_attempt(store.add_attempt(job_id, number, iso(now)), outcome)


def test_collector_and_recommendations_read_a_real_servers_store(make_server, tmp_path, monkeypatch):
    """A data dir seeded with jobs; the real token-protected server (no cluster: the pending
    job stays pending) exposes them as Prometheus histograms and counters, and advises."""
    data = tmp_path / "seeded"
    data.mkdir()
    now = time.time()
    store = Store(data / "processing.db")
    seed_jobs(store, now)
    store.close()
    srv = make_server({"PROCESSING_API_TOKEN": TOKEN, "CLUSTER_AUTOSTART": "0", "DEMO_DATASET": "0"}, data_dir=data)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = srv.get("/metrics", headers=auth)
    assert r.status_code == 200, r.text
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    wait = {s.labels.get("le"): s.value for s in families["processing_job_queue_wait_seconds"].samples}
    assert wait["5.0"] == 1 and wait["60.0"] == 2 and wait["3600.0"] == 2 and wait["+Inf"] == 3
    run = {s.labels.get("le"): s.value for s in families["processing_job_duration_seconds"].samples}
    assert run["5.0"] == 1 and run["15.0"] == 2 and run["+Inf"] == 3 and abs(run[None] - 413) < 0.5  # _sum
    jobs = {(s.labels["status"], s.labels["priority"]): s.value for s in families["processing_jobs"].samples}
    assert jobs[("completed", "HIGH")] == 3 and jobs[("pending", "NORMAL")] == 1 and jobs[("failed", "LOW")] == 1
    oldest = families["processing_jobs_oldest_pending_age_seconds"].samples[0].value
    assert 399 <= oldest < 400 + (time.time() - now) + 1
    value = {f.name: f.samples[0].value for f in families.values() if f.samples and len(f.samples) == 1}
    assert value["processing_job_retries"] == 2 and value["processing_job_preemptions"] == 1
    assert value["processing_cluster_up"] == 0
    attempts = {s.labels["outcome"]: s.value for s in families["processing_job_attempts"].samples}
    assert attempts == {"completed": 3, "failed": 1, "preempted": 1, "server_restart": 1, "worker_lost": 1}

    r = srv.get("/api/processing/recommendations", headers=auth)
    assert r.status_code == 200, r.text
    recs = {(x["action"], x["suggested"].get("job_id")): x for x in r.json()["recommendations"]}
    assert ("raise_job_memory", "oom") in recs, recs
    assert recs[("raise_job_memory", "oom")]["suggested"]["max_memory_gb"] > 1.5
    assert srv.get("/metrics").status_code == 401, "the token guards the metrics too"


# -- workers that stop or die, seen through the API --------------------------------------

WORKERS = "/api/processing/metrics/workers"
HEALTH = "/api/processing/health"


def worker_rows(srv) -> dict[str, dict]:
    return {w["address"]: w for w in srv.get(WORKERS).json()["workers"]}


def health(srv) -> dict:
    return srv.get(HEALTH).json()


def serves(proc: psutil.Process, address: str) -> bool:
    """Whether ``proc`` listens on the port of the worker at ``address``."""
    port = int(address.rsplit(":", 1)[1])
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp"))
    except psutil.NoSuchProcess:
        return False


def listening_on(procs: list, address: str) -> psutil.Process:
    """The process among ``procs`` that serves the worker at ``address``."""
    for proc in procs:
        if serves(proc, address):
            return proc
    raise AssertionError(f"no process listens on {address}: {[p.pid for p in procs]}")


STALE_HEARTBEAT_S = 10  # the server's threshold here (30 s by default): a frozen worker is stale sooner


def test_frozen_then_killed_worker_shows_in_workers_and_health(make_server):
    srv = make_server({"DEMO_DATASET": "0", "STALE_HEARTBEAT_S": str(STALE_HEARTBEAT_S)})
    srv.wait_workers(2)
    before = worker_rows(srv)
    assert [w["restarts"] for w in before.values()] == [0, 0] and health(srv)["status"] == "healthy"
    frozen, beating = before.values()

    # (a) SIGSTOP: the worker stays in the scheduler's list (until its worker-ttl) but stops beating
    proc = listening_on(srv.descendants(), frozen["address"])
    proc.send_signal(signal.SIGSTOP)
    try:
        srv.wait_for(lambda: (rows := worker_rows(srv))[frozen["address"]]["heartbeat_age_s"] > 5
                     and rows[beating["address"]]["heartbeat_age_s"] < 5, timeout=30)
        body = srv.wait_for(lambda: (h := health(srv))["status"] == "degraded" and h, timeout=STALE_HEARTBEAT_S + 30)
        assert frozen["address"] in worker_rows(srv), "a frozen worker is still listed"
        [reason] = body["reasons"]
        assert reason.startswith(f"worker(s) not heartbeating for over {STALE_HEARTBEAT_S} s")
        assert f"{frozen['name']} ({frozen['address']})" in reason
        assert beating["address"] not in reason
    finally:
        proc.send_signal(signal.SIGCONT)
    srv.wait_for(lambda: health(srv)["status"] == "healthy", timeout=30)

    # (b) SIGKILL: the worker leaves the view; the LocalCluster's nanny (in the server process)
    # starts a replacement of the same name at a new address, counted as a restart
    victim = beating
    listening_on(srv.descendants(), victim["address"]).send_signal(signal.SIGKILL)
    rows = srv.wait_for(lambda: (r := worker_rows(srv)) and victim["address"] not in r and len(r) == 2 and r,
                        timeout=120)  # a worker's restart imports its kernels' modules: slow on a busy machine
    [replacement] = [w for w in rows.values() if w["name"] == victim["name"]]
    assert replacement["restarts"] == 1 and rows[frozen["address"]]["restarts"] == 0
    body = health(srv)
    assert body["status"] == "degraded"
    [reason] = body["reasons"]
    assert reason.startswith(f"worker {victim['name']} ({victim['address']}) was lost")
    assert reason.endswith(f"restarted as {replacement['address']}")


@pytest.fixture
def loopback_cluster(tmp_path):
    """A ``dask scheduler`` and two ``dask worker --no-nanny`` processes; killed by PID after."""
    bindir = os.path.dirname(sys.executable)
    common = {"cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--scheduler-file", str(scheduler_file), "--no-dashboard"], **common)]
    try:
        address = scheduler_address(scheduler_file, procs[0])
        for _ in range(2):
            procs.append(subprocess.Popen([os.path.join(bindir, "dask"), "worker", address, "--no-nanny",
                                           "--nthreads", "1", "--memory-limit", "512MB", "--host", "127.0.0.1",
                                           "--no-dashboard"], **common))
        yield address, procs[1:]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def test_killed_worker_of_an_external_cluster_leaves_it_short(make_server, loopback_cluster):
    address, worker_procs = loopback_cluster
    srv = make_server({"DASK_SCHEDULER_ADDRESS": address, "DEMO_DATASET": "0"})
    srv.wait_workers(2, timeout=90)
    before = worker_rows(srv)
    victim = worker_procs[0]
    [victim_address] = [a for a in before if serves(psutil.Process(victim.pid), a)]
    victim.kill()  # no nanny: nothing brings it back
    rows = srv.wait_for(lambda: len(r := worker_rows(srv)) == 1 and r)
    assert victim_address not in rows
    assert srv.get("/api/processing/cluster/status").json()["n_workers"] == 1
    body = health(srv)
    assert body["status"] == "degraded"
    [reason] = body["reasons"]  # an unnamed worker is named by its address
    assert reason.startswith(f"worker {victim_address} was lost") and reason.endswith("not replaced")


# -- the sampler's own counters ----------------------------------------------------------

def last_tick(server) -> dict:
    """The sampler figures of the newest live sample: tick number, queries so far, tick times."""
    return server.get("/api/processing/metrics/live", params={"seconds": 5}).json()["samples"][-1]["sampler"]


def test_sampler_counters_are_exposed(server):
    families = scrape(server, "/metrics")
    ticks = families["processing_sampler_ticks"].samples[0].value
    queries = families["processing_sampler_queries"].samples[0].value
    tick_seconds = families["processing_sampler_tick_seconds"]
    summary = {s.labels.get("quantile", s.name.rpartition("_")[2]): s.value for s in tick_seconds.samples}
    assert tick_seconds.type == "summary"
    assert ticks >= 2 and queries >= 2 and summary["count"] == ticks and summary["sum"] > 0
    assert 0 < summary["0.5"] <= summary["0.95"] <= summary["0.99"]
    tick = last_tick(server)
    assert tick["tick"] <= ticks and tick["queries"] <= queries and 0 < tick["loop_ms"] <= tick["wall_ms"]


def test_twenty_concurrent_readers_add_no_dask_queries(server):
    server.wait_workers(2)
    first = last_tick(server)
    quiet = server.wait_for(lambda: (t := last_tick(server))["tick"] >= first["tick"] + 3 and t, timeout=30)
    per_tick = (quiet["queries"] - first["queries"]) / (quiet["tick"] - first["tick"])
    assert per_tick >= 1, "each tick reads the scheduler"
    paths = ["/api/processing/metrics/live", "/api/processing/cluster/status", WORKERS]

    def reader(i: int) -> int:
        with requests.Session() as session:
            for n in range(30):
                r = session.get(server.url + paths[(i + n) % len(paths)], timeout=30)
                assert r.status_code == 200, r.text
        return 30

    start = last_tick(server)
    with cf.ThreadPoolExecutor(20) as pool:
        assert sum(pool.map(reader, range(20))) == 600
    end = server.wait_for(lambda: (t := last_tick(server))["tick"] > start["tick"] and t, timeout=30)
    ticks = end["tick"] - start["tick"]
    assert end["queries"] - start["queries"] <= per_tick * ticks, (start, end, per_tick)
