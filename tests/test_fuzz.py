"""Schemathesis against the live server's OpenAPI document, a bounded run.

Every operation gets at most ``EXAMPLES`` generated cases per phase (deterministic
seed), sent with the API token: no 5xx, status codes and content types as
documented, bodies matching their schemas (errors the Error schema), auth really
enforced, invalid input refused. ``bench/bench_fuzz.py`` runs the same for longer.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests import fuzzing
from tests.server import ServerProcess

TOKEN = "fuzz-token-0b7e"
EXAMPLES = 10
SEED = 20261128


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("fuzzed"), {"PROCESSING_API_TOKEN": TOKEN, **fuzzing.FUZZ_ENV}).start()
    yield srv
    srv.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_schemathesis_finds_no_failures(fuzzed, tmp_path):
    result = fuzzing.run(fuzzed.url, TOKEN, EXAMPLES, SEED, timeout=400, report=tmp_path / "junit.xml")
    summary = result.stdout[-6000:]
    print(summary)
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert fuzzing.cases_generated(result.stdout) >= 300, summary
    assert fuzzed.proc is not None and fuzzed.proc.poll() is None, "the server died under fuzzing"
    # a 500 logs "ERROR app.api: request <id> failed" (Dask's own tracebacks when the fuzzer stops the cluster are fine)
    failed = [line for line in fuzzed.log_tail(10**6).splitlines() if "ERROR app.api" in line]
    assert not failed, failed
