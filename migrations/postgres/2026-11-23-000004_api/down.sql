DROP TABLE idempotency_keys;
DROP TABLE api_files;
ALTER TABLE messages DROP COLUMN contact_ids;
ALTER TABLE messages DROP COLUMN references_header;
ALTER TABLE messages DROP COLUMN api_key_id;
ALTER TABLE workspaces DROP COLUMN per_request_smtp;
DROP TABLE api_keys;
