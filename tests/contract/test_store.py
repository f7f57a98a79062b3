"""The behaviour every store backend must show; run against each backend.

The parametrised `store` fixture (one per backend) lives in conftest.py, shared with
test_inbox.py.
"""

from __future__ import annotations

import threading

import orjson

from freshsales_destination.store.base import NewMessage, Store


def msg(mid: str, lane: str | None = "u:1", *, kind: str = "identify", status: str = "pending",
        source: str = "web", destination: str = "acme") -> NewMessage:
    body = orjson.dumps({"messageId": mid, "type": kind})
    return NewMessage(source=source, destination=destination, message_id=mid, type=kind,
                      status=status, reason=None if status == "pending" else "why", lane=lane,
                      received_at=100.0, event_at=100.0, raw=body, message=body)


def test_append_reports_duplicates_per_source(store: Store) -> None:
    assert store.append([msg("a"), msg("b")]) == [True, True]
    assert store.append([msg("a"), msg("c"), msg("a", source="other")]) == [False, True, True]
    assert store.count_by_status() == {"pending": 4}
    stored = store.get_message("web", "c")
    assert stored is not None and stored.status == "pending"


def test_discarded_messages_are_kept_with_reason(store: Store) -> None:
    store.append([msg("x", status="discarded")])
    stored = store.get_message("web", "x")
    assert stored is not None and stored.status == "discarded" and stored.reason == "why"
    assert store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=10) is None


def test_claim_returns_lane_head_in_order(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:b"), msg("3", "u:a")])
    claim = store.claim_lane("acme", owner="w1", now=200, lease_seconds=30, max_messages=10)
    assert claim is not None
    assert claim.lane == "u:a"
    assert [m.message_id for m in claim.messages] == ["1", "3"]
    # The leased lane is invisible to another worker; the next lane is offered instead.
    other = store.claim_lane("acme", owner="w2", now=201, lease_seconds=30, max_messages=10)
    assert other is not None and other.lane == "u:b"
    assert store.claim_lane("acme", owner="w3", now=202, lease_seconds=30, max_messages=10) is None
    # An expired lease is taken over.
    again = store.claim_lane("acme", owner="w3", now=231, lease_seconds=30, max_messages=10)
    assert again is not None and again.lane == "u:a"


def test_finish_and_release(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:a")])
    claim = store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=1)
    assert claim is not None and [m.message_id for m in claim.messages] == ["1"]
    store.finish([claim.messages[0].seq], status="delivered", now=201)
    store.release_lane("acme", "u:a", "w")
    nxt = store.claim_lane("acme", owner="w", now=202, lease_seconds=30, max_messages=5)
    assert nxt is not None and [m.message_id for m in nxt.messages] == ["2"]
    assert store.count_by_status() == {"delivered": 1, "pending": 1}


def test_a_retry_holds_the_whole_lane(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:a"), msg("3", "u:b")])
    claim = store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=5)
    assert claim is not None
    head = claim.messages[0]
    store.reschedule(head.seq, destination="acme", lane="u:a", attempts=1, available_at=500,
                     first_failure_at=200, last_error="boom")
    store.release_lane("acme", "u:a", "w")
    other = store.claim_lane("acme", owner="w", now=300, lease_seconds=30, max_messages=5)
    assert other is not None and other.lane == "u:b"
    store.finish([m.seq for m in other.messages], status="delivered", now=300)
    store.release_lane("acme", "u:b", "w")
    assert store.claim_lane("acme", owner="w", now=499, lease_seconds=30, max_messages=5) is None
    later = store.claim_lane("acme", owner="w", now=501, lease_seconds=30, max_messages=5)
    assert later is not None and [m.message_id for m in later.messages] == ["1", "2"]
    assert later.messages[0].attempts == 1 and later.messages[0].last_error == "boom"


def test_dead_letters_can_be_requeued(store: Store) -> None:
    store.append([msg("1", "u:a")])
    claim = store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=5)
    assert claim is not None
    store.finish([claim.messages[0].seq], status="dead", now=201, reason="gave up")
    store.release_lane("acme", "u:a", "w")
    dead = store.list_messages(status="dead")
    assert [m.message_id for m in dead] == ["1"] and dead[0].reason == "gave up"
    assert store.requeue([dead[0].seq], now=300) == 1
    assert store.requeue([dead[0].seq], now=300) == 0
    assert store.pending_count("acme") == 1


def test_head_types_prefers_record_changes(store: Store) -> None:
    store.append([msg("1", "u:a", kind="track"), msg("2", "u:b", kind="identify")])
    claim = store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=5,
                             head_types=["identify", "group"])
    assert claim is not None and claim.lane == "u:b"


def test_kv_update_is_atomic_across_threads(store: Store) -> None:
    def bump(old: bytes | None) -> tuple[int, bytes]:
        value = int(old or b"0") + 1
        return value, str(value).encode()

    def worker() -> None:
        for _ in range(50):
            store.kv_update("budget", "acct", bump, now=1.0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.kv_get("budget", "acct") == b"200"
    store.kv_put("identity", "u:1", b"{}", now=2.0)
    assert store.kv_get("identity", "u:1") == b"{}"
    assert store.kv_get("identity", "missing") is None


def test_prune_keeps_pending_and_recent(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:b", status="discarded")])
    assert store.prune(older_than=50.0) == 0
    assert store.prune(older_than=1000.0) == 1
    assert store.count_by_status() == {"pending": 1}


def test_kv_prune_by_prefix_and_age(store: Store) -> None:
    store.kv_put("ledger:acme", "m1:0", b"{}", now=10.0)
    store.kv_put("ledger:acme", "m2:0", b"{}", now=500.0)
    store.kv_put("ledger_x", "k", b"{}", now=10.0)  # '_' is not a wildcard
    store.kv_put("identity:acme", "u1", b"{}", now=10.0)
    assert store.kv_prune("ledger:", older_than=100.0) == 1
    assert store.kv_get("ledger:acme", "m1:0") is None
    assert store.kv_get("ledger:acme", "m2:0") == b"{}"
    assert store.kv_get("ledger_x", "k") == b"{}"
    assert store.kv_get("identity:acme", "u1") == b"{}"


def test_renew_lease_only_for_the_holder(store: Store) -> None:
    store.append([msg("1", "u:a")])
    claim = store.claim_lane("acme", owner="w1", now=100, lease_seconds=10, max_messages=5)
    assert claim is not None
    assert store.renew_lease("acme", "u:a", "w1", now=105, lease_seconds=10)
    assert not store.renew_lease("acme", "u:a", "w2", now=105, lease_seconds=10)
    # Renewed until 115: still held at 112; once expired and taken over, w1 has lost it.
    assert store.claim_lane("acme", owner="w2", now=112, lease_seconds=10, max_messages=5) is None
    other = store.claim_lane("acme", owner="w2", now=116, lease_seconds=10, max_messages=5)
    assert other is not None
    assert not store.renew_lease("acme", "u:a", "w1", now=117, lease_seconds=10)


def test_head_types_only_picks_lanes_whose_next_message_matches(store: Store) -> None:
    store.append([msg("1", "u:a", kind="track"), msg("2", "u:a", kind="identify")])
    assert store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=5,
                            head_types=["identify"]) is None


def test_prune_keeps_dead_letters(store: Store) -> None:
    store.append([msg("1", "u:a")])
    (message,) = store.list_messages()
    store.finish([message.seq], status="dead", now=150.0, reason="gave up")
    assert store.prune(older_than=10_000.0) == 0
    assert [m.message_id for m in store.list_messages(status="dead")] == ["1"]


def test_a_repeat_within_one_append_is_a_duplicate_of_its_first(store: Store) -> None:
    assert store.append([msg("a"), msg("b"), msg("a"), msg("a", source="other"), msg("b")]) == [
        True, True, False, True, False
    ]
    assert store.append([msg("b"), msg("n"), msg("n")]) == [False, True, False]
    assert store.count_by_status() == {"pending": 4}
    assert store.append([]) == []
