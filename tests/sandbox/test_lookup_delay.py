"""`lookup_delay`: a new record is invisible to lookup and search for N seconds (reference 13.2)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from freshsales_destination.sandbox import FakeClock
from freshsales_destination.sandbox.cli import sandbox_command
from tests.sandbox.conftest import MakeApi


def _lookup(api, email: str, entities: str = "contact") -> list[int]:  # type: ignore[no-untyped-def]
    body = api.get("/lookup", params={"q": email, "f": "email", "entities": entities}).json()
    kind = "contacts" if entities == "contact" else "leads"
    return [r["id"] for r in body[kind][kind]]


def test_lookup_and_search_see_a_new_contact_only_after_the_delay(
    make_api: MakeApi, clock: FakeClock
) -> None:
    api = make_api(lookup_delay=20)
    created = api.post("/contacts", {"contact": {"email": "new@x.io", "last_name": "New"}}).json()
    contact_id = created["contact"]["id"]
    assert api.get(f"/contacts/{contact_id}").status_code == 200  # reads by id are immediate
    assert _lookup(api, "new@x.io") == []
    assert api.get("/search", params={"q": "new@x.io", "include": "contact"}).json() == []
    rule = {"filter_rule": [{"attribute": "contact_email.email", "operator": "is_in", "value": "new@x.io"}]}
    assert api.post("/filtered_search/contact", rule).json()["contacts"] == []
    clock.advance(19.5)
    assert _lookup(api, "new@x.io") == []
    clock.advance(0.5)
    assert _lookup(api, "new@x.io") == [contact_id]
    assert [r["id"] for r in api.get("/search", params={"q": "new@x.io", "include": "contact"}).json()] == [
        contact_id
    ]
    assert [r["id"] for r in api.post("/filtered_search/contact", rule).json()["contacts"]] == [contact_id]


def test_without_the_delay_lookups_are_immediate(make_api: MakeApi) -> None:
    api = make_api()
    created = api.post("/contacts", {"contact": {"email": "now@x.io"}}).json()["contact"]["id"]
    assert _lookup(api, "now@x.io") == [created]


def test_classic_leads_are_delayed_too(make_api: MakeApi, clock: FakeClock) -> None:
    api = make_api(product="classic", lookup_delay=5)
    lead = api.post("/leads", {"lead": {"email": "lead@x.io", "last_name": "L"}}).json()["lead"]["id"]
    assert _lookup(api, "lead@x.io", "lead") == []
    # A second create is still refused: uniqueness is not eventually consistent.
    again = api.post("/leads", {"lead": {"email": "lead@x.io", "last_name": "L"}})
    assert again.status_code == 400 and "already been taken" in again.text
    clock.advance(5)
    assert _lookup(api, "lead@x.io", "lead") == [lead]


def test_upserts_match_at_once_unless_told_to_lag(make_api: MakeApi, clock: FakeClock) -> None:
    body = {"unique_identifier": {"emails": "up@x.io"}, "contact": {"last_name": "Up"}}
    atomic = make_api(lookup_delay=20)
    first = atomic.post("/contacts/upsert", body).json()["contact"]["id"]
    assert atomic.post("/contacts/upsert", body).json()["contact"]["id"] == first
    assert len(atomic.state.records["contacts"]) == 1

    lagging = make_api(lookup_delay=20, lookup_delay_upserts=True)
    first = lagging.post("/contacts/upsert", body).json()["contact"]["id"]
    refused = lagging.post("/contacts/upsert", body)
    assert refused.status_code == 400 and "already been taken" in refused.text
    assert len(lagging.state.records["contacts"]) == 1
    clock.advance(20)
    assert lagging.post("/contacts/upsert", body).json()["contact"]["id"] == first


def test_cli_flags() -> None:
    app = typer.Typer()
    app.command("sandbox")(sandbox_command)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["sandbox", "--help"], terminal_width=200)
    assert "--lookup-delay" in result.output and "--lookup-delay-upserts" in result.output
    refused = CliRunner().invoke(app, ["sandbox", "--lookup-delay", "-1"])
    assert refused.exit_code != 0 and "--lookup-delay" in refused.output
