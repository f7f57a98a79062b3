from __future__ import annotations

from pathlib import Path

import pytest

from freshsales_destination.config import load_settings
from freshsales_destination.errors import ConfigError

GOOD = """
[server]
host = "127.0.0.1"
port = 8080
admin_token = "adm"

[store]
url = "sqlite:///tmp/q.db"

[[sources]]
write_key = "wk_web"
destination = "acme"

[destinations.acme]
product = "suite"
domain = "acme"
api_key = "secret-key"
"""


def test_loads_and_resolves_suite_url(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    settings = load_settings(path, environ={})
    assert settings.server.port == 8080
    dest = settings.destinations["acme"]
    assert dest.resolved_base_url() == "https://acme.myfreshworks.com/crm/sales"
    assert settings.source_for("wk_web") is not None
    assert settings.source_for("nope") is None


def test_env_override_parses_scalars(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    settings = load_settings(path, environ={"FSD_SERVER__PORT": "9191", "OTHER": "x"})
    assert settings.server.port == 9191


def test_bad_key_is_named_without_secret(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('product = "suite"', 'product = "gold"'))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "destinations.acme.product" in str(info.value)
    assert "secret-key" not in str(info.value)


def test_custom_base_url_requires_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('domain = "acme"', 'base_url = "http://127.0.0.1:9000/crm/sales"'))
    with pytest.raises(ConfigError, match="allow_custom_base_url"):
        load_settings(path, environ={})
    path.write_text(
        GOOD.replace(
            'domain = "acme"',
            'base_url = "http://127.0.0.1:9000/crm/sales"\nallow_custom_base_url = true',
        )
    )
    assert load_settings(path, environ={}).destinations["acme"].resolved_base_url() == (
        "http://127.0.0.1:9000/crm/sales"
    )


def test_unknown_destination_reference(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('destination = "acme"', 'destination = "other"'))
    with pytest.raises(ConfigError, match="sources"):
        load_settings(path, environ={})


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace("port = 8080", "port = 8080\nprot = 1"))
    with pytest.raises(ConfigError, match="server.prot"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('domain = "acme "', "destinations.acme.domain"),
        ('domain = " acme"', "destinations.acme.domain"),
        ('domain = "ac\\tme"', "destinations.acme.domain"),
        ('domain = "acme\\n"', "destinations.acme.domain"),
        ('domain = "acme\\u0000"', "destinations.acme.domain"),
        ('domain = "acme\\u007f"', "destinations.acme.domain"),
        ('domain = "ac\\u200bme"', "destinations.acme.domain"),  # zero-width space
        ('domain = "acme\\u00a0"', "destinations.acme.domain"),  # no-break space
        (
            'base_url = "https://acme.myfreshworks.com/crm/ sales"',
            "destinations.acme.base_url",
        ),
        (
            'base_url = "https://acme.myfreshworks.com/crm/sales\\r\\n"',
            "destinations.acme.base_url",
        ),
    ],
)
def test_whitespace_or_control_characters_in_the_address_are_refused_at_start(
    tmp_path: Path, line: str, key: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('domain = "acme"', line))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    text = str(info.value)
    assert key in text
    assert "whitespace or control characters" in text
    assert "secret-key" not in text
    assert "\n" not in text and "\t" not in text and "\x00" not in text


def test_whitespace_from_an_environment_override_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match=r"destinations\.acme\.domain"):
        load_settings(path, environ={"FSD_DESTINATIONS__ACME__DOMAIN": "acme\n"})
    settings = load_settings(path, environ={"FSD_DESTINATIONS__ACME__DOMAIN": "acme-eu"})
    assert settings.destinations["acme"].resolved_base_url() == (
        "https://acme-eu.myfreshworks.com/crm/sales"
    )
