#!/usr/bin/env bash
# The one command that installs what the tests need and runs the whole suite:
# .venv with the project and its test extras, Debian's chromium for browser tests.
#   ./run_tests.sh [pytest args]     (TEST_WORKERS=N: N worker processes, default 2)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium for the browser tests" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# The project's own modules compiled once: where PYTHONDONTWRITEBYTECODE is set, every
# process the suite starts (some 60 servers, their Dask workers) compiled them again, ~1 s each
.venv/bin/python -m compileall -q app components client >/dev/null
# Two pytest-xdist workers take whole modules (their shared servers stay per module), the
# browser modules last (tests/conftest.py says why); TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -p no:cacheprovider -q -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
