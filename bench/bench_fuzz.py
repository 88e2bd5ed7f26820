"""The long schemathesis run: the bounded test's checks, many more cases.

    .venv/bin/python bench/bench_fuzz.py [--examples 300] [--seed N] [--phases ...]

Starts its own server with a token, runs schemathesis (hooks in tests/fuzzing.py),
prints its summary and the case count; exits with schemathesis' status.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ServerProcess  # noqa: E402
from tests import fuzzing  # noqa: E402

TOKEN = "bench-fuzz-token"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="max cases per operation and phase")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="seed (printed, to replay a run)")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    srv = ServerProcess(data_dir, {"PROCESSING_API_TOKEN": TOKEN, **fuzzing.FUZZ_ENV})
    try:
        srv.start()
        started = time.perf_counter()
        result = fuzzing.run(srv.url, TOKEN, args.examples, args.seed, args.timeout, data_dir / "junit.xml",
                             args.phases)
        elapsed = time.perf_counter() - started
        alive = srv.proc is not None and srv.proc.poll() is None
        tracebacks = srv.log_tail(10**6).count("ERROR app.api")  # one per 500
    finally:
        srv.cleanup()
    print(result.stdout[-12000:], result.stderr[-2000:])
    print(f"seed {args.seed}: {fuzzing.cases_generated(result.stdout)} cases in {elapsed:.0f} s; "
          f"schemathesis exit {result.returncode}; server alive {alive}; 500s logged by the server {tracebacks}; "
          f"log in {srv.log_path}")
    return 0 if result.returncode == 0 and alive and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
