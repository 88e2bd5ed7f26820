"""Dockerfile and compose.yaml, without a container engine: the compose file only sets
variables the app knows, its defaults are the app's defaults, ports and the shared data
volume are as the README says, and its three commands really work together when run as
plain processes. ``docker compose config -q`` runs when the compose plugin is installed."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import dask.config
import pytest
import yaml

from app.cli import main as cli_main
from app.client import Client, ProcessingAPIError
from app.server import check_binding
from app.settings import SETTINGS, Settings
from tests.helpers import wait_until
from tests.server import ROOT, ServerProcess

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SETTING_NAMES = {var.env for var in SETTINGS}
# Variables the compose file may set for the app besides app.settings.SETTINGS: none. The app
# is configured through its settings only; DASK_* names in SETTINGS are the app's own.
ALLOWED_APP_EXTRA: frozenset[str] = frozenset()
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Resolve compose's ${VAR}, ${VAR:-default} and ${VAR:?error} like `docker compose config`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        current, op, arg = env.get(m["name"]), m["op"] or "", m["arg"] or ""
        empty = current is None or (current == "" and op.startswith(":"))
        if op.endswith("?") and empty:
            raise KeyError(f"{m['name']}: {arg}")
        return arg if op.endswith("-") and empty else (current or "")

    return INTERPOLATION.sub(one, value)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """compose.yaml as `docker compose config` would give it with a token and defaults."""
    return interpolate(raw, {"PROCESSING_API_TOKEN": "test-token"})


def test_three_services_on_one_image_with_the_guides_ports(compose):
    services = compose["services"]
    assert set(services) == {"app", "scheduler", "worker"}
    assert len({s["image"] for s in services.values()}) == 1, "client, scheduler and workers share versions"
    assert services["app"]["ports"] == ["8001:8001"]
    # the scheduler runs code for whoever reaches it: published on the host's loopback only
    assert sorted(services["scheduler"]["ports"]) == ["127.0.0.1:8786:8786", "127.0.0.1:8787:8787"]
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker, "`--scale worker=N` needs neither"
    assert worker["deploy"]["replicas"] == "4", "DASK_N_WORKERS (default 4) containers unless --scale says"


def test_the_app_gets_only_variables_its_settings_know(raw):
    extra = set(raw["services"]["app"]["environment"]) - SETTING_NAMES - ALLOWED_APP_EXTRA
    assert not extra, f"not in app.settings.SETTINGS: {sorted(extra)}"


def test_every_interpolated_variable_is_a_setting_with_the_same_default(raw):
    found = [m for text in _strings(raw) for m in INTERPOLATION.findall(text)]
    assert found, "the compose file reads its settings from the environment"
    assert {name for name, _, _ in found} <= SETTING_NAMES
    defaults = Settings()
    by_name = {var.env: var for var in SETTINGS}
    for name, op, arg in found:
        if op == ":-" and arg:
            var = by_name[name]
            assert var.parse(arg) == getattr(defaults, var.attr), f"{name} defaults to {arg} in compose.yaml"


def test_the_token_is_required_and_lets_the_app_bind_all_interfaces(raw, compose):
    with pytest.raises(KeyError, match="PROCESSING_API_TOKEN"):
        interpolate(raw, {})
    env = compose["services"]["app"]["environment"]
    settings = Settings.from_env(env, host="0.0.0.0")  # the image's CMD passes --host 0.0.0.0
    check_binding(settings)
    assert settings.api_token == "test-token" and settings.port == 8001
    assert settings.scheduler_address == "tcp://scheduler:8786"
    with pytest.raises(SystemExit, match="PROCESSING_API_TOKEN"):
        check_binding(Settings.from_env({**env, "PROCESSING_API_TOKEN": ""}, host="0.0.0.0"))


def test_scheduler_and_worker_commands(compose, raw):
    scheduler = compose["services"]["scheduler"]["command"]
    assert scheduler[:2] == ["dask", "scheduler"]
    assert scheduler[scheduler.index("--port") + 1] == "8786"
    assert scheduler[scheduler.index("--dashboard-address") + 1] == ":8787"
    assert compose["services"]["worker"]["command"] == [
        "dask", "worker", "tcp://scheduler:8786", "--nthreads", "2", "--memory-limit", "2GB"]
    sized = interpolate(raw, {"PROCESSING_API_TOKEN": "t", "DASK_THREADS_PER_WORKER": "3", "DASK_MEMORY_LIMIT": "6GB"})
    assert sized["services"]["worker"]["command"][-4:] == ["--nthreads", "3", "--memory-limit", "6GB"]
    for name in ("scheduler", "worker"):
        extra = set(compose["services"][name].get("environment") or {})
        assert all(dask.config.get(key[5:].lower().replace("__", "."), None) is not None for key in extra), extra


def test_app_and_workers_share_the_data_volume_at_the_same_path(compose):
    app, worker = compose["services"]["app"], compose["services"]["worker"]
    data_dir = app["environment"]["PROCESSING_DATA_DIR"]
    assert app["volumes"] == worker["volumes"] == [f"processing-data:{data_dir}"]
    assert "processing-data" in compose["volumes"], "a named volume, not a bind mount"
    assert "volumes" not in compose["services"]["scheduler"], "the scheduler reads no data"


def test_dockerfile():
    text = DOCKERFILE.read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line[0].isspace()
                    and not line.startswith("#")]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    args = {k: v for k, v in instructions if k in {"EXPOSE", "CMD", "USER"}}
    assert args["EXPOSE"] == "8001"
    assert json.loads(args["CMD"]) == ["python", "-m", "app", "serve", "--host", "0.0.0.0"]
    assert args["USER"] != "root"
    copied = {v.split()[0] for k, v in instructions if k == "COPY"}
    assert {"pyproject.toml", "README.md", "app", "components", "client", "static"} <= copied
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "data", "tests"} <= ignored
    assert not ignored & {"app", "components", "client", "static", "pyproject.toml", "README.md"}


# Keys of the compose specification (compose-spec.io) this project may use; anything else
# is a typo `docker compose` would refuse or, worse, ignore.
TOP_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {"image", "build", "restart", "command", "entrypoint", "ports", "environment", "volumes",
                "depends_on", "healthcheck", "deploy", "networks", "expose", "env_file", "user", "working_dir"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
PORT = re.compile(r"^(?:(?P<ip>[0-9.]+):)?(?P<host>\d+):(?P<container>\d+)$")


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a compose document's structure (empty when nothing is)."""
    problems = [f"unknown top-level key {k!r}" for k in doc if k not in TOP_KEYS and not k.startswith("x-")]
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        return problems + ["no services"]
    volumes = set(doc.get("volumes") or {})
    for name, svc in services.items():
        problems += [f"{name}: unknown key {k!r}" for k in svc if k not in SERVICE_KEYS]
        if not isinstance(svc.get("image"), str) or not svc["image"]:
            problems.append(f"{name}: no image")
        command = svc.get("command")
        if command is not None and not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
            problems.append(f"{name}: command must be a list of strings (exec form)")
        for port in svc.get("ports", []):
            m = PORT.match(str(port))
            if not m:
                problems.append(f"{name}: port {port!r} is not [ip:]host:container")
            elif name != "app" and m["ip"] != "127.0.0.1":  # the app is published: it requires a token
                problems.append(f"{name}: port {port!r} is not bound to 127.0.0.1")
        env = svc.get("environment", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            problems.append(f"{name}: environment must map names to strings")
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")) and source not in volumes:
                problems.append(f"{name}: volume {source!r} is not declared at the top level")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep!r}")
            if cond.get("condition") == "service_healthy" and "healthcheck" not in services.get(dep, {}):
                problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
        check = svc.get("healthcheck")
        if check is not None:
            problems += [f"{name}: healthcheck key {k!r}" for k in check if k not in HEALTHCHECK_KEYS]
            if not (isinstance(check.get("test"), list) and check["test"][:1] in (["CMD"], ["CMD-SHELL"])):
                problems.append(f"{name}: healthcheck test must start with CMD or CMD-SHELL")
            problems += [f"{name}: healthcheck {k} {check[k]!r} is not a duration"
                         for k in ("interval", "timeout", "start_period") if k in check and not DURATION.match(check[k])]
        replicas = (svc.get("deploy") or {}).get("replicas")
        if replicas is not None and not str(replicas).isdigit():
            problems.append(f"{name}: replicas {replicas!r} is not a number")
    return problems


def test_compose_file_is_structurally_valid(compose):
    """Always: the structure check; and `docker compose config` too where the plugin exists."""
    assert compose_problems(compose) == []
    # the check can fail: a typo'd key, a published scheduler port, an undeclared volume
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["comand"] = broken["services"]["worker"].pop("command")
    broken["services"]["scheduler"]["ports"] = ["8786:8786"]
    broken["services"]["app"]["volumes"] = ["other-volume:/data"]
    assert sorted(compose_problems(broken)) == ["app: volume 'other-volume' is not declared at the top level",
                                                "scheduler: port '8786:8786' is not bound to 127.0.0.1",
                                                "worker: unknown key 'comand'"]
    if not docker_compose_available():
        return  # no container engine on this machine: the structure check above stands alone
    env = {**os.environ, "PROCESSING_API_TOKEN": "test-token"}
    done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    env.pop("PROCESSING_API_TOKEN")
    done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "PROCESSING_API_TOKEN" in done.stderr


def docker_compose_available() -> bool:
    """Whether `docker compose` (the plugin) runs here."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


# -- the compose topology as plain processes ----------------------------------------------
def _spawn(command: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    executable = Path(sys.executable).with_name(command[0])  # the venv's `dask`
    return subprocess.Popen([str(executable), *command[1:]], cwd=cwd, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def topology(raw: dict[str, Any], tmp_path: Path) -> Iterator[tuple[ServerProcess, Client]]:
    """compose.yaml's three commands on loopback: scheduler, one worker, the app attached to them."""
    env = {"PROCESSING_API_TOKEN": "test-token", "DASK_THREADS_PER_WORKER": "1", "DASK_MEMORY_LIMIT": "1GB"}
    compose = interpolate(raw, env)
    scheduler_file = tmp_path / "scheduler.json"
    # the scheduler binds port 0 and writes its address to a file: no port is picked before
    local = {"0.0.0.0": "127.0.0.1", "8786": "0", ":8787": "127.0.0.1:0"}
    procs = []
    srv = None
    try:
        command = [local.get(part, part) for part in compose["services"]["scheduler"]["command"]]
        procs.append(_spawn([*command, "--scheduler-file", str(scheduler_file)], tmp_path, tmp_path / "scheduler.log"))
        address = wait_until(lambda: _address(scheduler_file), 60, 0.1, "the scheduler's address")
        command = [address if part == "tcp://scheduler:8786" else part for part in compose["services"]["worker"]["command"]]
        procs.append(_spawn(command, tmp_path, tmp_path / "worker.log"))
        app_env = {k: v for k, v in compose["services"]["app"]["environment"].items() if k != "PROCESSING_PORT"}
        data_dir = tmp_path / "data"  # stands for the processing-data volume both mount
        app_env.update(PROCESSING_DATA_DIR=str(data_dir), DASK_SCHEDULER_ADDRESS=address)
        srv = ServerProcess(data_dir, app_env).start(wait=False)
        api = Client(srv.url, token="test-token")
        srv.wait_for(lambda: _answers(api), timeout=90)
        yield srv, api
    finally:
        if srv is not None:
            srv.cleanup()
        for proc in reversed(procs):
            _end(proc)


def _address(scheduler_file: Path) -> str | None:
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


def _answers(api: Client) -> bool:
    try:
        return api.cluster_status()["n_workers"] == 1 and "demo_expression" in {
            d["dataset_id"] for d in api.datasets_list()["datasets"]}
    except Exception:
        return False


@pytest.mark.slow
def test_the_compose_commands_work_together_as_processes(topology, capsys, monkeypatch):
    srv, api = topology
    status = api.cluster_status()
    assert status["mode"] == "external" and status["can_scale"] is False
    anonymous = Client(srv.url)
    assert anonymous.health()["status"] == "healthy", "the compose healthcheck's endpoint"
    with pytest.raises(ProcessingAPIError) as err:
        anonymous.cluster_status()
    assert (err.value.status, err.value.code) == (401, "unauthorized"), "the token compose requires is enforced"
    monkeypatch.delenv("PROCESSING_API_TOKEN", raising=False)
    assert cli_main(["--url", srv.url, "queue"]) == 1 and "unauthorized" in capsys.readouterr().err
    monkeypatch.setenv("PROCESSING_API_TOKEN", "test-token")
    assert cli_main(["--url", srv.url, "queue", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scheduler_running"] is True
    job = api.submit("aggregate", "demo_expression", {"column": "expression_level", "operation": "mean"},
                     max_cores=1, max_memory_gb=0.5)
    final = job.wait(timeout=120, progress=False)
    assert final["status"] == "completed", final  # the worker read the app's file by the app's path
    with pytest.raises(ProcessingAPIError) as err:
        api.cluster_scale(3)
    assert err.value.code == "cluster_not_scalable", "compose scales workers: `--scale worker=N`"
    assert api.cluster_stop()["message"] == "Detached from the external cluster"
