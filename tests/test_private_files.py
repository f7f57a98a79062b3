"""Files other users of the machine must not read: the data directory, the databases, the
embedded secrets; a damaged secrets file; a readable configuration file holding secrets."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freshsales_destination.cli import _register, app
from freshsales_destination.config import load_settings
from freshsales_destination.service import SECRETS_FILE, build_embedded_app
from freshsales_destination.store.sqlite import SQLiteStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _embedded(data_dir: Path) -> dict[str, str]:
    built, keys = build_embedded_app(data_dir, "127.0.0.1", 8080)
    built.state.store.close()
    return keys


def test_embedded_data_is_private_when_created(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: it must not loosen anything created here
    try:
        data_dir = tmp_path / "nested" / "data"
        keys = _embedded(data_dir)
    finally:
        os.umask(previous)
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / SECRETS_FILE) == 0o600
    for name in ("queue.db", "sandbox.db"):
        assert _mode(data_dir / name) == 0o600, name
    for sidecar in data_dir.glob("*.db-*"):  # SQLite's -wal and -shm take the file's mode
        assert _mode(sidecar) == 0o600, sidecar.name
    assert json.loads((data_dir / SECRETS_FILE).read_text()) == keys
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]


def test_existing_files_are_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keys = _embedded(data_dir)
    loose = [data_dir / SECRETS_FILE, data_dir / "queue.db", data_dir / "sandbox.db",
             data_dir / "queue.db-wal"]
    (data_dir / "queue.db-wal").touch()  # left behind by a crash, say
    for path in loose:
        os.chmod(path, 0o644)
    built, again = build_embedded_app(data_dir, "127.0.0.1", 8080)
    try:
        assert again == keys  # the same keys, not new ones
        for path in loose:  # (SQLite removes the WAL on close: look while it is open)
            assert _mode(path) == 0o600, path.name
    finally:
        built.state.store.close()


def test_a_configured_sqlite_store_is_private(tmp_path: Path) -> None:
    db = tmp_path / "var" / "queue.db"
    store = SQLiteStore(db)
    store.open()
    store.close()
    assert _mode(db.parent) == 0o700 and _mode(db) == 0o600
    os.chmod(db, 0o664)
    store = SQLiteStore(db)
    store.open()
    store.close()
    assert _mode(db) == 0o600


def _serve_embedded(data_dir: Path) -> tuple[int, str, str]:
    _register()
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("content", "why"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b'{"write_key": "wk_abc", "sandbox_api', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe garbage", "not valid JSON", id="binary"),
        pytest.param(b'["wk_abc"]', "not a JSON object", id="array"),
        pytest.param(
            b'{"write_key": "wk_keep_me", "sandbox_api_key": "sbk_x", "admin_token": "adm_y"}',
            "lacks sandbox_app_token", id="missing-key",
        ),
        pytest.param(
            b'{"write_key": 5, "sandbox_api_key": "sbk_x", "sandbox_app_token": "t", '
            b'"admin_token": "adm_y"}',
            "lacks write_key", id="wrong-type",
        ),
    ],
)
def test_a_damaged_secrets_file_stops_the_start_clearly(
    tmp_path: Path, content: bytes, why: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    secrets_file = data_dir / SECRETS_FILE
    secrets_file.write_bytes(content)
    code, out, err = _serve_embedded(data_dir)
    assert code == 2
    assert "Traceback" not in out + err
    assert f"{secrets_file} is damaged ({'it is ' if 'JSON' in why else 'it '}{why})" in err
    assert "Restore it from a backup" in err
    assert secrets_file.read_bytes() == content  # never rotated behind the operator's back
    for secret in ("wk_abc", "wk_keep_me", "sbk_x", "adm_y"):
        assert secret not in out + err
    assert not (data_dir / "queue.db").exists()


CONFIG = """
[server]
admin_token = "adm-secret-token"

[store]
url = "sqlite:///{db}"

[[sources]]
write_key = "wk-secret-key"
destination = "acme"

[destinations.acme]
domain = "acme"
api_key = "fs-secret-api-key"
"""


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_configuration_with_secrets_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(db=tmp_path / "q.db"))
    os.chmod(config, mode)
    with caplog.at_level(logging.WARNING, logger="freshsales_destination.config"):
        load_settings(config, environ={})
    (record,) = caplog.records
    text = record.getMessage()
    assert str(config) in text and "other users can read it" in text and "chmod 600" in text
    for key in ("server.admin_token", "sources[0].write_key", "destinations.acme.api_key"):
        assert key in text
    for secret in ("adm-secret-token", "wk-secret-key", "fs-secret-api-key"):
        assert secret not in caplog.text


def test_a_private_configuration_or_one_without_secrets_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = tmp_path / "private.toml"
    private.write_text(CONFIG.format(db=tmp_path / "q.db"))
    os.chmod(private, 0o600)
    public = tmp_path / "public.toml"
    public.write_text('[server]\nport = 9000\n')
    os.chmod(public, 0o644)
    with caplog.at_level(logging.WARNING, logger="freshsales_destination.config"):
        load_settings(private, environ={})
        load_settings(public, environ={})
    assert caplog.records == []
