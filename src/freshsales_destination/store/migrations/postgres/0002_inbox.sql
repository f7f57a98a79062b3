-- Acknowledged requests waiting to be sorted into messages (see store/base.py InboxEntry).
CREATE TABLE inbox (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text             NOT NULL,
    destination text             NOT NULL,
    kind        text             NOT NULL,
    received_at double precision NOT NULL,
    count       integer          NOT NULL,
    body        bytea            NOT NULL
);
