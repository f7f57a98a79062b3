#!/usr/bin/env bash
# Installs everything the test suite needs into ./.venv and runs the whole suite.
#
# pytest runs twice: first every test not marked `serial`, on TEST_WORKERS processes
# (pytest-xdist, default 2); then the `serial` tests (tests/acceptance/test_postgres_restart.py)
# alone. Extra arguments go to both runs (paths, -k, -x, ...; `-n 0` runs the first one in a
# single process). Both must pass; a run that selects no test fails the script when no argument
# was given, and is accepted with arguments as long as the other run ran tests. The second run
# is always one process (`-n 0` after the arguments).
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

# The tests' temporary folders (their SQLite stores, files, throw-away clusters) on a memory
# file system when there is one: the store commits with fsync (synchronous=FULL), which on a
# disk costs time on every commit and proves nothing a test checks (a killed process loses no
# written page; only a power cut would). TMPDIR set by the caller wins.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    shm_tmp="/dev/shm/freshsales-destination-tests-$(id -u)"
    if mkdir -p -m 711 "$shm_tmp" 2>/dev/null && [ -O "$shm_tmp" ] && [ -w "$shm_tmp" ]; then
        chmod 711 "$shm_tmp"  # a throw-away cluster runs as the postgres user under it
        export TMPDIR="$shm_tmp"
    fi
fi

NO_TESTS=5  # pytest's exit code when it ran no test
status=0
FRESHSALES_TEST_PHASE=parallel .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" "$@" || status=$?
parallel=$status
status=0
FRESHSALES_TEST_PHASE=serial .venv/bin/python -m pytest "$@" -n 0 || status=$?
serial=$status

verdict() {  # verdict EXIT OTHER_EXIT: 0 when this run is acceptable
    if [ "$1" -eq 0 ]; then
        return 0
    fi
    [ "$1" -eq "$NO_TESTS" ] && [ "$NUM_ARGS" -gt 0 ] && [ "$2" -eq 0 ]
}
NUM_ARGS=$#
if verdict "$parallel" "$serial" && verdict "$serial" "$parallel"; then
    exit 0
fi
echo "scripts/test.sh: the parallel run exited $parallel, the serial run $serial" >&2
exit 1
