-- Parts of addresses are looked up by the trigrams of the addresses without the
-- punctuation addresses are made of (. @ - _ + '), lowercased, kept in a column of their
-- own. pg_trgm cuts words at every character that is not a letter or a digit, so a part
-- such as `r.mitche` or `0@be` gave trigrams of lone letters at word edges ("r ",
-- "  b") that most addresses share: all of them were read to be checked (measured at 1M
-- messages: 60–230 ms a search). Squashed, `rmitche` and `0be` give selective trigrams;
-- the address as written is still checked on each candidate. Squashed with `replace`:
-- `translate` took 9 µs an address (measured), more than the rest of the search per row.
-- Rust's `Search::like_squashed` removes the same characters.
CREATE FUNCTION message_squashed(addresses TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(replace(replace(replace(replace(replace(replace(
        addresses, '.', ''), '@', ''), '-', ''), '_', ''), '+', ''), '''', ''))
$$;

ALTER TABLE message_search_addresses ADD COLUMN squashed TEXT NOT NULL DEFAULT '';
UPDATE message_search_addresses SET squashed = message_squashed(addresses);
ALTER TABLE message_search_addresses ALTER COLUMN squashed DROP DEFAULT;
DROP INDEX message_search_addresses_trigrams;
CREATE INDEX message_search_addresses_trigrams ON message_search_addresses
    USING GIN (bucket, squashed gin_trgm_ops);

CREATE OR REPLACE FUNCTION messages_indexed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_search (message_id, bucket, words)
    SELECT m.id, message_bucket(m.workspace_id, m.created_at),
           message_words(m.subject, coalesce(
               (SELECT b.text_body FROM message_bodies b WHERE b.id = m.body_id), ''))
    FROM inserted m;
    INSERT INTO message_search_addresses (message_id, bucket, addresses, squashed)
    SELECT id, bucket, addresses, message_squashed(addresses) FROM (
        SELECT m.id, message_bucket(m.workspace_id, m.created_at) AS bucket,
               concat_ws(' ', m.recipient, m.cc, m.bcc, m.from_address, m.from_name)
                   AS addresses
        FROM inserted m
    ) a;
    INSERT INTO message_tally_deltas (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, created_at::date, origin, status, count(*), min(id), max(id)
    FROM inserted GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;
