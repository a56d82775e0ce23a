-- A chatroom's latest activity is read from its newest message (through
-- messages_by_chatroom), no longer written to the chatroom row by every message and every
-- reply: that made one row per conversation a lock every sender queued on, and, the
-- column being indexed, every update a non-HOT one that bloated the table and its indexes.
DROP INDEX chatrooms_by_activity;
ALTER TABLE chatrooms DROP COLUMN last_activity_at;
-- "My chatrooms" (the list) and the cascade from users.
CREATE INDEX chatrooms_by_user ON chatrooms (user_id);
