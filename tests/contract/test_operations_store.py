"""The store's operations methods (issue 10) on every backend: the journey (bounded, written
with the state change, pruned with the message), search with keyset pagination and bounded
scans, the stats aggregates, failure groups and the dead-letter actions."""

from __future__ import annotations

import orjson
import pytest

from freshsales_destination.store import rules
from freshsales_destination.store.base import JourneyRow, MessageQuery, NewMessage, Store

T0 = 1_800_000_000.0


def _message(
    mid: str,
    *,
    user: str | None = None,
    anonymous: str | None = None,
    email: str | None = None,
    source: str = "web",
    destination: str = "crm",
    kind: str = "track",
    status: str = "pending",
    reason: str | None = None,
    at: float = T0,
) -> NewMessage:
    event: dict[str, object] = {"type": kind, "messageId": mid}
    if user is not None:
        event["userId"] = user
    if anonymous is not None:
        event["anonymousId"] = anonymous
    if email is not None:
        event["traits"] = {"email": email}
    lane = f"u:{user}" if user else (f"a:{anonymous}" if anonymous else None)
    body = orjson.dumps(event)
    return NewMessage(
        source=source, destination=destination, message_id=mid, type=kind, status=status,
        reason=reason, lane=lane, received_at=at, event_at=at, raw=body, message=body,
    )


def _seq(store: Store, mid: str, source: str = "web") -> int:
    stored = store.get_message(source, mid)
    assert stored is not None, mid
    return stored.seq


def test_journey_steps_are_bounded_keeping_the_first_and_the_latest(store: Store) -> None:
    store.append([_message("m1", user="ann")])
    seq = _seq(store, "m1")
    store.add_steps([JourneyRow(seq, T0 + i, "call", orjson.dumps({"i": i})) for i in range(30)])
    store.add_steps([JourneyRow(seq, T0 + i, "call", orjson.dumps({"i": i})) for i in range(30, 70)])
    steps = store.steps_of(seq)
    numbers = [orjson.loads(s.detail)["i"] for s in steps]
    assert len(steps) == rules.JOURNEY_CAP
    numbered = [s.n for s in steps]
    assert numbered == [*range(1, rules.JOURNEY_FIRST + 1), *range(31, 71)]
    assert numbers[: rules.JOURNEY_FIRST] == list(range(rules.JOURNEY_FIRST))
    assert numbers[rules.JOURNEY_FIRST :] == list(range(70 - (rules.JOURNEY_CAP - rules.JOURNEY_FIRST), 70))
    # One write of more steps than the cap is cut the same way.
    store.append([_message("m2", user="bob")])
    other = _seq(store, "m2")
    store.add_steps([JourneyRow(other, T0, "call", orjson.dumps({"i": i})) for i in range(120)])
    kept = [orjson.loads(s.detail)["i"] for s in store.steps_of(other)]
    assert kept == [*range(rules.JOURNEY_FIRST), *range(120 - 40, 120)]


def test_steps_ride_on_finish_and_reschedule(store: Store) -> None:
    store.append([_message("m1", user="ann"), _message("m2", user="ann")])
    one, two = _seq(store, "m1"), _seq(store, "m2")
    store.reschedule(
        one, destination="crm", lane="u:ann", attempts=1, available_at=T0 + 60,
        first_failure_at=T0, last_error="HTTP 500: boom",
        steps=[JourneyRow(one, T0, "call", b'{"status":500}'), JourneyRow(one, T0, "retry")],
    )
    store.finish([one, two], status="delivered", now=T0 + 61,
                 steps=[JourneyRow(one, T0 + 61, "delivered"), JourneyRow(two, T0 + 61, "delivered")])
    assert [s.kind for s in store.steps_of(one)] == ["call", "retry", "delivered"]
    assert [s.kind for s in store.steps_of(two)] == ["delivered"]
    delivered = store.get_by_seq(one)
    assert delivered is not None and delivered.finished_at == T0 + 61


def test_a_refused_step_write_rolls_the_state_change_back(store: Store) -> None:
    """Steps and the status change are one transaction: a step the store refuses (NOT NULL
    kind) leaves the message as it was."""
    from freshsales_destination.errors import StoreError

    store.append([_message("m1", user="ann")])
    seq = _seq(store, "m1")
    with pytest.raises(StoreError):
        store.finish([seq], status="delivered", now=T0,
                     steps=[JourneyRow(seq, T0, None)])  # type: ignore[arg-type]
    still = store.get_by_seq(seq)
    assert still is not None and still.status == "pending"
    assert store.steps_of(seq) == []


def test_prune_forgets_the_journey_with_the_message(store: Store) -> None:
    store.append([_message("old", user="ann"), _message("dead", user="bob"),
                  _message("new", user="cat", at=T0 + 10_000)])
    old, dead, new = _seq(store, "old"), _seq(store, "dead"), _seq(store, "new")
    store.finish([old], status="delivered", now=T0 + 1, steps=[JourneyRow(old, T0 + 1, "delivered")])
    store.finish([dead], status="dead", now=T0 + 1, reason="HTTP 400",
                 steps=[JourneyRow(dead, T0 + 1, "dead")])
    store.finish([new], status="delivered", now=T0 + 10_001,
                 steps=[JourneyRow(new, T0 + 10_001, "delivered")])
    assert store.prune(older_than=T0 + 5_000) == 1
    assert store.get_by_seq(old) is None and store.steps_of(old) == []
    assert [s.kind for s in store.steps_of(dead)] == ["dead"], "dead letters are kept"
    assert [s.kind for s in store.steps_of(new)] == ["delivered"]


def test_requeue_and_drop_count_only_dead_letters_and_record_the_action(store: Store) -> None:
    store.append([_message(f"m{i}", user=f"u{i}") for i in range(4)])
    seqs = [_seq(store, f"m{i}") for i in range(4)]
    store.finish(seqs[:3], status="dead", now=T0 + 5, reason="HTTP 400: bad email")
    assert store.requeue([seqs[0], seqs[3]], now=T0 + 6) == 1
    assert store.drop_dead([seqs[0], seqs[1]], now=T0 + 7) == 1, "m0 is pending again"
    assert store.drop_dead([seqs[1]], now=T0 + 8) == 0
    assert [s.kind for s in store.steps_of(seqs[0])] == ["requeued"]
    assert [(s.kind, s.at) for s in store.steps_of(seqs[1])] == [("dropped", T0 + 7)]
    dropped = store.get_by_seq(seqs[1])
    assert dropped is not None and dropped.status == "dropped"
    assert store.dead_seqs(MessageQuery()) == [seqs[2]]
    assert store.dead_seqs(MessageQuery(reason="BAD EMAIL")) == [seqs[2]]
    assert store.dead_seqs(MessageQuery(reason="timeout")) == []
    assert store.dead_seqs(MessageQuery(seqs=(seqs[0],))) == []
    assert store.dead_seqs(MessageQuery(seqs=(seqs[2], seqs[3], 999_999))) == [seqs[2]]
    assert store.dead_seqs(MessageQuery(seqs=(seqs[2],), reason="bad email")) == [seqs[2]]
    assert store.dead_seqs(MessageQuery(seqs=(seqs[2],), reason="timeout")) == []


def _all_pages(store: Store, query: MessageQuery, limit: int) -> tuple[list[int], int]:
    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        page = store.search(query, limit=limit, before=before)
        pages += 1
        assert len(page.messages) <= limit
        seen.extend(m.seq for m in page.messages)
        if page.next_before is None:
            return seen, pages
        before = page.next_before
        assert pages < 1000


def test_search_pages_newest_first_without_gaps_or_repeats(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append([
        _message(f"m{i}", user=f"u{i % 3}", anonymous=f"anon{i % 2}", at=T0 + i,
                 kind="identify" if i % 4 == 0 else "track")
        for i in range(25)
    ])
    everything = sorted((_seq(store, f"m{i}") for i in range(25)), reverse=True)
    seen, _ = _all_pages(store, MessageQuery(), 4)
    assert seen == everything
    # A small scan window: pages may come back short, the cursor still walks every match.
    monkeypatch.setattr(rules, "SEARCH_WINDOW", 3)
    monkeypatch.setattr(rules, "SEARCH_MAX_SCAN", 6)
    seen, pages = _all_pages(store, MessageQuery(lane="u:u1"), 5)
    expected = sorted((_seq(store, f"m{i}") for i in range(25) if i % 3 == 1), reverse=True)
    assert seen == expected
    assert pages > 2, "the bounded scan needed several calls"


def test_search_filters(store: Store) -> None:
    store.append([
        _message("a1", user="ann", anonymous="dev-1", email="ann@example.com", at=T0),
        _message("a2", anonymous="dev-1", at=T0 + 10, kind="page"),
        _message("b1", user="bob", email="Bob@Example.com", at=T0 + 20, kind="identify"),
        _message("x1", source="app", user="cat", at=T0 + 30),
        _message("a1", source="app", user="dan", at=T0 + 40, destination="crm2"),
        _message("f1", user="eve", status="filtered", reason="event not mapped", at=T0 + 50),
    ])

    def ids(query: MessageQuery) -> list[str]:
        return [f"{m.source}/{m.message_id}" for m in store.search(query, limit=50).messages]

    assert ids(MessageQuery(lane="u:ann")) == ["web/a1"]
    # An anonymous id is the lane of anonymous messages and found in identified ones too.
    assert ids(MessageQuery(lane="a:dev-1", needles=(b'"anonymousId":"dev-1"',))) == [
        "web/a2", "web/a1"]
    assert ids(MessageQuery(needles=(b'"email":"Bob@Example.com"',))) == ["web/b1"]
    assert ids(MessageQuery(message_id="a1")) == ["app/a1", "web/a1"]
    assert ids(MessageQuery(message_id="a1", destination="crm2")) == ["app/a1"]
    assert ids(MessageQuery(destination="crm2")) == ["app/a1"]
    assert ids(MessageQuery(type="identify")) == ["web/b1"]
    assert ids(MessageQuery(status="filtered")) == ["web/f1"]
    assert ids(MessageQuery(reason="NOT MAPPED")) == ["web/f1"]
    assert ids(MessageQuery(since=T0 + 10, until=T0 + 30)) == ["web/b1", "web/a2"]
    assert ids(MessageQuery(lane="u:nobody")) == []
    assert ids(MessageQuery(status="pending", retrying=True)) == []
    store.reschedule(_seq(store, "b1"), destination="crm", lane="u:bob", attempts=1,
                     available_at=T0 + 99, first_failure_at=T0, last_error="HTTP 502")
    assert ids(MessageQuery(status="pending", retrying=True)) == ["web/b1"]
    assert ids(MessageQuery(reason="http 502")) == ["web/b1"]
    # message_id pages through the matches too.
    first = store.search(MessageQuery(message_id="a1"), limit=1)
    assert [m.source for m in first.messages] == ["app"] and first.next_before is not None
    rest = store.search(MessageQuery(message_id="a1"), limit=1, before=first.next_before)
    assert [m.source for m in rest.messages] == ["web"]


def test_counts_latencies_and_failure_groups(store: Store) -> None:
    size = 300
    store.append([
        _message("d1", user="a", at=T0 + 10),
        _message("d2", user="b", at=T0 + 20),
        _message("x1", user="c", at=T0 + 320),
        _message("x2", user="d", at=T0 + 330),
        _message("r1", user="e", at=T0 + 340),
        _message("f1", user="f", status="filtered", reason="not mapped", at=T0 + 350),
        _message("z1", user="g", destination="other", at=T0 + 900),
    ])
    d1, d2, x1, x2, r1 = (_seq(store, m) for m in ("d1", "d2", "x1", "x2", "r1"))
    store.finish([d1], status="delivered", now=T0 + 40)   # latency 30
    store.finish([d2], status="delivered", now=T0 + 330)  # latency 310, next bucket
    store.finish([x1, x2], status="dead", now=T0 + 400, reason="HTTP 400: bad")
    store.reschedule(r1, destination="crm", lane="u:e", attempts=1, available_at=T0 + 999,
                     first_failure_at=T0 + 345, last_error="HTTP 503: later",
                     steps=[JourneyRow(r1, T0 + 345, "retry")])
    finished = {(c.destination, c.status, c.bucket): c.count
                for c in store.finished_counts(start=T0, end=T0 + 3600, bucket_seconds=size)}
    assert finished == {("crm", "delivered", 0): 1, ("crm", "delivered", 1): 1,
                        ("crm", "dead", 1): 2, ("crm", "filtered", 1): 1}
    received = {(c.destination, c.bucket): c.count
                for c in store.received_counts(start=T0, end=T0 + 3600, bucket_seconds=size)}
    assert received == {("crm", 0): 2, ("crm", 1): 4, ("other", 3): 1}
    later = {(c.destination, c.bucket): c.count
             for c in store.received_counts(start=T0 + 300, end=T0 + 600, bucket_seconds=size)}
    assert later == {("crm", 0): 4}
    retries = [(c.destination, c.bucket, c.count)
               for c in store.retry_counts(start=T0, end=T0 + 3600, bucket_seconds=size)]
    assert retries == [("crm", 1, 1)]
    assert sorted(store.delivery_latencies(start=T0, end=T0 + 3600)) == [
        ("crm", pytest.approx(30.0)), ("crm", pytest.approx(310.0))]
    groups = {(g.destination, g.status, g.reason): g for g in store.failure_groups()}
    dead = groups[("crm", "dead", "HTTP 400: bad")]
    assert (dead.count, dead.first_seen, dead.last_seen) == (2, T0 + 400, T0 + 400)
    assert dead.samples == [x2, x1]
    assert groups[("crm", "retrying", "HTTP 503: later")].samples == [r1]
    assert groups[("crm", "filtered", "not mapped")].count == 1
    assert set(groups) == {("crm", "dead", "HTTP 400: bad"), ("crm", "retrying", "HTTP 503: later"),
                           ("crm", "filtered", "not mapped")}
    assert {g.status for g in store.failure_groups(since=T0 + 390)} == {"dead", "retrying"}
    assert store.failure_groups(destination="other") == []
    assert store.backlog("crm") == {"pending": 1, "retrying": 1, "dead": 2}
    assert store.oldest_pending("crm") == T0 + 340
    assert store.oldest_pending("nowhere") is None


def test_failure_samples_are_the_five_newest(store: Store) -> None:
    store.append([_message(f"m{i}", user=f"u{i}") for i in range(8)])
    seqs = [_seq(store, f"m{i}") for i in range(8)]
    store.finish(seqs, status="dead", now=T0 + 1, reason="same")
    (group,) = store.failure_groups()
    assert group.count == 8 and group.samples == sorted(seqs, reverse=True)[:5]
