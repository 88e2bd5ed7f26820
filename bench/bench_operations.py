"""Each operation on a 10M-row Parquet table: through the service (HTTP submit → done),
the same computation written directly in Dask on the same cluster, and DuckDB where it
can express it — alternating in one run, medians and ratios.

DuckDB alone gets the same two threads as the cluster's two single-thread workers.

    .venv/bin/python -m bench.bench_operations [--rows 10000000] [--runs 3] [--only validate histogram] [--no-dask]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import dask.array as da
import dask.dataframe as dd
from distributed import Client

from app.demo import generate_expression, write_dataset
from bench.common import ServerProcess, median, table


COLUMNS = ("gene_id", "sample_id", "condition", "expression_level", "p_value")
NUMERIC = ("expression_level", "p_value")


def cases(files: list[str], out: str) -> list[tuple[str, dict, Callable[[], Any], str | None]]:
    """(operation, parameters, direct Dask computation, DuckDB SQL)."""
    t = f"read_parquet({files!r})"

    def frame(*cols: str) -> dd.DataFrame:
        return dd.read_parquet(files, columns=list(cols) if cols else None)

    def de() -> Any:
        f = frame("gene_id", "condition", "expression_level")
        f = f.assign(sq=f.expression_level ** 2)
        return f.groupby(["gene_id", "condition"]).agg({"expression_level": ["sum", "count"], "sq": "sum"})

    def zscore_by_gene() -> Any:
        f = frame()
        stats = f.groupby("gene_id").expression_level.agg(["mean", "std"])
        joined = f.merge(stats, left_on="gene_id", right_index=True, how="left")
        z = joined.assign(z=(joined.expression_level - joined["mean"]) / joined["std"]).drop(columns=["mean", "std"])
        return z.to_parquet(out + "/transform", compute=False, overwrite=True)

    def profile() -> Any:
        f = frame()
        return [f.isna().sum(), f.select_dtypes("number").min(), f.select_dtypes("number").max(),
                *(f[c].nunique_approx() for c in f.columns)]

    def describe() -> Any:
        f = frame(*NUMERIC)
        return [f.count(), f.mean(), f.std(), f.min(), f.max(), f.quantile([0.25, 0.5, 0.75])]

    described = [f"count({c}), avg({c}), stddev_samp({c}), min({c}), max({c}), quantile_cont({c}, [0.25, 0.5, 0.75])"
                 for c in NUMERIC]
    return [
        ("transform", {"transforms": [{"column": "expression_level", "fn": "zscore", "group_by": "gene_id"}]},
         zscore_by_gene,
         f"COPY (SELECT *, (expression_level - avg(expression_level) OVER w) / stddev_samp(expression_level) OVER w "
         f"AS z FROM {t} WINDOW w AS (PARTITION BY gene_id)) TO '{out}/duck_transform.parquet'"),
        # the same profile as the service's: every column's nulls and distinct count, the numeric
        # columns' min and max
        ("validate", {}, profile,
         f"SELECT count(*), {', '.join(f'count({c}), approx_count_distinct({c})' for c in COLUMNS)}, "
         f"{', '.join(f'min({c}), max({c})' for c in NUMERIC)} FROM {t}"),
        ("aggregate", {"column": "expression_level", "operation": "mean"},
         lambda: frame("expression_level").expression_level.mean(), f"SELECT avg(expression_level) FROM {t}"),
        ("aggregate", {"column": "expression_level", "operation": "mean", "group_by": "gene_id"},
         lambda: frame("gene_id", "expression_level").groupby("gene_id").expression_level.mean(),
         f"SELECT gene_id, avg(expression_level) FROM {t} GROUP BY 1"),
        ("value_counts", {"column": "sample_id", "top": 20},
         lambda: frame("sample_id").sample_id.value_counts().nlargest(20),
         f"SELECT sample_id, count(*) c FROM {t} GROUP BY 1 ORDER BY c DESC LIMIT 20"),
        ("histogram", {"column": "expression_level", "bins": 50, "range": [0, 500]},
         lambda: da.histogram(frame("expression_level").expression_level.to_dask_array(), bins=50, range=(0, 500)),
         f"SELECT floor((expression_level - 0) / 10)::INT AS bin, count(*) FROM {t} "
         f"WHERE expression_level BETWEEN 0 AND 500 GROUP BY 1"),
        ("describe", {}, describe,
         f"SELECT {', '.join(described)} FROM {t}"),
        ("correlation", {"columns": ["expression_level", "p_value"], "method": "pearson"},
         lambda: frame("expression_level", "p_value").corr(), f"SELECT corr(expression_level, p_value) FROM {t}"),
        ("differential_expression", {"feature_column": "gene_id", "group_column": "condition", "a": "control",
                                     "b": "treated", "value_column": "expression_level"}, de,
         f"SELECT gene_id, condition, sum(expression_level), sum(expression_level^2), count(*) FROM {t} GROUP BY 1, 2"),
        ("sort_top", {"column": "expression_level", "n": 100},
         lambda: frame().nlargest(100, "expression_level"), f"SELECT * FROM {t} ORDER BY expression_level DESC LIMIT 100"),
        ("filter", {"conditions": [{"column": "expression_level", "op": ">", "value": 100}]},
         lambda: frame()[frame().expression_level > 100].to_parquet(out + "/filter", compute=False, overwrite=True),
         f"COPY (SELECT * FROM {t} WHERE expression_level > 100) TO '{out}/duck_filter.parquet'"),
    ]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def via_service(srv: ServerProcess, op: str, params: dict) -> None:
    r = srv.post("/api/processing/jobs/submit", {"operation": op, "dataset_id": "big", "parameters": params,
                                                  "max_cores": 2, "max_memory_gb": 1, "cache": False})
    r.raise_for_status()
    s = srv.get(f"/api/processing/jobs/{r.json()['job_id']}/wait?timeout=300", timeout=320).json()
    assert s["status"] == "completed", s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="run these operations only")
    parser.add_argument("--no-dask", action="store_true",
                        help="skip the direct Dask graphs (the slowest column; service and DuckDB only)")
    args = parser.parse_args()
    try:
        import duckdb
    except ImportError:
        duckdb = None
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="bench-ops-")), {"DEMO_DATASET": "0", "DASK_MEMORY_LIMIT": "2GB"})
    srv.start()
    rows = []
    try:
        srv.wait_workers(2)
        src = Path(srv.data_dir) / "inputs" / "big"
        write_dataset(generate_expression(args.rows), src, "parquet", n_files=16)
        srv.post("/api/processing/datasets", {"source": str(src), "dataset_id": "big"}).raise_for_status()
        files = sorted(str(p) for p in src.glob("*.parquet"))
        client = Client(srv.get("/api/processing/cluster/status").json()["scheduler_address"], set_as_default=False)
        con = duckdb.connect(config={"threads": 2}) if duckdb else None
        out = Path(srv.data_dir) / "bench-out"
        out.mkdir(exist_ok=True)  # DuckDB's COPY does not make its folder (the Dask graphs do)
        for op, params, direct, sql in cases(files, str(out)):
            if args.only and op not in args.only:
                continue
            service_t, dask_t, duck_t = [], [], []
            for _ in range(args.runs):
                service_t.append(timed(lambda: via_service(srv, op, params)))
                if not args.no_dask:
                    dask_t.append(timed(lambda: client.gather(client.compute(direct()))))
                if con is not None and sql:
                    duck_t.append(timed(lambda: con.execute(sql).fetchall()))
            s, d = median(service_t), (median(dask_t) if dask_t else None)
            k = median(duck_t) if duck_t else None
            label = op + (" (group_by)" if "group_by" in params else "")
            rows.append((label, f"{s:.2f}", f"{d:.2f}" if d else "-", f"{s / d:.2f}" if d else "-", f"{k:.2f}" if k else "-",
                         f"{s / k:.1f}" if k else "-"))
        client.close()
    finally:
        srv.cleanup()
    print(f"{args.rows:,} rows, Parquet in 16 files, medians of {args.runs} runs, seconds")
    print(table(rows, ("operation", "service", "dask", "service/dask", "duckdb", "service/duckdb")))


if __name__ == "__main__":
    main()
