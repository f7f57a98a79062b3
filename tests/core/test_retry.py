from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshsales_destination.config import DeliveryConfig
from freshsales_destination.core.retry import (
    RetryPolicy,
    backoff_ceiling,
    backoff_delay,
    decide,
)

T0 = 1_700_000_000.0

policies = st.builds(
    lambda base, factor, jitter, err_win, thr_win, tbase, tfactor: RetryPolicy(
        base_seconds=base,
        cap_seconds=base * factor,
        jitter=jitter,
        error_window_seconds=err_win,
        throttle_window_seconds=thr_win,
        throttle_base_seconds=tbase,
        throttle_cap_seconds=tbase * tfactor,
    ),
    st.floats(0.01, 600),
    st.floats(1, 1000),
    st.floats(0, 1),
    st.floats(1, 10 * 86400),
    st.floats(1, 10 * 86400),
    st.floats(0.1, 600),
    st.floats(1, 100),
)
rands = st.floats(0, 1, exclude_max=True)
attempts_st = st.integers(0, 5000)
kinds = st.sampled_from(["retryable", "throttled", "permanent"])
retry_afters = st.none() | st.floats(0, 7 * 86400)


@given(policies, attempts_st, rands)
def test_backoff_delay_within_zero_and_cap(policy: RetryPolicy, failures: int, r: float) -> None:
    delay = backoff_delay(policy, failures, r)
    assert 0.0 <= delay <= policy.cap_seconds
    assert delay <= backoff_ceiling(policy, failures)
    assert delay >= backoff_ceiling(policy, failures) * (1 - policy.jitter) - 1e-9


@given(policies, attempts_st)
def test_backoff_upper_bound_is_monotone(policy: RetryPolicy, failures: int) -> None:
    assert backoff_ceiling(policy, failures) <= backoff_ceiling(policy, failures + 1)
    assert backoff_ceiling(policy, failures + 1) <= policy.cap_seconds


@given(policies, attempts_st, st.floats(0, 86400), rands)
def test_retryable_delays_within_cap(
    policy: RetryPolicy, attempts: int, elapsed: float, r: float
) -> None:
    d = decide(
        policy,
        attempts=attempts,
        first_failure_at=T0,
        now=T0 + elapsed,
        error_kind="retryable",
        retry_after=None,
        rand=r,
    )
    assert d.attempts_after == attempts + 1
    if d.action == "retry":
        assert 0.0 <= d.delay <= policy.cap_seconds
        assert d.delay <= backoff_ceiling(policy, attempts + 1)


@given(policies, attempts_st, st.floats(0, 30 * 86400), retry_afters, rands)
def test_throttles_never_increment_attempts(
    policy: RetryPolicy, attempts: int, elapsed: float, retry_after: float | None, r: float
) -> None:
    d = decide(
        policy,
        attempts=attempts,
        first_failure_at=T0,
        now=T0 + elapsed,
        error_kind="throttled",
        retry_after=retry_after,
        rand=r,
    )
    assert d.attempts_after == attempts
    if d.action == "retry" and retry_after is not None:
        assert d.at >= T0 + elapsed + retry_after


@given(
    policies,
    attempts_st,
    st.none() | st.floats(0, 30 * 86400),
    st.floats(0, 30 * 86400),
    kinds,
    retry_afters,
    rands,
)
@settings(max_examples=300)
def test_never_retries_past_the_window(
    policy: RetryPolicy,
    attempts: int,
    first_offset: float | None,
    elapsed: float,
    kind: str,
    retry_after: float | None,
    r: float,
) -> None:
    now = T0 + elapsed
    first = None if first_offset is None else T0 + min(first_offset, elapsed)
    d = decide(
        policy,
        attempts=attempts,
        first_failure_at=first,
        now=now,
        error_kind=kind,  # type: ignore[arg-type]
        retry_after=retry_after,
        rand=r,
    )
    assert d.first_failure_at == (now if first is None else first)
    if d.action == "retry":
        assert now <= d.at <= d.first_failure_at + policy.window_for(kind)  # type: ignore[arg-type]
        assert kind != "permanent"
    else:
        assert d.at == now and d.delay == 0.0
    if kind == "permanent":
        assert d.action == "dead"
        assert d.attempts_after == attempts + 1


def test_examples_with_defaults() -> None:
    p = RetryPolicy()
    d = decide(p, attempts=0, first_failure_at=None, now=T0, error_kind="retryable", rand=0.0)
    assert (d.action, d.delay, d.attempts_after, d.first_failure_at) == ("retry", 5.0, 1, T0)
    d = decide(p, attempts=3, first_failure_at=T0, now=T0 + 60, error_kind="retryable", rand=0.0)
    assert d.delay == 40.0 and d.at == T0 + 100
    d = decide(p, attempts=3, first_failure_at=T0, now=T0, error_kind="retryable", rand=0.999)
    assert 20.0 <= d.delay < 21.0  # half jitter: [ceiling/2, ceiling]
    d = decide(p, attempts=50, first_failure_at=T0, now=T0, error_kind="retryable", rand=0.0)
    assert d.delay == 900.0


def test_retryable_goes_dead_after_four_hours() -> None:
    p = RetryPolicy()
    late = T0 + 4 * 3600 - 100
    d = decide(
        p,
        attempts=20,
        first_failure_at=T0,
        now=late,
        error_kind="retryable",
        rand=0.0,
        last_error="503 from Freshsales",
    )
    assert d.action == "dead"
    assert d.attempts_after == 21
    assert "4 h" in d.reason and "503 from Freshsales" in d.reason


def test_throttle_with_retry_after_waits_at_least_that_long() -> None:
    p = RetryPolicy()
    d = decide(
        p, attempts=2, first_failure_at=T0, now=T0, error_kind="throttled", retry_after=1800.0,
        rand=0.5,
    )
    assert d.action == "retry" and d.attempts_after == 2
    assert 1800.0 <= d.delay <= 1801.0


def test_throttle_survives_longer_than_error_window_but_not_a_day() -> None:
    p = RetryPolicy()
    d = decide(
        p, attempts=0, first_failure_at=T0, now=T0 + 10 * 3600, error_kind="throttled",
        retry_after=600.0, rand=0.0,
    )
    assert d.action == "retry"
    d = decide(
        p, attempts=0, first_failure_at=T0, now=T0 + 24 * 3600 - 60, error_kind="throttled",
        retry_after=600.0, rand=0.0,
    )
    assert d.action == "dead" and "24 h" in d.reason


def test_throttle_without_hint_backs_off_by_time_spent() -> None:
    p = RetryPolicy(jitter=0.0)
    d1 = decide(p, attempts=0, first_failure_at=None, now=T0, error_kind="throttled", rand=0.3)
    assert d1.delay == 30.0
    d2 = decide(p, attempts=0, first_failure_at=T0, now=T0 + 300, error_kind="throttled", rand=0.3)
    assert d2.delay == 300.0
    d3 = decide(
        p, attempts=0, first_failure_at=T0, now=T0 + 5 * 3600, error_kind="throttled", rand=0.3
    )
    assert d3.delay == 3600.0


def test_server_retry_after_on_retryable_is_honoured_up_to_cap() -> None:
    p = RetryPolicy()
    d = decide(p, attempts=0, first_failure_at=None, now=T0, error_kind="retryable",
               retry_after=120.0, rand=0.0)
    assert d.delay == 120.0
    d = decide(p, attempts=0, first_failure_at=None, now=T0, error_kind="retryable",
               retry_after=10_000.0, rand=0.0)
    assert d.delay == 900.0


def test_max_attempts() -> None:
    p = RetryPolicy(max_attempts=3)
    d = decide(p, attempts=1, first_failure_at=T0, now=T0, error_kind="retryable", rand=0.0)
    assert d.action == "retry"
    d = decide(p, attempts=2, first_failure_at=T0, now=T0, error_kind="retryable", rand=0.0)
    assert d.action == "dead" and d.attempts_after == 3


def test_accepts_datetimes_and_random_instances() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    p = RetryPolicy()
    d1 = decide(p, attempts=1, first_failure_at=start, now=start + timedelta(seconds=10),
                error_kind="retryable", rand=random.Random(7))
    d2 = decide(p, attempts=1, first_failure_at=start.timestamp(), now=start.timestamp() + 10,
                error_kind="retryable", rand=random.Random(7))
    assert d1 == d2
    naive = datetime(2026, 1, 1)
    d3 = decide(p, attempts=1, first_failure_at=naive, now=naive + timedelta(seconds=10),
                error_kind="retryable", rand=random.Random(7))
    assert d3 == d1


def test_first_failure_in_the_future_is_clamped() -> None:
    d = decide(RetryPolicy(), attempts=0, first_failure_at=T0 + 50, now=T0,
               error_kind="retryable", rand=0.0)
    assert d.first_failure_at == T0


def test_invalid_inputs() -> None:
    p = RetryPolicy()
    with pytest.raises(ValueError):
        decide(p, attempts=-1, first_failure_at=None, now=T0, error_kind="retryable")
    with pytest.raises(ValueError):
        bogus: Any = "bogus"
        decide(p, attempts=0, first_failure_at=None, now=T0, error_kind=bogus)
    with pytest.raises(ValueError):
        decide(p, attempts=0, first_failure_at=None, now=T0, error_kind="retryable", rand=1.5)
    with pytest.raises(ValueError):
        RetryPolicy(base_seconds=10, cap_seconds=5)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
    with pytest.raises(ValueError):
        RetryPolicy(base_seconds=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_from_delivery_config() -> None:
    cfg = DeliveryConfig(retry_window_hours=2, throttle_window_hours=12,
                         backoff_base_seconds=3, backoff_cap_seconds=60)
    p = RetryPolicy.from_delivery_config(cfg)
    assert (p.base_seconds, p.cap_seconds) == (3, 60)
    assert p.error_window_seconds == 7200 and p.throttle_window_seconds == 12 * 3600
