"""Sales accounts (unique names) and deals (decimal amounts, contact and account links)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from freshsales_destination.sandbox.errors import not_found, validation_error
from freshsales_destination.sandbox.records import (
    Apply,
    as_id,
    create_record,
    draft,
    public,
    require_text,
    settle,
    stamp_new,
    unique_identifier,
    unwrap,
    update_record,
    upsert_first,
)
from freshsales_destination.sandbox.state import SandboxState

ACCOUNT_ATTRS = {
    "name": "str", "website": "str", "phone": "str", "address": "str", "city": "str", "state": "str",
    "zipcode": "str", "country": "str", "number_of_employees": "int", "annual_revenue": "decimal",
    "industry_type_id": "sel:industry_types", "business_type_id": "sel:business_types",
    "owner_id": "sel:owners", "territory_id": "sel:territories", "parent_sales_account_id": "int",
    "facebook": "str", "twitter": "str", "linkedin": "str", "tags": "str_list",
}
DEAL_ATTRS = {
    "name": "str", "amount": "decimal", "currency_id": "sel:currencies", "deal_pipeline_id": "sel:deal_pipelines",
    "deal_stage_id": "sel:deal_stages", "deal_reason_id": "sel:deal_reasons", "deal_type_id": "sel:deal_types",
    "deal_payment_status_id": "sel:deal_payment_statuses", "owner_id": "sel:owners",
    "territory_id": "sel:territories", "lead_source_id": "sel:lead_sources", "campaign_id": "int",
    "expected_close": "date", "closed_date": "date", "probability": "int", "forecast_category": "int",
    "tags": "str_list",
}


# sales accounts -----------------------------------------------------------------------------

def _named(state: SandboxState, kind: str, name: str) -> list[dict[str, Any]]:
    """The records of ``kind`` whose name matches ``name`` (trimmed, any case), oldest first."""
    return sorted(state.with_name(kind, name), key=lambda r: r["id"])


def _upsert_named(
    state: SandboxState, kind: str, attrs: dict[str, Any], value: Any,
    new: Callable[[SandboxState], dict[str, Any]], apply: Apply,
) -> tuple[dict[str, Any], bool]:
    """Upsert on ``unique_identifier: {"name": value}``: the oldest record so named, or a new one."""
    attrs = dict(attrs)
    attrs.setdefault("name", str(value))
    return upsert_first(state, kind, _named(state, kind, str(value)), attrs, new, apply)


def accounts_named(state: SandboxState, name: str) -> list[dict[str, Any]]:
    return _named(state, "sales_accounts", name)


def _apply_account(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    candidate = draft(state, "sales_accounts", record, attrs, ACCOUNT_ATTRS)
    if creating or "name" in attrs:
        require_text(candidate, "name", "Name")
        candidate["name"] = str(candidate["name"]).strip()
        if any(a["id"] != record["id"] for a in accounts_named(state, candidate["name"])):
            raise validation_error("Name has already been taken")
    settle(state, record, candidate, creating)


def _new_account(state: SandboxState) -> dict[str, Any]:
    record: dict[str, Any] = {name: None for name in ACCOUNT_ATTRS}
    record.update({"id": state.new_id(), "avatar": None, "custom_field": {}, "tags": [], "is_deleted": False,
                   "open_deals_amount": "0.0", "open_deals_count": 0, "won_deals_amount": "0.0",
                   "won_deals_count": 0, "last_contacted": None, "recent_note": None,
                   "record_type_id": "71000000001"})
    return stamp_new(state, record)


def create_account(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return create_record(state, "sales_accounts", unwrap(body, "sales_account"), _new_account, _apply_account)


def update_account(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return update_record(state, "sales_accounts", "sales_account", record_id, body, _apply_account)


def upsert_account(state: SandboxState, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    _, value = unique_identifier(body, ("name",))
    if not isinstance(value, str | int | float):
        raise validation_error("The value for unique identifier name is invalid.")
    return _upsert_named(state, "sales_accounts", unwrap(body, "sales_account"), value, _new_account, _apply_account)


def account_by_name_or_create(state: SandboxState, attrs: dict[str, Any]) -> dict[str, Any]:
    name = attrs.get("name")
    if not isinstance(name, str) or not name.strip():
        raise validation_error("Name can't be blank")
    matches = accounts_named(state, name)
    if matches:
        return matches[0]
    return create_account(state, {"sales_account": attrs})


def render_account(record: dict[str, Any]) -> dict[str, Any]:
    out = public(record)
    out["links"] = {"contacts": f"/sales_accounts/{record['id']}/contacts",
                    "deals": f"/sales_accounts/{record['id']}/deals"}
    return out


def delete_account(state: SandboxState, record_id: int) -> None:
    if state.delete("sales_accounts", record_id) is None:
        raise not_found()
    for contact in state.table("contacts").values():
        links = contact.get("_sales_accounts", [])
        if any(link["id"] == record_id for link in links):
            contact["_sales_accounts"] = [link for link in links if link["id"] != record_id]
            if contact["_sales_accounts"] and not any(link["is_primary"] for link in contact["_sales_accounts"]):
                contact["_sales_accounts"][0]["is_primary"] = True
            state.save("contacts", contact)
    for deal in state.table("deals").values():
        if deal.get("sales_account_id") == record_id:
            deal["sales_account_id"] = None
            state.save("deals", deal)


# deals --------------------------------------------------------------------------------------

def _contact_id_list(state: SandboxState, raw: Any, key: str) -> list[int]:
    if not isinstance(raw, list):
        raise validation_error(f"The type for {key} is invalid.")
    out: list[int] = []
    for item in raw:
        contact_id = as_id(item)
        if contact_id is None:
            raise validation_error(f"The type for {key} is invalid.")
        if state.get("contacts", contact_id) is None:
            raise validation_error(f"Contact {contact_id} does not exist")
        if contact_id not in out:
            out.append(contact_id)
    return out


def _apply_deal(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    candidate = draft(state, "deals", record, attrs, DEAL_ATTRS)
    if creating or "name" in attrs:
        require_text(candidate, "name", "Name")
    if creating or "amount" in attrs:
        if candidate.get("amount") is None:
            raise validation_error("Amount can't be blank")
    candidate["base_currency_amount"] = candidate.get("amount")
    contacts = list(candidate.get("_contact_ids", []))
    for key in ("contacts_added_list", "contact_ids"):
        if key in attrs and attrs[key] is not None:
            added = _contact_id_list(state, attrs[key], key)
            contacts = added if (key == "contact_ids" and not creating) else contacts + [
                c for c in added if c not in contacts]
    if attrs.get("contacts_removed_list") is not None:
        removed = _contact_id_list(state, attrs["contacts_removed_list"], "contacts_removed_list")
        contacts = [c for c in contacts if c not in removed]
    candidate["_contact_ids"] = contacts
    if "sales_account_id" in attrs:
        account_id = attrs["sales_account_id"]
        if account_id is not None:
            account_id = as_id(account_id)
            if account_id is None:
                raise validation_error("The type for sales_account_id is invalid.")
            if state.get("sales_accounts", account_id) is None:
                raise validation_error(f"Sales account {attrs['sales_account_id']} does not exist")
        candidate["sales_account_id"] = account_id
    elif isinstance(attrs.get("sales_account"), dict):
        candidate["sales_account_id"] = account_by_name_or_create(state, attrs["sales_account"])["id"]
    elif attrs.get("sales_account") is not None:
        raise validation_error("The type for sales_account is invalid.")
    if candidate.get("deal_stage_id") is not None and candidate.get("deal_pipeline_id") is None:
        stage = next(s for s in state.selectors["deal_stages"] if s["id"] == candidate["deal_stage_id"])
        candidate["deal_pipeline_id"] = stage["deal_pipeline_id"]
    settle(state, record, candidate, creating)


def _new_deal(state: SandboxState) -> dict[str, Any]:
    record: dict[str, Any] = {name: None for name in DEAL_ATTRS}
    default_pipeline = state.selectors["deal_pipelines"][0]["id"] if state.selectors["deal_pipelines"] else None
    first_stage = next((s["id"] for s in state.selectors["deal_stages"]
                        if s["deal_pipeline_id"] == default_pipeline), None)
    record.update({"id": state.new_id(), "custom_field": {}, "tags": [], "sales_account_id": None,
                   "deal_pipeline_id": default_pipeline, "deal_stage_id": first_stage, "age": 0,
                   "has_products": False, "expected_deal_value": None, "_contact_ids": []})
    return stamp_new(state, record)


def create_deal(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return create_record(state, "deals", unwrap(body, "deal"), _new_deal, _apply_deal)


def update_deal(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return update_record(state, "deals", "deal", record_id, body, _apply_deal)


def upsert_deal(state: SandboxState, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    _, value = unique_identifier(body, ("name",))
    return _upsert_named(state, "deals", unwrap(body, "deal"), value, _new_deal, _apply_deal)


def render_deal(state: SandboxState, record: dict[str, Any], include: set[str]) -> dict[str, Any]:
    out = public(record)
    out["contact_ids"] = list(record.get("_contact_ids", []))
    if record.get("amount") is not None:
        out["expected_deal_value"] = out["amount"]
    if "contacts" in include:
        from freshsales_destination.sandbox.people import render_contact

        out["contacts"] = [
            {**render_contact(state, c, set()), "partial": True}
            for c in (state.get("contacts", cid) for cid in record.get("_contact_ids", []))
            if c is not None
        ]
    if "sales_account" in include:
        account = state.get("sales_accounts", record["sales_account_id"]) if record.get("sales_account_id") else None
        out["sales_account"] = {"partial": True, "id": account["id"], "name": account["name"]} if account else None
    return out
