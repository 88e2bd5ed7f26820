"""Fixtures and tiers.

Servers: the real server in a subprocess with a temporary data dir and a real Dask
LocalCluster; one shared per session (``server``), one token-protected (``token_server``),
fresh ones where a test needs its own (``make_server``).

Tiers: a test that starts a server is marked ``slow`` here (by the fixtures it uses, or by
its module); browser tests are ``ui``. ``pytest -m "not slow and not ui"`` is the fast tier,
and a test of that tier that starts a server anyway fails, naming the mark it lacks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests import server as server_module
from tests.helpers import TOKEN
from tests.server import ServerProcess

# Fixtures that start a server (pytest's fixture closure finds them through other fixtures).
SERVER_FIXTURES = {"server", "make_server", "token_server"}
# Modules whose tests start servers, Dask processes or clusters through their own fixtures.
SLOW_MODULES = {
    "test_api_cluster", "test_api_datasets", "test_api_jobs", "test_children", "test_cli", "test_client",
    "test_cluster_factory", "test_containers", "test_demo", "test_engine_supervision", "test_errors",
    "test_faults", "test_first_run", "test_fuzz", "test_http_hardening", "test_job_failures", "test_lifecycle",
    "test_multihost", "test_readme_examples", "test_resume", "test_security", "test_upgrade",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every non-browser test that starts a server or a cluster."""
    for item in items:
        if item.get_closest_marker("ui") or item.get_closest_marker("slow"):
            continue
        module = Path(str(item.fspath)).stem
        if SERVER_FIXTURES & set(item.fixturenames) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: may it start a server? (ServerProcess.start checks.)"""
    marked = item.get_closest_marker("slow") or item.get_closest_marker("ui")
    server_module.FAST_TEST = None if marked else item.nodeid


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: cluster started, demo dataset registered. Tests must not change
    its cluster (scale, stop): they take ``make_server`` for that."""
    srv = ServerProcess(tmp_path_factory.mktemp("shared-server")).start()
    srv.wait_workers(2)
    yield srv
    srv.cleanup()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that requires ``Authorization: Bearer TOKEN`` (tests.helpers.TOKEN): one
    worker, no demo dataset."""
    srv = ServerProcess(tmp_path_factory.mktemp("token-server"),
                        {"PROCESSING_API_TOKEN": TOKEN, "DASK_N_WORKERS": "1", "DEMO_DATASET": "0",
                         "AUTH_MAX_FAILURES": "1000"}).start()  # wrong tokens on purpose: no lockout
    yield srv
    srv.cleanup()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory for servers owned by one test, cleaned up after it."""
    made: list[ServerProcess] = []

    def make(env: dict[str, str] | None = None, start: bool = True, data_dir: Path | None = None) -> ServerProcess:
        srv = ServerProcess(data_dir or tmp_path / f"srv{len(made)}", env)
        made.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in made:
        srv.cleanup()
