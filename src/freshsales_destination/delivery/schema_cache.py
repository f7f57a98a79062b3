"""The Freshsales field schema and selectors of a destination, cached in the store with a TTL.

Fetching the schema costs about ten calls; it is done once per TTL (shared by all workers
through the store) and again when Freshsales rejects a field we believed existed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from freshsales_destination.core.schema import SELECTOR_KINDS, FieldSchema, MappingConfigError
from freshsales_destination.delivery.executor import Budget
from freshsales_destination.delivery.offloop import store_call
from freshsales_destination.freshsales.client import FreshsalesClient, Reply
from freshsales_destination.freshsales.errors import NotFound, PermanentError
from freshsales_destination.store.base import Store

NAMESPACE = "schema"


class SchemaCache:
    def __init__(
        self,
        *,
        store: Store,
        destination: str,
        client: FreshsalesClient,
        budget: Budget,
        product: str,
        ttl_seconds: float = 24 * 3600,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.destination = destination
        self.client = client
        self.budget = budget
        self.product = product
        self.ttl = ttl_seconds
        self.now = now
        self._schema: FieldSchema | None = None
        self._lock = asyncio.Lock()
        self._fetched_at = 0.0
        self.fetches = 0

    def invalidate(self) -> None:
        self._schema = None
        self.store.kv_put(NAMESPACE, self._progress_key, b"{}", now=self.now())
        self.store.kv_put(NAMESPACE, self.destination, orjson.dumps({"fetched_at": 0}), now=self.now())

    async def get(self) -> FieldSchema:
        # One fetch at a time: the workers of a destination share its result.
        async with self._lock:
            return await self._get()

    async def _get(self) -> FieldSchema:
        now = self.now()
        if self._schema is not None and now - self._fetched_at < self.ttl:
            return self._schema
        cached = await store_call(self.store.kv_get, NAMESPACE, self.destination)
        if cached is not None:
            data = orjson.loads(cached)
            fetched_at = float(data.get("fetched_at") or 0)
            if now - fetched_at < self.ttl and isinstance(data.get("schema"), dict):
                try:
                    self._schema = FieldSchema.from_json(data["schema"], product=self.product)
                except MappingConfigError:
                    # An unreadable copy is fetched again, never kept for a day.
                    await store_call(self.invalidate)
                else:
                    self._fetched_at = fetched_at
                    return self._schema
        raw = await self._fetch()
        try:
            schema = FieldSchema.from_json(raw, product=self.product)
        except MappingConfigError:
            await store_call(self.invalidate)  # the next probe fetches afresh
            raise
        await store_call(
            self.store.kv_put, NAMESPACE, self.destination,
            orjson.dumps({"fetched_at": now, "schema": raw}), now=now,
        )
        self._schema = schema
        self._fetched_at = now
        return self._schema

    async def _fetch(self) -> dict[str, Any]:
        """Fetch every part, saving each in the store as it arrives.

        The fetch takes about ten calls, more than a small or nearly spent budget grants at
        once: an interrupted fetch resumes where it stopped instead of starting over (which
        never finished under a budget of fewer calls per minute than parts, and wasted them).
        """
        self.fetches += 1
        progress = await store_call(self._load_progress)
        raw: dict[str, Any] = progress["raw"]
        raw.setdefault("selectors", {})
        done: list[str] = progress["done"]
        for part in schema_parts(self.product):
            if part in done:
                continue
            ticket = await self.budget.acquire("record")
            reply = await fetch_part(
                part, self._observed(part_request(self.client, part), ticket)
            )
            if reply is not None:
                add_part(raw, part, reply)
            await store_call(self._save_progress, progress, part)
        await store_call(self.store.kv_put, NAMESPACE, self._progress_key, b"{}", now=self.now())
        return raw

    async def _observed(self, call: Awaitable[Reply], ticket: int) -> Reply:
        try:
            reply = await call
        except Exception as exc:
            # A 429 here must pause the account like any other.
            await store_call(self.budget.observe, exc, ticket)
            raise
        await store_call(self.budget.observe, reply, ticket)
        return reply

    @property
    def _progress_key(self) -> str:
        return f"{self.destination}#partial"

    def _load_progress(self) -> dict[str, Any]:
        fresh: dict[str, Any] = {"started_at": self.now(), "raw": {}, "done": []}
        cached = self.store.kv_get(NAMESPACE, self._progress_key)
        if not cached:
            return fresh
        try:
            data = orjson.loads(cached)
        except orjson.JSONDecodeError:
            return fresh
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("raw"), dict)
            or not isinstance(data.get("done"), list)
            or self.now() - float(data.get("started_at") or 0) >= self.ttl
        ):
            return fresh
        return data

    def _save_progress(self, progress: dict[str, Any], part: str) -> None:
        progress["done"].append(part)
        self.store.kv_put(NAMESPACE, self._progress_key, orjson.dumps(progress), now=self.now())


_SELECTOR = "selector:"


def schema_parts(product: str) -> list[str]:
    """The calls a schema fetch makes, in order: field settings per entity, then selectors."""
    entities = ["contacts", "sales_accounts", "deals"]
    if product == "classic":
        entities.insert(0, "leads")
    return [*entities, *(f"{_SELECTOR}{kind}" for kind in SELECTOR_KINDS)]


def part_request(client: FreshsalesClient, part: str) -> Awaitable[Reply]:
    if part.startswith(_SELECTOR):
        return client.get_selector(part.removeprefix(_SELECTOR))
    return client.get_fields(part)


async def fetch_part(part: str, call: Awaitable[Reply]) -> Reply | None:
    """Await one part's call; None for a selector the account does not have."""
    try:
        return await call
    except (NotFound, PermanentError):
        if part.startswith(_SELECTOR):
            return None
        raise


def add_part(raw: dict[str, Any], part: str, reply: Reply) -> None:
    """Put one part's answer where `FieldSchema.from_json` reads it."""
    if part.startswith(_SELECTOR):
        kind = part.removeprefix(_SELECTOR)
        body = reply.body if isinstance(reply.body, dict) else reply.data
        items = selector_items(body, kind)
        if items is not None:
            raw.setdefault("selectors", {})[kind] = items
        return
    fields = reply.data.get("fields") if isinstance(reply.data, dict) else None
    if isinstance(fields, list):
        raw[part] = {"fields": fields}


def selector_items(body: Any, kind: str) -> list[Any] | None:
    """The list in a `GET /api/selector/<kind>` answer (owners come as `users`)."""
    if not isinstance(body, dict):
        return None
    for key in (kind, "users" if kind == "owners" else kind):
        value = body.get(key)
        if isinstance(value, list):
            return value
    for value in body.values():
        if isinstance(value, list):
            return value
    return None
