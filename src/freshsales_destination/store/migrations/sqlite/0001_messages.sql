CREATE TABLE messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT    NOT NULL,
    message_id    TEXT    NOT NULL,
    destination   TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    reason        TEXT,
    lane          TEXT,
    received_at   REAL    NOT NULL,
    event_at      REAL    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    available_at  REAL    NOT NULL DEFAULT 0,
    first_failure_at REAL,
    last_error    TEXT,
    finished_at   REAL,
    raw           BLOB    NOT NULL,
    message       BLOB    NOT NULL,
    UNIQUE (source, message_id)
);
CREATE INDEX messages_pending ON messages (destination, seq) WHERE status = 'pending';
CREATE INDEX messages_lane ON messages (destination, lane, seq) WHERE status = 'pending';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
