-- One writer per message: a delivery claims the message with a lease (until when, and
-- which delivery). A duplicate delivery (SQS at-least-once, a publish retried after its
-- attempt timed out) finds the lease live and skips instead of calling Gemini a second
-- time and interleaving a second writer into the live stream. No index covers these
-- columns, so claims stay HOT updates (V7).
ALTER TABLE messages ADD COLUMN lease_owner uuid, ADD COLUMN lease_until timestamptz;
-- The user's cancel, decided in the database: a cancel accepted (202) while the message is
-- pending makes the stored reply `cancelled` even if the model finished meanwhile; a reply
-- stored first makes the cancel 409 `already_finished`. No check-then-set window.
ALTER TABLE messages ADD COLUMN cancel_requested_at timestamptz;
