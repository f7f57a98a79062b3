from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from freshsales_destination.config import DestinationConfig
from freshsales_destination.core.budget import (
    ACCOUNT_LIMIT_TTL,
    HOUR,
    MINUTE,
    BudgetLimits,
    BudgetState,
    Priority,
    available,
    effective_limits,
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
    st.tuples(st.just("limit"), st.integers(1, 60), st.none() | st.floats(0, 4000)),
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
                state, clock.now, remaining=max(int(remaining), 0),  # type: ignore[arg-type]
                reset_seconds=reset,  # type: ignore[arg-type]
            )
        elif kind == "limit":
            # The account states a limit of its own: never more is granted than configured.
            state = observe_server_headers(
                state, clock.now, limit=step[1], reset_seconds=step[2],  # type: ignore[arg-type]
            )
        else:
            state = observe_throttle(state, clock.now, step[1])  # type: ignore[arg-type]
        if roundtrip:
            state = BudgetState.from_json(state.to_json())
        # memory stays O(limit): no more than per_hour grants are ever kept
        assert len(state.grants) <= limits.per_hour

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


def test_remaining_covers_calls_of_others_until_it_goes_stale() -> None:
    limits = BudgetLimits(per_hour=100, per_minute=100)
    s = BudgetState()
    _, s, _ = try_acquire(s, T0, limits)
    ticket = s.issued
    # Someone else used 59 calls: the server says 40 left after our call.
    s = observe_server_headers(s, T0, ticket=ticket, remaining=40, reset_seconds=600)
    assert available(s, T0, limits) == 40
    # Our own later calls are subtracted from the server's word.
    for _ in range(3):
        _, s, _ = try_acquire(s, T0 + 1, limits)
    assert available(s, T0 + 1, limits) == 37
    # An answer to an older call than the view's does not replace it.
    assert observe_server_headers(s, T0 + 2, ticket=ticket - 1, remaining=90) == s
    # The server's word is trusted for a minute: every call refreshes it.
    assert available(s, T0 + MINUTE, limits) == 100 - 4
    assert observe_server_headers(s, T0, remaining=None) == s


def test_remaining_is_forgotten_at_the_reset() -> None:
    limits = BudgetLimits(per_hour=100, per_minute=100)
    _, s, _ = try_acquire(BudgetState(), T0, limits)
    s = observe_server_headers(s, T0, ticket=s.issued, remaining=0, reset_seconds=20)
    ok, _, wait = try_acquire(s, T0 + 5, limits)
    assert not ok and wait == 15.0
    assert available(s, T0 + 20, limits) == 99
    # A reset of zero means the server's window is starting over: nothing to remember.
    s2 = observe_server_headers(BudgetState(), T0, remaining=0, reset_seconds=0)
    assert s2.server is None


def test_the_account_limit_is_learned_and_the_lower_one_wins() -> None:
    configured = BudgetLimits(per_hour=5000, per_minute=2000)
    s = observe_server_headers(BudgetState(), T0, limit=1000, remaining=999, reset_seconds=3000)
    limits = effective_limits(s, T0, configured)
    assert (limits.per_hour, limits.hour_source) == (1000, "account")
    assert limits.account_window == "hour"
    assert limits.per_minute == 1000  # never more a minute than an hour
    assert limits.mismatch() is not None and "rate_limit_per_hour = 1000" in limits.mismatch()
    # The configuration is a ceiling: lower than the account, it wins.
    low = effective_limits(s, T0, BudgetLimits(per_hour=500, per_minute=100))
    assert (low.per_hour, low.hour_source, low.account_per_hour) == (500, "configured", 1000)
    assert low.mismatch() is None
    # Without headers for a day, the configured figure stands again.
    later = effective_limits(s, T0 + ACCOUNT_LIMIT_TTL, configured)
    assert (later.per_hour, later.hour_source, later.account_limit) == (5000, "configured", None)


def test_the_window_of_a_stated_limit_is_learned_from_its_resets_and_refills() -> None:
    configured = BudgetLimits(per_hour=5000, per_minute=2000)
    # No reset known: the limit caps both windows (safe under either reading).
    s = observe_server_headers(BudgetState(), T0, limit=400)
    limits = effective_limits(s, T0, configured)
    assert (limits.account_window, limits.per_hour, limits.per_minute) == ("unknown", 400, 400)
    # A count that comes back near the limit within a minute of being low, twice: a minute.
    t = T0 + 200
    for _ in range(2):
        s = observe_server_headers(s, t, limit=400, remaining=20, reset_seconds=30)
        s = observe_server_headers(s, t + 40, limit=400, remaining=395, reset_seconds=60)
        t += 60
    limits = effective_limits(s, t, configured)
    assert (limits.account_window, limits.per_hour, limits.per_minute) == ("minute", 5000, 400)
    assert limits.mismatch() is not None and "rate_limit_per_minute = 400" in limits.mismatch()
    # A reset an hour away proves an hourly window, and short resets later do not undo it.
    s = observe_server_headers(s, t, limit=2000, reset_seconds=1800)
    assert effective_limits(s, t, configured).account_window == "hour"
    s = observe_server_headers(s, t + 10, limit=2000, remaining=1, reset_seconds=3)
    s = observe_server_headers(s, t + 20, limit=2000, remaining=1990, reset_seconds=50)
    assert effective_limits(s, t + 20, configured).account_window == "hour"
    # A new limit (a new plan) is learned afresh; resets within a minute for two minutes on
    # end from the first answer on also show a window of a minute.
    s = observe_server_headers(s, t + 30, limit=3000, reset_seconds=30)
    assert effective_limits(s, t + 30, configured).account_window == "unknown"
    for step in range(10, 130, 10):
        s = observe_server_headers(s, t + 30 + step, limit=3000, remaining=2900,
                                   reset_seconds=60 - step % 60)
    assert effective_limits(s, t + 160, configured).account_window == "minute"


def test_a_sliding_hour_under_steady_traffic_is_never_taken_for_a_minute() -> None:
    """The sandbox's own limiter: a sliding hour whose reset is the oldest call + 3600 s."""
    from freshsales_destination.sandbox.ratelimit import SlidingWindowLimiter

    clock = FakeClock()
    limiter = SlidingWindowLimiter.hourly_and_minutely(1000, 400, lambda: clock.now)
    configured = BudgetLimits(per_hour=5000, per_minute=2000)
    s = BudgetState()
    windows = set()
    for _ in range(3 * 3600 // 4):  # three hours of a call every 4 s (900 an hour)
        clock.advance(4.0)
        ok, s, _ = try_acquire(s, clock.now, configured, "event", 0.2)
        if not ok:
            continue
        decision = limiter.hit("key")
        assert decision.allowed  # never a 429
        s = observe_server_headers(
            s, clock.now, ticket=s.issued, limit=decision.limit, remaining=decision.remaining,
            reset_seconds=decision.reset_at - clock.now,
        )
        windows.add(effective_limits(s, clock.now, configured).account_window)
    assert windows == {"hour"}


def test_events_are_not_starved_when_the_server_counts_the_minute() -> None:
    """Remaining describes a fixed 400-a-minute window while 5,000 an hour is configured.
    Until its window is known, the stated 400 caps the hour too; the window is learned from
    the answers, and then the reserve kept of the server's count is a share of the minute,
    so events flow at the minute's pace (less that share), never starved by an hour's reserve."""
    configured = BudgetLimits(per_hour=5000, per_minute=2000)
    s = BudgetState()
    t = T0
    per_minute: list[int] = []
    for minute in range(70):
        start = T0 + minute * MINUTE
        used = 0  # the account's count in this clock minute
        granted = 0
        t = start
        while t < start + MINUTE:
            ok, s, _ = try_acquire(s, t, configured, "event", 0.2)
            if ok:
                used += 1
                granted += 1
                s = observe_server_headers(
                    s, t, ticket=s.issued, limit=400, remaining=max(400 - used, 0),
                    reset_seconds=start + MINUTE - t,
                )
            t += 0.05
        per_minute.append(granted)
    assert effective_limits(s, t, configured).account_window == "minute"
    assert sum(per_minute[:60]) <= 400  # the first hour: unknown window, 400 caps the hour
    assert per_minute[-5:] == [320] * 5, per_minute  # then all but the reserve of 80


def test_the_reserve_is_computed_from_the_effective_limit() -> None:
    configured = BudgetLimits(per_hour=5000, per_minute=5000)
    s = observe_server_headers(BudgetState(), T0, limit=10, reset_seconds=3000)
    assert records_reserve(effective_limits(s, T0, configured).limits, 0.2) == 2
    t = T0
    for _ in range(8):
        ok, s, _ = try_acquire(s, t, configured, "event", 0.2)
        assert ok
        t += 1
    # Events stop at 8 of the account's 10 (not at 4,000 of the configured 5,000) ...
    assert not try_acquire(s, t, configured, "event", 0.2).granted
    assert available(s, t, configured, "record", 0.2) == 2
    # ... and the server's own count keeps the same reserve.
    s2 = observe_server_headers(BudgetState(), T0, limit=1000, remaining=150, reset_seconds=3000)
    assert available(s2, T0, configured, "event", 0.2) == 0
    assert available(s2, T0, configured, "record", 0.2) == 150


@given(
    st.integers(1, 5000), st.integers(1, 2000), st.integers(1, 5000), st.integers(0, 5000),
    st.none() | st.floats(0, 3600),
)
def test_a_pending_event_waits_at_most_until_the_next_window(
    configured_hour: int, configured_minute: int, account: int, remaining: int, reset: float
) -> None:
    """Whatever configuration and account say, an event is granted once a window frees."""
    configured = BudgetLimits(per_hour=configured_hour, per_minute=configured_minute)
    s = observe_server_headers(
        BudgetState(), T0, limit=account, remaining=remaining, reset_seconds=reset
    )
    t = T0
    granted = 0
    for _ in range(200):
        ok, s, wait = try_acquire(s, t, configured, "event", 0.2)
        if ok:
            granted += 1
            continue
        # Denied: the wait never reaches past the hour that frees the oldest call.
        assert 0 < wait <= HOUR
        t += wait
    limits = effective_limits(s, t, configured).limits
    if limits.per_hour - records_reserve(limits, 0.2) >= 1:
        assert granted > 0


def test_throttle_blocks_until_retry_after() -> None:
    limits = BudgetLimits()
    s = observe_throttle(BudgetState(), T0, 30.0)
    ok, _, wait = try_acquire(s, T0 + 10, limits)
    assert not ok and wait == 20.0
    assert available(s, T0 + 10, limits) == 0
    # A shorter throttle does not shorten the block.
    assert observe_throttle(s, T0 + 10, 1.0).blocked_until == s.blocked_until
    ok, s, _ = try_acquire(s, T0 + 30, limits)
    assert ok and s.blocked_until is None
    s = observe_server_headers(s, T0 + 30, ticket=s.issued, remaining=5)  # calls left again
    # A 429 that says nothing of when: a minute, doubling with each 429 in a row ...
    s = observe_throttle(s, T0 + 31, None)
    assert s.blocked_until == T0 + 31 + 60 and s.throttle_streak == 1
    s = observe_throttle(s, T0 + 91, None)
    assert s.blocked_until == T0 + 91 + 120 and s.throttle_streak == 2
    for _ in range(10):
        s = observe_throttle(s, T0 + 300, None)
    assert s.blocked_until == T0 + 300 + 900  # ... at most 15 minutes
    # ... until an answer says calls are left again.
    s = observe_server_headers(s, T0 + 1300, remaining=10)
    assert s.throttle_streak == 0


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
    s = observe_server_headers(BudgetState(), T0, limit=1000, remaining=40, reset_seconds=600)
    _, s, _ = try_acquire(s, T0 + 1, BudgetLimits())
    s = observe_throttle(s, T0 + 2, 30.0, ticket=s.issued)
    assert s.server is not None and s.account is not None and s.blocked_until == T0 + 32
    assert BudgetState.from_json(s.to_json()) == s
    assert BudgetState.from_json(s.to_json().encode()) == s
    assert BudgetState.from_json("{}") == BudgetState()
    # The first format (with estimates of others' calls) still reads.
    old = '{"v": 1, "grants": [5], "external": [9], "blocked_until": null, "last_grant_at": 5}'
    assert BudgetState.from_json(old) == BudgetState(grants=(5.0,), last_grant_at=5.0)
    for bad in ("[]", "nope", '{"v": 3}', '{"grants": [true]}', '{"grants": "x"}',
                '{"blocked_until": "soon"}', '{"issued": -1}',
                '{"account": {"limit": 0, "window": "hour", "seen_at": 1}}',
                '{"account": {"limit": 5, "window": "day", "seen_at": 1}}',
                '{"server": {"remaining": 1}}'):
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
