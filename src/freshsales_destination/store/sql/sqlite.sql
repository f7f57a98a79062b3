-- The SQLite store's queries, by name (see store/queries.py). The rules that run them are
-- written once in store/rules.py; store/sqlite.py binds what only SQLite does. Placeholders
-- are "?" (positional) or ":name" (named); "{columns}" is the column list of a StoredMessage;
-- "{...}" marks text filled in by store/sqlite.py (lists of placeholders).

-- name: columns
seq, source, destination, message_id, type, status, reason, lane, received_at, event_at,
attempts, available_at, last_error, raw, message, first_failure_at, finished_at

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

-- name: prune_journey
-- The journeys of the messages `prune` removes (same conditions), in the same transaction.
DELETE FROM journey WHERE seq IN (SELECT seq FROM messages WHERE finished_at IS NOT NULL
AND finished_at < ? AND received_at < ? AND status != 'dead')

-- name: prune
DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?
AND received_at < ? AND status != 'dead'

-- name: claim_candidate
-- The oldest ready pending message whose lane is neither leased nor held (claim_lane without
-- head types; the first such message is its lane's next, so no check of the head is needed).
SELECT m.lane FROM messages m INDEXED BY messages_pending
WHERE m.destination = ? AND m.status = 'pending' AND m.lane IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination
AND l.lane = m.lane AND (l.hold_until > ? OR l.lease_until > ?))
ORDER BY m.seq LIMIT 1

-- name: claim_candidates
-- Up to :limit lanes, oldest head first: pending messages that are the next of their lane,
-- in a lane neither leased nor held. {free_head}: claim_free_head.
SELECT m.seq, m.lane FROM messages m INDEXED BY messages_pending
WHERE m.destination = :destination AND m.status = 'pending' AND {free_head}
ORDER BY m.seq LIMIT :limit

-- name: claim_candidates_of_type
-- The same among the pending messages of one type (:type{n}), through their own index: a
-- claim for identify heads never reads the pending tracks and pages. Several types are one
-- statement: each type's first :limit, merged by seq (claim_candidates_merged).
SELECT m.seq, m.lane FROM messages m INDEXED BY messages_pending_type
WHERE m.destination = :destination AND m.type = :type{n} AND m.status = 'pending'
AND {free_head}
ORDER BY m.seq LIMIT :limit

-- name: claim_candidates_merged
-- {arms}: one "SELECT seq, lane FROM (claim_candidates_of_type)" per type, by UNION ALL.
SELECT seq, lane FROM ({arms}) ORDER BY seq LIMIT :limit

-- name: claim_free_head
-- A message that is its lane's next pending one (so each lane comes once), the lane free.
m.lane IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination
AND l.lane = m.lane AND (l.hold_until > :now OR l.lease_until > :now))
AND NOT EXISTS (SELECT 1 FROM messages p INDEXED BY messages_lane
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

-- name: lane_work_left
-- One row if the lane still has a pending message: when it may be claimed (its hold's end, 0).
SELECT COALESCE((SELECT hold_until FROM lanes WHERE destination = ? AND lane = ?), 0)
FROM messages WHERE destination = ? AND lane = ? AND status = 'pending' LIMIT 1

-- name: next_ready_at
-- The earliest end of a hold or lease over a lane that has pending messages.
SELECT MIN(MAX(l.hold_until, l.lease_until)) FROM lanes l
WHERE l.destination = ? AND MAX(l.hold_until, l.lease_until) > ?
  AND EXISTS (SELECT 1 FROM messages m WHERE m.destination = l.destination
              AND m.lane = l.lane AND m.status = 'pending')

-- name: finish
-- One row per seq (executemany). The second parameter is 1 when this finish records a
-- delivery attempt (a call was made), else 0.
UPDATE messages SET status = ?, attempts = attempts + ?, finished_at = ?,
reason = COALESCE(?, reason) WHERE seq = ?

-- name: reschedule
UPDATE messages SET attempts = ?, available_at = ?, first_failure_at = ?,
last_error = ? WHERE seq = ?

-- name: hold_lane
INSERT INTO lanes (destination, lane, hold_until, owner, lease_until)
VALUES (?, ?, ?, NULL, 0) ON CONFLICT (destination, lane) DO UPDATE SET
hold_until = excluded.hold_until

-- name: dead_lanes
-- One seq at a time. (No UPDATE ... RETURNING: that needs SQLite 3.35.)
SELECT seq, destination, lane FROM messages WHERE seq = ? AND status = 'dead'

-- name: drop_dead
-- One row per seq (executemany).
UPDATE messages SET status = 'dropped', finished_at = ? WHERE seq = ? AND status = 'dead'

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

-- name: journey_add
-- {rows}: one journey_row per step (500 at most: 5 parameters each): seq, offset, at, kind,
-- detail. Each step is numbered its message's last number (read before the insert) + offset.
INSERT INTO journey (seq, n, at, kind, detail)
SELECT v.column1, COALESCE((SELECT MAX(j.n) FROM journey j WHERE j.seq = v.column1), 0)
       + v.column2, v.column3, v.column4, v.column5
FROM (VALUES {rows}) AS v WHERE true
ON CONFLICT (seq, n) DO NOTHING
RETURNING seq, n

-- name: journey_row
(?, ?, ?, ?, ?)

-- name: journey_trim
-- Keep the first steps (n <= ?) and the latest: drop the middle up to n <= ?.
DELETE FROM journey WHERE seq = ? AND n > ? AND n <= ?

-- name: journey_of
SELECT seq, at, kind, detail, n FROM journey WHERE seq = ? ORDER BY n

-- name: seq_bounds
SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM messages

-- name: seq_at_or_after
SELECT seq, received_at FROM messages WHERE seq >= ? ORDER BY seq LIMIT 1

-- name: search_filters
-- The filters of a MessageQuery (named parameters; NULL means any).
(:destination IS NULL OR destination = :destination)
AND (:message_id IS NULL OR message_id = :message_id)
AND (:status IS NULL OR status = :status)
AND (:retrying = 0 OR last_error IS NOT NULL)
AND (:type IS NULL OR type = :type)
AND (:since IS NULL OR received_at >= :since)
AND (:until IS NULL OR received_at < :until)
AND (:reason IS NULL OR reason LIKE :reason ESCAPE '\' OR last_error LIKE :reason ESCAPE '\')
AND ((:lane IS NULL AND :needle1 IS NULL) OR lane = :lane
     OR instr(message, :needle1) > 0 OR instr(message, :needle2) > 0)

-- name: search_window
-- A bounded slice of seqs (the primary key), newest first. {filters}: search_filters.
SELECT {columns} FROM messages WHERE seq < :before AND seq >= :floor AND {filters}
ORDER BY seq DESC LIMIT :limit

-- name: search_message_id
-- By message id through the (source, message_id) index, one probe per source (the sources
-- found by skipping through that index). {filters}: search_filters.
SELECT {columns} FROM messages WHERE message_id = :message_id AND seq < :before
AND source IN (WITH RECURSIVE s(source) AS (SELECT MIN(source) FROM messages UNION ALL
SELECT (SELECT MIN(source) FROM messages WHERE source > s.source) FROM s
WHERE s.source IS NOT NULL) SELECT source FROM s WHERE source IS NOT NULL)
AND {filters}
ORDER BY seq DESC LIMIT :limit

-- name: dead_matching
-- Dead letters only (the partial index). {filters}: search_filters (status NULL).
SELECT seq FROM messages INDEXED BY messages_dead WHERE status = 'dead' AND {filters}
ORDER BY seq DESC LIMIT :limit

-- name: finished_counts
SELECT destination, status, CAST((finished_at - :start) / :size AS INTEGER) AS bucket, COUNT(*)
FROM messages WHERE finished_at >= :start AND finished_at < :end
GROUP BY destination, status, bucket

-- name: received_counts
-- From the first seq received in the window (messages are appended in the order received).
SELECT destination, 'received', CAST((received_at - :start) / :size AS INTEGER) AS bucket,
COUNT(*) FROM messages WHERE seq >= :from_seq AND received_at >= :start AND received_at < :end
GROUP BY destination, bucket

-- name: retry_counts
SELECT m.destination, 'retried', CAST((j.at - :start) / :size AS INTEGER) AS bucket, COUNT(*)
FROM journey j INDEXED BY journey_retries JOIN messages m ON m.seq = j.seq
WHERE j.kind = 'retry' AND j.at >= :start AND j.at < :end
GROUP BY m.destination, bucket

-- name: delivery_latencies
SELECT destination, finished_at - received_at FROM messages
WHERE finished_at >= :start AND finished_at < :end AND status = 'delivered'

-- name: failure_groups
-- Per (destination, status, reason): count, first and last seen, and the 5 newest seqs.
WITH f AS (
    SELECT seq, destination, status, COALESCE(reason, last_error, '') AS reason,
           COALESCE(finished_at, received_at) AS at
    FROM messages WHERE status IN ('dead', 'discarded', 'filtered')
    AND finished_at >= :since AND (:destination IS NULL OR destination = :destination)
    UNION ALL
    SELECT seq, destination, 'retrying', last_error, COALESCE(first_failure_at, received_at)
    FROM messages INDEXED BY messages_pending
    WHERE status = 'pending' AND last_error IS NOT NULL
    AND (:destination IS NULL OR destination = :destination)
), r AS (
    SELECT seq, destination, status, reason, at,
           ROW_NUMBER() OVER w AS rn, COUNT(*) OVER g AS cnt,
           MIN(at) OVER g AS first_seen, MAX(at) OVER g AS last_seen
    FROM f
    WINDOW g AS (PARTITION BY destination, status, reason),
           w AS (PARTITION BY destination, status, reason ORDER BY seq DESC)
)
SELECT destination, status, reason, cnt, first_seen, last_seen, seq FROM r WHERE rn <= 5
ORDER BY cnt DESC, destination, status, reason, seq DESC

-- name: oldest_pending
SELECT received_at FROM messages INDEXED BY messages_pending
WHERE destination = ? AND status = 'pending' ORDER BY seq LIMIT 1

-- name: backlog
-- A destination's pending messages, those of them waiting for a retry, and its dead letters
-- (each count through a partial index).
SELECT (SELECT COUNT(*) FROM messages INDEXED BY messages_pending
        WHERE destination = :destination AND status = 'pending'),
       (SELECT COUNT(*) FROM messages INDEXED BY messages_pending
        WHERE destination = :destination AND status = 'pending' AND last_error IS NOT NULL),
       (SELECT COUNT(*) FROM messages INDEXED BY messages_dead
        WHERE status = 'dead' AND destination = :destination)
