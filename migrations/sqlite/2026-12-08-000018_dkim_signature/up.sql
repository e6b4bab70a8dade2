-- The DKIM-Signature a message was signed with, kept when an attempt ends in a retry: the
-- next attempt sends the same bytes with the same signature instead of signing again.
ALTER TABLE messages ADD COLUMN dkim_signature TEXT;
