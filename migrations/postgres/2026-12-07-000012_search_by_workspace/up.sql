-- SQLite's FTS5 indexes gain each message's workspace as a token. PostgreSQL's GIN
-- indexes are keyed by (workspace, day) already, and its search checks a workspace's
-- newest messages one by one first: nothing changes here; the migration exists so both
-- trees keep the same steps.
SELECT 1;
