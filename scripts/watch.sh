#!/usr/bin/env bash
# The HTTP functions under the Lambda emulator (`cargo lambda watch`), routed like API
# Gateway on one port, against the local PostgreSQL and Redis. Sending messages needs a
# queue (REPLY_QUEUE_URL); use `make dev` for the full flow with the in-process worker.
set -euo pipefail
source "$(dirname "$0")/dev-env.sh"
ensure_tools

LAMBDA_PORT="${LAMBDA_PORT:-9000}"
cargo run -q -p local-server --bin migrate
ENV_FILE="$STATE/lambda.env"
env | grep -E '^(DATABASE_URL|REDIS_URL|JWT_SECRET_KEY|OTP_DELIVERY|GOOGLE_API_KEY|STRIPE_[A-Z_]+|FRONTEND_URL|REPLY_QUEUE_URL|RUST_LOG)=' >"$ENV_FILE"
log "  functions on http://127.0.0.1:$LAMBDA_PORT (e.g. curl http://127.0.0.1:$LAMBDA_PORT/user/me)"
cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$LAMBDA_PORT" --env-file "$ENV_FILE"
