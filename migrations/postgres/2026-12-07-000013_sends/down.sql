-- Going back would put every send's fields on each of its messages again and drop the
-- copies of Cc and Bcc addresses; it is not supported (restore the backup taken before
-- the upgrade).
DO $$ BEGIN RAISE EXCEPTION 'the sends migration cannot be reverted: restore a backup'; END $$;
