"""The admin API over a PostgreSQL store (its own schema): search, pagination, the journey,
stats, failures and a retry, as on SQLite (test_api.py)."""

from __future__ import annotations

from pathlib import Path

from freshsales_destination.store.postgres import PostgresStore
from tests.admin.conftest import make_admin
from tests.admin.openapi_check import assert_conforms
from tests.admin.test_api import INVALID_STATUS, UPSERT, identify, status_of
from tests.contract.conftest import PgSchema


def test_the_admin_api_over_postgresql(tmp_path: Path, pg_schema: PgSchema) -> None:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=4)
    for admin in make_admin(tmp_path, store=store):
        for mid in ("pg-a", "pg-b", "pg-c"):
            admin.pipeline.send("/v1/identify", identify("pat", mid))
        admin.pipeline.deliver()
        admin.script("POST", UPSERT, {
            "status": 400, "body": {"errors": {"code": 400, "message": [INVALID_STATUS]}},
        })
        admin.pipeline.send("/v1/identify", identify("quin", "pg-dead"))
        admin.pipeline.deliver()

        first = admin.ok("/admin/v1/messages", user_id="pat", limit=2)
        assert_conforms(first, "/admin/v1/messages")
        second = admin.ok("/admin/v1/messages", user_id="pat", limit=2, cursor=first["next_cursor"])
        assert second["next_cursor"] is None
        assert [m["message_id"] for m in first["messages"] + second["messages"]] == [
            "pg-c", "pg-b", "pg-a"]
        (dead,) = admin.ok("/admin/v1/messages", status="dead")["messages"]
        assert dead["message_id"] == "pg-dead"

        journey = admin.ok(f"/admin/v1/messages/{dead['id']}")
        assert_conforms(journey, "/admin/v1/messages/{id}")
        assert [s["detail"]["status"] for s in journey["steps"] if s["kind"] == "call"] == [400]

        (crm,) = admin.ok("/admin/v1/stats", window="1h")["destinations"]
        assert crm["totals"]["received"] == 4 and crm["totals"]["dead"] == 1
        assert crm["totals"]["delivered"] == 3
        (group,) = admin.ok("/admin/v1/failures")["failures"]
        assert group["count"] == 1 and INVALID_STATUS in group["reason"]

        response = admin.post("/admin/v1/dead-letters/retry", {"reason": "Invalid contact"})
        assert response.json() == {"action": "retry", "changed": 1}
        assert status_of(admin, dead["id"]) == "pending"
