-- The PostgreSQL store's queries, by name (see store/queries.py). The rules that run them are
-- written once in store/rules.py; store/postgres.py binds what only PostgreSQL does.
-- Placeholders are "%s" (positional) or "%(name)s" (named), "%b" binary; "{columns}" is the
-- column list of a StoredMessage; "{...}" marks text filled in by store/postgres.py.

-- name: columns
seq, source, destination, message_id, type, status, reason, lane, received_at, event_at,
attempts, available_at, last_error, raw, message, first_failure_at, finished_at

-- name: append_messages
-- One statement inserts a whole batch from arrays; rows come out in input order, so seq
-- follows the order of the batch (lanes are delivered in seq order). Binary parameters:
-- bytea arrays in text format cost hex-escaping every byte.
INSERT INTO messages (source, message_id, destination, type, status, reason, lane,
                      received_at, event_at, finished_at, raw, message)
SELECT source, message_id, destination, type, status, reason, lane,
       received_at, event_at, finished_at, raw, message
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
            %b::text[], %b::float8[], %b::float8[], %b::float8[], %b::bytea[], %b::bytea[])
     WITH ORDINALITY AS t(source, message_id, destination, type, status, reason, lane,
                          received_at, event_at, finished_at, raw, message, ord)
ORDER BY ord
ON CONFLICT (source, message_id) DO NOTHING
RETURNING source, message_id

-- name: append_turn
-- Appends and sorters take turns, so seq order is commit order.
SELECT pg_advisory_xact_lock(hashtextextended('freshsales_destination:append', 0))

-- name: inbox_append
INSERT INTO inbox (source, destination, kind, received_at, count, body)
SELECT source, destination, kind, received_at, count, body
FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::int4[], %b::bytea[])
     WITH ORDINALITY AS t(source, destination, kind, received_at, count, body, ord)
ORDER BY ord

-- name: inbox_sizes
-- Sizes first, then only the bodies that fit (a client-side cursor would fetch every body).
SELECT seq, count, length(body) FROM inbox ORDER BY seq LIMIT %s

-- name: inbox_entries
SELECT seq, source, destination, kind, received_at, count, body
FROM inbox WHERE seq = ANY(%s) ORDER BY seq

-- name: inbox_delete
DELETE FROM inbox WHERE seq = ANY(%s)

-- name: inbox_count
SELECT entries, messages FROM inbox_size WHERE id = 1

-- name: ping
SELECT current_setting('transaction_read_only')

-- name: get_message
SELECT {columns} FROM messages WHERE source = %s AND message_id = %s

-- name: get_by_seq
SELECT {columns} FROM messages WHERE seq = %s

-- name: list_messages
SELECT {columns} FROM messages ORDER BY seq LIMIT %s

-- name: list_messages_by_status
SELECT {columns} FROM messages WHERE status = %s ORDER BY seq LIMIT %s

-- name: list_messages_in_state
-- {state}: a status literal from a fixed list: the planner uses the partial index even in a
-- generic plan.
SELECT {columns} FROM messages WHERE status = '{state}' ORDER BY seq LIMIT %s

-- name: count_by_status
SELECT status, COUNT(*) FROM messages GROUP BY status

-- name: pending_count
SELECT COUNT(*) FROM messages WHERE status = 'pending'

-- name: pending_count_of_destination
SELECT COUNT(*) FROM messages WHERE status = 'pending' AND destination = %s

-- name: pending_by_type
SELECT type, COUNT(*) FROM messages WHERE status = 'pending' AND destination = %s GROUP BY type

-- name: prune_journey
-- The journeys of the messages `prune` removes (same conditions), in the same transaction.
DELETE FROM journey WHERE seq IN (SELECT seq FROM messages WHERE finished_at IS NOT NULL
AND finished_at < %s AND received_at < %s AND status <> 'dead')

-- name: prune
DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < %s
AND received_at < %s AND status <> 'dead'

-- name: claim_candidate
-- The oldest ready pending message whose lane is neither leased nor held, and not one this
-- claim already lost (claim_lane without head types). SKIP LOCKED passes over candidates
-- another claimer is looking at.
SELECT m.lane FROM messages m
WHERE m.destination = %(destination)s AND m.status = 'pending' AND m.lane IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination
                  AND l.lane = m.lane AND (l.hold_until > %(now)s OR l.lease_until > %(now)s))
  AND m.lane <> ALL(%(lost)s::text[])
ORDER BY m.seq LIMIT 1
FOR UPDATE OF m SKIP LOCKED

-- name: claim_candidates
-- Up to %(limit)s lanes, oldest head first: pending messages that are the next of their lane
-- (so each lane comes once), in a lane neither leased nor held, nor one this claim already
-- lost. SKIP LOCKED passes over heads another claimer is looking at.
-- {type_filter}: empty, claim_of_type or claim_of_types.
SELECT m.lane FROM messages m
WHERE m.destination = %(destination)s AND m.status = 'pending' AND m.lane IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination
                  AND l.lane = m.lane AND (l.hold_until > %(now)s OR l.lease_until > %(now)s))
  AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.destination = m.destination
                  AND p.lane = m.lane AND p.status = 'pending' AND p.seq < m.seq)
  AND m.lane <> ALL(%(lost)s::text[])
{type_filter}
ORDER BY m.seq LIMIT %(limit)s
FOR UPDATE OF m SKIP LOCKED

-- name: claim_of_type
-- One type: an equality the planner matches to messages_pending_type, read in seq order.
  AND m.type = %(type)s

-- name: claim_of_types
  AND m.type = ANY(%(types)s::text[])

-- name: try_lane
-- Only one claimer at a time works on a lane: a non-blocking transaction-level advisory lock
-- per lane, so a claimer never waits for another (and claimers cannot deadlock each other).
SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))

-- name: take_lane
-- Inserted, or taken over only if free now. ON CONFLICT DO UPDATE locks the existing row and
-- evaluates the WHERE on its latest committed version, so a lease committed after the
-- candidate query was planned is still seen; then no row comes back.
INSERT INTO lanes AS l (destination, lane, hold_until, owner, lease_until)
VALUES (%(destination)s, %(lane)s, 0, %(owner)s, %(lease_until)s)
ON CONFLICT (destination, lane) DO UPDATE
SET hold_until = 0, owner = excluded.owner, lease_until = excluded.lease_until
WHERE l.hold_until <= %(now)s AND l.lease_until <= %(now)s
RETURNING l.lane

-- name: try_lanes
-- try_lane for many lanes in one statement: those whose lock this transaction got, in order.
SELECT t.lane FROM unnest(%(lanes)s::text[]) WITH ORDINALITY AS t(lane, ord)
WHERE pg_try_advisory_xact_lock(hashtextextended(%(prefix)s || t.lane, 0))
ORDER BY t.ord

-- name: take_lanes
-- take_lane for many lanes in one statement: the lanes taken come back.
INSERT INTO lanes AS l (destination, lane, hold_until, owner, lease_until)
SELECT %(destination)s, t.lane, 0, %(owner)s, %(lease_until)s
FROM unnest(%(lanes)s::text[]) AS t(lane)
ON CONFLICT (destination, lane) DO UPDATE
SET hold_until = 0, owner = excluded.owner, lease_until = excluded.lease_until
WHERE l.hold_until <= %(now)s AND l.lease_until <= %(now)s
RETURNING l.lane

-- name: lane_heads
-- lane_head for many lanes in one statement (rows of one lane together, in seq order).
SELECT {columns} FROM unnest(%(lanes)s::text[]) WITH ORDINALITY AS t(key, ord)
CROSS JOIN LATERAL (SELECT {columns} FROM messages
                    WHERE destination = %(destination)s AND lane = t.key AND status = 'pending'
                    ORDER BY seq LIMIT %(limit)s) h
ORDER BY t.ord, h.seq

-- name: lane_head
SELECT {columns} FROM messages
WHERE destination = %s AND lane = %s AND status = 'pending' ORDER BY seq LIMIT %s

-- name: renew_lease
UPDATE lanes SET lease_until = %s WHERE destination = %s AND lane = %s
AND owner = %s AND lease_until > %s

-- name: release_lane
UPDATE lanes SET owner = NULL, lease_until = 0
WHERE destination = %s AND lane = %s AND owner = %s

-- name: forget_idle_lane
DELETE FROM lanes WHERE destination = %s AND lane = %s AND owner IS NULL AND hold_until = 0

-- name: lane_work_left
-- One row if the lane still has a pending message: when it may be claimed (its hold's end, 0).
SELECT COALESCE((SELECT hold_until FROM lanes WHERE destination = %s AND lane = %s), 0)
FROM messages WHERE destination = %s AND lane = %s AND status = 'pending' LIMIT 1

-- name: next_ready_at
-- The earliest end of a hold or lease over a lane that has pending messages.
SELECT MIN(GREATEST(l.hold_until, l.lease_until)) FROM lanes l
WHERE l.destination = %s AND GREATEST(l.hold_until, l.lease_until) > %s
  AND EXISTS (SELECT 1 FROM messages m WHERE m.destination = l.destination
              AND m.lane = l.lane AND m.status = 'pending')

-- name: finish
-- All seqs at once (an array). The second parameter is 1 when this finish records a
-- delivery attempt (a call was made), else 0.
UPDATE messages SET status = %s, attempts = attempts + %s, finished_at = %s,
reason = COALESCE(%s, reason) WHERE seq = ANY(%s::bigint[])

-- name: reschedule
UPDATE messages SET attempts = %s, available_at = %s, first_failure_at = %s,
last_error = %s WHERE seq = %s

-- name: hold_lane
INSERT INTO lanes AS l (destination, lane, hold_until, owner, lease_until)
VALUES (%s, %s, %s, NULL, 0) ON CONFLICT (destination, lane) DO UPDATE SET
hold_until = excluded.hold_until

-- name: dead_lanes
-- All seqs at once (an array). FOR UPDATE: a concurrent requeue of the same seqs waits, then
-- finds them no longer dead.
SELECT seq, destination, lane FROM messages WHERE seq = ANY(%s::bigint[]) AND status = 'dead'
FOR UPDATE

-- name: drop_dead
-- All seqs at once (an array).
UPDATE messages SET status = 'dropped', finished_at = %s
WHERE seq = ANY(%s::bigint[]) AND status = 'dead'

-- name: requeue
-- All seqs at once (an array).
UPDATE messages SET status = 'pending', attempts = 0, available_at = 0,
first_failure_at = NULL, finished_at = NULL WHERE seq = ANY(%s::bigint[]) AND status = 'dead'

-- name: unhold_lane
UPDATE lanes SET hold_until = 0 WHERE destination = %s AND lane = %s

-- name: kv_get
SELECT value FROM kv WHERE namespace = %s AND key = %s

-- name: kv_reserve
-- Make sure the row exists (a concurrent creator makes us wait for its commit), so that
-- kv_get_for_update can lock it: every read-transform-write of a key is serialised. value is
-- NULL only inside that transaction (kv_get reads a NULL left by a crash as "no value").
INSERT INTO kv (namespace, key, value, updated_at) VALUES (%s, %s, NULL, %s)
ON CONFLICT (namespace, key) DO NOTHING

-- name: kv_get_for_update
SELECT value FROM kv WHERE namespace = %s AND key = %s FOR UPDATE

-- name: kv_put
INSERT INTO kv (namespace, key, value, updated_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
updated_at = excluded.updated_at

-- name: kv_prune
DELETE FROM kv WHERE namespace LIKE %s ESCAPE '\' AND updated_at < %s

-- name: migrate_lock
-- Serialises migrations of one schema across processes (one key per schema).
SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))

-- name: schema_exists
SELECT 1 FROM pg_namespace WHERE nspname = %s

-- name: create_schema
-- {schema}: the schema's name, quoted as an identifier.
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_version
SELECT COALESCE(MAX(version), 0) FROM schema_migrations

-- name: record_migration
INSERT INTO schema_migrations (version) VALUES (%s)

-- name: journey_add
-- All steps in one statement from arrays: seq, offset, at, kind, detail. Each step is numbered
-- its message's last number (as the statement starts) + offset.
INSERT INTO journey (seq, n, at, kind, detail)
SELECT t.seq, COALESCE((SELECT MAX(j.n) FROM journey j WHERE j.seq = t.seq), 0) + t.ord,
       t.at, t.kind, t.detail
FROM unnest(%s::bigint[], %s::int4[], %s::float8[], %s::text[], %s::bytea[])
     AS t(seq, ord, at, kind, detail)
ON CONFLICT (seq, n) DO NOTHING
RETURNING seq, n

-- name: journey_trim
-- Keep the first steps (n <= %s) and the latest: drop the middle up to n <= %s.
DELETE FROM journey WHERE seq = %s AND n > %s AND n <= %s

-- name: journey_of
SELECT seq, at, kind, detail, n FROM journey WHERE seq = %s ORDER BY n

-- name: seq_bounds
SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM messages

-- name: seq_at_or_after
SELECT seq, received_at FROM messages WHERE seq >= %s ORDER BY seq LIMIT 1

-- name: search_filters
-- The filters of a MessageQuery (named parameters; NULL means any).
(%(destination)s::text IS NULL OR destination = %(destination)s::text)
AND (%(message_id)s::text IS NULL OR message_id = %(message_id)s::text)
AND (%(status)s::text IS NULL OR status = %(status)s::text)
AND (NOT %(retrying)s::boolean OR last_error IS NOT NULL)
AND (%(type)s::text IS NULL OR type = %(type)s::text)
AND (%(since)s::float8 IS NULL OR received_at >= %(since)s::float8)
AND (%(until)s::float8 IS NULL OR received_at < %(until)s::float8)
AND (%(reason)s::text IS NULL OR reason ILIKE %(reason)s::text ESCAPE '\'
     OR last_error ILIKE %(reason)s::text ESCAPE '\')
AND ((%(lane)s::text IS NULL AND %(needle1)s::bytea IS NULL) OR lane = %(lane)s::text
     OR position(%(needle1)s::bytea IN message) > 0
     OR position(%(needle2)s::bytea IN message) > 0)

-- name: search_window
-- A bounded slice of seqs (the primary key), newest first. {filters}: search_filters.
SELECT {columns} FROM messages WHERE seq < %(before)s AND seq >= %(floor)s AND {filters}
ORDER BY seq DESC LIMIT %(limit)s

-- name: search_message_id
-- By message id through the (source, message_id) index, one probe per source (the sources
-- found by skipping through that index). {filters}: search_filters.
SELECT {columns} FROM messages WHERE message_id = %(message_id)s::text AND seq < %(before)s
AND source IN (WITH RECURSIVE s(source) AS (SELECT MIN(source) FROM messages UNION ALL
SELECT (SELECT MIN(m.source) FROM messages m WHERE m.source > s.source) FROM s
WHERE s.source IS NOT NULL) SELECT source FROM s WHERE source IS NOT NULL)
AND {filters}
ORDER BY seq DESC LIMIT %(limit)s

-- name: dead_matching
-- Dead letters only (the partial index). {filters}: search_filters (status NULL).
SELECT seq FROM messages WHERE status = 'dead' AND {filters}
ORDER BY seq DESC LIMIT %(limit)s

-- name: finished_counts
SELECT destination, status,
       floor((finished_at - %(start)s::float8) / %(size)s::float8)::int AS bucket, COUNT(*)
FROM messages WHERE finished_at >= %(start)s::float8 AND finished_at < %(end)s::float8
GROUP BY destination, status, bucket

-- name: received_counts
-- From the first seq received in the window (messages are appended in the order received).
SELECT destination, 'received',
       floor((received_at - %(start)s::float8) / %(size)s::float8)::int AS bucket, COUNT(*)
FROM messages WHERE seq >= %(from_seq)s AND received_at >= %(start)s::float8
AND received_at < %(end)s::float8
GROUP BY destination, bucket

-- name: retry_counts
SELECT m.destination, 'retried',
       floor((j.at - %(start)s::float8) / %(size)s::float8)::int AS bucket, COUNT(*)
FROM journey j JOIN messages m ON m.seq = j.seq
WHERE j.kind = 'retry' AND j.at >= %(start)s::float8 AND j.at < %(end)s::float8
GROUP BY m.destination, bucket

-- name: delivery_latencies
SELECT destination, finished_at - received_at FROM messages
WHERE finished_at >= %(start)s::float8 AND finished_at < %(end)s::float8
AND status = 'delivered'

-- name: failure_groups
-- Per (destination, status, reason): count, first and last seen, and the 5 newest seqs.
WITH f AS (
    SELECT seq, destination, status, COALESCE(reason, last_error, '') AS reason,
           COALESCE(finished_at, received_at) AS at
    FROM messages WHERE status IN ('dead', 'discarded', 'filtered')
    AND finished_at >= %(since)s::float8
    AND (%(destination)s::text IS NULL OR destination = %(destination)s::text)
    UNION ALL
    SELECT seq, destination, 'retrying', last_error, COALESCE(first_failure_at, received_at)
    FROM messages WHERE status = 'pending' AND last_error IS NOT NULL
    AND (%(destination)s::text IS NULL OR destination = %(destination)s::text)
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
SELECT received_at FROM messages
WHERE destination = %s AND status = 'pending' ORDER BY seq LIMIT 1

-- name: backlog
-- A destination's pending messages, those of them waiting for a retry, and its dead letters
-- (each count through a partial index).
SELECT (SELECT COUNT(*) FROM messages
        WHERE destination = %(destination)s AND status = 'pending'),
       (SELECT COUNT(*) FROM messages
        WHERE destination = %(destination)s AND status = 'pending' AND last_error IS NOT NULL),
       (SELECT COUNT(*) FROM messages WHERE status = 'dead' AND destination = %(destination)s)
