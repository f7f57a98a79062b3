"""Fixtures shared across test folders."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from tests.contract.conftest import pg_schema, postgres_dsn

__all__ = ["pg_schema", "postgres_dsn"]


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
