-- A tab or a filter reads its own messages newest first. On `messages_log`
-- (workspace_id, id) alone, each skipped every newer message that did not match: after
-- 150,000 API messages the Web tab read them all to find its 50 (measured at 1M on
-- PostgreSQL: the history page fell from 245 to 127 answers a second), and a provider,
-- sender or status the newest messages do not have read the whole log. The All tab
-- keeps `messages_log`; with these, every filter of the history starts where its
-- messages are.
CREATE INDEX messages_log_origin ON messages (workspace_id, origin, id);
CREATE INDEX messages_log_status ON messages (workspace_id, status, id);
CREATE INDEX messages_log_provider ON messages (workspace_id, provider_id, id);
CREATE INDEX messages_log_sender ON messages (workspace_id, from_address, id);
