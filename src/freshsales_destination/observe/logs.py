"""Log set-up: every line, ours and uvicorn's, through one structlog renderer.

The service's modules log with the standard library (``logging.getLogger(__name__)``, fields
an operator filters on passed as ``extra=``); `configure_logging` gives the root logger one
handler whose formatter is structlog's ``ProcessorFormatter``: ``json`` (one object per line:
``timestamp``, ``level``, ``logger``, ``event`` and the extra fields) or ``console`` (aligned,
coloured on a terminal). uvicorn runs with ``log_config=None``, so its loggers propagate to
the same handler.

`serve` chooses the format (``--log-format``; by default console when stderr is a terminal,
JSON otherwise) and the level (``--log-level``); processes uvicorn starts for
``server.workers > 1`` read both from the environment (`LOG_FORMAT_ENV`, `LOG_LEVEL_ENV`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT_ENV = "FRESHSALES_DESTINATION_LOG_FORMAT"
LOG_LEVEL_ENV = "FRESHSALES_DESTINATION_LOG_LEVEL"

_HANDLER_NAME = "freshsales-destination"

# Loggers whose lines may hold people's data (request lines with emails in lookups).
_QUIET = ("httpx2", "httpcore", "httpx")


def default_format(stream: TextIO | None = None) -> LogFormat:
    """Console on a terminal, JSON otherwise (a service manager, a file, a pipe)."""
    stream = stream if stream is not None else sys.stderr
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def _drop_uvicorn_colours(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)  # uvicorn's coloured copy of the same message
    return event


def _formatter(fmt: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    shared: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_uvicorn_colours,
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=default_format() == "console")
        final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a line is written (not as it was when logging was
    set up: a replaced stderr, such as a test runner's capture, may be closed since)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(fmt: LogFormat | None = None, level: str = "info") -> LogFormat:
    """One handler on the root logger (stderr) rendering every record as `fmt`; returns the
    format chosen. A second call replaces the handler of the first; handlers others added
    (none in `serve`; a test runner's) are left alone."""
    chosen: LogFormat = fmt or default_format()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    handler = _StderrHandler()
    handler.setFormatter(_formatter(chosen))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers (if a config gave it some) would print a second format.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.disabled = False
        logger.setLevel(logging.NOTSET)  # the root's level (uvicorn.run(log_level=) sets its own)
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    os.environ[LOG_FORMAT_ENV] = chosen
    os.environ[LOG_LEVEL_ENV] = level.lower()
    return chosen


def configure_from_env() -> None:
    """In a process uvicorn started (``server.workers > 1``): the parent's choice."""
    fmt: Any = os.environ.get(LOG_FORMAT_ENV)
    configure_logging(fmt if fmt in LOG_FORMATS else None, os.environ.get(LOG_LEVEL_ENV, "info"))


__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LogFormat",
    "configure_from_env",
    "configure_logging",
    "default_format",
]
