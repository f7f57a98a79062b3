"""`event_max_age_days`: which messages are too old, and the reason given."""

from __future__ import annotations

import pytest

from freshsales_destination.core.event_age import DAY, too_old

NOW = 1_800_000_000.0


@pytest.mark.parametrize("kind", ["track", "page", "screen"])
def test_events_older_than_the_limit_are_too_old(kind: str) -> None:
    reason = too_old(kind, NOW - 31 * DAY, NOW, 30)
    assert reason == f"{kind} event is 31.0 days old, older than event_max_age_days = 30 of this destination"


@pytest.mark.parametrize("kind", ["identify", "group", "alias", "delete"])
def test_records_are_never_too_old(kind: str) -> None:
    assert too_old(kind, NOW - 3650 * DAY, NOW, 30) is None


def test_at_the_limit_or_younger_passes_and_no_limit_passes_all() -> None:
    assert too_old("track", NOW - 30 * DAY, NOW, 30) is None
    assert too_old("track", NOW - 29.9 * DAY, NOW, 30) is None
    assert too_old("track", NOW + DAY, NOW, 30) is None  # a clock ahead: not old
    assert too_old("track", NOW - 3650 * DAY, NOW, None) is None
    assert too_old("page", NOW - 0.6 * DAY, NOW, 0.5) is not None  # fractions of a day
