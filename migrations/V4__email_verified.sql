-- Proven ownership of an address: set when a code e-mailed to it is first used (or a
-- reset code). A password chosen before that does not sign anyone in (pre-hijacking).
-- Existing accounts start unproven: a password user signs in by code once.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;
