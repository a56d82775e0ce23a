-- Chatrooms and their messages.
CREATE TABLE chatrooms (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- NULL until named by the user or titled by the worker from the first exchange.
    name             text        CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now()
);
-- "My chatrooms, newest activity first".
CREATE INDEX chatrooms_by_activity ON chatrooms (user_id, last_activity_at DESC, id DESC);

CREATE TABLE messages (
    id              uuid        PRIMARY KEY,
    -- Insertion order inside a chatroom; cursors and history windows use it.
    seq             bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    chatroom_id     uuid        NOT NULL REFERENCES chatrooms (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text        NOT NULL CHECK (role IN ('user', 'model')),
    content         text        NOT NULL,
    -- user messages: pending -> answered | failed | blocked; model replies: complete.
    status          text        NOT NULL CHECK (status IN ('pending', 'answered', 'failed', 'blocked', 'complete')),
    -- For a model reply: the user message it answers.
    reply_to        uuid        REFERENCES messages (id) ON DELETE CASCADE,
    finish_reason   text,
    failure_reason  text,
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'model') = (reply_to IS NOT NULL))
);
CREATE INDEX messages_by_chatroom ON messages (chatroom_id, seq DESC);
-- At most one reply per user message: redelivered queue records cannot duplicate it.
CREATE UNIQUE INDEX messages_one_reply ON messages (reply_to) WHERE reply_to IS NOT NULL;

-- Client retries with an Idempotency-Key get the first answer back.
CREATE TABLE idempotency_keys (
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    message_id    uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    response      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
