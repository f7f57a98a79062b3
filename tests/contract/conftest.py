"""Fixtures of the contract suite: PostgreSQL (a fresh schema per test, dropped afterwards)
and `store`, one instance of each backend for the tests every backend must pass.

The server comes from ``TEST_POSTGRES_DSN`` (default: the local trust-auth server CI
starts). When it cannot be reached, every PostgreSQL test is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from freshsales_destination.store.base import Store
from freshsales_destination.store.sqlite import SQLiteStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class PgSchema:
    dsn: str
    schema: str


def _postgres_dsn() -> str:
    return os.environ.get("TEST_POSTGRES_DSN", DEFAULT_DSN)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test server's DSN, or a skip when PostgreSQL (or psycopg) is not there."""
    dsn = _postgres_dsn()
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        pytest.skip(f"psycopg is not installed: {exc}")
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"PostgreSQL not reachable at {dsn} (set TEST_POSTGRES_DSN): {first}")
    return dsn


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[PgSchema]:
    """A uniquely named schema that does not exist yet; dropped (with its tables) afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"fsd_test_{uuid.uuid4().hex[:16]}"
    yield PgSchema(postgres_dsn, schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An open store of each backend (PostgreSQL in its own schema), closed afterwards."""
    backend: Store
    if request.param == "sqlite-file":
        backend = SQLiteStore(tmp_path / "contract.db")
    elif request.param == "sqlite-memory":
        backend = SQLiteStore(None)
    else:
        from freshsales_destination.store.postgres import PostgresStore

        pg: PgSchema = request.getfixturevalue("pg_schema")  # skips without PostgreSQL
        backend = PostgresStore(pg.dsn, schema=pg.schema, max_size=4)
    backend.open()
    yield backend
    backend.close()
