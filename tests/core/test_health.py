"""The pure destination-health decisions (core/health.py), on a fake clock."""

from __future__ import annotations

import pytest

from freshsales_destination.core.health import (
    Health,
    HealthPolicy,
    claim_probe,
    observe,
    probe_delay,
)

POLICY = HealthPolicy()
T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_a_healthy_destination_is_not_paused_and_any_worker_may_go() -> None:
    health = Health()
    assert not health.paused
    taken, same = claim_probe(health, T0, POLICY)
    assert taken and same == health


def test_a_refused_key_pauses_and_probes_back_off_to_one_every_five_minutes() -> None:
    clock = Clock()
    health = Health()
    probes: list[float] = []
    transition = observe(health, "auth_failed", clock.now, POLICY, detail="401: Incorrect")
    assert transition.announce and not transition.recovered
    health = transition.health
    probes.append(clock.now)
    announcements = 1
    for _ in range(3600):  # an hour, polled every second
        clock.advance(1)
        taken, health = claim_probe(health, clock.now, POLICY)
        if taken:
            probes.append(clock.now)
            step = observe(health, "auth_failed", clock.now, POLICY, detail="401: Incorrect")
            announcements += step.announce
            health = step.health
    gaps = [b - a for a, b in zip(probes, probes[1:], strict=False)]
    assert gaps[:5] == [15, 30, 60, 120, 240]
    assert set(gaps[5:]) == {300}
    assert sum(1 for t in probes if t < T0 + 60) == 3, "more than a few calls in the first minute"
    assert announcements == 1, "one log line, not one per probe"
    assert health.state == "auth_failed" and health.since == T0


def test_recovery_is_announced_once_and_keeps_the_last_failure() -> None:
    failed = observe(Health(), "unreachable", T0, POLICY, detail="ConnectError").health
    recovered = observe(failed, "ok", T0 + 10, POLICY)
    assert recovered.announce and recovered.recovered
    assert recovered.health.state == "healthy"
    assert recovered.health.last_success_at == T0 + 10
    assert recovered.health.last_failure_at == T0
    assert recovered.health.next_probe_at is None and recovered.health.failures == 0
    again = observe(recovered.health, "ok", T0 + 20, POLICY)
    assert not again.announce and not again.recovered


def test_another_fault_is_announced_the_same_one_is_not() -> None:
    first = observe(Health(), "auth_failed", T0, POLICY, detail="401: Incorrect").health
    same = observe(first, "auth_failed", T0 + 15, POLICY, detail="401: Incorrect")
    assert not same.announce and same.health.failures == 2
    other_reason = observe(same.health, "auth_failed", T0 + 45, POLICY, detail="403: Denied")
    assert other_reason.announce
    other_state = observe(other_reason.health, "misconfigured", T0 + 60, POLICY, detail="InvalidURL")
    assert other_state.announce and other_state.health.failures == 1
    assert other_state.health.next_probe_at == T0 + 60 + POLICY.misconfigured_base_seconds


def test_a_rate_limit_does_not_pause_and_uses_the_servers_hint() -> None:
    limited = observe(Health(), "rate_limited", T0, POLICY, detail="429", retry_after=120).health
    assert limited.state == "rate_limited" and not limited.paused
    assert limited.next_probe_at == T0 + 120
    taken, _ = claim_probe(limited, T0 + 1, POLICY)
    assert taken, "the budget, not health, holds calls after a 429"


def test_only_one_probe_is_taken_per_slot_and_a_lost_probe_is_followed_by_another() -> None:
    paused = observe(Health(), "auth_failed", T0, POLICY, detail="401").health
    assert claim_probe(paused, T0 + 5, POLICY) == (False, paused)
    taken, reserved = claim_probe(paused, T0 + 15, POLICY)
    assert taken
    again, _ = claim_probe(reserved, T0 + 16, POLICY)
    assert not again, "a second worker took the same probe"
    # The worker that took it died without an answer: another probe comes in due time.
    later, _ = claim_probe(reserved, T0 + 15 + probe_delay(POLICY, "auth_failed", 2), POLICY)
    assert later


def test_a_fresh_process_probes_at_once() -> None:
    paused = observe(Health(), "auth_failed", T0, POLICY, detail="401").health
    assert not claim_probe(paused, T0 + 1, POLICY)[0]
    assert claim_probe(paused, T0 + 1, POLICY, force=True)[0]


def test_the_state_round_trips_and_bad_data_reads_as_healthy() -> None:
    health = observe(Health(), "misconfigured", T0, POLICY, detail="404 (no API here)").health
    assert Health.from_json(health.to_json()) == health
    for raw in (None, b"", b"not json", b"[]", b'{"state": "weird"}'):
        assert Health.from_json(raw) == Health()


@pytest.mark.parametrize("failures", [0, 1, 5, 10_000])
def test_probe_delay_is_bounded(failures: int) -> None:
    delay = probe_delay(POLICY, "auth_failed", failures)
    assert 0 <= delay <= POLICY.cap_seconds
