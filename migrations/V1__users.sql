-- Accounts. Emails are stored trimmed and lower-cased by the application.
CREATE TABLE users (
    id             uuid        PRIMARY KEY,
    email          text        NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    name           text        CHECK (name IS NULL OR length(name) BETWEEN 1 AND 100),
    password_hash  text,
    -- Bumped on every password change or reset; tokens carry it, older ones stop working.
    token_version  integer     NOT NULL DEFAULT 0,
    tier           text        NOT NULL DEFAULT 'basic' CHECK (tier IN ('basic', 'pro')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
