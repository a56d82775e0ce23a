-- Conversation controls (issue 24).
-- Per chatroom: a system instruction for the model and a model from GEMINI_MODELS
-- (NULL: the default). Bounded here as well as in the application.
ALTER TABLE chatrooms
    ADD COLUMN instructions text CHECK (instructions IS NULL OR length(instructions) BETWEEN 1 AND 4000),
    ADD COLUMN model        text CHECK (model IS NULL OR length(model) BETWEEN 1 AND 100);

-- A user message edited in place (PATCH), and when its current reply was last asked for
-- (a regenerate or an edit counts against that day's cap: a failed reply gives that day's
-- unit back, not the day the message was first sent).
ALTER TABLE messages
    ADD COLUMN edited_at    timestamptz,
    ADD COLUMN requested_at timestamptz;

-- Search over a user's own messages (GET /search). The `simple` configuration: messages
-- are in any language, and a language's stemmer and stop words (`english`) would mangle
-- the others and make common words unsearchable; `simple` lower-cases and splits only.
-- An expression index (not a stored tsvector column): nothing is recomputed when a
-- message's status flips, and such updates stay HOT (V7), since neither indexed column
-- (user_id, content) changes. btree_gin puts user_id in the same GIN index, so a search
-- reads only the caller's postings however many messages other users have.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX messages_search ON messages
    USING gin (user_id, to_tsvector('simple'::regconfig, content));
-- A user's messages newest first: a common word is ranked among its newest matches
-- (chat/search.rs, RANK_WINDOW) by walking this instead of fetching every match; the
-- account deletion's batches use it too.
CREATE INDEX messages_by_user ON messages (user_id, seq DESC);

-- DELETE /user/me: the account is closed at once (tokens revoked, the address released),
-- and its data is deleted in bounded batches; what one request cannot finish in time, the
-- worker's sweep does. Rows marked here are never signed into again.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
CREATE INDEX users_deleted ON users (deleted_at) WHERE deleted_at IS NOT NULL;
