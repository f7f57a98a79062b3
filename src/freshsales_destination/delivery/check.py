"""``freshsales-destination check``: can each configured destination be delivered to?

For each destination (or one, ``--destination``): reach the account, validate the API key,
fetch and summarise the field schema (custom fields per entity, selectors), show what delivery
has learned about the account so far and its health, the hourly budget left according to the
answers' headers, and whether an app token is configured (never the token itself).

The calls are those of a schema fetch (``schema_cache.schema_parts``: one per entity's fields
and one per selector, about ten); the first one validates the key, and a failure of the first
stops there, so a wrong key costs one call. The calls are taken from the account's shared
budget in the store, as delivery's are. Exit code 0 only when every destination is usable.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx2
import orjson
import typer

from freshsales_destination.admin.locate import DEFAULT_DATA_DIR, find_target
from freshsales_destination.config import DestinationConfig, Settings
from freshsales_destination.core.bulk import describe_bulk
from freshsales_destination.core.schema import FieldSchema, MappingConfigError
from freshsales_destination.delivery.budget import BudgetExhausted, StoreBudget
from freshsales_destination.delivery.bulk import NAMESPACE as BULK_JOBS
from freshsales_destination.delivery.events_route import EventsRoute
from freshsales_destination.delivery.health import NAMESPACE as HEALTH_NAMESPACE
from freshsales_destination.delivery.health import read_health, schema_fault
from freshsales_destination.delivery.learned import BULK_API, LearnedFacts
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.delivery.schema_cache import (
    add_part,
    fetch_part,
    part_request,
    schema_parts,
)
from freshsales_destination.errors import ConfigError, FreshsalesDestinationError
from freshsales_destination.freshsales.client import FreshsalesClient, Reply
from freshsales_destination.freshsales.errors import FreshsalesError
from freshsales_destination.freshsales.ratelimit_headers import RateLimitInfo
from freshsales_destination.store.base import Store
from freshsales_destination.store.factory import open_store

# States in which a destination can be delivered to.
USABLE = frozenset({"healthy", "rate_limited"})


@dataclass
class CheckResult:
    name: str
    product: str
    base_url: str
    state: str = "healthy"
    detail: str = ""
    calls: int = 0
    app_token: bool = False
    custom_fields: dict[str, list[str]] = field(default_factory=dict)
    selectors: dict[str, int] = field(default_factory=dict)
    rate: RateLimitInfo | None = None
    learned: dict[str, dict[str, Any]] = field(default_factory=dict)
    delivery: dict[str, Any] | None = None
    events_via: str | None = None
    """Which way track and page events go (configured or learned), as `status` says it."""
    budget: dict[str, Any] | None = None
    """The account's budget as delivery spends it (effective limits and their sources)."""
    bulk: dict[str, Any] | None = None
    """Whether record writes go as bulk upsert jobs (``core/bulk.py`` ``describe_bulk``)."""
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.state in USABLE

    def to_dict(self) -> dict[str, Any]:
        rate = self.rate
        return {
            "destination": self.name,
            "product": self.product,
            "base_url": self.base_url,
            "usable": self.usable,
            "state": self.state,
            "detail": self.detail or None,
            "advice": None if self.usable else advice(self.name, self.state, self.detail),
            "calls": self.calls,
            "app_token": "configured" if self.app_token else "not configured",
            "schema": {"custom_fields": self.custom_fields, "selectors": self.selectors}
            if self.custom_fields or self.selectors else None,
            "rate_limit": {
                "limit": rate.limit if rate else None,
                "remaining": rate.remaining if rate else None,
            },
            "budget": self.budget,
            "events_via": self.events_via,
            "bulk": self.bulk,
            "learned": self.learned,
            "delivery": self.delivery,
            "notes": self.notes,
        }


def advice(name: str, state: str, detail: str) -> str:
    upper = name.upper()
    if state == "auth_failed":
        return (
            f"auth failed: Freshsales refused the API key; set destinations.{name}.api_key "
            f"(or FSD_DESTINATIONS__{upper}__API_KEY) to a valid key"
        )
    if state == "unreachable":
        return (
            f"unreachable: check destinations.{name}.domain / base_url and the network"
        )
    if state == "misconfigured":
        return f"misconfigured: fix destinations.{name}.domain / base_url"
    return ""


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def check_destination(
    name: str,
    config: DestinationConfig,
    store: Store | None,
    *,
    now: float,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> CheckResult:
    base_url = config.resolved_base_url()
    result = CheckResult(name, config.product, base_url, app_token=config.app_token is not None)
    if store is not None:
        route = EventsRoute(
            store, name, events_via=config.events_via, has_app_token=config.app_token is not None
        )
        result.events_via = await store_call(route.describe, now)
        facts = await store_call(LearnedFacts(store, name).all)
        bulk_fact = facts[BULK_API] if BULK_API in facts else None
        in_use, why = describe_bulk(
            config.product, config.bulk, bulk_fact.value if bulk_fact else None,
            bulk_fact.recheck_at if bulk_fact else None, now, config.bulk_min_records,
        )
        raw_jobs = await store_call(store.kv_get, BULK_JOBS, name)
        pending_jobs = len(orjson.loads(raw_jobs).get("jobs", [])) if raw_jobs else 0
        result.bulk = {"in_use": in_use, "detail": why, "pending_jobs": pending_jobs}
        for fact_name, fact in facts.items():
            result.learned[fact_name] = {
                "value": fact.value, "evidence": fact.evidence,
                "learned_at": _iso(fact.learned_at), "recheck_at": _iso(fact.recheck_at),
            }
        health = await store_call(read_health, store, name)
        known = await store_call(store.kv_get, HEALTH_NAMESPACE, name) is not None
        result.delivery = {
            "state": health.state if known else "unknown",
            "detail": health.detail or None,
            "last_success_at": _iso(health.last_success_at),
        }
    try:
        client = FreshsalesClient.from_config(config, transport=transport)
    except ConfigError as exc:
        result.state, result.detail = "misconfigured", exc.message
        return result
    budget: StoreBudget | None = None
    if store is not None:
        from freshsales_destination.delivery.engine import budget_account_key

        budget = StoreBudget(
            store=store, account=budget_account_key(config),
            per_hour=config.rate_limit_per_hour, per_minute=config.rate_limit_per_minute,
        )
    raw: dict[str, Any] = {"selectors": {}}
    try:
        for part in schema_parts(config.product):
            ticket = await budget.acquire("record") if budget is not None else None
            result.calls += 1
            try:
                reply = await fetch_part(
                    part, _observed(budget, part_request(client, part), ticket)
                )
            except FreshsalesError as exc:
                if exc.rate is not None and exc.rate.present:
                    result.rate = exc.rate
                result.state, result.detail = schema_fault(exc)
                if result.calls > 1 and result.state not in ("auth_failed", "rate_limited"):
                    result.detail = f"{part}: {result.detail}"
                break
            if reply is not None:
                add_part(raw, part, reply)
                if reply.rate.present:
                    result.rate = reply.rate
    except BudgetExhausted as exc:
        result.notes.append(
            f"the account's call budget is spent (as delivery counts it); "
            f"try again in {exc.wait_seconds:.0f} s"
        )
        if result.calls == 0:
            result.state, result.detail = "rate_limited", "no call made: the budget is spent"
    finally:
        await client.aclose()
    if budget is not None:
        result.budget = await store_call(budget.summary)
    if result.state != "healthy":
        return result
    try:
        schema = FieldSchema.from_json(raw, product=config.product)
    except MappingConfigError as exc:
        result.state, result.detail = "misconfigured", f"unusable field schema: {exc.message}"
        return result
    for entity in (key for key in raw if key != "selectors"):
        result.custom_fields[entity] = [f.name for f in schema.entity(entity).fields if f.is_custom]
    for kind, items in sorted(raw.get("selectors", {}).items()):
        result.selectors[kind] = len(items)
    return result


async def _observed(budget: StoreBudget | None, call: Any, ticket: int | None) -> Reply:
    try:
        reply: Reply = await call
    except Exception as exc:
        if budget is not None:
            await store_call(budget.observe, exc, ticket)
        raise
    if budget is not None:
        await store_call(budget.observe, reply, ticket)
    return reply


def render(results: list[CheckResult]) -> str:
    lines: list[str] = []
    for r in results:
        verdict = "usable" if r.usable else "NOT usable"
        lines.append(f"destination {r.name} ({r.product}, {r.base_url}): {verdict}")
        if r.usable:
            lines.append("  API key: valid")
            if r.state == "rate_limited":
                lines.append(f"  rate limited now: {r.detail}")
        else:
            lines.append(f"  {r.state}: {r.detail}")
            lines.append(f"  what to do: {advice(r.name, r.state, r.detail)}")
        if r.custom_fields:
            parts = [
                f"{entity} {len(names)}" + (f" ({', '.join(names)})" if names else "")
                for entity, names in r.custom_fields.items()
            ]
            lines.append("  custom fields: " + "; ".join(parts))
        if r.selectors:
            lines.append(
                "  selectors: " + ", ".join(f"{kind} {n}" for kind, n in r.selectors.items())
            )
        if r.bulk is not None:
            jobs = r.bulk["pending_jobs"]
            lines.append(f"  bulk upsert: {r.bulk['detail']}" + (f"; {jobs} job(s) pending" if jobs else ""))
        if r.learned:
            for fact_name, fact in sorted(r.learned.items()):
                lines.append(
                    f"  learned: {fact_name} = {fact['value']} "
                    f"(evidence: {fact['evidence']}; {fact['learned_at']})"
                )
        else:
            lines.append("  learned: nothing yet (delivery learns from the account's answers)")
        if r.rate is not None and (r.rate.remaining is not None or r.rate.limit is not None):
            left = "?" if r.rate.remaining is None else str(r.rate.remaining)
            limit = "?" if r.rate.limit is None else str(r.rate.limit)
            lines.append(f"  budget: {left} of {limit} calls left (X-RateLimit-Remaining/Limit)")
        else:
            lines.append("  budget: unknown (no rate-limit headers in the answers)")
        if r.budget is not None:
            b = r.budget
            lines.append(
                f"  limits delivery spends by: {b['per_hour']}/h ({b['per_hour_source']}), "
                f"{b['per_minute']}/min ({b['per_minute_source']}); "
                f"{b['used_this_hour']} used this hour"
            )
            if b.get("mismatch"):
                lines.append(f"  note: {b['mismatch']}")
        lines.append(
            "  app token: " + ("configured" if r.app_token else "not configured (no tracking API)")
        )
        if r.events_via is not None:
            lines.append(f"  track and page go by: {r.events_via}")
        if r.delivery is not None:
            if r.delivery["state"] == "unknown":
                lines.append("  delivery: has not called this destination yet")
            else:
                seen = r.delivery["last_success_at"] or "never"
                lines.append(f"  delivery: {r.delivery['state']} (last success: {seen})")
        for note in r.notes:
            lines.append(f"  note: {note}")
        lines.append(f"  calls made: {r.calls}")
    total = sum(r.calls for r in results)
    usable = sum(1 for r in results if r.usable)
    lines.append(
        f"{usable} of {len(results)} destination(s) usable; {total} call(s) made to Freshsales"
    )
    return "\n".join(lines)


def check_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c",
            help="TOML configuration file; without it, the embedded service of --data-dir.",
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(help="Where `serve` without --config keeps its files (used without --config)."),
    ] = DEFAULT_DATA_DIR,
    destination: Annotated[
        str | None, typer.Option("--destination", "-d", help="Check only this destination.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check that each configured destination can be delivered to.

    Reaches the account, validates the API key, summarises the schema, and shows
    learned behaviours, the hourly budget left and whether an app token is set.

    Costs about ten calls per destination (one when the key is refused) and
    says how many. Exit code 0 only when every destination checked is usable,
    1 when one is not, 2 for a bad configuration. Never prints a secret.
    Without --config it checks the embedded service that `serve` keeps in --data-dir.
    """
    try:
        # As the other operator commands: --config, else the embedded service (admin/locate.py).
        settings: Settings = find_target(config, data_dir).settings
        transport: httpx2.AsyncBaseTransport | None = None
        if config is None:
            # The embedded destination is its own sandbox, reached in-process as `serve`
            # reaches it (its host name is never resolved).
            from freshsales_destination.service import embedded_sandbox

            sandbox = settings.destinations["sandbox"]
            transport = httpx2.ASGITransport(app=embedded_sandbox(
                data_dir.resolve(), sandbox.api_key.get_secret_value(),
                sandbox.app_token.get_secret_value() if sandbox.app_token else "",
            ))
    except FreshsalesDestinationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    names = sorted(settings.destinations)
    if destination is not None:
        if destination not in settings.destinations:
            typer.echo(f"error: no destination {destination!r} in the configuration", err=True)
            raise typer.Exit(2)
        names = [destination]
    if not names:
        typer.echo("error: the configuration has no [destinations.*]", err=True)
        raise typer.Exit(2)
    store: Store | None
    try:
        store = open_store(settings.store.url, pool_size=settings.store.pool_size)
    except FreshsalesDestinationError as exc:
        store = None
        typer.echo(f"warning: the store cannot be opened ({exc.message}); "
                   "learned behaviours and delivery health are not shown", err=True)

    async def run() -> list[CheckResult]:
        return [
            await check_destination(
                name, settings.destinations[name], store, now=time.time(), transport=transport
            )
            for name in names
        ]

    try:
        results = asyncio.run(run())
    finally:
        if store is not None:
            store.close()
    if as_json:
        typer.echo(json.dumps({
            "usable": all(r.usable for r in results),
            "calls": sum(r.calls for r in results),
            "destinations": [r.to_dict() for r in results],
        }, indent=2))
    else:
        typer.echo(render(results))
    if not all(r.usable for r in results):
        raise typer.Exit(1)
