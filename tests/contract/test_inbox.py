"""The inbox every store backend must keep: acknowledged requests, each sorted exactly once.

Run against each backend through the parametrised `store` fixture (conftest.py). Sorting
here is done by hand: the entries come from `inbox_oldest`, the messages are built by the
test, so only the store's part is under test.
"""

from __future__ import annotations

import orjson
import pytest

from freshsales_destination.errors import StoreRefused
from freshsales_destination.store.base import InboxEntry, NewMessage, SortRaced, Store
from freshsales_destination.store.postgres import PostgresStore
from freshsales_destination.store.sqlite import SQLiteStore

RECEIVED = 1_712_345_678.123456  # a float with sub-millisecond digits


def entry(n: int, count: int = 1, *, kind: str = "batch", source: str = "web",
          destination: str = "acme", body: bytes | None = None) -> InboxEntry:
    """An entry as ingest commits it (seq left to the store); `n` is also in its body."""
    if body is None:
        body = orjson.dumps({"n": n, "batch": [{"messageId": f"e{n}-{j}"} for j in range(count)]})
    return InboxEntry(source=source, destination=destination, kind=kind,
                      received_at=RECEIVED + n, count=count, body=body)


def msg(mid: str, lane: str | None = "u:1", *, source: str = "web",
        destination: str = "acme") -> NewMessage:
    body = orjson.dumps({"messageId": mid, "type": "track"})
    return NewMessage(source=source, destination=destination, message_id=mid, type="track",
                      status="pending", reason=None, lane=lane, received_at=RECEIVED,
                      event_at=RECEIVED, raw=body, message=body)


def fields(item: InboxEntry) -> tuple[object, ...]:
    """Everything but the seq the store assigns."""
    return (item.source, item.destination, item.kind, item.received_at, item.count, item.body)


def filled(store: Store, counts: list[int]) -> list[InboxEntry]:
    """Append one entry per count, in one call; return them as the store now has them."""
    store.inbox_append([entry(n, c) for n, c in enumerate(counts)])
    stored = store.inbox_oldest(10_000)
    assert [e.count for e in stored] == counts
    return stored


def snapshot(store: Store) -> tuple[object, ...]:
    """The inbox (entries with their seq) and the messages table, to prove nothing changed."""
    return (
        store.inbox_count(),
        [(e.seq, *fields(e)) for e in store.inbox_oldest(10_000)],
        [(m.seq, m.source, m.message_id, m.status) for m in store.list_messages(limit=10_000)],
    )


def reopened(store: Store) -> Store | None:
    """A second, freshly opened store on the same file or database; None for memory."""
    if isinstance(store, SQLiteStore):
        return None if store.path is None else SQLiteStore(store.path)
    assert isinstance(store, PostgresStore)
    return PostgresStore(store.dsn, schema=store.schema, max_size=2)


# -- append, oldest, count ---------------------------------------------------------------------


def test_appended_entries_come_back_in_order_with_every_field_intact(store: Store) -> None:
    assert store.inbox_count() == (0, 0)
    assert store.inbox_oldest(10) == []
    store.inbox_append([])  # nothing to commit
    assert store.inbox_count() == (0, 0)

    sent = [
        entry(0, 1, kind="track", source="web"),
        entry(1, 3, kind="batch", source="ios", destination="other"),
        # Any bytes come back as they were: NUL, invalid UTF-8, and a large body.
        entry(2, 2, kind="webhook", body=b"\x00\xff\xfe{not json}\x00" + bytes(range(256))),
        entry(3, 1, kind="identify", body=b"x" * 200_000),
    ]
    store.inbox_append(sent[:1])
    store.inbox_append(sent[1:])
    assert store.inbox_count() == (4, 7)

    got = store.inbox_oldest(100)
    assert [fields(e) for e in got] == [fields(e) for e in sent]
    for item in got:
        assert type(item.body) is bytes and type(item.received_at) is float
        assert type(item.count) is int and type(item.seq) is int
    assert got[0].received_at == RECEIVED  # no precision lost
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[0] > 0

    # Reading takes nothing away; a later append comes after every earlier entry.
    assert store.inbox_oldest(100) == got
    store.inbox_append([entry(4, 5)])
    later = store.inbox_oldest(100)
    assert later[:4] == got and later[4].seq > seqs[-1] and fields(later[4]) == fields(entry(4, 5))
    assert store.inbox_count() == (5, 12)


def test_one_append_of_many_entries_keeps_their_order(store: Store) -> None:
    # More rows than one SQLite statement takes (the store splits them into chunks).
    store.inbox_append([entry(n, 1 + n % 3, body=str(n).encode()) for n in range(2_500)])
    assert store.inbox_count() == (2_500, sum(1 + n % 3 for n in range(2_500)))
    got = store.inbox_oldest(10_000)
    assert [e.body for e in got] == [str(n).encode() for n in range(2_500)]
    assert [e.seq for e in got] == sorted(e.seq for e in got)


@pytest.mark.parametrize("size", [3, 2_500])
def test_an_append_that_fails_commits_none_of_its_entries(store: Store, size: int) -> None:
    store.inbox_append([entry(100)])
    before = snapshot(store)
    bad = [entry(n) for n in range(size)]
    bad[-1].body = None  # type: ignore[assignment]  # NOT NULL: the last row fails
    with pytest.raises(StoreRefused):  # the data is refused: sending it again fails again
        store.inbox_append(bad)
    assert snapshot(store) == before
    store.inbox_append([entry(101)])  # the store is still usable
    assert store.inbox_count() == (2, 2)


def test_oldest_cuts_by_the_sum_of_counts_and_always_returns_one(store: Store) -> None:
    e = filled(store, [2, 3, 1, 4])

    def oldest(max_messages: int) -> list[int]:
        return [e.index(item) for item in store.inbox_oldest(max_messages)]

    assert oldest(1) == [0]  # the first entry alone holds more than asked: still returned
    assert oldest(0) == [0]
    assert oldest(2) == [0]
    assert oldest(4) == [0]  # 2 + 3 > 4; the third (1) would fit but order is kept
    assert oldest(5) == [0, 1]
    assert oldest(6) == [0, 1, 2]
    assert oldest(9) == [0, 1, 2]
    assert oldest(10) == [0, 1, 2, 3]
    assert oldest(1_000) == [0, 1, 2, 3]
    assert store.inbox_count() == (4, 10)  # reading took nothing


def test_oldest_takes_many_single_message_entries_up_to_the_limit(store: Store) -> None:
    e = filled(store, [1] * 50)
    assert store.inbox_oldest(7) == e[:7]
    assert store.inbox_oldest(50) == e
    assert store.inbox_oldest(51) == e


def test_oldest_with_a_huge_first_entry_returns_it_alone(store: Store) -> None:
    e = filled(store, [1_000, 1, 1])
    assert store.inbox_oldest(10) == e[:1]
    store.inbox_sorted(e[:1], [])
    assert store.inbox_oldest(10) == e[1:]


def test_oldest_passes_entries_without_messages(store: Store) -> None:
    # An empty batch is acknowledged too ({"batch": []}): an entry with count 0.
    e = filled(store, [0, 0, 2, 0, 5])
    got = store.inbox_oldest(2)
    assert got and got == e[: len(got)]  # a prefix, at least one entry
    assert sum(item.count for item in got) <= 2
    assert store.inbox_oldest(1_000) == e
    # Sorting them drains the inbox (an entry without messages sorts into none).
    while batch := store.inbox_oldest(2):
        store.inbox_sorted(batch, [msg(f"e{item.seq}-{j}") for item in batch
                                   for j in range(item.count)])
    assert store.inbox_count() == (0, 0)
    assert store.count_by_status() == {"pending": 7}


# -- sorting -----------------------------------------------------------------------------------


def test_sorted_removes_exactly_its_entries_and_appends_like_append(store: Store) -> None:
    e = filled(store, [1, 2, 1, 3, 1])
    assert store.append([msg("old")]) == [True]
    old = store.get_message("web", "old")
    assert old is not None

    messages = [msg("a", "u:a"), msg("old"), msg("b", "u:b"), msg("a", "u:x"),
                msg("a", "u:o", source="other"), msg("c", None)]
    # Not the head of the inbox, and not contiguous: only these two entries go.
    assert store.inbox_sorted([e[1], e[3]], messages) == [True, False, True, False, True, True]

    assert store.inbox_oldest(100) == [e[0], e[2], e[4]]  # same seqs, same fields
    assert store.inbox_count() == (3, 3)
    assert store.count_by_status() == {"pending": 5}

    a, b, other, c = (store.get_message(s, m) for s, m in
                      [("web", "a"), ("web", "b"), ("other", "a"), ("web", "c")])
    assert a is not None and b is not None and other is not None and c is not None
    # Stored as given, in the given order; a repeat did not overwrite its first.
    assert old.seq < a.seq < b.seq < other.seq < c.seq
    assert (a.lane, a.status, a.raw) == ("u:a", "pending", messages[0].raw)
    assert c.lane is None
    again = store.get_message("web", "old")
    assert again is not None and again.seq == old.seq


def test_sorted_answers_what_append_answers(store: Store) -> None:
    e = filled(store, [1, 1])
    store.append([msg("k1"), msg("k2", source="other")])
    batch = [msg("k1"), msg("n1"), msg("k2"), msg("k2", source="other"), msg("n1"), msg("n2")]
    got = store.inbox_sorted(e[:1], batch)
    assert got == [False, True, True, False, False, True]
    # The same batch once more: all duplicates now.
    assert store.inbox_sorted(e[1:], batch) == [False] * len(batch)
    assert store.inbox_count() == (0, 0)
    assert store.count_by_status() == {"pending": 5}


def test_sorted_without_messages_still_removes_the_entries(store: Store) -> None:
    e = filled(store, [0, 1])
    assert store.inbox_sorted(e, []) == []
    assert store.inbox_count() == (0, 0)
    assert store.count_by_status() == {}


def test_sorting_entries_another_sorter_took_raises_and_changes_nothing(store: Store) -> None:
    e = filled(store, [1, 2, 1])
    assert store.inbox_sorted(e[:1], [msg("first")]) == [True]
    before = snapshot(store)

    with pytest.raises(SortRaced):
        store.inbox_sorted(e[:1], [msg("again")])
    assert snapshot(store) == before

    # Only one of several entries is gone: the others stay, none of the messages is stored.
    with pytest.raises(SortRaced):
        store.inbox_sorted([e[1], e[0], e[2]], [msg("p"), msg("q"), msg("first")])
    assert snapshot(store) == before
    assert store.get_message("web", "p") is None

    # An entry that never was there.
    ghost = entry(99)
    ghost.seq = e[-1].seq + 1_000
    with pytest.raises(SortRaced):
        store.inbox_sorted([e[1], ghost], [msg("p")])
    assert snapshot(store) == before

    # Nothing was left locked or half-done: the rest sorts, and appends still work.
    assert store.inbox_sorted(e[1:], [msg("p"), msg("q")]) == [True, True]
    assert store.append([msg("r")]) == [True]
    assert store.inbox_count() == (0, 0)
    assert store.count_by_status() == {"pending": 4}


def test_each_entry_is_sorted_exactly_once(store: Store) -> None:
    e = filled(store, [2, 1])
    messages = [msg("m1"), msg("m2"), msg("m3")]
    assert store.inbox_sorted(e, messages) == [True, True, True]
    before = snapshot(store)
    with pytest.raises(SortRaced):
        store.inbox_sorted(e, messages)
    with pytest.raises(SortRaced):
        store.inbox_sorted(e[1:], [msg("m4")])
    assert snapshot(store) == before
    assert store.inbox_count() == (0, 0)
    assert store.count_by_status() == {"pending": 3}


def test_a_seq_is_never_given_twice_so_a_late_sort_cannot_take_a_new_entry(store: Store) -> None:
    e = filled(store, [1, 1])
    store.inbox_sorted(e, [msg("a"), msg("b")])  # the inbox is empty again
    store.inbox_append([entry(7)])
    (new,) = store.inbox_oldest(10)
    assert new.seq > e[-1].seq
    # A sorter still holding the old entries finds them gone, and the new one stays.
    with pytest.raises(SortRaced):
        store.inbox_sorted(e[-1:], [msg("b2")])
    assert store.inbox_oldest(10) == [new]


# -- durability --------------------------------------------------------------------------------


def test_the_inbox_survives_closing_and_reopening(store: Store) -> None:
    second = reopened(store)
    if second is None:
        pytest.skip("an in-memory store ends with its connection")
    e = filled(store, [1, 3, 2])
    store.inbox_sorted(e[:1], [msg("sorted")])
    store.close()
    try:
        second.open()
        assert second.inbox_count() == (2, 5)
        assert second.inbox_oldest(100) == e[1:]  # same seqs, same fields
        stored = second.get_message("web", "sorted")
        assert stored is not None
        # Seqs go on after the reopen: a new entry is after all earlier ones, even sorted ones.
        second.inbox_sorted(e[1:], [])
        second.inbox_append([entry(9)])
        (new,) = second.inbox_oldest(100)
        assert new.seq > e[-1].seq
        with pytest.raises(SortRaced):
            second.inbox_sorted(e[:1], [])
    finally:
        second.close()
    # And the first store object opens again too (the fixture closes it at the end).
    store.open()
    assert store.inbox_count() == (1, 1)
