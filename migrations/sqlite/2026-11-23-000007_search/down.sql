DROP TRIGGER message_bodies_purged;
DROP TRIGGER messages_removed;
DROP TRIGGER messages_restated;
DROP TRIGGER messages_indexed;
DROP INDEX messages_body;
DROP TABLE message_tallies;
DROP TABLE message_addresses;
DROP TABLE message_words;
