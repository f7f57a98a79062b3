"""The REST routes (mounted under ``/api`` and ``/crm/sales/api``) and tracking routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshsales_destination.sandbox import activities, bulk, companies, people, search
from freshsales_destination.sandbox.errors import not_found, validation_error
from freshsales_destination.sandbox.fields import ENTITIES
from freshsales_destination.sandbox.records import get_or_404, page_params, paginate
from freshsales_destination.sandbox.selectors import selector_key
from freshsales_destination.sandbox.state import SandboxState
from freshsales_destination.sandbox.tracking import track
from freshsales_destination.sandbox.web import endpoint, includes, path_id, sandbox_state

Result = tuple[int, Any]
DELETED: Any = True
DELETED_ACTIVITY = {"success": "200"}


def _view(state: SandboxState, request: Request, kind: str, key: str,
          render: Callable[[dict[str, Any]], dict[str, Any]]) -> Result:
    return 200, {key: render(get_or_404(state, kind, path_id(request)))}


def _delete(state: SandboxState, request: Request, kind: str, answer: Any) -> Result:
    get_or_404(state, kind, path_id(request))
    state.delete(kind, path_id(request))
    return 200, answer


def _contact(state: SandboxState, request: Request, record: dict[str, Any], status: int = 200) -> Result:
    return status, {"contact": people.render_contact(state, record, includes(request))}


def _deal(state: SandboxState, request: Request, record: dict[str, Any], status: int = 200) -> Result:
    return status, {"deal": companies.render_deal(state, record, includes(request))}


# contacts -----------------------------------------------------------------------------------

def create_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record = people.create_contact(state, body)
    return _contact(state, request, record, state.options.create_status)


def view_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _contact(state, request, get_or_404(state, "contacts", path_id(request)))


def update_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record = people.update_contact(state, path_id(request), body)
    return _contact(state, request, record)


def delete_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    people.delete_contact(state, path_id(request))
    return 200, DELETED


def forget_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    people.delete_contact(state, path_id(request), forget=True)
    return 200, DELETED


def clone_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record = people.clone_contact(state, path_id(request), body)
    return _contact(state, request, record, state.options.create_status)


def upsert_contact(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record, _ = people.upsert_contact(state, body)
    return _contact(state, request, record)


def contact_activities(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record = get_or_404(state, "contacts", path_id(request))
    return 200, {"activities": activities.timeline(state, "Contact", record["id"]),
                 "users": state.selectors["owners"]}


# leads --------------------------------------------------------------------------------------

def create_lead(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return state.options.create_status, {"lead": people.render_lead(people.create_lead(state, body))}


def view_lead(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _view(state, request, "leads", "lead", people.render_lead)


def update_lead(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, {"lead": people.render_lead(people.update_lead(state, path_id(request), body))}


def delete_lead(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _delete(state, request, "leads", DELETED)


def convert_lead(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, people.convert_lead(state, path_id(request), body)


def upsert_lead(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    if not state.options.lead_upsert:
        raise not_found()
    record, _ = people.upsert_lead(state, body)
    return 200, {"lead": people.render_lead(record)}


# sales accounts -----------------------------------------------------------------------------

def create_account(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return state.options.create_status, {"sales_account": companies.render_account(
        companies.create_account(state, body))}


def view_account(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _view(state, request, "sales_accounts", "sales_account", companies.render_account)


def update_account(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, {"sales_account": companies.render_account(
        companies.update_account(state, path_id(request), body))}


def delete_account(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    companies.delete_account(state, path_id(request))
    return 200, DELETED


def upsert_account(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record, _ = companies.upsert_account(state, body)
    return 200, {"sales_account": companies.render_account(record)}


# deals --------------------------------------------------------------------------------------

def create_deal(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record = companies.create_deal(state, body)
    return _deal(state, request, record, state.options.create_status)


def view_deal(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _deal(state, request, get_or_404(state, "deals", path_id(request)))


def update_deal(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record = companies.update_deal(state, path_id(request), body)
    return _deal(state, request, record)


def delete_deal(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _delete(state, request, "deals", DELETED)


def upsert_deal(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    record, _ = companies.upsert_deal(state, body)
    return _deal(state, request, record)


# activities and notes -----------------------------------------------------------------------

def list_activities(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    page, per_page = page_params(state, request.query_params)
    items = sorted(state.table("sales_activities").values(), key=lambda r: r["id"])
    chunk, meta = paginate([activities.render(r) for r in items], page, per_page)
    return 200, {"sales_activities": chunk, "meta": meta}


def create_activity(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return state.options.create_status, {"sales_activity": activities.render(
        activities.create_activity(state, body))}


def view_activity(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _view(state, request, "sales_activities", "sales_activity", activities.render)


def update_activity(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, {"sales_activity": activities.render(
        activities.update_activity(state, path_id(request), body))}


def delete_activity(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _delete(state, request, "sales_activities", DELETED_ACTIVITY)


def create_note(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return state.options.create_status, {"note": activities.render(activities.create_note(state, body))}


def view_note(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _view(state, request, "notes", "note", activities.render)


def update_note(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, {"note": activities.render(activities.update_note(state, path_id(request), body))}


def delete_note(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return _delete(state, request, "notes", DELETED_ACTIVITY)


# bulk upsert and jobs (sandbox/bulk.py) ----------------------------------------------------

def _bulk(entity: str) -> Callable[[SandboxState, Request, dict[str, Any]], Result]:
    def bulk_upsert(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
        url = str(request.url.replace(query=""))
        api_url = url[: url.rindex(f"/{entity}/bulk_upsert")]
        return bulk.create_job(state, api_url, entity, body)

    bulk_upsert.__name__ = f"bulk_upsert_{entity}"
    return bulk_upsert


def job_status(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return bulk.job_status(state, path_id(request))


# search, settings, selectors, views ---------------------------------------------------------

def lookup(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, search.lookup(state, request.query_params)


def filtered_search(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, search.filtered_search(state, request.path_params["entity"], body, request.query_params)


def full_text_search(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, search.search(state, request.query_params)


def field_settings(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    entity = request.path_params["entity"]
    if entity not in ENTITIES or (entity == "leads" and state.options.product != "classic"):
        raise not_found()
    return 200, {"fields": [f.to_json() for f in state.fields.for_entity(entity)]}


def selector(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    name = request.path_params["name"]
    if name not in state.selectors:
        raise not_found()
    return 200, {selector_key(name): state.selectors[name]}


def pipeline_stages(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    pipeline_id = path_id(request)
    if pipeline_id not in {p["id"] for p in state.selectors["deal_pipelines"]}:
        raise not_found()
    return 200, {"deal_stages": [s for s in state.selectors["deal_stages"] if s["deal_pipeline_id"] == pipeline_id]}


_VIEW_ENTITIES = {"contacts": ("All Contacts",), "leads": ("All Leads",), "sales_accounts": ("All Accounts",),
                  "deals": ("All Deals", "Open Deals")}


def _views(state: SandboxState, entity: str) -> list[dict[str, Any]]:
    if entity not in _VIEW_ENTITIES or (entity == "leads" and state.options.product != "classic"):
        raise not_found()
    base = 60_000_000_001 + list(_VIEW_ENTITIES).index(entity) * 10
    model = {"contacts": "Contact", "leads": "Lead", "sales_accounts": "SalesAccount", "deals": "Deal"}[entity]
    return [{"id": base + i, "name": name, "model_class_name": model, "user_id": state.selectors["owners"][0]["id"],
             "is_default": i == 0, "is_public": True, "updated_at": "2024-01-01T00:00:00+00:00"}
            for i, name in enumerate(_VIEW_ENTITIES[entity])]


def list_filters(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    return 200, {"filters": _views(state, request.path_params["entity"])}


def view_records(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    entity = request.path_params["entity"]
    view = next((v for v in _views(state, entity) if v["id"] == path_id(request, "view_id")), None)
    if view is None:
        raise not_found()
    records = sorted(state.table(entity).values(), key=lambda r: r["id"])
    if view["name"] == "Open Deals":
        won_lost = {s["id"] for s in state.selectors["deal_stages"] if s["forecast_type"] != "Open"}
        records = [r for r in records if r.get("deal_stage_id") not in won_lost]
    sort = request.query_params.get("sort")
    if sort:
        records.sort(key=lambda r: (str(r.get(sort) or ""), r["id"]),
                     reverse=request.query_params.get("sort_type") == "desc")
    page, per_page = page_params(state, request.query_params)
    chunk, meta = paginate(records, page, per_page)
    return 200, {entity: [search.render_any(state, entity, r) for r in chunk], "meta": meta}


# tracking -----------------------------------------------------------------------------------

def tracking(state: SandboxState, request: Request, body: dict[str, Any]) -> Result:
    action = request.path_params["action"]
    if action not in ("visitors", "events", "page_views"):
        raise not_found()
    if not body:
        raise validation_error("Request body can't be blank")
    track(state, action, body)
    return 200, {"success": True}


def api_routes() -> list[Route]:
    e = endpoint
    return [
        Route("/contacts", e(create_contact, body=True), methods=["POST"]),
        Route("/contacts/upsert", e(upsert_contact, body=True), methods=["POST"]),
        Route("/contacts/{id:int}", e(view_contact), methods=["GET"]),
        Route("/contacts/{id:int}", e(update_contact, body=True), methods=["PUT"]),
        Route("/contacts/{id:int}", e(delete_contact), methods=["DELETE"]),
        Route("/contacts/{id:int}/forget", e(forget_contact), methods=["DELETE"]),
        Route("/contacts/{id:int}/clone", e(clone_contact, body=True), methods=["POST"]),
        Route("/contacts/{id:int}/activities", e(contact_activities), methods=["GET"]),
        Route("/leads", e(create_lead, body=True, classic_only=True), methods=["POST"]),
        Route("/leads/upsert", e(upsert_lead, body=True, classic_only=True), methods=["POST"]),
        Route("/leads/{id:int}", e(view_lead, classic_only=True), methods=["GET"]),
        Route("/leads/{id:int}", e(update_lead, body=True, classic_only=True), methods=["PUT"]),
        Route("/leads/{id:int}", e(delete_lead, classic_only=True), methods=["DELETE"]),
        Route("/leads/{id:int}/convert", e(convert_lead, body=True, classic_only=True), methods=["POST"]),
        Route("/sales_accounts", e(create_account, body=True), methods=["POST"]),
        Route("/sales_accounts/upsert", e(upsert_account, body=True), methods=["POST"]),
        Route("/sales_accounts/{id:int}", e(view_account), methods=["GET"]),
        Route("/sales_accounts/{id:int}", e(update_account, body=True), methods=["PUT"]),
        Route("/sales_accounts/{id:int}", e(delete_account), methods=["DELETE"]),
        Route("/deals", e(create_deal, body=True), methods=["POST"]),
        Route("/deals/upsert", e(upsert_deal, body=True), methods=["POST"]),
        Route("/deals/{id:int}", e(view_deal), methods=["GET"]),
        Route("/deals/{id:int}", e(update_deal, body=True), methods=["PUT"]),
        Route("/deals/{id:int}", e(delete_deal), methods=["DELETE"]),
        Route("/sales_activities", e(list_activities), methods=["GET"]),
        Route("/sales_activities", e(create_activity, body=True), methods=["POST"]),
        Route("/sales_activities/{id:int}", e(view_activity), methods=["GET"]),
        Route("/sales_activities/{id:int}", e(update_activity, body=True), methods=["PUT"]),
        Route("/sales_activities/{id:int}", e(delete_activity), methods=["DELETE"]),
        Route("/notes", e(create_note, body=True), methods=["POST"]),
        Route("/notes/{id:int}", e(view_note), methods=["GET"]),
        Route("/notes/{id:int}", e(update_note, body=True), methods=["PUT"]),
        Route("/notes/{id:int}", e(delete_note), methods=["DELETE"]),
        Route("/contacts/bulk_upsert", e(_bulk("contacts"), body=True), methods=["POST"]),
        Route("/sales_accounts/bulk_upsert", e(_bulk("sales_accounts"), body=True), methods=["POST"]),
        Route("/deals/bulk_upsert", e(_bulk("deals"), body=True), methods=["POST"]),
        Route("/job_statuses/{id:int}", e(job_status), methods=["GET"]),
        Route("/lookup", e(lookup), methods=["GET"]),
        Route("/search", e(full_text_search), methods=["GET"]),
        Route("/filtered_search/{entity}", e(filtered_search, body=True), methods=["POST"]),
        Route("/settings/{entity}/fields", e(field_settings), methods=["GET"]),
        Route("/selector/deal_pipelines/{id:int}/deal_stages", e(pipeline_stages), methods=["GET"]),
        Route("/selector/{name}", e(selector), methods=["GET"]),
        Route("/{entity}/filters", e(list_filters), methods=["GET"]),
        Route("/{entity}/view/{view_id:int}", e(view_records), methods=["GET"]),
    ]


TRACKING_ABSENT_HTML = (
    "<!DOCTYPE html><html><head><title>Freshworks CRM</title></head>"
    "<body><div id=\"app\">Loading…</div></body></html>"
)


def tracking_routes() -> list[Route]:
    present = endpoint(tracking, body=True)

    async def run(request: Request) -> Response:
        # Option tracking_api: the account may have no tracking API at all (reference §13.3).
        mode = sandbox_state(request).options.tracking_api
        if mode == "absent":
            raise not_found()
        if mode == "html":
            return Response(TRACKING_ABSENT_HTML, status_code=200, media_type="text/html")
        return await present(request)

    return [Route("/{action}", run, methods=["POST"])]
