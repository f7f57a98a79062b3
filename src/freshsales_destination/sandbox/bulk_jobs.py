"""The sandbox's bulk jobs as data (the routes and their rules are in ``bulk.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BulkJob:
    id: int
    entity: str
    items: list[Any]
    created_at: float
    done_at: float
    settled: bool = False
    succeeded: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    settled_at: float | None = None


@dataclass
class BulkJobs:
    """The jobs of one sandbox (kept in memory only: a restarted sandbox forgets them)."""

    jobs: dict[int, BulkJob] = field(default_factory=dict)
    next_id: int = 50_000_000_001
    refusals_left: int | None = None  # the transient 405s still to answer (None: not started)

    def clear(self) -> None:
        self.jobs.clear()
        self.refusals_left = None
