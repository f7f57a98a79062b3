"""The ``freshsales-destination`` command line.

Each command lives beside the code it drives; this module only assembles them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from freshsales_destination import __version__

app = typer.Typer(
    name="freshsales-destination",
    help="A self-hosted Segment-compatible destination that delivers to Freshsales CRM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"freshsales-destination {__version__}")
        raise typer.Exit()


@app.callback()
def _top(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """A self-hosted Segment-compatible destination that delivers to Freshsales CRM."""


def _register() -> None:
    from freshsales_destination.admin.cli import (
        dead_letters,
        explain_command,
        messages,
        status_command,
    )
    from freshsales_destination.delivery.check import check_command
    from freshsales_destination.ingest.import_command import import_command
    from freshsales_destination.sandbox.cli import sandbox_command
    from freshsales_destination.service import serve_command

    app.command("serve")(serve_command)
    app.command("sandbox")(sandbox_command)
    app.command("explain")(explain_command)
    app.command("status")(status_command)
    app.command("check")(check_command)
    app.command("import")(import_command)
    app.add_typer(messages, name="messages")
    app.add_typer(dead_letters, name="dead-letters")


def main() -> None:
    _register()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
