-- Billing: one Stripe customer per user, their subscriptions, and processed webhook events.
ALTER TABLE users ADD COLUMN stripe_customer_id text UNIQUE;

CREATE TABLE subscriptions (
    id                    text        PRIMARY KEY,          -- Stripe subscription id
    user_id               uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    customer_id           text        NOT NULL,
    status                text        NOT NULL,
    current_period_end    timestamptz,
    cancel_at_period_end  boolean     NOT NULL DEFAULT false,
    -- Ordering guard: the (event.created, event rank) that produced this state; an
    -- older or equal event never overwrites it.
    event_created         bigint      NOT NULL,
    event_rank            smallint    NOT NULL,
    last_invoice_status   text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_by_user ON subscriptions (user_id);

-- Every webhook event id, recorded in the same transaction as its effects.
CREATE TABLE stripe_events (
    id           text        PRIMARY KEY,
    type         text        NOT NULL,
    created      bigint      NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
