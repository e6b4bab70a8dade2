-- Providers: how a workspace's mail leaves (SMTP, Gmail, Amazon SES, Outlook).
-- The password is sealed (ChaCha20-Poly1305) and never leaves the server.
CREATE TABLE providers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('smtp', 'gmail', 'ses', 'outlook')),
    host TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    tls TEXT NOT NULL CHECK (tls IN ('none', 'starttls', 'tls')),
    region TEXT,
    username TEXT NOT NULL,
    secret TEXT,
    account_address TEXT NOT NULL,
    from_name TEXT NOT NULL,
    max_connections INTEGER NOT NULL CHECK (max_connections BETWEEN 1 AND 100),
    per_second INTEGER,
    per_minute INTEGER,
    per_hour INTEGER,
    receive_enabled BOOLEAN NOT NULL,
    imap_host TEXT,
    imap_port INTEGER,
    status TEXT NOT NULL CHECK (status IN ('unchecked', 'active', 'error')),
    status_detail TEXT NOT NULL,
    checked_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE INDEX providers_workspace ON providers (workspace_id, name);
