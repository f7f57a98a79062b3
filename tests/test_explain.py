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
