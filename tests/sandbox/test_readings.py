"""The sandbox plays both readings of reference §13.2 and lets a test play a salesperson."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from freshsales_destination.sandbox.cli import sandbox_command
from tests.sandbox.conftest import Api, MakeApi

SEED = """
[[contacts]]
name = "cf_a"
type = "text"

[[contacts]]
name = "cf_b"
type = "text"
"""


def _api(make_api: MakeApi, tmp_path: Path, **changes: object) -> Api:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    return make_api(seed_path=seed, **changes)


def _contact(api: Api, **attrs: object) -> dict[str, object]:
    answer = api.post("/contacts", {"contact": {"email": "a@example.com", **attrs}})
    assert answer.status_code == 200, answer.text
    contact: dict[str, object] = answer.json()["contact"]
    return contact


def test_custom_fields_merge_by_default(make_api: MakeApi, tmp_path: Path) -> None:
    api = _api(make_api, tmp_path)
    contact = _contact(api, custom_field={"cf_a": "1", "cf_b": "2"})
    answer = api.put(f"/contacts/{contact['id']}", {"contact": {"custom_field": {"cf_a": "9"}}})
    assert answer.json()["contact"]["custom_field"] == {"cf_a": "9", "cf_b": "2"}
    assert api.get("/_sandbox/state").json()["options"]["custom_fields"] == "merge"


def test_custom_fields_replace_wipes_the_keys_not_sent(make_api: MakeApi, tmp_path: Path) -> None:
    api = _api(make_api, tmp_path, custom_fields="replace")
    contact = _contact(api, custom_field={"cf_a": "1", "cf_b": "2"})
    answer = api.put(f"/contacts/{contact['id']}", {"contact": {"custom_field": {"cf_a": "9"}}})
    assert answer.json()["contact"]["custom_field"] == {"cf_a": "9"}
    upsert = api.post("/contacts/upsert", {"unique_identifier": {"emails": "a@example.com"},
                                          "contact": {"custom_field": {"cf_b": "3"}}})
    assert upsert.json()["contact"]["custom_field"] == {"cf_b": "3"}
    # A write without custom_field leaves them alone.
    kept = api.put(f"/contacts/{contact['id']}", {"contact": {"first_name": "Ada"}})
    assert kept.json()["contact"]["custom_field"] == {"cf_b": "3"}


def _accounts(api: Api, *names: str) -> list[int]:
    return [api.post("/sales_accounts", {"sales_account": {"name": n}}).json()["sales_account"]["id"]
            for n in names]


def test_account_links_are_replaced_and_reported_with_include(make_api: MakeApi, tmp_path: Path) -> None:
    api = _api(make_api, tmp_path)
    one, two = _accounts(api, "One", "Two")
    contact = _contact(api, sales_accounts=[{"id": one, "is_primary": True}])
    answer = api.put(f"/contacts/{contact['id']}?include=sales_accounts",
                     {"contact": {"sales_accounts": [{"id": two, "is_primary": False}]}})
    assert [(a["id"], a["is_primary"]) for a in answer.json()["contact"]["sales_accounts"]] == [(two, True)]
    plain = api.get(f"/contacts/{contact['id']}")
    assert "sales_accounts" not in plain.json()["contact"], "only with include"
    upsert = api.post("/contacts/upsert?include=sales_accounts",
                      {"unique_identifier": {"emails": "a@example.com"}, "contact": {}})
    assert [a["id"] for a in upsert.json()["contact"]["sales_accounts"]] == [two]


def test_account_links_merge_switch_adds_to_the_links(make_api: MakeApi, tmp_path: Path) -> None:
    api = _api(make_api, tmp_path, account_links="merge")
    one, two, three = _accounts(api, "One", "Two", "Three")
    contact = _contact(api, sales_accounts=[{"id": one, "is_primary": True}])
    answer = api.put(f"/contacts/{contact['id']}?include=sales_accounts",
                     {"contact": {"sales_accounts": [{"id": two, "is_primary": False}]}})
    assert [(a["id"], a["is_primary"]) for a in answer.json()["contact"]["sales_accounts"]] == [
        (one, True), (two, False)]
    answer = api.put(f"/contacts/{contact['id']}?include=sales_accounts",
                     {"contact": {"sales_accounts": [{"id": three, "is_primary": True}]}})
    assert [(a["id"], a["is_primary"]) for a in answer.json()["contact"]["sales_accounts"]] == [
        (one, False), (two, False), (three, True)]


def test_a_salesperson_edits_through_the_admin_route(make_api: MakeApi, tmp_path: Path) -> None:
    api = _api(make_api, tmp_path, custom_fields="replace")
    one, two = _accounts(api, "One", "Two")
    contact = _contact(api, custom_field={"cf_a": "1"})
    calls = api.state.api_call_count()
    edit = api.post(f"/_sandbox/salesperson/contacts/{contact['id']}", {
        "custom_field": {"cf_b": "VIP"},
        "sales_accounts": [{"id": one}, {"id": two, "is_primary": True}],
    })
    assert edit.status_code == 200, edit.text
    assert api.state.api_call_count() == calls, "the web app is not the API"
    seen = api.get(f"/contacts/{contact['id']}?include=sales_accounts").json()["contact"]
    assert seen["custom_field"] == {"cf_a": "1", "cf_b": "VIP"}, "a form edit keeps the others"
    assert [(a["id"], a["is_primary"]) for a in seen["sales_accounts"]] == [(one, False), (two, True)]
    assert api.post(f"/_sandbox/salesperson/contacts/{contact['id']}",
                    {"custom_field": {"cf_unknown": "x"}}).status_code == 400
    assert api.post("/_sandbox/salesperson/contacts/1", {"custom_field": {}}).status_code == 404
    assert api.post(f"/_sandbox/salesperson/notes/{contact['id']}", {"custom_field": {}}).status_code == 400


def test_cli_flags_for_the_readings() -> None:
    app = typer.Typer()
    app.command("sandbox")(sandbox_command)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["sandbox", "--help"], terminal_width=200)
    assert "--custom-fields" in result.output and "--account-links" in result.output
    bad = CliRunner().invoke(app, ["sandbox", "--custom-fields", "sometimes"])
    assert bad.exit_code != 0
