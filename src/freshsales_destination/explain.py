"""``freshsales-destination explain``: show what the planner would do with one event.

Nothing is sent to Freshsales. The field schema comes from ``--schema`` (a JSON file with
``{"contacts": {"fields": [...]}, ..., "selectors": {...}}``, for example a cached copy or the
sandbox's) or, without it, from the built-in default schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from freshsales_destination.config import load_settings
from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import check_settings, plan
from freshsales_destination.core.schema import FieldSchema, MappingConfigError, default_schema
from freshsales_destination.errors import FreshsalesDestinationError


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingConfigError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MappingConfigError(f"{what} file {path} is not valid JSON: {exc}") from None


def explain(
    event: Any,
    *,
    config: Path,
    destination: str | None = None,
    schema_path: Path | None = None,
    identity: IdentityState | None = None,
) -> dict[str, Any]:
    """The JSON document ``explain`` prints. Raises project errors on bad input."""
    settings = load_settings(config)
    names = sorted(settings.destinations)
    if destination is None:
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise MappingConfigError(
                f"choose a destination with --destination (configured: {listed})"
            )
        destination = names[0]
    if destination not in settings.destinations:
        raise MappingConfigError(f"no destination named {destination!r} in {config}")
    dest = settings.destinations[destination]
    planner_settings = DestinationSettings.build(dest.product, dest.app_token is not None, dest.mapping)
    if schema_path is not None:
        schema = FieldSchema.from_json(_read_json(schema_path, "schema"), product=dest.product)
        schema_source = str(schema_path)
    else:
        schema = default_schema(dest.product)
        schema_source = "built-in default (selector ids are placeholders)"
    warnings = check_settings(planner_settings, schema)
    result = plan(event, planner_settings, schema, identity)
    out = result.to_json()
    out["destination"] = destination
    out["product"] = dest.product
    out["schema"] = schema_source
    out["warnings"] = warnings
    return out


def explain_command(
    event_file: Annotated[Path, typer.Argument(help="A JSON file holding one Segment message.")],
    config: Annotated[Path, typer.Option("--config", help="The service's TOML configuration.")],
    destination: Annotated[
        str | None, typer.Option("--destination", help="The destination (destinations.NAME) to plan for.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option("--schema", help="A JSON field schema (default: the built-in one)."),
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option("--identity", help="A JSON identity state, as if the person were known."),
    ] = None,
) -> None:
    """Print, as JSON, the Freshsales operations an event would become, and why."""
    try:
        event = _read_json(event_file, "event")
        known = None
        if identity is not None:
            raw = _read_json(identity, "identity")
            if not isinstance(raw, dict):
                raise MappingConfigError("the identity file must hold a JSON object")
            try:
                known = IdentityState.from_json(raw)
            except ValueError as exc:
                raise MappingConfigError(f"identity file {identity}: {exc}") from None
        out = explain(
            event, config=config, destination=destination, schema_path=schema, identity=known
        )
    except FreshsalesDestinationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from None
    sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


__all__ = ["explain", "explain_command"]
