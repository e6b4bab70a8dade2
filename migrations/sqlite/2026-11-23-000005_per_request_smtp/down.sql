ALTER TABLE providers DROP COLUMN per_request;
