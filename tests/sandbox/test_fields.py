from __future__ import annotations

import json
from pathlib import Path

import pytest

from freshsales_destination.sandbox import SandboxOptions, build_app
from freshsales_destination.sandbox.errors import SandboxConfigError
from tests.sandbox.conftest import Api, MakeApi

SEED_TOML = """
[[contacts]]
name = "cf_score"
type = "number"

[[contacts]]
name = "cf_ratio"
type = "decimal"

[[contacts]]
name = "cf_birthday"
label = "Birthday"
type = "date"

[[contacts]]
name = "cf_vip"
type = "checkbox"

[[contacts]]
name = "cf_tier"
type = "dropdown"
choices = ["Gold", "Silver"]

[[contacts]]
name = "cf_tags"
type = "multi-select"
choices = ["a", "b", "c"]

[[contacts]]
name = "cf_note"
type = "text"

[[deals]]
name = "cf_region"
type = "text"
"""


@pytest.fixture
def seeded(make_api: MakeApi, tmp_path: Path) -> Api:
    path = tmp_path / "seed.toml"
    path.write_text(SEED_TOML)
    return make_api(seed_path=path)


@pytest.mark.parametrize("entity", ["contacts", "sales_accounts", "deals", "sales_activities"])
def test_field_settings_for_each_entity(api: Api, entity: str) -> None:
    fields = api.get(f"/settings/{entity}/fields").json()["fields"]
    assert fields and all({"id", "name", "label", "type", "default", "choices", "base_model"} <= f.keys()
                          for f in fields)


def test_default_seed_has_alternate_number_on_leads_and_contacts(classic: Api) -> None:
    for entity in ("leads", "contacts"):
        fields = classic.get(f"/settings/{entity}/fields").json()["fields"]
        custom = [f for f in fields if not f["default"]]
        assert [f["name"] for f in custom] == ["cf_alternate_number"]
    assert classic.get("/settings/widgets/fields").status_code == 404


def test_seeded_custom_field_metadata(seeded: Api) -> None:
    fields = {f["name"]: f for f in seeded.get("/settings/contacts/fields").json()["fields"]}
    assert fields["cf_tier"]["type"] == "dropdown" and fields["cf_tier"]["default"] is False
    assert [c["value"] for c in fields["cf_tier"]["choices"]] == ["Gold", "Silver"]
    assert fields["cf_tags"]["type"] == "multi_select_dropdown"
    assert fields["cf_birthday"]["label"] == "Birthday"
    assert "cf_alternate_number" not in fields  # a user seed replaces the default seed


def test_values_are_coerced_by_type(seeded: Api) -> None:
    custom = {"cf_score": "42", "cf_ratio": 2.50, "cf_birthday": "1990-04-01T00:00:00Z", "cf_vip": "true",
              "cf_tier": "Gold", "cf_tags": ["a", "c"], "cf_note": 12}
    contact = seeded.post("/contacts", {"contact": {"email": "c@x.io", "custom_field": custom}}).json()["contact"]
    assert contact["custom_field"] == {"cf_score": 42, "cf_ratio": "2.5", "cf_birthday": "1990-04-01",
                                       "cf_vip": True, "cf_tier": "Gold", "cf_tags": "a;c", "cf_note": "12"}


@pytest.mark.parametrize(
    "custom, message",
    [
        ({"cf_unknown": 1}, "Custom field cf_unknown is invalid"),
        ({"cf_score": "many"}, "Custom field cf_score must be a number"),
        ({"cf_ratio": "x"}, "Custom field cf_ratio must be a decimal"),
        ({"cf_birthday": "yesterday"}, "Custom field cf_birthday must be a date (YYYY-MM-DD)"),
        ({"cf_vip": "maybe"}, "Custom field cf_vip must be true or false"),
        ({"cf_tier": "Bronze"}, "Custom field cf_tier must be one of ['Gold', 'Silver']"),
        ({"cf_tags": ["z"]}, "Custom field cf_tags must be values among ['a', 'b', 'c']"),
        ({"cf_note": {"x": 1}}, "Custom field cf_note must be text"),
    ],
)
def test_strict_mode_rejects_unknown_and_mistyped(seeded: Api, custom: dict, message: str) -> None:
    response = seeded.post("/contacts", {"contact": {"email": "c@x.io", "custom_field": custom}})
    assert response.status_code == 400
    assert response.json() == {"errors": {"code": 400, "message": [message]}}
    assert seeded.state.records["contacts"] == {}


def test_strict_mode_applies_to_upsert_and_other_entities(seeded: Api) -> None:
    upsert = seeded.post("/contacts/upsert", {"unique_identifier": {"emails": "u@x.io"},
                                              "contact": {"custom_field": {"cf_nope": 1}}})
    assert upsert.status_code == 400
    deal = seeded.post("/deals", {"deal": {"name": "d", "amount": 1, "custom_field": {"cf_region": "EU"}}})
    assert deal.json()["deal"]["custom_field"] == {"cf_region": "EU"}
    account = seeded.post("/sales_accounts", {"sales_account": {"name": "a", "custom_field": {"cf_region": 1}}})
    assert account.json()["errors"]["message"] == ["Custom field cf_region is invalid"]


def test_lenient_mode_drops(make_api: MakeApi) -> None:
    api = make_api(strict=False)
    body = {"contact": {"email": "l@x.io", "custom_field": {"cf_unknown": 1, "cf_alternate_number": "7"}}}
    contact = api.post("/contacts", body).json()["contact"]
    assert contact["custom_field"] == {"cf_alternate_number": "7"}


def test_json_seed_and_bad_seeds(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"deals": [{"name": "cf_x", "type": "number"}]}))
    app = build_app(SandboxOptions(seed_path=path))
    assert "cf_x" in app.state.sandbox.fields.custom("deals")
    for bad in ({"deals": [{"name": "x"}]}, {"deals": [{"name": "cf_y", "type": "radio"}]},
                {"widgets": []}, {"deals": [{"name": "cf_z", "type": "dropdown"}]}):
        path.write_text(json.dumps(bad))
        with pytest.raises(SandboxConfigError):
            build_app(SandboxOptions(seed_path=path))
    with pytest.raises(SandboxConfigError):
        build_app(SandboxOptions(seed_path=tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    "name, key",
    [("owners", "users"), ("lifecycle_stages", "lifecycle_stages"), ("sales_activity_types", "sales_activity_types"),
     ("deal_stages", "deal_stages"), ("deal_pipelines", "deal_pipelines"), ("lead_sources", "lead_sources"),
     ("contact_statuses", "contact_statuses")],
)
def test_selectors(api: Api, name: str, key: str) -> None:
    response = api.get(f"/selector/{name}")
    assert response.status_code == 200
    items = response.json()[key]
    assert items and all("id" in item for item in items)


def test_pipeline_stages_and_unknown_selector(api: Api) -> None:
    pipeline = api.get("/selector/deal_pipelines").json()["deal_pipelines"][0]
    stages = api.get(f"/selector/deal_pipelines/{pipeline['id']}/deal_stages").json()["deal_stages"]
    assert stages and {s["deal_pipeline_id"] for s in stages} == {pipeline["id"]}
    assert api.get("/selector/nothing").json() == {"error_code": 404}
    assert api.get("/selector/deal_pipelines/1/deal_stages").status_code == 404
