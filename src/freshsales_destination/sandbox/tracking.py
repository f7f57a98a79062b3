"""The tracking API (FreshsalesAnalytics): visitors, events and page views by identifier."""

from __future__ import annotations

import hmac
from typing import Any

from freshsales_destination.sandbox.errors import ApiError, errors_body, validation_error
from freshsales_destination.sandbox.people import (
    create_contact,
    create_lead,
    find_by_email,
    update_contact,
    update_lead,
)
from freshsales_destination.sandbox.state import SandboxState

ACTIONS = {"visitors": "visitor", "events": "event", "page_views": "page_view"}


def _check(state: SandboxState, body: dict[str, Any], action: str) -> str:
    token = body.get("application_token")
    if not isinstance(token, str) or not token:
        raise validation_error("application_token is required")
    if not hmac.compare_digest(  # constant time; as bytes, since the token may be any text
        token.encode("utf-8", "surrogatepass"), state.options.app_token.encode("utf-8", "surrogatepass")
    ):
        raise ApiError(401, errors_body(401, ["Invalid application token"]))
    sdk = body.get("sdk")
    if not isinstance(sdk, str) or not sdk:
        raise validation_error("sdk is required")
    if sdk not in state.options.sdks:
        raise validation_error(f"Invalid SDK {sdk}")
    identifier = body.get("identifier")
    if isinstance(identifier, int) and not isinstance(identifier, bool):
        identifier = str(identifier)
    if not isinstance(identifier, str) or not identifier.strip():
        raise validation_error("identifier is required")
    payload = body.get(ACTIONS[action])
    if action == "visitors":
        if not isinstance(payload, dict) or not payload:
            raise validation_error("visitor properties are required")
    elif action == "events":
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str) or not payload["name"]:
            raise validation_error("event name is required")
    elif not isinstance(payload, dict) or not isinstance(payload.get("url"), str) or not payload["url"]:
        raise validation_error("page_view url is required")
    return identifier.strip()


def _find(state: SandboxState, identifier: str) -> tuple[str, dict[str, Any]] | None:
    if "@" in identifier:
        contacts = sorted(find_by_email(state, "contacts", identifier), key=lambda r: r["id"])
        if contacts:
            return "Contact", contacts[0]
        if state.options.product == "classic":
            leads = sorted(find_by_email(state, "leads", identifier), key=lambda r: r["id"])
            if leads:
                return "Lead", leads[0]
        return None
    for record in sorted(state.table("contacts").values(), key=lambda r: r["id"]):
        if record.get("external_id") == identifier:
            return "Contact", record
    return None


def _map_properties(state: SandboxState, entity: str, props: dict[str, Any]) -> dict[str, Any]:
    """Visitor properties keyed by internal names or by labels (both occur in the SDK examples)."""
    labels = state.fields.label_map(entity)
    custom = state.fields.custom(entity)
    attrs: dict[str, Any] = {}
    custom_values: dict[str, Any] = {}
    for key, value in props.items():
        if key.lower() in ("company", "deal") and isinstance(value, dict):
            attrs[key.lower()] = {str(k).lower(): v for k, v in value.items()}
            continue
        name = key if key in custom or not isinstance(key, str) else labels.get(key.lower(), key)
        if name.startswith("custom_field_"):
            name = "cf_" + name[len("custom_field_"):]
        if name in custom:
            custom_values[name] = value
        elif name == "emails" or key.lower() == "email":
            attrs["emails"] = value
        else:
            attrs[name] = value
    if custom_values:
        attrs["custom_field"] = custom_values
    return attrs


def _create_visitor(state: SandboxState, identifier: str, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if state.options.product == "classic":
        attrs = _map_properties(state, "leads", props)
        attrs.pop("emails", None)
        if "@" in identifier:
            attrs["emails"] = [identifier]
        attrs.setdefault("last_name", identifier.split("@")[0] or identifier)
        return "Lead", create_lead(state, {"lead": attrs})
    attrs = _map_properties(state, "contacts", props)
    attrs.pop("emails", None)
    attrs.pop("company", None)
    attrs.pop("deal", None)
    if "@" in identifier:
        attrs["emails"] = [identifier]
    else:
        attrs["external_id"] = identifier
    return "Contact", create_contact(state, {"contact": attrs})


def track(state: SandboxState, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """Handle ``POST /track/<action>``; returns the recorded entry."""
    identifier = _check(state, body, action)
    payload = dict(body.get(ACTIONS[action]) or {})
    found = _find(state, identifier)
    if action == "visitors":
        if found is None:
            found = _create_visitor(state, identifier, payload)
        else:
            ttype, record = found
            entity = "leads" if ttype == "Lead" else "contacts"
            attrs = _map_properties(state, entity, payload)
            attrs.pop("emails", None)
            if ttype == "Lead":
                update_lead(state, record["id"], {"lead": attrs})
            else:
                attrs.pop("company", None)
                attrs.pop("deal", None)
                update_contact(state, record["id"], {"contact": attrs})
    elif found is None:
        found = _create_visitor(state, identifier, {})
    ttype, record = found
    record["last_seen"] = state.now_iso()
    state.save("leads" if ttype == "Lead" else "contacts", record)
    entry = {
        "id": state.new_sub_id(),
        "type": ACTIONS[action],
        "identifier": identifier,
        "sdk": body.get("sdk"),
        "targetable_type": ttype,
        "targetable_id": record["id"],
        "data": payload,
        "created_at": state.now_iso(),
    }
    state.add_tracking(entry)
    return entry
