"""How long the sandbox takes to write and find contacts by email as its tables grow.

Not a test (pytest does not collect ``bench/``). Run from the repository root:

    .venv/bin/python bench/sandbox_bulk.py [--contacts 20000] [--job 100] [--accounts 200]

Everything runs in this process against the sandbox's ASGI app (no network): first
``--accounts`` sales accounts are written by bulk upsert (by name), then ``--contacts``
contacts by bulk upsert on ``emails`` in jobs of ``--job`` items (jobs finish at once), each
contact linked to one of the accounts; then the same contacts again (every item now matches an
existing contact: an update), then filtered searches on ``contact_email.email`` with ``--job``
addresses each (one per ``10 x --job`` contacts, in upper case: the sandbox compares addresses
in lower case), and filtered searches of ``sales_account`` by name (``--job`` names each). Prints
the wall time of each phase as it ends, and the upserts per second. The figure to compare
between versions of the sandbox is the time per phase at the same sizes; wall time, so run it
on a quiet machine or compare runs made side by side.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from starlette.testclient import TestClient

from freshsales_destination.sandbox import SandboxOptions, build_app

KEY = "bench-key"
AUTH = {"Authorization": f"Token token={KEY}"}
API = "/crm/sales/api"


def _post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    response = client.post(API + path, json=body, headers=AUTH)
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def _bulk(client: TestClient, entity: str, items: list[dict[str, Any]]) -> None:
    """One bulk job; it finishes on the POST (``bulk_job_seconds=0``), so its status is final."""
    queued = _post(client, f"/{entity}/bulk_upsert", {entity: items})
    job_path = queued["job_status_url"].split("/api", 1)[1]
    status = client.get(API + job_path, headers=AUTH).json()
    if status["status"] != "SUCCESS" or '"failed":0' not in status["data"]:
        raise SystemExit(f"bulk job did not succeed whole: {status}")


def _contact_items(start: int, stop: int, accounts: int, round_: int) -> list[dict[str, Any]]:
    return [{"emails": f"user{i}@example.com",
             "data": {"first_name": f"User{i}", "job_title": f"round {round_}",
                      "sales_accounts": [{"id": _account_ids[i % accounts], "is_primary": True}]}}
            for i in range(start, stop)]


_account_ids: list[int] = []


class _Timings(dict[str, float]):
    """Phase -> seconds, each printed as it is recorded."""

    def __init__(self, contacts: int) -> None:
        super().__init__()
        self.contacts = contacts

    def __setitem__(self, phase: str, seconds: float) -> None:
        super().__setitem__(phase, seconds)
        rate = f" ({self.contacts / seconds:,.0f} upserts/s)" if phase in ("create", "update") else ""
        print(f"  {phase:<17} {seconds:8.2f} s{rate}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--job", type=int, default=100, help="items per bulk job and emails per search")
    parser.add_argument("--accounts", type=int, default=200)
    args = parser.parse_args()
    options = SandboxOptions(api_key=KEY, rate_limit_per_hour=10**9, rate_limit_per_minute=10**9,
                             bulk_job_seconds=0.0, bulk_max_items=max(args.job, 100))
    app = build_app(options)
    print(f"sandbox bulk: {args.contacts} contacts in jobs of {args.job}, {args.accounts} accounts", flush=True)
    with TestClient(app) as client:
        timings = _Timings(args.contacts)
        started = time.perf_counter()
        for start in range(0, args.accounts, args.job):
            stop = min(start + args.job, args.accounts)
            _bulk(client, "sales_accounts", [{"name": f"Account {i}", "data": {"website": f"a{i}.example"}}
                                             for i in range(start, stop)])
        timings["accounts"] = time.perf_counter() - started
        state = app.state.sandbox
        by_name = {r["name"]: r["id"] for r in state.table("sales_accounts").values()}
        _account_ids.extend(by_name[f"Account {i}"] for i in range(args.accounts))
        for round_, phase in ((1, "create"), (2, "update")):
            started = time.perf_counter()
            for start in range(0, args.contacts, args.job):
                _bulk(client, "contacts", _contact_items(start, min(start + args.job, args.contacts),
                                                         args.accounts, round_))
            timings[phase] = time.perf_counter() - started
        if len(state.table("contacts")) != args.contacts:
            raise SystemExit(f"expected {args.contacts} contacts, found {len(state.table('contacts'))}")
        started = time.perf_counter()
        for start in range(0, args.contacts, args.job * 10):
            emails = [f"USER{i}@example.com" for i in range(start, min(start + args.job, args.contacts))]
            body = {"filter_rule": [{"attribute": "contact_email.email", "operator": "is_in", "value": emails}],
                    "page": 1, "per_page": 100}
            found = _post(client, "/filtered_search/contact", body)["contacts"]
            if len(found) != len(emails):
                raise SystemExit(f"a search for {len(emails)} emails found {len(found)}")
        timings["contact searches"] = time.perf_counter() - started  # one search per 10 jobs
        started = time.perf_counter()
        for start in range(0, args.accounts, args.job):
            names = [f"account {i}" for i in range(start, min(start + args.job, args.accounts))]
            body = {"filter_rule": [{"attribute": "name", "operator": "is_in", "value": names}],
                    "page": 1, "per_page": 100}
            if len(_post(client, "/filtered_search/sales_account", body)["sales_accounts"]) != len(names):
                raise SystemExit("an account search missed names")
        timings["account searches"] = time.perf_counter() - started


if __name__ == "__main__":
    main()
