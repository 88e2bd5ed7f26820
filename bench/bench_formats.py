"""Operations on one big CSV file and one big JSON-lines file: through the service
(HTTP submit → done) against DuckDB alone with the same two threads reading the same
file, alternating in one run; medians and ratios. #16 asks for ≤ 2× DuckDB on an
800 MB CSV and on 2M JSON lines.

    .venv/bin/python -m bench.bench_formats [--csv-mb 800] [--json-rows 2000000] [--runs 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from app.demo import generate_expression
from bench.common import PeakRss, ServerProcess, median, table

CSV_BYTES_PER_ROW = 61  # generate_expression's rows as CSV text


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def via_service(srv: ServerProcess, op: str, params: dict, dataset: str) -> None:
    r = srv.post("/api/processing/jobs/submit", {"operation": op, "dataset_id": dataset, "parameters": params,
                                                  "max_cores": 2, "max_memory_gb": 1, "cache": False})
    r.raise_for_status()
    s = srv.get(f"/api/processing/jobs/{r.json()['job_id']}/wait?timeout=300", timeout=320).json()
    assert s.get("status") == "completed", (r.json(), s)


def cases(src: str) -> list[tuple[str, dict, str]]:
    return [
        ("aggregate", {"column": "expression_level", "operation": "mean"}, f"SELECT avg(expression_level) FROM {src}"),
        ("aggregate", {"column": "expression_level", "operation": "mean", "group_by": "gene_id"},
         f"SELECT gene_id, avg(expression_level) FROM {src} GROUP BY 1"),
        ("value_counts", {"column": "sample_id", "top": 20},
         f"SELECT sample_id, count(*) c FROM {src} GROUP BY 1 ORDER BY c DESC LIMIT 20"),
        ("correlation", {"columns": ["expression_level", "p_value"], "method": "pearson"},
         f"SELECT corr(expression_level, p_value) FROM {src}"),
        ("sort_top", {"column": "expression_level", "n": 100},
         f"SELECT * FROM {src} ORDER BY expression_level DESC LIMIT 100"),
    ]


def write(out: Path, rows: int, fmt: str) -> Path:
    """``rows`` rows in one file, written in chunks (bounded memory)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("big.csv" if fmt == "csv" else "big.jsonl")
    chunk = 1_000_000
    with open(path, "w") as f:
        for i, start in enumerate(range(0, rows, chunk)):
            df = generate_expression(min(chunk, rows - start), seed=i)
            if fmt == "csv":
                df.to_csv(f, index=False, header=i == 0)
            else:
                f.write(df.to_json(orient="records", lines=True))
                f.write("" if df.empty else "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv-mb", type=int, default=800)
    parser.add_argument("--json-rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("csv", "json"), help="one format only")
    args = parser.parse_args()
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-formats-")), {"DEMO_DATASET": "0", "DASK_MEMORY_LIMIT": "2GB"})
    srv.start()
    rows = []
    try:
        srv.wait_workers(2)
        con = duckdb.connect(config={"threads": 2})
        inputs = Path(srv.data_dir) / "inputs"
        csv = write(inputs / "csv", args.csv_mb * 1_000_000 // CSV_BYTES_PER_ROW if args.only != "json" else 10, "csv")
        jsonl = write(inputs / "json", args.json_rows if args.only != "csv" else 10, "json")
        rss = PeakRss(srv.proc.pid).__enter__()
        for name, path, src in (("csv", csv, f"read_csv('{csv}')"),
                                ("json", jsonl, f"read_json('{jsonl}', format='newline_delimited')")):
            if args.only and name != args.only:
                continue
            srv.post("/api/processing/datasets", {"source": str(path.parent), "dataset_id": name}).raise_for_status()
            size = path.stat().st_size / 1e6
            for op, params, sql in cases(src):
                service_t, duck_t = [], []
                for _ in range(args.runs):
                    service_t.append(timed(lambda: via_service(srv, op, params, name)))
                    duck_t.append(timed(lambda: con.execute(sql).fetchall()))
                s, k = median(service_t), median(duck_t)
                label = f"{name} ({size:.0f} MB) {op}" + (" (group_by)" if "group_by" in params else "")
                rows.append((label, f"{s:.2f}", f"{k:.2f}", f"{s / k:.2f}"))
                print(rows[-1], flush=True)
        rss.__exit__()
        print("peak RSS during the jobs:", rss.report())
    finally:
        srv.cleanup()
    print(f"one file per format, medians of {args.runs} runs, seconds; DuckDB with 2 threads")
    print(table(rows, ("operation", "service", "duckdb", "service/duckdb")))


if __name__ == "__main__":
    main()
