"""Every state change of a message and of a lane, and the store's one error boundary, on
every backend (SQLite file, SQLite memory, PostgreSQL: the `store` fixture).

A message: pending -> delivered | skipped | dropped | discarded | filtered | dead (`finish`),
pending -> pending later (`reschedule`, which holds its lane), dead -> pending (`requeue`).
A lane: free -> leased (`claim_lane`) -> renewed (`renew_lease`) -> free (`release_lane`, or
the lease expiring), and held until a retry time (`reschedule`) -> free (that time, or
`requeue`).
"""

from __future__ import annotations

from typing import Any

import pytest

from freshsales_destination.errors import StoreRefused, StoreUnavailable
from freshsales_destination.store.base import InboxEntry, NewMessage, Store, StoredMessage
from tests.contract.test_store import msg


def claim(store: Store, owner: str, now: float, *, lease: float = 30, **kw: Any) -> Any:
    return store.claim_lane("acme", owner=owner, now=now, lease_seconds=lease, max_messages=10,
                            **kw)


def stored(store: Store, mid: str) -> StoredMessage:
    found = store.get_message("web", mid)
    assert found is not None
    return found


# -- message states ------------------------------------------------------------------------


@pytest.mark.parametrize("final", ["delivered", "skipped", "dropped", "discarded", "filtered"])
def test_finish_moves_pending_to_a_final_status_for_good(store: Store, final: str) -> None:
    store.append([msg("1", "u:a", kind="track"), msg("2", "u:a")])
    got = claim(store, "w", 200)
    assert got is not None
    first = got.messages[0]
    store.finish([first.seq], status=final, now=201, reason=f"{final} because")
    store.release_lane("acme", "u:a", "w")
    after = stored(store, "1")
    assert (after.status, after.reason) == (final, f"{final} because")
    assert store.get_by_seq(first.seq) == after
    # It is never offered again; the lane goes on with the next message.
    again = claim(store, "w", 202)
    assert again is not None and [m.message_id for m in again.messages] == ["2"]
    assert store.pending_count() == 1 and store.pending_count("acme") == 1
    assert store.pending_count("elsewhere") == 0
    assert store.pending_by_type("acme") == {"identify": 1}  # the finished track is not
    assert store.pending_by_type("elsewhere") == {}
    assert store.count_by_status() == {final: 1, "pending": 1}
    assert [m.message_id for m in store.list_messages(status=final)] == ["1"]
    # Finished messages are pruned once old enough; pending ones never.
    assert store.prune(older_than=201.5) == 1
    assert store.get_message("web", "1") is None and store.pending_count() == 1


def test_finish_without_a_reason_keeps_the_one_there(store: Store) -> None:
    store.append([msg("1", "u:a")])
    message = stored(store, "1")
    store.finish([message.seq], status="delivered", now=201)
    assert stored(store, "1").reason is None
    store.append([msg("2", "u:b", status="discarded")])  # stored with reason "why"
    store.finish([stored(store, "2").seq], status="dropped", now=202)
    assert (stored(store, "2").status, stored(store, "2").reason) == ("dropped", "why")


def test_finish_of_no_messages_changes_nothing(store: Store) -> None:
    store.append([msg("1", "u:a")])
    store.finish([], status="delivered", now=201)
    assert store.count_by_status() == {"pending": 1}


def test_finish_moves_many_messages_at_once(store: Store) -> None:
    store.append([msg(str(n), f"u:{n % 3}") for n in range(7)])
    seqs = [m.seq for m in store.list_messages()]
    store.finish(seqs[:5], status="delivered", now=300, reason="ok")
    assert store.count_by_status() == {"delivered": 5, "pending": 2}
    assert {m.reason for m in store.list_messages(status="delivered")} == {"ok"}


def test_reschedule_keeps_the_message_pending_with_its_retry_state(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:a"), msg("3", "u:b")])
    got = claim(store, "w", 200)
    assert got is not None and got.lane == "u:a"
    head = got.messages[0]
    store.reschedule(head.seq, destination="acme", lane="u:a", attempts=2, available_at=400,
                     first_failure_at=150, last_error="HTTP 503")
    after = stored(store, "1")
    assert (after.status, after.attempts, after.available_at) == ("pending", 2, 400)
    assert (after.first_failure_at, after.last_error) == (150, "HTTP 503")
    # The hold outlives the lease: released, the lane stays held until 400 (no later message
    # of that person overtakes the failed one), other lanes flow.
    store.release_lane("acme", "u:a", "w")
    other = claim(store, "w2", 210)
    assert other is not None and other.lane == "u:b"
    store.finish([m.seq for m in other.messages], status="delivered", now=211)
    store.release_lane("acme", "u:b", "w2")
    assert claim(store, "w3", 399) is None
    back = claim(store, "w3", 400)
    assert back is not None and back.lane == "u:a"
    assert [m.message_id for m in back.messages] == ["1", "2"]
    assert back.messages[0].attempts == 2


def test_a_later_reschedule_moves_the_hold(store: Store) -> None:
    store.append([msg("1", "u:a")])
    seq = stored(store, "1").seq
    store.reschedule(seq, destination="acme", lane="u:a", attempts=1, available_at=300,
                     first_failure_at=200, last_error="one")
    store.reschedule(seq, destination="acme", lane="u:a", attempts=2, available_at=600,
                     first_failure_at=200, last_error="two")
    assert claim(store, "w", 500) is None
    got = claim(store, "w", 600)
    assert got is not None and got.messages[0].last_error == "two"


def test_requeue_brings_a_dead_letter_back_with_fresh_attempts_and_frees_its_lane(
    store: Store,
) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:a")])
    seq = stored(store, "1").seq
    store.reschedule(seq, destination="acme", lane="u:a", attempts=5, available_at=10_000,
                     first_failure_at=100, last_error="HTTP 500")
    store.finish([seq], status="dead", now=300, reason="retry window ended")
    assert [m.message_id for m in store.list_messages(status="dead")] == ["1"]
    assert store.prune(older_than=10_000) == 0  # dead letters wait for an operator
    assert claim(store, "w", 400) is None  # the lane is still held by the last retry time
    assert store.requeue([seq, stored(store, "2").seq, seq], now=500) == 1  # "2" is not dead
    back = stored(store, "1")
    assert (back.status, back.attempts, back.available_at, back.first_failure_at) == (
        "pending", 0, 0, None
    )
    got = claim(store, "w", 501)  # the hold is gone: claimable right away, in order
    assert got is not None and [m.message_id for m in got.messages] == ["1", "2"]
    assert store.list_messages(status="dead") == []


def test_requeue_of_nothing_or_of_live_messages_changes_nothing(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:b", status="filtered")])
    assert store.requeue([], now=100) == 0
    assert store.requeue([m.seq for m in store.list_messages()], now=100) == 0
    assert store.count_by_status() == {"pending": 1, "filtered": 1}


def test_requeue_of_a_laneless_dead_letter(store: Store) -> None:
    store.append([msg("1", None)])
    seq = stored(store, "1").seq
    store.finish([seq], status="dead", now=200, reason="no person")
    assert store.requeue([seq], now=300) == 1
    assert stored(store, "1").status == "pending"


# -- lanes ---------------------------------------------------------------------------------


def test_release_frees_the_lane_for_anyone_at_once(store: Store) -> None:
    store.append([msg("1", "u:a")])
    assert claim(store, "w1", 200) is not None
    store.release_lane("acme", "u:a", "w2")  # not the holder: nothing changes
    assert claim(store, "w2", 201) is None
    store.release_lane("acme", "u:a", "w1")
    got = claim(store, "w2", 201)
    assert got is not None and got.owner == "w2" and got.lease_until == 231
    assert not store.renew_lease("acme", "u:a", "w1", now=202, lease_seconds=30)


def test_a_lease_expires_and_another_worker_takes_the_lane_over(store: Store) -> None:
    store.append([msg("1", "u:a")])
    first = claim(store, "w1", 200, lease=10)
    assert first is not None and first.lease_until == 210
    assert claim(store, "w2", 209, lease=10) is None
    taken = claim(store, "w2", 210, lease=10)  # a lease ends at its time
    assert taken is not None and taken.owner == "w2"
    assert [m.message_id for m in taken.messages] == ["1"]  # nothing was lost with w1
    assert not store.renew_lease("acme", "u:a", "w1", now=211, lease_seconds=10)
    assert store.renew_lease("acme", "u:a", "w2", now=211, lease_seconds=10)
    store.release_lane("acme", "u:a", "w1")  # the old holder cannot free it any more
    assert claim(store, "w3", 215, lease=10) is None


def test_a_renewed_lease_lasts_from_the_renewal(store: Store) -> None:
    store.append([msg("1", "u:a")])
    assert claim(store, "w1", 200, lease=10) is not None
    assert store.renew_lease("acme", "u:a", "w1", now=209, lease_seconds=10)
    assert claim(store, "w2", 218, lease=10) is None
    assert claim(store, "w2", 219, lease=10) is not None
    # A lease that has already ended cannot be renewed, even by its holder.
    assert not store.renew_lease("acme", "u:a", "w1", now=230, lease_seconds=10)


def test_a_claim_takes_at_most_max_messages_in_order_and_only_pending(store: Store) -> None:
    store.append([msg(str(n), "u:a") for n in range(6)])
    seqs = [m.seq for m in store.list_messages()]
    store.finish([seqs[1]], status="delivered", now=150)
    got = store.claim_lane("acme", owner="w", now=200, lease_seconds=30, max_messages=3)
    assert got is not None and [m.message_id for m in got.messages] == ["0", "2", "3"]


def test_claims_are_per_destination(store: Store) -> None:
    store.append([msg("1", "u:a", destination="other")])
    assert claim(store, "w", 200) is None
    got = store.claim_lane("other", owner="w", now=200, lease_seconds=30, max_messages=5)
    assert got is not None and got.destination == "other" and got.lane == "u:a"


def test_messages_without_a_lane_are_never_claimed(store: Store) -> None:
    store.append([msg("1", None)])
    assert claim(store, "w", 200) is None
    assert store.pending_count() == 1


# -- the key-value state -------------------------------------------------------------------


def test_kv_update_passes_its_callbacks_error_through_and_changes_nothing(store: Store) -> None:
    store.kv_put("budget", "acct", b"7", now=1.0)

    def fail(old: bytes | None) -> tuple[int, bytes]:
        raise ValueError(f"cannot read {old!r}")

    with pytest.raises(ValueError, match="cannot read b'7'"):
        store.kv_update("budget", "acct", fail, now=2.0)
    with pytest.raises(ValueError, match="cannot read None"):
        store.kv_update("budget", "new", fail, now=2.0)
    assert store.kv_get("budget", "acct") == b"7"
    assert store.kv_get("budget", "new") is None
    assert store.kv_update("budget", "new", lambda old: (old, b"1"), now=3.0) is None
    assert store.kv_get("budget", "new") == b"1"


# -- what the store refuses ----------------------------------------------------------------


def _unstorable(mid: str) -> NewMessage:
    bad = msg(mid, "u:a")
    bad.raw = None  # type: ignore[assignment]  # raw is NOT NULL in every dialect
    return bad


def test_append_of_data_the_store_refuses_is_refused_and_commits_nothing(store: Store) -> None:
    store.append([msg("0", "u:a")])
    with pytest.raises(StoreRefused):
        store.append([msg("1", "u:a"), _unstorable("2")])
    assert store.get_message("web", "1") is None
    assert store.count_by_status() == {"pending": 1}
    assert store.append([msg("1", "u:a")]) == [True]  # the store is still usable


def test_sorting_into_data_the_store_refuses_is_refused_and_keeps_the_entry(store: Store) -> None:
    store.inbox_append([InboxEntry(source="web", destination="acme", kind="batch",
                                   received_at=100.0, count=2, body=b"{}")])
    (entry,) = store.inbox_oldest(10)
    with pytest.raises(StoreRefused):
        store.inbox_sorted([entry], [msg("1", "u:a"), _unstorable("2")])
    assert store.inbox_count() == (1, 2)  # rolled back: the entry is still there
    assert store.count_by_status() == {}
    assert store.inbox_sorted([entry], [msg("1", "u:a")]) == [True]
    assert store.inbox_count() == (0, 0)


def test_a_refused_error_is_not_an_unavailable_one() -> None:
    # Sorting discards what is refused and retries what is unavailable: never both.
    assert not issubclass(StoreRefused, StoreUnavailable)
    assert not issubclass(StoreUnavailable, StoreRefused)


# -- a closed store ------------------------------------------------------------------------

_CALLS: dict[str, Any] = {
    "append": lambda s: s.append([msg("1")]),
    "inbox_append": lambda s: s.inbox_append([InboxEntry("web", "acme", "track", 1.0, 1, b"{}")]),
    "inbox_oldest": lambda s: s.inbox_oldest(10),
    "inbox_count": lambda s: s.inbox_count(),
    "inbox_sorted": lambda s: s.inbox_sorted(
        [InboxEntry("web", "acme", "track", 1.0, 1, b"{}", seq=1)], [msg("1")]
    ),
    "ping": lambda s: s.ping(),
    "get_message": lambda s: s.get_message("web", "1"),
    "count_by_status": lambda s: s.count_by_status(),
    "prune": lambda s: s.prune(older_than=1.0),
    "claim_lane": lambda s: claim(s, "w", 1.0),
    "claim_lanes": lambda s: s.claim_lanes("acme", owner="w", now=1.0, lease_seconds=1.0,
                                           max_messages=1, limit=5),
    "renew_lease": lambda s: s.renew_lease("acme", "u:1", "w", now=1.0, lease_seconds=1.0),
    "release_lane": lambda s: s.release_lane("acme", "u:1", "w"),
    "finish": lambda s: s.finish([1], status="delivered", now=1.0),
    "reschedule": lambda s: s.reschedule(1, destination="acme", lane="u:1", attempts=1,
                                         available_at=2.0, first_failure_at=1.0, last_error="x"),
    "requeue": lambda s: s.requeue([1], now=1.0),
    "list_messages": lambda s: s.list_messages(),
    "pending_count": lambda s: s.pending_count(),
    "pending_by_type": lambda s: s.pending_by_type("acme"),
    "kv_get": lambda s: s.kv_get("n", "k"),
    "kv_put": lambda s: s.kv_put("n", "k", b"v", now=1.0),
    "kv_update": lambda s: s.kv_update("n", "k", lambda old: (None, b"v"), now=1.0),
    "kv_prune": lambda s: s.kv_prune("n", older_than=1.0),
    "next_ready_at": lambda s: s.next_ready_at("acme", now=1.0),
}


@pytest.mark.parametrize("method", sorted(_CALLS))
def test_every_method_of_a_closed_store_is_unavailable(store: Store, method: str) -> None:
    store.close()
    try:
        with pytest.raises(StoreUnavailable):
            _CALLS[method](store)
    finally:
        store.open()  # the fixture closes it again


# -- attempts: the number of delivery attempts made -------------------------------------------


def test_a_finish_that_ends_an_attempt_counts_it_and_one_without_a_call_does_not(
    store: Store,
) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:b"), msg("3", "u:c"), msg("4", "u:d")])
    dead_first, delivered, retried, filtered = (stored(store, m).seq for m in "1234")
    # Dead on its first answer (a 400): one attempt.
    store.finish([dead_first], status="dead", now=201, reason="HTTP 400", attempted=True)
    # Delivered at once: one attempt.
    store.finish([delivered], status="delivered", now=201, attempted=True)
    # Two failed attempts (counted by reschedule), then dead on the third.
    store.reschedule(retried, destination="acme", lane="u:c", attempts=2, available_at=300,
                     first_failure_at=150, last_error="HTTP 503")
    store.finish([retried], status="dead", now=301, reason="HTTP 503", attempted=True)
    # Finished without any call (filtered, skipped with nothing to send): none.
    store.finish([filtered], status="filtered", now=201, reason="too old")
    assert [stored(store, m).attempts for m in "1234"] == [1, 1, 3, 0]
    # What the operations read: the list and the dead letters agree.
    dead = {m.message_id: m.attempts for m in store.list_messages(status="dead")}
    assert dead == {"1": 1, "3": 3}


def test_an_attempted_finish_of_many_counts_one_attempt_each(store: Store) -> None:
    store.append([msg(str(n), "u:a") for n in range(3)])
    seqs = [m.seq for m in store.list_messages()]
    store.finish(seqs, status="delivered", now=300, attempted=True)
    assert sorted(m.attempts for m in store.list_messages(status="delivered")) == [1, 1, 1]
