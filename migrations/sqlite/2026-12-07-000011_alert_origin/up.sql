-- Mailroom's own alerts get their own origin, `alert`. They were `sys` without a provider,
-- which is also what an API message looks like once its provider is deleted: a retry or a
-- reclaimed lease then sent such a message through the operator's system relay with its
-- original From. Only `alert` mail may use the system provider now.
--
-- SQLite cannot widen a CHECK constraint in place, so `messages` is rebuilt as
-- https://www.sqlite.org/lang_altertable.html#otheralter says: foreign keys off first
-- (outside a transaction, hence `run_in_transaction = false`), or dropping the old table
-- would cascade into `message_events`. Ids, the search index (keyed by id), the tallies
-- and the AUTOINCREMENT sequence are kept.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

DROP TRIGGER messages_restated;
DROP TRIGGER messages_removed;
-- Names `messages` in its body: the rename below re-parses it, and it must not see a
-- moment without that table.
DROP TRIGGER message_bodies_purged;

CREATE TABLE messages_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    origin TEXT NOT NULL CHECK (origin IN ('web', 'sys', 'alert')),
    user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    session_public_id TEXT,
    provider_id BIGINT REFERENCES providers (id) ON DELETE SET NULL,
    from_address TEXT NOT NULL,
    from_name TEXT NOT NULL,
    recipient TEXT NOT NULL,
    cc TEXT NOT NULL,
    bcc TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_id BIGINT NOT NULL REFERENCES message_bodies (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'cancelled', 'held')),
    hold_reason TEXT,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    due_at TIMESTAMP NOT NULL,
    send_at TIMESTAMP,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    possible_duplicate BOOLEAN NOT NULL,
    result TEXT NOT NULL,
    smtp_code INTEGER,
    smtp_enhanced TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL,
    api_key_id BIGINT REFERENCES api_keys (id) ON DELETE SET NULL,
    references_header TEXT,
    contact_ids TEXT
);

INSERT INTO messages_new (id, workspace_id, origin, user_id, session_public_id, provider_id,
        from_address, from_name, recipient, cc, bcc, subject, body_id, message_id, status,
        hold_reason, attempts, max_attempts, due_at, send_at, lease_owner, lease_until,
        possible_duplicate, result, smtp_code, smtp_enhanced, created_at, sent_at, updated_at,
        api_key_id, references_header, contact_ids)
    SELECT id, workspace_id,
        -- Alerts: Mailroom's own, never a person's (user) nor a key's.
        CASE WHEN origin = 'sys' AND provider_id IS NULL AND api_key_id IS NULL
                  AND user_id IS NULL THEN 'alert' ELSE origin END,
        user_id, session_public_id, provider_id,
        from_address, from_name, recipient, cc, bcc, subject, body_id, message_id, status,
        hold_reason, attempts, max_attempts, due_at, send_at, lease_owner, lease_until,
        possible_duplicate, result, smtp_code, smtp_enhanced, created_at, sent_at, updated_at,
        api_key_id, references_header, contact_ids
    FROM messages ORDER BY id;

-- Ids of deleted messages are never given out again (also when the log is empty now).
DELETE FROM sqlite_sequence WHERE name = 'messages_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages_new', max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
                               coalesce((SELECT max(id) FROM messages_new), 0));

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

CREATE INDEX messages_due ON messages (due_at, id) WHERE status IN ('scheduled', 'queued');
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_held ON messages (provider_id) WHERE status = 'held';
CREATE INDEX messages_log ON messages (workspace_id, id);
CREATE INDEX messages_body ON messages (body_id);
CREATE INDEX messages_log_origin ON messages (workspace_id, origin, id);
CREATE INDEX messages_log_status ON messages (workspace_id, status, id);
CREATE INDEX messages_log_provider ON messages (workspace_id, provider_id, id);
CREATE INDEX messages_log_sender ON messages (workspace_id, from_address, id);

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

CREATE TRIGGER message_bodies_purged AFTER UPDATE OF purged_at ON message_bodies
WHEN OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL BEGIN
    DELETE FROM message_words WHERE rowid IN (SELECT id FROM messages WHERE body_id = NEW.id);
    INSERT INTO message_words (rowid, subject, body)
        SELECT id, subject, '' FROM messages WHERE body_id = NEW.id;
END;

-- Mail of a provider deleted earlier that was still waiting can go nowhere now (only
-- alerts use the system provider): cancelled, as deleting a provider does. The status
-- trigger moves its counts.
UPDATE messages SET status = 'cancelled', hold_reason = NULL, result = 'provider deleted'
    WHERE provider_id IS NULL AND origin <> 'alert' AND status IN ('scheduled', 'queued', 'held');

-- The tallies count by origin: the alerts' counts move from `sys` to `alert`.
DELETE FROM message_tallies WHERE origin IN ('sys', 'alert');
INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, date(created_at), origin, status, count(*), min(id), max(id)
    FROM messages WHERE origin IN ('sys', 'alert')
    GROUP BY workspace_id, date(created_at), origin, status;

COMMIT;
PRAGMA foreign_keys = ON;
