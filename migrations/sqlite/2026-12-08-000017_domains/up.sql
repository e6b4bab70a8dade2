-- Sending domains (issue 17): the ownership token, the two DKIM keys (active and standby:
-- selector, public key as base64 SubjectPublicKeyInfo, private key sealed like provider
-- secrets), the DMARC report address recommended, and the outcome of the last check.
CREATE TABLE domains (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token TEXT NOT NULL,
    active_selector TEXT NOT NULL,
    active_public TEXT NOT NULL,
    active_private TEXT NOT NULL,
    standby_selector TEXT NOT NULL,
    standby_public TEXT NOT NULL,
    standby_private TEXT NOT NULL,
    dmarc_rua TEXT NOT NULL,
    authenticated BOOLEAN NOT NULL,
    checks TEXT NOT NULL,
    checked_at TIMESTAMP,
    failing_since TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (workspace_id, name),
    CHECK (active_selector <> standby_selector)
);
-- The daily re-check walks domains by when they were last looked at.
CREATE INDEX domains_checked ON domains (checked_at);
