UPDATE messages SET status = 'failed' WHERE status = 'bounced';
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'cancelled', 'held', 'received'));
