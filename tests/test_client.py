"""processing_client (also importable as app.client) against the real server: every method, Job.wait's progress bar, the one
error type. Scaling and stopping use the scratch server (conftest) so the shared one keeps its 2 workers."""
from __future__ import annotations

import pytest
import requests

from processing_client import PRIORITIES, TERMINAL, Client, Job, ProcessingAPIError
from app.demo import generate_expression, write_dataset
from tests.helpers import TOKEN, uid, wait_until, write_csv
from tests.server import TEST_ENV, ClosedPort, ServerProcess

MEAN = {"column": "expression_level", "operation": "mean"}


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Client:
    return Client(server.url)


@pytest.fixture(scope="module")
def slow_dataset(server: ServerProcess) -> str:
    """A dataset whose exact distinct counts take a few seconds: progress and ETA to watch."""
    dataset_id = uid("client_slow")
    out = server.data_dir / "inputs" / dataset_id
    write_dataset(generate_expression(300_000, 7), out, "csv", n_files=6)
    Client(server.url).datasets_register(str(out), dataset_id, format="csv")
    return dataset_id


def test_the_clients_copies_of_the_apis_constants_match_the_server():
    """The client imports nothing from the server, so it keeps its own copies."""
    import app.client
    import processing_client.client
    from app.lifecycle import TERMINAL as SERVER_TERMINAL
    from app.models import PRIORITIES as SERVER_PRIORITIES

    assert app.client is processing_client.client and app.client.Client is Client
    assert set(TERMINAL) == set(SERVER_TERMINAL) and PRIORITIES == SERVER_PRIORITIES


def test_health_start_status_workers_events_openapi(api):
    assert api.health()["status"] == "healthy"
    assert api.cluster_start()["message"] == "Cluster is already running"
    status = api.cluster_status()
    assert status["status"] == "running" and status["n_workers"] == 2
    assert {"total_cores", "total_memory", "used_memory", "memory_usage_percent", "active_tasks"} <= set(status)
    assert api.workers()["total"] == 2
    assert "events" in api.cluster_events(limit=5)
    assert "/api/processing/jobs/submit" in api.openapi()["paths"]


def test_metrics_history(api):
    # 3 rows, the newest sampled once the 2 workers were up (the first ones may predate them)
    wait_until(lambda: (m := api.metrics())["total"] >= 3 and m["metrics"][-1]["n_workers"] == 2, 30, 0.5,
               "3 metric rows, the newest with 2 workers")
    answer = api.metrics(limit=3)
    rows = answer["metrics"]
    assert answer["total"] >= 3 and len(rows) == 3
    assert {"timestamp", "n_workers", "total_memory", "used_memory", "total_cores", "active_tasks"} <= set(rows[-1])
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows) and rows[-1]["n_workers"] == 2
    recent = api.metrics(window="1h", limit=2)["metrics"]
    assert len(recent) == 2 and recent[-1]["ts"] >= rows[-1]["ts"], "the newest rows"


def test_live_metrics_and_recommendations(api):
    live, advice = api.metrics_live(seconds=5), api.recommendations()
    assert live["total"] == len(live["samples"]) >= 2 and live["samples"][-1]["n_workers"] == 2
    assert advice["generated_at"].endswith("Z") and isinstance(advice["recommendations"], list)
    assert {"pending_wait_s"} <= set(advice["thresholds"])


def test_register_show_list_and_delete(api, server):
    dataset_id = uid("client_reg")
    path = write_csv(server.data_dir / "client" / f"{dataset_id}.csv", rows=5)
    ds = api.datasets_register(str(path), dataset_id, format="csv", options={"delimiter": ","},
                               description="registered by the client test")
    assert ds["dataset_id"] == dataset_id and ds["format"] == "csv"
    assert ds["description"] == "registered by the client test"
    assert dataset_id in {d["dataset_id"] for d in api.datasets_list(limit=1000)["datasets"]}
    page = api.datasets_list(limit=1, offset=0)
    assert len(page["datasets"]) == 1 and page["total"] >= 2
    shown = api.dataset(dataset_id, preview_rows=2)
    assert shown["columns"] == ["gene_id", "expression_level"] and len(shown["preview"]) == 2
    assert "dataset_id" in api.dataset_delete(dataset_id)
    with pytest.raises(ProcessingAPIError) as err:
        api.dataset(dataset_id)
    assert err.value.status == 404 and err.value.code == "dataset_not_found"
    assert path.exists(), "deleting a registered dataset never deletes the user's file"


def test_upload_streams_the_file_then_partition_and_delete(api, tmp_path):
    dataset_id = uid("client_up")
    path = write_csv(tmp_path / "genes.csv", rows=40)
    ds = api.datasets_upload(path, dataset_id)
    assert ds["dataset_id"] == dataset_id and ds["managed"] is True and ds["estimated_rows"] == 40
    answer = api.partition(dataset_id, n_partitions=2)
    assert answer["partition_info"]["n_partitions"] == 2, answer
    assert api.dataset(dataset_id, preview_rows=0)["partitioned"]
    api.dataset_delete(dataset_id)
    assert dataset_id not in {d["dataset_id"] for d in api.datasets_list(limit=1000)["datasets"]}


def test_register_and_upload_accept_a_name(api, server, tmp_path):
    dataset_id = uid("client_named")
    path = write_csv(server.data_dir / "client" / f"{dataset_id}.csv")
    assert api.datasets_register(str(path), dataset_id, name="Named by the client")["name"] == "Named by the client"
    uploaded = api.datasets_upload(write_csv(tmp_path / "n.csv"), uid("client_named"), name="Uploaded name")
    assert uploaded["name"] == "Uploaded name"
    assert api.datasets_upload(write_csv(tmp_path / "m.csv"), uid("client_unnamed"))["name"].startswith("client_")


def test_submit_wait_with_progress_then_result_and_listing(api, slow_dataset, capsys):
    job = api.submit("aggregate", slow_dataset,
                     {"column": "expression_level", "operation": "nunique", "group_by": "sample_id"},
                     priority="HIGH", max_memory_gb=0.5, max_cores=1)
    assert isinstance(job, Job) and job.id.startswith("job_") and job.submitted["status"] == "pending"
    final = job.wait(timeout=240, progress=True, poll=0.5)
    assert final["status"] == "completed", final
    assert final["progress"] == 100.0 and final["eta_seconds"] == 0.0
    bar = capsys.readouterr().err
    assert job.id in bar and "100%" in bar and "status=completed" in bar and "eta=" in bar, bar
    page = job.result(limit=5)
    assert page["total"] > 5 and len(page["rows"]) == 5
    assert api.result(job.id, offset=5, limit=2)["rows"] == job.result(offset=5, limit=7)["rows"][:2]
    assert job.status()["status"] == api.job_status(job.id)["status"] == "completed"
    listed = api.jobs_list(status="completed", priority=["HIGH", "CRITICAL"], limit=1000)
    assert job.id in {j["job_id"] for j in listed["jobs"]}
    assert all(j["priority"] in ("HIGH", "CRITICAL") for j in listed["jobs"])
    assert api.job_wait(job.id, timeout=1)["status"] == "completed"


def test_scalar_result_and_quiet_wait(api, capsys):
    job = api.submit("aggregate", "demo_expression", MEAN)
    assert job.wait(timeout=120, progress=False)["status"] == "completed"
    assert capsys.readouterr().err == ""
    expected = generate_expression(int(TEST_ENV["DEMO_ROWS"])).expression_level.mean()  # the demo dataset
    assert job.result()["result"]["value"] == pytest.approx(expected, rel=1e-12)


def test_queue_and_operations(api):
    queue = api.queue_status()
    assert queue["scheduler_running"] is True
    assert {"total_queued", "total_running", "priority_breakdown"} <= set(queue["queue_status"])
    assert queue["resource_usage"]["cluster_resources"]["total_cores"] == 2
    ops = api.operations()
    assert {"aggregate", "describe", "partition"} <= {o["name"] for o in ops["operations"]}


def test_api_errors_raise_one_exception_type_with_the_error_shape(api):
    with pytest.raises(ProcessingAPIError) as err:
        api.job_status("job_nope")
    e = err.value
    assert (e.status, e.code) == (404, "job_not_found") and "job_nope" in e.message
    assert e.details == {"job_id": "job_nope"} and e.request_id
    with pytest.raises(ProcessingAPIError) as err:
        api.cluster_scale(n_workers=999)
    assert (err.value.status, err.value.code) == (400, "invalid_request") and "maximum" in err.value.details
    with pytest.raises(ProcessingAPIError) as err:
        api.submit("no_such_operation", "demo_expression")
    assert err.value.code == "invalid_request" and "aggregate" in err.value.message
    with pytest.raises(ProcessingAPIError) as err:
        api.cancel(api.submit("aggregate", "demo_expression", MEAN).wait(progress=False)["job_id"])
    assert (err.value.status, err.value.code) == (409, "job_finished")
    with pytest.raises(ProcessingAPIError) as err:
        api.jobs_list(status="bogus")
    assert err.value.status == 400 and err.value.details == {"field": "status"}


def test_an_error_page_that_is_not_the_apis_still_raises_the_one_type(server):
    # a base URL one folder off (as behind a misconfigured proxy): Tornado's own HTML 404 page
    with pytest.raises(ProcessingAPIError) as err:
        Client(server.url + "/not-the-api").health()
    assert (err.value.status, err.value.code) == (404, "http_error") and "Not Found" in err.value.message


def test_token_is_sent_as_a_bearer_header(token_server, monkeypatch):
    assert "total_queued" in Client(token_server.url, token=TOKEN).queue_status()["queue_status"]
    for anonymous in (Client(token_server.url), Client(token_server.url, token="not-the-token")):
        with pytest.raises(ProcessingAPIError) as err:
            anonymous.queue_status()
        assert (err.value.status, err.value.code) == (401, "unauthorized")
    monkeypatch.setenv("PROCESSING_URL", token_server.url + "/")
    monkeypatch.setenv("PROCESSING_API_TOKEN", TOKEN)
    from_env = Client.from_env()
    assert "total_queued" in from_env.queue_status()["queue_status"]
    assert from_env.health()["status"] in {"healthy", "degraded"}


def test_upload_sends_the_raw_file_with_its_name(token_server, tmp_path):
    api = Client(token_server.url, token=TOKEN)
    path = tmp_path / "my data.csv"
    path.write_bytes(b"gene_id,expression_level\nG0,0.5\nG1,1.5\nG2,-2.25\n")
    dataset_id = uid("client_raw")
    ds = api.datasets_upload(path, dataset_id=dataset_id)
    assert ds["dataset_id"] == dataset_id and ds["managed"] is True
    assert ds["format"] == "csv", "the file's name, sent with the body, gives the format"
    shown = api.dataset(dataset_id, preview_rows=5)
    assert shown["columns"] == ["gene_id", "expression_level"]
    assert [(r["gene_id"], r["expression_level"]) for r in shown["preview"]] == [("G0", 0.5), ("G1", 1.5),
                                                                               ("G2", -2.25)]
    stored = token_server.data_dir / "managed" / "uploads" / dataset_id / "data.csv"
    assert stored.read_bytes() == path.read_bytes(), "the bytes sent are the bytes stored"


def test_an_unreachable_service_raises_a_connection_error():
    with ClosedPort() as url:
        with pytest.raises(requests.ConnectionError):
            Client(url, timeout=5).health()


def test_scale_adapt_stop_cancel_and_wait_timeout_on_the_scratch_server(scratch_server):
    api = Client(scratch_server.url)
    assert api.cluster_status()["n_workers"] == 1
    assert api.cluster_scale(2)["target"] == 2
    scratch_server.wait_workers(2)
    assert api.cluster_scale(minimum=1, maximum=2)["adaptive"] == {"minimum": 1, "maximum": 2}
    assert api.cluster_status()["adaptive"] == {"minimum": 1, "maximum": 2}
    with pytest.raises(ProcessingAPIError) as err:
        api.cluster_scale(minimum=1)
    assert err.value.code == "invalid_request" and "maximum" in err.value.message
    api.cluster_scale(1)
    assert scratch_server.wait_workers(1)["adaptive"] is None

    assert api.cluster_stop()["message"] == "Cluster stopped successfully"
    job = api.submit("aggregate", "demo_expression", MEAN, max_cores=1, max_memory_gb=0.25)  # no cluster: waits
    with pytest.raises(TimeoutError, match=job.id):
        job.wait(timeout=1.5, progress=False, poll=0.5)
    cancelled = job.cancel()
    assert cancelled["status"] == "cancelled" and cancelled["job_id"] == job.id
    assert job.wait(timeout=5, progress=False)["status"] == "cancelled"

    assert api.cluster_start()["message"] == "Cluster started successfully"
    scratch_server.wait_workers(1)
    assert api.health()["cluster_running"] is True
