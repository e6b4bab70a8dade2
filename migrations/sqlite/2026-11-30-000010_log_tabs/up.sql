-- The Web and Sys tabs read their own messages newest first. On `messages_log`
-- (workspace_id, id) alone a tab skipped every newer message of the other origin: after
-- 150,000 API messages the Web tab read them all to find its 50 (measured at 1M on
-- PostgreSQL: the history page fell from 245 to 127 answers a second, most of the
-- database's time in that scan). The All tab keeps `messages_log`.
CREATE INDEX messages_log_origin ON messages (workspace_id, origin, id);
