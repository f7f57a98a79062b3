"""`freshsales-destination import`: the real console script in a subprocess for the command's
paths, the importer in process for memory (tracemalloc), the reader for the file forms."""

from __future__ import annotations

import gzip
import io
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshsales_destination.config import settings_from_dict
from freshsales_destination.errors import StoreRefused, StoreUnavailable
from freshsales_destination.ingest import import_reader
from freshsales_destination.ingest.import_reader import BadItem, ImportFileError, Item, MessageFile
from freshsales_destination.ingest.importer import Importer, resolve_source, stable_id
from freshsales_destination.ingest.sources import source_id_for
from freshsales_destination.service import embedded_keys
from freshsales_destination.store.base import NewMessage, Store
from freshsales_destination.store.sqlite import SQLiteStore
from tests.contract.conftest import PgSchema

SCRIPT = Path(sys.executable).with_name("freshsales-destination")
WRITE_KEY = "wk_import_secret_123"
OTHER_KEY = "wk_unnamed_456"

IDENTIFY = {
    "type": "identify", "userId": "u1", "messageId": "id-1",
    "traits": {"email": "ann@example.com", "name": "Ann Lee"},
    "timestamp": "2026-10-01T09:00:00.000Z",
}
# As a Segment archive holds it: received, sent and original times from long ago.
TRACK = {
    "type": "track", "userId": "u1", "messageId": "tr-1", "event": "Signed Up",
    "originalTimestamp": "2026-05-01T12:00:00.000Z", "sentAt": "2026-05-01T12:00:00.000Z",
    "receivedAt": "2026-05-01T12:00:02.000Z", "timestamp": "2026-05-01T12:00:02.000Z",
}
PAGE_NO_ID = {"type": "page", "userId": "u1", "name": "Pricing", "timestamp": "2026-11-20T08:00:00.000Z"}
MESSAGES = [IDENTIFY, TRACK, PAGE_NO_ID]


def write_config(tmp_path: Path, **destination: Any) -> Path:
    dest = 'domain = "acme"\napi_key = "fs-api-key-xyz"\n' + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in destination.items()
    )
    path = tmp_path / "config.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "queue.db"}"\n'
        f'[[sources]]\nwrite_key = "{WRITE_KEY}"\ndestination = "acme"\nname = "web"\n'
        f'[[sources]]\nwrite_key = "{OTHER_KEY}"\ndestination = "acme"\n'
        f"[destinations.acme]\n{dest}"
    )
    path.chmod(0o600)
    return path


def run_import(
    *args: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(SCRIPT), "import", *map(str, args)], input=stdin, capture_output=True, timeout=120,
        env={**os.environ, **env} if env else None,
    )


def summary_of(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT source, message_id, type, status, reason, event_at, message FROM messages "
            "ORDER BY seq"
        ).fetchall()


def jsonl(messages: list[Any]) -> bytes:
    return b"".join(orjson.dumps(m) + b"\n" for m in messages)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_json_lines_are_stored_as_the_api_stores_them(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    file.write_bytes(jsonl(MESSAGES))
    result = run_import(file, "--config", config, "--source", "web", "--json")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["read"], summary["stored"], summary["duplicates"]) == (3, 3, 0)
    assert summary["source"] == "web" and summary["destination"] == "acme"
    stored = rows(tmp_path / "queue.db")
    assert [(r[0], r[2], r[3]) for r in stored] == [
        ("web", "identify", "pending"), ("web", "track", "pending"), ("web", "page", "pending")
    ]
    assert [r[1] for r in stored][:2] == ["id-1", "tr-1"]
    assert stored[2][1] == stable_id(PAGE_NO_ID) and stored[2][1].startswith("import-")
    # The archived track keeps its time: its own receivedAt stands for the receive time, so
    # Segment's skew correction gives back the original timestamp, not today.
    track = orjson.loads(stored[1][6])
    assert track["timestamp"] == "2026-05-01T12:00:02.000Z"
    assert track["receivedAt"] == "2026-05-01T12:00:02.000Z"
    assert stored[1][5] == pytest.approx(1777636802.0)


def test_array_and_lines_give_the_same_ids(tmp_path: Path, config: Path) -> None:
    array = tmp_path / "history.json"
    array.write_bytes(b"[\n" + b",\n".join(orjson.dumps(m) for m in MESSAGES) + b"\n]\n")
    first = run_import(array, "-c", config, "--source", "web", "--json")
    assert first.returncode == 0, first.stderr
    assert summary_of(first)["stored"] == 3
    lines = tmp_path / "history.jsonl"
    lines.write_bytes(jsonl(MESSAGES))
    again = run_import(lines, "-c", config, "--source", "web", "--json")
    assert (summary_of(again)["stored"], summary_of(again)["duplicates"]) == (0, 3)
    assert len(rows(tmp_path / "queue.db")) == 3


def test_gzip_archive_recognised_by_content_not_name(tmp_path: Path, config: Path) -> None:
    archive = tmp_path / "segment-archive.json"  # no .gz: the magic bytes decide
    archive.write_bytes(gzip.compress(jsonl(MESSAGES)))
    result = run_import(archive, "-c", config, "--source", "web", "--json")
    assert result.returncode == 0, result.stderr
    assert summary_of(result)["stored"] == 3
    assert {r[1] for r in rows(tmp_path / "queue.db")} >= {"id-1", "tr-1"}


def test_standard_input_compressed(tmp_path: Path, config: Path) -> None:
    result = run_import("-", "-c", config, "--source", "web", "--json",
                        stdin=gzip.compress(jsonl(MESSAGES)))
    assert result.returncode == 0, result.stderr
    assert summary_of(result)["stored"] == 3
    assert len(rows(tmp_path / "queue.db")) == 3


def test_bad_line_in_the_middle_is_reported_and_the_rest_stored(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    file.write_bytes(
        orjson.dumps(IDENTIFY) + b"\n\n" + b'{"type": "track", "userId": "u1", oops\n'
        + orjson.dumps(TRACK) + b"\n" + b"42\n" + orjson.dumps(PAGE_NO_ID) + b"\n"
    )
    result = run_import(file, "-c", config, "--source", "web", "--json")
    assert result.returncode == 1  # something could not be read; everything else was imported
    summary = summary_of(result)
    assert summary["bad_lines"] == 1
    assert summary["bad"][0]["file"] == str(file) and summary["bad"][0]["line"] == 3
    assert "not valid JSON" in summary["bad"][0]["error"]
    # A JSON value that is not an object is kept as discarded, as the tracking API keeps it.
    assert summary["stored"] == 3
    assert summary["discarded_by_reason"] == {"message is not a JSON object": 1}
    assert {r[1] for r in rows(tmp_path / "queue.db")} >= {"id-1", "tr-1", stable_id(PAGE_NO_ID)}
    text = run_import(file, "-c", config, "--source", "web")
    assert f"{file} line 3: not valid JSON" in text.stdout.decode()


def test_rerun_stores_nothing_twice(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    many = [{**PAGE_NO_ID, "name": f"page {i}"} for i in range(2500)] + MESSAGES
    file.write_bytes(jsonl(many))
    first = run_import(file, "-c", config, "--source", "web", "--json", "--chunk-size", "700")
    assert summary_of(first)["stored"] == 2503
    again = run_import(file, "-c", config, "--source", "web", "--json", "--chunk-size", "700")
    assert again.returncode == 0
    assert (summary_of(again)["stored"], summary_of(again)["duplicates"]) == (0, 2503)
    assert len(rows(tmp_path / "queue.db")) == 2503


def test_dry_run_stores_nothing_and_reports_planner_outcomes(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    off = {**IDENTIFY, "messageId": "id-off", "integrations": {"All": False}}
    file.write_bytes(jsonl([*MESSAGES, off, {"type": "track", "userId": "u2"}]))
    result = run_import(file, "-c", config, "--source", "web", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["dry_run"] is True
    assert summary["stored"] == 3
    assert summary["filtered_by_reason"] == {"turned off for Freshsales by the integrations object": 1}
    assert summary["discarded_by_reason"] == {"track message has no event name": 1}
    planner = summary["planner"]
    assert sum(planner.values()) == 3
    assert planner["planned"] >= 2  # the identify and the track
    assert summary["operations"]["upsert_contact"] >= 1
    assert summary["schema_source"] == "built-in default"  # no store, no sandbox to ask
    assert not (tmp_path / "queue.db").exists()  # a dry run never creates the store
    # Against an existing store, what it holds counts as duplicates, and still nothing is added.
    run_import(file, "-c", config, "--source", "web")
    before = rows(tmp_path / "queue.db")
    again = summary_of(run_import(file, "-c", config, "--source", "web", "--dry-run", "--json"))
    assert (again["stored"], again["duplicates"]) == (0, 5)
    assert rows(tmp_path / "queue.db") == before


def test_dry_run_shows_event_max_age(tmp_path: Path) -> None:
    config = write_config(tmp_path, event_max_age_days=30)
    file = tmp_path / "history.jsonl"
    file.write_bytes(jsonl(MESSAGES))
    summary = summary_of(run_import(file, "-c", config, "--source", "web", "--dry-run", "--json"))
    assert summary["planner"]["filtered: event_too_old"] == 1  # the track from May


def test_since_and_until_filter_by_event_time(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    file.write_bytes(jsonl(MESSAGES))  # May (track), October (identify), November (page)
    result = run_import(file, "-c", config, "--source", "web", "--json",
                        "--since", "2026-06-01", "--until", "2026-11-01T00:00:00Z")
    summary = summary_of(result)
    assert (summary["stored"], summary["outside_range"]) == (1, 2)
    assert [r[1] for r in rows(tmp_path / "queue.db")] == ["id-1"]
    bad = run_import(file, "-c", config, "--source", "web", "--since", "last tuesday")
    assert bad.returncode == 2 and b"--since" in bad.stderr


def test_write_key_or_source_name(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    file.write_bytes(jsonl([IDENTIFY]))
    by_key = summary_of(run_import(file, "-c", config, "--write-key", WRITE_KEY, "--json"))
    assert (by_key["source"], by_key["stored"]) == ("web", 1)
    by_name = summary_of(run_import(file, "-c", config, "--source", "web", "--json"))
    assert by_name["duplicates"] == 1  # the same source: the same dedup
    unnamed = summary_of(run_import(file, "-c", config, "--write-key", OTHER_KEY, "--json"))
    assert unnamed["source"] == source_id_for(OTHER_KEY, None) and unnamed["stored"] == 1
    assert OTHER_KEY not in json.dumps(unnamed)
    # The key from the environment: out of the process list and the shell's history.
    from_env = run_import(file, "-c", config, "--json",
                          env={"FRESHSALES_DESTINATION_WRITE_KEY": WRITE_KEY})
    assert summary_of(from_env)["source"] == "web" and summary_of(from_env)["duplicates"] == 1


def test_unknown_source_refused_clearly(tmp_path: Path, config: Path) -> None:
    file = tmp_path / "history.jsonl"
    file.write_bytes(jsonl(MESSAGES))
    by_name = run_import(file, "-c", config, "--source", "nope")
    assert by_name.returncode == 2
    assert b"no source named 'nope' (configured: 'web')" in by_name.stderr
    by_key = run_import(file, "-c", config, "--write-key", "wk_guess_789")
    assert by_key.returncode == 2
    assert b"no configured source has this write key" in by_key.stderr
    assert b"wk_guess_789" not in by_key.stderr + by_key.stdout
    both = run_import(file, "-c", config)  # two sources: the command must be told which
    assert both.returncode == 2 and b"--source NAME or --write-key" in both.stderr
    missing = run_import(tmp_path / "absent.jsonl", "-c", config, "--source", "web")
    assert missing.returncode == 2 and b"not a readable file" in missing.stderr
    assert not (tmp_path / "queue.db").exists()


def test_embedded_defaults_without_config(tmp_path: Path) -> None:
    data = tmp_path / "data"
    embedded_keys(data)  # what `serve` without --config made
    file = tmp_path / "history.jsonl"
    file.write_bytes(jsonl(MESSAGES))
    result = run_import(file, "--data-dir", data, "--json")  # its one source: no --source
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["source"], summary["destination"], summary["stored"]) == ("default", "sandbox", 3)
    assert len(rows(data / "queue.db")) == 3
    nothing = run_import(file, "--data-dir", tmp_path / "elsewhere")
    assert nothing.returncode == 2 and b"pass --config" in nothing.stderr


# -- memory --------------------------------------------------------------------------------


def _generated(path: Path, count: int, *, array: bool) -> Path:
    with path.open("wb") as out:
        if array:
            out.write(b"[")
        for i in range(count):
            message = {
                "type": "identify" if i % 2 else "track", "event": "Viewed", "userId": f"u{i % 997}",
                "traits": {"email": f"p{i}@example.com", "plan": "pro"},
                "timestamp": "2026-11-01T10:00:00.000Z", "messageId": f"gen-{i}",
            }
            if array and i:
                out.write(b",\n")
            out.write(orjson.dumps(message) + (b"" if array else b"\n"))
        if array:
            out.write(b"]")
    return path


def _peak(tmp_path: Path, file: Path, name: str) -> int:
    settings = settings_from_dict({
        "store": {"url": f"sqlite:///{tmp_path / name}"},
        "sources": [{"write_key": WRITE_KEY, "destination": "acme", "name": "web"}],
        "destinations": {"acme": {"domain": "acme", "api_key": "k"}},
    })
    store = SQLiteStore(tmp_path / name)
    store.open()
    try:
        importer = Importer(
            store, resolve_source(settings, name="web", write_key=None),
            max_message_bytes=32 * 1024, chunk_size=500,
        )
        tracemalloc.start()
        with file.open("rb") as stream:
            importer.run_file(file.name, MessageFile(stream))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        store.close()
    assert importer.summary.read == importer.summary.stored
    return peak


@pytest.mark.parametrize("array", [False, True], ids=["json-lines", "array"])
def test_memory_stays_flat_whatever_the_file_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, array: bool
) -> None:
    # Blocks of 64 KB so that the small file is already several blocks: what is compared is
    # how the peak grows with the file, with both past the first block.
    monkeypatch.setattr(import_reader, "BLOCK_BYTES", 64 << 10)
    small = _generated(tmp_path / "small", 3_000, array=array)
    large = _generated(tmp_path / "large", 60_000, array=array)  # 20 times as many
    assert small.stat().st_size > 6 * (64 << 10)
    small_peak = _peak(tmp_path, small, "small.db")
    large_peak = _peak(tmp_path, large, "large.db")
    # Flat: the peak is a read block and a chunk, whatever the file (20 times larger here;
    # growing with it, the peak would be many times the small one's).
    assert large_peak < small_peak * 1.5, (small_peak, large_peak)


# -- the reader ----------------------------------------------------------------------------


def _read(data: bytes) -> tuple[str, list[Item | BadItem]]:
    file = MessageFile(io.BytesIO(data))
    items = list(file.items())
    return file.kind, items


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_array_split_at_any_block_boundary(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(import_reader, "BLOCK_BYTES", block)
    tricky = [
        {"s": 'q"]}[{,', "n": [1, {"x": "\\"}], "t": "a\\\\"}, 7, "text", [1, [2]], {"e": ""},
    ] * 5
    kind, items = _read(b" \n" + orjson.dumps(tricky) + b"\n")
    assert kind == "array"
    assert [item.value for item in items if isinstance(item, Item)] == tricky
    assert [item.number for item in items] == list(range(1, len(tricky) + 1))


def test_array_bad_item_isolated_and_broken_structure_stops() -> None:
    kind, items = _read(b'[{"a": 1}, nope, {"b": 2},]')
    assert [(type(i).__name__, i.number) for i in items] == [
        ("Item", 1), ("BadItem", 2), ("Item", 3), ("BadItem", 4)
    ]
    for data, words in [
        (b'[{"a": 1}, {"b": ', "ends early: item 2"),
        (b'[{"a": 1}] extra', "text after the array"),
        (b'[{"a": 1}}]', "closes nothing"),
    ]:
        file = MessageFile(io.BytesIO(data))
        with pytest.raises(ImportFileError) as raised:
            list(file.items())
        assert words in raised.value.message


def test_a_byte_order_mark_is_not_a_bad_line() -> None:
    assert _read(b'\xef\xbb\xbf{"a":1}\n{"b":2}\n') == (
        "json lines", [Item(1, {"a": 1}), Item(2, {"b": 2})]
    )
    assert _read(b'\xef\xbb\xbf [{"a":1}]') == ("array", [Item(1, {"a": 1})])


def test_lines_numbered_as_an_editor_numbers_them() -> None:
    kind, items = _read(b'{"a":1}\r\n\n  \n{bad\n{"b":2}')
    assert kind == "json lines"
    assert [(type(i).__name__, i.number) for i in items] == [("Item", 1), ("BadItem", 4), ("Item", 5)]


def test_damaged_gzip_keeps_what_came_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_reader, "BLOCK_BYTES", 4096)
    data = gzip.compress(jsonl([{**IDENTIFY, "messageId": f"m{i}"} for i in range(5000)]))
    file = MessageFile(io.BytesIO(data[: len(data) // 2]))
    read: list[Item | BadItem] = []
    with pytest.raises(ImportFileError) as raised:
        for item in file.items():
            read.append(item)
    assert "gzip stream is damaged or cut short" in raised.value.message
    assert file.kind == "json lines (gzip)"
    assert len(read) > 1000 and all(isinstance(i, Item) for i in read)


def test_stable_id_ignores_key_order_and_write_key() -> None:
    a = {"type": "page", "userId": "u", "properties": {"x": 1, "y": 2}}
    b = {"properties": {"y": 2, "x": 1}, "userId": "u", "type": "page", "writeKey": "wk"}
    assert stable_id(a) == stable_id(b)
    assert stable_id(a) != stable_id({**a, "name": "other"})


# -- the store: refusals, failures, PostgreSQL --------------------------------------------


class RefusingStore(SQLiteStore):
    """A real store that refuses any append holding the message 'poison' (as PostgreSQL
    refuses a value it cannot hold)."""

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        if any(m.message_id == "poison" for m in messages):
            raise StoreRefused("value too long for an index entry")
        return super().append(messages)


class FailingStore(SQLiteStore):
    """A real store that becomes unavailable after `commits` appends."""

    commits = 1

    def append(self, messages: Sequence[NewMessage]) -> list[bool]:
        if self.commits <= 0:
            raise StoreUnavailable("disk unavailable")
        self.commits -= 1
        return super().append(messages)


def _importer(store: Store, chunk_size: int = 10) -> Importer:
    settings = settings_from_dict({
        "store": {"url": "sqlite:///unused.db"},
        "sources": [{"write_key": WRITE_KEY, "destination": "acme", "name": "web"}],
        "destinations": {"acme": {"domain": "acme", "api_key": "k"}},
    })
    return Importer(store, resolve_source(settings, name="web", write_key=None),
                    max_message_bytes=32 * 1024, chunk_size=chunk_size)


def _pages(count: int, poison_at: int | None = None) -> bytes:
    return jsonl([
        {**PAGE_NO_ID, "messageId": "poison" if i == poison_at else f"pg-{i}"}
        for i in range(count)
    ])


def test_a_message_the_store_refuses_is_reported_and_the_rest_stored(tmp_path: Path) -> None:
    store = RefusingStore(tmp_path / "q.db")
    store.open()
    try:
        importer = _importer(store)
        importer.run_file("pages.jsonl", MessageFile(io.BytesIO(_pages(25, poison_at=12))))
        summary = importer.summary
        assert summary.stored == 24
        assert [(b.number, b.error) for b in summary.listed] == [
            (13, "the store refused it: value too long for an index entry")
        ]
        assert store.get_message("web", "pg-13") is not None
    finally:
        store.close()


def test_a_store_failing_midway_keeps_what_was_committed_and_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    failing = FailingStore(tmp_path / "q.db")
    failing.open()
    try:
        importer = _importer(failing)
        with pytest.raises(StoreUnavailable):
            importer.run_file("pages.jsonl", MessageFile(io.BytesIO(_pages(35))))
        assert failing.pending_count() == 10  # the first chunk, committed
    finally:
        failing.close()
    store = SQLiteStore(tmp_path / "q.db")
    store.open()
    try:
        again = _importer(store)
        again.run_file("pages.jsonl", MessageFile(io.BytesIO(_pages(35))))
        assert (again.summary.stored, again.summary.duplicates) == (25, 10)
        assert store.pending_count() == 35
    finally:
        store.close()


def test_postgresql_stores_and_deduplicates_alike(pg_schema: PgSchema) -> None:
    from freshsales_destination.store.postgres import PostgresStore

    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=2)
    store.open()
    try:
        history = [*MESSAGES, {"type": "identify", "userId": "nul\u0000user", "messageId": "n\u0000id"}]
        first = _importer(store, chunk_size=2)
        first.run_file("history.jsonl", MessageFile(io.BytesIO(jsonl(history))))
        assert (first.summary.stored, first.summary.bad_lines) == (4, 0)
        again = _importer(store, chunk_size=2)
        again.run_file("history.jsonl", MessageFile(io.BytesIO(jsonl(history))))
        assert (again.summary.stored, again.summary.duplicates) == (0, 4)
        assert store.pending_count("acme") == 4
        track = store.get_message("web", "tr-1")
        assert track is not None and track.normalized()["timestamp"] == "2026-05-01T12:00:02.000Z"
    finally:
        store.close()
