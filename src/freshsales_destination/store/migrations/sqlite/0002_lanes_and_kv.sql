CREATE TABLE lanes (
    destination TEXT NOT NULL,
    lane        TEXT NOT NULL,
    hold_until  REAL NOT NULL DEFAULT 0,
    owner       TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, lane)
) WITHOUT ROWID;
CREATE TABLE kv (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX messages_status ON messages (status, seq);
