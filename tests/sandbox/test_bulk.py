"""The sandbox's bulk upsert (reference §13.1): item shape, jobs on the sandbox clock, the job's
``data`` as a JSON string, per-record failures, the 404 / 405 switches and the rate limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from freshsales_destination.sandbox import FakeClock
from freshsales_destination.sandbox.cli import sandbox_command
from tests.sandbox.conftest import Api, MakeApi


def _job_id(answer: Any) -> int:
    assert answer.status_code == 200, answer.text
    url = answer.json()["job_status_url"]
    assert "/crm/sales/api/job_statuses/" in url
    return int(url.rsplit("/", 1)[1])


def _poll(api: Api, job: int) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = api.get(f"/job_statuses/{job}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert isinstance(body["data"], str)  # JSON inside a string, as reported
    return body, orjson.loads(body["data"])


def _contacts(api: Api) -> dict[str, dict[str, Any]]:
    records = api.get("/_sandbox/state").json()["records"]["contacts"]
    return {r["email"]: r for r in records}


def test_a_contact_job_writes_its_records_when_it_finishes(api: Api, clock: FakeClock) -> None:
    existing = api.post("/contacts", {"contact": {"email": "old@example.com", "first_name": "Old"}})
    old_id = existing.json()["contact"]["id"]
    job = _job_id(api.post("/contacts/bulk_upsert", {"contacts": [
        {"emails": "a@example.com", "data": {"first_name": "A", "last_name": "One"}},
        {"emails": "OLD@example.com", "data": {"job_title": "CTO"}},
        {"id": str(old_id), "data": {"city": "Oslo"}},
    ]}))
    body, data = _poll(api, job)
    assert body["status"] == "IN_PROGRESS" and data == {}
    assert "a@example.com" not in _contacts(api)  # nothing written before the job finishes
    clock.advance(api.state.options.bulk_job_seconds)
    body, data = _poll(api, job)
    assert body["status"] == "SUCCESS" and body["job_type_name"] == "contact_bulk_upsert"
    assert data == {"record_status": {"succeeded": 3, "failed": 0}, "detailed_failure_report": []}
    contacts = _contacts(api)
    assert contacts["a@example.com"]["first_name"] == "A"
    assert contacts["old@example.com"]["id"] == old_id  # upserted by email, not duplicated
    assert contacts["old@example.com"]["job_title"] == "CTO"
    assert contacts["old@example.com"]["city"] == "Oslo"
    assert len(contacts) == 2
    assert "id" not in str(data)  # no source shows created ids in the job answer


def test_failures_are_reported_per_record_as_the_single_routes_validate(api: Api) -> None:
    api.post("/sales_accounts", {"sales_account": {"name": "Acme"}})
    job = _job_id(api.post("/contacts/bulk_upsert", {"contacts": [
        {"emails": "ok@example.com", "data": {"first_name": "Ok"}},
        {"emails": "not-an-email", "data": {"first_name": "Bad"}},
        {"emails": "typed@example.com", "data": {"do_not_disturb": "maybe"}},
        {"id": 99, "data": {"first_name": "Nobody"}},
        {"data": {"first_name": "No key"}},
    ]}))
    api.state.clock.advance(10)  # type: ignore[attr-defined]
    _, data = _poll(api, job)
    assert data["record_status"] == {"succeeded": 1, "failed": 4}
    report = data["detailed_failure_report"]
    assert report[0] == {"emails": "not-an-email", "error_message": ["Email not-an-email is invalid"]}
    assert report[1] == {"emails": "typed@example.com",
                         "error_message": ["The type for do_not_disturb is invalid."]}
    assert report[2] == {"id": 99, "error_message": ["Record not found"]}
    assert "error_message" in report[3] and "emails" not in report[3]
    assert set(_contacts(api)) == {"ok@example.com"}


def test_accounts_and_deals_by_name(api: Api, clock: FakeClock) -> None:
    jobs = [
        _job_id(api.post("/sales_accounts/bulk_upsert", {"sales_accounts": [
            {"name": "Acme", "data": {"website": "acme.example"}},
            {"name": "Initech", "data": {"number_of_employees": "many"}},
        ]})),
        _job_id(api.post("/deals/bulk_upsert", {"deals": [
            {"name": "Big", "data": {"amount": 100}},
            {"name": "No amount", "data": {}},
        ]})),
    ]
    clock.advance(5)
    _, accounts = _poll(api, jobs[0])
    _, deals = _poll(api, jobs[1])
    assert accounts["record_status"] == {"succeeded": 1, "failed": 1}
    assert accounts["detailed_failure_report"][0]["name"] == "Initech"
    assert deals["record_status"] == {"succeeded": 1, "failed": 1}
    assert deals["detailed_failure_report"] == [{"name": "No amount", "error_message": ["Amount can't be blank"]}]
    state = api.get("/_sandbox/state").json()
    assert [a["name"] for a in state["records"]["sales_accounts"]] == ["Acme"]
    assert [d["name"] for d in state["records"]["deals"]] == ["Big"]
    assert state["bulk_jobs"] == {"total": 2, "pending": 0}


def test_links_in_bulk_items_are_kept_or_dropped(make_api: MakeApi, clock: FakeClock) -> None:
    for reading, linked in (("kept", True), ("dropped", False)):
        api = make_api(bulk_links=reading, bulk_job_seconds=0)
        account = api.post("/sales_accounts", {"sales_account": {"name": "Acme"}}).json()["sales_account"]
        _job_id(api.post("/contacts/bulk_upsert", {"contacts": [
            {"emails": "a@example.com", "data": {"sales_accounts": [{"id": account["id"], "is_primary": True}]}},
        ]}))
        contact = _contacts(api)["a@example.com"]
        links = api.get(f"/contacts/{contact['id']}?include=sales_accounts").json()["contact"]["sales_accounts"]
        assert bool(links) is linked, reading


def test_request_shape_is_checked_at_once(api: Api) -> None:
    too_many = [{"emails": f"p{i}@example.com", "data": {}} for i in range(101)]
    assert api.post("/contacts/bulk_upsert", {"contacts": too_many}).status_code == 400
    assert api.post("/contacts/bulk_upsert", {"contacts": []}).status_code == 400
    assert api.post("/contacts/bulk_upsert", {"contact": [{"emails": "a@b.c"}]}).status_code == 400
    assert api.state.bulk.jobs == {}
    assert api.get("/job_statuses/123").status_code == 404


def test_no_bulk_api_answers_404(make_api: MakeApi) -> None:
    api = make_api(bulk_api="absent")
    assert api.post("/contacts/bulk_upsert", {"contacts": [{"emails": "a@b.c", "data": {}}]}).status_code == 404
    classic = make_api(product="classic")
    assert classic.post("/contacts/bulk_upsert", {"contacts": [{"emails": "a@b.c", "data": {}}]}).status_code == 404


def test_transient_405s_then_accepted(make_api: MakeApi) -> None:
    api = make_api(bulk_405s=2)
    body = {"contacts": [{"emails": "a@example.com", "data": {}}]}
    assert [api.post("/contacts/bulk_upsert", body).status_code for _ in range(3)] == [405, 405, 200]
    assert len(api.state.bulk.jobs) == 1


def test_posts_and_polls_count_against_the_rate_limit(make_api: MakeApi) -> None:
    api = make_api(rate_limit_per_hour=3)
    job = _job_id(api.post("/contacts/bulk_upsert", {"contacts": [{"emails": "a@example.com", "data": {}}]}))
    first = api.get(f"/job_statuses/{job}")
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert api.get(f"/job_statuses/{job}").status_code == 200
    assert api.get(f"/job_statuses/{job}").status_code == 429


def test_cli_switches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_build(options: Any) -> Any:
        seen["options"] = options
        raise typer.Exit(0)

    monkeypatch.setattr("freshsales_destination.sandbox.app.build_app", fake_build)
    app = typer.Typer()
    app.command()(sandbox_command)
    result = CliRunner().invoke(app, ["--bulk-api", "absent", "--bulk-job-seconds", "7", "--bulk-405s", "3",
                                      "--bulk-links", "dropped"])
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert (options.bulk_api, options.bulk_job_seconds, options.bulk_405s, options.bulk_links) == (
        "absent", 7.0, 3, "dropped")
    bad = CliRunner().invoke(app, ["--bulk-links", "sometimes"])
    assert bad.exit_code != 0
