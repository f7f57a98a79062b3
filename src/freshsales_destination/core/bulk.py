"""Bulk delivery decisions, pure (reference §13.1): when record writes go as a bulk job, how
often a job is polled, and what a bulk path's answer says about the account.

Time is passed in; nothing here does I/O. The sending side is ``delivery/bulk.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY = 86_400.0

FIRST_POLL_SECONDS = 2.0
"""A job is first polled this long after its POST: the sandbox's jobs take 2 s; production
clients poll every few seconds."""
POLL_CAP_SECONDS = 120.0
"""Polls back off (doubling) up to this far apart: each poll is one call of the budget."""
REFUSALS_BEFORE_FALLBACK = 3
"""A bulk POST answered 405 is sent this many times in all before the lanes go single."""
REFUSAL_PAUSE_SECONDS = 5.0
"""The pause before a 405'd POST is sent again (production clients retry "a few seconds later")."""
REFUSED_RECHECK_SECONDS = 3_600.0
"""After repeated 405s, single calls for this long before bulk is tried again."""
ABSENT_RECHECK_SECONDS = DAY
"""After a 404 on a bulk path (the account has no bulk API), re-checked at most daily."""


MIN_DRAIN_RECORDS = 4
"""Below this many ready record writes a job saves nothing (a POST and a poll cost two calls)."""


class BulkApi(StrEnum):
    """What delivery knows of the account's bulk API (learned fact ``bulk_api``)."""

    PRESENT = "present"
    """A bulk POST was accepted."""
    ABSENT = "absent"
    """A bulk path answered 404: single calls until the re-check (daily)."""
    REFUSED = "refused"
    """A bulk POST answered 405 every time it was tried: single calls until the re-check."""


class BulkLinks(StrEnum):
    """Whether account links inside bulk contact items stick (learned fact ``bulk_links``)."""

    KEPT = "kept"
    DROPPED = "dropped"


def bulk_usable(known: str | None, recheck_at: float | None, now: float) -> bool:
    """Whether to try bulk now, given the learned ``bulk_api`` fact (``None``: not known yet)."""
    if known is None or known == BulkApi.PRESENT:
        return True
    return recheck_at is not None and now >= recheck_at


@dataclass(frozen=True)
class BacklogView:
    """What the bulk decision looks at."""

    ready_record_lanes: int
    """Lanes whose next message is an identify, ready now (claimed, at most a job's worth)."""
    pending: int
    """Every pending message of the destination (records and events)."""
    calls_per_hour: int
    """The destination's effective hourly limit."""


def should_bulk(view: BacklogView, *, min_records: int, max_single_wait_seconds: float = 60.0) -> bool:
    """Whether the ready record writes go as one bulk job rather than one call each.

    A job costs at least two calls (POST and a poll) and a few seconds; single calls cost one call
    per record, spaced by the budget. Bulk is chosen when enough record writes are ready
    (``min_records``), or, with at least ``MIN_DRAIN_RECORDS``, when the backlog would take longer
    than ``max_single_wait_seconds`` to drain at the account's pace one call at a time. A lone
    identify always goes out at once as a single call.
    """
    if view.ready_record_lanes < min(MIN_DRAIN_RECORDS, min_records):
        return False
    if view.ready_record_lanes >= min_records:
        return True
    seconds_per_call = 3600.0 / max(view.calls_per_hour, 1)
    return view.pending * seconds_per_call > max_single_wait_seconds


def next_poll_delay(polls_done: int, *, elapsed: float, progress: float | None) -> float:
    """Seconds until the next poll of a job not finished after ``polls_done`` polls.

    Doubling from ``FIRST_POLL_SECONDS`` up to ``POLL_CAP_SECONDS``; when the answer shows a
    progress between 0 and 100 %, the time it implies is left (``elapsed`` so far, at the same
    pace), within the same bounds, so a job is polled as little as its answer allows.
    """
    backoff = min(FIRST_POLL_SECONDS * (2.0 ** max(polls_done, 0)), POLL_CAP_SECONDS)
    if progress is not None and 0.0 < progress < 100.0 and elapsed > 0:
        remaining = elapsed * (100.0 - progress) / progress
        return min(max(remaining, FIRST_POLL_SECONDS), POLL_CAP_SECONDS)
    return backoff


def first_poll_delay(expected_seconds: float | None) -> float:
    """Seconds from a job's POST to its first poll: the time previous jobs of the same kind on
    this destination took to be seen finished (``learned_job_seconds``), so a job is usually
    polled once; ``FIRST_POLL_SECONDS`` until one has finished. Within the poll bounds."""
    if expected_seconds is None or expected_seconds <= 0:
        return FIRST_POLL_SECONDS
    return min(max(expected_seconds, FIRST_POLL_SECONDS), POLL_CAP_SECONDS)


def learned_job_seconds(previous: float | None, *, finished_after: float, polls: int) -> float:
    """The expected duration kept after a job was seen finished ``finished_after`` seconds after
    its POST, at its ``polls``-th poll.

    Seen done at the first poll (made at ``previous``): it took at most ``previous``; a poll
    served late (budget, other work) does not raise the estimate. Seen done only after polls
    that found it running: the next job of the kind is first polled as late as this one was
    seen done, so it is polled once (calls are the scarce resource, seconds are not).
    """
    if polls <= 1 and previous is not None:
        return min(previous, finished_after)
    return finished_after


def email_match_key(value: str) -> str:
    """How a failure report's ``emails`` is matched to an item: trimmed, any case."""
    return value.strip().lower()


def describe_bulk(
    product: str, setting: str, known: str | None, recheck_at: float | None, now: float,
    min_records: int,
) -> tuple[bool, str]:
    """Whether bulk upsert is in use for a destination, and one line saying why (``check``)."""
    if product != "suite":
        return False, "off: Classic keeps single calls (no Classic bulk API is attested)"
    if setting == "off":
        return False, 'off: bulk = "off"'
    if known is None:
        return True, f"on: not tried yet (the first backlog of {min_records}+ contact writes tries it)"
    if known == BulkApi.PRESENT:
        return True, "in use (the account accepted a bulk upsert)"
    when = "now" if recheck_at is None or recheck_at <= now else f"in {int(recheck_at - now)} s"
    if known == BulkApi.ABSENT:
        return False, f"not in use: the account has no bulk API (404); re-checked {when}"
    return False, f"not in use: bulk upserts were refused (405) repeatedly; tried again {when}"
