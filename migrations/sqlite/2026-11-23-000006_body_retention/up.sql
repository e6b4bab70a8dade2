-- Retention (`MAILROOM_BODY_RETENTION_DAYS`): when a content's text, HTML and files were
-- deleted; the messages' metadata rows stay.
ALTER TABLE message_bodies ADD COLUMN purged_at TIMESTAMP;
