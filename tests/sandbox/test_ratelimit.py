from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from freshsales_destination.sandbox import FakeClock
from freshsales_destination.sandbox.ratelimit import SlidingWindowLimiter, Window
from tests.sandbox.conftest import MakeApi


def test_minute_budget_then_recovery() -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter.hourly_and_minutely(100, 3, clock)
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]
    refused = limiter.hit("k")
    assert refused.remaining == 0 and refused.retry_after == 60.0 and refused.reset_at == 60.0
    clock.advance(59.9)
    assert not limiter.hit("k").allowed
    clock.advance(0.2)
    decision = limiter.hit("k")
    assert decision.allowed and decision.limit == 100


def test_hour_budget_and_keys_are_separate() -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter.hourly_and_minutely(5, 400, clock)
    for _ in range(5):
        assert limiter.hit("a").allowed
        clock.advance(1)
    refused = limiter.hit("a")
    assert not refused.allowed and refused.retry_after == 3600 - 5
    assert limiter.hit("b").allowed
    clock.advance(3600 - 5)
    assert limiter.hit("a").allowed
    assert limiter.peek("a").remaining == 0


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=40, allow_nan=False), min_size=1, max_size=150),
    per_hour=st.integers(min_value=1, max_value=30),
    per_minute=st.integers(min_value=1, max_value=8),
)
def test_never_more_than_the_budget_in_any_window(gaps: list[float], per_hour: int, per_minute: int) -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter([Window(3600, per_hour), Window(60, per_minute)], clock)
    admitted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        decision = limiter.hit("key")
        if decision.allowed:
            admitted.append(clock.now)
        assert decision.remaining >= 0
    for t in admitted:
        assert sum(1 for u in admitted if t - 3600 < u <= t) <= per_hour
        assert sum(1 for u in admitted if t - 60 < u <= t) <= per_minute


def test_http_headers_and_429_without_retry_after(make_api: MakeApi) -> None:
    api = make_api(rate_limit_per_minute=2, rate_limit_per_hour=10)
    first = api.get("/selector/owners")
    assert first.headers["x-ratelimit-limit"] == "10" and first.headers["x-ratelimit-remaining"] == "1"
    assert int(first.headers["x-ratelimit-reset"]) == int(api.state.clock()) + 3600
    api.get("/selector/owners")
    refused = api.get("/selector/owners")
    assert refused.status_code == 429 and refused.json() == {"error_code": 429}
    assert "retry-after" not in refused.headers and refused.headers["x-ratelimit-remaining"] == "0"
    assert api.get("/_sandbox/state").status_code == 200  # admin is never rate limited


def test_429_with_retry_after_and_clock_recovery(make_api: MakeApi, clock: FakeClock) -> None:
    api = make_api(rate_limit_per_minute=1, retry_after=True)
    api.get("/selector/owners")
    refused = api.get("/selector/owners")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    clock.advance(60)
    assert api.get("/selector/owners").status_code == 200


def test_reset_formats(make_api: MakeApi) -> None:
    delta = make_api(reset_format="delta").get("/selector/owners")
    assert delta.headers["x-ratelimit-reset"] == "3600"
    dmy = make_api(reset_format="dmyHis").get("/selector/owners")
    assert len(dmy.headers["x-ratelimit-reset"]) == 12


def test_unauthorised_calls_do_not_spend_budget(make_api: MakeApi) -> None:
    api = make_api(rate_limit_per_minute=1)
    for _ in range(3):
        assert api.client.get("/api/selector/owners").status_code == 401
    assert api.get("/selector/owners").status_code == 200
