-- One send, many messages (see the SQLite migration of the same name for the shape).
-- `message_bodies` becomes `sends`; the fields every recipient's row repeated move there;
-- the log gains channel, direction, the field the address came from, and its contact and
-- mailing. The search triggers read the subject from the send.
CREATE TABLE contacts (
    id BIGSERIAL PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX contacts_workspace ON contacts (workspace_id, id);
CREATE TABLE mailings (
    id BIGSERIAL PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX mailings_workspace ON mailings (workspace_id, id);

ALTER TABLE message_bodies RENAME TO sends;
ALTER SEQUENCE message_bodies_id_seq RENAME TO sends_id_seq;
ALTER TABLE sends RENAME CONSTRAINT message_bodies_pkey TO sends_pkey;
ALTER TABLE sends RENAME CONSTRAINT message_bodies_workspace_id_fkey TO sends_workspace_id_fkey;
ALTER TABLE sends
    ADD COLUMN user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN session_public_id TEXT,
    ADD COLUMN api_key_id BIGINT REFERENCES api_keys (id) ON DELETE SET NULL,
    ADD COLUMN from_address TEXT NOT NULL DEFAULT '',
    ADD COLUMN from_name TEXT NOT NULL DEFAULT '',
    ADD COLUMN reply_to TEXT NOT NULL DEFAULT '',
    ADD COLUMN to_addresses TEXT NOT NULL DEFAULT '',
    ADD COLUMN cc TEXT NOT NULL DEFAULT '',
    ADD COLUMN bcc TEXT NOT NULL DEFAULT '',
    ADD COLUMN subject TEXT NOT NULL DEFAULT '',
    ADD COLUMN references_header TEXT,
    ADD COLUMN contact_ids TEXT,
    ADD COLUMN mailing_id BIGINT REFERENCES mailings (id) ON DELETE SET NULL;
-- Every message of a content was one call's: its first message says who and how. Lists
-- of addresses are kept one per line now (a display name may hold a comma).
UPDATE sends s SET user_id = m.user_id, session_public_id = m.session_public_id,
        api_key_id = m.api_key_id, from_address = m.from_address, from_name = m.from_name,
        cc = replace(m.cc, ',', E'\n'), bcc = replace(m.bcc, ',', E'\n'), subject = m.subject, references_header = m.references_header,
        contact_ids = m.contact_ids
    FROM (SELECT DISTINCT ON (body_id) * FROM messages ORDER BY body_id, id) m
    WHERE m.body_id = s.id;
-- Its To addresses: one message each.
UPDATE sends s SET to_addresses = t.addresses
    FROM (SELECT body_id, string_agg(recipient, E'\n' ORDER BY id) AS addresses
          FROM messages GROUP BY body_id) t
    WHERE t.body_id = s.id;
CREATE INDEX sends_workspace ON sends (workspace_id, id);
CREATE INDEX sends_by_key_id ON sends (api_key_id, id) WHERE api_key_id IS NOT NULL;

ALTER TABLE message_attachments RENAME COLUMN body_id TO send_id;
DROP INDEX message_attachments_body;
CREATE INDEX message_attachments_send ON message_attachments (send_id);

ALTER TABLE messages RENAME COLUMN body_id TO send_id;
ALTER TABLE messages RENAME CONSTRAINT messages_body_id_fkey TO messages_send_id_fkey;
DROP INDEX messages_body;
CREATE INDEX messages_send ON messages (send_id);
ALTER TABLE messages
    DROP COLUMN user_id,
    DROP COLUMN session_public_id,
    DROP COLUMN from_name,
    DROP COLUMN cc,
    DROP COLUMN bcc,
    DROP COLUMN subject,
    DROP COLUMN api_key_id,
    DROP COLUMN references_header,
    DROP COLUMN contact_ids,
    ADD COLUMN channel TEXT NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'sms')),
    ADD COLUMN direction TEXT NOT NULL DEFAULT 'outbound' CHECK (direction IN ('outbound', 'inbound')),
    ADD COLUMN recipient_kind TEXT NOT NULL DEFAULT 'to' CHECK (recipient_kind IN ('to', 'cc', 'bcc')),
    ADD COLUMN contact_id BIGINT REFERENCES contacts (id) ON DELETE SET NULL,
    ADD COLUMN mailing_id BIGINT REFERENCES mailings (id) ON DELETE SET NULL;
ALTER TABLE messages
    ALTER COLUMN channel DROP DEFAULT,
    ALTER COLUMN direction DROP DEFAULT,
    ALTER COLUMN recipient_kind DROP DEFAULT;
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'cancelled', 'held', 'received'));
CREATE INDEX messages_contact ON messages (contact_id, id) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX messages_mailing_contact ON messages (mailing_id, contact_id)
    WHERE mailing_id IS NOT NULL AND contact_id IS NOT NULL;

-- Each new message's send is looked up by id (LATERAL): a join let the planner hash the
-- whole table of contents at every INSERT (measured when it was `message_bodies`).
CREATE OR REPLACE FUNCTION messages_indexed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_search (message_id, bucket, words)
    SELECT m.id, message_bucket(m.workspace_id, m.created_at),
           message_words(s.subject, s.text_body)
    FROM inserted m
    CROSS JOIN LATERAL (SELECT subject, text_body FROM sends WHERE id = m.send_id) s;
    INSERT INTO message_search_addresses (message_id, bucket, addresses, squashed)
    SELECT id, bucket, addresses, message_squashed(addresses) FROM (
        SELECT m.id, message_bucket(m.workspace_id, m.created_at) AS bucket,
               concat_ws(' ', m.recipient, s.cc, s.bcc, s.from_address, s.from_name)
                   AS addresses
        FROM inserted m
        CROSS JOIN LATERAL (SELECT cc, bcc, from_address, from_name FROM sends
                            WHERE id = m.send_id) s
    ) a;
    INSERT INTO message_tally_deltas (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, created_at::date, origin, status, count(*), min(id), max(id)
    FROM inserted GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END $$;

DROP TRIGGER message_bodies_purged ON sends;
DROP FUNCTION message_bodies_purged();
-- A purged content's words leave the index; the subjects stay searchable.
CREATE FUNCTION sends_purged() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    UPDATE message_search x SET words = message_words(p.subject, '')
    FROM messages m JOIN purged p ON p.id = m.send_id
    WHERE x.message_id = m.id AND p.purged_at IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER sends_purged AFTER UPDATE ON sends
    REFERENCING NEW TABLE AS purged FOR EACH STATEMENT EXECUTE FUNCTION sends_purged();
