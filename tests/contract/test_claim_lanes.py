"""`claim_lanes`: many lanes leased in one call, on every backend (the `store` fixture).

The lanes it gives are those repeated `claim_lane` calls would give, in the same order (oldest
head first), each with the same lease and head messages; claimers running at once never get
the same lane.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from freshsales_destination.store.base import LaneClaim, Store
from tests.contract.test_store import msg


def claim_many(store: Store, owner: str, now: float, limit: int, **kw: Any) -> list[LaneClaim]:
    kw.setdefault("max_messages", 10)
    return store.claim_lanes("acme", owner=owner, now=now, lease_seconds=30, limit=limit, **kw)


def lanes(claims: list[LaneClaim]) -> list[str]:
    return [claim.lane for claim in claims]


def test_the_oldest_heads_first_each_lane_once_at_most_limit(store: Store) -> None:
    # Heads in seq order: u:c (1), u:a (2), u:e (4), u:b (5), u:d (7).
    store.append([msg("1", "u:c"), msg("2", "u:a"), msg("3", "u:c"), msg("4", "u:e"),
                  msg("5", "u:b"), msg("6", "u:a"), msg("7", "u:d"), msg("8", "u:c")])
    first = claim_many(store, "w1", 200, 3)
    assert lanes(first) == ["u:c", "u:a", "u:e"]
    by_lane = {claim.lane: claim for claim in first}
    assert [m.message_id for m in by_lane["u:c"].messages] == ["1", "3", "8"]
    assert [m.message_id for m in by_lane["u:a"].messages] == ["2", "6"]
    assert all(claim.owner == "w1" and claim.lease_until == 230 for claim in first)
    assert all(claim.destination == "acme" for claim in first)
    # The rest, then nothing: the leased lanes are not offered again.
    rest = claim_many(store, "w2", 201, 10)
    assert lanes(rest) == ["u:b", "u:d"]
    assert claim_many(store, "w3", 202, 10) == []
    assert store.claim_lane("acme", owner="w3", now=202, lease_seconds=30, max_messages=5) is None


def test_max_messages_bounds_each_lane_and_a_limit_below_one_claims_nothing(store: Store) -> None:
    store.append([msg(str(n), "u:a" if n % 2 else "u:b") for n in range(1, 9)])
    assert claim_many(store, "w", 200, 0) == []
    claims = claim_many(store, "w", 200, 5, max_messages=2)
    assert [[m.message_id for m in claim.messages] for claim in claims] == [["1", "3"], ["2", "4"]]


def test_the_same_lanes_as_one_claim_lane_after_another(store: Store) -> None:
    rng = random.Random(5)
    kinds = ["identify", "track", "page", "group"]
    store.append([
        msg(str(n), f"u:{rng.randrange(12)}", kind=rng.choice(kinds)) for n in range(200)
    ])
    for head_types in (None, ["identify"], ["identify", "group"]):
        one_by_one = []
        while (got := store.claim_lane("acme", owner="a", now=200, lease_seconds=30,
                                       max_messages=50, head_types=head_types)) is not None:
            one_by_one.append(got)
        for claim in one_by_one:
            store.release_lane("acme", claim.lane, "a")
        at_once = claim_many(store, "b", 200, 100, max_messages=50, head_types=head_types)
        for claim in at_once:
            store.release_lane("acme", claim.lane, "b")
        assert lanes(at_once) == lanes(one_by_one) and at_once, head_types
        assert [c.messages for c in at_once] == [c.messages for c in one_by_one]


def test_head_types_take_only_lanes_whose_next_message_has_one(store: Store) -> None:
    store.append([
        msg("1", "u:a", kind="track"), msg("2", "u:a"),  # an identify behind a track: not taken
        msg("3", "u:b", kind="page"),
        msg("4", "u:c"), msg("5", "u:c", kind="track"),  # an identify head: taken
        msg("6", "u:d", kind="group"),
        msg("7", "u:e"),
    ])
    assert lanes(claim_many(store, "w", 200, 10, head_types=["identify"])) == ["u:c", "u:e"]
    # Several types: merged in head order.
    assert lanes(claim_many(store, "w", 200, 10, head_types=["group", "identify"])) == ["u:d"]
    assert lanes(claim_many(store, "w", 200, 10)) == ["u:a", "u:b"]


def test_several_head_types_are_taken_in_head_order_up_to_limit(store: Store) -> None:
    store.append([msg("1", "u:a", kind="group"), msg("2", "u:b"), msg("3", "u:c", kind="group"),
                  msg("4", "u:d"), msg("5", "u:e", kind="delete"), msg("6", "u:f")])
    got = claim_many(store, "w", 200, 4, head_types=["identify", "group", "delete"])
    assert lanes(got) == ["u:a", "u:b", "u:c", "u:d"]


def test_held_and_leased_lanes_are_passed_over_until_free(store: Store) -> None:
    store.append([msg("1", "u:held"), msg("2", "u:leased"), msg("3", "u:free"),
                  msg("4", "u:held"), msg("5", "u:free2")])
    leased = store.claim_lane("acme", owner="other", now=200, lease_seconds=100, max_messages=5)
    assert leased is not None and leased.lane == "u:held"
    store.reschedule(leased.messages[0].seq, destination="acme", lane="u:held", attempts=1,
                     available_at=500, first_failure_at=200, last_error="boom")
    store.release_lane("acme", "u:held", "other")  # held until 500
    leased = store.claim_lane("acme", owner="other", now=200, lease_seconds=100, max_messages=5)
    assert leased is not None and leased.lane == "u:leased"  # leased until 300
    got = claim_many(store, "w", 210, 10)
    assert lanes(got) == ["u:free", "u:free2"]
    for claim in got:
        store.release_lane("acme", claim.lane, "w")
    # The lease ends at 300, the hold at 500.
    for now, expected in ((299, ["u:free", "u:free2"]), (400, ["u:leased", "u:free", "u:free2"]),
                          (501, ["u:held", "u:leased", "u:free", "u:free2"])):
        got = claim_many(store, "x", now, 10)
        assert lanes(got) == expected, now
        for claim in got:
            store.release_lane("acme", claim.lane, "x")
    held = got[:1]
    assert [m.message_id for m in held[0].messages] == ["1", "4"]
    assert held[0].messages[0].attempts == 1 and held[0].messages[0].last_error == "boom"


def test_claimed_lanes_are_leased_as_claim_lane_leases_them(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:b")])
    got = claim_many(store, "w1", 100, 2)
    assert lanes(got) == ["u:a", "u:b"]
    assert store.renew_lease("acme", "u:a", "w1", now=120, lease_seconds=30)  # until 150
    assert not store.renew_lease("acme", "u:a", "w2", now=120, lease_seconds=30)
    # u:b's lease (until 130) ends first; u:a's renewed one later.
    assert lanes(claim_many(store, "w2", 135, 5)) == ["u:b"]
    assert lanes(claim_many(store, "w2", 151, 5)) == ["u:a"]
    assert not store.renew_lease("acme", "u:a", "w1", now=152, lease_seconds=30)


def test_released_lanes_are_claimable_again(store: Store) -> None:
    store.append([msg(str(n), f"u:{n % 4}") for n in range(8)])
    got = claim_many(store, "w", 200, 10)
    assert lanes(got) == ["u:0", "u:1", "u:2", "u:3"]
    assert claim_many(store, "w", 201, 10) == []
    first = got[1]
    store.finish([first.messages[0].seq], status="delivered", now=202)
    assert store.release_lane("acme", "u:1", "w") == 0  # a message is left
    assert store.release_lane("acme", "u:3", "w") == 0
    again = claim_many(store, "v", 203, 10)
    assert lanes(again) == ["u:3", "u:1"]  # u:1's head is now message 5, after u:3's 3
    assert [m.message_id for m in again[1].messages] == ["5"]
    assert store.next_ready_at("acme", now=203) == 230  # the first lease still running


def test_other_destinations_are_not_claimed(store: Store) -> None:
    store.append([msg("1", "u:a", destination="other"), msg("2", "u:b")])
    assert lanes(claim_many(store, "w", 200, 10)) == ["u:b"]
    assert lanes(claim_many(store, "w", 200, 10, head_types=["identify"])) == []


def test_concurrent_claimers_never_share_a_lane(store: Store) -> None:
    """Threads claim batches at once (leases never expire here) until none is left: every lane
    goes to exactly one of them."""
    count = 120
    store.append([
        msg(f"{n}-{i}", f"u:{n}", kind="identify" if i == 0 else "track")
        for i in range(3) for n in range(count)
    ])
    threads = 6
    start = threading.Barrier(threads)
    taken: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            rng = random.Random(index)
            start.wait(timeout=30)
            while True:
                kw: dict[str, Any] = {
                    "owner": f"w{index}", "now": 200, "lease_seconds": 3600, "max_messages": 3,
                    "limit": rng.randint(1, 12),
                }
                got = store.claim_lanes("acme", head_types=["identify"], **kw)
                if not got:
                    got = store.claim_lanes("acme", **kw)
                if not got:
                    return  # nothing left that is free
                for claim in got:
                    assert claim.owner == f"w{index}" and claim.messages
                    assert {m.lane for m in claim.messages} == {claim.lane}
                taken[index].extend(lanes(got))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    workers = [threading.Thread(target=claimer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    everything = [lane for mine in taken for lane in mine]
    assert len(everything) == len(set(everything))  # no lane twice
    assert sorted(everything) == sorted(f"u:{n}" for n in range(count))
