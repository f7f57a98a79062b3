"""``freshsales-destination explain``: show what the planner would do with one event.

Nothing is sent to Freshsales. The field schema comes from ``--schema`` (a JSON file with
``{"contacts": {"fields": [...]}, ..., "selectors": {...}}``); without it, from the copy the
delivery engine cached in the configured store (read only, never fetched); when the store holds
none and the destination points at a sandbox (a custom ``base_url``, never a Freshworks host),
from that sandbox's field settings; and otherwise from the built-in default schema. The output
says which one was used (``schema_source``: ``file``, ``store cache``, ``sandbox`` or
``built-in default``). What delivery learned about the destination's tracking API is read from
the same store, so the plan shows the way its events go now (``events_via`` in the output).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from freshsales_destination.config import (
    DestinationConfig,
    Settings,
    is_freshworks_https_url,
    load_settings,
)
from freshsales_destination.core.event_age import REASON_CODE, too_old
from freshsales_destination.core.events_via import TrackingApi, events_way, tracking_state
from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import check_settings, plan
from freshsales_destination.core.planning.result import Plan
from freshsales_destination.core.schema import (
    FieldSchema,
    MappingConfigError,
    default_schema,
)
from freshsales_destination.core.segment import parse_time
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.delivery.learned import TRACKING_API, Fact, LearnedFacts
from freshsales_destination.delivery.schema_cache import (
    add_part,
    fetch_part,
    part_request,
    schema_parts,
)
from freshsales_destination.errors import FreshsalesDestinationError
from freshsales_destination.freshsales.client import FreshsalesClient

# The delivery engine's cache (freshsales_destination.delivery.schema_cache): key/value
# namespace "schema", key = destination name, value = {"fetched_at": epoch, "schema": {...}}.
SCHEMA_CACHE_NAMESPACE = "schema"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingConfigError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MappingConfigError(f"{what} file {path} is not valid JSON: {exc}") from None


def _cached_schema(
    settings: Settings, destination: str, product: str
) -> tuple[FieldSchema | None, str]:
    """The schema the delivery engine cached in the store, and a description of it; or None
    and why there is none. Only reads: never fetches from Freshsales, never creates a store."""
    url = settings.store.url
    try:
        if url.startswith("sqlite:"):
            from freshsales_destination.store.sqlite import sqlite_path_from_url

            path = sqlite_path_from_url(url)
            if path is None or not path.exists():
                return None, f"no store at {url}"
        from freshsales_destination.store.factory import open_store

        store = open_store(url)
        try:
            cached = store.kv_get(SCHEMA_CACHE_NAMESPACE, destination)
        finally:
            store.close()
    except FreshsalesDestinationError as exc:
        return None, f"the store could not be read: {exc.message}"
    except Exception as exc:  # noqa: BLE001 -- a driver error outside our hierarchy: fall back
        return None, f"the store could not be read: {type(exc).__name__}: {exc}"
    if cached is None:
        return None, f"no schema cached for {destination!r} in the store yet"
    try:
        data = json.loads(cached)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"the cached schema of {destination!r} is not valid JSON"
    raw = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        return None, f"the cached schema of {destination!r} was invalidated or is incomplete"
    try:
        schema = FieldSchema.from_json(raw, product=product)
    except MappingConfigError as exc:
        return None, f"the cached schema of {destination!r} is malformed: {exc.message}"
    fetched = data.get("fetched_at")
    when = "at an unknown time"
    if isinstance(fetched, (int, float)) and not isinstance(fetched, bool) and fetched > 0:
        stamp = datetime.fromtimestamp(float(fetched), UTC)
        when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return schema, f"store cache of {destination!r}, fetched from Freshsales {when}"


def _learned_tracking(settings: Settings, destination: str) -> Fact | None:
    """What delivery learned about the destination's tracking API (read only; None: nothing)."""
    url = settings.store.url
    try:
        if url.startswith("sqlite:"):
            from freshsales_destination.store.sqlite import sqlite_path_from_url

            path = sqlite_path_from_url(url)
            if path is None or not path.exists():
                return None
        from freshsales_destination.store.factory import open_store

        store = open_store(url)
        try:
            return LearnedFacts(store, destination).get(TRACKING_API)
        finally:
            store.close()
    except Exception:  # noqa: BLE001 -- an unreadable store: nothing learned to show
        return None


def _events_via(
    dest: DestinationConfig, fact: Fact | None, now: float
) -> tuple[TrackingApi, dict[str, Any]]:
    """What the planner is told about the tracking API, and the ``events_via`` output block."""
    state = tracking_state(fact.value if fact else None, fact.recheck_at if fact else None, now)
    tracking: TrackingApi = "unknown" if state == "recheck" else state
    way = events_way(dest.events_via, dest.app_token is not None, tracking)
    block: dict[str, Any] = {
        "setting": dest.events_via, "way": way.way, "basis": way.basis, "reason": way.reason,
        "tracking_api": fact.to_dict() if fact is not None else None,
    }
    if state == "recheck":
        block["reason"] += " (the daily re-check of an absent tracking API is due)"
    return tracking, block


def _sandbox_schema(dest: DestinationConfig) -> tuple[FieldSchema | None, str]:
    """The schema of the sandbox a destination points at; never a real Freshworks account."""
    base = dest.base_url
    if base is None or is_freshworks_https_url(base) or not dest.allow_custom_base_url:
        return None, "the destination is a Freshworks account, which explain never calls"

    async def fetch() -> dict[str, Any]:
        # The same calls the delivery engine makes (delivery/schema_cache.py), minus the budget.
        raw: dict[str, Any] = {"selectors": {}}
        async with FreshsalesClient.from_config(dest) as client:
            for part in schema_parts(dest.product):
                reply = await fetch_part(part, part_request(client, part))
                if reply is not None:
                    add_part(raw, part, reply)
        return raw

    try:
        raw = asyncio.run(fetch())
    except FreshsalesDestinationError as exc:
        return None, f"the sandbox at {base} could not be read ({exc.message})"
    return FieldSchema.from_json(raw, product=dest.product), f"fetched from the sandbox at {base}"


@dataclass(frozen=True)
class PlannerInputs:
    """What the planner is given for one destination outside delivery, and where it came from."""

    settings: DestinationSettings
    schema: FieldSchema
    schema_source: str  # file | store cache | sandbox | built-in default
    schema_detail: str
    events: dict[str, Any]  # the ``events_via`` block of explain's output


def planner_inputs(
    settings: Settings, destination: str, schema_path: Path | None, now: float
) -> PlannerInputs:
    """The planner's settings and schema for `destination` as `explain` finds them (see the
    module's docstring); `import --dry-run` plans with the same."""
    dest = settings.destinations[destination]
    planner_settings = DestinationSettings.build(
        dest.product, dest.app_token is not None, dest.mapping,
        events_via=dest.events_via, events_activity_type=dest.events_activity_type,
        event_max_age_days=dest.event_max_age_days,
    )
    if schema_path is not None:
        schema = FieldSchema.from_json(_read_json(schema_path, "schema"), product=dest.product)
        schema_source, schema_detail = "file", str(schema_path)
    else:
        cached, why = _cached_schema(settings, destination, dest.product)
        fetched: FieldSchema | None = None
        if cached is None:
            fetched, fetch_why = _sandbox_schema(dest)
            why = f"{why}; {fetch_why}"
        if cached is not None:
            schema, schema_source, schema_detail = cached, "store cache", why
        elif fetched is not None:
            schema, schema_source, schema_detail = fetched, "sandbox", fetch_why
        else:
            schema = default_schema(dest.product)
            schema_source = "built-in default"
            schema_detail = f"built-in default (selector ids are placeholders; {why})"
    tracking, events_block = _events_via(dest, _learned_tracking(settings, destination), now)
    return PlannerInputs(
        replace(planner_settings, tracking_api=tracking), schema, schema_source, schema_detail,
        events_block,
    )


def _too_old(event: Any, max_age_days: float | None, now: float) -> str | None:
    """Why delivery would filter `event` for its age now (`event_max_age_days`), else None.
    Its time is its ``timestamp`` (else ``originalTimestamp``) as sent: explain reads the
    message as given, without the receive time that ingest's skew correction would use."""
    if max_age_days is None or not isinstance(event, dict):
        return None
    when = parse_time(event.get("timestamp")) or parse_time(event.get("originalTimestamp"))
    if when is None:
        return None
    return too_old(str(event.get("type")), when.timestamp(), now, max_age_days)


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
    inputs = planner_inputs(settings, destination, schema_path, time.time())
    planner_settings, schema = inputs.settings, inputs.schema
    schema_source, schema_detail, events_block = inputs.schema_source, inputs.schema_detail, inputs.events
    warnings = check_settings(planner_settings, schema)
    aged = _too_old(event, planner_settings.event_max_age_days, time.time())
    if aged is not None:  # as delivery does: finished before planning (core/event_age.py)
        result = Plan(status=PlanStatus.FILTERED, reason=aged, reason_code=REASON_CODE)
    else:
        result = plan(event, planner_settings, schema, identity)
    out = result.to_json()
    out["destination"] = destination
    out["product"] = dest.product
    out["schema_source"] = schema_source
    out["schema"] = schema_detail
    out["warnings"] = warnings
    out["events_via"] = events_block
    return out


def explain_command(
    event_file: Annotated[Path, typer.Argument(help="A JSON file holding one Segment message.")],
    config: Annotated[Path, typer.Option("--config", help="The service's TOML configuration.")],
    destination: Annotated[
        str | None, typer.Option("--destination", help="The destination (destinations.NAME) to plan for.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema",
            help=(
                "A JSON field schema (default: the one cached in the store, else the "
                "sandbox's when the destination points at one, else the built-in one)."
            ),
        ),
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
