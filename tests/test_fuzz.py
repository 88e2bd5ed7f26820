"""Schemathesis against the live server's OpenAPI document, a bounded run.

Every operation gets at most ``EXAMPLES`` generated cases per phase (deterministic
seed), sent with the API token: no 5xx, status codes and content types as
documented, bodies matching their schemas (errors the Error schema), auth really
enforced, invalid input refused. ``bench/bench_fuzz.py`` runs the same for longer.
"""
from __future__ import annotations

from typing import Iterator

import pytest
import requests

from tests import fuzzing
from tests.server import ServerProcess

TOKEN = "fuzz-token-0b7e"
EXAMPLES = 5  # per operation and phase; bench/bench_fuzz.py runs 50
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


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server without a token or cluster, holding the corpus' ``inputs/ok.csv``."""
    srv = ServerProcess(tmp_path_factory.mktemp("corpus"), {"CLUSTER_AUTOSTART": "0", "DEMO_ROWS": "2000"})
    (srv.data_dir / "inputs").mkdir(parents=True)
    (srv.data_dir / "inputs" / "ok.csv").write_text("a,b\n1,2\n")
    yield srv.start()
    srv.cleanup()


@pytest.mark.parametrize("case", fuzzing.KNOWN_BAD_DATA, ids=lambda c: f"{c[4]}-{c[5].replace(' ', '_')}")
def test_known_bad_data_requests_are_refused_with_a_clear_4xx(plain, case):
    method, path, headers, body, status, words = case
    r = requests.request(method, plain.url + path, headers=headers, data=body, timeout=60)
    assert r.status_code == status, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert words in error["message"] and len(error["message"]) < 600, error
    assert plain.proc is not None and plain.proc.poll() is None, "the server died"
    assert plain.get("/api/processing/datasets?limit=1").json()["total"] <= 1  # only the demo, nothing written
    assert not [line for line in plain.log_tail(10**6).splitlines() if "ERROR app.api" in line]


def test_reservation_floors_are_published_in_the_openapi_schema(plain):
    from app.models import MIN_CORES, MIN_MEMORY_GB

    doc = plain.get("/api/processing/openapi.json").json()
    schema = doc["paths"]["/api/processing/jobs/submit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    props = schema["properties"]

    def minimum(spec: dict) -> float:
        return next(s["minimum"] for s in spec.get("anyOf", [spec]) if "minimum" in s)

    assert minimum(props["max_cores"]) == MIN_CORES == 0.1
    assert minimum(props["max_memory_gb"]) == MIN_MEMORY_GB == 0.05
    assert "at least 0.1" in props["max_cores"]["description"]
