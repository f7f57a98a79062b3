"""What a clumsy operator writes into the configuration: refused at start with the key named
(never its value), or warned about."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from freshsales_destination.cli import _register, app
from freshsales_destination.config import load_settings
from freshsales_destination.errors import ConfigError

DESTINATION = """
[destinations.acme]
domain = "acme"
api_key = "fs-secret-api-key"
"""


def _serve(config: Path) -> tuple[int, str]:
    _register()
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param(
            '[[sources]]\nwrite_key = "wk_one_secret"\ndestination = "acme"\nname = "web"\n'
            '[[sources]]\nwrite_key = "wk_two_secret"\ndestination = "acme"\nname = "web"\n',
            id="same-name-two-keys",
        ),
        pytest.param(
            '[[sources]]\nwrite_key = "wk_one_secret"\ndestination = "acme"\nname = "web"\n'
            '[[sources]]\nwrite_key = "wk_two_secret"\ndestination = "acme"\n'
            '[[sources]]\nwrite_key = "wk_three_secret"\ndestination = "acme"\nname = "web"\n',
            id="name-reused-later",
        ),
    ],
)
def test_two_sources_of_one_name_are_refused_at_start(tmp_path: Path, sources: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(sources + DESTINATION)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    message = caught.value.message
    assert "sources[" in message and "].name" in message and "'web'" in message
    assert "sources[0]" in message
    code, err = _serve(config)
    assert code == 2
    assert "].name" in err and "sources[0]" in err
    for secret in ("wk_one_secret", "wk_two_secret", "wk_three_secret", "fs-secret-api-key"):
        assert secret not in err and secret not in message


def test_sources_with_names_of_their_own_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[sources]]\nwrite_key = "wk_1"\ndestination = "acme"\nname = "web"\n'
        '[[sources]]\nwrite_key = "wk_2"\ndestination = "acme"\nname = "app"\n'
        '[[sources]]\nwrite_key = "wk_3"\ndestination = "acme"\n' + DESTINATION
    )
    settings = load_settings(config, environ={})
    assert [s.name for s in settings.sources] == ["web", "app", None]


CONFIG = """
[[sources]]
write_key = "wk_file"
destination = "acme"

[destinations.acme]
domain = "acme"
api_key = "fs-file-key"
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return path


def test_a_string_setting_takes_its_override_as_a_string(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path), environ={
        "FSD_DESTINATIONS__ACME__API_KEY": "0012345",  # all digits, a leading zero
        "FSD_DESTINATIONS__ACME__APP_TOKEN": "true",
        "FSD_SOURCES__0__WRITE_KEY": "1e3",
        "FSD_SOURCES__0__NAME": "2024-05-01",  # a TOML date otherwise
        "FSD_DESTINATIONS__ACME__PRODUCT": "classic",
        "FSD_SERVER__HOST": "127.0.0.1",
    })
    dest = settings.destinations["acme"]
    assert dest.api_key.get_secret_value() == "0012345"
    assert dest.app_token is not None and dest.app_token.get_secret_value() == "true"
    assert settings.sources[0].write_key.get_secret_value() == "1e3"
    assert settings.sources[0].name == "2024-05-01"
    assert dest.product == "classic"


def test_other_settings_still_parse_their_overrides(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path), environ={
        "FSD_SERVER__PORT": "9191", "FSD_DELIVERY__ENABLED": "false",
        "FSD_DELIVERY__RETRY_WINDOW_HOURS": "0.5",
        "FSD_DESTINATIONS__ACME__RATE_LIMIT_PER_HOUR": "500",
        "FSD_DESTINATIONS__ACME__MAPPING__HONOUR_INTEGRATIONS": "false",
    })
    assert settings.server.port == 9191
    assert settings.delivery.enabled is False and settings.delivery.retry_window_hours == 0.5
    assert settings.destinations["acme"].rate_limit_per_hour == 500
    assert settings.destinations["acme"].mapping == {"honour_integrations": False}


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("FSD_SERVER__PROT", "server.prot"),
        ("FSD_SERVER_PORT", "server_port"),
        ("FSD_NOPE", "nope"),
        ("FSD_DELIVERY__WORKERS__MAX", "delivery.workers.max"),
        ("FSD_SOURCES__3__WRITE_KEY", "sources has no entry 3"),
        ("FSD_SOURCES__FIRST__NAME", "sources.first needs a number"),
        ("FSD_", "no setting"),
    ],
)
def test_an_unknown_override_is_named_in_the_error(tmp_path: Path, name: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_config(tmp_path), environ={name: "s3cr3t-value"})
    assert caught.value.message.startswith(f"{name}: ")
    assert named in caught.value.message
    assert "s3cr3t-value" not in caught.value.message
