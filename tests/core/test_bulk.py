"""The pure bulk decisions (core/bulk.py): when a job is worth it, how a job is polled, what the
learned capability allows, and how check describes it."""

from __future__ import annotations

import pytest

from freshsales_destination.core.bulk import (
    FIRST_POLL_SECONDS,
    POLL_CAP_SECONDS,
    BacklogView,
    BulkApi,
    bulk_usable,
    describe_bulk,
    first_poll_delay,
    learned_job_seconds,
    next_poll_delay,
    should_bulk,
)


@pytest.mark.parametrize(
    ("ready", "pending", "per_hour", "expected"),
    [
        (1, 50_000, 1000, False),  # a lone identify always goes at once, whatever the backlog
        (10, 10, 1000, True),  # the threshold
        (9, 9, 1000, False),  # under it, and 9 calls drain in 32 s
        (4, 17, 1000, True),  # under it, but 17 calls take 61 s at 1,000 an hour
        (4, 17, 5000, False),  # ... and 12 s at 5,000 an hour
        (3, 5000, 1000, False),  # three writes: a job (POST and poll) saves nothing
    ],
)
def test_should_bulk(ready: int, pending: int, per_hour: int, expected: bool) -> None:
    assert should_bulk(BacklogView(ready, pending, per_hour), min_records=10) is expected


def test_polls_back_off_and_follow_progress_when_shown() -> None:
    delays = [next_poll_delay(n, elapsed=1.0, progress=None) for n in range(10)]
    assert delays[0] == FIRST_POLL_SECONDS
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert delays[-1] == POLL_CAP_SECONDS
    # 25 % done after 30 s: about 90 s left, polled then rather than at the backoff's 4 s.
    assert next_poll_delay(1, elapsed=30.0, progress=25.0) == pytest.approx(90.0)
    assert next_poll_delay(1, elapsed=30.0, progress=99.9) == FIRST_POLL_SECONDS
    assert next_poll_delay(1, elapsed=10_000.0, progress=1.0) == POLL_CAP_SECONDS
    assert next_poll_delay(3, elapsed=30.0, progress=0.0) == FIRST_POLL_SECONDS * 8  # 0 %: no pace known


def test_capability() -> None:
    assert bulk_usable(None, None, 100.0)
    assert bulk_usable(BulkApi.PRESENT, None, 100.0)
    assert not bulk_usable(BulkApi.ABSENT, 200.0, 100.0)
    assert bulk_usable(BulkApi.ABSENT, 200.0, 200.0)
    assert not bulk_usable(BulkApi.REFUSED, None, 100.0)


def test_describe() -> None:
    assert describe_bulk("classic", "auto", None, None, 0.0, 10)[0] is False
    assert describe_bulk("suite", "off", BulkApi.PRESENT, None, 0.0, 10) == (False, 'off: bulk = "off"')
    assert describe_bulk("suite", "auto", None, None, 0.0, 10) == (
        True, "on: not tried yet (the first backlog of 10+ contact writes tries it)")
    assert describe_bulk("suite", "auto", BulkApi.PRESENT, None, 0.0, 10)[0] is True
    used, why = describe_bulk("suite", "auto", BulkApi.ABSENT, 3600.0, 0.0, 10)
    assert not used and why.endswith("re-checked in 3600 s")
    used, why = describe_bulk("suite", "auto", BulkApi.REFUSED, 10.0, 20.0, 10)
    assert not used and "405" in why and why.endswith("tried again now")


def test_the_first_poll_waits_for_the_learned_duration_within_the_bounds() -> None:
    assert first_poll_delay(None) == FIRST_POLL_SECONDS  # nothing learned yet
    assert first_poll_delay(14.0) == 14.0
    assert first_poll_delay(0.5) == FIRST_POLL_SECONDS
    assert first_poll_delay(10_000.0) == POLL_CAP_SECONDS


def test_the_learned_duration_is_when_a_job_was_seen_done_and_a_late_poll_does_not_raise_it() -> None:
    # A job polled at 2, 6 and 14 s, done at the third: the next is first polled at 14 s.
    assert learned_job_seconds(None, finished_after=14.0, polls=3) == 14.0
    # Done at its first poll, made at the expected 14 s but served at 20 s: still 14 s.
    assert learned_job_seconds(14.0, finished_after=20.0, polls=1) == 14.0
    # A job that took longer than expected (running at 14 s, done at 18 s): 18 s from now on.
    assert learned_job_seconds(14.0, finished_after=18.0, polls=2) == 18.0


def test_polls_of_a_job_like_the_previous_ones_cost_one_call() -> None:
    """Jobs that take 5 s: the first is polled twice (at 2 and 6 s); every later one once."""
    duration = 5.0
    expected: float | None = None
    polls_per_job = []
    for _ in range(4):
        at, polls = first_poll_delay(expected), 1
        while at < duration:
            at += next_poll_delay(polls, elapsed=at, progress=None)
            polls += 1
        expected = learned_job_seconds(expected, finished_after=at, polls=polls)
        polls_per_job.append(polls)
    assert polls_per_job == [2, 1, 1, 1]
