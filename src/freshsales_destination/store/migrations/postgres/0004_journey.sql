-- Each message's journey as delivery saw it: one row per step (a Freshsales call, a retry, an
-- outcome, an operator's action), numbered per message; detail is compact JSON. Bounded per
-- message by the store (the first steps and the latest are kept) and pruned with the message.
-- Only retries are indexed by time (for the stats), and they are rare.
CREATE TABLE journey (
    seq    bigint           NOT NULL,
    n      integer          NOT NULL,
    at     double precision NOT NULL,
    kind   text             NOT NULL,
    detail bytea            NOT NULL,
    PRIMARY KEY (seq, n)
);
CREATE INDEX journey_retries ON journey (at) WHERE kind = 'retry';
