CREATE OR REPLACE FUNCTION messages_indexed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_search (message_id, bucket, words)
    SELECT m.id, message_bucket(m.workspace_id, m.created_at),
           message_words(m.subject, coalesce(
               (SELECT b.text_body FROM message_bodies b WHERE b.id = m.body_id), ''))
    FROM inserted m;
    INSERT INTO message_search_addresses (message_id, bucket, addresses)
    SELECT m.id, message_bucket(m.workspace_id, m.created_at),
           concat_ws(' ', m.recipient, m.cc, m.bcc, m.from_address, m.from_name)
    FROM inserted m;
    INSERT INTO message_tally_deltas (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, created_at::date, origin, status, count(*), min(id), max(id)
    FROM inserted GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;
DROP INDEX message_search_addresses_trigrams;
ALTER TABLE message_search_addresses DROP COLUMN squashed;
CREATE INDEX message_search_addresses_trigrams ON message_search_addresses
    USING GIN (bucket, addresses gin_trgm_ops);
DROP FUNCTION message_squashed(TEXT);
