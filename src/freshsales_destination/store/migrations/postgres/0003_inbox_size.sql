-- The inbox's size, kept exact by statement triggers in the transactions that change the
-- inbox (concurrent appends take turns on its row until they commit).
CREATE TABLE inbox_size (
    id       integer PRIMARY KEY CHECK (id = 1),
    entries  bigint  NOT NULL,
    messages bigint  NOT NULL
);
INSERT INTO inbox_size SELECT 1, COUNT(*), COALESCE(SUM(count), 0) FROM inbox;
CREATE FUNCTION inbox_size_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE inbox_size SET entries = entries + (SELECT COUNT(*) FROM added),
           messages = messages + (SELECT COALESCE(SUM(count), 0) FROM added)
    WHERE id = 1;
    RETURN NULL;
END $$;
CREATE FUNCTION inbox_size_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE inbox_size SET entries = entries - (SELECT COUNT(*) FROM removed),
           messages = messages - (SELECT COALESCE(SUM(count), 0) FROM removed)
    WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER inbox_size_add AFTER INSERT ON inbox REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_size_add();
CREATE TRIGGER inbox_size_remove AFTER DELETE ON inbox REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_size_remove();
