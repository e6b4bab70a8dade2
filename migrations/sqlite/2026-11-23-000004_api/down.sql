DROP TABLE idempotency_keys;
DROP TABLE api_files;
ALTER TABLE messages DROP COLUMN contact_ids;
ALTER TABLE messages DROP COLUMN references_header;
-- SQLite cannot drop a column that has a foreign key; messages.api_key_id stays (NULL).
UPDATE messages SET api_key_id = NULL;
ALTER TABLE workspaces DROP COLUMN per_request_smtp;
DROP TABLE api_keys;
