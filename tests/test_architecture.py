"""The architecture as a checked contract: import-linter's contracts in pyproject.toml,
every module of app/ placed in a layer, and the client package installing and running
alone in a fresh virtual environment, without the server's dependencies."""
from __future__ import annotations

import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

import app
from tests.server import ROOT, ClosedPort

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in CONFIG["contracts"]}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
BROKEN = re.compile(r"^-\s+(\S+) -> (\S+) \(l\.\d+\)", re.M)


class ContractBroken(AssertionError):
    """The contract is broken by exactly the imports a test expects (an xfail, not a failure)."""


def broken_imports(contract_id: str) -> tuple[set[tuple[str, str]], str]:
    """Run ``lint-imports`` on one contract: the direct imports that break it, and its report."""
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", contract_id],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = done.stdout + done.stderr
    found = set(BROKEN.findall(report))
    assert done.returncode == 0 or found, f"lint-imports failed without naming an import:\n{report}"
    return found, report


def check(contract_id: str, known: set[tuple[str, str]] = frozenset()) -> None:
    """The contract is kept; a break by ``known`` imports only raises ContractBroken (xfail),
    any other import breaking it fails the test."""
    found, report = broken_imports(contract_id)
    assert found <= known, f"imports breaking '{contract_id}': {sorted(found - known)}\n{report}"
    if found:
        raise ContractBroken(f"'{contract_id}' still broken by {sorted(found)}")


def test_layers():
    check("layers")


def test_handlers_and_pages_use_the_services_views():
    check("views")


def test_the_client_imports_nothing_from_the_server():
    check("client")


def test_a_contract_that_is_broken_is_reported_with_its_imports(tmp_path):
    """The checks above can fail: a contract forbidding what the client does import is broken."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.importlinter]\nroot_packages = ["processing_client"]\n'
        '[[tool.importlinter.contracts]]\nid = "x"\nname = "x"\ntype = "forbidden"\n'
        'source_modules = ["processing_client.cli"]\nforbidden_modules = ["processing_client.client"]\n')
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tmp_path / "pyproject.toml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert ("processing_client.cli", "processing_client.client") in set(BROKEN.findall(done.stdout))


def test_every_module_of_app_is_placed_in_a_layer():
    layers = next(c["layers"] for c in CONFIG["contracts"] if c["type"] == "layers")
    placed = {name.strip().strip("()") for layer in layers for name in re.split(r"[:|]", layer)}
    modules = {f"app.{m.name}" for m in pkgutil.iter_modules(app.__path__)}
    assert modules - placed == set(), "place new modules in [tool.importlinter] layers in pyproject.toml"


@pytest.mark.slow
def test_the_client_installs_and_runs_alone_in_a_fresh_venv(tmp_path):
    """``pip install ./client`` in a venv without the system's packages: the client imports,
    the server's dependencies are absent, ``processing --help`` works and an unreachable
    server exits 3."""
    source = tmp_path / "client"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python, processing = env_dir / "bin" / "python", env_dir / "bin" / "processing"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(source)],
                          capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = ("import importlib.util, sys, processing_client\n"
             "from processing_client import Client, ProcessingAPIError\n"
             "print(sorted(m for m in ('app', 'components', 'dask', 'distributed', 'panel', 'pandas', 'numpy',"
             " 'pyarrow', 'tornado') if importlib.util.find_spec(m) is not None))\n"
             "print(processing_client.__file__)")
    done = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found, where = done.stdout.splitlines()
    assert found == "[]", f"server packages importable in the client's venv: {found}"
    assert where.startswith(str(env_dir)), where
    done = subprocess.run([str(processing), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "exit codes" in done.stdout, done.stderr
    with ClosedPort() as url:
        done = subprocess.run([str(processing), "--url", url, "health"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and url in done.stderr, done.stdout + done.stderr
