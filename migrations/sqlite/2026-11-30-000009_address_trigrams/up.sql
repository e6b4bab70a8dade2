-- PostgreSQL's trigrams of addresses are taken without punctuation. SQLite's FTS5
-- trigram tokenizer keeps every character already: nothing changes here; the migration
-- exists so both trees keep the same steps.
SELECT 1;
