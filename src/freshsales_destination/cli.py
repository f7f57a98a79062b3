"""The ``freshsales-destination`` command line.

Each command lives beside the code it drives; this module only assembles them.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="freshsales-destination",
    help="A self-hosted Segment-compatible destination that delivers to Freshsales CRM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from freshsales_destination.delivery.check import check_command
    from freshsales_destination.delivery.cli import dead_letters, status_command
    from freshsales_destination.explain import explain_command
    from freshsales_destination.ingest.import_command import import_command
    from freshsales_destination.sandbox.cli import sandbox_command
    from freshsales_destination.service import serve_command

    app.command("serve")(serve_command)
    app.command("sandbox")(sandbox_command)
    app.command("explain")(explain_command)
    app.command("status")(status_command)
    app.command("check")(check_command)
    app.command("import")(import_command)
    app.add_typer(dead_letters, name="dead-letters")


def main() -> None:
    _register()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
