"""Fixtures shared across test folders."""

from __future__ import annotations

from tests.contract.conftest import pg_schema, postgres_dsn

__all__ = ["pg_schema", "postgres_dsn"]
