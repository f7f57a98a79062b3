-- The PostgreSQL store's queries, by name (see store/queries.py). The rules that run them are
-- written once in store/rules.py; store/postgres.py binds what only PostgreSQL does.
-- Placeholders are "%s" (positional) or "%(name)s" (named), "%b" binary; "{columns}" is the
-- column list of a StoredMessage; "{...}" marks text filled in by store/postgres.py.

-- name: columns
seq, source, destination, message_id, type, status, reason, lane, received_at, event_at,
attempts, available_at, last_error, raw, message, first_failure_at

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

-- name: prune
DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < %s
AND received_at < %s AND status <> 'dead'

-- name: claim_candidate
-- The oldest ready pending message whose lane is neither leased nor held, and not one this
-- claim already lost. SKIP LOCKED passes over candidates another claimer is looking at.
-- {type_filter}: empty, or claim_head_types.
SELECT m.lane FROM messages m
WHERE m.destination = %(destination)s AND m.status = 'pending' AND m.lane IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.destination = m.destination
                  AND l.lane = m.lane AND (l.hold_until > %(now)s OR l.lease_until > %(now)s))
  AND m.lane <> ALL(%(lost)s::text[])
{type_filter}
ORDER BY m.seq LIMIT 1
FOR UPDATE OF m SKIP LOCKED

-- name: claim_head_types
-- Only lanes whose next message is of these types.
  AND m.type = ANY(%(types)s::text[])
  AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.destination = m.destination
                  AND p.lane = m.lane AND p.status = 'pending' AND p.seq < m.seq)

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

-- name: finish
-- All seqs at once (an array).
UPDATE messages SET status = %s, finished_at = %s, reason = COALESCE(%s, reason)
WHERE seq = ANY(%s::bigint[])

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
SELECT destination, lane FROM messages WHERE seq = ANY(%s::bigint[]) AND status = 'dead'
FOR UPDATE

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
