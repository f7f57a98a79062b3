"""Seed data for ``GET /api/selector/<name>``: the account's configuration lists."""

from __future__ import annotations

from typing import Any

_STAMP = "2024-01-01T00:00:00+00:00"


def _named(base: int, names: list[str]) -> list[dict[str, Any]]:
    return [{"partial": True, "id": base + i, "name": n, "position": i + 1} for i, n in enumerate(names)]


def default_selectors() -> dict[str, list[dict[str, Any]]]:
    """Fresh copies of the selector lists, shaped like the fixtures in the reference (section 4.9)."""
    lifecycle_stages = [
        {"id": 71000000001, "name": "Lead", "position": 1, "disabled": False, "default": True,
         "type": "Lead", "contact_status_ids": [72000000001, 72000000002]},
        {"id": 71000000002, "name": "Sales Qualified Lead", "position": 2, "disabled": False,
         "default": True, "type": "Sales Qualified Lead", "contact_status_ids": [72000000003]},
        {"id": 71000000003, "name": "Customer", "position": 3, "disabled": False, "default": True,
         "type": "Customer", "contact_status_ids": [72000000004, 72000000005]},
    ]
    contact_statuses = [
        {"partial": True, "id": 72000000001, "name": "New", "position": 1, "lifecycle_stage_id": 71000000001},
        {"partial": True, "id": 72000000002, "name": "Contacted", "position": 2,
         "lifecycle_stage_id": 71000000001},
        {"partial": True, "id": 72000000003, "name": "Interested", "position": 3,
         "lifecycle_stage_id": 71000000002},
        {"partial": True, "id": 72000000004, "name": "Won", "position": 4, "lifecycle_stage_id": 71000000003},
        {"partial": True, "id": 72000000005, "name": "Churned", "position": 5,
         "lifecycle_stage_id": 71000000003},
    ]
    activity_types = [
        ("Chat", "chat"), ("Phone", "phone"), ("Meeting", "appointment"), ("Task", "task"),
        ("Email", "email"), ("SMS Outgoing", "sms_outgoing"), ("SMS Incoming", "sms_incoming"),
        ("Reminder", "reminder"),
    ]
    sales_activity_types = [
        {"partial": True, "id": 73000000001 + i, "name": name, "internal_name": internal,
         "show_in_conversation": True, "position": i + 1, "is_default": True, "is_checkedin": False}
        for i, (name, internal) in enumerate(activity_types)
    ]
    deal_pipelines = [
        {"partial": True, "id": 74000000001, "name": "Default Pipeline", "position": 1, "is_default": True},
        {"partial": True, "id": 74000000002, "name": "Renewals", "position": 2, "is_default": False},
    ]
    stage_rows = [
        (74000000001, "New", "Open", 10), (74000000001, "Demo", "Open", 40),
        (74000000001, "Negotiation", "Open", 70), (74000000001, "Won", "Won", 100),
        (74000000001, "Lost", "Lost", 0), (74000000002, "Renewal due", "Open", 50),
        (74000000002, "Renewed", "Won", 100),
    ]
    deal_stages = [
        {"partial": True, "id": 75000000001 + i, "name": name, "position": i + 1, "forecast_type": ftype,
         "updated_at": _STAMP, "deal_pipeline_id": pipeline, "choice_type": 1 if ftype == "Open" else 2,
         "probability": prob}
        for i, (pipeline, name, ftype, prob) in enumerate(stage_rows)
    ]
    lead_sources = _named(
        76000000001,
        ["Web", "Organic Search", "Email", "Phone", "Chat", "Web Form", "Referral", "Direct",
         "Paid Search", "Blogs", "Social Media", "Display Ads", "Events", "Webinar"],
    )
    users = [
        {"id": 77000000001, "display_name": "Sandbox Admin", "email": "admin@sandbox.example",
         "is_active": True, "work_number": None, "mobile_number": None},
        {"id": 77000000002, "display_name": "Sam Seller", "email": "sam@sandbox.example",
         "is_active": True, "work_number": None, "mobile_number": None},
    ]
    return {
        "owners": users,
        "lifecycle_stages": lifecycle_stages,
        "contact_statuses": contact_statuses,
        "sales_activity_types": sales_activity_types,
        "sales_activity_outcomes": _named(78000000001, ["Interested", "Not interested", "Left message"]),
        "sales_activity_entity_types": [],
        "deal_pipelines": deal_pipelines,
        "deal_stages": deal_stages,
        "lead_sources": lead_sources,
        "territories": _named(79000000001, ["North", "South"]),
        "currencies": [{"partial": True, "id": 1, "currency_code": "USD", "exchange_rate": "1.0",
                        "is_active": True}],
        "deal_reasons": _named(79100000001, ["Price", "Timing"]),
        "deal_types": _named(79200000001, ["New business", "Upsell"]),
        "deal_payment_statuses": _named(79300000001, ["Pending", "Paid"]),
        "deal_products": [],
        "industry_types": _named(79400000001, ["Software", "Retail", "Finance"]),
        "business_types": _named(79500000001, ["Customer", "Partner", "Vendor"]),
        "campaigns": [],
    }


def selector_key(name: str) -> str:
    """The envelope key: ``owners`` answers under ``users``."""
    return "users" if name == "owners" else name


def ids(selectors: dict[str, list[dict[str, Any]]], name: str) -> set[int]:
    return {int(item["id"]) for item in selectors.get(name, [])}
