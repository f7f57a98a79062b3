-- The SQLite store's queries, by name (see store/queries.py). The rules that run them are
-- written once in store/rules.py; store/sqlite.py binds what only SQLite does. Placeholders
-- are "?" (positional) or ":name" (named); "{columns}" is the column list of a StoredMessage;
-- "{...}" marks text filled in by store/sqlite.py (lists of placeholders).

-- name: columns
seq, source, destination, message_id, type, status, reason, lane, received_at, event_at,
attempts, available_at, last_error, raw, message, first_failure_at

-- name: append_messages
-- {rows}: one append_row per message (500 at most: 12 parameters each).
INSERT INTO messages (source, message_id, destination, type, status, reason, lane,
                      received_at, event_at, finished_at, raw, message)
VALUES {rows}
ON CONFLICT (source, message_id) DO NOTHING

-- name: append_row
(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: existing_ids
-- {marks}: one "?" per id.
SELECT message_id FROM messages WHERE source = ? AND message_id IN ({marks})

-- name: inbox_append
-- {rows}: one inbox_row per entry (2,000 at most: 6 parameters each).
INSERT INTO inbox (source, destination, kind, received_at, count, body) VALUES {rows}

-- name: inbox_row
(?, ?, ?, ?, ?, ?)

-- name: inbox_oldest
SELECT seq, source, destination, kind, received_at, count, body
FROM inbox ORDER BY seq LIMIT ?

-- name: inbox_delete
-- {marks}: one "?" per seq.
DELETE FROM inbox WHERE seq IN ({marks})

-- name: inbox_count
SELECT entries, messages FROM inbox_size WHERE id = 1

-- name: ping
PRAGMA user_version

-- name: get_message
SELECT {columns} FROM messages WHERE source = ? AND message_id = ?

-- name: get_by_seq
SELECT {columns} FROM messages WHERE seq = ?

-- name: list_messages
SELECT {columns} FROM messages ORDER BY seq LIMIT ?

-- name: list_messages_by_status
SELECT {columns} FROM messages WHERE status = ? ORDER BY seq LIMIT ?

-- name: list_messages_in_state
-- {state}: a status literal from a fixed list, so SQLite can prove the partial index applies.
SELECT {columns} FROM messages WHERE status = '{state}' ORDER BY seq LIMIT ?

-- name: count_by_status
SELECT status, COUNT(*) FROM messages GROUP BY status

-- name: pending_count
SELECT COUNT(*) FROM messages WHERE status = 'pending'

-- name: pending_count_of_destination
SELECT COUNT(*) FROM messages WHERE status = 'pending' AND destination = ?

-- name: pending_by_type
SELECT type, COUNT(*) FROM messages WHERE status = 'pending' AND destination = ? GROUP BY type

-- name: prune
DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?
AND received_at < ? AND status != 'dead'

-- name: claim_candidate
-- The oldest ready pending message whose lane is neither leased nor held.
-- {type_filter}: empty, or claim_head_types.
SELECT m.lane FROM messages m INDEXED BY messages_pending
WHERE m.destination = ? AND m.status = 'pending' AND m.lane IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination
AND l.lane = m.lane AND (l.hold_until > ? OR l.lease_until > ?))
{type_filter}
ORDER BY m.seq LIMIT 1

-- name: claim_head_types
-- Only lanes whose next message is of these types. {marks}: one "?" per type.
AND m.type IN ({marks}) AND NOT EXISTS (SELECT 1 FROM messages p INDEXED BY messages_lane
WHERE p.destination = m.destination AND p.lane = m.lane
AND p.status = 'pending' AND p.seq < m.seq)

-- name: take_lane
-- Inside BEGIN IMMEDIATE no other writer runs, so the candidate's lane is free: take it.
INSERT INTO lanes (destination, lane, hold_until, owner, lease_until)
VALUES (:destination, :lane, 0, :owner, :lease_until) ON CONFLICT (destination, lane) DO UPDATE SET
hold_until = 0, owner = excluded.owner, lease_until = excluded.lease_until

-- name: lane_head
SELECT {columns} FROM messages INDEXED BY messages_lane
WHERE destination = ? AND lane = ? AND status = 'pending' ORDER BY seq LIMIT ?

-- name: renew_lease
UPDATE lanes SET lease_until = ? WHERE destination = ? AND lane = ?
AND owner = ? AND lease_until > ?

-- name: release_lane
UPDATE lanes SET owner = NULL, lease_until = 0
WHERE destination = ? AND lane = ? AND owner = ?

-- name: forget_idle_lane
DELETE FROM lanes WHERE destination = ? AND lane = ? AND owner IS NULL AND hold_until = 0

-- name: finish
-- One row per seq (executemany).
UPDATE messages SET status = ?, finished_at = ?, reason = COALESCE(?, reason) WHERE seq = ?

-- name: reschedule
UPDATE messages SET attempts = ?, available_at = ?, first_failure_at = ?,
last_error = ? WHERE seq = ?

-- name: hold_lane
INSERT INTO lanes (destination, lane, hold_until, owner, lease_until)
VALUES (?, ?, ?, NULL, 0) ON CONFLICT (destination, lane) DO UPDATE SET
hold_until = excluded.hold_until

-- name: dead_lanes
-- One seq at a time. (No UPDATE ... RETURNING: that needs SQLite 3.35.)
SELECT destination, lane FROM messages WHERE seq = ? AND status = 'dead'

-- name: requeue
-- One row per seq (executemany).
UPDATE messages SET status = 'pending', attempts = 0, available_at = 0,
first_failure_at = NULL, finished_at = NULL WHERE seq = ? AND status = 'dead'

-- name: unhold_lane
UPDATE lanes SET hold_until = 0 WHERE destination = ? AND lane = ?

-- name: kv_get
SELECT value FROM kv WHERE namespace = ? AND key = ?

-- name: kv_get_for_update
-- Inside BEGIN IMMEDIATE the row is already ours until COMMIT.
SELECT value FROM kv WHERE namespace = ? AND key = ?

-- name: kv_put
INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
updated_at = excluded.updated_at

-- name: kv_prune
DELETE FROM kv WHERE namespace LIKE ? ESCAPE '\' AND updated_at < ?
