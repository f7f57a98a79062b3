from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from freshsales_destination.sandbox.cli import sandbox_command


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("sandbox")(sandbox_command)
    app.command("noop")(lambda: None)
    return app


def test_help_lists_the_flags(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["sandbox", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--api-key", "--app-token", "--product", "--data", "--retry-after",
                 "--rate-limit-per-hour", "--rate-limit-per-minute", "--lenient", "--seed", "--error-rate",
                 "--tracking-api"):
        assert flag in result.output


def test_bad_product_and_seed_are_refused(app: typer.Typer, tmp_path) -> None:
    assert CliRunner().invoke(app, ["sandbox", "--product", "other"]).exit_code != 0
    assert CliRunner().invoke(app, ["sandbox", "--tracking-api", "maybe"]).exit_code != 0
    bad = tmp_path / "seed.toml"
    bad.write_text("[[contacts]]\nname = 'oops'\n")
    result = CliRunner().invoke(app, ["sandbox", "--seed", str(bad)])
    assert result.exit_code == 2 and "cf_" in result.output
