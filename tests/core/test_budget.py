from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from freshsales_destination.config import DestinationConfig
from freshsales_destination.core.budget import (
    HOUR,
    MINUTE,
    BudgetLimits,
    BudgetState,
    Priority,
    available,
    observe_server_headers,
    observe_throttle,
    records_reserve,
    try_acquire,
)

T0 = 1_700_000_000.0


@dataclass
class FakeClock:
    now: float = T0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Ledger:
    """Everything granted, by time and priority, to check windows afterwards."""

    grants: list[tuple[float, str]] = field(default_factory=list)

    def times(self, priority: str | None = None) -> list[float]:
        return sorted(t for t, p in self.grants if priority is None or p == priority)


def max_in_any_window(times: list[float], width: float) -> int:
    """Largest number of times inside any half-open window [a, a + width)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + width:
            j += 1
        best = max(best, j - i)
    return best


limits_st = st.builds(BudgetLimits, per_hour=st.integers(1, 40), per_minute=st.integers(1, 12))
fractions = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9])
PRIORITIES: tuple[Priority, ...] = ("record", "event")
priorities = st.sampled_from(PRIORITIES)

# One step of a scenario: a clock move, then an action.
steps = st.one_of(
    st.tuples(st.just("acquire"), st.floats(0, 90), priorities),
    st.tuples(st.just("acquire"), st.floats(0, 3), priorities),
    st.tuples(st.just("jump"), st.floats(0, 4000), priorities),
    st.tuples(st.just("back"), st.floats(0, 120), priorities),
    st.tuples(
        st.just("headers"),
        st.integers(-5, 60),
        st.none() | st.floats(-10, 5000),
    ),
    st.tuples(st.just("throttle"), st.none() | st.floats(0, 300)),
)


@given(limits_st, fractions, st.lists(steps, max_size=250), st.booleans())
@settings(max_examples=150, deadline=None)
def test_grants_never_exceed_limits_in_any_window(
    limits: BudgetLimits,
    fraction: float,
    scenario: list[tuple[object, ...]],
    roundtrip: bool,
) -> None:
    clock = FakeClock()
    state = BudgetState()
    ledger = Ledger()
    for step in scenario:
        kind = step[0]
        if kind in ("acquire", "jump", "back"):
            delta = float(step[1])  # type: ignore[arg-type]
            clock.advance(-delta if kind == "back" else delta)
            priority = step[2]
            granted, state, wait = try_acquire(
                state, clock.now, limits, priority, fraction  # type: ignore[arg-type]
            )
            if granted:
                assert wait == 0.0
                ledger.grants.append((clock.now, str(priority)))
            else:
                assert wait > 0.0
        elif kind == "headers":
            remaining = step[1]
            reset = step[2]
            state = observe_server_headers(
                state, clock.now, limits, remaining, reset  # type: ignore[arg-type]
            )
        else:
            state = observe_throttle(state, clock.now, step[1])  # type: ignore[arg-type]
        if roundtrip:
            state = BudgetState.from_json(state.to_json())
        # memory stays O(limit): no more than per_hour grants are ever kept
        assert len(state.grants) <= limits.per_hour
        assert len(state.external) <= limits.per_hour

    times = ledger.times()
    assert max_in_any_window(times, MINUTE) <= limits.per_minute
    assert max_in_any_window(times, HOUR) <= limits.per_hour


@given(
    st.lists(st.floats(T0 - 5000, T0 + 5000), max_size=200),
    limits_st,
)
@settings(max_examples=150, deadline=None)
def test_limits_hold_even_when_calls_arrive_out_of_time_order(
    times: list[float], limits: BudgetLimits
) -> None:
    state = BudgetState()
    granted_times: list[float] = []
    for t in times:
        granted, state, _ = try_acquire(state, t, limits, "record")
        if granted:
            granted_times.append(t)
    assert max_in_any_window(granted_times, MINUTE) <= limits.per_minute
    assert max_in_any_window(granted_times, HOUR) <= limits.per_hour


@given(limits_st, fractions, st.lists(st.tuples(st.floats(0, 200), priorities), max_size=300))
@settings(max_examples=150, deadline=None)
def test_records_are_never_starved_by_events(
    limits: BudgetLimits, fraction: float, scenario: list[tuple[float, Priority]]
) -> None:
    reserve = records_reserve(limits, fraction)
    clock = FakeClock()
    state = BudgetState()
    ledger = Ledger()
    for delta, priority in scenario:
        clock.advance(delta)
        # Events flood in: one event attempt before every step.
        granted, state, _ = try_acquire(state, clock.now, limits, "event", fraction)
        if granted:
            ledger.grants.append((clock.now, "event"))
        granted, state, _ = try_acquire(state, clock.now, limits, priority, fraction)
        if granted:
            ledger.grants.append((clock.now, priority))
        elif priority == "record":
            minute_used = sum(1 for t, _ in ledger.grants if t + MINUTE > clock.now)
            if minute_used < limits.per_minute:
                # Denied for the hour: only possible once records used their whole reserve.
                records_in_hour = sum(
                    1 for t, p in ledger.grants if p == "record" and t + HOUR > clock.now
                )
                assert records_in_hour >= reserve
    # Events alone never eat into the reserve.
    assert max_in_any_window(ledger.times("event"), HOUR) <= limits.per_hour - reserve


@given(limits_st, fractions, st.lists(st.tuples(st.floats(0, 100), priorities), max_size=120))
@settings(max_examples=100, deadline=None)
def test_wait_seconds_is_exact_when_nothing_else_happens(
    limits: BudgetLimits, fraction: float, scenario: list[tuple[float, Priority]]
) -> None:
    clock = FakeClock()
    state = BudgetState()
    for delta, priority in scenario:
        clock.advance(delta)
        granted, new_state, wait = try_acquire(state, clock.now, limits, priority, fraction)
        if not granted:
            assert new_state == state
            # Just before the wait is over: still denied. At the wait: granted.
            if wait > 1e-6:
                early = clock.now + wait * 0.999
                assert not try_acquire(state, early, limits, priority, fraction).granted
            assert try_acquire(state, clock.now + wait, limits, priority, fraction).granted
        state = new_state


def test_minute_and_hour_limits_example() -> None:
    limits = BudgetLimits(per_hour=5, per_minute=2)
    s = BudgetState()
    g1, s, _ = try_acquire(s, T0, limits)
    g2, s, _ = try_acquire(s, T0 + 1, limits)
    g3, s3, wait = try_acquire(s, T0 + 2, limits)
    assert (g1, g2, g3) == (True, True, False)
    assert s3 == s
    assert wait == 58.0  # the call at T0 leaves the minute window at T0 + 60
    ok, s, _ = try_acquire(s, T0 + 60, limits)
    assert ok
    ok, s, _ = try_acquire(s, T0 + 120, limits)
    ok2, s, _ = try_acquire(s, T0 + 121, limits)
    assert ok and ok2  # 5 in the hour now
    denied, _, wait = try_acquire(s, T0 + 500, limits)
    assert not denied and wait == T0 + HOUR - (T0 + 500)


def test_events_stop_at_the_reserve_records_continue() -> None:
    limits = BudgetLimits(per_hour=10, per_minute=100)
    s = BudgetState()
    t = T0
    for _ in range(8):
        ok, s, _ = try_acquire(s, t, limits, "event", 0.2)
        assert ok
        t += 1
    assert records_reserve(limits, 0.2) == 2
    ok, _, wait = try_acquire(s, t, limits, "event", 0.2)
    assert not ok and wait == pytest.approx(HOUR - 8)
    assert available(s, t, limits, "event", 0.2) == 0
    assert available(s, t, limits, "record", 0.2) == 2
    for _ in range(2):
        ok, s, _ = try_acquire(s, t, limits, "record", 0.2)
        assert ok
    ok, _, _ = try_acquire(s, t, limits, "record", 0.2)
    assert not ok


def test_server_headers_lower_but_never_raise_the_budget() -> None:
    limits = BudgetLimits(per_hour=100, per_minute=100)
    s = BudgetState()
    _, s, _ = try_acquire(s, T0, limits)
    # The server claims more is left than we think: ignored.
    assert observe_server_headers(s, T0, limits, remaining=500, reset_seconds=10) == s
    assert observe_server_headers(s, T0, limits, remaining=None) == s
    # Someone else used 59 calls: remaining 40 while we think 99.
    s2 = observe_server_headers(s, T0, limits, remaining=40, reset_seconds=600)
    assert available(s2, T0, limits) == 40
    assert s2.external == (T0 + 600,) * 59
    # Observing the same again adds nothing.
    assert observe_server_headers(s2, T0 + 1, limits, remaining=40, reset_seconds=599) == s2
    # After the reset the external calls no longer count.
    assert available(s2, T0 + 600, limits) == 99
    # Unknown reset: the external calls count for an hour.
    s3 = observe_server_headers(s, T0, limits, remaining=0)
    assert available(s3, T0 + HOUR - 1, limits) == 0
    # A reset of zero means the server window is starting over.
    assert observe_server_headers(s, T0, limits, remaining=0, reset_seconds=0) == s


def test_throttle_blocks_until_retry_after() -> None:
    limits = BudgetLimits()
    s = observe_throttle(BudgetState(), T0, 30.0)
    ok, _, wait = try_acquire(s, T0 + 10, limits)
    assert not ok and wait == 20.0
    assert available(s, T0 + 10, limits) == 0
    # A shorter throttle does not shorten the block.
    assert observe_throttle(s, T0 + 10, 1.0) == s
    ok, s, _ = try_acquire(s, T0 + 30, limits)
    assert ok and s.blocked_until is None
    s = observe_throttle(s, T0 + 31, None)
    assert s.blocked_until == T0 + 91


def test_clock_going_backwards_waits_for_the_last_grant() -> None:
    limits = BudgetLimits()
    _, s, _ = try_acquire(BudgetState(), T0, limits)
    ok, s2, wait = try_acquire(s, T0 - 0.25, limits)
    assert not ok and s2 == s and wait == 0.25
    assert available(s, T0 - 1, limits) == 0


def test_old_entries_are_pruned_on_grant() -> None:
    limits = BudgetLimits(per_hour=3, per_minute=3)
    s = BudgetState()
    for t in (T0, T0 + 1, T0 + 2):
        _, s, _ = try_acquire(s, t, limits)
    _, s, _ = try_acquire(s, T0 + HOUR + 1.5, limits)
    assert s.grants == (T0 + 2, T0 + HOUR + 1.5)


def test_json_roundtrip_and_validation() -> None:
    s = BudgetState(grants=(T0, T0 + 0.1), external=(T0 + 5,), blocked_until=T0 + 9,
                    last_grant_at=T0 + 0.1)
    assert BudgetState.from_json(s.to_json()) == s
    assert BudgetState.from_json(s.to_json().encode()) == s
    assert BudgetState.from_json("{}") == BudgetState()
    for bad in ("[]", "nope", '{"v": 2}', '{"grants": [true]}', '{"grants": "x"}',
                '{"blocked_until": "soon"}'):
        with pytest.raises(ValueError):
            BudgetState.from_json(bad)
    # unsorted input is put in order
    assert BudgetState.from_json('{"grants": [3, 1, 2]}').grants == (1.0, 2.0, 3.0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        BudgetLimits(per_hour=0)
    with pytest.raises(ValueError):
        try_acquire(BudgetState(), T0, BudgetLimits(), "bulk")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        try_acquire(BudgetState(), T0, BudgetLimits(), "event", 1.0)
    with pytest.raises(ValueError):
        try_acquire(BudgetState(), float("nan"), BudgetLimits())


def test_limits_from_destination_config() -> None:
    cfg = DestinationConfig(domain="acme", api_key=SecretStr("k"), rate_limit_per_hour=2000,
                            rate_limit_per_minute=300)
    assert BudgetLimits.from_destination_config(cfg) == BudgetLimits(2000, 300)
