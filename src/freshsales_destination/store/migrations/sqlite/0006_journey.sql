-- Each message's journey as delivery saw it: one row per step (a Freshsales call, a retry, an
-- outcome, an operator's action), numbered per message; detail is compact JSON. Bounded per
-- message by the store (the first steps and the latest are kept) and pruned with the message.
-- Only retries are indexed by time (for the stats), and they are rare: a delivered message's
-- steps cost one short insert in the transaction that finishes it.
CREATE TABLE journey (
    seq    INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    at     REAL    NOT NULL,
    kind   TEXT    NOT NULL,
    detail BLOB    NOT NULL,
    PRIMARY KEY (seq, n)
) WITHOUT ROWID;
CREATE INDEX journey_retries ON journey (at) WHERE kind = 'retry';
