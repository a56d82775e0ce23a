-- When a pending message's job was last handed to the queue. The sweeper re-publishes only
-- what is lost: never enqueued (a send that died between commit and publish), or enqueued
-- longer ago than the queue keeps messages. A message merely waiting in a backlog (behind
-- the worker's maximum concurrency) is left to the queue.
ALTER TABLE pending_messages ADD COLUMN enqueued_at timestamptz;
UPDATE pending_messages SET enqueued_at = now();
