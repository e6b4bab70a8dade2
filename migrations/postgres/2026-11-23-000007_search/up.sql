-- Search over the log: per message, the words of its subject and text (`simple`
-- configuration, no stemming, like SQLite's unicode61; the first 100,000 characters of a
-- text) in a GIN-indexed tsvector, and its addresses (recipient, Cc, Bcc, sender address
-- and name) under a pg_trgm index, so a part of an address like `jo@exam` finds
-- jo@example.com. A side table: `messages` is at diesel's column limit and stays narrow
-- for the queue. Kept in step by statement triggers, in the transaction that writes the
-- messages.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE message_search (
    message_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    words TSVECTOR NOT NULL,
    addresses TEXT NOT NULL
);
CREATE INDEX message_search_words ON message_search USING GIN (words);
CREATE INDEX message_search_addresses ON message_search USING GIN (addresses gin_trgm_ops);

-- How many messages each workspace has per creation day (UTC), origin and status: the
-- history's tab counts and the overview read these few rows instead of counting the log.
-- `first_id`..`last_id` bound the ids of the day's messages, so a day filter reads the
-- log from the right place instead of scanning everything newer.
CREATE TABLE message_tallies (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day DATE NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    n BIGINT NOT NULL,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, day, origin, status)
);

-- The log reads a workspace's messages newest first with or without a tab: one index on
-- (workspace_id, id) serves every tab in id order (the origin is checked on the way); the
-- old (workspace_id, origin, id) made the All tab sort the whole workspace.
DROP INDEX messages_log;
CREATE INDEX messages_log ON messages (workspace_id, id);

-- Retention re-indexes the messages of a purged content: found by their content.
CREATE INDEX messages_body ON messages (body_id);

CREATE FUNCTION message_words(subject TEXT, body TEXT) RETURNS TSVECTOR
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple'::regconfig, subject || ' ' || left(body, 100000))
$$;

CREATE FUNCTION messages_indexed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_search (message_id, words, addresses)
    SELECT m.id, message_words(m.subject, b.text_body),
           concat_ws(' ', m.recipient, m.cc, m.bcc, m.from_address, m.from_name)
    FROM inserted m JOIN message_bodies b ON b.id = m.body_id;
    INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, created_at::date, origin, status, count(*), min(id), max(id)
    FROM inserted GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (workspace_id, day, origin, status)
    DO UPDATE SET n = message_tallies.n + EXCLUDED.n,
        first_id = least(message_tallies.first_id, EXCLUDED.first_id),
        last_id = greatest(message_tallies.last_id, EXCLUDED.last_id);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_indexed AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION messages_indexed();

CREATE FUNCTION messages_restated() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, day, origin, status, sum(n)::BIGINT, min(id), max(id) FROM (
        SELECT workspace_id, created_at::date AS day, origin, status, 1 AS n, id
        FROM after_rows
        UNION ALL
        SELECT workspace_id, created_at::date, origin, status, -1, id FROM before_rows
    ) c
    GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (workspace_id, day, origin, status)
    DO UPDATE SET n = message_tallies.n + EXCLUDED.n,
        first_id = least(message_tallies.first_id, EXCLUDED.first_id),
        last_id = greatest(message_tallies.last_id, EXCLUDED.last_id);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_restated AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION messages_restated();

CREATE FUNCTION messages_removed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    UPDATE message_tallies t SET n = t.n - c.n FROM (
        SELECT workspace_id, created_at::date AS day, origin, status, count(*) AS n
        FROM removed GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ) c
    WHERE t.workspace_id = c.workspace_id AND t.day = c.day
      AND t.origin = c.origin AND t.status = c.status;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_removed AFTER DELETE ON messages
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION messages_removed();

-- A purged content's words leave the index; the subjects stay searchable.
CREATE FUNCTION message_bodies_purged() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    UPDATE message_search s SET words = message_words(m.subject, '')
    FROM messages m JOIN purged p ON p.id = m.body_id
    WHERE s.message_id = m.id AND p.purged_at IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER message_bodies_purged AFTER UPDATE ON message_bodies
    REFERENCING NEW TABLE AS purged FOR EACH STATEMENT EXECUTE FUNCTION message_bodies_purged();

-- What was there before.
INSERT INTO message_search (message_id, words, addresses)
    SELECT m.id, message_words(m.subject, b.text_body),
           concat_ws(' ', m.recipient, m.cc, m.bcc, m.from_address, m.from_name)
    FROM messages m JOIN message_bodies b ON b.id = m.body_id;
INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, created_at::date, origin, status, count(*), min(id), max(id)
    FROM messages GROUP BY 1, 2, 3, 4;
