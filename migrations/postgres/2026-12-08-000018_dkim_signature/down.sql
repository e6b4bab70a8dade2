ALTER TABLE messages DROP COLUMN dkim_signature;
