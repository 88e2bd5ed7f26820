"""Settings: declared once, parsed from the environment, checked, and the README table derived from them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import SETTINGS, Settings, markdown_table

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


def test_the_readme_table_is_the_one_derived_from_the_declarations():
    rows = re.findall(r"^\| `([A-Z_]+)` \| .+ \|$", README, flags=re.M)
    assert rows == [var.env for var in SETTINGS], "README's table: every variable, once, in declaration order"
    assert markdown_table() in README, "README's configuration table is stale: paste `python -m app.settings` over it"


def test_each_declared_default_is_what_its_table_text_parses_to():
    defaults = Settings()
    for var in SETTINGS:
        assert var.parse(var.text) == var.default, var.env
        if var.attr != "data_dir":  # made absolute on construction
            assert getattr(defaults, var.attr) == var.default, var.env
    assert Settings.from_env({}) == defaults


def test_tokens_are_kept_out_of_the_repr():
    text = repr(Settings(api_token="s3cret-a", read_token="s3cret-b", wall_token="s3cret-c"))
    assert "s3cret" not in text and "port=8001" in text


def test_session_expiry_reaches_bokeh_as_its_two_intervals():
    from app.server import session_expiry

    assert session_expiry(Settings()) == {"unused_session_lifetime_milliseconds": 15_000,
                                          "check_unused_sessions_milliseconds": 7_500}
    assert session_expiry(Settings(session_expiry_s=5)) == {"unused_session_lifetime_milliseconds": 5_000,
                                                            "check_unused_sessions_milliseconds": 2_500}
    assert session_expiry(Settings(session_expiry_s=3600))["check_unused_sessions_milliseconds"] == 17_000
    with pytest.raises(ValueError, match="SESSION_EXPIRY_S"):
        Settings.from_env({"SESSION_EXPIRY_S": "0"})
