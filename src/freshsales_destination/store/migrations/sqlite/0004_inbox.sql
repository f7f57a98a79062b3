-- Acknowledged requests waiting to be sorted into messages: one row per request, no
-- index but the rowid, so the cost of answering 200 is one small insert per request.
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,
    destination TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    count       INTEGER NOT NULL,
    body        BLOB    NOT NULL
);
