DROP TABLE message_events;
DROP TABLE messages;
