"""Contacts and (Classic) leads: emails, uniqueness, account links, upsert and conversion."""

from __future__ import annotations

from typing import Any

from freshsales_destination.sandbox.errors import validation_error
from freshsales_destination.sandbox.records import (
    Attrs,
    as_id,
    create_record,
    draft,
    get_or_404,
    public,
    require_text,
    settle,
    stamp_new,
    unique_identifier,
    unwrap,
    update_record,
    upsert_first,
    visible,
)
from freshsales_destination.sandbox.state import SandboxState, email_key_of

_PERSON_ATTRS = {
    "first_name": "str", "last_name": "str", "job_title": "str", "work_number": "str",
    "mobile_number": "str", "address": "str", "city": "str", "state": "str", "zipcode": "str",
    "country": "str", "time_zone": "str", "owner_id": "sel:owners", "territory_id": "sel:territories",
    "lead_source_id": "sel:lead_sources", "campaign_id": "int", "medium": "str", "keyword": "str",
    "facebook": "str", "twitter": "str", "linkedin": "str", "department": "str",
    "do_not_disturb": "bool", "has_authority": "bool",
}
CONTACT_ATTRS = {
    **_PERSON_ATTRS, "external_id": "str", "contact_status_id": "sel:contact_statuses",
    "lifecycle_stage_id": "sel:lifecycle_stages", "lost_reason_id": "int", "subscription_status": "int",
    "subscription_types": "str", "work_email": "str", "tags": "str_list",
}
LEAD_ATTRS = {**_PERSON_ATTRS, "lead_stage_id": "int", "lead_reason_id": "int"}
CONTACT_IDENTIFIERS = ("emails", "mobile_number", "external_id")


# emails -------------------------------------------------------------------------------------

def email_key(state: SandboxState, value: str) -> str:
    return email_key_of(state.options, value)


def requested_emails(attrs: dict[str, Any]) -> list[str] | None:
    """The addresses asked for by ``email`` and/or ``emails`` in any accepted form, or ``None``."""
    if "email" not in attrs and "emails" not in attrs:
        return None
    found: list[str] = []
    for key in ("email", "emails"):
        if key not in attrs:
            continue
        raw = attrs[key]
        if isinstance(raw, dict):
            raise validation_error(f"The type for {key} is invalid.")
        items = raw if isinstance(raw, list) else [raw]
        primary_first: list[str] = []
        for item in items:
            if item is None:
                continue
            if isinstance(item, dict):
                if item.get("_destroy"):
                    continue
                value = item.get("value")
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise validation_error(f"The type for {key} is invalid.")
                (primary_first.insert(0, value) if item.get("is_primary") else primary_first.append(value))
                continue
            if not isinstance(item, str):
                raise validation_error(f"The type for {key} is invalid.")
            primary_first.append(item)
        found.extend(primary_first)
    cleaned: list[str] = []
    seen: set[str] = set()
    for value in found:
        value = value.strip()
        if not value:
            continue
        if "@" not in value or " " in value or value.startswith("@") or value.endswith("@"):
            raise validation_error(f"Email {value} is invalid")
        if value.lower() not in seen:
            seen.add(value.lower())
            cleaned.append(value)
    return cleaned


def record_emails(record: dict[str, Any]) -> list[str]:
    return [e["value"] for e in record.get("emails") or []]


def _set_emails(state: SandboxState, record: dict[str, Any], values: list[str]) -> None:
    old = {e["value"].lower(): e for e in record.get("emails") or []}
    entries = []
    for index, value in enumerate(values):
        previous = old.get(value.lower())
        entries.append({
            "id": previous["id"] if previous else state.new_sub_id(),
            "value": previous["value"] if previous else value,
            "is_primary": index == 0,
            "label": previous.get("label") if previous else None,
            "_destroy": False,
        })
    record["emails"] = entries
    record["email"] = entries[0]["value"] if entries else None


def _check_unique_emails(state: SandboxState, kind: str, values: list[str], self_id: int | None) -> None:
    """No record of ``kind`` but ``self_id`` may hold any of ``values`` (as ``email_key`` compares)."""
    for value in values:
        if any(other["id"] != self_id for other in state.with_email(kind, value)):
            raise validation_error(state.options.duplicate_email_message)


def find_by_email(state: SandboxState, kind: str, email: str) -> list[dict[str, Any]]:
    """The records of ``kind`` holding ``email``, in table order (from the table's email index)."""
    return state.with_email(kind, email)


# contacts -----------------------------------------------------------------------------------

def _new_person(state: SandboxState) -> dict[str, Any]:
    record: dict[str, Any] = {name: None for name in CONTACT_ATTRS}
    record.update({
        "id": state.new_id(), "display_name": None, "email": None, "emails": [], "avatar": None,
        "lead_score": 0, "last_seen": None, "last_contacted": None, "recent_note": None,
        "custom_field": {}, "is_deleted": False, "tags": [],
    })
    return stamp_new(state, record)


def _display_name(record: dict[str, Any]) -> None:
    name = " ".join(p for p in (record.get("first_name"), record.get("last_name")) if p)
    record["display_name"] = name or record.get("email") or record.get("mobile_number")


def _person_draft(
    state: SandboxState, kind: str, spec: Attrs, record: dict[str, Any], attrs: dict[str, Any],
    self_id: int | None,
) -> dict[str, Any]:
    """A contact's or lead's candidate: typed and custom attributes, then the requested emails, which no
    other record of ``kind`` (but ``self_id``) may hold."""
    candidate = draft(state, kind, record, attrs, spec)
    emails = requested_emails(attrs)
    if emails is not None:
        _check_unique_emails(state, kind, emails, self_id)
        _set_emails(state, candidate, emails)
    return candidate


def _apply_contact(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    candidate = _person_draft(state, "contacts", CONTACT_ATTRS, record, attrs, None if creating else record["id"])
    _apply_account_links(state, candidate, attrs)
    if creating and state.options.require_contact_identity and not (
        candidate.get("emails") or candidate.get("mobile_number") or candidate.get("external_id")
    ):
        raise validation_error("Please provide an email or a mobile number for the contact")
    _display_name(candidate)
    settle(state, record, candidate, creating)


def _apply_account_links(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any]) -> None:
    links: list[dict[str, Any]] | None = None
    if "sales_accounts" in attrs:
        raw = attrs["sales_accounts"]
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise validation_error("The type for sales_accounts is invalid.")
        links = []
        for item in raw:
            if not isinstance(item, dict):
                raise validation_error("The type for sales_accounts is invalid.")
            account_id = as_id(item.get("id"))
            if account_id is None or state.get("sales_accounts", account_id) is None:
                raise validation_error(f"Sales account {item.get('id')} does not exist")
            if any(link["id"] == account_id for link in links):
                continue
            links.append({"id": account_id, "is_primary": bool(item.get("is_primary", False))})
    elif "sales_account_id" in attrs and attrs["sales_account_id"] is not None:
        account_id = as_id(attrs["sales_account_id"])
        if account_id is None or state.get("sales_accounts", account_id) is None:
            raise validation_error(f"Sales account {attrs['sales_account_id']} does not exist")
        links = [{"id": account_id, "is_primary": True}] + [
            link for link in record.get("_sales_accounts", []) if link["id"] != account_id
        ]
    elif isinstance(attrs.get("sales_account"), dict):
        from freshsales_destination.sandbox.companies import account_by_name_or_create

        account = account_by_name_or_create(state, attrs["sales_account"])
        links = [{"id": account["id"], "is_primary": True}] + [
            link for link in record.get("_sales_accounts", []) if link["id"] != account["id"]
        ]
    if links is None:
        record.setdefault("_sales_accounts", [])
        return
    if "sales_accounts" in attrs and state.options.account_links == "merge":
        sent = {link["id"] for link in links}
        kept = [dict(link) for link in record.get("_sales_accounts", []) if link["id"] not in sent]
        if any(link["is_primary"] for link in links):
            for link in kept:
                link["is_primary"] = False
        links = [*kept, *links]
    primaries = [link for link in links if link["is_primary"]]
    for link in links:
        link["is_primary"] = False
    if links:
        (primaries[0] if primaries else links[0])["is_primary"] = True
    record["_sales_accounts"] = links


def render_contact(state: SandboxState, record: dict[str, Any], include: set[str]) -> dict[str, Any]:
    out = public(record)
    out["open_deals_amount"], out["won_deals_amount"] = "0.0", "0.0"
    out["open_deals_count"] = out["won_deals_count"] = 0
    deals = state.deals_of(record["id"])
    if deals:
        from freshsales_destination.sandbox.records import to_decimal

        total = sum(float(d["amount"]) for d in deals if d.get("amount") is not None)
        out["open_deals_amount"], out["open_deals_count"] = to_decimal(total, "amount"), len(deals)
    out["record_type_id"] = "71000000000"
    out["links"] = {"conversations": f"/contacts/{record['id']}/conversations",
                    "activities": f"/contacts/{record['id']}/activities"}
    if "sales_accounts" in include:
        accounts = []
        for link in record.get("_sales_accounts", []):
            account = state.get("sales_accounts", link["id"])
            if account is not None:
                accounts.append({"partial": True, "id": account["id"], "name": account["name"],
                                 "avatar": None, "website": account.get("website"),
                                 "is_primary": link["is_primary"]})
        out["sales_accounts"] = accounts
    if "owner" in include and record.get("owner_id"):
        out["owner"] = next((u for u in state.selectors["owners"] if u["id"] == record["owner_id"]), None)
    return out


def create_contact(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return create_record(state, "contacts", unwrap(body, "contact"), _new_person, _apply_contact)


def update_contact(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return update_record(state, "contacts", "contact", record_id, body, _apply_contact)


def delete_contact(state: SandboxState, record_id: int, forget: bool = False) -> None:
    get_or_404(state, "contacts", record_id)
    state.delete("contacts", record_id)
    for deal in state.deals_of(record_id):
        deal["_contact_ids"] = [c for c in deal["_contact_ids"] if c != record_id]
        state.save("deals", deal)
    if forget:
        for kind in ("notes", "sales_activities"):
            for item in list(state.table(kind).values()):
                if item.get("targetable_type") == "Contact" and item.get("targetable_id") == record_id:
                    state.delete(kind, item["id"])
        state.replace_tracking([t for t in state.tracking if not (
            t.get("targetable_type") == "Contact" and t.get("targetable_id") == record_id)])


def clone_contact(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    source = get_or_404(state, "contacts", record_id)
    record = _new_person(state)
    keep = {k: v for k, v in source.items()
            if k not in ("id", "email", "emails", "external_id", "created_at", "updated_at")}
    record.update(keep)
    record["emails"], record["email"], record["external_id"] = [], None, None
    attrs = unwrap(body, "contact") if body else {}
    _apply_clone(state, record, attrs)
    return state.save("contacts", record)


def _apply_clone(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Like an update, but a clone may lack an email (the source keeps its addresses)."""
    candidate = _person_draft(state, "contacts", CONTACT_ATTRS, record, attrs, None)
    _display_name(candidate)
    settle(state, record, candidate, creating=True)


def match_contacts(state: SandboxState, key: str, value: Any) -> list[dict[str, Any]]:
    if key == "emails":
        if not isinstance(value, str):
            raise validation_error("The value for unique identifier emails is invalid.")
        return find_by_email(state, "contacts", value)
    text = str(value).strip()
    return [r for r in state.table("contacts").values() if r.get(key) is not None and str(r[key]) == text]


def upsert_contact(state: SandboxState, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Update the oldest contact matching ``unique_identifier`` or create one; returns (record, created)."""
    key, value = unique_identifier(body, CONTACT_IDENTIFIERS)
    attrs = dict(unwrap(body, "contact"))
    matches = sorted(match_contacts(state, key, value), key=lambda r: r["id"])
    if state.options.lookup_delay_upserts:
        matches = [r for r in matches if visible(state, r)]
    if key == "emails":
        ident = str(value).strip()
        wanted = requested_emails(attrs)
        attrs.pop("email", None)
        others = [w for w in (wanted or []) if email_key(state, w) != email_key(state, ident)]
        if not matches or wanted is not None:
            attrs["emails"] = [ident] + others
        else:
            attrs.pop("emails", None)
    else:
        attrs[key] = value
    return upsert_first(state, "contacts", matches, attrs, _new_person, _apply_contact)


# leads (Classic) ----------------------------------------------------------------------------

def _apply_lead(state: SandboxState, record: dict[str, Any], attrs: dict[str, Any], creating: bool) -> None:
    candidate = _person_draft(state, "leads", LEAD_ATTRS, record, attrs, None if creating else record["id"])
    for part in ("company", "deal"):
        if part in attrs:
            raw = attrs[part]
            if raw is not None and not isinstance(raw, dict):
                raise validation_error(f"The type for {part} is invalid.")
            if raw is not None and part == "deal" and raw.get("amount") is not None:
                from freshsales_destination.sandbox.records import to_decimal

                raw = {**raw, "amount": to_decimal(raw["amount"], "Deal amount")}
            candidate[part] = dict(raw) if raw else None
    if creating or "last_name" in attrs:
        require_text(candidate, "last_name", "Last name")
    _display_name(candidate)
    settle(state, record, candidate, creating)


def _new_lead(state: SandboxState) -> dict[str, Any]:
    record = _new_person(state)
    for name in ("external_id", "contact_status_id", "lifecycle_stage_id", "lost_reason_id",
                 "subscription_status", "subscription_types", "work_email", "tags"):
        record.pop(name, None)
    record.update({"company": None, "deal": None, "lead_quality": None, "email_status": None,
                   "web_form_ids": None, "lead_stage_id": None, "lead_reason_id": None})
    return record


def create_lead(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    return create_record(state, "leads", unwrap(body, "lead"), _new_lead, _apply_lead)


def update_lead(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return update_record(state, "leads", "lead", record_id, body, _apply_lead)


def render_lead(record: dict[str, Any]) -> dict[str, Any]:
    out = public(record)
    out["links"] = {"activities": f"/leads/{record['id']}/activities"}
    return out


def upsert_lead(state: SandboxState, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    key, value = unique_identifier(body, ("emails", "email", "mobile_number"))
    attrs = dict(unwrap(body, "lead"))
    if key in ("emails", "email"):
        matches = find_by_email(state, "leads", str(value))
        attrs.pop("email", None)
        attrs["emails"] = [str(value)]
    else:
        matches = [r for r in state.table("leads").values() if str(r.get(key)) == str(value)]
        attrs[key] = value
    matches.sort(key=lambda r: r["id"])
    if state.options.lookup_delay_upserts:
        matches = [r for r in matches if visible(state, r)]
    return upsert_first(state, "leads", matches, attrs, _new_lead, _apply_lead)


def convert_lead(state: SandboxState, record_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Turn a lead into a contact, plus an account and a deal when the lead carries them."""
    from freshsales_destination.sandbox.companies import (
        account_by_name_or_create,
        create_deal,
        render_account,
        render_deal,
    )

    lead = get_or_404(state, "leads", record_id)
    attrs = unwrap(body, "lead") if body else {}
    if attrs:
        _apply_lead(state, lead, attrs, creating=False)
    require_text(lead, "last_name", "Last name")
    contact_attrs = {k: lead.get(k) for k in _PERSON_ATTRS if lead.get(k) is not None}
    contact_attrs["custom_field"] = {
        k: v for k, v in (lead.get("custom_field") or {}).items() if k in state.fields.custom("contacts")
    }
    emails = record_emails(lead)
    existing = find_by_email(state, "contacts", emails[0]) if emails else []
    account = None
    company = lead.get("company") or {}
    if company.get("name"):
        account = account_by_name_or_create(state, company)
        contact_attrs["sales_accounts"] = [{"id": account["id"], "is_primary": True}]
    if existing:
        contact = existing[0]
        extra = [e for e in emails if e.lower() not in {v.lower() for v in record_emails(contact)}]
        if extra:
            contact_attrs["emails"] = record_emails(contact) + extra
        _apply_contact(state, contact, contact_attrs, creating=False)
    else:
        contact = _new_person(state)
        contact_attrs["emails"] = emails
        _apply_contact(state, contact, contact_attrs, creating=True)
    state.save("contacts", contact)
    deal = None
    deal_attrs = lead.get("deal") or {}
    if deal_attrs.get("name"):
        deal = create_deal(state, {"deal": {
            **deal_attrs, "amount": deal_attrs.get("amount") or "0",
            "contacts_added_list": [contact["id"]],
            **({"sales_account_id": account["id"]} if account else {}),
        }})
    if state.options.convert_keeps_lead:
        lead["converted_contact_id"] = contact["id"]
        state.save("leads", lead)
    else:
        state.delete("leads", record_id)
    return {
        "contact": render_contact(state, contact, {"sales_accounts"}),
        "sales_account": render_account(account) if account else None,
        "deal": render_deal(state, deal, set()) if deal else None,
    }
