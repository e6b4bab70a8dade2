-- SMTP settings an API call brought (per-request SMTP): kept as a provider of their own,
-- so the engine, the egress policy and the sealed password work as for any provider, but
-- hidden from the providers page and from provider lists.
ALTER TABLE providers ADD COLUMN per_request BOOLEAN NOT NULL DEFAULT FALSE;
