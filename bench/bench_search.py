"""Searching the job history (``q=``) at 100k jobs: the store's list read, as the API runs it.

    .venv/bin/python bench/bench_search.py [--jobs 100000] [--repeat 30]

Seeds finished jobs with realistic parameters (JSON) and, for a fifth, an error text into a
temporary store, then times ``Store.list_jobs`` (a page of 50 summary columns plus its
total) for searches that match one job, a few percent, half and every job, alone and
with filters, dates and a deep page. Prints the median and p99 of ``--repeat`` calls;
asserts nothing. Target: median <= 50 ms at 100k jobs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.store import Store  # noqa: E402
from app.store_reads import SUMMARY_COLUMNS  # noqa: E402

OPERATIONS = ("aggregate", "groupby", "filter", "describe", "sql", "histogram")
COLUMNS = ("expression_level", "tissue", "gene_id", "sample_id", "age", "region")
ERRORS = ("could not convert 'n/a' to float", "column 'tissu' not found", "worker lost during compute",
          "out of memory: raise max_memory_gb")


def seed(store: Store, n: int) -> None:
    jobs = []
    for i in range(n):
        column = COLUMNS[i % len(COLUMNS)]
        op = OPERATIONS[i % len(OPERATIONS)]
        params = {"column": column, "operation": "mean"} if i % 2 else {"conditions": [
            {"column": column, "op": "gt", "value": i % 97}]}
        failed = i % 5 == 0
        jobs.append({"job_id": f"job_{i:08x}{'ab' if i % 7 else 'cd'}", "operation": op,
                     "dataset_id": f"dataset_{i % 40}", "parameters": params, "priority": "NORMAL",
                     "status": "failed" if failed else "completed", "progress": 100.0,
                     "created_at": f"2026-{1 + i * 12 // n:02d}-01T00:00:00.000Z", "attempt_count": 1,
                     "error": {"type": "ValueError", "message": ERRORS[i % len(ERRORS)]} if failed else None})
    for start in range(0, n, 10_000):
        store.insert_jobs(jobs[start:start + 10_000])


def timed(store: Store, repeat: int, **kwargs: object) -> tuple[float, float, int]:
    times, total = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        total, _ = store.list_jobs(columns=SUMMARY_COLUMNS, **kwargs)  # type: ignore[arg-type]
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "processing.db")
        t0 = time.perf_counter()
        seed(store, args.jobs)
        print(f"seeded {args.jobs} jobs in {time.perf_counter() - t0:.1f} s (with the search index)")
        cases = {
            "one job by id": {"q": f"job_{args.jobs // 2:08x}"},
            "error words (5%)": {"q": "convert float"},
            "operation (17%)": {"q": "histogram"},
            "prefix, half the jobs": {"q": "mea"},
            "every job (job)": {"q": "job"},
            "q + status + dataset": {"q": "tissue", "status": ["failed"], "dataset_id": "dataset_5"},
            "q + created range": {"q": "groupby", "created_after": "2026-03-01T00:00:00.000Z",
                                  "created_before": "2026-06-01T00:00:00.000Z"},
            "q, deep page (offset 10000)": {"q": "mean", "offset": 10_000},
            "q, oldest first": {"q": "region", "newest_first": False},
            "created range only": {"created_after": "2026-03-01T00:00:00.000Z"},
            "FTS syntax as text": {"q": '"NEAR(* : -^'},
        }
        print(f"{'query':34} {'median ms':>10} {'p99 ms':>8} {'total':>8}")
        for name, kwargs in cases.items():
            med, p99, total = timed(store, args.repeat, **kwargs)
            print(f"{name:34} {med:10.1f} {p99:8.1f} {total:8d}")
        print("\n" + json.dumps({"jobs": args.jobs, "repeat": args.repeat}))
        store.close()


if __name__ == "__main__":
    main()
