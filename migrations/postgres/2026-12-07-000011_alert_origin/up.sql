-- Mailroom's own alerts get their own origin, `alert`. They were `sys` without a provider,
-- which is also what an API message looks like once its provider is deleted: a retry or a
-- reclaimed lease then sent such a message through the operator's system relay with its
-- original From. Only `alert` mail may use the system provider now. The statement trigger
-- `messages_restated` moves the tallies' counts with the rows.
ALTER TABLE messages DROP CONSTRAINT messages_origin_check;
ALTER TABLE messages ADD CONSTRAINT messages_origin_check
    CHECK (origin IN ('web', 'sys', 'alert')) NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT messages_origin_check;
UPDATE messages SET origin = 'alert'
    WHERE origin = 'sys' AND provider_id IS NULL AND api_key_id IS NULL AND user_id IS NULL;
-- Mail of a provider deleted earlier that was still waiting can go nowhere now (only
-- alerts use the system provider): cancelled, as deleting a provider does.
UPDATE messages SET status = 'cancelled', hold_reason = NULL, result = 'provider deleted'
    WHERE provider_id IS NULL AND origin <> 'alert' AND status IN ('scheduled', 'queued', 'held');
