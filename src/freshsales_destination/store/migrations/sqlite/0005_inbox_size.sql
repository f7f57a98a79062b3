-- The inbox's size, kept exact by triggers in the transactions that change the inbox
-- (every process sees the same figure; counting millions of rows is never needed).
CREATE TABLE inbox_size (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    entries  INTEGER NOT NULL,
    messages INTEGER NOT NULL
);
INSERT INTO inbox_size SELECT 1, COUNT(*), COALESCE(SUM(count), 0) FROM inbox;
CREATE TRIGGER inbox_size_add AFTER INSERT ON inbox BEGIN UPDATE inbox_size SET entries = entries + 1, messages = messages + NEW.count WHERE id = 1; END;
CREATE TRIGGER inbox_size_remove AFTER DELETE ON inbox BEGIN UPDATE inbox_size SET entries = entries - 1, messages = messages - OLD.count WHERE id = 1; END;
