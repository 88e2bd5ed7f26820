"""Fixtures: the real server on a free port with a temporary data dir and a real
Dask LocalCluster; one shared per session, fresh ones where a test needs its own."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.server import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: cluster started, demo dataset registered."""
    srv = ServerProcess(tmp_path_factory.mktemp("shared-server")).start()
    srv.wait_workers(2)
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
