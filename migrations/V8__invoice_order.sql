-- Invoice events change `last_invoice_status` only when newer than the event that set it
-- (Stripe delivers out of order; a late `invoice.payment_failed` must not overwrite the
-- `invoice.paid` that followed it).
ALTER TABLE subscriptions ADD COLUMN last_invoice_event_created bigint;
