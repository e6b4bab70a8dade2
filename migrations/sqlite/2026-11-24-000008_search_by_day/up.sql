-- PostgreSQL searches a few days at a time (its GIN indexes gain a bucket per workspace
-- and day). SQLite's FTS5 indexes already read matches newest first and stop at 100:
-- nothing changes here; the migration exists so both trees keep the same steps.
SELECT 1;
