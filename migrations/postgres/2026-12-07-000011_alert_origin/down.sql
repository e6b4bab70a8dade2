UPDATE messages SET origin = 'sys' WHERE origin = 'alert';
ALTER TABLE messages DROP CONSTRAINT messages_origin_check;
ALTER TABLE messages ADD CONSTRAINT messages_origin_check CHECK (origin IN ('web', 'sys'));
