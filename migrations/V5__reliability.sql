-- Deleting a message cascades to its idempotency key: without this index every deleted
-- message scanned the whole table (a chatroom of 10,000 messages, 10,000 scans).
CREATE INDEX idempotency_keys_by_message ON idempotency_keys (message_id);
-- Keys expire after 24 hours; the sweeper purges them oldest first.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
-- The sweeper's scan: only pending user messages, by last activity (creation or claim).
CREATE INDEX messages_pending ON messages (updated_at) WHERE status = 'pending';
-- The user's open Stripe Checkout Session: a second `POST /subscribe/pro` reuses it
-- instead of opening another (two open sessions could become two subscriptions).
ALTER TABLE users
    ADD COLUMN checkout_session_id text,
    ADD COLUMN checkout_url        text,
    ADD COLUMN checkout_expires_at timestamptz;
