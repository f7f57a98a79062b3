"""The client's bulk upsert and job polling against the real sandbox over HTTP, and the pure
reading of job answers (freshsales/bulk.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import orjson
import pytest

from freshsales_destination.freshsales import (
    FreshsalesClient,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PermanentError,
    UnexpectedResponse,
)
from freshsales_destination.freshsales.bulk import job_id_from_url, parse_job_status
from freshsales_destination.sandbox import FakeClock, SandboxOptions
from freshsales_destination.sandbox.testing import RunningSandbox, running_sandbox

KEY = "bulk-client-key-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[RunningSandbox]:
    changes = getattr(request, "param", {})
    with running_sandbox(SandboxOptions(api_key=KEY, **changes), clock=clock) as running:
        yield running


def _client(sandbox: RunningSandbox) -> FreshsalesClient:
    return FreshsalesClient(sandbox.base_url, KEY, allow_custom_base_url=True)


@pytest.mark.anyio
async def test_bulk_upsert_then_poll_until_success(sandbox: RunningSandbox, clock: FakeClock) -> None:
    async with _client(sandbox) as client:
        job_id, reply = await client.bulk_upsert("contact", [
            {"emails": "a@example.com", "data": {"first_name": "A"}},
            {"emails": "broken", "data": {"first_name": "B"}},
        ])
        assert reply.rate.remaining is not None  # rate headers read as for every call
        status, _ = await client.job_status(job_id)
        assert not status.finished and status.status == "IN_PROGRESS"
        clock.advance(5)
        status, _ = await client.job_status(job_id)
    assert status.finished and status.status == "SUCCESS"
    assert (status.succeeded, status.failed) == (1, 1)
    assert [(f.key, f.value, f.messages) for f in status.failures] == [
        ("emails", "broken", ("Email broken is invalid",))]
    requests = [(e["method"], e["route"]) for e in sandbox.request_log()]
    assert requests == [("POST", "/api/contacts/bulk_upsert"),
                        ("GET", f"/api/job_statuses/{job_id}"), ("GET", f"/api/job_statuses/{job_id}")]


@pytest.mark.anyio
async def test_accounts_and_deals(sandbox: RunningSandbox, clock: FakeClock) -> None:
    async with _client(sandbox) as client:
        accounts, _ = await client.bulk_upsert("sales_account", [{"name": "Acme", "data": {}}])
        deals, _ = await client.bulk_upsert("deal", [{"name": "Big", "data": {"amount": 5}}])
        clock.advance(5)
        assert (await client.job_status(accounts))[0].succeeded == 1
        assert (await client.job_status(deals))[0].succeeded == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sandbox", [{"bulk_api": "absent"}], indirect=True)
async def test_no_bulk_api_is_not_found(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        with pytest.raises(NotFound):
            await client.bulk_upsert("contact", [{"emails": "a@example.com", "data": {}}])


@pytest.mark.anyio
@pytest.mark.parametrize("sandbox", [{"bulk_405s": 1}], indirect=True)
async def test_405_is_its_own_class(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        with pytest.raises(MethodNotAllowed) as caught:
            await client.bulk_upsert("contact", [{"emails": "a@example.com", "data": {}}])
        assert isinstance(caught.value, PermanentError) and caught.value.status == 405
        assert KEY not in str(caught.value)
        job_id, _ = await client.bulk_upsert("contact", [{"emails": "a@example.com", "data": {}}])
        assert job_id


@pytest.mark.anyio
async def test_refused_before_sending(sandbox: RunningSandbox) -> None:
    async with _client(sandbox) as client:
        with pytest.raises(InvalidArgument):
            await client.bulk_upsert("note", [{"id": 1, "data": {}}])
        with pytest.raises(InvalidArgument):
            await client.bulk_upsert("contact", [])
        with pytest.raises(InvalidArgument):
            await client.bulk_upsert("contact", [{"emails": f"{i}@x.io", "data": {}} for i in range(101)])
    assert sandbox.request_log() == []


@pytest.mark.anyio
async def test_answers_without_a_job_are_unexpected(sandbox: RunningSandbox) -> None:
    sandbox_url = sandbox.root_url + "/_sandbox/script"
    headers = sandbox.auth_headers
    httpx2.post(sandbox_url, headers=headers, json={
        "method": "POST", "path": "/api/contacts/bulk_upsert", "response": {"status": 202, "body": {"ok": 1}}})
    httpx2.post(sandbox_url, headers=headers, json={
        "method": "GET", "path": "/api/job_statuses/*",
        "response": {"status": 200, "body": {"status": "SUCCESS", "data": "{not json"}}})
    async with _client(sandbox) as client:
        with pytest.raises(UnexpectedResponse):
            await client.bulk_upsert("contact", [{"emails": "a@example.com", "data": {}}])
        with pytest.raises(UnexpectedResponse):
            await client.job_status("7")


def test_job_ids_come_only_from_the_url_path() -> None:
    assert job_id_from_url("https://acme.myfreshworks.com/crm/sales/api/job_statuses/123") == "123"
    assert job_id_from_url("https://x/api/job_statuses/abc-1?x=1") == "abc-1"
    assert job_id_from_url("https://x/api/bulk_jobs/1") is None
    assert job_id_from_url(None) is None
    assert job_id_from_url("https://x/api/job_statuses/../../contacts") is None


def test_job_answers_are_read_leniently_but_not_blindly() -> None:
    data = orjson.dumps({"record_status": {"succeeded": "2", "failed": 1},
                         "detailed_failure_report": [{"name": "Acme", "error_message": "Name is taken"}]})
    status = parse_job_status("1", {"status": "success", "progress": 100, "data": data.decode()})
    assert status.finished and status.status == "SUCCESS" and status.progress == 100.0
    assert (status.succeeded, status.failed) == (2, 1)
    assert status.failures[0].key == "name" and status.failures[0].messages == ("Name is taken",)
    assert parse_job_status("1", {"status": "IN_PROGRESS", "data": ""}).finished is False
    # An object instead of a string is read too; a status never seen counts as finished.
    assert parse_job_status("1", {"status": "FAILED", "data": {}}).finished
    for bad in ({}, {"status": 1}, {"status": "SUCCESS", "data": "[1]"}, {"status": "SUCCESS", "data": "{"}):
        with pytest.raises(ValueError):
            parse_job_status("1", bad)
