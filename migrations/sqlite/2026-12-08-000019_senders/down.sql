DROP INDEX sends_sender;
ALTER TABLE sends DROP COLUMN sender_id;
DROP TABLE senders;
