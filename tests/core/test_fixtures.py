"""Every fixture under ``tests/fixtures/mapping`` plans exactly to its expected output.

Each file holds::

    {"description": "...",
     "event": {...},                       # a normalised Segment message
     "settings": {"product": "suite", "has_app_token": false, "mapping": {...}},
     "schema": null | {...},               # null: the built-in default; else FieldSchema.from_json
     "identity": null | {...},             # IdentityState.from_json
     "expected": {"operations": [...], "explanation": {...}}   # Plan.to_json()
    }

An expected ``{"error": {"kind": ..., "name": ...}}`` means the settings must be rejected with
``MappingConfigError``. Set ``REGEN_MAPPING_FIXTURES=1`` to rewrite ``expected`` from the planner
(then review the diff: the fixtures are the specification).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from freshsales_destination.core.identity import IdentityState
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import plan
from freshsales_destination.core.schema import FieldSchema, MappingConfigError, default_schema

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mapping"


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


def run_fixture(data: dict[str, Any]) -> dict[str, Any]:
    raw_settings = data.get("settings") or {}
    product = raw_settings.get("product", "suite")
    settings = DestinationSettings.build(
        product, bool(raw_settings.get("has_app_token")), raw_settings.get("mapping") or {}
    )
    schema_data = data.get("schema")
    schema = (
        default_schema(product)
        if schema_data is None
        else FieldSchema.from_json(schema_data, product=product)
    )
    identity_data = data.get("identity")
    identity = IdentityState.from_json(identity_data) if identity_data else None
    try:
        return plan(data["event"], settings, schema, identity).to_json()
    except MappingConfigError as exc:
        return {"error": {"kind": exc.kind, "name": exc.name, "message": exc.message}}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def dump(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


REGEN = os.environ.get("REGEN_MAPPING_FIXTURES") == "1"


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_fixture(path: Path) -> None:
    data = load(path)
    got = run_fixture(data)
    if REGEN:
        data["expected"] = got
        dump(path, data)
    assert got == data["expected"]


def test_there_are_fixtures_for_every_documented_payload() -> None:
    names = {p.stem for p in fixture_files()}
    for product in ("suite", "classic"):
        for doc in ("identify_lead", "identify_fs_contact", "identify_company_deal", "track", "page"):
            assert f"doc_{doc}_{product}" in names
