"""Fixtures and tiers.

Servers: the real server in a subprocess with a temporary data dir and a real Dask
LocalCluster; one shared per session (``server``), one token-protected (``token_server``),
one whose cluster tests may scale and stop (``scratch_server``, reset before each test),
fresh ones where a test needs its own (``make_server``). A server start is the suite's
main cost (some 5 s on 2 cores): share one where the test allows.

Tiers: a test that starts a server is marked ``slow`` here (by the fixtures it uses, or by
its module); browser tests are ``ui``. ``pytest -m "not slow and not ui"`` is the fast tier,
and a test of that tier that starts a server anyway fails, naming the mark it lacks.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Iterator

import os

import pytest
from hypothesis import settings as hypothesis_settings

from tests import server as server_module
from tests.helpers import TOKEN, check_shared_cluster
from tests.server import ServerProcess

# Property tests draw the same examples on every run, so the suite's verdict does not
# depend on luck; HYPOTHESIS_PROFILE=explore draws new ones (run it by hand to hunt).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The browser modules that take longest (40-115 s each beside the other worker's tests) start
# first among the browser modules, so that the two workers end at about the same time.
LONG_BROWSER_MODULES = ("test_escaping.py", "test_analyst.py", "test_jobs_table.py", "test_data_list_and_rows.py",
                        "test_log_noise.py", "test_wall.py")
# Session servers ended when the browser tests begin (if no browser test uses them), and the
# ones of them started so far; the paths of the browser modules.
RETIRED_AT_BROWSER: set[str] = {"server", "token_server", "_scratch"}
STARTED: dict[str, ServerProcess] = {}
BROWSER_MODULES: set[Path] = set()

# What starts a server or Dask processes, in a test's own code or in a fixture it uses
# (pytest's fixture closure reaches fixtures used through other fixtures).
STARTERS = ("ServerProcess(", "ServerPool(", "make_server(", "module_server(", "subprocess.Popen(", "Popen(", "_spawn(")
SERVER_FIXTURES = {"server", "make_server", "token_server", "scratch_server"}


@functools.lru_cache(maxsize=None)
def _starts_processes(func: Callable[..., Any]) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return any(word in source for word in STARTERS)


def _starts_a_server(item: pytest.Item) -> bool:
    if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    if isinstance(item, pytest.Function) and _starts_processes(item.function):
        return True
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(_starts_processes(d.func) for name in getattr(item, "fixturenames", ())
               for d in defs.get(name, ()) if not d.func.__module__.startswith("_pytest"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every non-browser test that starts a server or Dask processes, and run
    the modules with browser tests last, the longest of them first.

    ``./run_tests.sh`` runs two pytest-xdist workers that take whole modules in this order
    (``--dist loadfile --no-loadscope-reorder``). So once a worker is at its first browser
    test, every test after it is a browser test: the session's servers no browser test uses
    are ended there (``pytest_runtest_setup``), and the longest browser modules started first
    let the two workers end together.
    """
    browser_modules = {item.path for item in items if item.get_closest_marker("ui")}
    items.sort(key=lambda item: (item.path in browser_modules, item.path.name not in LONG_BROWSER_MODULES))
    RETIRED_AT_BROWSER.difference_update(name for item in items if item.path in browser_modules
                                         for name in getattr(item, "fixturenames", ()))
    BROWSER_MODULES.update(browser_modules)
    for item in items:
        if item.get_closest_marker("ui") or item.get_closest_marker("slow"):
            continue
        if _starts_a_server(item):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: may it start a server? (ServerProcess.start checks.)

    At the first browser test, the session's servers that no browser test uses are ended:
    every test after it is a browser test, and an idle server costs ~5 % of a core."""
    marked = item.get_closest_marker("slow") or item.get_closest_marker("ui")
    server_module.FAST_TEST = None if marked else item.nodeid
    if item.path in BROWSER_MODULES:
        for name in list(RETIRED_AT_BROWSER):
            srv = STARTED.pop(name, None)
            if srv is not None:
                srv.cleanup()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: cluster started, demo dataset registered. Tests must not change
    its cluster (scale, stop): they take ``make_server`` for that."""
    srv = ServerProcess(tmp_path_factory.mktemp("shared-server")).start()
    STARTED["server"] = srv
    srv.wait_workers(2)
    yield srv
    srv.cleanup()


@pytest.fixture(autouse=True)
def shared_cluster_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the shared server: its cluster is still 2 fixed workers, running."""
    yield
    check_shared_cluster(request, "server", "shared server", "use make_server")


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that requires ``Authorization: Bearer TOKEN`` (tests.helpers.TOKEN): one
    worker, no demo dataset."""
    srv = ServerProcess(tmp_path_factory.mktemp("token-server"),
                        {"PROCESSING_API_TOKEN": TOKEN, "DASK_N_WORKERS": "1", "DEMO_DATASET": "0",
                         "AUTH_MAX_FAILURES": "1000"}).start()  # wrong tokens on purpose: no lockout
    STARTED["token_server"] = srv
    yield srv
    srv.cleanup()


@pytest.fixture(scope="session")
def _scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("scratch-server"), {"DASK_N_WORKERS": "1", "DEMO_ROWS": "2000"})
    STARTED["_scratch"] = srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture
def scratch_server(_scratch: ServerProcess) -> ServerProcess:
    """A server whose cluster a test may scale, adapt, stop and start, shared by such tests
    (one start for them all instead of one each): handed over running with its configured
    1 fixed worker, restored to that before each test. The small demo dataset is registered."""
    srv = _scratch
    if srv.proc is None or srv.proc.poll() is not None:
        pytest.fail("an earlier test ended the scratch server (tests that end a server use make_server)")
    if srv.get("/api/processing/cluster/status").json()["status"] != "running":
        assert srv.post("/api/processing/cluster/start").status_code == 200
    status = srv.get("/api/processing/cluster/status").json()
    if status["n_workers"] != 1 or status.get("adaptive") is not None:
        assert srv.post("/api/processing/cluster/scale", json={"n_workers": 1}).status_code == 200
    status = srv.wait_workers(1)
    assert status["status"] == "running" and status.get("adaptive") is None, status
    return srv


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
