-- Pending messages by type, in seq order: a claim that wants lanes whose next message is an
-- identify (the bulk sender) reads the pending identifies only, not every pending track and
-- page before them. Partial like messages_pending, so finished rows cost nothing.
CREATE INDEX messages_pending_type ON messages (destination, type, seq) WHERE status = 'pending';
