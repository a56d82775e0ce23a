#!/usr/bin/env bash
# The HTTP functions under the Lambda emulator (`cargo lambda watch`), routed like API
# Gateway on one port, against the local PostgreSQL and Redis. Sending messages needs a
# queue (REPLY_QUEUE_URL); use `make dev` for the full flow with the in-process worker.
set -euo pipefail
source "$(dirname "$0")/dev-env.sh"
ensure_tools

LAMBDA_PORT="${LAMBDA_PORT:-9000}"
# cargo lambda watch sets AWS_LAMBDA_FUNCTION_NAME, and the functions refuse to start with
# OTP_DELIVERY=response inside a Lambda: codes go to the function's log here (printed in
# this terminal), unless OTP_DELIVERY=ses is set with OTP_EMAIL_FROM and AWS credentials.
if [ "$OTP_DELIVERY" = response ]; then
    export OTP_DELIVERY=log
    log "  OTP_DELIVERY=log under cargo lambda watch: sign-in codes appear in this log"
fi
cargo run -q -p local-server --bin migrate
# Inside a Lambda the auth function needs its own code-hashing key, and the stores must be
# TLS unless told otherwise: make dev's are local and plaintext.
export OTP_HASH_KEY="${OTP_HASH_KEY:-$(printf '%s' "otp-hash-key:$JWT_SECRET_KEY" | sha256sum | cut -d' ' -f1)}"
export ALLOW_PLAINTEXT_STORES=true
ENV_FILE="$STATE/lambda.env"
env | grep -E '^(DATABASE_URL|REDIS_URL|JWT_SECRET_KEY|OTP_[A-Z_]+|SES_CONFIGURATION_SET|IP_[A-Z_]+|GOOGLE_API_KEY|STRIPE_[A-Z_]+|FRONTEND_URL|REPLY_QUEUE_URL|RUST_LOG|ALLOW_PLAINTEXT_STORES)=' >"$ENV_FILE"
log "  functions on http://127.0.0.1:$LAMBDA_PORT (e.g. curl http://127.0.0.1:$LAMBDA_PORT/user/me)"
cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$LAMBDA_PORT" --env-file "$ENV_FILE"
