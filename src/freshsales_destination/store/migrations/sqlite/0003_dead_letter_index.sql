-- Only dead letters are listed by status often enough to index: pending and delivered rows
-- (almost all of them) stay out of the index, so ingest does not pay for it.
DROP INDEX IF EXISTS messages_status;
CREATE INDEX messages_dead ON messages (seq) WHERE status = 'dead';
