-- A SQLite queue made by the store before its migrations were .sql files (commit ef7680e,
-- user_version 5), dumped with iterdump: tests/contract/test_migrations.py opens it.
BEGIN TRANSACTION;
CREATE TABLE inbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        source      TEXT    NOT NULL,
        destination TEXT    NOT NULL,
        kind        TEXT    NOT NULL,
        received_at REAL    NOT NULL,
        count       INTEGER NOT NULL,
        body        BLOB    NOT NULL
    );
INSERT INTO "inbox" VALUES(1,'web','acme','batch',150.0,3,X'7B226261746368223A5B5D7D');
CREATE TABLE inbox_size (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        entries  INTEGER NOT NULL,
        messages INTEGER NOT NULL
    );
INSERT INTO "inbox_size" VALUES(1,1,3);
CREATE TABLE kv (
        namespace  TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
INSERT INTO "kv" VALUES('budget','acct',X'3432',5.0);
CREATE TABLE lanes (
        destination TEXT NOT NULL,
        lane        TEXT NOT NULL,
        hold_until  REAL NOT NULL DEFAULT 0,
        owner       TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (destination, lane)
    ) WITHOUT ROWID;
INSERT INTO "lanes" VALUES('acme','u:a',900.0,NULL,0.0);
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
INSERT INTO "messages" VALUES(1,'web','p1','acme','track','pending',NULL,'u:a',100.0,100.0,1,900.0,200.0,'HTTP 500',NULL,X'7B226D6573736167654964223A227031222C2274797065223A22747261636B227D',X'7B226D6573736167654964223A227031222C2274797065223A22747261636B227D');
INSERT INTO "messages" VALUES(2,'web','p2','acme','track','pending',NULL,'u:a',100.0,100.0,0,0.0,NULL,NULL,NULL,X'7B226D6573736167654964223A227032222C2274797065223A22747261636B227D',X'7B226D6573736167654964223A227032222C2274797065223A22747261636B227D');
INSERT INTO "messages" VALUES(3,'web','d1','acme','track','dead','gave up','u:b',100.0,100.0,0,0.0,NULL,NULL,300.0,X'7B226D6573736167654964223A226431222C2274797065223A22747261636B227D',X'7B226D6573736167654964223A226431222C2274797065223A22747261636B227D');
INSERT INTO "messages" VALUES(4,'web','f1','acme','track','filtered','why','u:c',100.0,100.0,0,0.0,NULL,NULL,100.0,X'7B226D6573736167654964223A226631222C2274797065223A22747261636B227D',X'7B226D6573736167654964223A226631222C2274797065223A22747261636B227D');
CREATE INDEX messages_pending ON messages (destination, seq) WHERE status = 'pending';
CREATE INDEX messages_lane ON messages (destination, lane, seq) WHERE status = 'pending';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX messages_dead ON messages (seq) WHERE status = 'dead';
CREATE TRIGGER inbox_size_add AFTER INSERT ON inbox BEGIN UPDATE inbox_size SET entries = entries + 1, messages = messages + NEW.count WHERE id = 1; END;
CREATE TRIGGER inbox_size_remove AFTER DELETE ON inbox BEGIN UPDATE inbox_size SET entries = entries - 1, messages = messages - OLD.count WHERE id = 1; END;
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('messages',4);
INSERT INTO "sqlite_sequence" VALUES('inbox',1);
COMMIT;
