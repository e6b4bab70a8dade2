DROP TABLE message_events;
DROP TABLE messages;
DROP TABLE message_attachments;
DROP TABLE message_bodies;
