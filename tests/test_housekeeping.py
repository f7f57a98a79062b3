from __future__ import annotations

import orjson

from freshsales_destination.housekeeping import DAY, prune_once
from freshsales_destination.store.base import NewMessage
from freshsales_destination.store.sqlite import SQLiteStore


def test_prune_keeps_the_dedup_window() -> None:
    store = SQLiteStore(None)
    store.open()
    body = orjson.dumps({})
    old, recent = 1_000_000.0, 1_000_000.0 + 8 * DAY
    rows = [
        NewMessage(source="s", destination="d", message_id=mid, type="track", status=status,
                   reason=None, lane="u:1", received_at=at, event_at=at, raw=body, message=body)
        for mid, status, at in [
            ("old-done", "discarded", old), ("old-pending", "pending", old),
            ("new-done", "discarded", recent),
        ]
    ]
    store.append(rows)
    store.kv_put("ledger:d", "old-done:0", b"{}", now=old)
    removed = prune_once(store, dedup_days=7, now=recent + 1)
    assert removed == (1, 1)
    assert store.get_message("s", "old-done") is None
    assert store.get_message("s", "old-pending") is not None
    assert store.get_message("s", "new-done") is not None
    # After the window a resend is new again; within it, a duplicate.
    assert store.append([rows[0], rows[2]]) == [True, False]
