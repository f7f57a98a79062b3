"""The operator commands as a user runs them: the installed console script, in a subprocess.

Embedded mode: after the quick start (`serve` without --config in a directory), `status`,
`messages`, `explain` and `dead-letters` in that directory need no --config. With --config:
the same commands on a configured store. Human tables by default, JSON with --json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.sqlite import SQLiteStore
from tests.support.server import free_port

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).with_name("freshsales-destination")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FSD_")}


def cli(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, env=_env(), timeout=60,
    )
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def cli_json(*args: str, cwd: Path) -> Any:
    return json.loads(cli(*args, "--json", cwd=cwd).stdout)


def _serve(cwd: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", "--port", str(port), *extra], cwd=cwd, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            out, err = proc.communicate(timeout=15)
            raise AssertionError(f"serve did not start:\n{out}\n{err}")
        time.sleep(0.1)


def _wait(cwd: Path, predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        doc = cli_json("status", cwd=cwd)
        if predicate(doc):
            return doc
        assert time.monotonic() < deadline, f"{what}: {doc}"
        time.sleep(0.2)


def test_embedded_quick_start_then_every_command_without_config(tmp_path: Path) -> None:
    # Nothing served here yet: the commands say where they looked and what to pass.
    missing = cli("status", cwd=tmp_path, ok=False)
    assert missing.returncode == 2
    assert str(tmp_path / "data") in missing.stderr and "--config" in missing.stderr
    assert not (tmp_path / "data").exists()  # looking created nothing

    port = free_port()
    proc = _serve(tmp_path, port, "--log-format", "console")
    try:
        keys = json.loads((tmp_path / "data" / "embedded-secrets.json").read_text())
        sandbox = {"Authorization": f"Token token={keys['sandbox_api_key']}"}
        base = f"http://127.0.0.1:{port}"
        # The first contact write is refused for good: that identify becomes a dead letter.
        httpx2.post(
            f"{base}/sandbox/_sandbox/script", headers=sandbox,
            json={"method": "POST", "path": "/api/contacts/upsert", "responses": [
                {"status": 400, "body": {"errors": {"code": 400, "message": ["Email is invalid"]}}}
            ]},
        ).raise_for_status()

        def send(kind: str, body: dict[str, Any]) -> None:
            r = httpx2.post(f"{base}/v1/{kind}", json=body, auth=(keys["write_key"], ""))
            assert r.status_code == 200, r.text

        send("identify", {"userId": "ada", "messageId": "m-dead",
                          "traits": {"email": "ada@example.com"}})
        _wait(tmp_path, lambda d: d.get("dead") == 1, "the first identify dead")
        send("identify", {"userId": "bob", "messageId": "m-good",
                          "traits": {"email": "bob@example.com", "plan": "pro"}})
        send("page", {"userId": "bob", "messageId": "m-page"})  # no URL: the planner discards it
        _wait(tmp_path, lambda d: d.get("delivered") == 1 and d.get("discarded") == 1,
              "the second delivered, the page discarded")
        # check finds the embedded service as the other commands do: no --config needed.
        checked = cli("check", "--json", cwd=tmp_path)
        doc = json.loads(checked.stdout)
        assert doc["usable"] and doc["destinations"][0]["destination"] == "sandbox"
        assert keys["sandbox_api_key"] not in checked.stdout
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # Console logs (stderr is a pipe, --log-format console asked): uvicorn's lines in the
    # same renderer, never JSON.
    startup = [line for line in err.splitlines() if "Application startup complete" in line]
    assert startup and "[info" in startup[0] and not startup[0].lstrip().startswith("{")
    assert keys["write_key"] not in err and keys["sandbox_api_key"] not in err

    # status: a table by default; --json keeps its keys.
    table = cli("status", cwd=tmp_path).stdout
    assert "Destinations" in table and "sandbox" in table and "healthy" in table
    states = {line.split()[1] for line in table.splitlines() if line.startswith("│")}
    assert {"pending", "retrying", "dead", "delivered"} <= states  # shown at 0 too
    assert "drain records" in table and "drain events" in table
    doc = cli_json("status", cwd=tmp_path)
    assert {"dead", "delivered", "discarded", "unsorted", "events_via", "destinations"} <= doc.keys()
    assert doc["destinations"]["sandbox"]["state"] == "healthy"

    # messages list: filters, newest first, a table or JSON.
    listed = cli_json("messages", "list", cwd=tmp_path)
    assert [m["message_id"] for m in listed["messages"]] == ["m-page", "m-good", "m-dead"]
    bob = cli_json("messages", "list", "--user-id", "bob", "--type", "identify", cwd=tmp_path)
    assert [m["message_id"] for m in bob["messages"]] == ["m-good"]
    dead = cli_json("messages", "list", "--status", "dead", cwd=tmp_path)["messages"]
    assert [m["message_id"] for m in dead] == ["m-dead"]
    # Dead on its first 400: one delivery attempt, as its log line and journey say.
    assert dead[0]["attempts"] == 1
    assert [m["attempts"] for m in listed["messages"]] == [0, 1, 1]  # discarded: no call made
    page_one = cli_json("messages", "list", "--limit", "2", cwd=tmp_path)
    assert len(page_one["messages"]) == 2 and page_one["next_cursor"]
    page_two = cli_json("messages", "list", "--limit", "2", "--cursor", page_one["next_cursor"],
                        cwd=tmp_path)
    assert [m["message_id"] for m in page_two["messages"]] == ["m-dead"]
    assert page_two["next_cursor"] is None
    human = cli("messages", "list", "--status", "discarded", cwd=tmp_path).stdout
    assert "m-page" in human and "m-good" not in human
    # The admin API's values: retrying (pending after a failure), its limit bounds.
    assert cli_json("messages", "list", "--status", "retrying", cwd=tmp_path)["messages"] == []
    too_many = cli("messages", "list", "--limit", "501", cwd=tmp_path, ok=False)
    assert too_many.returncode == 2 and "--limit" in too_many.stderr and "500" in too_many.stderr
    assert cli_json("messages", "list", "--limit", "500", cwd=tmp_path)["messages"]
    bad = cli("messages", "list", "--status", "lost", cwd=tmp_path, ok=False)
    assert bad.returncode == 2 and "--status" in bad.stderr
    bad = cli("messages", "list", "--since", "yesterday-ish", cwd=tmp_path, ok=False)
    assert bad.returncode == 2 and "--since" in bad.stderr
    assert cli_json("messages", "list", "--since", "1h", cwd=tmp_path)["messages"]
    assert cli_json("messages", "list", "--until", "1h", cwd=tmp_path)["messages"] == []

    # messages show: the journey.
    good_id = bob["messages"][0]["id"]
    journey = cli_json("messages", "show", str(good_id), cwd=tmp_path)
    assert journey["message"]["message_id"] == "m-good"
    kinds = [step["kind"] for step in journey["steps"]]
    assert kinds[0] == "received" and "delivered" in kinds
    shown = cli("messages", "show", str(good_id), cwd=tmp_path).stdout
    assert "Journey" in shown and "delivered" in shown and "POST /api/contacts/upsert" in shown
    assert "traits.plan" in shown and "no Freshsales field named plan" in shown  # the plan's why
    nothing = cli("messages", "show", "999999", cwd=tmp_path, ok=False)
    assert nothing.returncode == 1 and "999999" in nothing.stderr
    # ... or by the event's messageId.
    by_message_id = cli_json("messages", "show", "m-good", cwd=tmp_path)
    assert by_message_id["message"]["id"] == good_id
    unknown = cli("messages", "show", "m-nowhere", cwd=tmp_path, ok=False)
    assert unknown.returncode == 1 and "m-nowhere" in unknown.stderr
    assert "integer" not in unknown.stderr

    # explain: a stored message, or an event file; no --config either way.
    explained = cli_json("explain", "--message", str(good_id), cwd=tmp_path)
    assert explained["operations"][0]["kind"] == "upsert_contact"
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "identify", "userId": "u9",
                                 "traits": {"email": "u9@example.com", "plan": "pro"}}))
    text = cli("explain", str(event), cwd=tmp_path).stdout
    assert "upsert_contact" in text and "traits.plan" in text and "dropped" in text

    # dead-letters: list, refuse everything without --all, retry by id, drop by reason.
    rows = cli_json("dead-letters", "list", "--json", cwd=tmp_path)["messages"]
    assert [r["message_id"] for r in rows] == ["m-dead"]
    assert "Email is invalid" in rows[0]["error"]
    assert rows[0]["attempts"] == 1
    assert "m-dead" in cli("dead-letters", "list", cwd=tmp_path).stdout
    refused = cli("dead-letters", "retry", cwd=tmp_path, ok=False)
    assert refused.returncode == 2 and "--all" in refused.stderr
    none = cli("dead-letters", "drop", "--reason", "no such words", cwd=tmp_path).stdout
    assert none.startswith("dropped 0 dead letters")
    retried = cli("dead-letters", "retry", str(rows[0]["seq"]), cwd=tmp_path).stdout
    assert retried.startswith("requeued 1 of 1 dead letter") and str(rows[0]["seq"]) in retried
    assert cli_json("status", cwd=tmp_path).get("dead", 0) == 0
    # None left: still one JSON document, with an empty list.
    assert cli_json("dead-letters", "list", "--json", cwd=tmp_path) == {"messages": []}


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
                   status="pending", reason=None, lane=f"u:{i}", received_at=1.0 + i,
                   event_at=1.0, raw=body, message=body)
        for i in range(4)
    ])
    seqs = [m.seq for m in store.list_messages()]
    store.finish(seqs[:2], status="dead", now=10.0, reason="HTTP 400: Email is invalid")
    store.finish(seqs[2:], status="dead", now=10.0, reason="HTTP 500: Something went wrong")
    store.close()
    return seqs


def test_dead_letters_with_config(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    seqs = _seed(db)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(db=db))
    c = ("--config", str(config))
    assert len(cli_json("dead-letters", "list", "--json", *c, cwd=tmp_path)["messages"]) == 4
    refused = cli("dead-letters", "drop", *c, cwd=tmp_path, ok=False)
    assert refused.returncode == 2 and "--all" in refused.stderr
    dropped = json.loads(cli("dead-letters", "drop", "--reason", "HTTP 500", "--json", *c,
                             cwd=tmp_path).stdout)
    assert dropped["changed"] == 2 and sorted(dropped["matched"]) == seqs[2:]
    retried = cli("dead-letters", "retry", "--destination", "acme", *c, cwd=tmp_path).stdout
    assert retried.startswith("requeued 2 dead letters")
    doc = cli_json("status", *c, cwd=tmp_path)
    assert doc["pending"] == 2 and doc["dropped"] == 2 and doc.get("dead", 0) == 0
    # --all: every dead letter (none left now), said plainly.
    assert cli("dead-letters", "retry", "--all", *c, cwd=tmp_path).stdout.startswith(
        "requeued 0 dead letters")
    listed = cli_json("messages", "list", "--status", "pending", *c, cwd=tmp_path)
    assert sorted(m["id"] for m in listed["messages"]) == seqs[:2]


def test_version_and_help(tmp_path: Path) -> None:
    from freshsales_destination import __version__

    assert cli("--version", cwd=tmp_path).stdout.strip() == f"freshsales-destination {__version__}"
    commands = cli("--help", cwd=tmp_path).stdout
    for name in ("serve", "status", "explain", "messages", "dead-letters", "check", "sandbox"):
        assert name in commands
    listing = cli("messages", "list", "--help", cwd=tmp_path).stdout
    for flag in ("--user-id", "--anonymous-id", "--email", "--message-id", "--status", "--type",
                 "--reason", "--since", "--until", "--limit", "--cursor", "--destination"):
        assert flag in listing


def test_messages_show_by_a_message_id_several_sources_sent(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    _seed(db)
    store = SQLiteStore(db)
    store.open()
    body = orjson.dumps({"type": "track"})
    store.append([
        NewMessage(source=source, destination="acme", message_id="m-twice", type="track",
                   status="pending", reason=None, lane="u:t", received_at=20.0,
                   event_at=20.0, raw=body, message=body)
        for source in ("web", "app")
    ])
    store.close()
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(db=db))
    c = ("--config", str(config))
    asked = cli("messages", "show", "m-twice", *c, cwd=tmp_path, ok=False)
    assert asked.returncode == 2 and "2 messages have messageId 'm-twice'" in asked.stderr
    listed = asked.stdout.splitlines()
    assert len(listed) == 2 and all(line.startswith("id ") for line in listed)
    assert {line.split("source ")[1].split(",")[0] for line in listed} == {"web", "app"}
    one = cli_json("messages", "show", "m0", *c, cwd=tmp_path)
    assert one["message"]["message_id"] == "m0"
