"""Deterministic synthetic gene-expression data for demos, tests and benchmarks."""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InvalidRequest, ProcessingError

N_GENES = 2_000
N_DIFFERENTIAL = 50
DIFFERENTIAL_GENES = tuple(f"GENE{i:05d}" for i in range(1, N_DIFFERENTIAL + 1))
FORMATS = {"csv": ".csv", "parquet": ".parquet", "json": ".jsonl"}


def generate_expression(rows: int = 500_000, seed: int = 42) -> pd.DataFrame:
    """A long table of (gene, sample) measurements; the same seed gives the same frame.

    Rows run sample by sample over ``min(2000, rows // 20)`` genes (at least one), so
    there are about ``rows / genes`` samples, alternating control / treated. Expression
    is a per-gene log-normal baseline times log-normal noise; in treated samples the
    genes in ``DIFFERENTIAL_GENES`` are multiplied by a per-gene fold change of 2–4,
    and their p-values are small. Other p-values are uniform on (0, 1].
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidRequest("rows must be a positive integer")
    rng = np.random.default_rng(seed)
    n_genes = max(1, min(N_GENES, rows // 20))
    n_samples = -(-rows // n_genes)
    gene = np.arange(rows) % n_genes
    sample = np.arange(rows) // n_genes
    treated = sample % 2 == 1
    differential = gene < N_DIFFERENTIAL

    baseline = rng.lognormal(mean=3.0, sigma=1.0, size=n_genes)
    fold = np.ones(n_genes)
    fold[:N_DIFFERENTIAL] = rng.uniform(2.0, 4.0, size=min(N_DIFFERENTIAL, n_genes))
    noise = rng.lognormal(mean=0.0, sigma=0.25, size=rows)
    level = baseline[gene] * np.where(treated, fold[gene], 1.0) * noise
    p_value = 1.0 - rng.random(rows)  # (0, 1]
    p_value = np.where(differential, p_value * 1e-3, p_value)

    gene_names = np.array([f"GENE{i:05d}" for i in range(1, n_genes + 1)], dtype=object)
    width = max(3, len(str(n_samples)))
    sample_names = np.array([f"S{i:0{width}d}" for i in range(1, n_samples + 1)], dtype=object)
    return pd.DataFrame({
        "gene_id": gene_names[gene],
        "sample_id": sample_names[sample],
        "condition": np.where(treated, "treated", "control").astype(object),
        "expression_level": level,
        "p_value": p_value,
    })


def write_dataset(df: pd.DataFrame, out: Path, fmt: str, n_files: int = 1) -> list[Path]:
    """Write ``df`` into ``out`` as ``part-00000.<ext>``… (csv, parquet or JSON lines).

    Rows are split into ``n_files`` contiguous, near-equal chunks; each file is written
    to a temporary name and renamed into place.
    """
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(n_files, bool) or not isinstance(n_files, int) \
            or not 1 <= n_files <= max(1, len(df)):
        raise InvalidRequest(f"n_files must be an integer from 1 to {max(1, len(df))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(df), n_files + 1).round().astype(int)
    paths = []
    for i in range(n_files):
        path = out / f"part-{i:05d}{FORMATS[fmt]}"
        tmp = out / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _write_one(df.iloc[bounds[i]:bounds[i + 1]], tmp, fmt)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


def _write_one(df: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path, index=False, engine="pyarrow", compression="zstd")
    else:
        df.to_json(path, orient="records", lines=True, date_format="iso", double_precision=15)


def demo_data_cli(argv: list[str] | None = None) -> int:
    """``python -m app demo-data``: write a synthetic expression dataset; returns an exit code."""
    parser = argparse.ArgumentParser(prog="python -m app demo-data",
                                     description="Write a synthetic gene-expression dataset.")
    parser.add_argument("--rows", type=int, default=500_000, help="number of rows (default 500000)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="file format")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--files", type=int, default=1, help="number of files (default 1)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    try:
        paths = write_dataset(generate_expression(args.rows, args.seed), args.out, args.format,
                              args.files)
    except ProcessingError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"wrote {args.rows} rows in {len(paths)} {args.format} file(s) to {args.out}")
    return 0
