"""What the store tells idle workers about lanes (every backend): `release_lane` says whether
messages are left and from when they may be taken, `next_ready_at` when the first held or
leased lane with messages becomes free; on PostgreSQL both announce it with a NOTIFY naming
the destination, delivered on commit."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from freshsales_destination.store.base import Store
from freshsales_destination.store.postgres import PostgresStore
from freshsales_destination.store.wakeups import CHANNEL, parse_payload
from tests.contract.conftest import PgSchema
from tests.contract.test_store import msg


def _claim(store: Store, owner: str, now: float, max_messages: int = 10) -> str:
    claim = store.claim_lane("acme", owner=owner, now=now, lease_seconds=60.0,
                             max_messages=max_messages)
    assert claim is not None
    return claim.lane


def test_release_says_nothing_is_left_when_the_lane_is_done(store: Store) -> None:
    store.append([msg("1", "u:a")])
    lane = _claim(store, "w1", 1000.0)
    assert store.claim_lane("acme", owner="w2", now=1000.0, lease_seconds=60,
                            max_messages=10) is None  # leased: nothing else to claim
    store.finish([1], status="delivered", now=1001.0)
    assert store.release_lane("acme", lane, "w1") is None


def test_release_with_messages_left_says_they_are_ready_now(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:a"), msg("3", "u:a")])
    lane = _claim(store, "w1", 1000.0, max_messages=1)  # takes one of three
    store.finish([1], status="delivered", now=1001.0)
    assert store.release_lane("acme", lane, "w1") == 0.0


def test_release_of_a_held_lane_says_when_its_hold_ends(store: Store) -> None:
    store.append([msg("1", "u:a"), msg("2", "u:a")])
    lane = _claim(store, "w1", 1000.0)
    store.reschedule(1, destination="acme", lane=lane, attempts=1, available_at=1030.0,
                     first_failure_at=1000.0, last_error="503")
    assert store.release_lane("acme", lane, "w1") == 1030.0


def test_next_ready_at_is_the_first_hold_or_lease_over_a_lane_with_messages(
    store: Store,
) -> None:
    assert store.next_ready_at("acme", now=1000.0) is None
    store.append([msg("1", "u:a"), msg("2", "u:b"), msg("3", "u:c")])
    assert store.next_ready_at("acme", now=1000.0) is None  # all ready now: a claim takes them
    held = _claim(store, "w1", 1000.0)  # u:a, leased until 1060
    store.reschedule(1, destination="acme", lane=held, attempts=1, available_at=1030.0,
                     first_failure_at=1000.0, last_error="503")
    store.release_lane("acme", held, "w1")  # held until 1030
    leased = _claim(store, "w2", 1010.0)  # u:b, leased until 1070 (a worker that may die)
    assert leased == "u:b"
    assert store.next_ready_at("acme", now=1010.0) == 1030.0
    assert store.next_ready_at("acme", now=1030.0) == 1070.0  # the hold has ended
    assert store.next_ready_at("other", now=1010.0) is None
    store.finish([2], status="delivered", now=1011.0)
    assert store.next_ready_at("acme", now=1030.0) is None  # the leased lane has no more


@pytest.fixture
def pg(pg_schema: PgSchema) -> Iterator[tuple[PostgresStore, psycopg.Connection[tuple[str]]]]:
    store = PostgresStore(pg_schema.dsn, schema=pg_schema.schema, max_size=2)
    store.open()
    with psycopg.connect(pg_schema.dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        yield store, listener  # type: ignore[misc]
    store.close()


def _heard(listener: psycopg.Connection[tuple[str]]) -> list[tuple[float | None, str | None]]:
    # Other tests on this server notify too: only this store's destination counts.
    notes = [parse_payload(n.payload) for n in listener.notifies(timeout=0.5)]
    return [note for note in notes if note[1] == "acme-wake"]


def test_postgres_announces_a_release_with_messages_left(
    pg: tuple[PostgresStore, psycopg.Connection[tuple[str]]],
) -> None:
    store, listener = pg
    store.append([msg("1", "u:a", destination="acme-wake"), msg("2", "u:a",
                                                                 destination="acme-wake")])
    assert _heard(listener) == [(None, "acme-wake")]  # the append's
    claim = store.claim_lane("acme-wake", owner="w1", now=1000.0, lease_seconds=60,
                             max_messages=1)
    assert claim is not None
    store.finish([claim.messages[0].seq], status="delivered", now=1001.0)
    assert store.release_lane("acme-wake", claim.lane, "w1") == 0.0
    assert _heard(listener) == [(None, "acme-wake")]
    claim = store.claim_lane("acme-wake", owner="w1", now=1002.0, lease_seconds=60,
                             max_messages=1)
    assert claim is not None
    store.reschedule(claim.messages[0].seq, destination="acme-wake", lane=claim.lane,
                     attempts=1, available_at=1030.0, first_failure_at=1002.0, last_error="x")
    assert store.release_lane("acme-wake", claim.lane, "w1") == 1030.0
    assert _heard(listener) == [(1030.0, "acme-wake"), (1030.0, "acme-wake")]  # hold, release
    store.finish([claim.messages[0].seq], status="delivered", now=1031.0)
    claim_done = store.release_lane("acme-wake", claim.lane, "w1")
    assert claim_done is None and _heard(listener) == []
