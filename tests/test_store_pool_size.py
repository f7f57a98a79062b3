"""`store.pool_size`: validated, PostgreSQL only, and the pool every role's process opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshsales_destination.config import load_settings
from freshsales_destination.errors import ConfigError
from freshsales_destination.service import CONFIG_ENV, ROLE_ENV, app_factory
from freshsales_destination.store.factory import open_store
from freshsales_destination.store.postgres import DEFAULT_POOL_SIZE, PostgresStore
from tests.contract.conftest import PgSchema

CONFIG = """
[store]
url = "{url}"
{pool}

[[sources]]
write_key = "wk_web"
destination = "acme"

[destinations.acme]
product = "suite"
domain = "acme"
api_key = "secret-key"
"""


def _write(tmp_path: Path, url: str, pool: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(url=url, pool=pool))
    path.chmod(0o600)
    return path


def test_pool_size_is_read_and_defaults_to_none(tmp_path: Path) -> None:
    url = "postgresql://fsd@db.internal/fsd"
    assert load_settings(_write(tmp_path, url), environ={}).store.pool_size is None
    settings = load_settings(_write(tmp_path, url, "pool_size = 24"), environ={})
    assert settings.store.pool_size == 24
    from_env = load_settings(_write(tmp_path, url), environ={"FSD_STORE__POOL_SIZE": "16"})
    assert from_env.store.pool_size == 16


@pytest.mark.parametrize("value", ["0", "3", "1001", '"many"'])
def test_a_pool_size_out_of_bounds_is_refused_by_name(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, "postgresql://fsd@db.internal/fsd", f"pool_size = {value}")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "pool_size" in caught.value.message


def test_a_pool_size_with_a_sqlite_store_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = _write(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", "pool_size = 8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "pool_size" in caught.value.message and "PostgreSQL" in caught.value.message


def test_open_store_sizes_the_pool(pg_schema: PgSchema) -> None:
    url = f"{pg_schema.dsn}?schema={pg_schema.schema}"
    for asked, expected in ((None, DEFAULT_POOL_SIZE), (6, 6)):
        store = open_store(url, pool_size=asked)
        try:
            assert isinstance(store, PostgresStore)
            assert store.pool_size == expected
            assert store._pool is not None and store._pool.max_size == expected
        finally:
            store.close()


@pytest.mark.parametrize("role", ["ingest", "worker", "all"])
def test_every_role_s_process_opens_its_pool_with_the_setting(
    pg_schema: PgSchema, tmp_path: Path, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{pg_schema.dsn}?schema={pg_schema.schema}"
    monkeypatch.setenv(CONFIG_ENV, str(_write(tmp_path, url, "pool_size = 7")))
    monkeypatch.setenv(ROLE_ENV, role)
    app = app_factory()  # what each serving process builds (server.workers > 1)
    store = app.state.store
    try:
        assert isinstance(store, PostgresStore)
        assert store._pool is not None and store._pool.max_size == 7
    finally:
        store.close()
