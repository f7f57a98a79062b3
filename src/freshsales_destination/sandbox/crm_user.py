"""What a salesperson does in the Freshsales web app, played by a test (never an API call).

A person working in the CRM edits one custom field at a time (the form keeps the others) and
links a contact to accounts, choosing which one is primary. None of it passes through this
service, so delivery must never undo it. These edits bypass the rate limiter and the request
log, as work in the web app does.
"""

from __future__ import annotations

from typing import Any

from freshsales_destination.sandbox.errors import not_found, validation_error
from freshsales_destination.sandbox.fields import validate_custom_fields
from freshsales_destination.sandbox.records import as_id, touch
from freshsales_destination.sandbox.state import SandboxState

EDITABLE = ("contacts", "leads", "sales_accounts", "deals")


def salesperson_edit(
    state: SandboxState,
    kind: str,
    record_id: int,
    *,
    custom_field: dict[str, Any] | None = None,
    sales_accounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Set custom field values (the others are kept) and/or a contact's account links
    (``[{"id": N, "is_primary": bool}]``, replacing its links) on a record; returns the record."""
    if kind not in EDITABLE:
        raise validation_error(f"kind must be one of {', '.join(EDITABLE)}")
    with state.lock:
        record = state.get(kind, record_id)
        if record is None:
            raise not_found()
        if custom_field is not None:
            values = validate_custom_fields(state.fields, kind, custom_field, strict=True)
            record["custom_field"] = {**(record.get("custom_field") or {}), **values}
        if sales_accounts is not None:
            if kind != "contacts":
                raise validation_error("only contacts have sales_accounts")
            links: list[dict[str, Any]] = []
            for item in sales_accounts:
                account_id = as_id(item.get("id")) if isinstance(item, dict) else None
                if account_id is None or state.get("sales_accounts", account_id) is None:
                    raise validation_error(f"Sales account {item!r} does not exist")
                links.append({"id": account_id, "is_primary": bool(item.get("is_primary"))})
            if links and not any(link["is_primary"] for link in links):
                links[0]["is_primary"] = True
            record["_sales_accounts"] = links
        touch(state, record)
        return state.save(kind, record)
