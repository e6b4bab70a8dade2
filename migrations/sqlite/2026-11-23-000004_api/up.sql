-- API keys: shown once, stored as a SHA-256 hash, found by their visible prefix.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('send', 'send+read')),
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    per_minute INTEGER,
    created_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, id);

-- Per-request SMTP settings in API calls (off unless an admin turns it on).
ALTER TABLE workspaces ADD COLUMN per_request_smtp BOOLEAN NOT NULL DEFAULT FALSE;

-- What an API call adds to a message: the key (keys are revoked, never deleted, so its
-- name stays), the thread it answers (`References`; its last id is `In-Reply-To`), the
-- caller's contact ids.
ALTER TABLE messages ADD COLUMN api_key_id BIGINT REFERENCES api_keys (id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN references_header TEXT;
ALTER TABLE messages ADD COLUMN contact_ids TEXT;

-- Files uploaded through the API, attached by id to later messages.
CREATE TABLE api_files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    data BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX api_files_workspace ON api_files (workspace_id, id);

-- Idempotency-Key: the first request's fingerprint and, once answered, its response.
CREATE TABLE idempotency_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code INTEGER,
    response TEXT,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (api_key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
