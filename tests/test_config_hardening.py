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
