"""Schemathesis against a live server: the command, and the hooks it loads.

Used by ``tests/test_fuzz.py`` (a bounded run) and ``bench/bench_fuzz.py`` (a long
one). The hooks module is this file (``SCHEMATHESIS_HOOKS=tests.fuzzing``): it
keeps generated dataset sources local, so the fuzzed server never reaches out to
a remote URL it was handed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Everything the brief asks of each response, plus negative data, auth and methods;
# not positive_data_acceptance: the schema cannot say every semantic rule (e.g.
# "give n_workers or adaptive"), so a schema-valid body may rightly get a 400.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance,negative_data_rejection,ignored_auth,unsupported_method,"
          "use_after_free,ensure_resource_availability")
# schemathesis sends wrong tokens on purpose (its auth checks): the lockout would answer 429
# to everything for AUTH_LOCKOUT_S after ten of them (tests/test_http_hardening.py tests it)
FUZZ_ENV = {"MAX_WORKERS": "2", "MAX_REQUEST_KB": "64", "PARTITION_WAIT_S": "1", "AUTH_MAX_FAILURES": "1000000"}
WAIT_CAP_S = 2
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def command(url: str, token: str, examples: int, seed: int, report: Path | None = None,
            phases: str = "examples,coverage,fuzzing,stateful") -> list[str]:
    """The ``schemathesis run`` command line for the server at ``url``."""
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/api/processing/openapi.json",
           "-H", f"Authorization: Bearer {token}", "--checks", CHECKS, "--max-examples", str(examples),
           "--seed", str(seed), "--phases", phases, "--workers", "1", "--request-timeout", "60",
           "--generation-database", "none", "--no-color", "--suppress-health-check", "all"]
    if report is not None:
        cmd += ["--report", "junit", "--report-junit-path", str(report)]
    return cmd


def run(url: str, token: str, examples: int, seed: int, timeout: float, report: Path | None = None,
        phases: str = "examples,coverage,fuzzing,stateful") -> subprocess.CompletedProcess[str]:
    """Run schemathesis with these hooks; its output is in ``stdout``."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzzing", "PYTHONPATH": str(ROOT)}
    return subprocess.run(command(url, token, examples, seed, report, phases), cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def cases_generated(output: str) -> int:
    """The case count from schemathesis' summary ("N generated")."""
    match = re.search(r"(\d+) generated", output)
    return int(match.group(1)) if match else 0


# -- hooks -------------------------------------------------------------------------

try:
    import schemathesis
except ImportError:  # only the test extra installs it
    schemathesis = None

if schemathesis is not None:

    def _local(body: Any) -> Any:
        if isinstance(body, dict) and isinstance(body.get("source"), str) and _URL.match(body["source"]):
            return {**body, "source": "fuzz/" + re.sub(r"[^A-Za-z0-9_.-]", "_", body["source"])}
        return body

    @schemathesis.hook
    def map_body(context: Any, body: Any) -> Any:
        """A dataset ``source`` that looks like a URL becomes a local relative path."""
        return _local(body)

    def _short_wait(query: Any) -> Any:
        # /wait may hold a request up to 300 s by design; keep a fuzz run's requests short
        if isinstance(query, dict) and isinstance(query.get("timeout"), (int, float)) and query["timeout"] > WAIT_CAP_S:
            return {**query, "timeout": WAIT_CAP_S}
        return query

    @schemathesis.hook
    def map_query(context: Any, query: Any) -> Any:
        return _short_wait(query)

    @schemathesis.hook
    def map_case(context: Any, case: Any) -> Any:
        """The same for cases built outside Hypothesis (the coverage phase)."""
        case.body = _local(case.body)
        case.query = _short_wait(case.query)
        return case


# -- known hostile requests ------------------------------------------------------------
# Requests that once answered 500 (or worse); tests/test_http_hardening.py replays each
# against a live server and expects a 4xx in the error shape. (method, path, headers, body)
KNOWN_BAD: list[tuple[str, str, dict[str, str], bytes]] = [
    # issue 14: a submit body nested 100,000 levels deep was a RecursionError (500)
    ("POST", "/api/processing/jobs/submit", {"Content-Type": "application/json"},
     b"[" * 100_000 + b"]" * 100_000),
    ("POST", "/api/processing/jobs/submit", {"Content-Type": "application/json"},
     b'{"operation": "filter", "parameters": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001),
]

# issue 14 (datasets and reservations): (method, path, headers, body, expected status, words of the message).
# A dataset named "inputs/ok.csv" is looked for in the served data dir; tests/test_fuzz.py writes it first.
_JSON = {"Content-Type": "application/json"}
_RAW = {"Content-Type": "application/octet-stream"}
KNOWN_BAD_DATA: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    # rot13 is a codec but not a text encoding: pandas raised LookupError (500)
    ("POST", "/api/processing/datasets", _JSON, b'{"source": "inputs/ok.csv", "options": {"encoding": "rot13"}}',
     400, "not a text encoding"),
    ("POST", "/api/processing/datasets", _JSON, b'{"source": "inputs/ok.csv", "options": {"encoding": ["utf-8"]}}',
     400, "encoding"),
    # ENAMETOOLONG was a 500 whose traceback logged the whole 100,000-character path
    ("POST", "/api/processing/datasets", _JSON, b'{"source": "' + b"a" * 100_000 + b'"}', 400, "at most 4096"),
    ("POST", "/api/processing/datasets", _JSON, b'{"source": "inputs/' + b"n" * 300 + b'.csv"}', 400,
     "longer than the file system allows"),
    # JSON uploads nested 50,000 deep: pyarrow crashed the server (SIGSEGV), Python's json raised RecursionError
    ("POST", "/api/processing/datasets/upload?filename=deep.jsonl", _RAW,
     b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n", 422, "levels deep"),
    ("POST", "/api/processing/datasets/upload?filename=deep.json", _RAW, b"[" * 50_000 + b"]" * 50_000, 422,
     "too deeply"),
    # reservations without a floor (1e-300) defeated admission control
    ("POST", "/api/processing/jobs/submit", _JSON,
     b'{"operation": "describe", "dataset_id": "demo_expression", "max_cores": 1e-300}', 400, "at least 0.1"),
    ("POST", "/api/processing/jobs/submit", _JSON,
     b'{"operation": "describe", "dataset_id": "demo_expression", "max_memory_gb": 1e-300}', 400, "at least 0.05"),
    # the service's own managed folder as a source
    ("POST", "/api/processing/datasets", _JSON, b'{"source": "managed"}', 403, "managed data"),
    # issue 18: job search (q=) is bounded; FTS syntax is searched as text (tests/test_job_search.py: 200)
    ("GET", "/api/processing/jobs/list?q=" + "a" * 10_000, {}, b"", 400, "at most 200"),
    ("GET", "/api/processing/jobs/list?q=" + "%22*%3A(NEAR-%5E%20" * 600, {}, b"", 400, "at most 200"),
    # a webhook URL on a loopback host, refused by the remote-URL policy
    ("POST", "/api/processing/jobs/submit", _JSON, b'{"operation": "describe", "dataset_id": "demo_expression", '
     b'"notify_url": "https://127.0.0.1/hook"}', 400, "not a public address"),
]
KNOWN_BAD += [case[:4] for case in KNOWN_BAD_DATA]  # type: ignore[misc]
