CREATE OR REPLACE FUNCTION messages_indexed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_search (message_id, words, addresses)
    SELECT m.id, message_words(m.subject, b.text_body),
           concat_ws(' ', m.recipient, m.cc, m.bcc, m.from_address, m.from_name)
    FROM inserted m JOIN message_bodies b ON b.id = m.body_id;
    INSERT INTO message_tally_deltas (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, created_at::date, origin, status, count(*), min(id), max(id)
    FROM inserted GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;
DROP INDEX message_search_words;
ALTER TABLE message_search ADD COLUMN addresses TEXT NOT NULL DEFAULT '';
UPDATE message_search s SET addresses = a.addresses
FROM message_search_addresses a WHERE a.message_id = s.message_id;
ALTER TABLE message_search ALTER COLUMN addresses DROP DEFAULT;
DROP TABLE message_search_addresses;
ALTER TABLE message_search DROP COLUMN bucket;
ALTER TABLE message_search ALTER COLUMN words SET STORAGE EXTENDED;
ALTER TABLE message_search RESET (toast_tuple_target);
CREATE INDEX message_search_words ON message_search USING GIN (words);
CREATE INDEX message_search_addresses ON message_search USING GIN (addresses gin_trgm_ops);
DROP FUNCTION message_bucket(BIGINT, TIMESTAMP);
