DROP TABLE provider_tokens;
CREATE INDEX messages_due ON messages (due_at, id) WHERE status IN ('scheduled', 'queued');
DROP INDEX messages_provider_due;
