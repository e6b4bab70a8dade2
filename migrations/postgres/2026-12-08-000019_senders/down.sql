ALTER TABLE api_keys DROP COLUMN default_sender_id;
DROP INDEX sends_sender;
ALTER TABLE sends DROP COLUMN sender_id;
DROP TABLE senders;
