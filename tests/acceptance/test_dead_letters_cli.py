from __future__ import annotations

import json
from pathlib import Path

import orjson
from typer.testing import CliRunner

from freshsales_destination.cli import _register, app
from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.sqlite import SQLiteStore

CONFIG = """
[store]
url = "sqlite:///{db}"

[[sources]]
write_key = "wk"
destination = "acme"

[destinations.acme]
domain = "acme"
api_key = "k"
"""


def _seed(db: Path) -> list[int]:
    store = SQLiteStore(db)
    store.open()
    body = orjson.dumps({"type": "identify"})
    store.append([
        NewMessage(source="web", destination="acme", message_id=f"m{i}", type="identify",
                   status="pending", reason=None, lane=f"u:{i}", received_at=1.0, event_at=1.0,
                   raw=body, message=body)
        for i in range(3)
    ])
    seqs = [m.seq for m in store.list_messages()]
    store.finish(seqs, status="dead", now=2.0, reason="HTTP 400: Email is invalid")
    store.close()
    return seqs


def test_list_retry_and_drop(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    seqs = _seed(db)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(db=db))
    _register()
    runner = CliRunner()
    listed = runner.invoke(app, ["dead-letters", "list", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)["messages"]
    assert sorted(r["seq"] for r in rows) == seqs  # newest first
    assert {r["error"] for r in rows} == {"HTTP 400: Email is invalid"}
    retried = runner.invoke(app, ["dead-letters", "retry", "--config", str(config), str(seqs[0])])
    assert retried.exit_code == 0 and "requeued 1 of 1" in retried.output
    dropped = runner.invoke(
        app, ["dead-letters", "drop", "--config", str(config), str(seqs[0]), str(seqs[1])]
    )
    assert dropped.exit_code == 0 and "dropped 1 of 2" in dropped.output
    status = runner.invoke(app, ["status", "--json", "--config", str(config)])
    out = json.loads(status.output)
    assert out.pop("events_via")["acme"].startswith("note (no app_token)")
    destinations = out.pop("destinations")
    assert out == {"dead": 1, "dropped": 1, "pending": 1, "unsorted": 0}
    assert destinations["acme"]["state"] == "healthy"
    assert destinations["acme"]["backlog"] == 1


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(db=tmp_path / "q.db").replace('domain = "acme"', ""))
    _register()
    result = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    assert result.exit_code == 2
    assert "destinations.acme" in result.output
