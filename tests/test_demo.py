"""Synthetic gene-expression data: deterministic, differential where promised, round-trips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app import demo
from app.demo import DIFFERENTIAL_GENES, demo_data_cli, generate_expression, write_dataset
from app.errors import InvalidRequest
from app.readers import detect_format, inspect


@pytest.fixture(scope="module")
def expression() -> pd.DataFrame:
    return generate_expression(200_000, seed=7)


def test_same_seed_same_frame_other_seed_differs() -> None:
    first = generate_expression(5_000, seed=3)
    pd.testing.assert_frame_equal(first, generate_expression(5_000, seed=3))
    other = generate_expression(5_000, seed=4)
    assert not np.allclose(other["expression_level"], first["expression_level"])


def test_shape_and_columns(expression: pd.DataFrame) -> None:
    assert list(expression.columns) == ["gene_id", "sample_id", "condition", "expression_level",
                                        "p_value"]
    assert len(expression) == 200_000
    assert expression["gene_id"].nunique() == 2_000
    assert expression["gene_id"].iloc[0] == "GENE00001"
    assert expression["sample_id"].nunique() == 100
    samples = expression.drop_duplicates("sample_id")["condition"].value_counts()
    assert samples["control"] == samples["treated"] == 50
    assert (expression["expression_level"] > 0).all()
    assert expression["p_value"].between(0, 1, inclusive="right").all()
    assert expression["p_value"].min() > 0
    assert DIFFERENTIAL_GENES[:2] == ("GENE00001", "GENE00002") and len(DIFFERENTIAL_GENES) == 50


def test_differential_genes_differ(expression: pd.DataFrame) -> None:
    means = expression.groupby(["gene_id", "condition"])["expression_level"].mean().unstack()
    ratio = means["treated"] / means["control"]
    differential = ratio.loc[list(DIFFERENTIAL_GENES)]
    others = ratio.drop(index=list(DIFFERENTIAL_GENES))
    assert (differential > 1.5).all()
    assert 2.0 <= differential.median() <= 4.0
    assert others.median() == pytest.approx(1.0, abs=0.05)
    assert (others.between(0.75, 1.33)).all()


def test_small_tables_still_work() -> None:
    tiny = generate_expression(45, seed=1)
    assert len(tiny) == 45 and tiny["gene_id"].nunique() == 2
    assert len(generate_expression(1)) == 1
    with pytest.raises(InvalidRequest):
        generate_expression(0)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_write_dataset_round_trips(tmp_path: Path, fmt: str) -> None:
    frame = generate_expression(3_000, seed=5)
    paths = write_dataset(frame, tmp_path / fmt, fmt, n_files=3)
    assert [p.name for p in paths] == [f"part-{i:05d}{demo.FORMATS[fmt]}" for i in range(3)]
    written = sorted(p.name for p in (tmp_path / fmt).iterdir())
    assert written == [p.name for p in paths]  # no temporary files left
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet,
            "json": lambda p: pd.read_json(p, lines=True, precise_float=True)}[fmt]
    parts = [read(p) for p in paths]
    assert abs(len(parts[0]) - len(parts[2])) <= 1
    back = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(back, frame, check_exact=fmt == "parquet")
    info = inspect(str(tmp_path / fmt / f"*{demo.FORMATS[fmt]}"), detect_format(str(paths[0])), {})
    assert info["estimated_rows"] == 3_000
    assert [c["name"] for c in info["schema"]] == list(frame.columns)


def test_write_dataset_rejects_bad_arguments(tmp_path: Path) -> None:
    frame = generate_expression(10)
    with pytest.raises(InvalidRequest, match="format"):
        write_dataset(frame, tmp_path, "xlsx")
    with pytest.raises(InvalidRequest, match="n_files"):
        write_dataset(frame, tmp_path, "csv", n_files=0)
    with pytest.raises(InvalidRequest, match="n_files"):
        write_dataset(frame, tmp_path, "csv", n_files=11)


def test_cli_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = demo_data_cli(["--rows", "1000", "--format", "parquet", "--out", str(tmp_path / "d"),
                          "--files", "2", "--seed", "9"])
    assert code == 0
    assert "wrote 1000 rows in 2 parquet file(s)" in capsys.readouterr().out
    back = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "d").iterdir())],
                     ignore_index=True)
    pd.testing.assert_frame_equal(back, generate_expression(1000, seed=9))
    assert demo_data_cli(["--rows", "0", "--format", "csv", "--out", str(tmp_path / "e")]) == 2
    with pytest.raises(SystemExit) as exit_:
        demo_data_cli(["--format", "xlsx", "--out", str(tmp_path)])
    assert exit_.value.code == 2


def test_a_demo_that_fails_at_start_is_a_health_reason(tmp_path: Path) -> None:
    from tests.server import ServerProcess

    data_dir = tmp_path / "data"
    (data_dir / "managed").mkdir(parents=True)
    (data_dir / "managed" / "demo").write_text("a file where the demo's folder must go\n")
    srv = ServerProcess(data_dir, {"CLUSTER_AUTOSTART": "0"})
    try:
        srv.start()
        health = srv.wait_for(lambda: (h := srv.get("/api/processing/health").json())["reasons"] and h, timeout=60)
        assert health["status"] == "degraded", health
        [reason] = [r for r in health["reasons"] if "demo dataset" in r]
        assert "could not be created at start" in reason and "managed/demo" in reason, reason
        assert srv.get("/api/processing/datasets/demo_expression").status_code == 404
    finally:
        srv.cleanup()
