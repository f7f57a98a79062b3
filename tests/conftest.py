"""Fixtures shared across test folders."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from tests.contract.conftest import pg_schema, postgres_dsn

__all__ = ["pg_schema", "postgres_dsn"]


SERIAL_MARK = "serial"
PHASE_VARIABLE = "FRESHSALES_TEST_PHASE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test.sh runs the suite in two phases: ``FRESHSALES_TEST_PHASE=parallel`` (under
    pytest-xdist) keeps every test but those marked ``serial``, ``FRESHSALES_TEST_PHASE=serial`` keeps
    only those. Unset (a plain ``pytest``), every selected test runs."""
    phase = os.environ.get(PHASE_VARIABLE, "")
    if phase not in ("parallel", "serial"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        serial = item.get_closest_marker(SERIAL_MARK) is not None
        (kept if serial == (phase == "serial") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """On CI (``CI=true``) the PostgreSQL tests must run: their skip is a failure."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if os.environ.get("CI", "").lower() != "true" or not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if "PostgreSQL" in reason or "psycopg" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true: this PostgreSQL test must run, but it was skipped: {reason}"


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Generator[None, None, None]:
    """A test that runs `serve` in process configures logging for the whole process
    (observe/logs.py); put the root logger and uvicorn's back afterwards, so that no later
    test's output holds its lines."""
    import logging

    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (logging.getLogger(name), list(logging.getLogger(name).handlers),
               logging.getLogger(name).level, logging.getLogger(name).propagate,
               logging.getLogger(name).disabled)
        for name in names
    }
    yield
    for logger, handlers, level, propagate, disabled in saved.values():
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled
