"""The OpenAPI 3.1 description of the admin API and the ingest API (``GET /admin/v1/openapi.json``).

The admin answers' schemas are derived from the read model's dataclasses (admin/views.py), so
they follow the code. tests/admin/test_openapi.py validates the document and checks that every
mounted admin route is described (and nothing else under /admin/v1); tests/admin/test_api.py
validates real answers against these schemas.

It is served behind the admin token like every ``/admin/v1/`` route: it holds no data and no
secret, but it maps the operator surface, and whoever may use the API holds the token anyway.
"""

from __future__ import annotations

import dataclasses
import types
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from freshsales_destination import __version__
from freshsales_destination.admin import params, views

_SCHEMA_CLASSES = (
    views.MessageSummary, views.JourneyStep, views.Journey, views.Bucket,
    views.DestinationStats, views.FailureGroup, views.DestinationOverview,
)


def _type_schema(hint: Any) -> dict[str, Any]:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        schemas = [_type_schema(a) for a in args if a is not type(None)]
        if type(None) in args:
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if origin is Literal:
        return {"type": "string", "enum": list(get_args(hint))}
    if origin in (list, tuple):
        items = [a for a in get_args(hint) if a is not Ellipsis]
        return {"type": "array", "items": _type_schema(items[0]) if items else {}}
    if origin is dict:
        args = get_args(hint)
        return {"type": "object", "additionalProperties": _type_schema(args[1]) if args else {}}
    if hint is Any:
        return {}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return {"$ref": f"#/components/schemas/{hint.__name__}"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"no JSON schema for {hint!r}")


def dataclass_schema(cls: type) -> dict[str, Any]:
    """A JSON schema of `cls`'s fields as orjson writes them."""
    hints = get_type_hints(cls, vars(views))
    fields = dataclasses.fields(cls)
    return {
        "type": "object",
        "properties": {f.name: _type_schema(hints[f.name]) for f in fields},
        "required": [f.name for f in fields],
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        "required": ["code", "message"],
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    """The refusals a route can give (401 and 503 always)."""
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in sorted({401, 503, *statuses})}


def _admin_get(
    summary: str, schema: dict[str, Any], query: list[dict[str, Any]], *extra_errors: int
) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["admin"], "summary": summary, "parameters": query,
            "responses": {"200": _json(schema, "OK"), **_errors(400, *extra_errors)},
        }
    }


def _admin_post(
    summary: str, body: dict[str, Any], schema: dict[str, Any], *extra_errors: int
) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["admin"], "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": _json(schema, "OK"), **_errors(400, 403, 413, 415, *extra_errors)},
        }
    }


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_TIME_TEXT = params.TIME_ACCEPTED
_TIME: dict[str, Any] = {"anyOf": [{"type": "number"}, {"type": "string"}], "description": _TIME_TEXT}
_TIME_Q = {"type": "string", "description": _TIME_TEXT}


def _admin_paths() -> dict[str, Any]:
    search_query = [
        _q("destination", "destination name"),
        _q("user_id", "userId, exactly"),
        _q("anonymous_id", "anonymousId, exactly"),
        _q("email", "traits.email, properties.email or context.traits.email (any case)"),
        _q("message_id", "the event's own messageId"),
        _q("status", "the message's status", {"type": "string", "enum": list(params.STATUSES)}),
        _q("type", "the message's type", {"type": "string", "enum": list(params.MESSAGE_TYPES)}),
        _q("reason", "a part of the discard, filter or failure reason"),
        _q("since", "received at or after", _TIME_Q),
        _q("until", "received before", _TIME_Q),
        _q("limit", "page size", {"type": "integer", "minimum": 1,
                                  "maximum": params.MAX_LIMIT, "default": params.DEFAULT_LIMIT}),
        _q("cursor", "next_cursor of the previous page, unchanged (keep the same filters)"),
    ]
    action_body = {
        "type": "object", "additionalProperties": False,
        "description": "at least one of ids, destination, reason, since; or {\"all\": true}",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer", "minimum": 1},
                    "maxItems": params.MAX_IDS, "minItems": 1},
            "destination": {"type": "string"},
            "reason": {"type": "string", "description": "a part of the failure reason"},
            "since": {**_TIME, "description": f"received at or after: {_TIME_TEXT}"},
            "all": {"type": "boolean"},
        },
    }
    changed = {
        "type": "object", "required": ["action", "changed"],
        "properties": {"action": {"type": "string", "enum": ["retry", "drop"]},
                       "changed": {"type": "integer", "minimum": 0}},
    }
    explain_body = {
        "oneOf": [
            {"type": "object", "required": ["id"], "additionalProperties": False,
             "properties": {"id": {"type": "integer", "minimum": 1}}},
            {"type": "object", "required": ["message_id"], "additionalProperties": False,
             "properties": {"message_id": {"type": "string"}, "destination": {"type": "string"}}},
            {"type": "object", "required": ["event"], "additionalProperties": False,
             "properties": {"event": _ref("SegmentMessage"), "destination": {"type": "string"}}},
            _ref("SegmentMessage"),
        ],
    }
    p = "/admin/v1"
    return {
        f"{p}/openapi.json": _admin_get("This description", {"type": "object"}, []),
        f"{p}/destinations": _admin_get(
            "Each destination's health, budget, backlog, drain estimate and learned facts",
            {"type": "object", "required": ["destinations"], "properties": {
                "destinations": {"type": "array", "items": _ref("DestinationOverview")}}},
            [],
        ),
        f"{p}/messages": _admin_get(
            "Search messages, newest first, cursor-paginated",
            {"type": "object", "required": ["messages", "next_cursor"], "properties": {
                "messages": {"type": "array", "items": _ref("MessageSummary")},
                "next_cursor": {"type": ["string", "null"],
                                "description": "null on the last page"}}},
            search_query,
        ),
        f"{p}/messages/{{id}}": {
            "get": {
                "tags": ["admin"], "summary": "One message's journey",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 1},
                                "description": "the message's id (MessageSummary.id)"}],
                "responses": {"200": _json(_ref("Journey"), "OK"), **_errors(400, 404)},
            }
        },
        f"{p}/stats": _admin_get(
            "Counts per destination and time bucket; delivery latency p50/p95",
            {"type": "object", "required": ["window", "destinations"], "properties": {
                "window": {"type": "string", "enum": list(params.WINDOWS)},
                "destinations": {"type": "array", "items": _ref("DestinationStats")}}},
            [_q("window", "1h (5-minute buckets), 24h (hourly) or 7d (6-hourly)",
                {"type": "string", "enum": list(params.WINDOWS), "default": "24h"})],
        ),
        f"{p}/failures": _admin_get(
            "Failure and discard reasons grouped, most frequent first",
            {"type": "object", "required": ["failures"], "properties": {
                "failures": {"type": "array", "items": _ref("FailureGroup")}}},
            [_q("destination", "destination name"), _q("since", "finished at or after (those waiting for a retry are listed whatever their age)", _TIME_Q)],
        ),
        f"{p}/dead-letters/retry": _admin_post(
            "Put matching dead letters back to pending", action_body, changed),
        f"{p}/dead-letters/drop": _admin_post(
            "Mark matching dead letters dropped (kept, never delivered)", action_body, changed),
        f"{p}/explain": _admin_post(
            "What the planner does with a posted event or a stored message "
            "(?destination= picks the destination of a bare posted event)",
            explain_body, _ref("Explanation"), 404),
    }


_INGEST_ERRORS = {
    str(s): {"$ref": f"#/components/responses/I{s}"} for s in (400, 401, 413, 429, 503)
}


def _ingest_post(summary: str, body: dict[str, Any], security: list[Any]) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["ingest"], "summary": summary, "security": security,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": body}, "text/plain": {"schema": body}}},
            "responses": {"200": {"$ref": "#/components/responses/Success"}, **_INGEST_ERRORS},
        }
    }


def _ingest_paths() -> dict[str, Any]:
    write_key: list[Any] = [{"writeKey": []}, {}]  # Basic auth, or writeKey in the body
    message = _ref("SegmentMessage")
    paths: dict[str, Any] = {
        f"/v1/{kind}": _ingest_post(
            f"Segment HTTP Tracking API: {kind} (also /v1/{kind[0]})", message, write_key)
        for kind in params.MESSAGE_TYPES
        if kind != "delete"  # stored (from a batch or a webhook), but no /v1/delete path
    }
    batch = {"type": "object", "required": ["batch"], "properties": {
        "batch": {"type": "array", "items": message}, "writeKey": {"type": "string"}}}
    paths["/v1/batch"] = _ingest_post("A batch of messages (also /v1/b)", batch, write_key)
    paths["/v1/import"] = _ingest_post("The same as /v1/batch", batch, write_key)
    paths["/webhook/{writeKey}"] = {
        "post": {
            "tags": ["ingest"],
            "summary": "Segment Webhooks destination: one message or an array of them; "
                       "X-Signature (HMAC-SHA1 of the body) when the source has a webhook_secret",
            "parameters": [{"name": "writeKey", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "anyOf": [message, {"type": "array", "items": message}]}}}},
            "responses": {"200": {"$ref": "#/components/responses/Success"}, **_INGEST_ERRORS},
        }
    }
    paths["/v1/projects/{writeKey}/settings"] = {
        "get": {
            "tags": ["ingest"], "summary": "analytics.js settings pointing at this service",
            "parameters": [{"name": "writeKey", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "analytics.js CDN settings"),
                          "404": {"$ref": "#/components/responses/I404"}},
        }
    }
    for path, what in (("/healthz", "the process answers"), ("/readyz", "the store is writable")):
        paths[path] = {"get": {
            "tags": ["health"], "summary": what,
            "responses": {"200": _json({"type": "object"}, "OK"),
                          **({"503": {"$ref": "#/components/responses/I503"}}
                             if path == "/readyz" else {})},
        }}
    return paths


@cache
def _spec() -> dict[str, Any]:
    schemas = {cls.__name__: dataclass_schema(cls) for cls in _SCHEMA_CLASSES}
    schemas["Error"] = _error_schema()
    schemas["Explanation"] = {
        "type": "object",
        "description": "what `freshsales-destination explain` prints: the planned operations, "
                       "the explanation of every trait, and what it was planned with",
        "required": ["operations", "explanation", "destination", "product", "schema_source",
                     "warnings", "events_via"],
        "properties": {
            "operations": {"type": "array", "items": {"type": "object"}},
            "explanation": {"type": "object", "required": ["status", "entries"], "properties": {
                "status": {"type": "string"}, "reason_code": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
                "entries": {"type": "array", "items": {"type": "object"}}}},
            "destination": {"type": "string"},
            "product": {"type": "string", "enum": ["suite", "classic"]},
            "schema_source": {"type": "string"},
            "schema": {"type": "string"},
            "warnings": {"type": "array"},
            "events_via": {"type": "object"},
            "message": {"type": "integer", "description": "the stored message's id, when one "
                        "was explained"},
        },
    }
    schemas["SegmentMessage"] = {
        "type": "object", "description": "a Segment message (segment-spec): type, userId or "
        "anonymousId, traits, event, properties, context, timestamp, messageId, ...",
        "properties": {"type": {"type": "string", "enum": list(params.MESSAGE_TYPES)},
                       "userId": {}, "anonymousId": {}, "messageId": {"type": "string"}},
    }
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    responses: dict[str, Any] = {
        f"E{s}": {"description": d, **error} for s, d in (
            (400, "bad parameters or body"), (401, "no or a wrong admin token"),
            (403, "a cross-site request, or a session request without its CSRF token"),
            (404, "no such message"), (413, "body too large"),
            (415, "the body is not application/json"),
            (503, "no admin token is configured (server.admin_token)"))
    }
    responses |= {
        f"I{s}": {"description": d, **error} for s, d in (
            (400, "invalid JSON or message"), (401, "unknown write key or bad signature"),
            (404, "unknown path or write key"), (413, "too large"),
            (429, "too many messages waiting (Retry-After)"), (503, "the store is unavailable"))
    }
    responses["Success"] = _json(
        {"type": "object", "required": ["success"], "properties": {"success": {"const": True}}},
        "stored (committed) before this answer",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "freshsales-destination",
            "version": __version__,
            "description": "The admin API (/admin/v1, Bearer admin token) and the "
                           "Segment-compatible ingest API (/v1, /webhook).",
        },
        "tags": [{"name": "admin"}, {"name": "ingest"}, {"name": "health"}],
        "security": [{"adminToken": []}],
        "paths": _admin_paths() | {
            path: {method: {**op, "security": op.get("security", [])}
                   for method, op in item.items()}
            for path, item in _ingest_paths().items()
        },
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "server.admin_token"},
                "writeKey": {"type": "http", "scheme": "basic",
                             "description": "the source's write key as the user name, "
                                            "empty password"},
            },
        },
    }


def spec() -> dict[str, Any]:
    """The OpenAPI document (built once per process)."""
    return _spec()
