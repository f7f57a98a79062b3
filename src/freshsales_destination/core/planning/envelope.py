"""What planning reads from a message's envelope: its id, its time, its ``integrations``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def message_id(event: Mapping[str, Any]) -> str:
    """``messageId``, else a digest of the message (operations' idempotency keys start with it)."""
    mid = event.get("messageId")
    if isinstance(mid, str) and mid.strip():
        return mid.strip()
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=True, default=repr)
    return "event-" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def timestamp(event: Mapping[str, Any]) -> str | None:
    for key in ("timestamp", "originalTimestamp", "receivedAt"):
        value = event.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def integrations_enabled(event: Mapping[str, Any], names: list[str]) -> bool:
    """Whether the message's ``integrations`` object leaves this destination on."""
    integrations = event.get("integrations")
    if not isinstance(integrations, dict):
        return True
    explicit = [integrations[n] for n in names if n in integrations]
    if explicit:
        return any(v is not False for v in explicit)
    return integrations.get("All", True) is not False


__all__ = ["integrations_enabled", "message_id", "timestamp"]
