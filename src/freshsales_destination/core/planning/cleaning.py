"""Control characters removed from what reaches Freshsales, each removal explained."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from freshsales_destination.core.explanation import ExplanationEntry

# C0 controls but tab, line feed and carriage return (text areas keep their lines), DEL, and
# the C1 controls. NUL in particular: PostgreSQL-backed CRMs refuse it, others cut the text.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_VALUE_CLEANED = "control characters (NUL and the like) were removed from this value"
# Where trait-like values live: what reaches Freshsales as field values, notes or events.
_CLEANED_OBJECTS = (("traits",), ("context", "traits"), ("properties",))


def without_controls(
    event: Mapping[str, Any],
) -> tuple[Mapping[str, Any], list[ExplanationEntry]]:
    """`event` with control characters removed from the names and string values of its
    traits, context.traits and properties (a copy, only when there were any), and an
    explanation entry for each value or name cleaned."""
    notes: list[ExplanationEntry] = []
    out: dict[str, Any] | None = None
    for where in _CLEANED_OBJECTS:
        container: Any = event
        for part in where:
            container = container.get(part) if isinstance(container, Mapping) else None
        if not isinstance(container, dict):
            continue
        found: list[ExplanationEntry] = []
        clean = _clean_value(container, ".".join(where), found)
        if not found:
            continue
        notes += found
        if out is None:
            out = dict(event)
        if where == ("context", "traits"):
            out["context"] = {**out["context"], "traits": clean}
        else:
            out[where[0]] = clean
    return (event if out is None else out), notes


def _clean_value(value: Any, path: str, found: list[ExplanationEntry]) -> Any:
    if isinstance(value, str):
        if _CONTROLS.search(value) is None:
            return value
        found.append(ExplanationEntry(path, "info", _VALUE_CLEANED))
        return _CONTROLS.sub("", value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        dirty: list[tuple[str, str, Any]] = []
        for key, item in value.items():
            if isinstance(key, str) and _CONTROLS.search(key) is not None:
                dirty.append((key, _CONTROLS.sub("", key), item))
            else:
                out[key] = _clean_value(item, f"{path}.{key}", found)
        for key, name, item in dirty:  # a cleaned name never overwrites one sent as it is
            if name and name not in out:
                found.append(ExplanationEntry(
                    f"{path}.{key}", "info",
                    f"control characters were removed from this name: read as {path}.{name}",
                ))
                out[name] = _clean_value(item, f"{path}.{name}", found)
            else:
                found.append(ExplanationEntry(
                    f"{path}.{key}", "dropped",
                    "a name made of control characters, or one that is another name with "
                    "control characters added: not sent",
                ))
        return out
    if isinstance(value, list):
        return [_clean_value(item, f"{path}[{index}]", found) for index, item in enumerate(value)]
    return value


__all__ = ["without_controls"]
