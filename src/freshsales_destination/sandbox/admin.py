"""Inspection and control routes under ``/_sandbox`` (same API key, never rate limited)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshsales_destination.sandbox.bulk import settle_due
from freshsales_destination.sandbox.errors import validation_error
from freshsales_destination.sandbox.web import json_response, read_json, sandbox_state


async def get_state(request: Request) -> Response:
    state = sandbox_state(request)
    with state.lock:
        settle_due(state)
        body: dict[str, Any] = {
            "options": state.options.public_dict(),
            "records": state.snapshot(),
            "counts": {kind: len(rows) for kind, rows in state.records.items()},
            "selectors": state.selectors,
            "faults": state.faults.to_json(),
            "scripts": [s.to_json() for s in state.faults.scripts],
            "api_call_count": state.api_call_count(),
            "bulk_jobs": {"total": len(state.bulk.jobs),
                          "pending": sum(1 for job in state.bulk.jobs.values() if not job.settled)},
        }
    return json_response(200, body)


async def get_requests(request: Request) -> Response:
    state = sandbox_state(request)
    since = request.query_params.get("since", "0")
    after = int(since) if since.isdigit() else 0
    with state.lock:
        entries = [e.to_json() for e in state.requests if e.seq > after]
        count = state.api_call_count()
    return json_response(200, {"requests": entries, "api_call_count": count})


async def post_script(request: Request) -> Response:
    state = sandbox_state(request)
    body = await read_json(request, state, allow_empty=False)
    with state.lock:
        script = state.faults.add_script(body)
        scripts = [s.to_json() for s in state.faults.scripts]
    return json_response(200, {"queued": len(script.answers), "scripts": scripts})


async def get_scripts(request: Request) -> Response:
    state = sandbox_state(request)
    with state.lock:
        return json_response(200, {"scripts": [s.to_json() for s in state.faults.scripts]})


async def delete_scripts(request: Request) -> Response:
    state = sandbox_state(request)
    with state.lock:
        state.faults.clear_scripts()
    return json_response(200, {"scripts": []})


async def post_faults(request: Request) -> Response:
    state = sandbox_state(request)
    body = await read_json(request, state)
    with state.lock:
        state.faults.configure(body)
        return json_response(200, {"faults": state.faults.to_json()})


async def get_faults(request: Request) -> Response:
    state = sandbox_state(request)
    with state.lock:
        return json_response(200, {"faults": state.faults.to_json()})


async def post_reset(request: Request) -> Response:
    state = sandbox_state(request)
    body = await read_json(request, state)
    keep_log = body.get("keep_log", False)
    if not isinstance(keep_log, bool):
        raise validation_error("keep_log must be true or false")
    state.reset(keep_log=keep_log)
    return json_response(200, {"reset": True})


async def post_salesperson_edit(request: Request) -> Response:
    """``POST /_sandbox/salesperson/{kind}/{id}`` ``{"custom_field": {...}, "sales_accounts": [...]}``:
    a salesperson's edit in the web app (see ``sandbox/crm_user.py``)."""
    from freshsales_destination.sandbox.crm_user import salesperson_edit

    state = sandbox_state(request)
    body = await read_json(request, state, allow_empty=False)
    custom, links = body.get("custom_field"), body.get("sales_accounts")
    if custom is not None and not isinstance(custom, dict):
        raise validation_error("custom_field must be an object")
    if links is not None and not isinstance(links, list):
        raise validation_error("sales_accounts must be a list")
    record_id = request.path_params["id"]
    record = salesperson_edit(state, request.path_params["kind"], record_id,
                              custom_field=custom, sales_accounts=links)
    return json_response(200, {"id": record["id"], "custom_field": record.get("custom_field"),
                               "sales_accounts": record.get("_sales_accounts")})


def admin_routes() -> list[Route]:
    return [
        Route("/state", get_state, methods=["GET"]),
        Route("/requests", get_requests, methods=["GET"]),
        Route("/script", post_script, methods=["POST"]),
        Route("/script", get_scripts, methods=["GET"]),
        Route("/script", delete_scripts, methods=["DELETE"]),
        Route("/faults", post_faults, methods=["POST"]),
        Route("/faults", get_faults, methods=["GET"]),
        Route("/reset", post_reset, methods=["POST"]),
        Route("/salesperson/{kind}/{id:int}", post_salesperson_edit, methods=["POST"]),
    ]
