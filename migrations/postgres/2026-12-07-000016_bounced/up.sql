-- `bounced`: a message the receiving side gave back after accepting it (a delivery status
-- notification; receiving lands in a later issue, the status is part of the record now).
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'bounced', 'cancelled', 'held', 'received'));
