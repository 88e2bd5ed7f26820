#!/usr/bin/env bash
# The one command that starts the app: creates .venv when missing, installs the
# project from pyproject.toml, then serves the dashboard and API on one port.
#   ./panel_serve.sh [--port N] [--host H]     (flags win over PROCESSING_PORT / PROCESSING_HOST)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "installing the project into .venv (about a minute the first time)" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
    rm -f .venv/.installed-* && touch "$stamp"
fi
exec .venv/bin/python -m app serve "$@"
