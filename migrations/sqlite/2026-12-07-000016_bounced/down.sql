PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
UPDATE messages SET status = 'failed' WHERE status = 'bounced';

DROP TRIGGER messages_restated;
DROP TRIGGER messages_removed;
-- Names `messages` in its body: the rename below re-parses it.
DROP TRIGGER sends_purged;

CREATE TABLE messages_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    send_id BIGINT NOT NULL REFERENCES sends (id) ON DELETE CASCADE,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    recipient_kind TEXT NOT NULL CHECK (recipient_kind IN ('to', 'cc', 'bcc')),
    origin TEXT NOT NULL CHECK (origin IN ('web', 'sys', 'alert')),
    provider_id BIGINT REFERENCES providers (id) ON DELETE SET NULL,
    from_address TEXT NOT NULL,
    recipient TEXT NOT NULL,
    contact_id BIGINT REFERENCES contacts (id) ON DELETE SET NULL,
    mailing_id BIGINT REFERENCES mailings (id) ON DELETE SET NULL,
    message_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'cancelled', 'held', 'received')),
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
    updated_at TIMESTAMP NOT NULL
);

INSERT INTO messages_new (id, workspace_id, send_id, channel, direction, recipient_kind, origin,
        provider_id, from_address, recipient, contact_id, mailing_id, message_id, status,
        hold_reason, attempts, max_attempts, due_at, send_at, lease_owner, lease_until,
        possible_duplicate, result, smtp_code, smtp_enhanced, created_at, sent_at, updated_at)
    SELECT id, workspace_id, send_id, channel, direction, recipient_kind, origin,
        provider_id, from_address, recipient, contact_id, mailing_id, message_id, status,
        hold_reason, attempts, max_attempts, due_at, send_at, lease_owner, lease_until,
        possible_duplicate, result, smtp_code, smtp_enhanced, created_at, sent_at, updated_at
    FROM messages ORDER BY id;

DELETE FROM sqlite_sequence WHERE name = 'messages_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'messages_new', max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
                               coalesce((SELECT max(id) FROM messages_new), 0));

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_held ON messages (provider_id) WHERE status = 'held';
CREATE INDEX messages_log ON messages (workspace_id, id);
CREATE INDEX messages_send ON messages (send_id);
CREATE INDEX messages_log_origin ON messages (workspace_id, origin, id);
CREATE INDEX messages_log_status ON messages (workspace_id, status, id);
CREATE INDEX messages_log_provider ON messages (workspace_id, provider_id, id);
CREATE INDEX messages_log_sender ON messages (workspace_id, from_address, id);
CREATE INDEX messages_contact ON messages (contact_id, id) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX messages_mailing_contact ON messages (mailing_id, contact_id)
    WHERE mailing_id IS NOT NULL AND contact_id IS NOT NULL;
CREATE INDEX messages_provider_due ON messages (provider_id, due_at, id)
    WHERE status IN ('scheduled', 'queued');

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
CREATE TRIGGER sends_purged AFTER UPDATE OF purged_at ON sends
WHEN OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL BEGIN
    DELETE FROM message_words WHERE rowid IN (SELECT id FROM messages WHERE send_id = NEW.id);
    INSERT INTO message_words (rowid, subject, body, ws)
        SELECT id, NEW.subject, '', 'w' || workspace_id || 'w' FROM messages WHERE send_id = NEW.id;
END;

COMMIT;
PRAGMA foreign_keys = ON;
