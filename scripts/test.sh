#!/usr/bin/env bash
# Installs everything the test suite needs into ./.venv and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# Lint and type check first (see pyproject.toml): the package is typed throughout.
.venv/bin/python -m ruff check src tests bench
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
