"""The per-minute delivery summary: one line per destination that did something, none when
idle; and the log formats it is rendered in."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest

from freshsales_destination.delivery.engine import DeliveryEngine
from freshsales_destination.delivery.worker import DeliveryStats
from freshsales_destination.observe import logs
from freshsales_destination.store.wakeups import WorkSignal


def _engine(*names: str) -> tuple[DeliveryEngine, dict[str, DeliveryStats]]:
    stats = {name: DeliveryStats() for name in names}
    runtimes = [
        SimpleNamespace(name=name, workers=[SimpleNamespace(stats=stats[name])])
        for name in names
    ]
    return DeliveryEngine(runtimes, signal=WorkSignal()), stats  # type: ignore[arg-type]


def test_one_line_per_busy_destination_and_none_when_idle(caplog: pytest.LogCaptureFixture) -> None:
    engine, stats = _engine("acme", "other")
    caplog.set_level(logging.INFO, logger="freshsales_destination.delivery.engine")
    engine.log_summary()
    assert caplog.records == []  # nothing happened: nothing said
    stats["acme"].delivered += 5
    stats["acme"].dead += 1
    engine.log_summary()
    [line] = caplog.records
    assert line.getMessage() == "delivery to acme in the last 60 s: 5 delivered, 1 dead"
    assert (line.kind, line.destination, line.delivered, line.dead) == (  # type: ignore[attr-defined]
        "delivery_summary", "acme", 5, 1)
    caplog.clear()
    engine.log_summary()
    assert caplog.records == []  # counts are since the last line, not since start
    stats["other"].retried += 2
    engine.log_summary()
    assert [r.getMessage() for r in caplog.records] == [
        "delivery to other in the last 60 s: 2 retried"
    ]


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield None
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _render(fmt: logs.LogFormat, monkeypatch: pytest.MonkeyPatch) -> str:
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    for name in (logs.LOG_FORMAT_ENV, logs.LOG_LEVEL_ENV):  # restored after the test
        monkeypatch.setenv(name, "")
    logs.configure_logging(fmt, "info")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("freshsales_destination.x").warning(
        "dead letter: %s", "m1", extra={"kind": "dead_letter", "seq": 7})
    logging.getLogger("freshsales_destination.x").debug("one per poll")
    return stream.getvalue()


def test_json_and_console_render_ours_and_uvicorns_alike(
    monkeypatch: pytest.MonkeyPatch, restore_logging: object
) -> None:
    lines = [json.loads(line) for line in _render("json", monkeypatch).splitlines()]
    assert [(e["logger"], e["level"], e["event"]) for e in lines] == [
        ("uvicorn.error", "info", "Application startup complete."),
        ("freshsales_destination.x", "warning", "dead letter: m1"),
    ]
    assert lines[1]["kind"] == "dead_letter" and lines[1]["seq"] == 7
    assert all(e["timestamp"].endswith("Z") for e in lines)
    console = _render("console", monkeypatch).splitlines()
    assert len(console) == 2
    assert "Application startup complete." in console[0] and "[info" in console[0]
    assert "dead letter: m1" in console[1] and "kind=dead_letter" in console[1]
    assert not any(line.lstrip().startswith("{") for line in console)


def test_default_format_follows_the_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.default_format(Tty()) == "console"
    assert logs.default_format(io.StringIO()) == "json"
    with pytest.raises(ValueError, match="log level"):
        logs.configure_logging("json", "chatty")


def test_log_level_is_the_threshold(
    monkeypatch: pytest.MonkeyPatch, restore_logging: object
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    for name in (logs.LOG_FORMAT_ENV, logs.LOG_LEVEL_ENV):
        monkeypatch.setenv(name, "")
    logs.configure_logging("json", "warning")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("freshsales_destination.x").warning("shown")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["shown"]
    # What processes started for server.workers > 1 read back:
    assert (logs.os.environ[logs.LOG_FORMAT_ENV], logs.os.environ[logs.LOG_LEVEL_ENV]) == (
        "json", "warning")
