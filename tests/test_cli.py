"""The ``processing`` command: in-process ``main([...])`` against the real server, exit
codes 0/1/2/3/4, ``--json`` that parses, and the installed console script itself."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from processing_client.cli import main, parse_params, UsageError
from tests.helpers import TOKEN, wait_until, write_csv
from tests.server import ClosedPort, ServerProcess

SCRIPT = Path(sys.executable).with_name("processing")


@pytest.fixture
def cli(server: ServerProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``processing ARGS`` in-process against the shared server: (exit code, stdout, stderr)."""
    monkeypatch.setenv("PROCESSING_URL", server.url)
    monkeypatch.delenv("PROCESSING_API_TOKEN", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_json(cli: Any, *args: str) -> Any:
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_app_cli_is_an_alias_of_the_client_package():
    import app.cli
    import processing_client.cli

    assert app.cli is processing_client.cli and app.cli.main is main


def test_param_values_are_json_when_they_parse_else_text():
    params = parse_params(["n=10", "x=2.5", "ok=true", "cols=[\"a\",\"b\"]", "op=mean", "expr=a=b", "none=null",
                           "empty="], '{"column": "p_value", "n": 1}')
    assert params == {"column": "p_value", "n": 10, "x": 2.5, "ok": True, "cols": ["a", "b"], "op": "mean",
                      "expr": "a=b", "none": None, "empty": ""}
    for bad in (["novalue"], ["=1"]):
        with pytest.raises(UsageError):
            parse_params(bad, None)
    with pytest.raises(UsageError, match="JSON object"):
        parse_params([], "[1, 2]")
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_params([], "{nope")


def test_cluster_status_as_a_table_and_as_json(cli):
    code, out, err = cli("cluster", "status")
    assert code == 0 and err == ""
    assert "status:" in out and "running" in out and "n_workers:" in out
    assert run_json(cli, "cluster", "status")["n_workers"] == 2
    code, out, _ = cli("--json", "cluster", "status")  # --json before the command works too
    assert code == 0 and json.loads(out)["status"] == "running"
    assert run_json(cli, "cluster", "start")["message"] == "Cluster is already running"


def test_health_workers_queue_operations(cli):
    assert run_json(cli, "health")["status"] == "healthy"
    code, out, _ = cli("workers")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["NAME", "ADDRESS"] and len(out.splitlines()) == 3
    assert run_json(cli, "queue")["scheduler_running"] is True
    code, out, _ = cli("queue")
    assert code == 0 and "total_queued:" in out and "available_cores:" in out
    code, out, _ = cli("operations")
    assert code == 0 and out.startswith("NAME") and "aggregate" in out and "differential_expression" in out
    assert {o["name"] for o in run_json(cli, "operations")["operations"]} >= {"aggregate", "filter"}


def test_metrics(cli, server):
    # 3 rows, the newest sampled once the 2 workers were up (the first ones may predate them)
    wait_until(lambda: (m := server.get("/api/processing/metrics/cluster").json())["total"] >= 3
               and m["metrics"][-1]["n_workers"] == 2, 30, 0.5, "3 metric rows, the newest with 2 workers")
    code, out, err = cli("metrics", "--limit", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("TIMESTAMP") and "N_WORKERS" in lines[0]
    assert len(lines) == 5 and lines[-1].startswith("(3 of "), out  # header, 3 rows, the count
    assert all(line.split()[0].endswith("Z") for line in lines[1:4])
    answer = run_json(cli, "metrics", "--window", "1h", "--limit", "2")
    rows = answer["metrics"]
    assert len(rows) == 2 and answer["total"] >= 3
    assert rows[0]["ts"] < rows[1]["ts"] and rows[-1]["n_workers"] == 2 and rows[-1]["status"] == "running"


def test_datasets_list_show_add_upload_delete(cli, server, tmp_path):
    code, out, _ = cli("datasets", "list")
    assert code == 0 and out.startswith("DATASET_ID") and "demo_expression" in out
    code, out, _ = cli("datasets", "show", "demo_expression", "--rows", "2")
    assert code == 0 and "schema:" in out and "expression_level" in out and "preview (2 rows):" in out

    added = f"cli_add_{uuid.uuid4().hex[:8]}"
    path = write_csv(server.data_dir / "cli" / f"{added}.csv")
    ds = run_json(cli, "datasets", "add", str(path), "--id", added, "--format", "csv", "--name", "From the CLI")
    assert ds["dataset_id"] == added and ds["name"] == "From the CLI"
    uploaded = f"cli_up_{uuid.uuid4().hex[:8]}"
    code, out, err = cli("datasets", "upload", str(write_csv(tmp_path / "up.csv", rows=20)), "--id", uploaded)
    assert code == 0 and f"Dataset uploaded: {uploaded}" in out, err
    listed = {d["dataset_id"] for d in run_json(cli, "datasets", "list", "--limit", "1000")["datasets"]}
    assert {added, uploaded} <= listed

    code, out, err = cli("partition", uploaded, "--n", "2")
    assert code == 0 and "Data partitioned successfully" in out and "n_partitions:" in out, err
    for dataset_id in (added, uploaded):
        code, out, err = cli("datasets", "delete", dataset_id)
        assert code == 0 and "deleted" in out, err
    code, _, err = cli("datasets", "show", added)
    assert code == 1 and "dataset_not_found" in err


def test_jobs_submit_wait_status_result_list(cli):
    code, out, err = cli("jobs", "submit", "--operation", "aggregate", "--dataset", "demo_expression",
                         "--param", "column=expression_level", "--param", "operation=mean",
                         "--param", 'group_by=["condition"]', "--priority", "high", "--cores", "1",
                         "--memory-gb", "0.5", "--wait")
    assert code == 0, err
    assert "status:" in out and "completed" in out and "Job submitted: job_" in err and "100%" in err
    job_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("job_id:"))

    status = run_json(cli, "jobs", "status", job_id)
    assert status["priority"] == "HIGH" and status["max_cores"] == 1 and status["max_memory_gb"] == 0.5
    assert status["parameters"] == {"column": "expression_level", "operation": "mean", "group_by": ["condition"]}
    code, out, _ = cli("jobs", "result", job_id)
    assert code == 0 and out.splitlines()[0].split() == ["CONDITION", "MEAN"] and "(rows 1–2 of 2)" in out
    assert run_json(cli, "jobs", "result", job_id, "--limit", "1")["rows"][0]["condition"] == "control"
    code, out, _ = cli("jobs", "list", "--status", "completed", "--priority", "HIGH")
    assert code == 0 and out.startswith("JOB_ID") and job_id in out
    assert job_id in {j["job_id"] for j in run_json(cli, "jobs", "list", "--status", "completed,failed")["jobs"]}

    code, out, err = cli("jobs", "cancel", job_id)
    assert code == 1 and out == "" and "already completed" in err and "job_finished" in err and "HTTP 409" in err


def test_jobs_submit_json_then_wait(cli):
    submitted = run_json(cli, "jobs", "submit", "--operation", "describe", "--dataset", "demo_expression",
                         "--params-json", '{"columns": ["p_value"]}')
    assert submitted["status"] == "pending" and submitted["job_id"].startswith("job_")
    final = run_json(cli, "jobs", "wait", submitted["job_id"])  # --json: no progress bar, one JSON document
    assert final["status"] == "completed" and final["parameters"] == {"columns": ["p_value"]}
    code, out, err = cli("jobs", "wait", submitted["job_id"], "--no-progress")
    assert code == 0 and err == "" and "completed" in out


@pytest.mark.parametrize("args, message", [
    ((), "required: COMMAND"),
    (("nope",), "invalid choice"),
    (("jobs", "submit", "--operation", "aggregate"), "--dataset"),
    (("jobs", "submit", "--operation", "aggregate", "--dataset", "d", "--param", "novalue"), "key=value"),
    (("jobs", "submit", "--operation", "aggregate", "--dataset", "d", "--params-json", "[1]"), "JSON object"),
    (("jobs", "submit", "--operation", "aggregate", "--dataset", "d", "--priority", "URGENT"), "invalid choice"),
    (("cluster", "scale"), "number of workers"),
    (("cluster", "scale", "2", "--min", "1", "--max", "3"), "not both"),
    (("cluster", "scale", "two"), "invalid int"),
    (("datasets", "add", "x.csv"), "--id"),
    (("datasets", "upload", "/no/such/file.csv"), "no such file"),
    (("--url", "localhost:8001", "health"), "invalid service URL"),
])
def test_usage_errors_exit_2(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert message in err


def test_help_exits_0(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "exit codes" in out and "jobs" in out


def test_api_errors_exit_1_with_the_servers_message(cli):
    code, out, err = cli("jobs", "status", "job_nope")
    assert code == 1 and out == ""
    assert "no job 'job_nope'" in err and "job_not_found" in err and "HTTP 404" in err
    code, out, err = cli("jobs", "wait", "job_nope")
    assert code == 1 and err.startswith("processing: no job 'job_nope'"), "no progress bar for an unknown job"
    code, _, err = cli("cluster", "scale", "999")
    assert code == 1 and "out of bounds" in err
    code, _, err = cli("jobs", "list", "--status", "bogus")
    assert code == 1 and "unknown status bogus" in err


def test_an_unreachable_service_exits_3_naming_the_url(cli):
    with ClosedPort() as url:
        code, out, err = cli("--url", url, "cluster", "status")
    assert code == 3 and out == ""
    assert f"cannot connect to the processing service at {url}" in err


def test_url_and_token_come_from_the_environment(token_server, capsys, monkeypatch):
    monkeypatch.setenv("PROCESSING_URL", token_server.url)
    monkeypatch.delenv("PROCESSING_API_TOKEN", raising=False)
    assert main(["queue", "--json"]) == 1  # the URL came from the environment; no token: refused
    assert "unauthorized" in capsys.readouterr().err
    monkeypatch.setenv("PROCESSING_API_TOKEN", TOKEN)
    assert main(["queue", "--json"]) == 0
    assert "total_queued" in json.loads(capsys.readouterr().out)["queue_status"]
    monkeypatch.setenv("PROCESSING_API_TOKEN", "not-the-token")
    assert main(["queue", "--token", TOKEN, "--json"]) == 0, "--token wins over the environment"
    capsys.readouterr()
    assert main(["queue", "--json"]) == 1 and "unauthorized" in capsys.readouterr().err


def test_scale_adapt_stop_start_wait_timeout_and_cancel(scratch_server, capsys, monkeypatch):
    monkeypatch.setenv("PROCESSING_URL", scratch_server.url)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        return (code, *capsys.readouterr())

    assert run("cluster", "scale", "2")[1].strip() == "Cluster scaling to 2 workers"
    scratch_server.wait_workers(2)
    code, out, _ = run("cluster", "scale", "--min", "1", "--max", "2")
    assert code == 0 and "adaptive" in out
    assert run("cluster", "scale", "1")[0] == 0
    scratch_server.wait_workers(1)
    code, out, _ = run("cluster", "stop")
    assert code == 0 and out.strip() == "Cluster stopped successfully"

    code, out, _ = run("jobs", "submit", "--operation", "aggregate", "--dataset", "demo_expression",
                       "--param", "column=p_value", "--param", "operation=max", "--cores", "1", "--memory-gb",
                       "0.25", "--json")
    job_id = json.loads(out)["job_id"]
    code, out, err = run("jobs", "wait", job_id, "--timeout", "1", "--no-progress")
    assert code == 4 and "still pending" in err
    code, out, _ = run("jobs", "cancel", job_id)
    assert code == 0 and "cancelled" in out
    code, out, err = run("jobs", "wait", job_id, "--no-progress")
    assert code == 1 and "cancelled" in out and f"job {job_id} cancelled" in err

    code, out, _ = run("cluster", "start")
    assert code == 0 and "Cluster started successfully" in out and "n_workers:" in out
    scratch_server.wait_workers(1)


def test_the_installed_console_script(server):
    assert SCRIPT.is_file(), "run: .venv/bin/python -m pip install -e ."
    done = subprocess.run([str(SCRIPT), "--url", server.url, "cluster", "status", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_workers"] == 2
    with ClosedPort() as url:
        done = subprocess.run([str(SCRIPT), "queue"], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "PROCESSING_URL": url})
    assert done.returncode == 3 and url in done.stderr
    done = subprocess.run([str(SCRIPT), "jobs"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: processing jobs" in done.stderr
