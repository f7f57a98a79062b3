"""``check_settings``: resolve every name a destination's settings use, before delivery.

Event rules are checked by the same handlers planning applies (``rules.py``).
"""

from __future__ import annotations

from typing import Any

from freshsales_destination.core.mapping_settings import DestinationSettings, SalesActivityRule
from freshsales_destination.core.planning.rules import check_rule
from freshsales_destination.core.schema import FieldSchema
from freshsales_destination.core.traits import camel_to_snake


def check_settings(settings: DestinationSettings, schema: FieldSchema) -> list[str]:
    """Resolve every name the settings use; raise :class:`MappingConfigError` on the first miss.

    Returns warnings that do not stop delivery (for example a missing group id field).
    """
    mapping = settings.mapping
    warnings: list[str] = []
    if mapping.default_lifecycle_stage:
        if settings.product == "classic":
            warnings.append("mapping.default_lifecycle_stage applies to Suite only; ignored on Classic")
        else:
            schema.require("lifecycle_stages", mapping.default_lifecycle_stage, "mapping.default_lifecycle_stage")
    if mapping.default_owner_email:
        schema.require("owners", mapping.default_owner_email, "mapping.default_owner_email")
    if mapping.group_id_field:
        setting = mapping.group_id_field
        if schema.entity("sales_accounts").find((setting, camel_to_snake(setting)), setting) is None:
            warnings.append(f"mapping.group_id_field: no field named {setting} on sales_accounts; groupId is not stored")
    if settings.events_via == "sales_activity":
        # The rule events stand for (events.py events_rule), built unvalidated: an empty
        # events_activity_type is the schema's refusal here, not a validation error.
        events_via = SalesActivityRule.model_construct(
            action="sales_activity", activity_type=settings.events_activity_type or ""
        )
        check_rule(events_via, "events_via", settings, schema)
    rules: list[tuple[str, Any]] = [(f"mapping.track_events[{k!r}]", r) for k, r in sorted(mapping.track_events.items())]
    rules.append(("mapping.track_default", mapping.track_default))
    rules += [(f"mapping.page_rules[{k!r}]", r) for k, r in sorted(mapping.page_rules.items())]
    rules.append(("mapping.page_default", mapping.page_default))
    for where, rule in rules:
        check_rule(rule, where, settings, schema)
    return warnings


__all__ = ["check_settings"]
