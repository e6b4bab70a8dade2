-- The claim asks each provider in turn for its due messages (each up to its own room),
-- so the queue is read by provider first.
CREATE INDEX messages_provider_due ON messages (provider_id, due_at, id)
    WHERE status IN ('scheduled', 'queued');
DROP INDEX messages_due;

-- A provider's rate limits shared by every node; used on PostgreSQL only (SQLite is one
-- process, whose own limiter is the whole limit). Kept here so both backends have the
-- same tables.
CREATE TABLE provider_tokens (
    provider_id BIGINT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    window_secs INTEGER NOT NULL,
    tokens DOUBLE PRECISION NOT NULL,
    refilled_at TIMESTAMP NOT NULL,
    PRIMARY KEY (provider_id, window_secs)
);
