"""Text an event becomes: rule templates (``{properties.KEY|messageId}``), note and activity
descriptions, and the property values settings point at."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from freshsales_destination.core.planning.builder import PlanBuilder

NOTE_LIMIT = 10_000


def render(b: PlanBuilder, template: str, label: str, name: str | None, props: Mapping[str, Any]) -> str | None:
    """``template`` filled in, or None when a placeholder has no value in any alternative."""
    values: dict[str, str | None] = {
        "event": label,
        "name": name,
        "userId": b.user_id,
        "messageId": b.message_id,
    }

    def lookup(alt: str) -> str | None:
        if alt.startswith("properties."):
            value = props.get(alt[len("properties.") :])
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return None
            text = str(value).strip()
            return text or None
        return values.get(alt)

    out = []
    pos = 0
    for match in re.finditer(r"\{([^{}]*)\}", template):
        out.append(template[pos : match.start()])
        for alt in (p.strip() for p in match.group(1).split("|")):
            found = lookup(alt)
            if found is not None:
                out.append(found)
                break
        else:
            return None
        pos = match.end()
    out.append(template[pos:])
    return "".join(out).strip() or None


def page_props(page: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """A page view written as a note or activity keeps its url and title."""
    out = dict(props)
    for key in ("url", "title"):
        if page.get(key) is not None:
            out[key] = page[key]
    return out


def describe(title: str, props: Mapping[str, Any], timestamp: str | None) -> str:
    """A note's description (or an activity's notes): the title, the time, the properties."""
    lines = [title]
    if timestamp:
        lines.append(f"At: {timestamp}")
    for k in sorted(props):
        value = props[k]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        lines.append(f"{k}: {text}")
    out = "\n".join(lines)
    return out if len(out) <= NOTE_LIMIT else out[: NOTE_LIMIT - 1] + "…"


def property_value(props: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """``props[path]``, else the nested value along ``path``'s dots; (found, value)."""
    if path in props:
        return True, props[path]
    node: Any = props
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


__all__ = ["NOTE_LIMIT", "describe", "page_props", "property_value", "render"]
