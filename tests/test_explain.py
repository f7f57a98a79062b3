"""The ``explain`` command: config + event file -> operations and explanation, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from freshsales_destination.explain import explain_command

CONFIG = """
[[sources]]
write_key = "wk"
destination = "acme"

[destinations.acme]
product = "{product}"
domain = "acme"
api_key = "secret-key"
{extra}

[destinations.acme.mapping.track_events."Order Completed"]
action = "deal"
stage = "Won"
"""

EVENT = {
    "type": "identify",
    "messageId": "m-1",
    "timestamp": "2024-05-01T12:00:00Z",
    "userId": "97980cfea0067",
    "traits": {
        "firstName": "John",
        "lastName": "Doe",
        "email": "john.doe@example.com",
        "cfAlternateNumber": "98765432",
        "cfUnknown": "x",
        "company": {"name": "Example.com"},
    },
}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("explain")(explain_command)
    app.command("noop")(lambda: None)  # keeps "explain" a subcommand
    return app


def _files(tmp_path: Path, product: str = "suite", extra: str = "") -> tuple[Path, Path]:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(product=product, extra=extra))
    event = tmp_path / "e.json"
    event.write_text(json.dumps(EVENT))
    return config, event


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), ["explain", *args])
    return result.exit_code, result.stdout, result.stderr


def test_prints_operations_and_explanation(tmp_path: Path) -> None:
    config, event = _files(tmp_path)
    code, out, _ = _run(str(event), "--config", str(config))
    assert code == 0
    doc = json.loads(out)
    assert [op["kind"] for op in doc["operations"]] == [
        "upsert_contact",
        "upsert_sales_account",
        "link_sales_account",
    ]
    assert doc["explanation"]["status"] == "planned"
    dropped = {e["source"]: e["reason"] for e in doc["explanation"]["entries"] if e["outcome"] == "dropped"}
    assert "cf_unknown" in dropped["traits.cfUnknown"]
    assert doc["destination"] == "acme" and doc["product"] == "suite"
    assert doc["schema"].startswith("built-in")
    assert doc["schema_source"] == "built-in default"


def test_classic_makes_a_lead(tmp_path: Path) -> None:
    config, event = _files(tmp_path, product="classic")
    code, out, _ = _run(str(event), "--config", str(config), "--destination", "acme")
    assert code == 0
    assert [op["kind"] for op in json.loads(out)["operations"]] == ["upsert_lead"]


def test_schema_file_and_identity(tmp_path: Path) -> None:
    config, event = _files(tmp_path)
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "contacts": {"fields": [{"name": "first_name", "type": "text", "default": True}]},
                "selectors": {"deal_stages": {"deal_stages": [{"id": 44, "name": "Won"}]}},
            }
        )
    )
    identity = tmp_path / "id.json"
    identity.write_text(json.dumps({"record_type": "contact", "record_id": 5, "sales_account_ids": [3]}))
    code, out, _ = _run(
        str(event), "--config", str(config), "--schema", str(schema), "--identity", str(identity)
    )
    assert code == 0
    doc = json.loads(out)
    person = doc["operations"][0]
    assert person["fields"]["first_name"] == "John"
    assert "last_name" not in person["fields"]  # not in this schema
    assert doc["operations"][2]["fields"]["is_primary"] is False
    assert doc["schema"] == str(schema)
    assert doc["schema_source"] == "file"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('mapping = { default_lifecycle_stage = "Nope" }', "no lifecycle stage named 'Nope'"),
        ('mapping = { track_default = "track_api" }', "no app_token"),
        ('mapping = { surprise = 1 }', "invalid mapping settings"),
    ],
)
def test_configuration_errors_exit_2(tmp_path: Path, extra: str, message: str) -> None:
    config = tmp_path / "c.toml"
    text = CONFIG.format(product="suite", extra="").replace(
        '[destinations.acme.mapping.track_events."Order Completed"]\naction = "deal"\nstage = "Won"\n', ""
    )
    config.write_text(text.replace('api_key = "secret-key"', f'api_key = "secret-key"\n{extra}'))
    event = tmp_path / "e.json"
    event.write_text(json.dumps(EVENT))
    code, out, err = _run(str(event), "--config", str(config))
    assert code == 2
    assert out == ""
    assert message in err


def test_bad_event_file(tmp_path: Path) -> None:
    config, event = _files(tmp_path)
    event.write_text("{not json")
    code, _, err = _run(str(event), "--config", str(config))
    assert code == 2 and "not valid JSON" in err


def test_unknown_destination(tmp_path: Path) -> None:
    config, event = _files(tmp_path)
    code, _, err = _run(str(event), "--config", str(config), "--destination", "other")
    assert code == 2 and "no destination named 'other'" in err


def test_non_object_event_is_explained_not_an_error(tmp_path: Path) -> None:
    config, event = _files(tmp_path)
    event.write_text("[1, 2]")
    code, out, _ = _run(str(event), "--config", str(config))
    assert code == 0
    assert json.loads(out)["explanation"]["reason_code"] == "not_an_object"


# -- the schema the delivery engine cached in the store ------------------------------------------

CACHED_SCHEMA = {
    "contacts": {"fields": [{"name": "first_name", "type": "text", "default": True}]},
    "selectors": {"deal_stages": [{"id": 44, "name": "Won"}]},
}


def _with_store(tmp_path: Path, product: str = "suite") -> tuple[Path, Path, Path]:
    config, event = _files(tmp_path, product)
    db = tmp_path / "store" / "queue.db"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n' + config.read_text())
    return config, event, db


def _cache(db: Path, value: object, destination: str = "acme") -> None:
    from freshsales_destination.delivery.schema_cache import NAMESPACE
    from freshsales_destination.store.sqlite import SQLiteStore

    store = SQLiteStore(db)
    store.open()
    try:
        store.kv_put(NAMESPACE, destination, json.dumps(value).encode(), now=1_714_564_800.0)
    finally:
        store.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """explain must never call Freshsales: any HTTP request fails the test."""
    import httpx2

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("explain made an HTTP request")

    monkeypatch.setattr(httpx2.Client, "send", refuse)
    monkeypatch.setattr(httpx2.AsyncClient, "send", refuse)


@pytest.mark.usefixtures("no_network")
def test_without_schema_the_store_cache_is_used(tmp_path: Path) -> None:
    config, event, db = _with_store(tmp_path)
    _cache(db, {"fetched_at": 1_714_564_800.0, "schema": CACHED_SCHEMA})
    code, out, err = _run(str(event), "--config", str(config))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_source"] == "store cache"
    assert "2024-05-01T12:00:00Z" in doc["schema"] and "'acme'" in doc["schema"]
    person = doc["operations"][0]
    assert person["fields"]["first_name"] == "John"
    assert "last_name" not in person["fields"]  # the cached account has no such field


@pytest.mark.usefixtures("no_network")
def test_a_schema_file_wins_over_the_store_cache(tmp_path: Path) -> None:
    config, event, db = _with_store(tmp_path)
    _cache(db, {"fetched_at": 1_714_564_800.0, "schema": CACHED_SCHEMA})
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"base": "default"}))
    code, out, _ = _run(str(event), "--config", str(config), "--schema", str(schema))
    doc = json.loads(out)
    assert code == 0 and doc["schema_source"] == "file" and doc["schema"] == str(schema)
    assert doc["operations"][0]["fields"]["last_name"] == "Doe"


@pytest.mark.usefixtures("no_network")
def test_no_store_means_the_default_schema_and_no_store_is_created(tmp_path: Path) -> None:
    config, event, db = _with_store(tmp_path)
    code, out, _ = _run(str(event), "--config", str(config))
    doc = json.loads(out)
    assert code == 0 and doc["schema_source"] == "built-in default"
    assert "no store at" in doc["schema"]
    assert not db.exists() and not db.parent.exists()


@pytest.mark.parametrize(
    ("value", "destination", "why"),
    [
        (None, "other", "no schema cached for 'acme'"),
        ({"fetched_at": 0}, "acme", "invalidated"),  # what SchemaCache.invalidate leaves
        ({"fetched_at": 1.0, "schema": {"contacts": "nope"}}, "acme", "malformed"),
    ],
)
@pytest.mark.usefixtures("no_network")
def test_a_store_without_a_usable_cache_means_the_default_schema(
    tmp_path: Path, value: object, destination: str, why: str
) -> None:
    config, event, db = _with_store(tmp_path)
    _cache(db, value, destination)
    code, out, err = _run(str(event), "--config", str(config))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_source"] == "built-in default"
    assert why in doc["schema"]
    assert doc["operations"][0]["fields"]["last_name"] == "Doe"


@pytest.mark.usefixtures("no_network")
def test_the_cache_of_a_classic_destination_is_read_as_classic(tmp_path: Path) -> None:
    config, event, db = _with_store(tmp_path, "classic")
    _cache(db, {"fetched_at": 1_714_564_800.0,
                "schema": {"leads": {"fields": [{"name": "email", "type": "text", "default": True}]}}})
    code, out, err = _run(str(event), "--config", str(config))
    doc = json.loads(out)
    assert code == 0, err
    assert doc["schema_source"] == "store cache"
    lead = doc["operations"][0]
    assert lead["kind"] == "upsert_lead" and "first_name" not in lead["fields"]


SANDBOX_CONFIG = """
[store]
url = "sqlite:///{db}"

[[sources]]
write_key = "wk"
destination = "acme"

[destinations.acme]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "explain-sandbox-key"
"""


def test_schema_comes_from_the_sandbox_the_destination_points_at(tmp_path: Path) -> None:
    from freshsales_destination.sandbox import SandboxOptions
    from freshsales_destination.sandbox.testing import running_sandbox

    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"contacts": [
        {"name": "cf_alternate_number", "label": "Alternate number", "type": "text"},
        {"name": "cf_unknown", "label": "Now known", "type": "text"},
    ]}))
    options = SandboxOptions(api_key="explain-sandbox-key", seed_path=seed)
    with running_sandbox(options) as sandbox:
        config = tmp_path / "c.toml"
        config.write_text(SANDBOX_CONFIG.format(db=tmp_path / "q.db", base_url=sandbox.base_url))
        event = tmp_path / "e.json"
        event.write_text(json.dumps(EVENT))
        code, out, err = _run("--config", str(config), str(event))
        assert code == 0, err
        doc = json.loads(out)
        assert doc["schema_source"] == "sandbox"
        fields = doc["operations"][0]["fields"]
        # The sandbox's own custom field is known, so the trait is mapped, not dropped.
        assert fields["custom_field"]["cf_unknown"] == "x"
        writes = [e for e in sandbox.request_log() if e["method"] != "GET"]
        assert writes == []  # explain only reads the field settings


def test_an_unreachable_sandbox_falls_back_to_the_default(tmp_path: Path) -> None:
    from tests.support.server import free_port

    config = tmp_path / "c.toml"
    config.write_text(SANDBOX_CONFIG.format(
        db=tmp_path / "q.db", base_url=f"http://127.0.0.1:{free_port()}/crm/sales"))
    event = tmp_path / "e.json"
    event.write_text(json.dumps(EVENT))
    code, out, err = _run("--config", str(config), str(event))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_source"] == "built-in default"
    assert "could not be read" in doc["schema"]


def test_explains_activity_dates_taken_from_properties(tmp_path: Path) -> None:
    rule = (
        '\n[destinations.acme.mapping.track_events."Demo Booked"]\naction = "sales_activity"\n'
        'activity_type = "Meeting"\nstart_date_property = "properties.startDate"\n'
        'end_date_property = "properties.endDate"\n'
    )
    config, event = _files(tmp_path)
    config.write_text(config.read_text() + rule)
    event.write_text(json.dumps({
        "type": "track", "userId": "u1", "messageId": "m-2", "timestamp": "2024-05-01T12:00:00Z",
        "event": "Demo Booked", "context": {"traits": {"email": "a@b.co"}},
        "properties": {"startDate": "2024-06-03T09:00:00Z", "endDate": "yesterday"},
    }))
    code, out, _ = _run(str(event), "--config", str(config))
    assert code == 0
    doc = json.loads(out)
    [activity] = [op for op in doc["operations"] if op["kind"] == "create_sales_activity"]
    assert activity["fields"]["start_date"] == "2024-06-03T09:00:00.000Z"
    assert activity["fields"]["end_date"] == "2024-06-03T09:00:00.000Z"
    entries = {e["source"]: e for e in doc["explanation"]["entries"]}
    assert entries["properties.startDate"]["outcome"] == "mapped"
    assert entries["properties.endDate"]["outcome"] == "dropped"
    assert "is not a date" in entries["properties.endDate"]["reason"]


def test_explain_says_a_rudderstack_identify_takes_its_traits_from_context(
    tmp_path: Path,
) -> None:
    config, event = _files(tmp_path)
    event.write_text(json.dumps({
        "type": "identify", "messageId": "r-1", "userId": "u-7",
        "context": {"traits": {"email": "ada@example.com", "firstName": "Ada"},
                    "library": {"name": "analytics-python", "version": "2.1.9"}},
    }))
    code, out, _ = _run(str(event), "--config", str(config))
    assert code == 0
    doc = json.loads(out)
    assert doc["operations"][0]["fields"]["first_name"] == "Ada"
    entries = {e["source"]: e for e in doc["explanation"]["entries"]}
    assert entries["context.traits"]["outcome"] == "used"
    assert "context.traits are its traits" in entries["context.traits"]["reason"]
    assert entries["context.traits.firstName"]["target"] == "contact.first_name"


def test_an_event_older_than_event_max_age_days_is_filtered_as_delivery_would(
    tmp_path: Path,
) -> None:
    config, event = _files(tmp_path, extra="event_max_age_days = 30")
    old = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "t-1",
           "timestamp": "2024-05-01T12:00:00Z"}
    event.write_text(json.dumps(old))
    code, out, _ = _run(str(event), "--config", str(config))
    assert code == 0
    doc = json.loads(out)
    assert doc["operations"] == []
    assert doc["explanation"]["status"] == "filtered"
    assert doc["explanation"]["reason_code"] == "event_too_old"
    assert "older than event_max_age_days = 30" in doc["explanation"]["reason"]
    # A record is never too old; an event without the setting is planned.
    event.write_text(json.dumps({**EVENT, "timestamp": "2024-05-01T12:00:00Z"}))
    assert json.loads(_run(str(event), "--config", str(config))[1])["explanation"]["status"] == "planned"
    config, event = _files(tmp_path)
    event.write_text(json.dumps(old))
    assert json.loads(_run(str(event), "--config", str(config))[1])["explanation"]["status"] == "planned"
