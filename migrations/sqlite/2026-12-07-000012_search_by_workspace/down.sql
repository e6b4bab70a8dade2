DROP TRIGGER messages_removed;
DROP TRIGGER message_bodies_purged;
DROP TABLE message_words;
DROP TABLE message_addresses;
CREATE VIRTUAL TABLE message_words USING fts5 (
    subject, body,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'
);
CREATE VIRTUAL TABLE message_addresses USING fts5 (
    addresses,
    content = '', contentless_delete = 1,
    tokenize = 'trigram'
);
INSERT INTO message_words (rowid, subject, body)
    SELECT m.id, m.subject, substr(b.text_body, 1, 100000)
    FROM messages m JOIN message_bodies b ON b.id = m.body_id ORDER BY m.id;
INSERT INTO message_addresses (rowid, addresses)
    SELECT id, recipient || ' ' || cc || ' ' || bcc || ' ' || from_address || ' ' || from_name
    FROM messages ORDER BY id;
CREATE TRIGGER messages_removed AFTER DELETE ON messages BEGIN
    DELETE FROM message_words WHERE rowid = OLD.id;
    DELETE FROM message_addresses WHERE rowid = OLD.id;
    UPDATE message_tallies SET n = n - 1
        WHERE workspace_id = OLD.workspace_id AND day = date(OLD.created_at)
          AND origin = OLD.origin AND status = OLD.status;
END;
CREATE TRIGGER message_bodies_purged AFTER UPDATE OF purged_at ON message_bodies
WHEN OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL BEGIN
    DELETE FROM message_words WHERE rowid IN (SELECT id FROM messages WHERE body_id = NEW.id);
    INSERT INTO message_words (rowid, subject, body)
        SELECT id, subject, '' FROM messages WHERE body_id = NEW.id;
END;
