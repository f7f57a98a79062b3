"""`freshsales-destination check`: the real console script against a sandbox process over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.server import free_port

API_KEY = "check-api-key-0123456789"
APP_TOKEN = "check-app-token-0123456789"
WRONG_KEY = "wrong-api-key-0123456789"
SCRIPT = str(Path(sys.executable).parent / "freshsales-destination")

CONFIG = """
[store]
url = "sqlite:///{db}"

[destinations.{name}]
product = "suite"
base_url = "{base_url}"
allow_custom_base_url = true
api_key = "{key}"
{extra}
"""


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """A sandbox served by its own process, as `freshsales-destination sandbox` runs it."""
    port = free_port()
    env = {**os.environ, "SANDBOX_API_KEY": API_KEY, "SANDBOX_APP_TOKEN": APP_TOKEN}
    process = subprocess.Popen(
        [SCRIPT, "sandbox", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(f"{root}/_sandbox/state", headers={"Authorization": f"Token token={API_KEY}"})
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the sandbox process did not start") from None
                time.sleep(0.1)
        yield root
    finally:
        process.terminate()
        process.wait(timeout=10)


def api_calls(root: str) -> int:
    answer = httpx2.get(f"{root}/_sandbox/state", headers={"Authorization": f"Token token={API_KEY}"})
    return int(answer.json()["api_call_count"])


def check(tmp_path: Path, *args: str, name: str = "acme", base_url: str, key: str = API_KEY,
          extra: str = "") -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(db=tmp_path / "q.db", name=name, base_url=base_url, key=key,
                                    extra=extra))
    return subprocess.run(
        [SCRIPT, "check", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )


def no_secrets(result: subprocess.CompletedProcess[str]) -> None:
    for secret in (API_KEY, APP_TOKEN, WRONG_KEY):
        assert secret not in result.stdout and secret not in result.stderr


def test_a_good_key_is_usable_and_the_schema_is_summarised(tmp_path: Path, sandbox_url: str) -> None:
    before = api_calls(sandbox_url)
    result = check(tmp_path, base_url=f"{sandbox_url}/crm/sales", extra=f'app_token = "{APP_TOKEN}"')
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "destination acme" in out and ": usable" in out
    assert "API key: valid" in out
    assert "contacts 1 (cf_alternate_number)" in out
    assert "owners 2" in out
    assert "app token: configured" in out
    assert "calls left" in out
    made = api_calls(sandbox_url) - before
    assert f"calls made: {made}" in out and 1 < made <= 12
    no_secrets(result)


def test_json_output_for_scripts(tmp_path: Path, sandbox_url: str) -> None:
    result = check(tmp_path, "--json", "--destination", "acme", base_url=f"{sandbox_url}/crm/sales")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["usable"] is True
    [dest] = doc["destinations"]
    assert dest["destination"] == "acme" and dest["state"] == "healthy"
    assert dest["schema"]["custom_fields"]["contacts"] == ["cf_alternate_number"]
    assert dest["schema"]["selectors"]["owners"] == 2
    assert dest["app_token"] == "not configured"
    assert dest["rate_limit"]["limit"] == 1000 and dest["rate_limit"]["remaining"] is not None
    assert dest["learned"] == {}
    assert dest["events_via"].startswith("note"), "no app token: events go as notes"
    assert dest["budget"]["per_hour"] == 1000 and dest["budget"]["used_this_hour"] >= dest["calls"]
    assert doc["calls"] == dest["calls"] > 0
    no_secrets(result)


def test_learned_behaviours_are_shown_with_their_evidence(tmp_path: Path, sandbox_url: str) -> None:
    from freshsales_destination.delivery.learned import Fact, LearnedFacts
    from freshsales_destination.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    LearnedFacts(store, "acme").learn(
        "custom_fields", Fact("merge", "PUT /api/contacts/1 kept cf_plan", 2_000_000_000.0)
    )
    store.close()
    result = check(tmp_path, base_url=f"{sandbox_url}/crm/sales")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "learned: custom_fields = merge (evidence: PUT /api/contacts/1 kept cf_plan" in result.stdout


def test_a_wrong_key_fails_with_one_call_and_says_auth_failed(tmp_path: Path, sandbox_url: str) -> None:
    before = api_calls(sandbox_url)
    result = check(tmp_path, base_url=f"{sandbox_url}/crm/sales", key=WRONG_KEY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT usable" in result.stdout
    assert "auth failed" in result.stdout and "401" in result.stdout
    assert "destinations.acme.api_key" in result.stdout
    assert api_calls(sandbox_url) - before == 1
    assert "calls made: 1" in result.stdout
    no_secrets(result)


def test_an_unreachable_host_fails_and_says_unreachable(tmp_path: Path) -> None:
    result = check(tmp_path, base_url=f"http://127.0.0.1:{free_port()}/crm/sales")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unreachable" in result.stdout
    no_secrets(result)


def test_exit_code_is_zero_only_when_every_destination_is_usable(
    tmp_path: Path, sandbox_url: str
) -> None:
    extra = (f'\n[destinations.other]\nbase_url = "{sandbox_url}/crm/sales"\n'
             f'allow_custom_base_url = true\napi_key = "{WRONG_KEY}"\n')
    both = check(tmp_path, "--json", base_url=f"{sandbox_url}/crm/sales", extra=extra)
    assert both.returncode == 1
    states = {d["destination"]: d["state"] for d in json.loads(both.stdout)["destinations"]}
    assert states == {"acme": "healthy", "other": "auth_failed"}
    only_good = check(tmp_path, "--destination", "acme", base_url=f"{sandbox_url}/crm/sales",
                      extra=extra)
    assert only_good.returncode == 0, only_good.stdout
    unknown = check(tmp_path, "--destination", "nope", base_url=f"{sandbox_url}/crm/sales")
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_whether_bulk_upsert_is_in_use_is_shown(tmp_path: Path, sandbox_url: str) -> None:
    from freshsales_destination.delivery.learned import Fact, LearnedFacts
    from freshsales_destination.store.sqlite import SQLiteStore

    fresh = check(tmp_path, "--json", base_url=f"{sandbox_url}/crm/sales")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    [dest] = json.loads(fresh.stdout)["destinations"]
    assert dest["bulk"]["in_use"] is True and dest["bulk"]["pending_jobs"] == 0
    assert dest["bulk"]["detail"].startswith("on: not tried yet")
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    learned_at = time.time()
    LearnedFacts(store, "acme").learn(
        "bulk_api", Fact("absent", "POST /api/contacts/bulk_upsert answered 404", learned_at, learned_at + 86_400)
    )
    store.close()
    result = check(tmp_path, base_url=f"{sandbox_url}/crm/sales")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bulk upsert: not in use: the account has no bulk API (404); re-checked in " in result.stdout
    assert "learned: bulk_api = absent (evidence: POST /api/contacts/bulk_upsert answered 404" in result.stdout
    off = check(tmp_path, "--json", base_url=f"{sandbox_url}/crm/sales", extra='bulk = "off"')
    [dest] = json.loads(off.stdout)["destinations"]
    assert dest["bulk"] == {"in_use": False, "detail": 'off: bulk = "off"', "pending_jobs": 0}

def test_without_config_it_looks_for_the_embedded_service_and_says_where(tmp_path: Path) -> None:
    done = subprocess.run([SCRIPT, "check"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert str(tmp_path / "data") in done.stderr and "--config" in done.stderr
    assert "Missing option" not in done.stderr
    assert not (tmp_path / "data").exists()  # looking created nothing
