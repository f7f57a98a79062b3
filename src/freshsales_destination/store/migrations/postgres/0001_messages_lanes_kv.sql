CREATE TABLE messages (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text             NOT NULL,
    message_id       text             NOT NULL,
    destination      text             NOT NULL,
    type             text             NOT NULL,
    status           text             NOT NULL,
    reason           text,
    lane             text,
    received_at      double precision NOT NULL,
    event_at         double precision NOT NULL,
    attempts         integer          NOT NULL DEFAULT 0,
    available_at     double precision NOT NULL DEFAULT 0,
    first_failure_at double precision,
    last_error       text,
    finished_at      double precision,
    raw              bytea            NOT NULL,
    message          bytea            NOT NULL,
    UNIQUE (source, message_id)
) WITH (fillfactor = 90);
CREATE INDEX messages_pending ON messages (destination, seq) WHERE status = 'pending';
CREATE INDEX messages_lane ON messages (destination, lane, seq) WHERE status = 'pending';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
-- Only dead letters are listed by status often enough to index (ingest does not pay).
CREATE INDEX messages_dead ON messages (seq) WHERE status = 'dead';
CREATE TABLE lanes (
    destination text             NOT NULL,
    lane        text             NOT NULL,
    hold_until  double precision NOT NULL DEFAULT 0,
    owner       text,
    lease_until double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, lane)
) WITH (fillfactor = 70);
-- value is NULL only inside a kv_update that created the row (never visible committed,
-- unless an older writer crashed mid-way, which kv_get reads as "no value").
CREATE TABLE kv (
    namespace  text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    value      bytea,
    updated_at double precision NOT NULL,
    PRIMARY KEY (namespace, key)
) WITH (fillfactor = 70);
