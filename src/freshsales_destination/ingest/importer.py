"""`import`: Segment messages from files into the store, as the tracking API would store them.

Each message goes through the tracking API's own path: `ingest/sorting.py` `message_row`
(validation, Segment's normalisation, the size rules, ``integrations``), then the store's
`append` (deduplication by source and messageId), in transactions of `chunk_size` messages.
What differs from a request, and why:

* **Time.** A message from an archive was received long ago: its own ``receivedAt`` (else its
  ``sentAt``) stands for the request's receive time, so Segment's clock-skew correction gives
  back its original ``timestamp`` instead of moving the event to today. The row's
  ``received_at`` (what the dedup window and pruning count from) is the import's time.
* **Ids.** A message without a usable ``messageId`` gets ``import-`` + a digest of its content
  (keys sorted, ``writeKey`` left out), so running the same file again stores nothing twice.
* **Types.** The tracking API's: a ``delete`` in a file is discarded with the reason, as on
  /v1/ (a history replayed must not delete people; deletes come through the webhook).
* **Order.** Messages are appended in file order, straight to the queue (not the inbox).

``since``/``until`` skip messages whose event time is outside the range (counted, not stored).
A dry run stores nothing: it asks the store which messages it already holds, and plans each
new deliverable one (`DryRunPlanner`) to count what delivery would do.

Memory stays flat: files are streamed (ingest/import_reader.py), a chunk is at most
`chunk_size` rows, and what the summary keeps is bounded (`MAX_LISTED` bad lines, `MAX_REASONS`
distinct reasons).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import orjson

from freshsales_destination.config import Settings
from freshsales_destination.core.event_age import REASON_CODE, too_old
from freshsales_destination.core.mapping_settings import DestinationSettings
from freshsales_destination.core.planner import plan
from freshsales_destination.core.schema import FieldSchema
from freshsales_destination.core.segment import RequestTimes, parse_time
from freshsales_destination.core.statuses import PlanStatus
from freshsales_destination.errors import ConfigError, StoreRefused
from freshsales_destination.ingest.import_reader import BadItem, ImportFileError, MessageFile
from freshsales_destination.ingest.sorting import message_row
from freshsales_destination.ingest.sources import source_id_for
from freshsales_destination.store.base import NewMessage, Store

MAX_LISTED: Final = 100  # bad lines listed in the summary (all are counted)
MAX_REASONS: Final = 50  # distinct discard or filter reasons kept (the rest: "other reasons")
OTHER_REASONS: Final = "other reasons"
ID_PREFIX: Final = "import-"
PROGRESS_EVERY: Final = 1000  # messages read between progress callbacks


@dataclass(frozen=True)
class ImportTarget:
    """Where imported messages go: the source's stored id and its destination."""

    source_id: str
    destination: str
    label: str  # how to name the source to the operator (never its write key)


def resolve_source(settings: Settings, *, name: str | None, write_key: str | None) -> ImportTarget:
    """The source named `name`, or the one holding `write_key` (exactly one of them).
    `ConfigError` when there is none; the message never repeats a write key."""
    if (name is None) == (write_key is None):
        raise ConfigError("choose the source with --source NAME or --write-key KEY (one of them)")
    if write_key is not None:
        found = settings.source_for(write_key)
        if found is None:
            raise ConfigError("no configured source has this write key")
        label = f"source {found.name!r}" if found.name else "the source of this write key"
        return ImportTarget(source_id_for(write_key, found.name), found.destination, label)
    named = [source for source in settings.sources if source.name == name]
    if not named:
        listed = ", ".join(repr(s.name) for s in settings.sources if s.name) or "none has a name"
        raise ConfigError(f"no source named {name!r} (configured: {listed})")
    source = named[0]
    key = source.write_key.get_secret_value()
    return ImportTarget(source_id_for(key, source.name), source.destination, f"source {name!r}")


def stable_id(value: Any) -> str:
    """The id of a message that has none: a digest of its content without ``writeKey``."""
    if isinstance(value, dict) and "writeKey" in value:
        value = {key: item for key, item in value.items() if key != "writeKey"}
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not possible for parsed JSON; kept total all the same
        data = repr(value).encode("utf-8", "surrogatepass")
    return ID_PREFIX + hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class BadLine:
    file: str
    number: int  # line (JSON lines) or item (array) number
    unit: str  # "line" or "item"
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, self.unit: self.number, "error": self.error}


def _bump(counter: Counter[str], reason: str) -> None:
    if reason in counter or len(counter) < MAX_REASONS:
        counter[reason] += 1
    else:
        counter[OTHER_REASONS] += 1


@dataclass
class ImportSummary:
    """What an import did (or, for a dry run, would do)."""

    dry_run: bool = False
    files: int = 0
    read: int = 0  # messages read from the files (bad lines not included)
    stored: int = 0  # new messages to deliver (pending)
    duplicates: int = 0  # already in the store (an import: also earlier in the import)
    filtered: Counter[str] = field(default_factory=Counter)  # stored, not delivered: by reason
    discarded: Counter[str] = field(default_factory=Counter)  # stored, not delivered: by reason
    outside_range: int = 0  # skipped by --since / --until, not stored
    bad_lines: int = 0
    listed: list[BadLine] = field(default_factory=list)  # the first MAX_LISTED bad lines
    file_errors: list[str] = field(default_factory=list)  # files that stopped early, and why
    planner: Counter[str] = field(default_factory=Counter)  # dry run: outcome -> messages
    operations: Counter[str] = field(default_factory=Counter)  # dry run: calls by kind

    def bad(self, line: BadLine) -> None:
        self.bad_lines += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(line)

    @property
    def problems(self) -> bool:
        """Whether anything could not be read (bad lines, a file that stopped early)."""
        return bool(self.bad_lines or self.file_errors)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dry_run": self.dry_run,
            "files": self.files,
            "read": self.read,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "filtered": sum(self.filtered.values()),
            "filtered_by_reason": dict(self.filtered.most_common()),
            "discarded": sum(self.discarded.values()),
            "discarded_by_reason": dict(self.discarded.most_common()),
            "outside_range": self.outside_range,
            "bad_lines": self.bad_lines,
            "bad": [line.to_json() for line in self.listed],
            "file_errors": list(self.file_errors),
        }
        if self.dry_run:
            out["planner"] = dict(self.planner.most_common())
            out["operations"] = dict(self.operations.most_common())
        return out


class DryRunPlanner:
    """What delivery would do with each new deliverable message, counted by outcome.

    Each message is planned alone, as for a person delivery has not met yet (no identity, no
    merging of a person's identifies, no skipping of unchanged fields): the operation counts
    are an upper bound of the calls. `event_max_age_days` is applied as of `now`.
    """

    def __init__(self, settings: DestinationSettings, schema: FieldSchema, now: float) -> None:
        self.settings = settings
        self.schema = schema
        self.now = now

    def count(self, row: NewMessage, summary: ImportSummary) -> None:
        if too_old(row.type, row.event_at, self.now, self.settings.event_max_age_days):
            summary.planner[f"{PlanStatus.FILTERED}: {REASON_CODE}"] += 1
            return
        result = plan(orjson.loads(row.message), self.settings, self.schema, None)
        if result.status == PlanStatus.PLANNED:
            summary.planner[str(PlanStatus.PLANNED)] += 1
            for operation in result.operations:
                if operation.api_call:
                    summary.operations[str(operation.kind)] += 1
        else:
            _bump(summary.planner, f"{result.status}: {result.reason_code or 'no reason code'}")


class Importer:
    """Streams files of messages into the store for one source (see the module's docstring).

    `store` may be None for a dry run without a store (everything then counts as new).
    """

    def __init__(
        self,
        store: Store | None,
        target: ImportTarget,
        *,
        max_message_bytes: int,
        chunk_size: int = 1000,
        since: float | None = None,
        until: float | None = None,
        dry_run: bool = False,
        planner: DryRunPlanner | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if store is None and not dry_run:
            raise ValueError("an import that stores needs a store")
        self.store = store
        self.target = target
        self.limit = max_message_bytes
        self.chunk_size = chunk_size
        self.since = since
        self.until = until
        self.planner = planner
        self.now = now
        self.summary = ImportSummary(dry_run=dry_run)
        self._chunk: list[NewMessage] = []
        self._origins: list[tuple[str, int, str]] = []  # (file, number, unit) per chunk row
        self._received = now()
        self._import_times = RequestTimes.of(datetime.fromtimestamp(self._received, UTC))

    def run_file(
        self, name: str, messages: MessageFile, progress: Callable[[int], None] | None = None
    ) -> None:
        """Import one file's messages; `progress(messages_read)` every `PROGRESS_EVERY`
        messages and at the end. A file that stops early is recorded in the summary (what was
        read before it is kept); a store that fails raises (`StoreUnavailable`): what was
        committed before stays."""
        summary = self.summary
        summary.files += 1
        source, destination = self.target.source_id, self.target.destination
        limit, since, until = self.limit, self.since, self.until
        received = self._received
        chunk, origins = self._chunk, self._origins
        unit = ""
        try:
            for item in messages.items():
                if not unit:  # the file's form is known once its first item is read
                    unit = "item" if messages.kind.startswith("array") else "line"
                if item.__class__ is BadItem:
                    assert isinstance(item, BadItem)
                    summary.bad(BadLine(name, item.number, unit, item.error))
                    continue
                value = item.value  # type: ignore[union-attr]
                summary.read += 1
                if progress is not None and summary.read % PROGRESS_EVERY == 0:
                    progress(summary.read)
                row = message_row(
                    value, source=source, destination=destination, received_at=received,
                    times=self._times(value), new_id=partial(stable_id, value), limit=limit,
                )
                event_at = row.event_at
                if (since is not None and event_at < since) or (until is not None and event_at >= until):
                    summary.outside_range += 1
                    continue
                chunk.append(row)
                origins.append((name, item.number, unit))
                if len(chunk) >= self.chunk_size:
                    self.flush()
        except ImportFileError as exc:
            summary.file_errors.append(f"{name}: {exc.message}; stopped at {exc.position}")
        self.flush()
        if progress is not None:
            progress(summary.read)

    def _times(self, value: Any) -> RequestTimes:
        """The receive time a message is normalised against: its own receivedAt, else its
        sentAt (no skew to correct then), else the import's time."""
        if value.__class__ is dict:
            when = parse_time(value.get("receivedAt"))
            if when is None:
                when = parse_time(value.get("sentAt"))
            if when is not None:
                return RequestTimes.of(when)
        return self._import_times

    def flush(self) -> None:
        """Commit the chunk (a dry run only asks which rows are new) and count it."""
        rows, origins = self._chunk, self._origins
        if not rows:
            return
        fresh: list[bool | None]
        if self.summary.dry_run:
            store = self.store
            fresh = [
                store is None or store.get_message(row.source, row.message_id) is None
                for row in rows
            ]
        else:
            fresh = self._append(rows, origins)
        summary, planner = self.summary, self.planner
        for row, new in zip(rows, fresh, strict=True):
            if new is None:
                continue  # refused by the store: reported as a bad line
            if not new:
                summary.duplicates += 1
            elif row.status == "pending":
                summary.stored += 1
                if planner is not None:
                    planner.count(row, summary)
            elif row.status == "filtered":
                _bump(summary.filtered, row.reason or "filtered")
            else:
                _bump(summary.discarded, row.reason or "discarded")
        rows.clear()
        origins.clear()

    def _append(
        self, rows: list[NewMessage], origins: list[tuple[str, int, str]]
    ) -> list[bool | None]:
        """The chunk in one transaction; if the store refuses it as data, row by row, and a
        row it refuses is reported (None) instead of stopping the import. A store that is
        down raises (`StoreUnavailable`): nothing after the last committed chunk was stored."""
        assert self.store is not None
        try:
            return list(self.store.append(rows))
        except StoreRefused:
            pass
        answers: list[bool | None] = []
        for row, (name, number, unit) in zip(rows, origins, strict=True):
            try:
                answers.append(self.store.append([row])[0])
            except StoreRefused as exc:
                self.summary.bad(BadLine(name, number, unit, f"the store refused it: {exc.message}"))
                answers.append(None)
        return answers


__all__ = [
    "BadLine",
    "DryRunPlanner",
    "ImportSummary",
    "ImportTarget",
    "Importer",
    "resolve_source",
    "stable_id",
]
