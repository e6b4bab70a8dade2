-- Search over the log. Two contentless FTS5 indexes whose rowid is the message id (the
-- text itself lives in messages and message_bodies), so a search reads them newest first
-- and stops at 100:
-- * words of the subject and the text (unicode61, prefixes of 2 and 3 characters indexed
--   for search-as-you-type), the first 100,000 characters of a text;
-- * trigrams of the addresses (recipient, Cc, Bcc, sender address and name), so a part of
--   an address like `jo@exam` finds jo@example.com.
-- Filled in the transaction that stores the messages, one statement per batch
-- (`messages::queries::index_batch`; FTS5 writes a segment per statement, so a trigger per
-- row would make many small ones); emptied by a trigger.
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
-- Fewer, larger segments: a bigger in-memory batch before a segment is written (8 MB, not
-- 1 MB) and merges of 8 segments at a level instead of 4 (measured: merging was most of
-- the cost of loading a large log).
INSERT INTO message_words (message_words, rank) VALUES ('hashsize', 33554432);
INSERT INTO message_words (message_words, rank) VALUES ('automerge', 16);
INSERT INTO message_addresses (message_addresses, rank) VALUES ('hashsize', 33554432);
INSERT INTO message_addresses (message_addresses, rank) VALUES ('automerge', 16);

-- How many messages each workspace has per creation day (UTC), origin and status: the
-- history's tab counts and the overview read these few rows instead of counting the log.
-- New messages are added once per stored batch with the search indexes
-- (`messages::queries::index_batch`); status changes and deletes by triggers.
-- `first_id`..`last_id` bound the ids of the day's messages, so a day filter reads the
-- log from the right place instead of scanning everything newer.
CREATE TABLE message_tallies (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day DATE NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    n BIGINT NOT NULL,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, day, origin, status)
);

-- The log reads a workspace's messages newest first with or without a tab: one index on
-- (workspace_id, id) serves every tab in id order (the origin is checked on the way); the
-- old (workspace_id, origin, id) made the All tab sort the whole workspace.
DROP INDEX messages_log;
CREATE INDEX messages_log ON messages (workspace_id, id);

-- PostgreSQL appends changes here and folds them into the tallies (its writers must not
-- wait on each other's counter rows); SQLite has one writer and adds to the tallies at
-- once, so this stays empty. Counts read the view on both.
CREATE TABLE message_tally_deltas (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day DATE NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    n BIGINT NOT NULL,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL
);
CREATE VIEW message_counts AS
    SELECT workspace_id, day, origin, status, n, first_id, last_id FROM message_tallies
    UNION ALL
    SELECT workspace_id, day, origin, status, n, first_id, last_id FROM message_tally_deltas;

-- Retention re-indexes the messages of a purged content: found by their content.
CREATE INDEX messages_body ON messages (body_id);

CREATE TRIGGER messages_restated AFTER UPDATE OF status ON messages
WHEN OLD.status <> NEW.status BEGIN
    UPDATE message_tallies SET n = n - 1
        WHERE workspace_id = OLD.workspace_id AND day = date(OLD.created_at)
          AND origin = OLD.origin AND status = OLD.status;
    INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
        VALUES (NEW.workspace_id, date(NEW.created_at), NEW.origin, NEW.status, 1, NEW.id, NEW.id)
        ON CONFLICT (workspace_id, day, origin, status) DO UPDATE
        SET n = n + 1, first_id = min(first_id, excluded.first_id),
            last_id = max(last_id, excluded.last_id);
END;

CREATE TRIGGER messages_removed AFTER DELETE ON messages BEGIN
    DELETE FROM message_words WHERE rowid = OLD.id;
    DELETE FROM message_addresses WHERE rowid = OLD.id;
    UPDATE message_tallies SET n = n - 1
        WHERE workspace_id = OLD.workspace_id AND day = date(OLD.created_at)
          AND origin = OLD.origin AND status = OLD.status;
END;

-- A purged content's words leave the index; the subjects stay searchable.
CREATE TRIGGER message_bodies_purged AFTER UPDATE OF purged_at ON message_bodies
WHEN OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL BEGIN
    DELETE FROM message_words WHERE rowid IN (SELECT id FROM messages WHERE body_id = NEW.id);
    INSERT INTO message_words (rowid, subject, body)
        SELECT id, subject, '' FROM messages WHERE body_id = NEW.id;
END;

-- What was there before.
INSERT INTO message_words (rowid, subject, body)
    SELECT m.id, m.subject, substr(b.text_body, 1, 100000)
    FROM messages m JOIN message_bodies b ON b.id = m.body_id;
INSERT INTO message_addresses (rowid, addresses)
    SELECT id, recipient || ' ' || cc || ' ' || bcc || ' ' || from_address || ' ' || from_name
    FROM messages;
INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, date(created_at), origin, status, count(*), min(id), max(id)
    FROM messages GROUP BY 1, 2, 3, 4;
