-- Pending user messages get a table of their own, read by the sweeper. The partial index
-- messages_pending (updated_at) WHERE status = 'pending' made every update of a message
-- (the worker's claim, the reply's status flip) change an indexed column, so none could be
-- a HOT update: each one added an entry to every index of `messages`. With it gone no
-- index covers status or updated_at, and those updates stay on the row's page.
CREATE TABLE pending_messages (
    message_id uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE
);
INSERT INTO pending_messages (message_id)
    SELECT id FROM messages WHERE status = 'pending' AND role = 'user';
DROP INDEX messages_pending;
-- Room on each page for the newer versions of its rows (a HOT update needs it there).
-- Applies to pages written from now on.
ALTER TABLE messages SET (fillfactor = 75);
