ALTER TABLE message_bodies DROP COLUMN purged_at;
