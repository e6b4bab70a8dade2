-- Alerts become `sys` again (the wider CHECK constraint stays: it accepts every row the
-- old one did, and narrowing it would rebuild the table once more).
UPDATE messages SET origin = 'sys' WHERE origin = 'alert';
DELETE FROM message_tallies WHERE origin IN ('sys', 'alert');
INSERT INTO message_tallies (workspace_id, day, origin, status, n, first_id, last_id)
    SELECT workspace_id, date(created_at), origin, status, count(*), min(id), max(id)
    FROM messages WHERE origin = 'sys'
    GROUP BY workspace_id, date(created_at), origin, status;
