-- Senders (issue 17): a name and an address a workspace sends from, through one of its
-- providers; ready once the address is validated by a one-time code and its domain is
-- authenticated (or it is the account its provider signs in as). The code is stored
-- hashed, with its expiry, the tries left and when it was sent (re-sending is throttled).
CREATE TABLE senders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    provider_id BIGINT REFERENCES providers (id) ON DELETE SET NULL,
    reply_to TEXT NOT NULL,
    validated_at TIMESTAMP,
    code_hash TEXT,
    code_expires_at TIMESTAMP,
    code_tries INTEGER NOT NULL,
    code_sent_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (workspace_id, address)
);

-- The sender a send went out as (its history stays readable when the sender is deleted).
ALTER TABLE sends ADD COLUMN sender_id BIGINT REFERENCES senders (id) ON DELETE SET NULL;
CREATE INDEX sends_sender ON sends (sender_id) WHERE sender_id IS NOT NULL;

-- A database from the previous release: each provider's account becomes a sender to
-- validate, so the admin sees what to do.
INSERT OR IGNORE INTO senders (workspace_id, name, address, provider_id, reply_to, code_tries,
        created_at, updated_at)
    SELECT workspace_id, CASE WHEN from_name = '' THEN name ELSE from_name END, account_address,
        id, '', 0, created_at, created_at
    FROM providers WHERE per_request = 0 AND account_address <> '' ORDER BY id;

-- The sender an API key's sends go out as when they name none.
ALTER TABLE api_keys ADD COLUMN default_sender_id BIGINT REFERENCES senders (id) ON DELETE SET NULL;
