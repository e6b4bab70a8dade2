-- What is sent: written once per compose (or API call) and shared by the messages of all
-- its recipients, so the queue rows that change state stay small.
CREATE TABLE message_bodies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    text_body TEXT NOT NULL,
    html_body TEXT,
    attachments INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL
);

-- Files attached to a content (uploaded in compose), sent with every message that uses it.
CREATE TABLE message_attachments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body_id BIGINT NOT NULL REFERENCES message_bodies (id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX message_attachments_body ON message_attachments (body_id);

-- Messages: one row per recipient message; the log and the queue at once.
-- A message is scheduled → queued → sending → sent | failed | cancelled (held while its
-- provider cannot sign in or its mailing is paused).
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    origin TEXT NOT NULL CHECK (origin IN ('web', 'sys')),
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
    updated_at TIMESTAMP NOT NULL
);
-- The claim reads only due, unfinished rows: a partial index keeps it fast as the log grows.
CREATE INDEX messages_due ON messages (due_at, id) WHERE status IN ('scheduled', 'queued');
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_held ON messages (provider_id) WHERE status = 'held';
CREATE INDEX messages_log ON messages (workspace_id, origin, id);

-- Every attempt and state change of a message, with the SMTP reply.
CREATE TABLE message_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    smtp_code INTEGER,
    smtp_enhanced TEXT,
    detail TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX message_events_message ON message_events (message_id, id);
