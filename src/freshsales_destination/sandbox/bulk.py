"""Bulk upsert jobs (reference §13.1): ``POST /api/<entity>/bulk_upsert`` and
``GET /api/job_statuses/<id>``.

A POST checks the request's shape at once (a list under the entity's key, at most
``bulk_max_items`` objects) and answers with a ``job_status_url``; the records are written when
the job finishes, ``bulk_job_seconds`` later on the sandbox clock (a job is settled by the first
request that sees it due: any API call, or the admin state route). Each item names its match key
beside a ``data`` object (``{"emails": ..., "data": {...}}``, ``{"id": ..., "data": {...}}``;
accounts and deals by ``name`` or ``id``) and is written exactly as the single-record upsert or
update would write it, validation included: an item that route would refuse is counted as
failed, with the route's messages, in ``detailed_failure_report``. The poll answers
``{"status", "progress", "job_type_name", "created_at", "status_updated_at", "data"}`` where
``data`` is a JSON *string* (as reported) holding ``record_status`` and
``detailed_failure_report``; like every source, it never shows the ids of the records written.
``"SUCCESS"`` is the only status value seen in public sources; the sandbox says ``"IN_PROGRESS"``
before that (a guess, documented in docs/sandbox.md).

Switches: ``bulk_api="absent"`` answers 404 on the bulk paths (Classic always does: no source
calls a Classic bulk path); ``bulk_405s=N`` answers 405 to the next N bulk POSTs (the transient
405 production clients retry); ``bulk_links="dropped"`` ignores ``sales_accounts`` inside bulk
contact items (linking in a bulk item is unattested).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from freshsales_destination.sandbox import companies, people
from freshsales_destination.sandbox.bulk_jobs import BulkJob
from freshsales_destination.sandbox.clock import iso_timestamp
from freshsales_destination.sandbox.errors import ApiError, not_found, validation_error
from freshsales_destination.sandbox.records import as_id, get_or_404
from freshsales_destination.sandbox.state import SandboxState

# entity path -> (body key, job type name, match keys an item may use)
BULK_ENTITIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "contacts": ("contacts", "contact_bulk_upsert", ("emails", "id")),
    "sales_accounts": ("sales_accounts", "sales_account_bulk_upsert", ("name", "id")),
    "deals": ("deals", "deal_bulk_upsert", ("name", "id")),
}


def _item_key(item: Any, allowed: tuple[str, ...]) -> tuple[str, Any] | None:
    if not isinstance(item, dict):
        return None
    for key in allowed:
        if key in item:
            return key, item[key]
    return None


def _write_item(state: SandboxState, entity: str, key: str, value: Any, data: dict[str, Any]) -> None:
    """Write one item as the single-record route would; raises the route's ``ApiError``."""
    if entity == "contacts" and state.options.bulk_links == "dropped":
        data = {k: v for k, v in data.items() if k not in ("sales_accounts", "sales_account_id", "sales_account")}
    if key == "id":
        record_id = as_id(value)
        if record_id is None:
            raise validation_error("The value for id is invalid.")
        get_or_404(state, entity, record_id)
        update: dict[str, Callable[[SandboxState, int, dict[str, Any]], Any]] = {
            "contacts": lambda s, i, b: people.update_contact(s, i, {"contact": b}),
            "sales_accounts": lambda s, i, b: companies.update_account(s, i, {"sales_account": b}),
            "deals": lambda s, i, b: companies.update_deal(s, i, {"deal": b}),
        }
        update[entity](state, record_id, data)
        return
    body_key = {"contacts": "contact", "sales_accounts": "sales_account", "deals": "deal"}[entity]
    body = {"unique_identifier": {key: value}, body_key: data}
    if entity == "contacts":
        people.upsert_contact(state, body)
    elif entity == "sales_accounts":
        companies.upsert_account(state, body)
    else:
        companies.upsert_deal(state, body)


def _messages(error: ApiError) -> list[str]:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("errors"), dict):
        found = body["errors"].get("message")
        if isinstance(found, list):
            return [str(m) for m in found]
        if found is not None:
            return [str(found)]
    if error.status == 404:
        return ["Record not found"]
    return [f"HTTP {error.status}"]


def settle(state: SandboxState, job: BulkJob) -> None:
    """Write the job's records, item by item, and keep what failed."""
    _, _, allowed = BULK_ENTITIES[job.entity]
    for item in job.items:
        found = _item_key(item, allowed)
        report: dict[str, Any] = {}
        if found is not None:
            report[found[0]] = found[1]
        if found is None or not isinstance(item.get("data"), dict):
            report["error_message"] = ["Each item needs one of " + ", ".join(allowed) + " and a data object"]
            job.failures.append(report)
            continue
        try:
            _write_item(state, job.entity, found[0], found[1], dict(item["data"]))
        except ApiError as error:
            report["error_message"] = _messages(error)
            job.failures.append(report)
            continue
        job.succeeded += 1
    job.settled = True
    job.settled_at = state.clock()


def settle_due(state: SandboxState) -> None:
    """Finish every job whose time has come (call under ``state.lock``)."""
    now = state.clock()
    for job in sorted(state.bulk.jobs.values(), key=lambda j: j.id):
        if not job.settled and job.done_at <= now:
            settle(state, job)


def _refuse_transiently(state: SandboxState) -> bool:
    jobs = state.bulk
    if jobs.refusals_left is None:
        jobs.refusals_left = state.options.bulk_405s
    if jobs.refusals_left > 0:
        jobs.refusals_left -= 1
        return True
    return False


def create_job(state: SandboxState, api_url: str, entity: str, body: dict[str, Any]) -> tuple[int, Any]:
    """A new job for ``entity``'s items; ``api_url`` is the API root the request came to."""
    if state.options.bulk_api == "absent" or state.options.product == "classic":
        raise not_found()
    if _refuse_transiently(state):
        raise ApiError(405, {"errors": {"code": 405, "message": ["Method Not Allowed"]}})
    list_key, _, _ = BULK_ENTITIES[entity]
    items = body.get(list_key)
    if not isinstance(items, list) or not items:
        raise validation_error(f"{list_key} must be a non-empty list")
    if len(items) > state.options.bulk_max_items:
        raise validation_error(f"At most {state.options.bulk_max_items} records per request")
    now = state.clock()
    job = BulkJob(id=state.bulk.next_id, entity=entity, items=items, created_at=now,
                  done_at=now + state.options.bulk_job_seconds)
    state.bulk.next_id += 1
    state.bulk.jobs[job.id] = job
    if job.done_at <= now:
        settle(state, job)
    return 200, {"job_status_url": f"{api_url}/job_statuses/{job.id}",
                 "message": "Bulk upsert has been queued"}


def job_status(state: SandboxState, job_id: int) -> tuple[int, Any]:
    job = state.bulk.jobs.get(job_id)
    if job is None:
        raise not_found()
    _, type_name, _ = BULK_ENTITIES[job.entity]
    data = {"record_status": {"succeeded": job.succeeded, "failed": len(job.failures)},
            "detailed_failure_report": job.failures} if job.settled else {}
    return 200, {
        "status": "SUCCESS" if job.settled else "IN_PROGRESS",
        "progress": 100 if job.settled else 0,
        "job_type_name": type_name,
        "created_at": _iso(state, job.created_at),
        "status_updated_at": _iso(state, job.settled_at if job.settled_at is not None else job.created_at),
        "data": orjson.dumps(data).decode(),
    }


def _iso(state: SandboxState, epoch: float) -> str:
    return iso_timestamp(epoch, state.options.utc_offset_minutes)
