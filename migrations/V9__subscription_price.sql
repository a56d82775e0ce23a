-- The Stripe Price a subscription is for: only the configured Pro price
-- (STRIPE_PRO_PRICE_ID) makes its user Pro. NULL: not known from the events so far (a
-- checkout this service opened, which sells only Pro, or a row from before V9).
ALTER TABLE subscriptions ADD COLUMN price_id text;
