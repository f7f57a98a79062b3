"""PostgreSQL specifics the shared contract does not cover: URLs, schemas, migrations, outages."""

from __future__ import annotations

import orjson
import psycopg
import pytest

from freshsales_destination.errors import ConfigError, StoreUnavailable
from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.factory import open_store
from freshsales_destination.store.postgres import (
    SCHEMA_VERSION,
    PostgresStore,
    split_postgres_url,
)
from tests.contract.conftest import PgSchema


def _msg(mid: str) -> NewMessage:
    body = orjson.dumps({"messageId": mid, "type": "identify"})
    return NewMessage(
        source="web",
        destination="acme",
        message_id=mid,
        type="identify",
        status="pending",
        reason=None,
        lane="u:1",
        received_at=1.0,
        event_at=1.0,
        raw=body,
        message=body,
    )


def test_url_schema_parameter_is_ours_and_the_rest_goes_to_libpq() -> None:
    assert split_postgres_url("postgresql://u@h:5432/db") == ("postgresql://u@h:5432/db", "public")
    assert split_postgres_url("postgres://u@h/db?schema=fsd&sslmode=require") == (
        "postgres://u@h/db?sslmode=require",
        "fsd",
    )
    with pytest.raises(ConfigError):
        split_postgres_url("sqlite:///x.db")
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://u@h/db", schema='bad"name')


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_factory_opens_postgres_urls_in_their_schema(pg_schema: PgSchema, scheme: str) -> None:
    url = pg_schema.dsn.replace("postgresql://", f"{scheme}://", 1)
    store = open_store(f"{url}?schema={pg_schema.schema}")
    try:
        assert isinstance(store, PostgresStore) and store.schema == pg_schema.schema
        assert store.append([_msg("a")]) == [True]
        store.ping()
    finally:
        store.close()
    with psycopg.connect(pg_schema.dsn) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name = 'messages'",
            (pg_schema.schema,),
        ).fetchone()
    assert row == (1,)


def test_open_is_idempotent_and_reopening_keeps_data(pg_schema: PgSchema) -> None:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    store.open()
    store.open()
    store.append([_msg("a")])
    store.close()
    again = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    again.open()
    try:
        assert again.append([_msg("a")]) == [False]
        with psycopg.connect(pg_schema.dsn) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (pg_schema.schema,))
            versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
    finally:
        again.close()


def test_unreachable_or_closed_store_is_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        store.open()
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.append([_msg("a")])


def test_a_large_batch_keeps_input_order_in_seq(pg_schema: PgSchema) -> None:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema)
    store.open()
    try:
        ids = [f"m{i:05d}" for i in range(2_000)]
        assert store.append([_msg(i) for i in ids]) == [True] * len(ids)
        listed = store.list_messages(limit=5_000)
        assert [m.message_id for m in listed] == ids
        assert listed[0].raw == orjson.dumps({"messageId": "m00000", "type": "identify"})
    finally:
        store.close()
