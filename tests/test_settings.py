"""Settings: parsed from the environment, checked, and every variable in the README."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import SETTINGS, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_contract_defaults():
    s = Settings.from_env({})
    assert (s.n_workers, s.threads_per_worker, s.memory_limit) == (4, 2, "2GB")
    assert (s.max_concurrent_jobs, s.job_check_interval) == (4, 5.0)
    assert (s.default_max_memory_gb, s.default_max_cores) == (2.0, 2)
    assert (s.host, s.port, s.dashboard_address, s.autostart) == ("127.0.0.1", 8001, "127.0.0.1:8787", True)


def test_values_are_parsed_and_overrides_win():
    s = Settings.from_env({"DASK_N_WORKERS": "8", "CLUSTER_AUTOSTART": "off", "DATA_ROOTS": "/a, /b",
                           "PROCESSING_PORT": "9000"}, port=9100)
    assert s.n_workers == 8 and s.autostart is False and s.data_roots == ("/a", "/b") and s.port == 9100


def test_a_relative_data_dir_is_made_absolute_once_against_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})  # the default "./data", as on a fresh clone
    assert s.data_dir.is_absolute() and s.data_dir == tmp_path / "data"
    assert s.allowed_roots[0] == (tmp_path / "data").resolve()
    assert Settings.from_env({"PROCESSING_DATA_DIR": "rel/../x"}).data_dir == tmp_path / "x"
    monkeypatch.chdir(tmp_path.parent)  # a later cwd change moves nothing
    assert s.data_dir == tmp_path / "data"


@pytest.mark.parametrize("env, needle", [
    ({"DASK_N_WORKERS": "four"}, "DASK_N_WORKERS"),
    ({"CLUSTER_AUTOSTART": "maybe"}, "CLUSTER_AUTOSTART"),
    ({"MAX_CONCURRENT_JOBS": "0"}, "MAX_CONCURRENT_JOBS"),
])
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ValueError, match=needle):
        Settings.from_env(env)


def test_every_variable_is_in_the_readme_table_with_its_default():
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", README, flags=re.M))
    for var in SETTINGS:
        assert var.env in rows, f"{var.env} missing from the README configuration table"
        default = var.default if not isinstance(var.default, bool) else int(var.default)
        if default != "":
            assert rows[var.env].strip() == f"`{default}`", var.env
