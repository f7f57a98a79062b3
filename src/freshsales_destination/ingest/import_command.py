"""``freshsales-destination import FILE...``: load history into the queue (ingest/importer.py).

Progress goes to standard error: a rich progress bar (messages, messages/s, and an ETA by the
bytes read of the files' size) on a terminal, plain lines every few seconds otherwise. The
summary goes to standard output, as text or (``--json``) one JSON object. Exit status: 0, 1
when some lines could not be read or a file stopped early (everything else was imported), 2
when nothing could be done (configuration, source, files, store).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from freshsales_destination.config import Settings, load_settings
from freshsales_destination.core.segment import parse_time
from freshsales_destination.errors import ConfigError, FreshsalesDestinationError
from freshsales_destination.ingest.import_reader import MessageFile
from freshsales_destination.ingest.importer import (
    DryRunPlanner,
    Importer,
    ImportSummary,
    resolve_source,
)
from freshsales_destination.store.base import Store

PLAIN_EVERY = 2.0  # seconds between plain progress lines


def _settings(config: Path | None, data_dir: Path) -> Settings:
    """The configuration file's settings, or the embedded mode's (as `serve` makes them)."""
    if config is not None:
        return load_settings(config)
    from freshsales_destination.service import SECRETS_FILE, embedded_keys, embedded_settings

    if not (data_dir / SECRETS_FILE).exists():
        raise ConfigError(
            f"no configuration: pass --config, or --data-dir pointing at the data directory of "
            f"`serve` without --config (no {SECRETS_FILE} in {data_dir})"
        )
    return embedded_settings(data_dir, None, None, embedded_keys(data_dir))


def _open_store(settings: Settings, *, dry_run: bool) -> Store | None:
    """The configured store; for a dry run, None when an SQLite store does not exist yet
    (a dry run never creates one)."""
    from freshsales_destination.store.factory import open_store

    url = settings.store.url
    if dry_run and url.startswith("sqlite:"):
        from freshsales_destination.store.sqlite import sqlite_path_from_url

        path = sqlite_path_from_url(url)
        if path is None or not path.exists():
            return None
    return open_store(url)


def _time_option(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    parsed = parse_time(value)
    if parsed is None:
        raise ConfigError(
            f"{name}: {value[:40]!r} is not a time (use e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"
        )
    return parsed.timestamp()


@contextmanager
def _opened(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    with open(name, "rb") as stream:
        yield stream


class _Progress:
    """Progress on standard error: rich on a terminal, plain lines otherwise."""

    def __init__(self, total_files: int) -> None:
        self.terminal = sys.stderr.isatty()
        self.total_files = total_files
        self._rich: Any = None
        self._task: Any = None
        self._last_plain = 0.0

    def __enter__(self) -> _Progress:
        if self.terminal:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[messages]:,} messages"),
                TextColumn("{task.fields[rate]:,.0f} msg/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(None, None, None)

    def file(self, index: int, name: str, size: int | None, messages: MessageFile,
             read_before: int) -> Callable[[int], None]:
        """The progress callback for one file (`read` counts messages of the whole import)."""
        started = time.monotonic()
        label = f"[{index}/{self.total_files}] {name}"
        if self._rich is not None:
            self._task = self._rich.add_task(label, total=size, messages=0, rate=0.0)

        def update(read: int) -> None:
            in_file = read - read_before
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = in_file / elapsed
            if self._rich is not None:
                self._rich.update(
                    self._task, completed=messages.bytes_read, messages=in_file, rate=rate
                )
                return
            now = time.monotonic()
            if now - self._last_plain < PLAIN_EVERY:
                return
            self._last_plain = now
            share = f", {messages.bytes_read / size:.0%} of the file" if size else ""
            sys.stderr.write(f"import {label}: {in_file} messages, {rate:.0f}/s{share}\n")

        return update

    def file_done(self, name: str, read: int, seconds: float) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self._rich.tasks[-1].total)
            return
        rate = read / max(seconds, 1e-6)
        sys.stderr.write(f"import {name}: done, {read} messages in {seconds:.1f} s ({rate:.0f}/s)\n")
        self._last_plain = 0.0


def _human(
    summary: ImportSummary, target: str, seconds: float, schema_source: str | None
) -> str:
    verb = "would store" if summary.dry_run else "stored"
    lines = [
        f"{'dry run: ' if summary.dry_run else ''}{summary.read} messages read from "
        f"{summary.files} file(s) for {target} in {seconds:.1f} s",
        f"  {verb} (to deliver): {summary.stored}",
        f"  duplicates (already stored): {summary.duplicates}",
        f"  filtered ({verb}, not delivered): {sum(summary.filtered.values())}",
    ]
    lines += [f"    {count}  {reason}" for reason, count in summary.filtered.most_common()]
    lines.append(f"  discarded ({verb}, not delivered): {sum(summary.discarded.values())}")
    lines += [f"    {count}  {reason}" for reason, count in summary.discarded.most_common()]
    if summary.outside_range:
        lines.append(f"  outside --since/--until (not stored): {summary.outside_range}")
    lines.append(f"  bad lines (not stored): {summary.bad_lines}")
    for bad in summary.listed:
        lines.append(f"    {bad.file} {bad.unit} {bad.number}: {bad.error}")
    if summary.bad_lines > len(summary.listed):
        lines.append(f"    ... and {summary.bad_lines - len(summary.listed)} more")
    for error in summary.file_errors:
        lines.append(f"  stopped early: {error}")
    if summary.dry_run:
        lines.append(
            "  the planner would (each message alone, as for a person not met yet; "
            f"{schema_source} schema):"
        )
        lines += [f"    {count}  {outcome}" for outcome, count in summary.planner.most_common()]
        lines.append("  calls at most, by operation:")
        lines += [f"    {count}  {kind}" for kind, count in summary.operations.most_common()]
    return "\n".join(lines)


def import_command(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Files of Segment messages: JSON lines, a JSON array, or a Segment archive "
            "(gzipped JSON lines; gzip is recognised by its content). - reads standard input.",
            show_default=False,
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file; none = the embedded "
                     "defaults of `serve` without --config (see --data-dir)."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="The source (sources.name) the messages come from; "
                     "not needed when only one source is configured."),
    ] = None,
    write_key: Annotated[
        str | None,
        typer.Option("--write-key", envvar="FRESHSALES_DESTINATION_WRITE_KEY", show_envvar=True,
                     help="The source's write key instead (the variable keeps it out of the "
                     "process list and shell history)."),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="The embedded defaults' data directory (no --config).")
    ] = Path("data"),
    since: Annotated[
        str | None, typer.Option(help="Only messages whose event time is at or after this.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only messages whose event time is before this.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Store nothing: say what would be stored and "
                           "what the planner would do, by outcome.")
    ] = False,
    chunk_size: Annotated[
        int, typer.Option(min=1, max=50_000, help="Messages per committed transaction.")
    ] = 1000,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Import Segment messages from files into the queue, as the tracking API would store
    them (validation, normalisation, deduplication). Running it again stores nothing twice.
    Exit status: 0; 1 when some lines could not be read (the rest was imported); 2 when
    nothing could be done, or the store failed midway (run it again to resume)."""
    started = time.monotonic()
    try:
        if files.count("-") > 1:
            raise ConfigError("- (standard input) can be given only once")
        missing = [name for name in files if name != "-" and not Path(name).is_file()]
        if missing:
            raise ConfigError(f"not a readable file: {', '.join(missing)}")
        since_at = _time_option(since, "--since")
        until_at = _time_option(until, "--until")
        settings = _settings(config, data_dir)
        if source is None and write_key is None and len(settings.sources) == 1:
            only = settings.sources[0]
            target = resolve_source(
                settings, name=None, write_key=only.write_key.get_secret_value()
            )
        else:
            target = resolve_source(settings, name=source, write_key=write_key)
        store = _open_store(settings, dry_run=dry_run)
    except FreshsalesDestinationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    try:
        planner = None
        schema_source = None
        if dry_run:
            from freshsales_destination.explain import planner_inputs

            inputs = planner_inputs(settings, target.destination, None, time.time())
            planner = DryRunPlanner(inputs.settings, inputs.schema, time.time())
            schema_source = inputs.schema_source
        importer = Importer(
            store, target, max_message_bytes=settings.server.max_message_bytes,
            chunk_size=chunk_size, since=since_at, until=until_at, dry_run=dry_run,
            planner=planner,
        )
        failure = None
        with _Progress(len(files)) as progress:
            for index, name in enumerate(files, 1):
                size = None if name == "-" else Path(name).stat().st_size
                file_started = time.monotonic()
                before = importer.summary.read
                with _opened(name) as stream:
                    messages = MessageFile(stream)
                    update = progress.file(index, name, size, messages, before)
                    try:
                        importer.run_file(name, messages, update)
                    except FreshsalesDestinationError as exc:  # the store failed
                        failure = exc
                        break
                progress.file_done(name, importer.summary.read - before,
                                   time.monotonic() - file_started)
    finally:
        if store is not None:
            store.close()
    summary = importer.summary
    seconds = time.monotonic() - started
    if as_json:
        out = summary.to_json()
        out["source"] = target.source_id
        out["destination"] = target.destination
        out["seconds"] = round(seconds, 3)
        if schema_source is not None:
            out["schema_source"] = schema_source
        if failure is not None:
            out["error"] = failure.message
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        typer.echo(_human(summary, target.label, seconds, schema_source))
    if failure is not None:
        typer.echo(
            f"error: the store failed ({failure.message}); what was committed before stays, "
            "and running the same import again resumes it", err=True,
        )
        raise typer.Exit(2)
    if summary.problems:
        raise typer.Exit(1)


__all__ = ["import_command"]
