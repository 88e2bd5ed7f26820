"""A burst of concurrent job submissions: every one answered 201 or 429, none lost,
and the health endpoint answering throughout.

    .venv/bin/python bench/bench_burst.py [--n 1000] [--max-queued 500] [--token T]

Starts its own server (a temporary data dir, PROCESSING_API_TOKEN set), fires
``--n`` submissions at once from one ``aiohttp`` session while a second process
polls ``/api/processing/health`` every 20 ms, then counts the rows in the
server's SQLite ``jobs`` table. Prints the figures; exits 1 when a target is missed
(all answered 201/429, rows == 201s, health max latency < ``--health-ms``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ServerProcess  # noqa: E402
from tests.load import burst, count_rows  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="submissions in the burst")
    parser.add_argument("--max-queued", type=int, default=500, help="MAX_QUEUED_JOBS of the server (429 beyond)")
    parser.add_argument("--token", default="bench-burst-token", help="PROCESSING_API_TOKEN of the server")
    parser.add_argument("--health-ms", type=float, default=100.0, help="target for the worst health latency")
    args = parser.parse_args()
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-burst-")),
                        {"PROCESSING_API_TOKEN": args.token, "MAX_QUEUED_JOBS": str(args.max_queued),
                         "LOG_LEVEL": "WARNING"})
    try:
        srv.start()
        srv.wait_for(lambda: srv.get("/api/processing/cluster/status",
                                     headers={"Authorization": f"Bearer {args.token}"}).json()["n_workers"] == 2)
        result = asyncio.run(burst(srv.url, args.token, args.n, args.n))
        found, total = count_rows(srv.data_dir / "processing.db", result["job_ids"])
        result.update(rows_for_201s=found, rows_total=total, server_alive=srv.proc.poll() is None)  # type: ignore[union-attr]
    finally:
        srv.cleanup()
    accepted = result["statuses"].get(201, 0)
    ok = (result["errors"] == 0 and set(result["statuses"]) <= {201, 429} and found == total == accepted
          and result["health_max_ms"] < args.health_ms)
    print(json.dumps({k: v for k, v in result.items() if k != "job_ids"}, indent=2))
    print("PASS" if ok else "FAIL", f"— {args.n} submissions in {result['elapsed_s']} s: {accepted} × 201, "
          f"{result['statuses'].get(429, 0)} × 429; {found}/{total} rows; health max {result['health_max_ms']} ms "
          f"(p99 {result['health_p99_ms']} ms) over {result['health_checks']} checks")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
