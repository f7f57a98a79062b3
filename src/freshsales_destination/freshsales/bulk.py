"""Bulk upsert answers, read without I/O (reference §13.1).

A bulk POST answers ``{"job_status_url": ".../api/job_statuses/<id>", "message": ...}``; the job is
polled at ``GET /api/job_statuses/<id>``, whose ``data`` is a JSON *string* holding
``record_status`` and ``detailed_failure_report``. The client takes only the id from the URL and
polls it on its own base URL: the API key is never sent to a host named by an answer.

Only ``"SUCCESS"`` is an attested status value. ``"IN_PROGRESS"``, ``"PENDING"``, ``"QUEUED"``,
``"RUNNING"``, ``"PROCESSING"`` and ``"STARTED"`` are read as not finished yet; any other value is
a finished job (``failed`` ones included): what its ``data`` reports is taken, and records it does
not account for are for the caller to treat as unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from freshsales_destination.freshsales.errors import as_int

MAX_BULK_ITEMS = 100
"""Every caller batches by 100 (not stated officially)."""

BULK_PATHS: Mapping[str, str] = {
    "contact": "contacts",
    "sales_account": "sales_accounts",
    "deal": "deals",
}
"""Entity -> the plural that names both its bulk path and the list key of the body."""

MATCH_KEYS: tuple[str, ...] = ("emails", "name", "id", "mobile_number", "external_id")
"""The keys a failure report may name its record by."""

UNFINISHED = frozenset({"IN_PROGRESS", "PENDING", "QUEUED", "RUNNING", "PROCESSING", "STARTED", "NEW"})

_JOB_ID = re.compile(r"/job_statuses/([A-Za-z0-9_-]{1,64})/?$")


@dataclass(frozen=True)
class BulkFailure:
    """One record the job could not write: its match key and value as sent, and why."""

    key: str | None
    value: Any
    messages: tuple[str, ...]


@dataclass(frozen=True)
class JobStatus:
    """A bulk job as its status answer shows it."""

    job_id: str
    status: str
    finished: bool
    succeeded: int | None
    failed: int | None
    failures: tuple[BulkFailure, ...]
    progress: float | None = None


def job_id_from_url(url: Any) -> str | None:
    """The job id at the end of a ``job_status_url``; ``None`` when it has no such shape."""
    if not isinstance(url, str):
        return None
    found = _JOB_ID.search(url.split("?", 1)[0])
    return found.group(1) if found else None


def _failure(item: Any) -> BulkFailure:
    if not isinstance(item, Mapping):
        return BulkFailure(None, None, (str(item)[:500],))
    key = next((k for k in MATCH_KEYS if k in item), None)
    raw = item.get("error_message", item.get("errors", item.get("message")))
    if isinstance(raw, list):
        messages = tuple(str(m)[:500] for m in raw)
    elif raw is None:
        messages = ("no error message given",)
    else:
        messages = (str(raw)[:500],)
    return BulkFailure(key, item.get(key) if key else None, messages)


def parse_job_status(job_id: str, body: Any) -> JobStatus:
    """Read a job status answer; ``ValueError`` when it is not one."""
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise ValueError("the job status answer has no status")
    status = body["status"].strip().upper()
    data = body.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data) if data.strip() else {}
        except ValueError as exc:
            raise ValueError("the job's data is a string that is not JSON") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError("the job's data is not an object")
    record_status = data.get("record_status")
    counts = record_status if isinstance(record_status, Mapping) else {}
    report = data.get("detailed_failure_report")
    failures = tuple(_failure(item) for item in report) if isinstance(report, list) else ()
    progress = body.get("progress")
    return JobStatus(
        job_id=job_id,
        status=status,
        finished=status not in UNFINISHED,
        succeeded=as_int(counts.get("succeeded")),
        failed=as_int(counts.get("failed")),
        failures=failures,
        progress=float(progress) if isinstance(progress, int | float) and not isinstance(progress, bool) else None,
    )
